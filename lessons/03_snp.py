"""Lesson 03: single-nodal performance (SNP) of a trained CCT, the main analysis of Koresh et al. (2025).

On the committed classroom checkpoint (offline, on the embedded dataset), first for ONE site, step by step:
  1. capture     freeze the model, record the activations A [N, T, D] at the site       (report.capture)
  2. read-out    train a new bias-free linear read-out W on them, the authors' recipe     (train_readout)
                 (SGD Nesterov 0.975) -> the site's accuracy
  3. fields      silence every read-out weight except those leaving node n: the mean     (node_fields)
                 field V[n, i, j] node n sends to output j over the test images of label i
  4. threshold   divide each node's matrix by its maximum, keep > 0.3 -> 0/1 matrix B_n   (normalise_threshold)
  5. clusters    greedy label clusters: all-ones diagonal blocks of B_n                  (greedy_clusters)
  6. noise       ones outside the blocks; signal = ones inside; SNR = <signal> / <noise>  (node_noise, node_signal, snr)
then the same for the tokenizer and every encoder in one call (run_snp), with the authors' read-out on the
flattened tokens ("flat"), on the token average ("mean") and through a fresh sequence pooling ("seqpool", the
CCT's own head) [the last two: INF]. Then one node's clusters with label names, and whether the clusters follow
the dataset's ground-truth groups (shape, colour family, layout) more often than chance.

Run:  python lessons/03_snp.py  [--site out|mha_heads|ff_hidden|mha_out] [--threshold 0.3] [--checkpoint PATH]
      [--dataset embedded|cifar100|...] [--epochs 10] [--n-train N] [--out runs/03_snp]
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

from minicct.analysis.clusters import greedy_clusters, node_noise, node_signal, snr  # noqa: E402
from minicct.analysis.readout import READOUT_EPOCHS, train_readout  # noqa: E402
from minicct.analysis.report import capture, group_agreement, run_snp  # noqa: E402
from minicct.analysis.snp import AFCC_THRESHOLD, node_fields, normalise_threshold  # noqa: E402
from minicct.datasets import load  # noqa: E402
from minicct.plots import pick_node  # noqa: E402
from minicct.sites import SITES, Site, site_names  # noqa: E402
from minicct.train.checkpoint import load_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def one_site_step_by_step(A_tr, y_tr, A_te, y_te, K, site, args):
    """Steps 2-6 of the docstring for one site, each a named call, printing what it produced."""
    print(f"Step by step, {site.label()} (capture name {site.name!r}), flat read-out:")
    print(f"  1. capture               A_train {A_tr.shape}, A_test {A_te.shape}   [N, T, D]")
    ro = train_readout(A_tr, y_tr, K, epochs=args.epochs, seed=args.seed, A_test=A_te, y_test=y_te)
    print(f"  2. train_readout         W {ro.W.shape} [K, T, D]; test accuracy {100 * ro.final_test_acc:.1f}% "
          f"after {args.epochs} epochs")
    V = node_fields(A_te, y_te, ro.W, K)                                   # [D, K, K]
    print(f"  3. node_fields           V {V.shape} [D, K, K]; node 0 sends {V[0].max():.3f} at most")
    B = normalise_threshold(V, args.threshold)                             # [D, K, K] bool
    print(f"  4. normalise_threshold   B {B.shape}, {B.sum(axis=(1, 2)).mean():.1f} ones per node "
          f"(V / max V > {args.threshold})")
    clusters = [greedy_clusters(B[n]) for n in range(B.shape[0])]          # per node: lists of labels
    print(f"  5. greedy_clusters       {sum(map(len, clusters)) / len(clusters):.2f} clusters per node; node 0: "
          f"{clusters[0]}")
    noise, signal = node_noise(B, clusters), node_signal(B, clusters)      # [D] each (-1: no cluster)
    print(f"  6. node_noise, node_signal  mean noise {noise[noise >= 0].mean():.2f}, mean signal "
          f"{signal[noise >= 0].mean():.2f} (nodes with a cluster)")
    print(f"     snr                   SNR = <signal> / <noise> = {snr(signal, noise):.2f}\n")


def show_node(last, names):
    """One node's clusters by label name (the last encoder, the authors' read-out)."""
    n = pick_node(last)
    print(f"\nNode {n} of {last.site.label()}, {last.mode} read-out: {len(last.stats.clusters[n])} clusters, "
          f"noise {last.stats.noise[n]}, picks label '{names[last.single['top_label'][n]]}' for "
          f"{100 * last.single['top_fraction'][n]:.0f}% of the test images")
    for c in sorted(last.stats.clusters[n], key=len, reverse=True):
        print(f"   {{{', '.join(names[i] for i in c)}}}")


def show_groups(results, groups):
    """Multi-label clusters inside one ground-truth group, per encoder, against chance. Returns the groups the
    last encoder's clusters follow more than chance (p < 0.01)."""
    print("\nMulti-label clusters whose labels all share one ground-truth group (flat read-out), against chance\n"
          "(chance = same-size random label sets, exact):")
    print(f"{'encoder':<10}" + "".join(f"{g:>26}" for g in groups))
    for r in results:
        agree = group_agreement([c for node in r.stats.clusters for c in node], groups)
        print(f"{r.depth:<10}" + "".join(f"{100 * a['inside']:7.1f}% vs {100 * a['chance']:5.1f}% (n={a['n']:4d})"
                                         for a in agree.values()))
    above = [g for g, a in agree.items() if a["n"] and a["inside"] > a["chance"] and a["p_value"] < 0.01]
    print("last encoder, one-sided label-permutation p-value of the count inside: "
          + ", ".join(f"{g} p = {a['p_value']:.2g} ({a['p_method']})" for g, a in agree.items()))
    print(f"last encoder: clusters follow {', '.join(above) or 'no group'} more often than chance (p < 0.01)")
    return above


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    params, cfg, meta, _ = load_checkpoint(args.checkpoint)
    data = load(args.dataset)
    K = data.num_classes
    print(f"checkpoint {args.checkpoint}: {cfg.num_layers} encoders x {cfg.num_heads} heads, D={cfg.embedding_dim}, "
          f"test accuracy {100 * meta.get('test_acc', float('nan')):.1f}% ({meta.get('dataset')}, "
          f"{meta.get('epochs')} epochs, seed {meta.get('seed')})")
    print(f"dataset {data.name}: {len(data.y_train)} train / {len(data.y_test)} test images, {K} labels\n")

    x_tr, y_tr, x_te, y_te = data.x_train[:args.n_train], data.y_train[:args.n_train], data.x_test, data.y_test
    names = site_names(cfg.num_layers, (args.site,))                       # ["tokens", "enc0.out", ...]
    A_tr = capture(params, cfg, x_tr, data.mean, data.std, names)          # {name: [N, T, D]}, one forward pass
    A_te = capture(params, cfg, x_te, data.mean, data.std, names)
    site = Site(cfg.num_layers - 1, args.site)                             # the last encoder
    one_site_step_by_step(A_tr[site.name], y_tr, A_te[site.name], y_te, K, site, args)

    modes = tuple(args.modes.split(","))
    rep = run_snp(params, cfg, data, sites=(args.site,), modes=modes, epochs=args.epochs, threshold=args.threshold,
                  n_train=args.n_train, seed=args.seed, out_dir=args.out, acts=(A_tr, A_te))
    print(f"\nPer-encoder SNP at site '{args.site}' (threshold {args.threshold}; K = {K} labels; encoder 0 = "
          f"tokenizer output).\nacc = read-out test accuracy; clusters = clusters per node; size = mean cluster "
          f"size; labels = labels in clusters per node;\nnoise = ones outside the cluster blocks per node (nodes "
          f"with a cluster); SNR = <signal>/<noise>; 1-node = single-node accuracy (chance {100 / K:.0f}%)\n")
    print(rep.format_table())

    flat = [r for r in rep.results if r.mode == modes[0]]
    last = flat[-1]
    show_node(last, data.class_names)
    above = show_groups(flat, data.groups) if data.groups else ["(no groups)"]
    print("\nfigures:\n" + "\n".join(f"  {f}" for f in rep.figures))
    checks = {
        "read-out of the last encoder well above chance": last.accuracy > 3 / K,
        "single nodes are weak classifiers (mean single-node accuracy below the read-out's)":
            last.single["mean_accuracy"] < last.accuracy,
        "nodes see small clusters (mean labels in clusters per node < K/2)":
            last.summary["mean_labels_in_clusters"] < K / 2,
        "clusters follow at least one ground-truth group more than chance": bool(above),
    }
    print("\nchecks (measured in this run):\n" + "\n".join(f"  {'PASS' if ok else 'FAIL'}  {text}"
                                                         for text, ok in checks.items()))
    print(f"done in {time.time() - t0:.0f} s")
    return 0 if all(checks.values()) else 1


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "data" / "checkpoints" / "classroom.npz"))
    ap.add_argument("--dataset", default="embedded")
    ap.add_argument("--site", default="out", choices=list(SITES))
    ap.add_argument("--threshold", type=float, default=AFCC_THRESHOLD)
    ap.add_argument("--epochs", type=int, default=READOUT_EPOCHS, help="read-out training epochs (authors: 200)")
    ap.add_argument("--modes", default="flat,mean,seqpool",
                    help="read-outs: flat (the authors'), mean (token average), seqpool (the CCT's own pooling)")
    ap.add_argument("--n-train", type=int, default=None, help="training images for the read-outs (all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/03_snp", help="folder for the figures")
    return ap.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
