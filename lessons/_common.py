"""What every lesson starts with, in one place: the preamble, the material (checkpoint + images), progress lines.

Import it first (`import _common`): it sets one BLAS thread per process (the lessons' work is mostly small
element-wise steps, and a second OpenBLAS thread competing for 2 cores made them several times slower; set
OPENBLAS_NUM_THREADS yourself to override) and lets a lesson run from a checkout without installing minicct.

The material. By default a lesson analyses the classroom CCT trained by minicct on real CIFAR-10 photographs
(`data/checkpoints/cifar10_classroom.npz`, 45,000 official training images) on the committed real-image sample
(`data/cifar10_sample`: 3,000 training images it never saw, for the read-outs, and 1,000 official test images).
`--material embedded` switches to the procedural embedded dataset and its checkpoints (20 labels with known
groups; fast and offline too), which does NOT behave like real images under this analysis: see EMBEDDED_NOTE.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))                      # run from a checkout without installing

from minicct.datasets import load  # noqa: E402
from minicct.io.checkpoints import load_any_checkpoint  # noqa: E402

CHECKPOINTS = ROOT / "data" / "checkpoints"
MATERIALS = {
    "real": {"dataset": "cifar10_sample", 2: CHECKPOINTS / "cifar10_classroom.npz",
             4: CHECKPOINTS / "cifar10_classroom_4heads.npz"},
    "embedded": {"dataset": "embedded", 2: CHECKPOINTS / "classroom.npz", 4: CHECKPOINTS / "classroom_4heads.npz"},
}
EMBEDDED_NOTE = ("note: the embedded dataset does not behave like real images under this analysis. On real "
                 "CIFAR-10 (the default material) noise per node and cluster size fall and read-out accuracy "
                 "rises from the tokenizer to the last encoder; on the embedded data the tokenizer is unusually "
                 "clean and the noise jumps at encoder 1 before falling (docs/embedded_vs_real.md).")


@dataclass
class Material:
    """What a lesson analyses: a trained model and the images to analyse it on."""
    params: dict          # parameter name -> array (official CCT keys)
    cfg: object           # minicct.model.CCTConfig
    meta: dict            # the checkpoint's record: test accuracy, dataset, epochs, seed, ...
    data: object          # minicct.datasets.Dataset
    checkpoint: Path
    name: str             # "real", "embedded" or "custom"


def add_material_args(ap: argparse.ArgumentParser, heads: int = 2) -> None:
    """--material real|embedded (default real), and --checkpoint / --dataset to analyse your own."""
    ap.add_argument("--material", default="real", choices=sorted(MATERIALS),
                    help="real: the CCT trained on real CIFAR-10 and the committed real-image sample (default); "
                         "embedded: the procedural dataset and its checkpoint")
    ap.add_argument("--checkpoint", default=None, help=f"your own checkpoint instead (default: the material's "
                                                       f"{heads}-head classroom CCT)")
    ap.add_argument("--dataset", default=None, help="your own dataset instead (e.g. cifar10, npz:PATH)")
    ap.set_defaults(_heads=heads)


def load_material(args, heads: int | None = None) -> Material:
    """Load the checkpoint and the images the arguments name, print one line for each."""
    chosen = MATERIALS[args.material]
    path = Path(args.checkpoint) if args.checkpoint else chosen[heads or args._heads]
    params, cfg, meta = load_any_checkpoint(path)           # .npz, .pth or a training checkpoint
    data = load(args.dataset or chosen["dataset"])
    name = args.material if not (args.checkpoint or args.dataset) else "custom"
    acc = meta.get("test_acc")
    print(f"model    {path.name}: {cfg.num_layers} encoders x {cfg.num_heads} heads, D = {cfg.embedding_dim}"
          + (f", {100 * acc:.1f} % test accuracy when trained ({meta.get('dataset')})" if acc is not None else ""))
    print(f"images   {data.name}: {len(data.y_train)} for the read-outs, {len(data.y_test)} test, "
          f"K = {data.num_classes} labels")
    if data.name.startswith("embedded"):
        print(EMBEDDED_NOTE)
    print()
    return Material(params, cfg, meta, data, path, name)


class Clock:
    """Prints a line before a step that may take a while, and the seconds since the lesson started."""

    def __init__(self):
        self.t0 = time.time()

    def step(self, text: str) -> None:
        print(f"[{time.time() - self.t0:5.1f} s] {text}", flush=True)

    def total(self) -> float:
        return time.time() - self.t0
