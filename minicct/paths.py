"""Where minicct finds the files it ships: the classroom checkpoints and the real-image sample.

One rule: `data/<name>` of the source checkout this package was imported from.
"""
from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def find_data(name: str) -> Path:
    """data/<name> (a file or folder) of the checkout; a clear error if it is not there."""
    path = CHECKOUT / "data" / name
    if not path.exists():
        raise FileNotFoundError(f"minicct's shipped data {name!r} is not at {path}; run from a clone of the "
                                f"repository (or reinstall it), or pass the path explicitly")
    return path

#: The images each committed checkpoint is analysed on when a command's --dataset is "auto" (its default).
SHIPPED_DATA = {"cifar10_classroom.npz": "cifar10_sample", "cifar10_classroom_4heads.npz": "cifar10_sample",
                "classroom.npz": "embedded", "classroom_4heads.npz": "embedded"}
