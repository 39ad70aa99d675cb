"""The one validated reader of prediction files, and streaming row blocks of them.

Every command and rule that reads a prediction (``<stem>.npy`` + ``.rows.txt`` +
``.json``, see ``webfg.io``) goes through ``open_prediction``, which refuses, with one
``InputError`` naming the file (and row) and what was expected:

* a file that is not a plain ``.npy`` (an ``.npz`` archive or a pickle under that name,
  a truncated copy, Python objects), a matrix that is not 2-D floating point, or an
  empty one;
* a missing ``.rows.txt``, a row count that differs from the matrix, a duplicate row name;
* a JSON whose ``num_rows`` / ``num_classes`` disagree with the matrix, or whose ``split``
  is not the folder of the rows;
* (``check_values``) NaN, inf, values outside [0, 1] and rows that do not sum to 1 within
  float16 tolerance (logits, integer counts...), read in row blocks, never the whole file.

float16 in C order is the format (SPEC C); float32/float64 and Fortran order are
accepted everywhere and converted on read, block by block.

float16 -> float32: numpy's cast takes a slow path for subnormal float16 (most of a
5,000-class softmax row is below 6e-5): 0.09 Gelem/s here, against ~1.3 Gelem/s for
the exact bit trick of ``half_bits_to_float``: shift the 15 value bits into float32
position, which is the value times 2**-112 (subnormals included), and fold the 2**112
into the scale the caller multiplies by anyway. Inputs with the sign bit or an
all-ones exponent (negative, inf, NaN) are refused before, so the trick is exact.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from webfg.io import InputError, prediction_paths, read_json, read_split_list

# float16 bit patterns above 0x3C00 (= 1.0) are > 1, inf, NaN or have the sign bit set
# (negative or -0.0): one unsigned max over the raw block checks the whole [0, 1] range.
F16_ONE_BITS = 0x3C00
HALF_TO_FLOAT_SCALE = np.float32(2.0**112)  # (bits << 13) as float32 * 2**112 = the float16 value

ROW_SUM_TOLERANCE = 0.02  # float16 rounding of 5,000 terms moves a sum by < 1e-3
BLOCK_ROWS = 64  # float32 work block: 64 x 5,000 x 4 B = 1.3 MB, stays in the CPU's L2/L3


def read_npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of an ``.npy`` file without reading its data.

    Raises InputError naming the file when it is missing, is an ``.npz``/pickle/other file
    under an ``.npy`` name, holds objects, or is shorter than its header says.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(6)
            if head[:4] == b"PK\x03\x04":
                raise InputError(
                    f"{path}: a .npz (zip) archive under a .npy name; expected one array written by numpy.save"
                )
            if head[:1] == b"\x80" or head[:1] in (b"(", b"]", b"}"):
                raise InputError(
                    f"{path}: a Python pickle under a .npy name (not read); expected one array written by numpy.save"
                )
            f.seek(0)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: a folder, expected a .npy file") from None
    except (ValueError, EOFError) as e:
        raise InputError(f"{path}: not a numpy .npy file ({e})") from None
    if dtype.hasobject:
        raise InputError(f"{path}: holds Python objects, not numbers")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < expected:
        raise InputError(f"{path}: truncated: {size} bytes, the header {shape} {dtype} needs {expected}")
    return shape, dtype, fortran, offset


def half_bits_to_float(bits: np.ndarray, out: np.ndarray) -> np.ndarray:
    """float16 bit patterns (uint16, values in [0, 1]) -> float32 ``value * 2**-112`` into
    ``out`` (same shape, float32); multiply by ``HALF_TO_FLOAT_SCALE`` for the value."""
    np.left_shift(bits, 13, out=out.view(np.uint32), dtype=np.uint32)
    return out


def _describe_bad(values: np.ndarray) -> str:
    """What is wrong with the first bad value of a row (as float32)."""
    v = values[~((values >= 0) & (values <= 1))][0] if not ((values >= 0) & (values <= 1)).all() else None
    if v is None:
        return "has values outside [0, 1]"
    if np.isnan(v):
        return "has NaN"
    if np.isinf(v):
        return "has inf"
    return f"has the value {float(v):.4g} outside [0, 1]"


def check_block(
    block: np.ndarray, where: str, first_row: int, sums: np.ndarray | None = None, tolerance: float = ROW_SUM_TOLERANCE
) -> None:
    """Raise InputError naming ``where`` and the row when a row of ``block`` holds NaN, inf,
    a value outside [0, 1] or (given its ``sums``) does not sum to 1."""
    if block.dtype == np.float16:
        bits = block.view(np.uint16)
        bad_rows = (bits > F16_ONE_BITS).any(axis=1) if bits.size and int(bits.max()) > F16_ONE_BITS else None
    else:
        ok = (block >= 0) & (block <= 1)  # False for NaN
        bad_rows = None if ok.all() else ~ok.all(axis=1)
    if bad_rows is not None:
        row = int(np.flatnonzero(bad_rows)[0])
        values = block[row].astype(np.float32)
        if block.dtype == np.float16 and (block[row].view(np.uint16) == 0x8000).any() and (values >= 0).all():
            raise InputError(f"{where}: row {first_row + row} has -0.0; expected probabilities in [0, 1]")
        raise InputError(f"{where}: row {first_row + row} {_describe_bad(values)}; expected probabilities in [0, 1]")
    if sums is not None:
        off = ~(np.abs(sums - 1) <= tolerance)
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise InputError(
                f"{where}: row {first_row + row} sums to {float(sums[row]):.4g}, "
                f"not 1 (+-{tolerance}): expected probabilities"
            )


def read_row_names(path: Path) -> list[str]:
    """The row names of a ``.rows.txt``, as ``read_split_list(path, labelled=False)`` returns
    them (same checks and messages), ~100x faster on the usual clean file: 90,000 names x 17
    members went through pathlib in 15 s. Any line the fast check is unsure of (blank, a
    byte-order mark, a backslash, an absolute or climbing path) sends the whole file to
    ``read_split_list``."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return read_split_list(path, labelled=False)  # its message names the byte
    lines = text.split("\n")  # as read_split_list splits (not str.splitlines: \x85, \u2028, ...)
    if lines[-1] == "":
        lines.pop()
    for line in lines:
        # isprintable: no NUL, CR or other control character, no Unicode line separator
        if not line.strip() or not line.isprintable() or line[0] in "/\ufeff" or "\\" in line or "/../" in f"/{line}/":
            return read_split_list(path, labelled=False)
    return lines


class Prediction:
    """One checked prediction file: shape, layout, row names and metadata (no data read).

    ``array()`` is the matrix as a read-only memory map in its stored layout;
    ``blocks()`` reads it in row blocks as float32; ``check_values()`` reads it through.
    """

    def __init__(self, stem):
        self.npy, self.rows_path, self.json_path = prediction_paths(stem)
        self.shape, self.dtype, self.fortran, self.offset = read_npy_header(self.npy)
        npy = self.npy
        if len(self.shape) != 2:
            raise InputError(f"{npy}: expected a 2-D (rows, classes) matrix, got shape {self.shape}")
        if self.dtype.kind != "f" or self.dtype.itemsize not in (2, 4, 8):
            raise InputError(f"{npy}: expected float16 probabilities (float32/float64 are converted), got {self.dtype}")
        n, c = self.shape
        if n == 0 or c == 0:
            raise InputError(f"{npy}: empty matrix, shape {self.shape}; expected at least one row and one class")
        if not self.rows_path.is_file():
            raise InputError(
                f"{self.rows_path}: no such file; every prediction .npy needs the list of its row names next to it"
            )
        self.relpaths = read_row_names(self.rows_path)
        if len(self.relpaths) != n:
            raise InputError(f"{npy}: {n} rows but {self.rows_path} lists {len(self.relpaths)}")
        if len(set(self.relpaths)) != n:
            first: dict[str, int] = {}
            for line, name in enumerate(self.relpaths, 1):
                if name in first:
                    raise InputError(
                        f"{self.rows_path}:{line}: duplicate row name {name!r} (also on line {first[name]})"
                    )
                first[name] = line
        self.meta = read_json(self.json_path) if self.json_path.is_file() else {}
        if not isinstance(self.meta, dict):
            raise InputError(f"{self.json_path}: expected a JSON object")
        for key, value in (("num_rows", n), ("num_classes", c)):
            if key in self.meta and self.meta[key] != value:
                raise InputError(f"{self.json_path}: {key} is {self.meta[key]!r} but {npy} has {value}")
        split = self.meta.get("split")
        if isinstance(split, str) and split != "val":  # val rows live in train/
            outside = next((r for r in self.relpaths if not r.startswith(f"{split}/")), None)
            if outside is not None:
                raise InputError(
                    f"{self.json_path}: split is {split!r} but {self.rows_path} lists {outside!r}, not under {split}/"
                )
        self.fast = self.dtype == np.dtype("<f2") and not self.fortran

    def array(self) -> np.ndarray:
        return np.load(self.npy, mmap_mode="r", allow_pickle=False)

    def read_half_bits(self, fd: int, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Rows [start, stop) of a C-order float16 file as raw uint16, read with pread into ``out``."""
        c = self.shape[1]
        view = out[: (stop - start) * c]
        mem = memoryview(view.view(np.uint8))
        pos, got, want = self.offset + start * c * 2, 0, view.nbytes
        while got < want:
            n = os.preadv(fd, [mem[got:]], pos + got)
            if n == 0:
                raise InputError(f"{self.npy}: truncated while reading row {start + got // (2 * c)}")
            got += n
        return view.reshape(stop - start, c)

    def check_values(self, chunk_rows: int = 1024) -> None:
        """Read the matrix through once: values in [0, 1], rows summing to 1."""
        n, c = self.shape
        where = str(self.npy)
        if self.fast:
            bits = np.empty(chunk_rows * c, dtype=np.uint16)
            work = np.empty((BLOCK_ROWS, c), dtype=np.float32)
            fd = os.open(self.npy, os.O_RDONLY)
            try:
                for start in range(0, n, chunk_rows):
                    stop = min(start + chunk_rows, n)
                    block = self.read_half_bits(fd, start, stop, bits)
                    check_block(block.view(np.float16), where, start)
                    for s in range(0, stop - start, BLOCK_ROWS):
                        sub = block[s : s + BLOCK_ROWS]
                        w = half_bits_to_float(sub, work[: len(sub)])
                        sums = w.sum(axis=1) * HALF_TO_FLOAT_SCALE
                        check_block(sub.view(np.float16), where, start + s, sums)
            finally:
                os.close(fd)
            return
        probs = self.array()
        for start in range(0, n, chunk_rows):
            block = np.asarray(probs[start : start + chunk_rows], dtype=np.float64)
            check_block(block, where, start, block.sum(axis=1))


def open_prediction(stem, check_values: bool = True) -> Prediction:
    """The checked prediction ``stem`` (see the module docstring for what is refused)."""
    pred = Prediction(stem)
    if check_values:
        pred.check_values()
    return pred


def write_npy_header(f, shape: tuple[int, int], dtype=np.float16) -> None:
    """Write the header of a C-ordered ``.npy``; the data is appended by the caller."""
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    )
