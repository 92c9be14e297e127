"""Pure-torch twins of the native ops: same inputs, same outputs, no compiled code."""

from fastspec.reference.powerlaw_scan import powerlaw_scan
from fastspec.reference.powerlaw_scan_batch import powerlaw_scan_batch
from fastspec.reference.seq_gram import seq_gram

__all__ = ["powerlaw_scan", "powerlaw_scan_batch", "seq_gram"]
