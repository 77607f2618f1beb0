"""Where numba keeps cellzoo's compiled kernels, and the first-run compile.

The post-processing kernels (``zoo.flows``) are compiled by numba on first use, which takes
seconds on a small CPU. They are cached on disk, under ``<ZOO_HOME>/numba`` (never into the
install, which may be read-only), so only a machine's first run pays; ``warm_up`` compiles
them in a background thread, so that the first run overlaps the compile with loading the
models and running the network.

Numba fixes a kernel's cache folder when its module is imported, so ``use_cache_dir`` must
run before ``zoo.flows`` is first imported (``Zoo`` calls it; ``zoo.predict`` imports
``zoo.flows`` only when it post-processes). An explicit ``NUMBA_CACHE_DIR`` wins.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_KERNELS = "zoo.flows"
_warmed = threading.Event()
_lock = threading.Lock()
_thread: threading.Thread | None = None


def cache_dir(home: Path) -> Path:
    """The folder under ``home`` (``Settings.home``) that holds compiled kernels."""
    return Path(home) / "numba"


def use_cache_dir(home: Path) -> Path | None:
    """Cache compiled kernels under ``cache_dir(home)``; returns the folder in use.

    Does nothing (and returns numba's own folder, or None for its default) when
    ``NUMBA_CACHE_DIR`` is set or the kernels were already imported.
    """
    import numba

    if not numba.config.CACHE_DIR and _KERNELS not in sys.modules:
        numba.config.CACHE_DIR = str(cache_dir(home))
    return Path(numba.config.CACHE_DIR) if numba.config.CACHE_DIR else None


def is_compiled(home: Path) -> bool:
    """Whether the kernels' compiled code is already on disk for ``home`` (or in the
    folder ``NUMBA_CACHE_DIR`` names)."""
    import numba

    folder = Path(numba.config.CACHE_DIR) if numba.config.CACHE_DIR else cache_dir(home)
    return folder.is_dir() and any(folder.rglob("flows.*.nbi"))


def warm_up(*, wait: bool = False) -> None:
    """Compile (or load from the cache) every kernel post-processing uses, once per process.

    Runs in a daemon thread unless ``wait``; a second call waits for the first only when
    ``wait`` is set.
    """
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_compile, name="zoo-jit-warm-up", daemon=True)
            _thread.start()
    if wait:
        _warmed.wait()


def _compile() -> None:
    import numpy as np

    try:
        from zoo.flows import flows_to_masks, masks_to_flows
        from zoo.params import FlowParams

        labels = np.zeros((24, 24), np.int32)
        labels[4:12, 4:12], labels[14:22, 10:20] = 1, 2
        flows = masks_to_flows(labels)
        flows_to_masks(flows, np.where(labels > 0, 3.0, -3.0).astype(np.float32), FlowParams())
    except Exception:  # noqa: BLE001 (a failed warm-up only costs the compile later)
        log.exception("warming up the post-processing kernels failed")
    finally:
        _warmed.set()
