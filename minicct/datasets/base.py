"""The one container every loader returns, and where caches live.

Images are kept as they are stored: uint8 [N, H, W, 3] (HWC). `to_model_input` turns a batch into the
float32 [N, 3, H, W] array the model eats, normalised with the dataset's per-channel mean and std.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def data_dir() -> Path:
    """Folder for caches: `$MINICCT_DATA`, else `data/` of a source checkout, else `~/.cache/minicct`."""
    env = os.environ.get("MINICCT_DATA")
    if env:
        path = Path(env).expanduser()
    else:
        checkout = Path(__file__).resolve().parents[2]
        if (checkout / "setup.cfg").is_file() and (checkout / "minicct").is_dir():
            path = checkout / "data"
        else:
            path = Path.home() / ".cache" / "minicct"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Dataset:
    """A labelled image dataset split into train and test.

    Attributes:
        name: e.g. "embedded", "cifar10", "cifar100", "flowers102".
        x_train, x_test: uint8 [N, H, W, 3].
        y_train, y_test: int64 [N], values in 0..K-1.
        class_names: K names, index = label.
        mean, std: per-channel statistics of x_train / 255, each (3,), used by `to_model_input`.
        groups: ground-truth label groups, name -> int64 [K] (group index of each class), e.g.
            {"coarse": fine_to_coarse} for CIFAR-100. Empty when the dataset has none.
        group_names: name -> list of the group names of that grouping.
        x_val, y_val: optional validation split (Flowers-102 has one).
        meta: free-form provenance (source URL, md5, generator version, ...).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list
    mean: np.ndarray
    std: np.ndarray
    groups: dict = field(default_factory=dict)
    group_names: dict = field(default_factory=dict)
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def img_size(self) -> int:
        return int(self.x_train.shape[1])

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, "x_" + split), getattr(self, "y_" + split)
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(f"{self.name}: x_{split} must be uint8 [N, H, W, 3], got {x.dtype} {x.shape}")
            if y.shape != (x.shape[0],):
                raise ValueError(f"{self.name}: y_{split} must have shape ({x.shape[0]},), got {y.shape}")
            if y.size and (y.min() < 0 or y.max() >= len(self.class_names)):
                raise ValueError(f"{self.name}: y_{split} has labels outside 0..{len(self.class_names) - 1}")


def to_model_input(x_uint8: np.ndarray, mean, std) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W], (x/255 - mean) / std per channel."""
    if x_uint8.ndim != 4 or x_uint8.shape[-1] != 3:
        raise ValueError(f"expected images of shape [N, H, W, 3], got {x_uint8.shape}")
    if x_uint8.dtype != np.uint8:     # float images already in [0, 1] would be divided by 255 a second time
        raise ValueError(f"to_model_input expects uint8 images (0..255), got {x_uint8.dtype}; convert float images "
                         f"in [0, 1] with np.round(x * 255).astype(np.uint8)")
    s = np.asarray(std, np.float32)
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"to_model_input: std must be finite and > 0 per channel, got {s}")
    x = x_uint8.astype(np.float32) * np.float32(1 / 255)
    x -= np.asarray(mean, np.float32)
    x /= np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # [N, H, W, 3] -> [N, 3, H, W]


def channel_stats(x_uint8: np.ndarray):
    """Per-channel mean and std of x/255 over [N, H, W], as float32 (3,) arrays.

    Computed exactly from the 256-bin histogram of each channel (no float copy of the images).
    """
    if x_uint8.dtype != np.uint8 or x_uint8.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [..., 3], got {x_uint8.dtype} {x_uint8.shape}")
    counts = np.stack([np.bincount(x_uint8[..., c].ravel(), minlength=256) for c in range(3)])  # [3, 256]
    levels = np.arange(256) / 255.0
    n = counts.sum(axis=1)
    mean = counts @ levels / n
    var = counts @ levels ** 2 / n - mean ** 2
    return mean.astype(np.float32), np.sqrt(np.maximum(var, 0)).astype(np.float32)
