"""Lesson 08: which of the paper's claims hold on our models? The replication report.

Koresh et al. (2025) make a handful of claims in their abstract (and build on those of Tzach et al. 2023 and
Gross et al. 2025). For each, this lesson measures the quantity on the committed classroom checkpoints
(2 heads and 4 heads), over several read-out seeds, and sets it against its null or baseline:

  claim                                        measured                       null / baseline
  nodes identify small clusters                labels in clusters per node    K/4 (few) .. K/2 (many)
  a node selects one output label              top-label fraction per node    50 %
  accuracy progresses with the layers          read-out accuracy per encoder  paired differences over seeds
  features sharpen, SNR rises                  SNR and noise per encoder      paired differences over seeds
  ANDC prunes without affecting accuracy       ANDC - unpruned accuracy       1-point tolerance
    ... and selectively                        ANDC - random / magnitude      same per-node degree, same training
  heads break symmetry (specialise)            specialisation index           random partitions of the nodes
  each head is an expert on its labels         accuracy drop when zeroed      random label sets, Holm, MDE
  each label is recognised by a few heads      heads per label (SHP)          random partitions of the nodes
  (ours) clusters follow ground-truth groups   clusters inside one group      label permutation, Holm
Every verdict is one of supported / contradicted / inconclusive, by the rule printed with it. Where a claim
does not hold here, the table says so; it is a statement about these small models and this dataset, not about
the paper's CCT-7 on CIFAR-100.

This lesson runs `python -m minicct replicate` with a few seeds; the numbers quoted in the README come from
`python -m minicct replicate --seeds 5` (same code, more seeds).
Run:  python lessons/08_replication.py  [--seeds 3] [--epochs 5] [--checkpoint A.npz B.npz] [--out runs/08_replication]
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")             # one BLAS thread: see lesson 02
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from minicct.__main__ import main as cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CKPTS = [ROOT / "data" / "checkpoints" / "classroom.npz", ROOT / "data" / "checkpoints" / "classroom_4heads.npz"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", nargs="+", default=[str(c) for c in CKPTS if c.exists()])
    ap.add_argument("--dataset", default="embedded")
    ap.add_argument("--seeds", type=int, default=3, help="read-out seeds (>= 2 for a verdict)")
    ap.add_argument("--epochs", type=int, default=5, help="read-out epochs (the report's default is 10)")
    ap.add_argument("--modes", default="flat,mean,seqpool", help="read-outs (flat, the authors', is required)")
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--n-perm", type=int, default=2000)
    ap.add_argument("--out", default="runs/08_replication")
    args = ap.parse_args(argv)
    print(__doc__.split("This lesson runs")[0])
    cmd = ["replicate", "--checkpoint", *args.checkpoint, "--dataset", args.dataset, "--seeds", str(args.seeds), "--modes", args.modes,
           "--epochs", str(args.epochs), "--draws", str(args.draws), "--n-perm", str(args.n_perm), "--out", args.out]
    if args.n_train:
        cmd += ["--n-train", str(args.n_train)]
    print("python -m minicct " + " ".join(cmd))
    return cli(cmd)


if __name__ == "__main__":
    sys.exit(main())
