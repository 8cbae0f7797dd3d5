"""Checkpoints as .npz: the parameters under their official names, the config and metadata as JSON, and
optionally the optimizer state and the training position (for resuming). Written atomically: a temporary file
in the same folder, then os.replace, so an interrupted write never leaves a broken checkpoint.

Keys in the .npz:  param/<official name>, opt/<slot>/<name>, meta (a JSON string, no pickle).
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .. import __version__
from ..model import CCTConfig, check_params


def atomic_savez(path, arrays: dict):
    """np.savez to `path` through a temporary file in the same folder + os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)                     # mkstemp creates 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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


def load_checkpoint(path, expect_config: CCTConfig | None = None):
    """Returns (params, cfg, meta, opt_state). Raises a clear error for a missing, corrupt or foreign file,
    or (with expect_config) a checkpoint of another config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `python -m minicct train` "
                                f"or use the committed data/checkpoints/classroom.npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable minicct checkpoint (.npz): {e}") from e
    if "meta" not in data:
        raise ValueError(f"{path} has no 'meta' entry: not a minicct checkpoint")
    meta = json.loads(str(data["meta"]))
    cfg = CCTConfig.from_dict(meta["config"])
    if expect_config is not None and cfg != expect_config:
        diff = {k: (v, getattr(cfg, k)) for k, v in expect_config.to_dict().items() if getattr(cfg, k) != v}
        raise ValueError(f"checkpoint {path} was made for another config; differences (expected, found): {diff}")
    params = {k[len("param/"):]: v for k, v in data.items() if k.startswith("param/")}
    check_params(params, cfg)
    opt_state = {k[len("opt/"):]: v for k, v in data.items() if k.startswith("opt/")}
    return params, cfg, meta, opt_state
