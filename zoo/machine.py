"""Facts about the machine a figure was measured on, for benchmark results and build reports.

Stdlib only, and nothing heavy is imported: package versions come from the installed
distributions' metadata, and the GPU is read from torch only when the caller has already
imported torch (else from the NVIDIA driver's ``/proc`` entries, where present).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

#: Distributions whose versions are recorded (None when not installed).
PACKAGES = ("cellzoo", "torch", "numpy", "numba", "onnxruntime", "onnxruntime-gpu", "bentoml")


def now() -> str:
    """The current local time, ISO 8601 with its UTC offset, to the second."""
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpus() -> list[str]:
    """GPU names: from torch when it is already imported, else from the NVIDIA driver."""
    torch = sys.modules.get("torch")
    if torch is not None:
        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return []
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            for line in info.read_text(encoding="utf-8").splitlines():
                if line.startswith("Model:"):
                    names.append(line.split(":", 1)[1].strip())
        except OSError:
            continue
    return names


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, or None where the OS has none."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def threads() -> dict[str, int]:
    """Worker threads of torch and numba, for those already imported (never imports them)."""
    found = {}
    torch, numba = sys.modules.get("torch"), sys.modules.get("numba")
    if torch is not None:
        found["torch"] = torch.get_num_threads()
    if numba is not None:
        found["numba"] = numba.get_num_threads()
    return found


def facts() -> dict[str, Any]:
    """The machine, the software and the load right now.

    Returns:
        ``cpu_count``, ``cpu_model``, ``memory_gib``, ``gpus`` (names; empty: none),
        ``load_average`` (1/5/15 min), ``python``, ``platform`` and ``versions``
        (distribution → version, None when not installed).
    """
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "gpus": _gpus(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in PACKAGES},
    }


def describe(machine: dict[str, Any], *, load_end: list[float] | None = None) -> str:
    """One line for a table caption: CPUs, GPU, load and the main versions.

    Args:
        machine: a ``facts()`` dictionary (as read back from JSON).
        load_end: the load averages when the measurement ended, if known.
    """
    gpus = machine.get("gpus") or []
    parts = [f"{machine['cpu_count']} CPUs ({machine['cpu_model']})",
             ", ".join(gpus) if gpus else "no GPU"]
    load = machine.get("load_average")
    if load and load_end:
        parts.append(f"load average {load[0]:.1f} at the start and {load_end[0]:.1f} at the end")
    elif load:
        parts.append(f"load average {load[0]:.1f}")
    versions = machine.get("versions", {})
    parts += [f"{name} {versions[name]}" for name in ("torch", "numba") if versions.get(name)]
    return ", ".join(parts)
