"""Unpickling data files without running code: only numpy arrays, lists, dicts, strings
and numbers come out.

Pickle calls whatever callables a stream names, so a tampered file could run code.
Restricting ``find_class`` to numpy's array reconstructors (and ``_codecs.encode``,
which protocol 2 uses for raw bytes) turns such a file into an ``InputError``.
Lists, dicts, strings and numbers are native pickle opcodes and need no globals.
"""

from __future__ import annotations

import codecs
import io
import pickle

import numpy as np

from webfg.io import InputError


def _numpy_globals() -> dict:
    """The globals a pickled numpy array names (protocols 3-5, numpy 1.x and 2.x spellings)."""
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{prefix}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    return allowed


class NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild plain numpy arrays and nothing else.

    Why: pickle runs whatever callables the stream names. Restricting
    ``find_class`` to the few numpy reconstructors means a tampered data file
    raises ``InputError`` instead of executing code.
    """

    def __init__(self, file, where: str):
        super().__init__(file)
        self.where = where
        self.allowed = _numpy_globals()

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise InputError(
                f"{self.where}: refusing to unpickle {module}.{name} "
                "(only numpy arrays, lists, dicts, strings and numbers are allowed)"
            ) from None

    def persistent_load(self, pid):
        raise InputError(f"{self.where}: refusing persistent id {pid!r} in pickle")


def load_data_pickle(data: bytes, where: str):
    """Unpickle ``data`` into plain data; object arrays are refused too (their elements
    would be arbitrary Python objects)."""
    try:
        obj = NumpyArrayUnpickler(io.BytesIO(data), where).load()
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{where}: not a readable pickle ({type(e).__name__}: {e})") from None
    _check_plain(obj, where)
    return obj


def _check_plain(obj, where: str) -> None:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise InputError(f"{where}: refusing a numpy object array")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, where)
            _check_plain(v, where)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_plain(v, where)
    elif not isinstance(obj, (str, bytes, int, float, bool, type(None), np.generic)):
        raise InputError(f"{where}: unexpected {type(obj).__name__} in pickle")


def load_numpy_pickle(data: bytes, where: str) -> np.ndarray:
    """Unpickle ``data`` that must hold exactly one numeric numpy array."""
    obj = load_data_pickle(data, where)
    if not isinstance(obj, np.ndarray):
        raise InputError(f"{where}: expected a numeric numpy array, got {type(obj).__name__}")
    return obj
