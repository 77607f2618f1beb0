"""Small synthetic image files for the ``zoo segment`` / ``zoo route`` tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from zoo.data.synthetic import generate

SIDE = 96


def _grey8(channel: np.ndarray) -> np.ndarray:
    low, high = np.percentile(channel, (0.5, 99.5))
    return np.clip((channel - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)


def write_tiff(path: Path, style: str = "tissue", seed: int = 1) -> Path:
    """A 2-channel ``(C, Y, X)`` uint16 TIFF with declared axes."""
    sample = generate(style, seed=seed, shape=(SIDE, SIDE))
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.moveaxis(sample.image, -1, 0).astype(np.uint16),
                     metadata={"axes": "CYX"})
    return path


def write_png(path: Path, style: str = "nuclei", seed: int = 2) -> Path:
    """An 8-bit grey PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_grey8(generate(style, seed=seed, shape=(SIDE, SIDE)).image[..., 0])).save(path)
    return path


def write_jpeg(path: Path, style: str = "phase", seed: int = 3) -> Path:
    """An RGB JPEG (the grey image in all three channels)."""
    grey = _grey8(generate(style, seed=seed, shape=(SIDE, SIDE)).image[..., 0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.repeat(grey[..., None], 3, axis=-1)).save(path, quality=95)
    return path


def write_corrupt(path: Path) -> Path:
    """A file that starts like a TIFF and then holds garbage."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"II*\x00" + b"\x13garbage" * 20)
    return path


def mixed_folder(root: Path) -> dict[str, Path]:
    """``root/a.tif`` (2 channels), ``root/sub/b.png``, ``root/sub/deeper/c.jpg``, plus files a
    folder scan must skip: an earlier output, a hidden file and a text file."""
    files = {
        "a": write_tiff(root / "a.tif"),
        "b": write_png(root / "sub" / "b.png"),
        "c": write_jpeg(root / "sub" / "deeper" / "c.jpg"),
    }
    tifffile.imwrite(root / "old_masks.tif", np.zeros((8, 8), np.uint16))
    write_png(root / "sub" / ".hidden.png")
    (root / "notes.txt").write_text("not an image")
    return files


@contextmanager
def local_zoo_env(home: Path) -> Iterator[Path]:
    """``ZOO_HOME=home`` on CPU with the embedded manifest, and torch on one thread: on a
    2-core machine shared with other jobs, torch's spinning OpenMP threads make a 96² image
    40× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ZOO_HOME", str(home))
            patch.setenv("ZOO_DEVICE", "cpu")
            patch.delenv("ZOO_MANIFEST", raising=False)
            yield home
    finally:
        torch.set_num_threads(threads)
