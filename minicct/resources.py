"""Where minicct finds the files it ships (checkpoints, exercise files) and where it keeps its caches.

Shipped files are named by their path in the repository, e.g. "data/checkpoints/classroom.npz" or
"lessons/exercises/ex01_linear_backward.py". They are looked up, in this order:

    1. the source checkout this minicct runs from (the folder holding setup.cfg and minicct/);
    2. the installed package: minicct/_data/<same path> (setup.py copies data/checkpoints/*.npz,
       data/samples/*.npz and lessons/exercises/* there at `pip install`).

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
    """minicct/_data of this installation (may not exist in a checkout)."""
    return _PKG / "_data"


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
