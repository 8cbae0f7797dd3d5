"""Your own images: `--dataset npz:PATH` (arrays in one .npz) and `--dataset folder:PATH` (an image folder).

npz:PATH      one .npz file (np.savez) with
                  x_train, x_test   images [N, H, W, C] (HWC) or [N, C, H, W] (CHW), C = 3 (or 1: grey, copied
                                    to 3 channels), square (H = W); uint8 0..255, another integer type in 0..255,
                                    or float in [0, 1] (rounded to uint8: minicct stores images as uint8)
                  y_train, y_test   integer labels [N] in 0..K-1
                  class_names       optional [K] strings (K = len(class_names); else K = max label + 1)
                  mean, std         optional per-channel statistics (3,) of x / 255; else computed from x_train
folder:PATH   PATH/train/<class>/*.png|jpg|jpeg and PATH/test/<class>/*.png|jpg|jpeg (the ImageFolder layout);
              class names are the sub-folder names, sorted (label = index). Each image is read with Pillow,
              centre-cropped to a square and resized (BICUBIC) to the model's size; the result is converted once
              into a uint8 cache, `data_dir()/custom/<folder name>-<key>-<size>px.npz`, keyed by the folder's
              content (sha256 of every image's relative path and bytes), written atomically. Change an image and
              the next load rebuilds it.

Errors say what was expected and what came: a class missing from one split, an unreadable image (named), wrong
array shapes / dtypes / label ranges; the CLI also checks the number of classes against the checkpoint.
Channel statistics come from the training split unless given (`mean=`, `std=`, or in the .npz).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .base import Dataset, channel_stats, data_dir

__all__ = ["load_npz_dataset", "load_folder_dataset", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CACHE_VERSION = "folder-v1"


def _images_uint8_hwc(x, name: str, path, layout=None) -> np.ndarray:
    """[N, H, W, C] / [N, C, H, W] / [N, H, W], uint8 / int / float in [0, 1] -> uint8 [N, S, S, 3].
    layout: 'NHWC' / 'NCHW' where both fit (e.g. [N, 3, 3, 3]); otherwise an ambiguous shape is refused."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]                                       # [N, H, W] grey -> [N, H, W, 1]
    if x.ndim != 4:
        raise ValueError(f"{path}: {name} must be images [N, H, W, C] or [N, C, H, W], got shape {x.shape}")
    hwc = x.shape[-1] in (1, 3) and x.shape[1] == x.shape[2]
    chw = x.shape[1] in (1, 3) and x.shape[2] == x.shape[3]
    if layout is not None:
        if layout not in ("NHWC", "NCHW"):
            raise ValueError(f"{path}: layout must be 'NHWC' or 'NCHW', got {layout!r}")
        axis = 3 if layout == "NHWC" else 1
        if x.shape[axis] not in (1, 3):
            raise ValueError(f"{path}: {name} has shape {x.shape}, but layout {layout!r} puts the channels on axis "
                             f"{axis}, which has size {x.shape[axis]}, not 3 (or 1)")
        hwc, chw = layout == "NHWC", layout == "NCHW"
    if hwc and chw:
        raise ValueError(f"{path}: {name} has shape {x.shape}: both [N, H, W, C] and [N, C, H, W] fit, so the "
                         f"channel axis is ambiguous; say which it is: add layout='NHWC' (or 'NCHW') to the .npz "
                         f"(np.savez(..., layout='NHWC')) or pass layout= to load_npz_dataset")
    if chw or (not hwc and x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3)):
        x = x.transpose(0, 2, 3, 1)                            # [N, C, H, W] -> [N, H, W, C]
    elif not hwc and x.shape[-1] not in (1, 3):
        raise ValueError(f"{path}: {name} has shape {x.shape}: neither axis 1 nor axis 3 is a channel axis of "
                         f"size 3 (or 1); expected [N, H, W, 3] or [N, 3, H, W]")
    if x.shape[1] != x.shape[2]:
        raise ValueError(f"{path}: {name} images are {x.shape[1]} x {x.shape[2]}; the model needs square images "
                         f"(crop or resize them first)")
    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(f"{path}: {name} is {x.dtype} with values {x.min()}..{x.max()}; integer images must "
                             f"be in 0..255")
        x = x.astype(np.uint8)
    elif np.issubdtype(x.dtype, np.floating):
        if x.size and not np.isfinite(x).all():
            raise ValueError(f"{path}: {name} contains NaN or inf")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{path}: {name} is {x.dtype} with values {x.min():.4g}..{x.max():.4g}; float images "
                             f"must be in [0, 1] (divide 0..255 images by 255, or store them as uint8)")
        x = np.round(x * 255).astype(np.uint8)
    else:
        raise ValueError(f"{path}: {name} has dtype {x.dtype}; expected uint8, integers in 0..255 or floats in [0, 1]")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(x)


def _labels(y, n, name, path) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{path}: {name} must be one integer label per image, shape ({n},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: {name} must hold integer labels 0..K-1, got dtype {y.dtype}")
    return y.astype(np.int64)


def _check_classes(y_train, y_test, class_names, path):
    K = len(class_names)
    for split, y in (("train", y_train), ("test", y_test)):
        if y.size and (y.min() < 0 or y.max() >= K):
            raise ValueError(f"{path}: y_{split} has labels {y.min()}..{y.max()}, expected 0..{K - 1} "
                             f"({K} classes{' from class_names' if class_names else ''})")
        missing = np.flatnonzero(np.bincount(y, minlength=K) == 0)
        if missing.size:
            names = [str(class_names[i]) for i in missing[:10]]
            raise ValueError(f"{path}: {missing.size} class(es) have no {split} images: labels {missing[:10].tolist()}"
                             f" ({', '.join(names)}){' ...' if missing.size > 10 else ''}; every class needs images "
                             f"in both splits")


def _stats(x_train, mean, std, path):
    if (mean is None) != (std is None):
        raise ValueError(f"{path}: give both mean and std, or neither")
    if mean is None:
        if len(x_train) == 0:
            raise ValueError(f"{path}: no training images (x_train is empty); the dataset needs some")
        mean, std = channel_stats(x_train)
        if not (std > 0).all():
            c = int(np.flatnonzero(~(std > 0))[0])
            raise ValueError(f"{path}: channel {c} of every training image has the same value "
                             f"({round(255 * float(mean[c]))}): all-black or single-colour images? The per-channel "
                             f"std is 0, so the images cannot be normalised; check the images, or give mean and "
                             f"std (3 numbers each, std > 0) explicitly")
        return mean, std
    try:
        mean, std = np.asarray(mean, np.float32).reshape(-1), np.asarray(std, np.float32).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: mean and std must be 3 numbers each, got {mean!r}, {std!r}") from e
    if mean.shape != (3,) or std.shape != (3,) or not (std > 0).all() or not np.isfinite(mean).all() \
            or not np.isfinite(std).all():
        raise ValueError(f"{path}: mean and std must be 3 finite numbers each (std > 0), got {mean}, {std}")
    return mean, std


def load_npz_dataset(path, mean=None, std=None, layout=None) -> Dataset:
    """A Dataset from one .npz of arrays (layout in the module docstring). layout: 'NHWC' or 'NCHW' for
    images whose shape fits both (e.g. [N, 3, 3, 3]); an array `layout` in the file does the same."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no dataset file at {path} (expected an .npz with x_train, y_train, x_test, y_test)")
    from ..io.npz_read import open_npz, read_npy
    need = ("x_train", "y_train", "x_test", "y_test")
    with open_npz(path) as zf:              # only these members are read, each size-checked before inflating
        files = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        missing = [k for k in need if k not in files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}; found {sorted(files)[:12]}; expected {list(need)} "
                             f"(+ optional class_names, mean, std, layout); write it with np.savez(path, "
                             f"x_train=..., y_train=..., x_test=..., y_test=...)")
        arrays = {k: read_npy(zf, path, k) for k in (*need, "class_names", "mean", "std", "layout") if k in files}
    if "layout" in arrays:
        layout = str(arrays["layout"])
    x_tr = _images_uint8_hwc(arrays["x_train"], "x_train", path, layout)
    x_te = _images_uint8_hwc(arrays["x_test"], "x_test", path, layout)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise ValueError(f"{path}: train images are {x_tr.shape[1:]}, test images {x_te.shape[1:]}; they must match")
    y_tr = _labels(arrays["y_train"], len(x_tr), "y_train", path)
    y_te = _labels(arrays["y_test"], len(x_te), "y_test", path)
    if "class_names" in arrays:
        names = [str(c) for c in np.asarray(arrays["class_names"]).reshape(-1)]
    else:
        K = int(max(y_tr.max(initial=-1), y_te.max(initial=-1))) + 1
        names = [str(i) for i in range(max(K, 1))]
    _check_classes(y_tr, y_te, names, path)
    stats = "file" if "mean" in arrays else "given" if mean is not None else "x_train"
    mean, std = _stats(x_tr, arrays.get("mean", mean), arrays.get("std", std), path)
    return Dataset(name=f"npz:{path.name}", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, class_names=names,
                   mean=mean, std=std, meta={"source": str(path.resolve()), "layout": "npz arrays",
                                             "stats": stats})


def _list_split(root: Path, split: str) -> dict:
    folder = root / split
    if not folder.is_dir():
        raise ValueError(f"{root}: no '{split}' folder; expected {root}/train/<class>/*.png and "
                         f"{root}/test/<class>/*.png (one sub-folder per class)")
    out = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                       and not f.name.startswith("."))
        out[d.name] = files
    return out


def _file_sha256(file: Path) -> bytes:
    """sha256 of a file read in 1 MiB pieces (a huge file costs time, not memory)."""
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            h.update(piece)
    return h.digest()


def _decode(file: Path, size: int) -> np.ndarray:
    import warnings

    from PIL import Image

    from .flowers import square_resize
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)   # > MAX_IMAGE_PIXELS: refuse too
            with Image.open(file) as img:
                if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):   # 16-bit / 32-bit grey
                    return _wide_grey(img, size, file)
                img.draft("RGB", (size, size))
                return square_resize(img, size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"cannot read image {file}: it claims more pixels than Pillow accepts ({e}), a "
                         f"decompression bomb or a huge scan; delete it or shrink it below 89 megapixels") from e
    except (OSError, ValueError, SyntaxError) as e:      # PIL.UnidentifiedImageError is an OSError
        raise ValueError(f"cannot read image {file}: {e}; delete or replace this file") from e


def _wide_grey(img, size, file) -> np.ndarray:
    """A 16-bit (or 32-bit) grey image -> uint8 [size, size, 3], scaled by its bit depth (not clipped at 255)."""
    from PIL import Image

    from .flowers import square_resize
    a = np.asarray(img)
    if img.mode == "F" or a.dtype.kind == "f":
        raise ValueError(f"cannot read image {file}: floating-point pixels (mode {img.mode}); save it as an 8- or "
                         f"16-bit PNG")
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise ValueError(f"cannot read image {file}: {img.mode} pixels {a.min()}..{a.max()} outside 0..65535; "
                         f"save it as an 8- or 16-bit PNG")
    a8 = np.round(a.astype(np.float64) / 257.0).astype(np.uint8)        # 0..65535 -> 0..255
    return square_resize(Image.fromarray(a8, "L"), size)


def load_folder_dataset(path, img_size: int = 32, root=None, mean=None, std=None, progress=True) -> Dataset:
    """A Dataset from an image folder PATH/{train,test}/<class>/*.{png,jpg,jpeg} at img_size x img_size
    (layout and cache in the module docstring). root: cache folder (default data_dir()/custom)."""
    from ..io.download import atomic_savez, load_npz_cache

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no image folder at {path}")
    if not isinstance(img_size, int) or img_size < 1:
        raise ValueError(f"img_size must be a positive integer, got {img_size!r}")
    splits = {s: _list_split(path, s) for s in ("train", "test")}
    names = sorted(set(splits["train"]) | set(splits["test"]))
    if not names:
        raise ValueError(f"{path}: no class folders under train/ and test/")
    for s, other in (("train", "test"), ("test", "train")):
        lost = [c for c in names if c not in splits[s] or not splits[s][c]]
        if lost:
            raise ValueError(f"{path}: class(es) {lost[:10]} have images in {other}/ but none in {s}/ (expected "
                             f"{path}/{s}/<class>/*.png|jpg|jpeg for every class); every class needs both splits")
    h = hashlib.sha256(f"{_CACHE_VERSION} {img_size}\n".encode())
    for s in ("train", "test"):
        for c in names:
            for f in splits[s][c]:
                h.update(f"{s}/{c}/{f.name}\n".encode())
                h.update(_file_sha256(f))
    key = h.hexdigest()
    cache_dir = Path(root) if root is not None else data_dir() / "custom"
    cache = cache_dir / f"{path.resolve().name}-{key[:16]}-{img_size}px.npz"
    arrays = load_npz_cache(cache, key)
    if arrays is None:
        arrays = {}
        n = sum(len(v) for s in splits.values() for v in s.values())
        if progress:
            print(f"reading {n} images from {path} at {img_size}x{img_size} (cached afterwards in {cache})",
                  flush=True)
        for s in ("train", "test"):
            files = [(f, i) for i, c in enumerate(names) for f in splits[s][c]]
            x = np.empty((len(files), img_size, img_size, 3), np.uint8)
            for j, (f, _) in enumerate(files):               # one decode per file, once (then the cache)
                x[j] = _decode(f, img_size)
            arrays[f"x_{s}"], arrays[f"y_{s}"] = x, np.array([i for _, i in files], np.int64)
        atomic_savez(cache, source=np.array(key), **arrays)
    stats = "given" if mean is not None else "x_train"
    mean, std = _stats(arrays["x_train"], mean, std, path)
    return Dataset(name=f"folder:{path.name}", x_train=arrays["x_train"], y_train=arrays["y_train"],
                   x_test=arrays["x_test"], y_test=arrays["y_test"], class_names=names, mean=mean, std=std,
                   meta={"source": str(path.resolve()), "cache": str(cache), "content_sha256": key,
                         "resize": f"centre square crop, Pillow BICUBIC to {img_size}x{img_size}",
                         "stats": stats})
