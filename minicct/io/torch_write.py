"""Write PyTorch checkpoints (`torch.save` zip format) with only the standard library and NumPy.

The layout written is the one minicct/io/torch_read.py reads (see its docstring): an uncompressed zip with
`archive/data.pkl` (pickle protocol 2, written opcode by opcode by `_PickleWriter`, since the standard Pickler
cannot name torch globals without importing torch), `archive/byteorder`, `archive/data/<i>` (one contiguous
little-endian storage per tensor, its payload aligned to 64 bytes as torch does) and `archive/version`.

Public API:
    save_state_dict(state, path)                          (torch.load(path, weights_only=True) reads it back)
    from_params(params) -> dict[str, np.ndarray]          (the inverse of torch_read.to_params)
"""
from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from .torch_read import _contiguous_strides, check_finite

__all__ = [
    "save_state_dict",
    "from_params",
]


# --------------------------------------------------------------------------------------------------------------
# Storage tables of the writer
# --------------------------------------------------------------------------------------------------------------

# NumPy dtype (native) -> storage class name used by the writer.
_WRITE_STORAGE = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}
# Dtypes without a typed storage class: torch writes them as UntypedStorage + _rebuild_tensor_v3(..., dtype).
_WRITE_V3 = {np.dtype(np.uint16): "uint16", np.dtype(np.uint32): "uint32", np.dtype(np.uint64): "uint64"}


# --------------------------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------------------------

_ALIGN = 64  # torch aligns every storage record's payload to 64 bytes (lets torch.load(mmap=True) map it)


class _PickleWriter:
    """Emit pickle protocol-2 opcodes by hand.

    The standard Pickler cannot write a GLOBAL for `torch._utils._rebuild_tensor_v2` without importing torch (it
    checks that the name resolves), so the few opcodes a state_dict needs are written directly. No memo is used.
    """

    def __init__(self):
        self.out = bytearray(pickle.PROTO + b"\x02")

    def global_(self, module: str, name: str):
        self.out += pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii")

    def str_(self, s: str):
        b = s.encode("utf-8", "surrogatepass")
        self.out += pickle.BINUNICODE + struct.pack("<I", len(b)) + b

    def int_(self, n: int):
        if 0 <= n < 0x100:
            self.out += pickle.BININT1 + bytes([n])
        elif 0 <= n < 0x10000:
            self.out += pickle.BININT2 + struct.pack("<H", n)
        elif -(2**31) <= n < 2**31:
            self.out += pickle.BININT + struct.pack("<i", n)
        else:
            b = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
            self.out += pickle.LONG1 + bytes([len(b)]) + b

    def int_tuple(self, values):
        self.out += pickle.MARK
        for v in values:
            self.int_(int(v))
        self.out += pickle.TUPLE

    def empty_ordered_dict(self):
        self.global_("collections", "OrderedDict")
        self.out += pickle.EMPTY_TUPLE + pickle.REDUCE

    def tensor(self, storage_name: str, key: str, numel: int, shape, strides, v3_dtype: str | None = None):
        """_rebuild_tensor_v2(('storage', torch.<storage_name>, key, 'cpu', numel), 0, shape, strides, False,
        OrderedDict()); or, with `v3_dtype`, _rebuild_tensor_v3(('storage', torch.storage.UntypedStorage, key,
        'cpu', numel in bytes), 0, shape, strides, False, OrderedDict(), torch.<v3_dtype>)."""
        self.global_("torch._utils", "_rebuild_tensor_v3" if v3_dtype else "_rebuild_tensor_v2")
        self.out += pickle.MARK
        self.out += pickle.MARK
        self.str_("storage")
        if v3_dtype:
            self.global_("torch.storage", "UntypedStorage")
        else:
            self.global_("torch", storage_name)
        self.str_(key)
        self.str_("cpu")
        self.int_(numel)
        self.out += pickle.TUPLE + pickle.BINPERSID
        self.int_(0)
        self.int_tuple(shape)
        self.int_tuple(strides)
        self.out += pickle.NEWFALSE
        self.empty_ordered_dict()
        if v3_dtype:
            self.global_("torch", v3_dtype)
        self.out += pickle.TUPLE + pickle.REDUCE


def _aligned_extra(header_offset: int, name: bytes) -> bytes:
    """A zip 'extra' field padding the local header so that the member's data starts on a 64-byte boundary."""
    start = header_offset + 30 + len(name) + 4  # 30-byte local header, then name, then 4-byte extra-field header
    pad = -start % _ALIGN
    return struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # id 'FB', as torch's writer uses


def save_state_dict(state: dict, path) -> None:
    """Write a state_dict of NumPy arrays as a PyTorch zip checkpoint, atomically (temp file + os.replace).

    `torch.load(path, weights_only=True)` returns an OrderedDict of CPU tensors with the same names, order, dtypes,
    shapes and values. Each array gets its own contiguous little-endian storage.

    Args:
        state: name -> np.ndarray, dtype float32/float64/float16/int64/int32/int16/int8/uint8/bool (uint16/32/64
            too, written as torch does for them: untyped storage + _rebuild_tensor_v3).
        path: destination file; its folder must exist.
    """
    path = Path(path)
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict name -> np.ndarray, got {type(state).__name__}")
    arrays = []
    for k, v in state.items():
        if not isinstance(k, str):
            raise TypeError(f"state_dict keys must be str, got {k!r} ({type(k).__name__})")
        if not isinstance(v, np.ndarray):
            raise TypeError(f"state[{k!r}] must be a np.ndarray, got {type(v).__name__}")
        dt = v.dtype.newbyteorder("=") if v.dtype.byteorder in "<>" else v.dtype
        if dt not in _WRITE_STORAGE and dt not in _WRITE_V3:
            raise ValueError(
                f"state[{k!r}] has dtype {v.dtype}, which cannot be saved; use one of "
                f"{sorted(str(d) for d in (*_WRITE_STORAGE, *_WRITE_V3))}"
            )
        arrays.append((k, v.astype(dt.newbyteorder("<"), order="C", copy=False), dt))
    check_finite(state, "tensor", f"{path}: not written: ")

    pw = _PickleWriter()
    pw.empty_ordered_dict()
    if arrays:
        pw.out += pickle.MARK
        for i, (k, a, dt) in enumerate(arrays):
            pw.str_(k)
            if dt in _WRITE_V3:  # untyped storage: numel counts bytes
                pw.tensor("", str(i), a.nbytes, a.shape, _contiguous_strides(a.shape), v3_dtype=_WRITE_V3[dt])
            else:
                pw.tensor(_WRITE_STORAGE[dt], str(i), a.size, a.shape, _contiguous_strides(a.shape))
        pw.out += pickle.SETITEMS
    pw.out += pickle.STOP

    prefix = "archive"
    def write_archive(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:

            def write(name: str, data: bytes, align: bool = False):
                info = zipfile.ZipInfo(f"{prefix}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                if align:
                    info.extra = _aligned_extra(f.tell(), info.filename.encode("utf-8"))
                zf.writestr(info, data)

            write("data.pkl", bytes(pw.out))
            write("byteorder", b"little")
            for i, (_, a, _) in enumerate(arrays):
                write(f"data/{i}", a.tobytes(), align=True)
            write("version", b"3\n")

    from .atomic import atomic_write
    atomic_write(path, write_archive)


def from_params(params: dict) -> dict[str, np.ndarray]:
    """Parameters -> state_dict (same names, same order) as float32 C-contiguous copies, ready for
    `save_state_dict`. The inverse of `to_params`."""
    out = {}
    for k, v in params.items():
        v = np.asarray(v)
        if not isinstance(k, str) or not np.issubdtype(v.dtype, np.floating):
            raise ValueError(f"parameter {k!r} must be a floating-point array under a str name, got {v.dtype}")
        out[k] = np.array(v, dtype=np.float32, order="C")
    check_finite(out)
    return out
