"""Embedded-dataset variants against real images under the SNP analysis (issue 20, goal 3; docs/embedded_vs_real.md).

Each variant changes ONE property of the generator that real photographs have and the default embedded images
lack (generator options of minicct/datasets/embedded.py; their defaults give the default images byte for byte):

    default      the embedded dataset as the lessons use it (seed 0, difficulty 0.9, 500 + 100 images per class)
    hue135       hue_halfwidth=135: the warm and cool hue ranges overlap (half of each range is shared), so one
                 object's colour no longer tells the label's colour family: less local colour evidence
    natural      natural=1: 1/f (photograph-like) colour texture in the background and over the objects, and
                 occluders painted over the main objects: clutter, occlusion, natural texture statistics
    large        object_scale=1.5: main objects 1.5x larger (radius 4.6-6.8 px at difficulty 0.9), nearer CIFAR's frame coverage
    images2250   n_train_per_class=2250: 45,000 training images, as the real-CIFAR-10 runs (train45k)
    combined     natural=1 and object_scale=1.5 and hue_halfwidth=135 together

Subcommands (run from the repository root; every heavy one under `nice -n 19` on a shared machine):

    python docs/experiments/embedded_variants.py data --variant natural --out runs/data_natural.npz
        writes the variant as an npz dataset (x_train, y_train, x_test, y_test, class_names, mean, std and the
        ground-truth groups as group_<name>), usable as --dataset npz:runs/data_natural.npz by every command;
    python -m minicct train --model classroom --dataset npz:runs/data_natural.npz --epochs 8 --seed 0 \
        --out runs/natural.npz          (with MINICCT_WORKERS=1: the lesson-02 recipe, as classroom.npz was made)
    python docs/experiments/embedded_variants.py positions --checkpoint runs/natural.npz \
        --dataset npz:runs/data_natural.npz --seeds 2 --out runs/pos
        the per-position quantities of `python -m minicct replicate` (the seed_sweep call replicate makes, with
        the same seeds, epochs and capture batch) without its heads / ANDC / group claims, written as
        runs/pos/<checkpoint stem>/claims.json, which docs/check_realism.py reads;
    python docs/experiments/embedded_variants.py table runs/pos/*/claims.json
        the per-position accuracy / noise / cluster size of every mode, one block per file (Markdown).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

VARIANTS = {
    "default": {},
    "hue135": {"hue_halfwidth": 135.0},
    "natural": {"natural": 1.0},
    "large": {"object_scale": 1.5},
    "images2250": {"n_train_per_class": 2250},
    "combined": {"natural": 1.0, "object_scale": 1.5, "hue_halfwidth": 135.0},
}


def cmd_data(args):
    from minicct.datasets.embedded import load_embedded
    t0 = time.time()
    ds = load_embedded(seed=args.data_seed, **VARIANTS[args.variant])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test,
             class_names=np.array(ds.class_names), mean=ds.mean, std=ds.std,
             **{f"group_{g}": v for g, v in ds.groups.items()})
    print(f"{args.variant}: {len(ds.y_train)} train / {len(ds.y_test)} test images, options {ds.meta['options']} "
          f"-> {out} [{time.time() - t0:.0f} s]")


def cmd_positions(args):
    from minicct.analysis.replicate import format_positions_table, positions_summary, seeded_snp
    from minicct.datasets import load
    from minicct.io.npz_checkpoint import load_checkpoint
    t0 = time.time()
    params, cfg, meta, _ = load_checkpoint(args.checkpoint, with_opt=False)
    data = load(args.dataset)
    seeds = list(range(args.seed, args.seed + args.seeds))
    modes = tuple(args.modes.split(","))
    vals, _, _ = seeded_snp(params, cfg, data, "out", modes, seeds, args.epochs, args.threshold, args.n_train)
    pos = positions_summary(vals)
    out = Path(args.out) / Path(args.checkpoint).stem
    out.mkdir(parents=True, exist_ok=True)
    res = {"positions": pos, "checkpoint": str(args.checkpoint), "dataset": args.dataset,
           "model_test_acc_recorded": meta.get("test_acc"), "seconds": time.time() - t0,
           "config": {"seeds": seeds, "modes": list(modes), "epochs": args.epochs, "threshold": args.threshold,
                      "n_train": len(data.y_train[:args.n_train]), "n_test": len(data.y_test),
                      "K": cfg.num_classes, "num_layers": cfg.num_layers}}
    (out / "claims.json").write_text(json.dumps(res, indent=1))
    for mode in modes:
        print(format_positions_table(pos, mode, ("accuracy", "noise", "cluster_size", "labels_in_clusters")))
    print(f"{out / 'claims.json'} [{res['seconds']:.0f} s]")


def cmd_table(args):
    for path in args.files:
        r = json.load(open(path))
        pos = r["positions"]
        E = len(pos["flat"]["accuracy"])
        print(f"\n**{Path(path).parent.name}** ({r.get('dataset', '')}; seeds {r['config']['seeds']}, read-out epochs "
              f"{r['config']['epochs']})\n")
        print("| mode | quantity | " + " | ".join("tokenizer" if p == 0 else f"enc {p}" for p in range(E)) + " |")
        print("|---|---|" + "---|" * E)
        for mode in pos:
            for q, scale, fmt in (("accuracy", 100, "{:.1f}"), ("noise", 1, "{:.1f}"), ("cluster_size", 1, "{:.2f}")):
                cells = [fmt.format(scale * s["mean"]) for s in pos[mode][q]]
                print(f"| {mode} | {q.replace('_', ' ')}{' %' if q == 'accuracy' else ''} | " + " | ".join(cells) + " |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("data", help="write a variant as an npz dataset")
    p.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p = sub.add_parser("positions", help="per-position SNP quantities over read-out seeds -> claims.json")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", default="embedded")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", default="flat,mean,seqpool")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--threshold", type=float, default=0.3)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--out", required=True)
    p = sub.add_parser("table", help="Markdown tables of positions claims.json files")
    p.add_argument("files", nargs="+")
    args = ap.parse_args(argv)
    {"data": cmd_data, "positions": cmd_positions, "table": cmd_table}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
