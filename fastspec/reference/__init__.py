"""Pure-torch twins of the native ops: same inputs, same outputs, no compiled code."""

from fastspec.reference.powerlaw_scan import powerlaw_scan

__all__ = ["powerlaw_scan"]
