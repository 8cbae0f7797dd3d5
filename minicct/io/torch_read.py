"""Read PyTorch checkpoints (`torch.save` zip format) with only the standard library and NumPy.

Since PyTorch 1.6, `torch.save(obj, "f.pth")` writes an uncompressed zip archive whose members all sit under one
folder `<prefix>/` (the file stem, or `archive`):

    <prefix>/data.pkl           the object, pickled (protocol 2); tensors appear as calls of
                                torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
    <prefix>/data/<key>         raw bytes of one storage, referenced from data.pkl by a persistent id
                                ('storage', torch.FloatStorage, '<key>', 'cpu', numel)
    <prefix>/byteorder          'little' or 'big' (absent in old files: little)
    <prefix>/version            format version, e.g. '3\\n'
    <prefix>/.format_version, .storage_alignment, .data/serialization_id   (newer torch; not needed to read)

A tensor is a strided view of its storage: element `idx` (a tuple) sits at storage index
`offset + sum(idx[i] * stride[i])`. Several tensors of one state_dict may share a storage (views of each other).

Security: a pickle can call any importable function. `_RestrictedUnpickler` overrides `find_class` and
`persistent_load` so that only what a checkpoint needs resolves (OrderedDict, torch storage types, the tensor and
parameter rebuild functions, which are re-implemented here in NumPy, and argparse.Namespace, which becomes the inert
record `TrainingArgs`: nothing of argparse is imported); anything else raises `UnsafeCheckpointError` (a
`pickle.UnpicklingError`) naming the refused `module.name` before it can run.

Training checkpoints (timm / SHI-Labs train.py: epoch, arch, state_dict, state_dict_ema, optimizer, version, metric,
args, amp_scaler) are read lazily: `persistent_load` returns a storage reference and the rebuild functions a tensor
reference; only the tensors of the chosen state_dict are then read from the zip (the optimizer's moments never
are). Storage locations ('cpu', 'cuda:0', ...) are ignored.

Public API:
    load_state_dict(path, ema=False) -> dict[str, np.ndarray]      (ordered as in the file)
    load_checkpoint_state(path, ema=False) -> (state, info)       (info: arch, epoch, metric, args, ..., report)
    to_params(state, expected_shapes) -> dict[str, np.ndarray]   (checked names/shapes, float32)
    CheckpointError (ValueError), UnsafeCheckpointError (pickle.UnpicklingError)

The writer (save_state_dict, from_params) is minicct/io/torch_write.py; minicct/io/torch_io.py re-exports both.
"""
from __future__ import annotations

import collections
import io
import math
import pickle
import re
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .npz_read import read_into

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "TrainingArgs",
    "describe",
    "load_checkpoint_state",
    "load_state_dict",
    "to_params",
]


class CheckpointError(ValueError):
    """The file is not a readable PyTorch state_dict checkpoint: corrupt, truncated, legacy format, or content
    this reader does not support. The message says which and what to do."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """data.pkl references a Python global outside the allow-list. Nothing was called."""


# --------------------------------------------------------------------------------------------------------------
# Storage and dtype tables
# --------------------------------------------------------------------------------------------------------------

# torch.<Name>Storage -> NumPy dtype code of one element as stored (byte order applied later).
# "bf16" is bfloat16: NumPy has no such dtype, so it is read as uint16 and widened to float32 (exact).
_STORAGE_CODES = {
    "FloatStorage": "f4",
    "DoubleStorage": "f8",
    "HalfStorage": "f2",
    "BFloat16Storage": "bf16",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "b1",
}
# torch.<dtype> globals that _rebuild_tensor_v3 passes (for dtypes that have no typed storage class).
_TORCH_DTYPE_CODES = {
    "float32": "f4", "float64": "f8", "float16": "f2", "bfloat16": "bf16",
    "int64": "i8", "int32": "i4", "int16": "i2", "int8": "i1",
    "uint8": "u1", "uint16": "u2", "uint32": "u4", "uint64": "u8", "bool": "b1",
}


class _Frozen:
    """Base of the objects `find_class` hands to the pickle: slotted and immutable, so a pickle's BUILD opcode
    (which sets attributes on the object below it on the stack) cannot alter them for later loads."""

    __slots__ = ()

    def __init__(self, **fields):
        for k, v in fields.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, name, value):
        raise AttributeError(f"{self!r} is read-only")

    __delattr__ = __setattr__


class _StorageType(_Frozen):
    """Stand-in for a torch storage class (e.g. torch.FloatStorage) named in a persistent id."""

    __slots__ = ("name", "code")  # code: element dtype code, None for UntypedStorage (dtype comes from v3)

    def __init__(self, name: str, code: str | None):
        super().__init__(name=name, code=code)

    def __repr__(self):
        return f"torch.{self.name}"


class _TorchDtype(_Frozen):
    """Stand-in for a torch.dtype global (e.g. torch.uint16), as passed to _rebuild_tensor_v3."""

    __slots__ = ("name", "code")

    def __init__(self, name: str):
        super().__init__(name=name, code=_TORCH_DTYPE_CODES[name])

    def __repr__(self):
        return f"torch.{self.name}"


class _Callable(_Frozen):
    """An allow-listed callable, wrapped so the pickle sees an immutable object (not the function itself)."""

    __slots__ = ("qualname", "fn")

    def __init__(self, qualname: str, fn):
        super().__init__(qualname=qualname, fn=fn)

    def __call__(self, *args):
        return self.fn(*args)

    def __repr__(self):
        return self.qualname


class _Budget:
    """Memory bound of one load: the bytes tensors may copy in total (beyond the storages themselves), and
    optionally the tensor shapes the caller expects (anything else is refused before it is materialised)."""

    __slots__ = ("limit", "used", "shapes")

    def __init__(self, limit: int, shapes=None):
        self.limit, self.used, self.shapes = int(limit), 0, shapes

    def check_shape(self, size: tuple, key: str):
        if self.shapes is not None and size not in self.shapes:
            raise CheckpointError(f"a tensor of shape {size} (storage {key!r}) is not a parameter of the expected "
                                  f"model (shapes {sorted(self.shapes)[:8]}...); refusing before reading it. "
                                  f"Check that the weights and the model config match.")

    def take(self, nbytes: int, what: str):
        if self.used + nbytes > self.limit:
            raise CheckpointError(
                f"{what} would bring the memory copied while loading to {self.used + nbytes} bytes, more than the "
                f"{self.limit} bytes the file's storages (or the expected model) justify; the file is crafted or "
                f"corrupt. Refusing.")
        self.used += nbytes


class _Storage(_Frozen):
    """One storage record: its raw bytes (a writable uint8 array), byte order, (for typed storages) element dtype
    code, and the memory budget of the load it belongs to."""

    __slots__ = ("key", "raw", "code", "byteorder", "budget")

    def __init__(self, key: str, raw, code: str | None, byteorder: str, budget: "_Budget | None" = None):
        super().__init__(key=key, raw=raw, code=code, byteorder=byteorder, budget=budget)


def _stored_dtype(code: str, byteorder: str) -> np.dtype:
    """dtype of one element exactly as stored in the file (explicit byte order)."""
    base = np.dtype("u2" if code == "bf16" else ("?" if code == "b1" else code))
    return base.newbyteorder("<" if byteorder == "little" else ">") if base.itemsize > 1 else base


def _contiguous_strides(shape) -> tuple:
    """Element strides of a C-contiguous tensor as torch computes them (size-0 dims count as 1)."""
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(int(n), 1)
    return tuple(reversed(strides))


_MAX_EXPANDED = 2**27  # largest stride-0 (broadcast) tensor materialised beyond its storage size


def _tensor_from_storage(storage, storage_offset, size, stride, code: str | None = None) -> np.ndarray:
    """The strided view `storage[offset + sum(idx * stride)]` of shape `size` as a C-contiguous native array.

    Every index is checked against the storage length first (a crafted file cannot read past it). A view that
    is already C-contiguous in native byte order is returned as a view of the storage (no copy: tensors sharing
    a storage share memory, as in torch); anything else (transposed, broadcast, big-endian, bfloat16) is copied,
    and every copy is charged to the load's budget before it is made, so that the total a file can make this
    allocate is bounded by its real storage bytes (or by the expected model's size), not by the shapes it claims.
    bfloat16 comes back as float32 (bit pattern << 16, exact).
    """
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"tensor rebuild got {type(storage).__name__} instead of a storage record")
    code = storage.code if code is None else code
    if code is None:
        raise CheckpointError(f"storage {storage.key!r} is untyped and no dtype was given")
    dt = _stored_dtype(code, storage.byteorder)
    raw = storage.raw if isinstance(storage.raw, np.ndarray) else np.frombuffer(storage.raw, np.uint8)
    if raw.size % dt.itemsize:
        raise CheckpointError(
            f"storage {storage.key!r} has {raw.size} bytes, not a multiple of the {dt.itemsize}-byte element"
        )
    flat = raw.view(dt)  # [numel] view of the record

    def _ints(v, what):
        if not isinstance(v, (tuple, list)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            raise CheckpointError(f"tensor {what} must be a tuple of ints, got {v!r}")
        return tuple(int(i) for i in v)

    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if not isinstance(storage_offset, int) or isinstance(storage_offset, bool) or storage_offset < 0:
        raise CheckpointError(f"tensor storage offset must be an int >= 0, got {storage_offset!r}")
    if len(size) != len(stride) or len(size) > 32 or any(n < 0 for n in size) or any(s < 0 for s in stride) \
            or any(n >= 2**40 for n in size) or any(s >= 2**40 for s in stride) or storage_offset >= 2**40:
        raise CheckpointError(f"invalid tensor geometry of storage {storage.key!r}: size {size}, stride {stride}, "
                              f"offset {storage_offset} (a dimension, stride or offset is negative or beyond "
                              f"2**40); the file is corrupt or crafted")
    budget = storage.budget
    n_out = math.prod(size)
    if n_out > max(flat.size, _MAX_EXPANDED):
        raise CheckpointError(
            f"tensor of size {size} would expand a {flat.size}-element storage to {n_out} elements; refusing "
            f"(broadcast views beyond {_MAX_EXPANDED} elements are not supported)"
        )
    if n_out == 0:
        if math.prod(n for n in size if n) > max(flat.size, _MAX_EXPANDED):
            raise CheckpointError(f"empty tensor of size {size} (storage {storage.key!r}) has dimensions beyond "
                                  f"any real tensor; the file is corrupt or crafted")
        return np.empty(size, dtype=np.float32 if code == "bf16" else dt.newbyteorder("="))
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))  # largest storage index touched
    if last >= flat.size:
        raise CheckpointError(
            f"tensor (offset {storage_offset}, size {size}, stride {stride}) reaches element {last} of storage "
            f"{storage.key!r} which has only {flat.size} elements: the file is corrupt; re-download it"
        )
    contiguous = stride == _contiguous_strides(size) or n_out == 1
    native = dt.isnative or dt.itemsize == 1
    if contiguous and native and code != "bf16":
        return flat[storage_offset:storage_offset + n_out].reshape(size)  # a view: no copy needed
    out_bytes = n_out * (4 if code == "bf16" else dt.itemsize)
    if budget is not None:  # views cost nothing; a copy must have a shape of the model and fit the budget
        budget.check_shape(size, storage.key)
        budget.take(out_bytes, f"tensor of size {size} from storage {storage.key!r} ({out_bytes} bytes)")
    view = np.lib.stride_tricks.as_strided(
        flat[storage_offset:], shape=size, strides=[s * dt.itemsize for s in stride], writeable=False
    )
    out = np.empty(size, dtype=dt.newbyteorder("="))  # one contiguous native copy
    out[...] = view
    if code == "bf16":
        out = (out.astype(np.uint32) << 16).view(np.float32)  # bfloat16 = top half of a float32
    return out


class _StorageRef(_Frozen):
    """What `persistent_load` returns: which storage record a tensor views. No byte is read yet; the record is
    read from the zip only when a tensor that views it is materialised (`_materialise`)."""

    __slots__ = ("stype", "key", "numel")

    def __init__(self, stype: _StorageType, key: str, numel: int):
        super().__init__(stype=stype, key=key, numel=numel)


class _TensorRef(_Frozen):
    """A tensor as the pickle describes it (storage, offset, size, stride, dtype code), not yet read. Only the
    tensors of the chosen state_dict are materialised; e.g. a training checkpoint's optimizer moments never are."""

    __slots__ = ("storage", "offset", "size", "stride", "code")

    def __init__(self, storage, offset, size, stride, code=None):
        super().__init__(storage=storage, offset=offset, size=size, stride=stride, code=code)

    def __repr__(self):
        return f"<tensor {tuple(self.size) if isinstance(self.size, (tuple, list)) else self.size!r}, not read>"


def _is_tensor(v) -> bool:
    return isinstance(v, (np.ndarray, _TensorRef))


# Re-implementations of the torch._utils rebuild functions (same signatures as in torch); they return a
# _TensorRef, read later by _materialise.
def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if metadata:
        raise CheckpointError(f"tensor carries metadata {metadata!r} (conj/neg view bits), which is not supported")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    if metadata:
        raise CheckpointError(f"tensor carries metadata {metadata!r} (conj/neg view bits), which is not supported")
    if not isinstance(dtype, _TorchDtype):
        raise CheckpointError(f"_rebuild_tensor_v3 got dtype {dtype!r}, expected a torch dtype")
    return _TensorRef(storage, storage_offset, size, stride, dtype.code)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    if not _is_tensor(data):
        raise CheckpointError(f"_rebuild_parameter got {type(data).__name__} instead of a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return _rebuild_parameter(data, requires_grad, backward_hooks)


class _InertType(type):
    """Metaclass of the record classes handed to the pickle: the class itself cannot be altered (a BUILD opcode
    aimed at the class, instead of an instance, fails)."""

    def __setattr__(cls, name, value):
        raise AttributeError(f"{cls.__name__} is read-only")

    __delattr__ = __setattr__


class TrainingArgs(metaclass=_InertType):
    """An `argparse.Namespace` found in a checkpoint (timm's `args`), as a plain read-only record of its fields.

    The pickle creates it with NEWOBJ (no arguments) and fills it with BUILD (a dict of fields); nothing of
    argparse is imported and no code of the file runs. Its values are whatever the pickle holds (str, numbers,
    lists, None: every object in the pickle passed the same allow-list). `fields` is a dict; attribute access
    works too (args.model).
    """

    __slots__ = ("_fields",)

    def __init__(self, **fields):
        object.__setattr__(self, "_fields", dict(fields))

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:  # (dict, slots) form
            state = state[0]
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise CheckpointError(f"argparse.Namespace state must be a dict of named fields, got {type(state).__name__}")
        if getattr(self, "_fields", None):
            raise CheckpointError("argparse.Namespace state set twice")
        object.__setattr__(self, "_fields", dict(state))

    @property
    def fields(self) -> dict:
        return dict(getattr(self, "_fields", {}))

    def __getattr__(self, name):
        try:
            return object.__getattribute__(self, "_fields")[name]
        except (KeyError, AttributeError):
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("TrainingArgs is read-only")

    def __repr__(self):
        return "Namespace(" + ", ".join(f"{k}={v!r}" for k, v in self.fields.items()) + ")"


def _allowed_globals() -> dict:
    allowed = {
        ("collections", "OrderedDict"): _Callable("collections.OrderedDict", collections.OrderedDict),
        ("torch", "UntypedStorage"): _StorageType("UntypedStorage", None),
        ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", None),
        ("argparse", "Namespace"): TrainingArgs,   # a record of fields; argparse is never imported
    }
    for fn in (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter,
               _rebuild_parameter_with_state):
        allowed[("torch._utils", fn.__name__)] = _Callable("torch._utils." + fn.__name__, fn)
    for name, code in _STORAGE_CODES.items():
        allowed[("torch", name)] = _StorageType(name, code)
    for name in _TORCH_DTYPE_CODES:
        allowed[("torch", name)] = _TorchDtype(name)
    return allowed


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for data.pkl that resolves only the allow-listed globals and storage persistent ids.

    Every way a pickle can reach a Python object (GLOBAL, STACK_GLOBAL, INST, OBJ, EXT*) goes through
    `find_class`; a refused name raises before anything is looked up or called.
    """

    def __init__(self, file):
        super().__init__(file, encoding="utf-8")

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise UnsafeCheckpointError(
                f"refusing to load global {module}.{name}: only tensors, storages, OrderedDict and argparse.Namespace "
                "are allowed in a checkpoint (the file may be malicious, or it holds other objects; extract the "
                "state_dict with torch and save it alone: torch.save(ckpt['state_dict'], 'weights.pth'))"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(
                f"unsupported persistent id {pid!r} (expected ('storage', type, key, location, numel))"
            )
        _, stype, key, location, numel = pid
        if not isinstance(stype, _StorageType):
            raise CheckpointError(f"persistent id names storage type {stype!r}, not a torch storage class")
        if not isinstance(key, str) or not isinstance(location, str):
            raise CheckpointError(f"persistent id has non-string key or location: {pid!r}")
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise CheckpointError(f"persistent id has invalid element count {numel!r}")
        # the location ('cpu', 'cuda:0', ...) is ignored: every tensor is read into host memory
        return _StorageRef(stype, key, numel)


# --------------------------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------------------------

_CORRUPT = "the file is corrupt or incomplete; re-download it (and check its checksum)"
_RESAVE = (
    "This reader supports only the zip format that torch.save writes since PyTorch 1.6. Re-save it with a recent "
    "torch: torch.save(torch.load(old_path, weights_only=True), new_path)"
)


def _open_archive(path: Path) -> zipfile.ZipFile:
    """Open `path` as a torch zip archive, or raise CheckpointError explaining what the file is instead."""
    with open(path, "rb") as f:
        head = f.read(8)
    if zipfile.is_zipfile(path):
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise CheckpointError(f"{path}: broken zip archive ({e}); {_CORRUPT}") from e
        names = zf.namelist()
        if len(set(names)) != len(names):   # torch.load reads the first copy, zipfile the last: refuse both
            dup = sorted({n for n in names if names.count(n) > 1})
            zf.close()
            raise CheckpointError(f"{path}: the archive holds the member(s) {dup[:5]} more than once; which copy "
                                  f"holds the weights is ambiguous (torch.load and zipfile disagree), so the file "
                                  f"was crafted or appended to; re-save it with torch.save")
        return zf
    if not head:
        raise CheckpointError(f"{path}: the file is empty; {_CORRUPT}")
    if head.startswith(b"PK\x03\x04"):
        raise CheckpointError(f"{path}: zip archive without a central directory (truncated download?); {_CORRUPT}")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise CheckpointError(
            f"{path}: this is a legacy (non-zip) PyTorch checkpoint, written by torch.save before PyTorch 1.6 or with "
            f"_use_new_zipfile_serialization=False. {_RESAVE}"
        )
    if tarfile.is_tarfile(path):
        raise CheckpointError(f"{path}: this is a legacy tar-format PyTorch checkpoint (PyTorch < 0.4). {_RESAVE}")
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (unrecognised header {head!r})")


def _read_member(zf: zipfile.ZipFile, name: str, path: Path) -> bytes:
    """Read one member; the zip CRC is checked, and any zip/zlib failure becomes a CheckpointError."""
    try:
        return zf.read(name)
    except KeyError:
        raise CheckpointError(f"{path}: member {name!r} is missing; {_CORRUPT}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, struct.error) as e:
        raise CheckpointError(f"{path}: member {name!r} cannot be read ({e}); {_CORRUPT}") from e


def _find_prefix(zf: zipfile.ZipFile, path: Path) -> str:
    pkls = [n for n in zf.namelist() if re.fullmatch(r"[^/]+/data\.pkl", n)]
    if len(pkls) != 1:
        raise CheckpointError(
            f"{path}: expected exactly one '<prefix>/data.pkl' member, found {pkls or 'none'}; this zip is not a "
            "PyTorch checkpoint written by torch.save"
        )
    return pkls[0][: -len("/data.pkl")]


_MAX_PKL_BYTES = 64 << 20   # data.pkl of a state_dict is a few KB to a few MB (names and tensor records)
_MAX_DEFLATE_RATIO = 16     # torch.save never compresses; weights barely do (~1.1x): more is a zip bomb
_COPY_SLACK = 1 << 20       # bytes of copies (transposed/broadcast/bf16 tensors) allowed beyond the storages


def _check_sizes(zf: zipfile.ZipFile, path: Path) -> int:
    """Refuse members whose declared size their compressed bytes cannot hold; return the storage bytes."""
    total = 0
    for info in zf.infolist():
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > _MAX_DEFLATE_RATIO * max(info.compress_size, 1):
            raise CheckpointError(f"{path}: member {info.filename!r} claims {info.file_size} bytes in "
                                  f"{info.compress_size} compressed bytes (a zip bomb? torch.save does not "
                                  f"compress); {_CORRUPT}")
        if "/data/" in info.filename:
            total += info.file_size
    return total


def _read_storage(zf: zipfile.ZipFile, name: str, nbytes: int, path: Path) -> np.ndarray:
    """A storage member into a writable uint8 array of exactly `nbytes`, read in 1 MiB pieces (no second copy)."""
    out = np.empty(nbytes, np.uint8)
    try:
        with zf.open(name) as f:
            pos = read_into(f, out)
            if pos != nbytes or f.read(1):
                raise CheckpointError(f"{path}: storage member {name!r} holds other than {nbytes} bytes; {_CORRUPT}")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, struct.error) as e:
        raise CheckpointError(f"{path}: member {name!r} cannot be read ({e}); {_CORRUPT}") from e
    return out


def _materialise(ref, read_storage) -> np.ndarray:
    """Read one _TensorRef (or pass an array through): its storage record from the zip, then the strided copy."""
    if isinstance(ref, np.ndarray):
        return ref
    st = ref.storage
    if not isinstance(st, _StorageRef):
        raise CheckpointError(f"tensor rebuild got {type(st).__name__} instead of a storage record")
    return _tensor_from_storage(read_storage(st), ref.offset, ref.size, ref.stride, code=ref.code)


_MAX_COUNT_VISITS = 1_000_000   # objects _count_tensors looks at before it gives up (the report then says '?')


def _count_tensors(obj, depth=0, seen=None, budget=None):
    """Distinct tensors (read or not) inside a loaded object, for the report. Every object is visited once (a
    pickle can reference one list a billion times in a few KB), and at most _MAX_COUNT_VISITS objects in all:
    beyond that the count is None (shown as '?')."""
    top = seen is None
    seen = set() if top else seen
    budget = [_MAX_COUNT_VISITS] if budget is None else budget
    stack, n = [(obj, depth)], 0
    while stack:
        o, d = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        budget[0] -= 1
        if budget[0] < 0:
            return None
        if _is_tensor(o):
            n += 1
        elif d <= 20 and isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif d <= 20 and isinstance(o, (list, tuple)):
            stack.extend((v, d + 1) for v in o)
    return n


def _read_archive(path: Path, select, expected_shapes: dict | None = None):
    """Unpickle a torch zip checkpoint lazily, let `select(obj)` pick what to read, and materialise that.

    `select(obj) -> (dict name -> _TensorRef, info)`; only the storages those tensors view are read from the zip.
    Returns (dict name -> np.ndarray in the same order, info).

    Memory is bounded before anything is inflated or copied: members must be no larger than their compressed
    bytes allow, data.pkl is scanned for nesting depth and container sizes (datasets.safe_pickle), and the
    copies tensors need are limited to the file's storage bytes -- or, with `expected_shapes` (name -> shape),
    to the expected model's size, refusing a copied tensor of a shape the model does not have before making it.
    """
    from .safe_pickle import check_pickle_structure
    with _open_archive(path) as zf:
        prefix = _find_prefix(zf, path)
        names = set(zf.namelist())
        limit = _check_sizes(zf, path) + _COPY_SLACK
        shapes = None
        if expected_shapes is not None:
            shapes = {tuple(int(n) for n in v) for v in expected_shapes.values()}
            limit = min(limit, sum(8 * math.prod(v) for v in shapes) + _COPY_SLACK)
        budget = _Budget(limit, shapes)
        byteorder = "little"
        if f"{prefix}/byteorder" in names:
            mark = _read_member(zf, f"{prefix}/byteorder", path).decode("ascii", "replace").strip()
            if mark not in ("little", "big"):
                raise CheckpointError(f"{path}: byteorder record says {mark!r}, expected 'little' or 'big'; {_CORRUPT}")
            byteorder = mark
        cache: dict[str, _Storage] = {}

        def load_storage(ref: _StorageRef) -> _Storage:
            stype, key, numel = ref.stype, ref.key, ref.numel
            if key in cache:
                if cache[key].code != stype.code:
                    raise CheckpointError(f"{path}: storage {key!r} is referenced with two element types")
                return cache[key]
            name = f"{prefix}/data/{key}"
            itemsize = 1 if stype.code is None else _stored_dtype(stype.code, byteorder).itemsize
            try:
                info = zf.getinfo(name)
            except KeyError:
                raise CheckpointError(f"{path}: storage member {name!r} is missing; {_CORRUPT}") from None
            if info.file_size != numel * itemsize:
                raise CheckpointError(
                    f"{path}: storage {name!r} holds {info.file_size} bytes, expected {numel} x {itemsize}; {_CORRUPT}"
                )
            cache[key] = _Storage(key, _read_storage(zf, name, info.file_size, path), stype.code, byteorder, budget)
            return cache[key]

        info = zf.getinfo(f"{prefix}/data.pkl")
        if info.file_size > _MAX_PKL_BYTES:
            raise CheckpointError(f"{path}: {prefix}/data.pkl is {info.file_size} bytes; a checkpoint's is far "
                                  f"smaller (at most {_MAX_PKL_BYTES}); {_CORRUPT}")
        pkl = _read_member(zf, f"{prefix}/data.pkl", path)
        try:
            check_pickle_structure(pkl)
        except pickle.UnpicklingError as e:
            raise CheckpointError(f"{path}: {prefix}/data.pkl: {e}") from e
        try:
            obj = _RestrictedUnpickler(io.BytesIO(pkl)).load()
        except (UnsafeCheckpointError, CheckpointError):
            raise
        except Exception as e:  # truncated/garbled pickle, wrong argument types to an allowed callable, ...
            raise CheckpointError(
                f"{path}: {prefix}/data.pkl cannot be unpickled ({type(e).__name__}: {e}); {_CORRUPT}"
            ) from e
        refs, info = select(obj)
        state = {}
        for k, v in refs.items():
            try:
                state[k] = _materialise(v, load_storage)
            except CheckpointError as e:
                msg = str(e)
                raise CheckpointError(msg if msg.startswith(str(path)) else f"{path}: tensor {k!r}: {msg}") from None
        info["storages_read"] = len(cache)
        return state, info


_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_EMA_KEYS = ("state_dict_ema", "model_ema")
_INFO_KEYS = ("arch", "epoch", "metric", "version")


def _unwrap_state_dict(obj, path="checkpoint", ema=False, info=None) -> dict:
    """Find the state_dict in a loaded object and return it as an ordered dict name -> tensor.

    Accepts a bare state_dict, or a dict holding it under 'state_dict', 'model_state_dict' or 'model' (first found,
    in that order): a timm / SHI-Labs training checkpoint ({'epoch', 'arch', 'state_dict', 'state_dict_ema',
    'optimizer', 'version', 'metric', 'args', 'amp_scaler'}) is such a dict. With `ema=True` the weights come from
    'state_dict_ema' (timm's exponential moving average) instead. A 'module.' prefix on every key
    (nn.DataParallel / DistributedDataParallel) is removed. If `info` (a dict) is given it receives what was
    found: weights (the key the tensors came from), arch, epoch, metric, version, args (the fields of an
    argparse.Namespace as a dict), skipped (other top-level keys -> number of tensors left unread), n_tensors.
    """
    info = {} if info is None else info
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: top-level object is a {type(obj).__name__}, expected a dict (a state_dict)")
    bare = bool(obj) and all(_is_tensor(v) for v in obj.values())
    if bare and not ema:
        info["weights"] = "the file (a bare state_dict)"
    else:
        keys = _EMA_KEYS if ema else _WRAPPER_KEYS
        inner = next((k for k in keys if isinstance(obj.get(k), dict)), None)
        if inner is None:
            if ema:
                raise CheckpointError(
                    f"{path}: no EMA weights: the file has no {' or '.join(repr(k) for k in _EMA_KEYS)} entry "
                    f"(top-level keys {list(obj)[:20]}); drop --ema to use the ordinary weights")
            raise CheckpointError(
                f"{path}: no state_dict found: the top-level dict has keys {list(obj)[:20]} and is not a dict of "
                f"tensors; expected a state_dict or a dict with one under {list(_WRAPPER_KEYS)}"
            )
        info["weights"] = repr(inner)
        for k in _INFO_KEYS:
            v = obj.get(k)
            if isinstance(v, (str, int, float)) and not isinstance(v, bool):
                info[k] = v
            elif _is_tensor(v):
                info[k] = f"<tensor {k}>"
        args = obj.get("args")
        if isinstance(args, TrainingArgs):
            info["args"] = args.fields
        elif isinstance(args, dict):
            info["args"] = {str(k): v for k, v in args.items() if not _is_tensor(v)}
        seen, budget = {id(t) for t in obj[inner].values()}, [_MAX_COUNT_VISITS]   # counted once, bounded
        info["skipped"] = {str(k): _count_tensors(v, 0, seen, budget) for k, v in obj.items()
                           if k != inner and k not in _INFO_KEYS and k != "args"}
        obj = obj[inner]
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not _is_tensor(v)]
    if bad or not obj:
        detail = ", ".join(f"{k!r} ({type(obj[k]).__name__})" for k in bad[:10]) or "it is empty"
        raise CheckpointError(f"{path}: the state_dict must map names to tensors, but: {detail}")
    info["n_tensors"] = len(obj)
    if all(k.startswith("module.") for k in obj):
        info["stripped_prefix"] = "module."
        return {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def describe(info: dict) -> str:
    """The one-line report of what a checkpoint held, e.g.
    "arch cct_7_3x1_32, epoch 299, metric 80.92; weights from 'state_dict' (31 tensors, 'module.' stripped);
    not read: optimizer (62 tensors), state_dict_ema (31 tensors); args: 85 fields"."""
    parts = []
    for k in ("arch", "epoch", "metric"):
        if k in info:
            v = info[k]
            parts.append(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}")
    head = ", ".join(parts)
    w = f"weights from {info.get('weights', '?')} ({info.get('n_tensors', '?')} tensors"
    w += f", {info['stripped_prefix']!r} stripped)" if info.get("stripped_prefix") else ")"
    line = f"{head}; {w}" if head else w
    skipped = info.get("skipped") or {}
    if skipped:
        line += "; not read: " + ", ".join(f"{k} ({'?' if n is None else n} tensors)" if n != 0 else k
                                           for k, n in skipped.items())
    if "args" in info:
        line += f"; args: {len(info['args'])} fields"
    return line


def load_checkpoint_state(path, ema: bool = False, expected_shapes: dict | None = None):
    """Read the model weights of a PyTorch checkpoint: a bare state_dict, or a training checkpoint (timm /
    SHI-Labs `train.py`: {'epoch', 'arch', 'state_dict', 'state_dict_ema', 'optimizer', 'version', 'metric',
    'args': argparse.Namespace, 'amp_scaler'}), written on any device ('cuda:0' locations are ignored).

    Only the tensors of the chosen state_dict are read from the file; the optimizer's moments and the other
    state_dict are never materialised. `args` becomes a plain dict of its fields (nothing is imported or run).
    Returns (state: dict name -> np.ndarray in file order, info: dict, see `_unwrap_state_dict`, with
    info["report"] = describe(info), one line).
    Raises CheckpointError / UnsafeCheckpointError (any global outside the allow-list, named) / FileNotFoundError.
    """
    path = Path(path)

    def select(obj):
        info = {}
        refs = _unwrap_state_dict(obj, path, ema=ema, info=info)
        return refs, info

    state, info = _read_archive(path, select, expected_shapes)
    info["report"] = describe(info)
    return state, info


def load_state_dict(path, ema: bool = False, expected_shapes: dict | None = None) -> dict[str, np.ndarray]:
    """Load a PyTorch state_dict checkpoint (zip format, PyTorch >= 1.6) as NumPy arrays, without torch.

    Args:
        path: a file written by `torch.save(model.state_dict(), path)` (or a dict holding the state_dict under
            'state_dict' / 'model_state_dict' / 'model', e.g. a timm training checkpoint; a DataParallel
            'module.' prefix is stripped). ema: take 'state_dict_ema' instead.
        expected_shapes: optional name -> shape of the model the caller will load this into: copies are then
            bounded by the model's size, and a copied tensor of a shape the model does not have is refused first.
    Returns:
        dict name -> np.ndarray, in file order. Arrays are C-contiguous and writable, in native byte order with
        the stored dtype (float32/float64/float16/int*/uint8/bool); bfloat16 tensors become float32 (exactly).
        A tensor that is a contiguous slice of its storage is a view of it (tensors sharing a storage share
        memory, as in torch); others are copies, bounded in total by the file's storage bytes.
    Raises:
        CheckpointError (a ValueError): corrupt/truncated file, legacy format, or not a state_dict.
        UnsafeCheckpointError (a pickle.UnpicklingError): the pickle references anything outside the allow-list.
        FileNotFoundError: no such file.
    """
    return load_checkpoint_state(path, ema=ema, expected_shapes=expected_shapes)[0]


# --------------------------------------------------------------------------------------------------------------
# state_dict <-> minicct parameters
# --------------------------------------------------------------------------------------------------------------


def to_params(state: dict, expected_shapes: dict, finite: bool = True) -> dict[str, np.ndarray]:
    """Check a state_dict against the model's parameter shapes and return float32 parameters.

    minicct uses the official CCT state_dict names and shapes (see `model.param_shapes(cfg)`), so this is a
    checked copy: every expected name must be present with exactly the expected shape and a floating dtype, and
    no other name may be present. All problems are reported together in one ValueError.

    Args:
        state: name -> np.ndarray, e.g. from `load_state_dict`.
        expected_shapes: name -> shape tuple, in model order.
        finite: also refuse NaN or inf values (ValueError naming the tensor).
    Returns:
        name -> float32 C-contiguous copy, in the order of `expected_shapes`: never a view of the state_dict, so
        tensors that shared or overlapped one storage in the file come back independent.
    """
    from ..model import mismatch_lines
    dtypes = [f"{k}: expected a floating-point tensor, found dtype {np.asarray(state[k]).dtype}"
              for k, shape in expected_shapes.items() if k in state and np.shape(state[k]) == tuple(shape)
              and not np.issubdtype(np.asarray(state[k]).dtype, np.floating)]
    lines = mismatch_lines(expected_shapes, state, dtypes)
    if lines:
        lines = ["state_dict does not match the model:"] + lines
        lines.append("Check that the model config (layers, dims, kernel, conv layers, classes, img_size, "
                     "positional embedding) matches the checkpoint.")
        raise ValueError("\n".join(lines))
    out = {k: np.array(state[k], dtype=np.float32, order="C", copy=True) for k in expected_shapes}
    if finite:
        check_finite(out)
    return out


def check_finite(params: dict, what: str = "parameter", where: str = "") -> None:
    """Raise ValueError naming the first array of `params` holding NaN or inf, and how many."""
    for k, v in params.items():
        v = np.asarray(v)
        if v.dtype.kind in "fc" and not np.isfinite(v).all():
            bad = int(v.size - np.count_nonzero(np.isfinite(v)))
            raise ValueError(f"{where}{what} {k!r} holds {bad} non-finite values (NaN or inf) of {v.size}: the "
                             f"training that made it diverged or the file is damaged; use an earlier checkpoint")
