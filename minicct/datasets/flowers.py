"""Oxford Flowers-102 (Nilsback & Zisserman 2008) with its official train / validation / test split.

Official page: https://www.robots.ox.ac.uk/~vgg/data/flowers/102/. Three files:
  102flowers.tgz   jpg/image_00001.jpg ... jpg/image_08189.jpg, RGB JPEGs of varying size;
  imagelabels.mat  `labels` [1, 8189], class 1..102 of image i at labels[0, i-1];
  setid.mat        `trnid` [1, 1020], `valid` [1, 1020], `tstid` [1, 6149]: 1-based image ids.
Splits keep the order of the ids in setid.mat (as torchvision does). Images are decoded once per `img_size`
and kept in `flowers102_<img_size>.npz` beside the files.
"""
from __future__ import annotations

import io
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from .base import Dataset, data_dir
from .download import RemoteFile, atomic_savez, fetch, load_npz_cache

_BASE = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"  # answers 301 -> thor.robots.ox.ac.uk
FLOWERS_IMAGES = RemoteFile(_BASE + "102flowers.tgz", "102flowers.tgz", "52808999861908f626f3c1f4e79d11fa", 344862509)
FLOWERS_LABELS = RemoteFile(_BASE + "imagelabels.mat", "imagelabels.mat", "e0620be6f572b9609742df49c70aed4d", 502)
FLOWERS_SPLITS = RemoteFile(_BASE + "setid.mat", "setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c", 14989)

# Per-channel mean/std used by the reference CCT config (configs/datasets/flowers102.yml).
FLOWERS_MEAN, FLOWERS_STD = (0.4353, 0.3773, 0.2872), (0.2966, 0.2455, 0.2698)

# Index = label - 1. Not in the official files; the VGG category page as transcribed by torchvision and TFDS.
FLOWERS_CLASSES = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon", "colt's foot",
    "king protea", "spear thistle", "yellow iris", "globe-flower", "purple coneflower", "peruvian lily",
    "balloon flower", "giant white arum lily", "fire lily", "pincushion flower", "fritillary", "red ginger",
    "grape hyacinth", "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke",
    "sweet william", "carnation", "garden phlox", "love in the mist", "mexican aster", "alpine sea holly",
    "ruby-lipped cattleya", "cape flower", "great masterwort", "siam tulip", "lenten rose", "barbeton daisy",
    "daffodil", "sword lily", "poinsettia", "bolero deep blue", "wallflower", "marigold", "buttercup",
    "oxeye daisy", "common dandelion", "petunia", "wild pansy", "primula", "sunflower", "pelargonium",
    "bishop of llandaff", "gaura", "geranium", "orange dahlia", "pink-yellow dahlia?", "cautleya spicata",
    "japanese anemone", "black-eyed susan", "silverbush", "californian poppy", "osteospermum",
    "spring crocus", "bearded iris", "windflower", "tree poppy", "gazania", "azalea", "water lily", "rose",
    "thorn apple", "morning glory", "passion flower", "lotus", "toad lily", "anthurium", "frangipani",
    "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow", "magnolia", "cyclamen", "watercress",
    "canna lily", "hippeastrum", "bee balm", "ball moss", "foxglove", "bougainvillea", "camellia", "mallow",
    "mexican petunia", "bromelia", "blanket flower", "trumpet creeper", "blackberry lily",
)
NUM_CLASSES = len(FLOWERS_CLASSES)  # 102
SPLIT_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}  # our split name -> setid.mat key


def _mat_vector(path, key: str) -> np.ndarray:
    """The [1, n] numeric variable `key` of a .mat file as int64 [n], checked to hold whole numbers."""
    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types (ValueError, MatReadError, TypeError) on bad files
        raise ValueError(f"{path} is not a readable MATLAB file ({exc}); delete it and download again") from exc
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: variable {key!r} missing; variables found: {found}")
    v = np.asarray(mat[key])
    if v.ndim != 2 or v.shape[0] != 1 or not np.issubdtype(v.dtype, np.number):
        raise ValueError(f"{path}: {key!r} must be a numeric [1, n] array, got {v.dtype} {v.shape}")
    out = v[0].astype(np.int64)
    if not np.array_equal(out, v[0]):
        raise ValueError(f"{path}: {key!r} must hold whole numbers")
    return out


def read_flowers_labels(path) -> np.ndarray:
    """imagelabels.mat -> int64 [n_images], zero-based class (label - 1) of image id i at index i - 1."""
    labels = _mat_vector(path, "labels")
    if labels.size == 0 or labels.min() < 1 or labels.max() > NUM_CLASSES:
        raise ValueError(f"{path}: labels must lie in 1..{NUM_CLASSES}, got {labels.min(initial=0)}.."
                         f"{labels.max(initial=0)}")
    return labels - 1


def read_flowers_splits(path, num_images: int) -> dict:
    """setid.mat -> {"train", "val", "test"}: int64 1-based image ids in file order, checked disjoint and in
    1..num_images."""
    splits = {name: _mat_vector(path, key) for name, key in SPLIT_KEYS.items()}
    ids = np.concatenate(list(splits.values()))
    if ids.size == 0 or ids.min() < 1 or ids.max() > num_images:
        raise ValueError(f"{path}: image ids must lie in 1..{num_images} (the number of labels)")
    if np.unique(ids).size != ids.size:
        raise ValueError(f"{path}: the splits share image ids; they must be disjoint")
    return splits


def square_resize(img: Image.Image, size: int) -> np.ndarray:
    """Centre square crop (side = shorter side), resized to size x size with BICUBIC -> uint8 [size, size, 3].

    Same result as "resize shorter side to `size`, then centre-crop" (torchvision Resize + CenterCrop), up to
    rounding, in one Pillow call. Pillow's BICUBIC widens its kernel when shrinking, so it antialiases.
    """
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    out = img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC,
                                    box=(left, top, left + side, top + side))
    return np.asarray(out, dtype=np.uint8)


def _decode(data: bytes, size: int, name: str) -> np.ndarray:
    """One JPEG -> uint8 [size, size, 3]. Damaged files and decompression bombs (more pixels than Pillow's
    MAX_IMAGE_PIXELS, i.e. a few KB claiming gigapixels) raise ValueError naming the archive member."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # > MAX_IMAGE_PIXELS: refuse too
            img = Image.open(io.BytesIO(data))
            img.draft("RGB", (size, size))  # JPEG: decode at the smallest 1/2^k scale still >= size (fast)
            return square_resize(img, size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"{name}: not a usable image: it claims more pixels than any photo of the dataset "
                         f"(a decompression bomb?) ({exc}); delete the archive and download it again") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"{name}: not a readable image ({exc})") from exc


def read_flowers_images(archive, ids, img_size: int, progress: bool = False) -> np.ndarray:
    """Images `jpg/image_<id:05d>.jpg` of 102flowers.tgz for the 1-based `ids` -> uint8 [len(ids), s, s, 3]
    in the order of `ids`. One pass through the archive (no extraction to disk); see `square_resize`."""
    ids = np.asarray(ids, np.int64)
    row_of = {f"jpg/image_{i:05d}.jpg": r for r, i in enumerate(ids.tolist())}
    out = np.zeros((len(ids), img_size, img_size, 3), np.uint8)
    done = np.zeros(len(ids), bool)
    count = 0
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                r = row_of.get(member.name.removeprefix("./"))
                if r is None or done[r] or not member.isfile():
                    continue
                with tar.extractfile(member) as f:
                    out[r] = _decode(f.read(), img_size, member.name)
                done[r] = True
                count += 1
                if progress and (count % 200 == 0 or count == len(ids)):
                    sys.stderr.write(f"\rdecoding Flowers-102 images: {count}/{len(ids)}")
                    sys.stderr.flush()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"{archive} is not a readable tar archive ({exc}); delete it and download again") from exc
    finally:
        if progress:
            sys.stderr.write("\n")
    if not done.all():
        missing = ids[~done]
        raise ValueError(f"{archive}: {missing.size} images missing, e.g. jpg/image_{missing[0]:05d}.jpg")
    return out


OFFICIAL_SPLIT_SIZES = {"train": 1020, "val": 1020, "test": 6149}  # trnid, valid, tstid of the official setid.mat


def _cache_expect(img_size: int) -> dict:
    """dtype and shape of every array of a cache built from the official files (image counts included)."""
    official = FLOWERS_SPLITS.md5 == "a5357ecc9cb78c4bef273ce3793fc85c"
    expect = {}
    for s, n in OFFICIAL_SPLIT_SIZES.items():
        if official:
            expect["x_" + s] = ("u1", (n, img_size, img_size, 3))
            expect["y_" + s] = ("i8", (n,))
    return expect


def load_flowers102(root=None, download: bool = True, img_size: int = 64, progress: bool = True) -> Dataset:
    """Flowers-102 with the official splits: train 1020 (trnid), x_val/y_val 1020 (valid), test 6149 (tstid).

    Images uint8 [N, img_size, img_size, 3]: centre square crop of each photo resized with Pillow BICUBIC
    (see `square_resize`); labels int64 0..101 (= imagelabels - 1); class_names `FLOWERS_CLASSES`; no groups.

    Args:
        root: folder of 102flowers.tgz, imagelabels.mat, setid.mat and the cache flowers102_<img_size>.npz
            (default `data_dir()`). Files put there by hand are used if their md5 matches.
        download: fetch missing files; False raises FileNotFoundError instead.
        img_size: side of the square images (the reference CCT trains at 224).
        progress: download / decoding progress on stderr.
    """
    if isinstance(img_size, bool) or not isinstance(img_size, (int, np.integer)) or not 1 <= img_size <= 1024:
        raise ValueError(f"img_size must be an int in 1..1024, got {img_size!r}")
    img_size = int(img_size)
    root = Path(root) if root is not None else data_dir()
    remotes = (FLOWERS_LABELS, FLOWERS_SPLITS, FLOWERS_IMAGES)
    source = "+".join(r.md5 for r in remotes) + f"@{img_size}"
    cache = root / f"flowers102_{img_size}.npz"
    a = load_npz_cache(cache, source, expect=_cache_expect(img_size), num_classes=NUM_CLASSES)
    if a is not None and any(len(a["x_" + s_]) != len(a["y_" + s_]) for s_ in SPLIT_KEYS):
        sys.stderr.write(f"ignoring the cache {cache}: images and labels differ in number; rebuilding it\n")
        a = None
    if a is None:
        labels_path, splits_path, archive = [fetch(r, root, allow_download=download, progress=progress)
                                             for r in remotes]
        labels = read_flowers_labels(labels_path)
        splits = read_flowers_splits(splits_path, labels.size)
        order = np.concatenate([splits[s] for s in ("train", "val", "test")])
        images = read_flowers_images(archive, order, img_size, progress=progress)
        bounds = np.cumsum([0] + [splits[s].size for s in ("train", "val", "test")])
        a = {}
        for k, s in enumerate(("train", "val", "test")):
            a["x_" + s] = images[bounds[k]:bounds[k + 1]]
            a["y_" + s] = labels[splits[s] - 1]  # 1-based image id -> zero-based class
        atomic_savez(cache, source=np.array(source), **a)
    meta = {"source": [r.url for r in remotes], "md5": [r.md5 for r in remotes], "cache": str(cache),
            "resize": f"centre square crop, Pillow BICUBIC to {img_size}x{img_size}"}
    return Dataset(name="flowers102", x_train=a["x_train"], y_train=a["y_train"], x_test=a["x_test"],
                   y_test=a["y_test"], class_names=list(FLOWERS_CLASSES), mean=np.array(FLOWERS_MEAN, np.float32),
                   std=np.array(FLOWERS_STD, np.float32), x_val=a["x_val"], y_val=a["y_val"], meta=meta)
