"""``python -m fastspec`` is the ``fastspec`` command."""

from fastspec.cli import main

raise SystemExit(main())
