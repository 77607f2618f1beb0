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

from zoo.bioimageio.export import ExportOptions, export_package
from zoo.bioimageio.importing import Package, import_package, read_package

__all__ = ["ExportOptions", "Package", "export_package", "import_package", "read_package"]
