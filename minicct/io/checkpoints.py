"""One loader for every kind of checkpoint, and the CCT config read from a checkpoint's own tensors.

    params, cfg, meta = load_any_checkpoint("model_best.pth.tar", heads=None, model=None, ema=False)
    print(meta["report"])     # one line: what the file was, arch, epoch, metric, which weights, the config

Accepted files (recognised by their content, not their name):
    minicct .npz        written by `python -m minicct train` (train/checkpoint.py): config and metadata inside
    plain .pth          torch.save(model.state_dict(), f) of the official CCT class (or this project's export)
    training checkpoint timm / SHI-Labs train.py: {'epoch', 'arch', 'state_dict', 'state_dict_ema', 'optimizer',
                        'version', 'metric', 'args', ...}, read safely by torch_io.load_checkpoint_state
                        (only the chosen weights are read; 'args' becomes a plain dict)

The config of a .pth (`infer_config`):
    1. `model=NAME` given: get_config(NAME), with the number of classes read from `classifier.fc.weight`;
    2. else the checkpoint's `arch` when it names a known variant (cct_7_3x1_32, ...), classes likewise;
    3. else from the tensor shapes: layers (number of blocks), embedding dim D, MLP ratio F / D, kernel size,
       conv layers, in_planes, input channels, classes, positional embedding (absent: 'none'; equal to the
       sine table: 'sine'; else 'learnable'), sequence length T -> the largest image size whose tokenizer gives
       sqrt(T) x sqrt(T) tokens; plus `heads` (the number of heads cannot be read from shapes: qkv is [3D, D]
       for every head count).
Whatever the route, the config is checked against every tensor; a mismatch lists every key and shape that
disagrees (torch_io.to_params).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .. import model as M
from .torch_io import CheckpointError, UnsafeCheckpointError, load_checkpoint_state, to_params

__all__ = ["infer_config", "load_any_checkpoint", "checkpoint_kind", "config_summary", "CheckpointError",
           "UnsafeCheckpointError"]

_CONV = "tokenizer.conv_layers.{}.0.weight"
_SINE_TOL = 1e-4   # stored sine tables of the official checkpoints agree with the formula to float32 rounding


def checkpoint_kind(path) -> str:
    """'npz' (a minicct checkpoint) or 'torch' (a torch.save zip), from the zip's members; ValueError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(f"{path}: broken zip archive ({e})") from e
        if "meta.npy" in names or any(n.startswith("param/") for n in names):
            return "npz"
        return "torch"
    return "torch"   # torch_io explains legacy / foreign formats


def _count(prefix_fmt, state):
    n = 0
    while prefix_fmt.format(n) in state:
        n += 1
    return n


def _img_size_for_grid(cfg_kw: dict, grid: int, img_size: int | None) -> int:
    """The largest image size whose tokenizer gives a grid x grid token map (e.g. 32 for 16 x 16 with one 3x3
    stage), or `img_size` when given (checked)."""
    def grid_of(s):
        try:
            return M.CCTConfig(**dict(cfg_kw, img_size=s)).grid_size
        except ValueError:
            return -1
    if img_size is not None:
        if grid_of(img_size) != grid:
            raise ValueError(f"img_size {img_size} gives a {grid_of(img_size)} x {grid_of(img_size)} token grid, but "
                             f"the checkpoint's positional embedding has {grid * grid} tokens ({grid} x {grid})")
        return img_size
    fits = [s for s in range(1, 64 * grid + 64) if grid_of(s) == grid]
    if not fits:
        raise ValueError(f"no image size gives a {grid} x {grid} token grid with this tokenizer")
    return max(fits)


def infer_config(state: dict, heads: int | None = None, model: str | None = None, arch: str | None = None,
                 img_size: int | None = None) -> tuple:
    """CCTConfig of a state_dict, and how it was found.

    state: name -> array (official key names). heads: number of attention heads (needed when neither `model`
    nor `arch` names a variant). model: a variant name (get_config) to use instead of inference. arch: the
    checkpoint's own 'arch' entry (used when it is a known variant). img_size: the image size, when the
    positional embedding is absent ('none') or to pick one of several sizes that give the same token grid.
    Returns (cfg, how: str). Raises ValueError with every disagreeing key and shape when the config does not fit.
    """
    fc = state.get("classifier.fc.weight")
    if fc is None or np.ndim(fc) != 2:
        raise ValueError("not a CCT state_dict: no 'classifier.fc.weight' [K, D] tensor "
                         f"(keys: {list(state)[:8]}{' ...' if len(state) > 8 else ''})")
    K = int(fc.shape[0])
    name, how = None, None
    if model is not None:
        name, how = model, f"--model {model}"
    elif arch is not None:
        try:
            M.get_config(arch)
            name, how = arch, f"arch {arch!r} of the checkpoint"
        except ValueError:
            name = None
    if name is not None:
        over = {} if heads is None else {"num_heads": heads}
        D = int(np.shape(fc)[1]) if np.ndim(fc) == 2 else None
        if heads is not None and D and (not isinstance(heads, int) or heads < 1 or D % heads):
            raise ValueError(f"--heads {heads}: the checkpoint's embedding width is D = {D}, which {heads} heads "
                             f"cannot split evenly; give a divisor of {D}, the head count the model was trained with")
        if img_size is not None:
            over["img_size"] = img_size
        cfg = M.get_config(name, num_classes=K, **over)
        how += f", {K} classes from classifier.fc.weight"
    else:
        cfg = _config_from_shapes(state, heads, img_size, K)
        how = "tensor shapes" + (f", {heads} heads given" if heads else "")
    try:
        to_params(state, M.param_shapes(cfg), finite=False)
    except ValueError as e:
        raise ValueError(f"the config from {how} does not fit the checkpoint:\n{e}") from None
    return cfg, how


def _config_from_shapes(state, heads, img_size, K):
    n_conv = _count(_CONV, state)
    n_layers = _count("classifier.blocks.{}.linear1.weight", state)
    if n_conv == 0 or n_layers == 0:
        raise ValueError(f"not a CCT state_dict: found {n_conv} tokenizer convs "
                         f"('tokenizer.conv_layers.<i>.0.weight') and {n_layers} blocks "
                         f"('classifier.blocks.<l>.linear1.weight'); both must be >= 1")
    w0, wl = state[_CONV.format(0)], state[_CONV.format(n_conv - 1)]
    if np.ndim(w0) != 4 or np.ndim(wl) != 4 or w0.shape[2] != w0.shape[3]:
        raise ValueError(f"tokenizer conv weights must be [c_out, c_in, k, k], got {np.shape(w0)}")
    D, k, c_in = int(wl.shape[0]), int(w0.shape[2]), int(w0.shape[1])
    in_planes = int(w0.shape[0]) if n_conv > 1 else M.CCTConfig.in_planes
    F = int(np.shape(state["classifier.blocks.0.linear1.weight"])[0])
    ratio = F / D
    if int(D * ratio) != F:
        raise ValueError(f"MLP width {F} is not int(D * ratio) for D={D} with any ratio this config can express")
    if heads is None:
        raise ValueError("the number of attention heads cannot be read from tensor shapes (qkv is [3D, D] for any "
                         f"head count; D={D} here): give --heads H (e.g. {D // 64 or 1} for 64-wide heads) or "
                         f"--model NAME; where no such option exists (the lessons), convert the file once: "
                         f"python -m minicct export --checkpoint FILE --heads H --out FILE.npz")
    if not isinstance(heads, int) or heads < 1 or D % heads:
        divisors = [h for h in range(1, min(D, 64) + 1) if D % h == 0]
        raise ValueError(f"--heads {heads}: the checkpoint's embedding width is D = {D}, which {heads} heads cannot "
                         f"split evenly (D must be a multiple of the head count); give a divisor of {D}, e.g. "
                         f"{divisors[-6:]}, the head count the model was trained with")
    kw = dict(n_input_channels=c_in, n_conv_layers=n_conv, kernel_size=k, in_planes=in_planes, embedding_dim=D,
              num_layers=n_layers, num_heads=int(heads), mlp_ratio=ratio, num_classes=K)
    pe = state.get("classifier.positional_emb")
    if pe is None:
        if img_size is None:
            raise ValueError("the checkpoint has no positional embedding, so the image size cannot be read from "
                             "it: give --img-size S (the size the model was trained at)")
        return M.CCTConfig(**kw, positional_embedding="none", img_size=img_size)
    if np.ndim(pe) != 3 or pe.shape[0] != 1 or pe.shape[2] != D:
        raise ValueError(f"classifier.positional_emb must be [1, T, {D}], got {np.shape(pe)}")
    T = int(pe.shape[1])
    G = int(round(T ** 0.5))
    if G * G != T:
        raise ValueError(f"classifier.positional_emb has {T} tokens, not a square grid")
    kw["img_size"] = _img_size_for_grid(dict(kw, img_size=32), G, img_size)
    sine = M.sine_embedding(T, D)
    kw["positional_embedding"] = "sine" if float(np.abs(np.asarray(pe, np.float64) - sine).max()) <= _SINE_TOL \
        else "learnable"
    return M.CCTConfig(**kw)


def config_summary(cfg: M.CCTConfig) -> str:
    """e.g. 'L=7 h=4 D=256 F=512 k=3x1 img 32 (256 tokens) K=100 PE learnable'."""
    return (f"L={cfg.num_layers} h={cfg.num_heads} D={cfg.embedding_dim} F={cfg.ff_dim} "
            f"k={cfg.kernel_size}x{cfg.n_conv_layers} img {cfg.img_size} ({cfg.seq_len} tokens) "
            f"K={cfg.num_classes} PE {cfg.positional_embedding}")


def load_any_checkpoint(path, heads: int | None = None, model: str | None = None, ema: bool = False,
                        img_size: int | None = None):
    """Parameters, config and metadata of a minicct .npz, a plain .pth state_dict or a training checkpoint.

    path: the file. heads / model / img_size: see `infer_config` (a .npz carries its config; `heads` or `model`
    given with a .npz must agree with it). ema: take a training checkpoint's 'state_dict_ema'.
    Returns (params: official key -> float32 array in model order, cfg: CCTConfig, meta: dict) where meta has
    "kind" ('npz' | 'state_dict' | 'training checkpoint'), "file", "config_from", "report" (one line), and for
    .pth files the torch_io info (arch, epoch, metric, args, weights, skipped); for .npz the checkpoint's meta.
    """
    from .npz_checkpoint import load_checkpoint

    path = Path(path)
    kind = checkpoint_kind(path)
    if kind == "npz":
        if ema:
            raise ValueError(f"{path} is a minicct .npz checkpoint: it has no EMA weights; drop --ema")
        params, cfg, meta, _ = load_checkpoint(path)
        meta = dict(meta)
        if model is not None:
            want = M.get_config(model, num_classes=cfg.num_classes)
            if M.param_shapes(want) != M.param_shapes(cfg):
                raise ValueError(f"{path} holds a {config_summary(cfg)} model, not {model} ({config_summary(want)})")
        if heads is not None and heads != cfg.num_heads:
            raise ValueError(f"{path} records num_heads={cfg.num_heads} in its config, but --heads {heads} was given")
        meta.update(kind="npz", file=str(path), config_from="the checkpoint's config")
        acc = f", test accuracy {100 * meta['test_acc']:.2f}% recorded" if meta.get("test_acc") is not None else ""
        meta["report"] = f"{path.name}: minicct checkpoint{acc}; {config_summary(cfg)}"
        return params, cfg, meta
    state, info = load_checkpoint_state(path, ema=ema)
    arch = info.get("arch") if isinstance(info.get("arch"), str) else None
    cfg, how = infer_config(state, heads=heads, model=model, arch=arch, img_size=img_size)
    try:
        params = to_params(state, M.param_shapes(cfg))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    kind = "training checkpoint" if info.get("weights", "").startswith("'") else "state_dict"
    meta = dict(info, kind=kind, file=str(path), config_from=how, config=cfg.to_dict())
    if isinstance(info.get("metric"), float):
        meta["checkpoint_metric"] = info["metric"]
    meta["report"] = f"{path.name}: {kind}; {info['report']}; config from {how}: {config_summary(cfg)}"
    json.dumps(meta["config"])   # the config is plain data
    return params, cfg, meta
