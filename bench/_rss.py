"""Resident-memory probes for the benchmarks (stdlib only: also imported inside the cellpose venv).

On Linux the peak (``VmHWM``) can be reset by writing ``5`` to ``/proc/self/clear_refs``,
which lets one process report the peak of each stage separately. Where that is not
possible, ``reset_peak`` returns False and ``peak_rss_mb`` is the process-lifetime peak.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(field: str) -> float | None:
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def reset_peak() -> bool:
    """Reset the process's peak RSS to its current RSS; False where the OS does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak resident set size in MiB since the last successful ``reset_peak`` (or start)."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def current_rss_mb() -> float:
    """Current resident set size in MiB (falls back to the peak where unknown)."""
    current = _status_mb("VmRSS")
    return current if current is not None else peak_rss_mb()
