"""Activations of a PyTorch model, captured by module name into a features file for `python -m minicct snp-arrays`.

    from minicct.capture_torch import capture_features
    capture_features(model, ["blocks.0", "blocks.3", "layer2"], "features.npz",
                     train=(x_train, y_train), test=(x_test, y_test),      # arrays, tensors, or DataLoaders
                     mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.2435, 0.2616), class_names=names,
                     prefix_tokens=1)                                        # e.g. a ViT's class token
    # then: python -m minicct snp-arrays features.npz

torch is imported inside the functions (it is never a minicct dependency). What it handles:
  module names  any name of model.named_modules() (a dict {site: module name} renames the sites); an unknown
                name is an error listing close names;
  batching      the model runs in eval mode under torch.no_grad() in batches of `batch_size` (or the loader's);
  inputs        uint8 images [N, H, W, 3] (as minicct stores them: scaled to [0, 1] and normalised with mean/std
                when given), float arrays or tensors [N, C, H, W] (used as they are), or an iterable of
                (x, y) batches such as a torch DataLoader (x used as it is);
  channel order a hook output [N, C, H, W] (conv) is stored as [N, T = H*W, D = C]: positions as tokens,
                channels as nodes; [N, T, D] (transformer blocks, batch first) as it is; [N, D] as it is; a
                3-D output that is [N, C, L] (Conv1d) needs layouts={site: "NCT"};
  class tokens  prefix_tokens=k drops the first k tokens of every 3-D site (a ViT's class / distillation
                tokens, which are not positions); a dict {site: k} sets it per site;
  outputs       a module returning a tuple or list: its first element (e.g. nn.MultiheadAttention).
The file records the layout ("NTD"), so snp-arrays reads it without a --layout.
"""
from __future__ import annotations

import difflib
import time
from pathlib import Path

import numpy as np

__all__ = ["capture_features", "capture_arrays"]


def _modules(model, modules):
    named = dict(model.named_modules())
    pairs = list(modules.items()) if isinstance(modules, dict) else [(str(m), str(m)) for m in modules]
    if not pairs:
        raise ValueError("give at least one module name (print(dict(model.named_modules()).keys()) lists them)")
    out = {}
    for site, name in pairs:
        if name not in named:
            close = difflib.get_close_matches(name, [n for n in named if n], n=5)
            raise ValueError(f"the model has no module {name!r}" + (f"; close names: {close}" if close else "")
                             + f"; it has {len(named) - 1} modules (dict(model.named_modules()).keys() lists them)")
        site = str(site).replace("/", "_") or "input"
        out[site] = named[name]
    return out


def _batches(torch, data, batch_size, mean, std, split):
    """Yield (x tensor, y numpy) batches of one split given as (x, y) arrays/tensors or an iterable of batches."""
    if isinstance(data, tuple) and len(data) == 2 and not hasattr(data, "dataset"):
        x, y = data
        y = np.asarray(y.cpu() if hasattr(y, "cpu") else y).reshape(-1)
        if len(x) != len(y):
            raise ValueError(f"{split}: {len(x)} inputs but {len(y)} labels")
        for s in range(0, len(y), batch_size):
            yield _prepare(torch, x[s:s + batch_size], mean, std, split), y[s:s + batch_size]
        return
    for i, batch in enumerate(data):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(f"{split}: batch {i} is not an (inputs, labels) pair; give (x, y) arrays or a loader "
                             f"that yields (x, y)")
        x, y = batch[0], batch[1]
        yield _prepare(torch, x, mean, std, split), np.asarray(y.cpu() if hasattr(y, "cpu") else y).reshape(-1)


def _prepare(torch, x, mean, std, split):
    if isinstance(x, np.ndarray) and x.dtype == np.uint8:
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"{split}: uint8 images must be [N, H, W, 3] (minicct's layout), got {x.shape}; give "
                             f"float tensors [N, C, H, W] prepared as the model expects instead")
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255
        if mean is not None:
            m = torch.tensor(np.asarray(mean, np.float32)).view(1, -1, 1, 1)
            s = torch.tensor(np.asarray(std, np.float32)).view(1, -1, 1, 1)
            t = (t - m) / s
        return t
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return x


def _as_ntd(a, site, layout, prefix):
    """One batch of hook output as numpy [N, T, D] or [N, D]."""
    if isinstance(a, (tuple, list)):
        a = a[0]
    if not hasattr(a, "detach"):
        raise ValueError(f"site {site!r}: the module returned {type(a).__name__}, not a tensor")
    a = a.detach().float().cpu().numpy()
    if a.ndim == 4:
        a = a.reshape(a.shape[0], a.shape[1], -1).transpose(0, 2, 1)         # [N, C, H, W] -> [N, H*W, C]
    elif a.ndim == 3:
        if layout == "NCT":
            a = a.transpose(0, 2, 1)
        elif layout != "NTD":
            raise ValueError(f"site {site!r}: layout must be 'NTD' or 'NCT' for a 3-D output, got {layout!r}")
        if prefix:
            if prefix >= a.shape[1]:
                raise ValueError(f"site {site!r}: prefix_tokens={prefix} but the output has {a.shape[1]} tokens")
            a = a[:, prefix:]
    elif a.ndim != 2:
        raise ValueError(f"site {site!r}: output of shape {a.shape}; expected [N, D], [N, T, D] or [N, C, H, W]")
    return np.ascontiguousarray(a, dtype=np.float32)


def capture_arrays(model, modules, data, batch_size=256, mean=None, std=None, device=None, layouts=None,
                   prefix_tokens=0, split="data", progress=print):
    """{site: float32 [N, T, D] or [N, D]} and labels int64 [N] of one split (see the module docstring).
    Also returns the model's predictions (argmax of its output) as a third value, int64 [N]."""
    import torch

    sites = _modules(model, modules)
    layouts = layouts or {}
    store = {s: [] for s in sites}

    def hook(site):
        lay = layouts.get(site, "NTD") if isinstance(layouts, dict) else layouts
        k = prefix_tokens.get(site, 0) if isinstance(prefix_tokens, dict) else int(prefix_tokens or 0)

        def fn(module, inputs, output):
            store[site].append(_as_ntd(output, site, lay, k))
        return fn

    handles = [m.register_forward_hook(hook(s)) for s, m in sites.items()]
    was_training = model.training
    model.eval()
    ys, preds, n, t0 = [], [], 0, time.time()
    try:
        with torch.no_grad():
            for xb, yb in _batches(torch, data, batch_size, mean, std, split):
                if device is not None:
                    xb = xb.to(device)
                out = model(xb)
                out = out[0] if isinstance(out, (tuple, list)) else out
                if hasattr(out, "argmax") and getattr(out, "ndim", 0) == 2:
                    preds.append(out.argmax(1).cpu().numpy())
                ys.append(yb)
                n += len(yb)
                if progress:
                    progress(f"\r  {split}: {n} images ({time.time() - t0:.0f} s)", end="", flush=True)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if progress:
        progress("", flush=True)
    if n == 0:
        raise ValueError(f"{split}: no inputs")
    arrays = {}
    for s, parts in store.items():
        if not parts:
            raise ValueError(f"site {s!r}: the module was never called in the forward pass; hook another module")
        arrays[s] = np.concatenate(parts)
        if len(arrays[s]) != n:
            raise ValueError(f"site {s!r}: {len(arrays[s])} rows for {n} inputs (the module runs more than once per "
                             f"forward pass, e.g. a shared block); hook a module that runs once")
    y = np.concatenate(ys).astype(np.int64)
    pred = np.concatenate(preds).astype(np.int64) if len(preds) and sum(map(len, preds)) == n else None
    return arrays, y, pred


def capture_features(model, modules, path, train, test, class_names=None, batch_size=256, mean=None, std=None,
                     device=None, layouts=None, prefix_tokens=0, progress=print) -> Path:
    """Capture the activations of `modules` of a PyTorch `model` for the `train` and `test` splits and write them
    to the features file `path` (minicct.io.features layout, 'NTD' recorded). Returns the path.

    model: a torch.nn.Module (put on `device` by the caller). modules: module names (model.named_modules()), or
    a dict {site name in the file: module name}. train, test: (x, y) with x uint8 [N, H, W, 3] images (scaled
    to [0, 1] and normalised with mean / std when given), float [N, C, H, W] inputs, or an iterable of (x, y)
    batches (a DataLoader). layouts: "NCT" for 3-D outputs that are channels first (Conv1d), per site as a dict.
    prefix_tokens: class tokens to drop from 3-D outputs (int or {site: int}).
    """
    from .io.features import write_features

    say = progress or (lambda *a, **k: None)
    t0 = time.time()
    tr, y_tr, _ = capture_arrays(model, modules, train, batch_size, mean, std, device, layouts, prefix_tokens,
                                 "train", progress)
    te, y_te, pred = capture_arrays(model, modules, test, batch_size, mean, std, device, layouts, prefix_tokens,
                                    "test", progress)
    if pred is not None:
        say(f"  the model's own test top-1 on {len(y_te)} images: {100 * float((pred == y_te).mean()):.1f}%")
    out = write_features(path, {s: (tr[s], te[s]) for s in tr}, y_tr, y_te, class_names)
    say(f"wrote {out}: " + ", ".join(f"{s} {list(a.shape[1:])}" for s, a in tr.items())
        + f" ({time.time() - t0:.0f} s); analyse it with: python -m minicct snp-arrays {out}")
    return Path(out)
