"""CIFAR-10 and CIFAR-100, python versions, from the official archives (Krizhevsky 2009).

Official page: https://www.cs.toronto.edu/~kriz/cifar.html. Each archive holds Python 2 pickles of dicts with
bytes keys; `data` is uint8 [N, 3072], one image per row: 1024 red, then 1024 green, then 1024 blue values,
each plane row-major. The pickles are read straight from the .tar.gz (nothing extracted to disk) through
`safe_pickle.RestrictedUnpickler`, and only after the archive's md5 matched. The parsed arrays are kept in an
.npz cache beside the archive (`cifar10.npz`, `cifar100.npz`), so later loads skip the archive.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from .base import Dataset, data_dir
from .download import RemoteFile, atomic_savez, fetch, load_npz_cache
from .safe_pickle import restricted_load

CIFAR10 = RemoteFile(url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                     filename="cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a", size=170498071)
CIFAR100 = RemoteFile(url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                      filename="cifar-100-python.tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85", size=169001437)

# Per-channel mean/std of the training images / 255, as used by the reference CCT configs.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR100_FOLDER = "cifar-100-python"

IMAGE_SHAPE = (32, 32, 3)
ROW_LEN = 32 * 32 * 3


def cifar_rows_to_images(rows: np.ndarray) -> np.ndarray:
    """Official rows uint8 [N, 3072] (1024 R, 1024 G, 1024 B; each plane row-major) -> uint8 [N, 32, 32, 3]."""
    rows = np.asarray(rows)
    if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != ROW_LEN:
        raise ValueError(f"CIFAR rows must be uint8 [N, {ROW_LEN}], got {rows.dtype} {rows.shape}")
    # [N, 3072] -> [N, 3, 32, 32] (plane, row, column) -> [N, 32, 32, 3]
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def fine_to_coarse_map(fine, coarse, num_fine: int = 100, num_coarse: int = 20) -> np.ndarray:
    """int64 [num_fine]: the coarse class (superclass) of every fine class, read off paired label lists.

    Raises ValueError unless every fine class occurs and always comes with the same coarse class.
    """
    fine, coarse = np.asarray(fine, np.int64), np.asarray(coarse, np.int64)
    if fine.shape != coarse.shape or fine.ndim != 1:
        raise ValueError(f"fine and coarse labels must be two 1-D lists of equal length, got {fine.shape}, "
                         f"{coarse.shape}")
    if fine.size and (fine.min() < 0 or fine.max() >= num_fine or coarse.min() < 0 or coarse.max() >= num_coarse):
        raise ValueError(f"labels out of range: fine must lie in 0..{num_fine - 1}, coarse in 0..{num_coarse - 1}")
    pairs = np.unique(fine * num_coarse + coarse)  # distinct (fine, coarse) pairs, sorted by fine
    pair_fine, pair_coarse = pairs // num_coarse, pairs % num_coarse
    counts = np.bincount(pair_fine, minlength=num_fine)
    if np.any(counts != 1):
        missing, multi = np.flatnonzero(counts == 0), np.flatnonzero(counts > 1)
        raise ValueError(f"every fine class must map to exactly one coarse class; fine classes absent: "
                         f"{missing.tolist()}, with several coarse classes: {multi.tolist()}")
    return pair_coarse  # sorted by fine id, one entry per fine class


def _names(values, what: str) -> list:
    names = [v.decode("ascii") if isinstance(v, bytes) else str(v) for v in values]
    if not names:
        raise ValueError(f"the archive's {what} list is empty")
    return names


def _field(obj, key: bytes, member: str):
    if not isinstance(obj, dict):
        raise ValueError(f"{member}: expected a pickled dict, got {type(obj).__name__}")
    if key not in obj:
        raise ValueError(f"{member}: key {key!r} missing; keys found: {sorted(obj, key=repr)}")
    return obj[key]


def _batch(obj, member: str, label_keys: tuple) -> tuple:
    """(images uint8 [N, 32, 32, 3], one int64 [N] array per label key) of one pickled batch dict."""
    images = cifar_rows_to_images(_field(obj, b"data", member))
    labels = []
    for key in label_keys:
        y = np.asarray(_field(obj, key, member), dtype=np.int64)
        if y.shape != (len(images),):
            raise ValueError(f"{member}: {key!r} has shape {y.shape}, expected ({len(images)},)")
        labels.append(y)
    return images, *labels


def _read_members(archive, folder: str, names) -> dict:
    """Unpickle the members `folder/<name>` of a tar archive in one pass (no extraction, no seeking)."""
    wanted = {f"{folder}/{n}": n for n in names}
    out = {}
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None or name in out:
                    continue
                if not member.isfile():
                    raise ValueError(f"{archive}: member {member.name} is not a regular file")
                with tar.extractfile(member) as f:
                    out[name] = restricted_load(f)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"{archive} is not a readable tar archive ({exc}); delete it and download again") from exc
    missing = sorted(set(wanted) - {f"{folder}/{n}" for n in out})
    if missing:
        raise ValueError(f"{archive}: members missing: {missing}; not the official CIFAR archive")
    return out


def read_cifar10_archive(path) -> dict:
    """Parse cifar-10-python.tar.gz -> x_train uint8 [50000, 32, 32, 3], y_train int64 [50000], x_test, y_test
    (10000), class_names [10]. Train = data_batch_1..5 concatenated in order."""
    m = _read_members(path, CIFAR10_FOLDER, (*CIFAR10_TRAIN, "test_batch", "batches.meta"))
    train = [_batch(m[n], n, (b"labels",)) for n in CIFAR10_TRAIN]
    x_test, y_test = _batch(m["test_batch"], "test_batch", (b"labels",))
    return {"x_train": np.concatenate([b[0] for b in train]), "y_train": np.concatenate([b[1] for b in train]),
            "x_test": x_test, "y_test": y_test,
            "class_names": _names(_field(m["batches.meta"], b"label_names", "batches.meta"), "label_names")}


def read_cifar100_archive(path) -> dict:
    """Parse cifar-100-python.tar.gz -> x_train uint8 [50000, 32, 32, 3], y_train int64 [50000] (fine labels),
    x_test, y_test (10000), class_names [100] (fine), coarse_names [20], fine_to_coarse int64 [100]
    (checked to agree with the coarse labels of train and test)."""
    m = _read_members(path, CIFAR100_FOLDER, ("train", "test", "meta"))
    x_train, y_train, c_train = _batch(m["train"], "train", (b"fine_labels", b"coarse_labels"))
    x_test, y_test, c_test = _batch(m["test"], "test", (b"fine_labels", b"coarse_labels"))
    class_names = _names(_field(m["meta"], b"fine_label_names", "meta"), "fine_label_names")
    coarse_names = _names(_field(m["meta"], b"coarse_label_names", "meta"), "coarse_label_names")
    f2c = fine_to_coarse_map(np.concatenate([y_train, y_test]), np.concatenate([c_train, c_test]),
                             len(class_names), len(coarse_names))
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "class_names": class_names, "coarse_names": coarse_names, "fine_to_coarse": f2c}


_OFFICIAL_MD5 = {"cifar10": CIFAR10.md5, "cifar100": CIFAR100.md5}


def _load(name: str, remote: RemoteFile, reader, root, download: bool, progress: bool) -> dict:
    """Arrays from the .npz cache if it was built from this archive md5, else from the (fetched) archive."""
    root = Path(root) if root is not None else data_dir()
    cache = root / f"{name}.npz"
    official = remote.md5 in (_OFFICIAL_MD5["cifar10"], _OFFICIAL_MD5["cifar100"])
    expect = {"x_train": ("u1", (50000, 32, 32, 3)), "y_train": ("i8", (50000,)),   # the official counts
              "x_test": ("u1", (10000, 32, 32, 3)), "y_test": ("i8", (10000,))} if official else None
    arrays = load_npz_cache(cache, remote.md5, expect=expect, num_classes=100 if name == "cifar100" else 10)
    if arrays is None:
        archive = fetch(remote, root, allow_download=download, progress=progress)
        arrays = reader(archive)
        atomic_savez(cache, source=np.array(remote.md5), **{
            k: np.array(v) if isinstance(v, list) else v for k, v in arrays.items()})
    arrays["class_names"] = [str(s) for s in arrays["class_names"]]
    arrays["meta"] = {"source": remote.url, "archive": str(root / remote.filename), "md5": remote.md5,
                      "cache": str(cache)}
    return arrays


def load_cifar10(root=None, download: bool = True, progress: bool = True) -> Dataset:
    """CIFAR-10: 50000 train / 10000 test images uint8 [N, 32, 32, 3], labels int64 0..9, no groups.

    Args:
        root: cache folder (default `data_dir()`); the archive `cifar-10-python.tar.gz` and `cifar10.npz`
            live there. A file put there by hand is used if its md5 matches.
        download: fetch the archive when missing; False raises FileNotFoundError instead.
        progress: download progress on stderr.
    """
    a = _load("cifar10", CIFAR10, read_cifar10_archive, root, download, progress)
    return Dataset(name="cifar10", x_train=a["x_train"], y_train=a["y_train"], x_test=a["x_test"],
                   y_test=a["y_test"], class_names=a["class_names"], mean=np.array(CIFAR10_MEAN, np.float32),
                   std=np.array(CIFAR10_STD, np.float32), meta=a["meta"])


def load_cifar100(root=None, download: bool = True, progress: bool = True) -> Dataset:
    """CIFAR-100: 50000 train / 10000 test images uint8 [N, 32, 32, 3], fine labels int64 0..99.

    groups = {"coarse": fine_to_coarse int64 [100]} (the 20 superclasses, derived from the coarse labels in
    the file), group_names = {"coarse": the 20 coarse names}. Arguments as `load_cifar10`.
    """
    a = _load("cifar100", CIFAR100, read_cifar100_archive, root, download, progress)
    return Dataset(name="cifar100", x_train=a["x_train"], y_train=a["y_train"], x_test=a["x_test"],
                   y_test=a["y_test"], class_names=a["class_names"], mean=np.array(CIFAR100_MEAN, np.float32),
                   std=np.array(CIFAR100_STD, np.float32),
                   groups={"coarse": a["fine_to_coarse"].astype(np.int64)},
                   group_names={"coarse": [str(s) for s in a["coarse_names"]]}, meta=a["meta"])
