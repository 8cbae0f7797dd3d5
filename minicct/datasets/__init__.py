"""Datasets: the embedded procedural dataset (default, offline) and the official CIFAR-10, CIFAR-100 and
Flowers-102 (downloaded once, md5-verified, cached in data/ or $MINICCT_DATA).

    load("embedded")              -> Dataset (20+ classes, 32x32, ground-truth groups)
    load("cifar10_sample")        -> the committed 4,000 real CIFAR-10 photographs (offline)
    load("cifar10"), load("cifar100"), load("flowers102", img_size=64)
    load("npz:my_arrays.npz"), load("folder:my_images", img_size=32)      your own images (datasets/custom.py)
"""
from pathlib import Path

from .base import Dataset, channel_stats, data_dir, to_model_input

NAMES = ("embedded", "cifar10_sample", "cifar10", "cifar100", "flowers102")


def load(name: str, root=None, download: bool = True, **kwargs) -> Dataset:
    """Load a dataset by name. Extra keyword arguments go to the loader (e.g. seed for 'embedded',
    img_size for 'flowers102' and 'folder:PATH'; mean / std for 'npz:PATH' and 'folder:PATH').
    Every cache file the load writes is named on stderr ("cache written: PATH"); `python -m minicct cache`
    lists the caches and clears them."""
    if isinstance(name, str) and name.startswith("npz:"):
        return _load(name, root, download, **kwargs)           # reads the user's file, writes nothing
    import sys
    folder = Path(root) if root is not None else data_dir()
    before = _cache_files(folder)
    data = _load(name, root, download, **kwargs)
    for path, stamp in _cache_files(folder).items():
        if before.get(path) != stamp:
            sys.stderr.write(f"cache written: {path}\n")
    return data


def _cache_files(folder):
    """path -> (size, mtime) of the files in `folder` and its sub-folders one level down (the cache layout)."""
    out = {}
    for sub in [folder] + ([d for d in folder.iterdir() if d.is_dir()] if folder.is_dir() else []):
        try:
            for f in sub.iterdir():
                if f.is_file():
                    st = f.stat()
                    out[f] = (st.st_size, st.st_mtime_ns)
        except OSError:
            pass
    return out


def _load(name, root, download, **kwargs):
    if isinstance(name, str) and name.startswith("npz:"):
        from .custom import load_npz_dataset
        kwargs.pop("img_size", None)                   # the arrays have their own size
        return load_npz_dataset(name[len("npz:"):], **kwargs)
    if isinstance(name, str) and name.startswith("folder:"):
        from .custom import load_folder_dataset
        return load_folder_dataset(name[len("folder:"):], root=root, **kwargs)
    if name == "embedded":
        from .embedded import load_embedded
        return load_embedded(root=root, **kwargs)
    if name == "cifar10_sample":
        from .cifar_sample import load_cifar10_sample
        return load_cifar10_sample(root=root)
    if name == "cifar10":
        from .cifar import load_cifar10
        return load_cifar10(root=root, download=download, **kwargs)
    if name == "cifar100":
        from .cifar import load_cifar100
        return load_cifar100(root=root, download=download, **kwargs)
    if name == "flowers102":
        from .flowers import load_flowers102
        return load_flowers102(root=root, download=download, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(NAMES)}, npz:PATH or folder:PATH")


__all__ = ["Dataset", "NAMES", "channel_stats", "data_dir", "load", "to_model_input"]
