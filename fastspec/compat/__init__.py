"""Drop-in front doors for scripts written against PyHessian, hessian-eigenthings and ``powerlaw``.

Change one import and keep the call::

    from pyhessian import hessian                      ->  from fastspec.compat.pyhessian import hessian
    from hessian_eigenthings import compute_hessian_eigenthings
        ->  from fastspec.compat.hessian_eigenthings import compute_hessian_eigenthings
    import powerlaw; powerlaw.Fit(data)                ->  from fastspec.compat import powerlaw

Each front door returns what the original returns (same types, shapes and order) and computes it
with fastspec's own solvers (:mod:`fastspec.curvature`, :mod:`fastspec.linalg`,
:mod:`fastspec.stats`); ``docs/migration.md`` has the call-by-call table and every documented
difference from the originals. The submodules are imported explicitly; nothing here is exported at
the top level of ``fastspec``.
"""

from __future__ import annotations

__all__: list[str] = []
