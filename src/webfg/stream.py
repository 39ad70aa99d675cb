"""Streaming reads of float16 ``.npy`` prediction files in row blocks, with checks.

Why not a plain ``np.load(mmap_mode='r')``: reading a memory map through maps every
page it touches into the process, so RSS grows to the file size (17 models x 0.9 GB at
the challenge's scale). ``RowReader`` reads row blocks with ``os.preadv`` into one reused
buffer and tells the kernel it may drop the pages it has read (``posix_fadvise
DONTNEED``), so memory is bounded by the block size whatever M and N are.

float16 -> float32 conversion: numpy's cast runs at ~0.3 Gelem/s on this project's CPU,
torch's ``copy_`` into a preallocated float32 tensor at ~3 Gelem/s (both exact; measured
by ``bench/bench_postprocess.py``), so torch is used when it imports and numpy otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from webfg.io import InputError

# float16 bit patterns >= 0x7C00 are +inf, NaN or have the sign bit set (negative or -0.0):
# one unsigned max over the raw block rejects all of them at ~10 Gelem/s.
_F16_FIRST_BAD = 0x7C00

ROW_SUM_TOLERANCE = 0.02  # float16 rounding of 5,000 terms stays far below this


def read_npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of an ``.npy`` file without reading its data.

    Raises InputError naming the file when it is not an ``.npy`` or is shorter than its
    header says (a truncated copy).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except ValueError as e:
        raise InputError(f"{path}: not a numpy .npy file ({e})") from None
    if dtype.hasobject:
        raise InputError(f"{path}: holds Python objects, not numbers")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < expected:
        raise InputError(f"{path}: truncated: {size} bytes, the header {shape} {dtype} needs {expected}")
    return shape, dtype, fortran, offset


def check_block(block: np.ndarray, where: str, first_row: int) -> None:
    """Raise InputError naming ``where`` and the row when a block holds NaN, inf or
    negative values."""
    if block.dtype == np.float16:
        bits = block.view(np.uint16)
        if bits.size and int(bits.max()) >= _F16_FIRST_BAD:
            row = int(np.flatnonzero((bits >= _F16_FIRST_BAD).any(axis=1))[0])
            raise InputError(f"{where}: row {first_row + row} has NaN, inf or negative values")
    elif block.size and not (np.isfinite(block).all() and block.min() >= 0):
        row = int(np.flatnonzero(~(np.isfinite(block) & (block >= 0)).all(axis=1))[0])
        raise InputError(f"{where}: row {first_row + row} has NaN, inf or negative values")


def check_row_sums(sums: np.ndarray, where: str, first_row: int, tolerance: float = ROW_SUM_TOLERANCE) -> None:
    """Raise InputError naming ``where`` and the row when a row does not sum to ~1."""
    off = ~(np.abs(sums - 1) <= tolerance)
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise InputError(f"{where}: row {first_row + row} sums to {float(sums[row]):.4g}, "
                         f"not 1 (+-{tolerance}): expected probabilities")


class RowReader:
    """Row blocks of one C-ordered float16 (N, C) ``.npy`` file, read without mapping it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        shape, dtype, fortran, self.offset = read_npy_header(self.path)
        if len(shape) != 2:
            raise InputError(f"{self.path}: expected a 2-D (rows, classes) array, got shape {shape}")
        if dtype != np.dtype("<f2") or fortran:
            raise InputError(f"{self.path}: expected little-endian float16 in C order, got {dtype}"
                             f"{' (Fortran order)' if fortran else ''}")
        self.shape = shape
        self.row_bytes = shape[1] * 2
        self.fd = os.open(self.path, os.O_RDONLY)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

    def read(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Rows [start, stop) into ``out`` (a float16 buffer of >= stop - start rows); the
        page cache of what was read is released."""
        view = out[: stop - start]
        want = view.nbytes
        pos = self.offset + start * self.row_bytes
        got = 0
        mem = memoryview(view.reshape(-1).view(np.uint8))
        while got < want:
            n = os.preadv(self.fd, [mem[got:]], pos + got)
            if n == 0:
                raise InputError(f"{self.path}: truncated while reading row {start + got // self.row_bytes}")
            got += n
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, pos, want, os.POSIX_FADV_DONTNEED)
        return view

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency, numpy is the fallback
        return None
    return torch


def half_to_float(src: np.ndarray, dst: np.ndarray, backend: str = "auto") -> np.ndarray:
    """Exact float16 -> float32 into the preallocated ``dst`` (same shape); returns ``dst``."""
    torch = _torch() if backend in ("auto", "torch") else None
    if torch is not None:
        torch.from_numpy(dst).copy_(torch.from_numpy(src))
    else:
        np.copyto(dst, src)
    return dst


def float_to_half(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """float32 -> float16 (round to nearest even, like numpy) into ``dst``; returns ``dst``."""
    torch = _torch()
    if torch is not None:
        torch.from_numpy(dst).copy_(torch.from_numpy(src))
    else:
        np.copyto(dst, src, casting="same_kind")
    return dst


def write_npy_header(f, shape: tuple[int, int], dtype=np.float16) -> None:
    """Write the header of a C-ordered ``.npy``; the data is appended by the caller."""
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})
