"""Draw docs/figures/style_map.png: the shipped bank's style map with the demo image and one
synthetic image per style (seeds 60_000 + i, which no ``zoo build`` split uses) as stars.

Usage:
    .venv/bin/python docs/style_map.py
It runs ``zoo route --plot`` on those images, as a user would.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from zoo.data.synthetic import STYLES, generate  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="style-map-") as tmp:
        folder = Path(tmp)
        shutil.copy(ROOT / "samples" / "demo.tif", folder / "demo.tif")
        for index, style in enumerate(STYLES):
            sample = generate(style, seed=60_000 + index, shape=(256, 256))
            image = sample.image if sample.image.ndim == 3 else sample.image[..., None]
            cyto, nucleus = sample.channels  # each style's own channels, as channels 0 and 1
            second = image[..., nucleus] if nucleus is not None else np.zeros_like(image[..., 0])
            tifffile.imwrite(folder / f"{style}.tif", np.stack([image[..., cyto], second]))
        zoo = Path(sys.executable).with_name("zoo")
        subprocess.run([str(zoo), "route", str(folder), "--channels", "0,1", "--plot",
                        str(ROOT / "docs" / "figures" / "style_map.png")], check=True)


if __name__ == "__main__":
    main()
