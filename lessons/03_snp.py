"""Lesson 03: single-nodal performance (SNP) of a trained CCT, the main analysis of Koresh et al. (2025).

For the tokenizer and every encoder of the committed classroom checkpoint (offline, on the embedded dataset):
  1. freeze the model, capture the activations A [N, T, D] at one site (default: the encoder output),
  2. train a new bias-free linear read-out on them (the authors' recipe, SGD Nesterov 0.975) -> the
     per-encoder accuracy; on the flattened tokens ("flat", the authors' read-out), on the token average
     ("mean") and through a fresh sequence pooling ("seqpool", the CCT's own head) [the last two: INF],
  3. silence every read-out weight except those leaving node n: the mean field V[n, i, j] that node n sends
     to output j over the test images of true label i,
  4. divide each node's matrix by its maximum, threshold at 0.3 -> 0/1 matrix B_n,
  5. greedy clusters of labels (all-ones diagonal blocks of B_n), noise (ones outside the blocks), SNR.
Then: one node's clusters with label names, and whether the clusters follow the dataset's ground-truth groups
(shape, colour family, layout) more often than chance.

Run:  python lessons/03_snp.py  [--site out|mha_heads|ff_hidden|mha_out] [--threshold 0.3] [--checkpoint PATH]
      [--dataset embedded|cifar100|...] [--epochs 5] [--n-train N] [--out runs/03_snp]
"""
import argparse
import os
import sys
import time
from pathlib import Path

# One BLAS thread: the work is mostly element-wise, and a second OpenBLAS thread competing with other processes
# for 2 cores made steps several times slower here. Set OPENBLAS_NUM_THREADS yourself to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from minicct.analysis.report import group_agreement, run_snp  # noqa: E402
from minicct.datasets import load  # noqa: E402
from minicct.plots import pick_node  # noqa: E402
from minicct.train.checkpoint import load_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "data" / "checkpoints" / "classroom.npz"))
    ap.add_argument("--dataset", default="embedded")
    ap.add_argument("--site", default="out", choices=["out", "mha_heads", "mha_out", "ff_hidden"])
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=10, help="read-out training epochs (authors: 200)")
    ap.add_argument("--modes", default="flat,mean,seqpool",
                    help="read-outs: flat (the authors'), mean (token average), seqpool (the CCT's own pooling)")
    ap.add_argument("--n-train", type=int, default=None, help="training images for the read-outs (all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/03_snp", help="folder for the figures")
    args = ap.parse_args(argv)

    t0 = time.time()
    params, cfg, meta, _ = load_checkpoint(args.checkpoint)
    data = load(args.dataset)
    print(f"checkpoint {args.checkpoint}: {cfg.num_layers} encoders x {cfg.num_heads} heads, D={cfg.embedding_dim}, "
          f"test accuracy {100 * meta.get('test_acc', float('nan')):.1f}% ({meta.get('dataset')}, "
          f"{meta.get('epochs')} epochs, seed {meta.get('seed')})")
    print(f"dataset {data.name}: {len(data.y_train)} train / {len(data.y_test)} test images, {data.num_classes} labels\n")

    modes = tuple(args.modes.split(","))
    rep = run_snp(params, cfg, data, sites=(args.site,), modes=modes, epochs=args.epochs,
                  threshold=args.threshold, n_train=args.n_train, seed=args.seed, out_dir=args.out)

    K = data.num_classes
    print(f"\nPer-encoder SNP at site '{args.site}' (threshold {args.threshold}; K = {K} labels; encoder 0 = "
          f"tokenizer output).\nacc = read-out test accuracy; clusters = clusters per node; size = mean cluster "
          f"size; labels = labels in clusters per node;\nnoise = ones outside the cluster blocks per node (nodes "
          f"with a cluster); SNR = <signal>/<noise>; 1-node = single-node accuracy (chance {100 / K:.0f}%)\n")
    print(rep.format_table())

    # one node's clusters, by name: the last encoder, authors' read-out
    last = [r for r in rep.results if r.mode == modes[0]][-1]
    n = pick_node(last)
    names = data.class_names
    where = "tokenizer" if last.site == "tokens" else f"encoder {last.encoder} ({last.site})"
    print(f"\nNode {n} of {where}, {last.mode} read-out: {len(last.stats.clusters[n])} clusters, "
          f"noise {last.stats.noise[n]}, picks label '{names[last.single['top_label'][n]]}' for "
          f"{100 * last.single['top_fraction'][n]:.0f}% of the test images")
    for c in sorted(last.stats.clusters[n], key=len, reverse=True):
        print(f"   {{{', '.join(names[i] for i in c)}}}")

    # clusters against the ground-truth groups
    ok_groups = True
    if data.groups:
        print(f"\nMulti-label clusters whose labels all share one ground-truth group ({modes[0]} read-out), "
              f"against chance\n(chance = same-size random label sets, exact):")
        print(f"{'encoder':<10}" + "".join(f"{g:>26}" for g in data.groups))
        for r in [r for r in rep.results if r.mode == modes[0]]:
            agree = group_agreement([c for node in r.stats.clusters for c in node], data.groups)
            cells = "".join(f"{100 * a['inside']:7.1f}% vs {100 * a['chance']:5.1f}% (n={a['n']:4d})"
                            for a in agree.values())
            print(f"{r.encoder:<10}{cells}")
        agree = group_agreement([c for node in last.stats.clusters for c in node], data.groups)
        above = [g for g, a in agree.items() if a["n"] and a["inside"] > a["chance"] and a["p_value"] < 0.01]
        print("last encoder, one-sided label-permutation p-value of the count inside: "
              + ", ".join(f"{g} p = {a['p_value']:.2g} ({a['p_method']})" for g, a in agree.items()))
        print(f"last encoder: clusters follow {', '.join(above) or 'no group'} more often than chance (p < 0.01)")
        ok_groups = bool(above)

    print("\nfigures:")
    for f in rep.figures:
        print(f"  {f}")
    single = last.single["mean_accuracy"]
    print(f"\nchecks (measured in this run):")
    checks = {
        "read-out of the last encoder well above chance": last.accuracy > 3 / K,
        "single nodes are weak classifiers (mean single-node accuracy below the read-out's)": single < last.accuracy,
        "nodes see small clusters (mean labels in clusters per node < K/2)":
            last.summary["mean_labels_in_clusters"] < K / 2,
        "clusters follow at least one ground-truth group more than chance": ok_groups,
    }
    for text, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    print(f"done in {time.time() - t0:.0f} s")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
