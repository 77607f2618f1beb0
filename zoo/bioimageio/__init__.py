"""bioimage.io model packages out and in.

- ``export_package(registry, ref, out)`` writes a model as a bioimage.io package (model
  spec 0.5): ``rdf.yaml``, ONNX and TorchScript weights, test tensors, a cover, a README,
  and the model's own safetensors files as attachments named in ``config.cellzoo``.
- ``read_package(path)`` opens a package without trusting it: safe member names, every
  declared sha256 checked, ``config.cellzoo`` validated.
- ``import_package(registry, path, name=...)`` brings a cellzoo package back into the user's
  zoo, after checking that its weights reproduce the package's own test outputs.

Weights come back through the safetensors attachment, never through the TorchScript file
(a pickle inside a zip) or by rebuilding a network from ONNX initializers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ExportOptions": "zoo.bioimageio.export",
    "export_package": "zoo.bioimageio.export",
    "Package": "zoo.bioimageio.importing",
    "import_package": "zoo.bioimageio.importing",
    "read_package": "zoo.bioimageio.importing",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Load the exporter (torch) or the importer on first use of one of their names."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'zoo.bioimageio' has no attribute {name!r}")
