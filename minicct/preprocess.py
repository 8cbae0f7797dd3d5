"""What a model expects of its input, carried with the model: per-channel mean and std, image size, class names.

A network only gives its trained accuracy when it is fed images prepared as in training: x / 255, minus the
per-channel mean, divided by the per-channel std (minicct.datasets.to_model_input), at the trained size. These
numbers are not in the weights, so minicct records them:

    train         writes them into the checkpoint's metadata (meta["preprocess"], by `record(data)`);
    evaluate/snp  read them back (`from_meta`) and use them when the dataset does not state its own
                  (`choose_stats`; the line printed says which statistics were used and why);
    export        writes them beside the weights as NAME.json, shaped like timm's pretrained_cfg
                  (`pretrained_cfg`), and prints the torchvision Normalize(mean, std) line and the classes.

A timm / SHI-Labs training checkpoint stores its command-line `args`; their mean, std, input_size and
interpolation are read when present (`from_meta`).

The record (a plain dict, JSON-able):
    mean, std       3 floats each: statistics of x / 255 per channel (R, G, B)
    img_size        int: the square size the model was trained at
    class_names     K strings (index = label)
    interpolation   how images were resized to img_size ("bicubic"), or None when they came at that size
    dataset         the training dataset's name
    source          where the record came from ("training data", "timm args", ...)
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["record", "from_meta", "choose_stats", "pretrained_cfg", "write_pretrained_cfg", "read_pretrained_cfg",
           "normalize_line"]


def _three(v, what):
    try:
        a = [float(x) for x in np.asarray(v, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
        return None
    if len(a) == 1:
        a = a * 3
    if len(a) != 3 or not all(math.isfinite(x) for x in a) or (what == "std" and min(a) <= 0):
        return None
    return a


def record(data, source="training data") -> dict:
    """The preprocessing record of a minicct Dataset (what `train` stores in the checkpoint)."""
    resized = str(data.name).startswith(("folder:", "flowers102"))
    return {"mean": [round(float(x), 6) for x in data.mean], "std": [round(float(x), 6) for x in data.std],
            "img_size": int(data.img_size), "class_names": [str(c) for c in data.class_names],
            "interpolation": "bicubic" if resized else None, "dataset": str(data.name), "source": source}


def from_meta(meta: dict | None, cfg=None) -> dict | None:
    """The preprocessing record found in a checkpoint's metadata, or None.

    minicct .npz: meta["preprocess"] (written by `train`). timm / SHI-Labs training checkpoint: its `args`
    (mean, std, input_size or img_size, interpolation), when mean and std are there. An exported NAME.pth:
    the NAME.json beside it (`write_pretrained_cfg`), when meta["file"] names it.
    """
    meta = meta or {}
    pre = meta.get("preprocess")
    if isinstance(pre, dict) and _three(pre.get("mean"), "mean") and _three(pre.get("std"), "std"):
        out = dict(pre)
        out["mean"], out["std"] = _three(pre["mean"], "mean"), _three(pre["std"], "std")
        out.setdefault("source", "checkpoint")
        return out
    args = meta.get("args")
    if isinstance(args, dict):
        mean, std = _three(args.get("mean"), "mean"), _three(args.get("std"), "std")
        if mean and std:
            size = args.get("input_size") or args.get("img_size")
            if isinstance(size, (list, tuple)) and size:
                size = size[-1]
            out = {"mean": mean, "std": std, "interpolation": args.get("interpolation") or None,
                   "source": "the training checkpoint's args"}
            if isinstance(size, (int, float)) and not isinstance(size, bool):
                out["img_size"] = int(size)
            elif cfg is not None:
                out["img_size"] = int(cfg.img_size)
            if args.get("dataset"):
                out["dataset"] = str(args["dataset"])
            return out
    file = meta.get("file")
    if file:
        side = Path(file).with_suffix(".json")
        if side.is_file():
            try:
                return read_pretrained_cfg(side)
            except ValueError:
                return None
    return None


def choose_stats(data, pre: dict | None):
    """(mean, std, note): the statistics to normalise `data` with for a model whose record is `pre`.

    The dataset's own statistics win when it states them (an npz:PATH with mean/std arrays, or mean/std
    passed to the loader: data.meta["stats"] in ("file", "given")); else the model's recorded ones; else the
    statistics computed from the dataset's training split. `note` says which, in one line.
    """
    stated = (getattr(data, "meta", None) or {}).get("stats") in ("file", "given")
    if stated or not pre:
        why = ("stated by the dataset" if stated else
               "computed from its training images; the checkpoint records none")
        return data.mean, data.std, f"normalisation: mean/std of {data.name} ({why})"
    mean, std = np.asarray(pre["mean"], np.float32), np.asarray(pre["std"], np.float32)
    differ = not (np.allclose(mean, data.mean, atol=2e-3) and np.allclose(std, data.std, atol=2e-3))
    note = (f"normalisation: mean {_fmt(mean)} std {_fmt(std)} recorded with the model ({pre.get('source')}"
            + (f", trained on {pre['dataset']}" if pre.get("dataset") else "") + ")"
            + (f"; {data.name}'s own would be mean {_fmt(data.mean)} std {_fmt(data.std)}" if differ else ""))
    return mean, std, note


def _fmt(v):
    return "(" + ", ".join(f"{float(x):.4f}" for x in v) + ")"


def pretrained_cfg(cfg, pre: dict | None, weights: str | None = None, arch: str | None = None) -> dict:
    """A timm-style pretrained_cfg for the model: input_size, mean, std, num_classes, class names, ...

    Keys as timm's (input_size [C, H, W], interpolation, crop_pct, mean, std, num_classes, first_conv,
    classifier) plus label_names (timm's name for the class list) and minicct's own notes. mean / std are
    None when the checkpoint records none (then say so to the user: the data's own statistics are needed).
    """
    pre = pre or {}
    names = pre.get("class_names")
    if names is not None and len(names) != cfg.num_classes:
        names = None
    return {
        "architecture": arch or "cct",
        "input_size": [int(cfg.n_input_channels), int(cfg.img_size), int(cfg.img_size)],
        "interpolation": pre.get("interpolation") or "bicubic",
        "crop_pct": 1.0,
        "mean": pre.get("mean"), "std": pre.get("std"),
        "num_classes": int(cfg.num_classes),
        "label_names": names,
        "first_conv": "tokenizer.conv_layers.0.0", "classifier": "classifier.fc",
        "file": weights,
        "minicct": {"pixel_scale": "x / 255 (ToTensor), then (x - mean) / std per channel, RGB order",
                    "dataset": pre.get("dataset"), "preprocess_source": pre.get("source"),
                    "interpolation_used": pre.get("interpolation")},
    }


def write_pretrained_cfg(path, cfg, pre, weights=None, arch=None) -> Path:
    """Write `pretrained_cfg(...)` as JSON to `path` atomically; returns the path."""
    from .io.atomic import atomic_write_text
    path = Path(path)
    atomic_write_text(path, json.dumps(pretrained_cfg(cfg, pre, weights, arch), indent=1) + "\n")
    return path


def read_pretrained_cfg(path) -> dict:
    """The preprocessing record of a NAME.json written by `write_pretrained_cfg` (ValueError if it is not one)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable pretrained_cfg JSON ({e})") from e
    if not isinstance(d, dict) or not _three(d.get("mean"), "mean") or not _three(d.get("std"), "std"):
        raise ValueError(f"{path}: expected a JSON object with 'mean' and 'std' (3 numbers each)")
    size = d.get("input_size") or [None]
    return {"mean": _three(d["mean"], "mean"), "std": _three(d["std"], "std"), "img_size": size[-1], "class_names": d.get("label_names"),
            "interpolation": d.get("interpolation"), "dataset": (d.get("minicct") or {}).get("dataset"),
            "source": path.name}


def normalize_line(pre: dict | None) -> str:
    """The torchvision transform lines that prepare an RGB PIL image as the model was trained."""
    if not pre or not pre.get("mean"):
        return ("# mean/std: NOT recorded in this checkpoint. Use the per-channel mean and std of x / 255 over\n"
                "# the training images (minicct.datasets.channel_stats); with ToTensor() alone the predictions\n"
                "# are wrong without an error.\n"
                "# transforms.Normalize(mean=[...], std=[...])")
    size = pre.get("img_size")
    interp = (pre.get("interpolation") or "bicubic").upper()
    m = ", ".join(f"{x:.6g}" for x in pre["mean"])
    s = ", ".join(f"{x:.6g}" for x in pre["std"])
    resize = (f"    transforms.Resize({size}, interpolation=transforms.InterpolationMode.{interp}), "
              f"transforms.CenterCrop({size}),\n") if size else ""
    return ("from torchvision import transforms         # (or by hand: (x / 255 - mean) / std per channel)\n"
            "preprocess = transforms.Compose([\n" + resize +
            f"    transforms.ToTensor(), transforms.Normalize(mean=[{m}], std=[{s}])])")
