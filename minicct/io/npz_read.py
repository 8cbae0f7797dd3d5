"""Bounded reading of .npz files written by other people (datasets, features files): nothing is inflated before
its declared size was checked, and only the members a caller asks for are read.

    open_npz(path)                  a zipfile.ZipFile; refuses duplicate member names (np.load and zipfile would
                                    each silently pick one copy)
    npy_header(zf, path, key)       (shape, dtype, fortran_order) of member `key` (.npy), reading only its header
    read_npy(zf, path, key)         the array, after: the header's byte count matches the member's declared
                                    size, that size fits the memory (`memory_budget`), and the member does not
                                    inflate more than MAX_INFLATE_RATIO (a zip bomb); read in 1 MiB pieces
Errors are ValueError naming the file and the member, what it claims and what to do.
"""
from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["open_npz", "npy_header", "read_npy", "memory_budget", "MAX_INFLATE_RATIO"]

MAX_INFLATE_RATIO = 200     # np.savez stores (ratio 1); savez_compressed of images/activations: < 20
_RATIO_FLOOR = 16 << 20     # members smaller than this are not checked for their ratio
_MAX_HEADER = 1 << 16


def memory_budget() -> int:
    """Bytes one array may take: the smaller of the physical memory and the address-space limit (RLIMIT_AS)."""
    total = 1 << 62
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY and soft > 0:
            total = min(total, soft)
    except (ImportError, OSError, ValueError):
        pass
    return int(total)


def _gb(n) -> str:
    return f"{n / 1e9:.3g} GB"


def open_npz(path) -> zipfile.ZipFile:
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz ({type(e).__name__}: {e}); write it with np.savez") from e
    names = zf.namelist()
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        zf.close()
        raise ValueError(f"{path}: the archive holds the member(s) {dup[:5]} more than once; which copy counts is "
                         f"ambiguous (the file was appended to or crafted). Rewrite it with np.savez")
    return zf


def _info(zf, path, key):
    try:
        return zf.getinfo(key + ".npy")
    except KeyError:
        raise ValueError(f"{path}: no array {key!r}") from None


def npy_header(zf, path, key):
    """(shape, dtype, fortran_order, info) of one member, from its header only."""
    info = _info(zf, path, key)
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
    except (ValueError, zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as e:
        raise ValueError(f"{path}: array {key!r} has no valid .npy header ({e}); the file is damaged") from e
    if dtype.hasobject:
        raise ValueError(f"{path}: array {key!r} holds Python objects; refusing (only plain numeric or string "
                         f"arrays are read; save with np.savez of numeric arrays)")
    return tuple(int(n) for n in shape), dtype, fortran, info


def read_npy(zf, path, key, max_bytes: int | None = None) -> np.ndarray:
    """Member `key` as an array (native byte order), each size checked before anything is inflated."""
    shape, dtype, fortran, info = npy_header(zf, path, key)
    nbytes = math.prod(shape) * dtype.itemsize
    budget = memory_budget() if max_bytes is None else max_bytes
    if nbytes > budget:
        raise ValueError(f"{path}: array {key!r} declares shape {shape} {dtype} = {_gb(nbytes)}, more than the "
                         f"{_gb(budget)} of memory available; the file is damaged or crafted, or too big for this "
                         f"machine (use fewer images)")
    if not (nbytes <= info.file_size <= nbytes + _MAX_HEADER):
        raise ValueError(f"{path}: array {key!r} declares shape {shape} {dtype} ({nbytes} bytes) but its member "
                         f"holds {info.file_size} bytes: the file is truncated, damaged or crafted; write it again "
                         f"with np.savez")
    if (info.compress_type != zipfile.ZIP_STORED and info.file_size > _RATIO_FLOOR
            and info.file_size > MAX_INFLATE_RATIO * max(info.compress_size, 1)):
        raise ValueError(f"{path}: array {key!r} inflates {info.compress_size} compressed bytes to "
                         f"{info.file_size} ({info.file_size // max(info.compress_size, 1)}:1, more than "
                         f"{MAX_INFLATE_RATIO}:1): a zip bomb, or an almost constant array. If the file is "
                         f"genuine, save it uncompressed (np.savez, not np.savez_compressed)")
    out = np.empty(nbytes, np.uint8)
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
            pos = read_into(f, out)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as e:
        raise ValueError(f"{path}: array {key!r} cannot be read ({type(e).__name__}: {e}); the file is damaged") \
            from e
    if pos != nbytes:
        raise ValueError(f"{path}: array {key!r} is truncated ({pos} of {nbytes} bytes)")
    if dtype.itemsize == 0:
        return np.zeros(shape, dtype)
    arr = out.view(dtype)
    arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    if not dtype.isnative and dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))
    return arr if arr.flags.c_contiguous else np.array(arr, order="C")   # (ascontiguousarray makes 0-d 1-d)


def read_into(f, out: np.ndarray) -> int:
    """Fill the uint8 array `out` from the open file `f` in 1 MiB pieces (no second copy); returns the bytes read
    (fewer than out.size if the file ends first)."""
    pos, n = 0, out.size
    while pos < n:
        piece = f.read(min(1 << 20, n - pos))
        if not piece:
            break
        out[pos:pos + len(piece)] = np.frombuffer(piece, np.uint8)
        pos += len(piece)
    return pos
