"""The committed real-image sample: 4,000 real CIFAR-10 photographs that ship with minicct (offline).

    load("cifar10_sample") -> Dataset: 3,000 "train" images (for the read-outs) and 1,000 "test" images

What it holds (data/cifar10_sample/, provenance and md5 sums in its README.md):
  * train = official CIFAR-10 training rows 45000..47999 (data_batch_5 rows 5000..7999). The committed
    real-data checkpoints (data/checkpoints/cifar10_*.npz) were trained on training rows 0..44999 only,
    so these images are unseen by them: the analysis' read-outs are trained on them.
  * test  = official CIFAR-10 test rows 0..999 (the only official test rows we could obtain as byte-exact
    copies; see the README). The checkpoints' test accuracy is measured on them.
The files are four PNG sprite sheets (each 1,000 images as rows of 1,024 RGB pixels: row r = image r, pixel
j = position j of its 32x32 image in row-major order) and labels.json; each file is md5-checked when read.

It is a sample for the lessons and the analysis, not a training set: 300 images per label at most.
The channel statistics are those of the 45,000 training rows the real-data checkpoints were trained with
(`TRAIN_MEAN`, `TRAIN_STD`), so the checkpoints see their inputs normalised as in training.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io.download import file_md5
from .base import Dataset

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
#: CIFAR-10's one natural grouping of its labels: vehicles (0) and animals (1).
GROUPS = {"vehicle_or_animal": np.array([0, 0, 1, 1, 1, 1, 1, 1, 0, 0], np.int64)}
GROUP_NAMES = {"vehicle_or_animal": ["vehicle", "animal"]}
#: Per-channel mean and std of x / 255 over official training rows 0..44999 (the real-data checkpoints'
#: training images), from `minicct.datasets.channel_stats`.
TRAIN_MEAN = np.array([0.49154913425445557, 0.48212510347366333, 0.44642677903175354], np.float32)
TRAIN_STD = np.array([0.24715213477611542, 0.24367544054985046, 0.2617345452308655], np.float32)

SPRITES = {"train": ["cifar10_batch_45.png", "cifar10_batch_46.png", "cifar10_batch_47.png"],
           "test": ["cifar10_batch_50.png"]}


def sample_dir() -> Path:
    """data/cifar10_sample/ of the checkout (or of the installed package's data)."""
    from ..resources import find_data
    return find_data("cifar10_sample")


def read_sprite(path: Path) -> np.ndarray:
    """One ConvNetJS sprite sheet -> uint8 [1000, 32, 32, 3] (HWC)."""
    from PIL import Image
    with Image.open(path) as im:
        if im.size != (1024, 1000) or im.mode != "RGB":
            raise ValueError(f"{path}: expected a 1024x1000 RGB sprite sheet, got {im.size[0]}x{im.size[1]} "
                             f"{im.mode}; restore the file from the repository (see data/cifar10_sample/README.md)")
        a = np.asarray(im, np.uint8)                               # [1000, 1024, 3]
    return a.reshape(1000, 32, 32, 3)


def load_cifar10_sample(root=None) -> Dataset:
    """The committed 4,000-image real CIFAR-10 sample (3,000 read-out training images, 1,000 test)."""
    folder = Path(root) if root is not None else sample_dir()
    expected = dict(line.split()[::-1] for line in (folder / "MD5SUMS").read_text().splitlines() if line.strip())
    for name, md5 in expected.items():
        got = file_md5(folder / name)
        if got != md5:
            raise ValueError(f"{folder / name}: md5 {got}, expected {md5} (MD5SUMS); the file was changed or "
                             f"truncated: restore it with `git checkout -- data/cifar10_sample`")
    labels = json.loads((folder / "labels.json").read_text())["files"]
    split = {}
    for part, files in SPRITES.items():
        x = np.concatenate([read_sprite(folder / f) for f in files])
        y = np.concatenate([np.asarray(labels[f]["labels"], np.int64) for f in files])
        split[part] = (x, y)
    rows = {f: labels[f]["official_rows"] for fs in SPRITES.values() for f in fs}
    return Dataset(name="cifar10_sample", x_train=split["train"][0], y_train=split["train"][1],
                   x_test=split["test"][0], y_test=split["test"][1], class_names=list(CLASS_NAMES),
                   mean=TRAIN_MEAN.copy(), std=TRAIN_STD.copy(), groups={k: v.copy() for k, v in GROUPS.items()},
                   group_names={k: list(v) for k, v in GROUP_NAMES.items()},
                   meta={"source": str(folder), "official_rows": rows,
                         "note": "real CIFAR-10: train = official training rows 45000..47999 (unseen by the "
                                 "cifar10_* checkpoints), test = official test rows 0..999"})
