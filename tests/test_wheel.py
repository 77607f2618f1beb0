"""The wheel: one distribution that segments offline from any folder once installed.

The wheel is built from this checkout and installed with pip into a fresh virtual
environment; only its dependencies are borrowed from the test environment (a ``.pth`` file
lists that environment's site-packages, whose own ``.pth`` files, the editable install of
this checkout among them, are not processed). ``.ci/run`` also installs the wheel with all
its dependencies from the package index into a clean venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

from zoo.io import read_image

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "models.yaml").is_file(), reason="no shipped zoo")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out), str(ROOT)],
                   check=True, timeout=600, capture_output=True)
    (found,) = out.glob("cellzoo-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=120)
    python = root / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=600,
                   capture_output=True)
    return root


def test_the_wheel_holds_one_namespace_and_the_shipped_zoo(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.startswith("cellzoo-")}
    assert tops == {"zoo"}, tops  # no top-level cli or service in site-packages
    assert {"zoo/cli/main.py", "zoo/service/app.py", "zoo/shipped/models.yaml",
            "zoo/shipped/weights/style_bank.safetensors"} <= set(names)


def test_the_installed_wheel_segments_offline_from_another_folder(venv: Path, tmp_path: Path):
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    env.update(ZOO_HOME=str(tmp_path / "home"), ZOO_OFFLINE="1", PYTHONPATH="")
    where = tmp_path / "elsewhere"
    where.mkdir()
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import json, importlib.util, zoo, zoo.cli.main, zoo.registry as r; "
         "print(json.dumps({'zoo': zoo.__file__, 'manifest': str(r.embedded_manifest_path()), "
         "'cli': importlib.util.find_spec('cli') is not None, "
         "'service': importlib.util.find_spec('service') is not None}))"],
        cwd=where, env=env, capture_output=True, text=True, timeout=300, check=True)
    found = json.loads(probe.stdout)
    assert found["zoo"].startswith(str(venv)) and found["manifest"].startswith(str(venv))
    assert not found["cli"] and not found["service"]
    image = ROOT / "samples" / "demo.tif"
    done = subprocess.run([str(venv / "bin" / "zoo"), "segment", str(image), "--channels", "0,1",
                           "--model", "cpnet.generalist", "--out", "out"],
                          cwd=where, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "preparing cellzoo's post-processing" in done.stderr  # a fresh machine compiles once
    assert any((tmp_path / "home" / "numba").rglob("*.nbi"))  # into ZOO_HOME, not the install
    assert not any(Path(found["zoo"]).parent.rglob("*.nbi"))
    labels = read_image(where / "out" / "demo_masks.tif")
    assert labels.shape == read_image(image).shape[:2] and labels.max() > 0
    assert not (Path(found["manifest"]).parent / "user").exists()  # nothing written into the install
    assert (tmp_path / "home" / "models" / "cpnet.generalist").is_dir()
    assert np.unique(labels).size - 1 == labels.max()
    again = subprocess.run([str(venv / "bin" / "zoo"), "segment", str(image), "--channels", "0,1",
                            "--model", "cpnet.generalist", "--out", "out", "--overwrite"],
                           cwd=where, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "preparing" not in again.stderr
