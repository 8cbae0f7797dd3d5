"""Checkpoints as .npz: the parameters under their official names, the config and metadata as JSON, and
optionally the optimizer state and the training position (for resuming). Written atomically
(minicct.io.atomic: temporary file in the same folder, fsync, os.replace, fsync of the folder), so an
interrupted write never leaves a broken checkpoint, and temporaries of killed writers are swept on the next save.

Read defensively: only the entries the model needs are inflated, each after its declared size and .npy header
(dtype, shape) were checked against the config, so a small file cannot make `load_checkpoint` allocate more
than the model's size; every parameter must be finite (the error names the first bad one).

Keys in the .npz:  param/<official name>, opt/<slot>/<name>, meta (a JSON string, no pickle).
"""
from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np

from .. import __version__
from .atomic import atomic_write
from ..model import CCTConfig, check_params, param_shapes

MAX_META_BYTES = 64 << 20    # the JSON metadata (config, history, training state); a real one is < 10 MB
_NPY_SLACK = 1 << 16         # bytes an .npy member may hold beyond its data: the header (at most 64 KiB)


def atomic_savez(path, arrays: dict):
    """np.savez to `path` atomically (minicct.io.atomic: temp file, fsync, os.replace, fsync folder)."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def save_checkpoint(path, params: dict, cfg: CCTConfig, meta: dict | None = None, opt_state: dict | None = None):
    """Save parameters, config and metadata (dataset, epochs, seed, accuracies, ...) to `path` (.npz)."""
    check_params(params, cfg)
    meta = dict(meta or {})
    meta.setdefault("minicct_version", __version__)
    meta["config"] = cfg.to_dict()
    arrays = {"param/" + k: np.asarray(v) for k, v in params.items()}
    for k, v in (opt_state or {}).items():
        arrays["opt/" + k] = np.asarray(v)
    arrays["meta"] = np.array(json.dumps(meta, default=_json_default))
    return atomic_savez(path, arrays)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot store {type(o).__name__} in checkpoint metadata")


def _read_member(zf: zipfile.ZipFile, path: Path, key: str, shape=None, max_bytes=None, kinds="f") -> np.ndarray:
    """One array of the .npz, inflated only after its declared size and its .npy header (dtype, shape) were
    checked against what the model needs: a small file cannot make this allocate more than `max_bytes`."""
    try:
        info = zf.getinfo(key + ".npy")
    except KeyError:
        raise ValueError(f"{path} has no entry {key!r}: not a minicct checkpoint of this model, or damaged") from None
    limit = max_bytes if max_bytes is not None else 8 * int(np.prod(shape, dtype=np.int64)) + _NPY_SLACK
    if info.file_size > limit:
        raise ValueError(f"{path}: entry {key!r} declares {info.file_size} bytes, more than the {limit} it can "
                         f"hold{f' for shape {tuple(shape)}' if shape is not None else ''}; the file is damaged "
                         f"or not a minicct checkpoint")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            hshape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            hshape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if dtype.hasobject:
            raise ValueError(f"{path}: entry {key!r} holds Python objects; refusing (a checkpoint holds numbers)")
        if shape is not None and (tuple(hshape) != tuple(shape) or dtype.kind not in kinds):
            raise ValueError(f"{path}: entry {key!r} is {dtype} {tuple(hshape)}, expected a numeric array "
                             f"(kind {kinds!r}) of shape {tuple(shape)}")
        nbytes = math.prod(int(n) for n in hshape) * dtype.itemsize
        if nbytes > info.file_size:
            raise ValueError(f"{path}: entry {key!r} claims {tuple(hshape)} {dtype} ({nbytes} bytes) in "
                             f"{info.file_size} bytes: the file is truncated or damaged")
        data = f.read(nbytes)
    if len(data) != nbytes:
        raise ValueError(f"{path}: entry {key!r} is truncated ({len(data)} of {nbytes} bytes)")
    arr = np.frombuffer(data, dtype=dtype)
    arr = arr.reshape(hshape[::-1]).T if fortran else arr.reshape(hshape)
    return np.array(arr, dtype=dtype.newbyteorder("="))


def load_checkpoint(path, expect_config: CCTConfig | None = None, with_opt: bool = True):
    """Returns (params, cfg, meta, opt_state). Raises a clear error for a missing, corrupt or foreign file,
    or (with expect_config) a checkpoint of another config.

    Only the entries the model needs are inflated (meta, then param/<name> for every name of the config, and
    with `with_opt` the opt/<slot>/<name> entries), each after a size check; other entries are never read.
    Every parameter must be finite: a NaN or inf raises, naming the parameter.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `python -m minicct train` "
                                f"or use the committed data/checkpoints/classroom.npz")
    try:
        with zipfile.ZipFile(path) as zf:
            listed = zf.namelist()
            if len(set(listed)) != len(listed):
                dup = sorted({n for n in listed if listed.count(n) > 1})
                raise ValueError(f"{path}: the archive holds the entry(ies) {dup[:5]} more than once; which copy "
                                 f"counts is ambiguous (the file was appended to or crafted); use another copy of "
                                 f"the checkpoint")
            names = {n[:-4] for n in listed if n.endswith(".npy")}
            if "meta" not in names:
                raise ValueError(f"{path} has no 'meta' entry: not a minicct checkpoint")
            meta_arr = _read_member(zf, path, "meta", max_bytes=MAX_META_BYTES)
            if meta_arr.dtype.kind != "U" or meta_arr.ndim != 0:
                raise ValueError(f"{path}: 'meta' is {meta_arr.dtype} {meta_arr.shape}, expected a JSON string")
            try:
                meta = json.loads(str(meta_arr))
                cfg = CCTConfig.from_dict(meta["config"])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}: the metadata is not a minicct checkpoint's ({type(e).__name__}: {e})") \
                    from e
            if expect_config is not None and cfg != expect_config:
                diff = {k: (v, getattr(cfg, k)) for k, v in expect_config.to_dict().items()
                        if getattr(cfg, k) != v}
                raise ValueError(f"checkpoint {path} was made for another config; differences (expected, "
                                 f"found): {diff}")
            shapes = param_shapes(cfg)
            stored = {k[len("param/"):] for k in names if k.startswith("param/")}
            if stored != set(shapes):
                check_params({k: np.empty(shapes.get(k, (0,))) for k in stored}, cfg)  # raises, listing all
            params = {k: _read_member(zf, path, "param/" + k, shape) for k, shape in shapes.items()}
            opt_state = {}
            if with_opt:
                for k in sorted(n for n in names if n.startswith("opt/")):
                    slot_name = k[len("opt/"):]
                    pname = slot_name.split("/", 1)[-1]
                    shape = () if "/" not in slot_name else shapes.get(pname)
                    if shape is None:
                        raise ValueError(f"{path}: optimizer entry {k!r} names no parameter of this model")
                    opt_state[slot_name] = _read_member(zf, path, k, shape, kinds="fiu")
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as e:
        raise ValueError(f"{path} is not a readable minicct checkpoint (.npz): {type(e).__name__}: {e}") from e
    check_params(params, cfg)
    for k, v in params.items():
        if not np.isfinite(v).all():
            bad = int(v.size - np.isfinite(v).sum())
            raise ValueError(f"{path}: parameter {k!r} holds {bad} non-finite values (NaN or inf) of {v.size}; "
                             f"the training diverged or the file is damaged: use an earlier checkpoint")
    return params, cfg, meta, opt_state
