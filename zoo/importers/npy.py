"""Read ``.npy`` files that hold a pickled dict (Cellpose's size models, ``style_choice.npy``)
without ever running code from the file.

``np.save(path, {...})`` stores a 0-d object array whose payload is a pickle, which
``np.load(allow_pickle=False)`` refuses and ``allow_pickle=True`` would execute. Here the
pickle is read by an unpickler that resolves only the few numpy globals that rebuild arrays,
dtypes and scalars (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``); any other global,
such as a ``__reduce__`` payload naming ``os.system``, raises before anything is called.
Plain Python containers and numbers need no global and load as usual.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from zoo.errors import ZooError

_MULTIARRAY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_MAX_BYTES = 512 * 1024 * 1024


class UnsafeFileError(ZooError):
    """A file asks to run code (a pickle global outside the allow-list) or is malformed."""


def _multiarray():
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    return multiarray


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the numpy globals that rebuild arrays, dtypes and scalars."""

    def find_class(self, module: str, name: str) -> Any:
        multiarray = _multiarray()
        allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
        for prefix in _MULTIARRAY_MODULES:
            allowed[(prefix, "_reconstruct")] = multiarray._reconstruct
            allowed[(prefix, "scalar")] = multiarray.scalar
        if (module, name) not in allowed:
            raise UnsafeFileError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return allowed[(module, name)]


def load_npy(path: str | Path) -> Any:
    """The object stored in the ``.npy`` file at ``path``, without executing code.

    A plain array loads with ``np.load(allow_pickle=False)``; an object array (e.g. a dict
    saved with ``np.save``) is unpickled with numpy globals only. A 0-d object array is
    unwrapped to its item (``np.load(...).item()``).

    Raises:
        UnsafeFileError: not a ``.npy`` file, truncated, or its pickle names anything
            outside numpy's array/dtype/scalar constructors.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ZooError(f"{path}: cannot read ({error.strerror or error})") from None
    if len(data) > _MAX_BYTES:
        raise UnsafeFileError(f"{path}: {len(data)} bytes is larger than {_MAX_BYTES}")
    handle = io.BytesIO(data)
    try:
        version = npy_format.read_magic(handle)
        header = (npy_format.read_array_header_1_0(handle) if version == (1, 0)
                  else npy_format.read_array_header_2_0(handle))
    except (ValueError, EOFError) as error:
        raise UnsafeFileError(f"{path}: not a .npy file ({error})") from None
    _, _, dtype = header
    try:
        if not dtype.hasobject:
            return np.load(io.BytesIO(data), allow_pickle=False)
        value = _NumpyOnlyUnpickler(handle).load()
    except UnsafeFileError as error:
        raise UnsafeFileError(f"{path}: {error}") from None
    except (pickle.UnpicklingError, ValueError, EOFError, TypeError, AttributeError,
            IndexError, KeyError) as error:
        raise UnsafeFileError(f"{path}: truncated or malformed .npy file ({error})") from None
    if isinstance(value, np.ndarray) and value.dtype.hasobject and value.shape == ():
        return value.item()
    return value


def load_npy_dict(path: str | Path, required: tuple[str, ...]) -> dict[str, Any]:
    """``load_npy`` for a file that must hold a dict with at least the ``required`` keys."""
    value = load_npy(path)
    if not isinstance(value, dict):
        raise ZooError(f"{path}: expected a dict saved with np.save, got {type(value).__name__}")
    missing = [key for key in required if key not in value]
    if missing:
        raise ZooError(f"{path}: missing keys {missing} (has {sorted(map(str, value))})")
    return value
