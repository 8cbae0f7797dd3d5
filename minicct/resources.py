"""Where minicct finds the files it ships (checkpoints, exercise files) and where it keeps its caches.

Shipped files are named by their path in the repository, e.g. "data/checkpoints/classroom.npz" or
"lessons/exercises/ex01_linear_backward.py". They are looked up, in this order:

    1. the source checkout this minicct runs from (the folder holding setup.cfg and minicct/);
    2. the install: <prefix>/share/minicct/<same path> (setup.cfg's [options.data_files] copies
       data/checkpoints/*.npz, data/cifar10_sample/* and lessons/exercises/* there at `pip install`).

Caches (downloads, decoded image folders, official weights) live in `cache_dir()`: $MINICCT_DATA when set, else
data/ of a checkout, else ~/.cache/minicct (minicct.datasets.data_dir). `python -m minicct cache` lists them
and `python -m minicct cache --clear` deletes them.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["checkout_root", "package_data_root", "search_roots", "find_shipped", "resolve_shipped",
           "shipped_checkpoints"]

_PKG = Path(__file__).resolve().parent


def checkout_root() -> Path | None:
    """The source checkout minicct runs from, or None when it runs installed."""
    root = _PKG.parent
    return root if (root / "setup.cfg").is_file() and (root / "minicct").is_dir() else None


def package_data_root() -> Path:
    """Where an install put the shipped files (setup.cfg [options.data_files]: <prefix>/share/minicct): the
    environment's prefix, the user base (pip --user), or beside the package (pip --target)."""
    import site
    import sys
    candidates = [Path(sys.prefix), Path(site.getuserbase()), _PKG.parent]
    for base in candidates:
        if (base / "share" / "minicct").is_dir():
            return base / "share" / "minicct"
    return Path(sys.prefix) / "share" / "minicct"


def search_roots() -> list:
    """The folders shipped files are looked up in, in order (checkout first, then package data)."""
    roots = [r for r in (checkout_root(), package_data_root()) if r is not None and r.is_dir()]
    return roots


def find_shipped(relpath) -> Path | None:
    """The file shipped as `relpath` (a path inside the repository), or None when no root has it."""
    rel = Path(relpath)
    if rel.is_absolute():
        return rel if rel.exists() else None
    for root in search_roots():
        if (root / rel).exists():
            return root / rel
    return None


def resolve_shipped(path) -> Path:
    """`path` when it exists (as given, from the current folder); else the shipped file of that relative path
    (e.g. the default data/checkpoints/classroom.npz after `pip install`); else `path` unchanged (so the
    caller's 'not found' error names what the user gave)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    found = find_shipped(p)
    return found if found is not None else p


def shipped_checkpoints() -> list:
    """The shipped checkpoints data/checkpoints/*.npz (file names, first root that has each)."""
    seen = {}
    for root in search_roots():
        for f in sorted((root / "data" / "checkpoints").glob("*.npz")):
            seen.setdefault(f.name, f)
    return list(seen.values())


#: The images each committed checkpoint is analysed on when a command's --dataset is "auto" (its default).
SHIPPED_DATA = {"cifar10_classroom.npz": "cifar10_sample", "cifar10_classroom_4heads.npz": "cifar10_sample",
                "classroom.npz": "embedded", "classroom_4heads.npz": "embedded"}


def find_data(name: str) -> Path:
    """data/<name> (a file or folder) as shipped: the checkout's, else the install's; a clear error if neither."""
    found = find_shipped(Path("data") / name)
    if found is None:
        raise FileNotFoundError(f"minicct's shipped data 'data/{name}' is in none of {search_roots()}; reinstall "
                                f"minicct (pip install .) or run from a clone of the repository")
    return found
