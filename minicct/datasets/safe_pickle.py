"""A restricted unpickler for the official CIFAR python pickles.

`pickle.load` runs whatever callable a pickle names (`os.system` included). The CIFAR files need only three
globals: NumPy's array reconstructor, `numpy.ndarray` and `numpy.dtype`; labels and names are plain lists,
bytes and ints. `RestrictedUnpickler` resolves those three and refuses every other global with a
`pickle.UnpicklingError` naming it, before anything is called.
"""
from __future__ import annotations

import io
import pickle

import numpy as np

try:  # NumPy >= 2: the implementation lives in numpy._core; numpy.core is a deprecated alias
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct

# (module, name) as written in the pickle -> the object it may resolve to. The CIFAR files were written by
# Python 2 with NumPy 1.x (numpy.core); pickles written by NumPy 2 say numpy._core.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only `ALLOWED_GLOBALS`; anything else -> pickle.UnpicklingError."""

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load the global {module}.{name}: the CIFAR pickles need only "
                f"{sorted(m + '.' + n for m, n in ALLOWED_GLOBALS)}. The file is not an official CIFAR "
                f"file (or is corrupted); delete it and download again.") from None


def restricted_load(file, encoding: str = "bytes"):
    """Unpickle from a binary file object or bytes with `RestrictedUnpickler`.

    encoding="bytes" (the official page's Python 3 recipe) keeps the Python 2 `str` keys as bytes, e.g.
    b"data", b"labels".
    """
    if isinstance(file, (bytes, bytearray)):
        file = io.BytesIO(file)
    return RestrictedUnpickler(file, encoding=encoding).load()
