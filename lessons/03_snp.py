"""Lesson 03: single-nodal performance (SNP), the main analysis of Koresh et al. (2025).

The question: what does ONE node of a trained CCT know? Freeze the model, train a new linear read-out on the
tokens after one encoder, then silence every read-out weight except those leaving one node, and look at the
field that node alone sends to the K outputs, averaged over the test images of each true label.

First ONE site (the last encoder), step by step, printing what each paper step produces:
  1. capture     freeze the model, record the activations A [N, T, D] after the encoder   (report.capture)
  2. read-out    train a new bias-free linear read-out W on them, the authors' recipe      (train_readout)
  3. fields      the mean field V[n, i, j] node n sends to output j over test images of label i (node_fields)
  4. threshold   divide each node's K x K matrix by its maximum, keep > 0.3 -> 0/1 matrix B_n (normalise_threshold)
  5. clusters    greedy label clusters: all-ones diagonal blocks of B_n                   (greedy_clusters)
  6. noise       ones outside the blocks; signal = ones inside; SNR = <signal> / <noise>   (node_noise, node_signal, snr)
Then the same for the tokenizer and every encoder, with three read-outs ("flat": the authors', on the flattened
tokens; "mean": on the token average; "seqpool": through a fresh sequence pooling, the CCT's own head; the last
two are ours, docs/method.md §1), each trained afresh for --seeds seeds: mean [95 % interval over seeds].
Last: one node's clusters by label name, whether clusters follow the dataset's label groups more often than
chance, and the paper's single-node claims, each decided on the intervals (minicct.analysis.stats).

Material: the classroom CCT trained on real CIFAR-10 and 4,000 real photographs it never saw (default), or
`--material embedded` (lessons/_common.py).
Run:  python lessons/03_snp.py  [--material real|embedded] [--site out|mha_heads|ff_hidden|mha_out]
      [--seeds 3] [--epochs 10] [--out runs/03_snp]
"""
import _common  # noqa: F401  (first: the preamble)

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from _common import Clock, add_material_args, load_material
from minicct.analysis.clusters import greedy_clusters, node_noise, node_signal, snr
from minicct.analysis.nulls import group_permutation_test, holm
from minicct.analysis.readout import train_readout
from minicct.analysis.nulls import NULL_DRAWS
from minicct.analysis.replicate import (LABELS, format_positions_table, near_chance_verdict, positions_summary,
                                       single_label_verdict, small_clusters_verdict, snp_sweep)
from minicct.analysis.report import capture
from minicct.analysis.snp import node_fields, normalise_threshold
from minicct.analysis.stats import summarise
from minicct.plots import pick_node
from minicct.sites import Site

TABLE = ("accuracy", "clusters_per_node", "cluster_size", "labels_in_clusters", "noise", "snr",
         "single_node_accuracy", "single_node_top_fraction")
NULL_ROWS = ("accuracy", "cluster_size", "noise", "snr")        # each also printed under permuted labels


@dataclass
class Sweep:
    """Every read-out of the tokenizer and each encoder, for every mode and seed, and the same with permuted
    labels (replicate.snp_sweep)."""
    values: dict        # values[mode][quantity] -> [seeds, positions] (position 0 = tokenizer)
    null: object        # nulls.NullSweep: null.compare(mode, quantity) -> value, null, excess per position
    report: object      # SNPReport of the first seed (figures)
    kept: dict          # (seed, capture name, mode) -> SiteAnalysis
    seeds: list
    modes: tuple


def step_by_step(m, site, args):
    """Steps 1-6 for one site with the flat read-out, each a named call, printing what it produced."""
    d, K = m.data, m.data.num_classes
    A_train = capture(m.params, m.cfg, d.x_train, d.mean, d.std, [site.name])[site.name]      # [N, T, D]
    A_test = capture(m.params, m.cfg, d.x_test, d.mean, d.std, [site.name])[site.name]
    print(f"  1. capture               A_train {A_train.shape}, A_test {A_test.shape}   [N, T, D]")
    readout = train_readout(A_train, d.y_train, K, epochs=args.epochs, seed=args.seed, A_test=A_test,
                            y_test=d.y_test)
    print(f"  2. train_readout         W {readout.W.shape} [K, T, D]; test accuracy "
          f"{100 * readout.final_test_acc:.1f} % after {args.epochs} epochs")
    V = node_fields(A_test, d.y_test, readout.W, K)                       # [D, K, K]
    print(f"  3. node_fields           V {V.shape} [D, K, K]; node 0's largest field {V[0].max():.3f}")
    B = normalise_threshold(V, args.threshold)                            # [D, K, K] 0/1
    print(f"  4. normalise_threshold   B {B.shape}: {B.sum(axis=(1, 2)).mean():.1f} ones per node "
          f"(V / max V > {args.threshold})")
    clusters = [greedy_clusters(B[n]) for n in range(B.shape[0])]         # per node: lists of labels
    print(f"  5. greedy_clusters       {np.mean([len(c) for c in clusters]):.2f} clusters per node; node 0: "
          f"{[[d.class_names[i] for i in c] for c in clusters[0]]}")
    noise, signal = node_noise(B, clusters), node_signal(B, clusters)     # [D] each (-1: no cluster)
    has = noise >= 0
    print(f"  6. node_noise / signal   per node with a cluster: noise {noise[has].mean():.2f}, "
          f"signal {signal[has].mean():.2f};  snr = <signal> / <noise> = {snr(signal, noise):.2f}\n")


def sweep_encoders(m, args) -> Sweep:
    """The tokenizer and every encoder, all read-out modes and seeds (one capture, read-outs on both cores),
    and --null-draws runs per seed with both label vectors permuted (the no-information null)."""
    seeds, modes = list(range(args.seed, args.seed + args.seeds)), tuple(args.modes.split(","))
    res = snp_sweep(m.params, m.cfg, m.data, site=args.site, modes=modes, seeds=seeds, epochs=args.epochs,
                    threshold=args.threshold, out_dir=args.out, null_draws=args.null_draws)
    return Sweep(res.vals, res.sweep, res.report, res.kept, seeds, modes)


def null_rows(sweep, mode) -> str:
    """The same quantities with permuted labels: what the pipeline gives when the labels carry no information."""
    lines = []
    for q in NULL_ROWS:
        label, scale, digits = LABELS[q]
        cells = []
        for c in sweep.null.compare(mode, q):
            s, f = c["null"], f"{{:.{digits}f}}"
            cells.append("-" if not np.isfinite(s.mean) else f.format(scale * s.mean) if not np.isfinite(s.lo)
                         else f"{f.format(scale * s.mean)} [{f.format(scale * s.lo)}, {f.format(scale * s.hi)}]")
        lines.append(f"  {'null: ' + label:<24}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def print_table(sweep, K, args):
    print(f"\nSNP after each encoder ({args.site}), mean [95 % interval over {len(sweep.seeds)} read-out seeds]. "
          f"noise = ones outside the clusters per node;\nSNR = <signal>/<noise>; single-node accuracy: chance "
          f"{100 / K:.0f} %; top-label fraction = test images on which a node picks its most frequent label.")
    if sweep.null.draws:
        print(f"'null:' rows = the same pipeline with the training and test labels permuted ({sweep.null.draws} "
              f"draw(s) per seed): a number that sits at its null carries no label information.")
    positions = positions_summary(sweep.values)
    for mode in sweep.modes:
        print(format_positions_table(positions, mode, TABLE))
        if sweep.null.draws:
            print(null_rows(sweep, mode))
    print("Look at the noise and cluster-size rows from the tokenizer to the last encoder, at read-out accuracy, "
          "and at each against its null.")


def one_node(sweep, names):
    last = [r for r in sweep.report.results if r.mode == sweep.modes[0]][-1]
    n = pick_node(last)
    print(f"\nNode {n} of {last.site.label()}, {last.mode} read-out: {len(last.stats.clusters[n])} clusters, noise "
          f"{last.stats.noise[n]}; it picks '{names[last.single['top_label'][n]]}' on "
          f"{100 * last.single['top_fraction'][n]:.0f} % of the test images. Its clusters:")
    for c in sorted(last.stats.clusters[n], key=len, reverse=True):
        print(f"   {{{', '.join(names[i] for i in c)}}}")
    return last


def clusters_vs_groups(sweep, last, data, seed) -> bool:
    """Do the last encoder's multi-label clusters (all seeds pooled) stay inside one label group more than
    same-size random label sets do? One-sided label-permutation p, Holm over the groupings."""
    if not data.groups:
        return False
    pooled = [c for s in sweep.seeds for node in sweep.kept[(s, last.name, last.mode)].stats.clusters for c in node]
    tests = {g: group_permutation_test(pooled, np.asarray(gv), seed=seed) for g, gv in data.groups.items()}
    p_holm, reject = holm([t["p_value"] for t in tests.values()])
    print(f"\nClusters of {last.site.label()} inside one label group, against same-size random label sets "
          f"(p: label permutation, Holm):")
    for (g, t), p in zip(tests.items(), p_holm):
        print(f"   {g:<20} {100 * t['fraction']:.0f} % vs {100 * t['null_mean']:.0f} % by chance, p_Holm = {p:.2g}")
    return any(reject)


def check_claims(sweep, last, K, follows_groups):
    """The paper's single-node claims at the last encoder, decided on the intervals (replicate.py's rules)."""
    at_last = lambda q: summarise(sweep.values[last.mode][q][:, -1])               # noqa: E731
    acc, single, top, labels = (at_last(q) for q in ("accuracy", "single_node_accuracy", "single_node_top_fraction",
                                                      "labels_in_clusters"))
    sane = (acc.lo if np.isfinite(acc.lo) else acc.mean) > 3 / K
    print(f"\nsanity: {'PASS' if sane else 'FAIL'}  read-out of the last encoder above 3x chance: {acc.fmt(100, 1)} %")
    print(f"claims at {last.site.label()}, {last.mode} read-out, over {len(sweep.seeds)} seeds:")
    claims = [(near_chance_verdict(single, K), f"single nodes classify near chance (P-M): single-node accuracy "
               f"{single.fmt(100, 1)} % (supported below 2/K = {200 / K:.0f} %)"),
              (single_label_verdict(top), f"a node picks mostly one label (P-M): top-label fraction "
               f"{top.fmt(100, 1)} % (supported above 50 %)"),
              (small_clusters_verdict(labels, K), f"nodes see small clusters (P-T): labels in clusters per node "
               f"{labels.fmt()} (supported below K/4 = {K / 4:g}, contradicted above K/2)"),
              ("supported" if follows_groups else "not shown", "clusters follow a label group more than chance")]
    for verdict, text in claims:
        print(f"  {(verdict if len(sweep.seeds) > 1 else 'no interval').upper():<13} {text}")
    return sane


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_material_args(ap)
    ap.add_argument("--site", default="out", choices=["out", "mha_heads", "mha_out", "ff_hidden"])
    ap.add_argument("--threshold", type=float, default=0.3, help="AFCC threshold (docs/method.md §3)")
    ap.add_argument("--epochs", type=int, default=10, help="read-out training epochs (authors: 200)")
    ap.add_argument("--modes", default="flat,mean,seqpool", help="read-outs: flat (the authors'), mean, seqpool")
    ap.add_argument("--seed", type=int, default=0, help="first read-out seed")
    ap.add_argument("--seeds", type=int, default=3, help="read-out seeds (>= 3 for useful intervals)")
    ap.add_argument("--null-draws", type=int, default=NULL_DRAWS,
                    help=f"label-permutation runs per seed (default {NULL_DRAWS}; 0 = no null)")
    ap.add_argument("--out", default="runs/03_snp", help="folder for the figures")
    args = ap.parse_args(argv)

    clock = Clock()
    m = load_material(args)
    site = Site(m.cfg.num_layers - 1, args.site)                                   # the last encoder
    clock.step(f"Step by step, {site.label()}, flat read-out:")
    step_by_step(m, site, args)
    clock.step(f"The same for the tokenizer and every encoder: {len(args.modes.split(','))} read-outs x "
               f"{args.seeds} seeds x {m.cfg.num_layers + 1} positions, and {args.null_draws} null draw(s) per seed ...")
    sweep = sweep_encoders(m, args)
    print_table(sweep, m.data.num_classes, args)
    last = one_node(sweep, m.data.class_names)
    follows = clusters_vs_groups(sweep, last, m.data, args.seed)
    sane = check_claims(sweep, last, m.data.num_classes, follows)
    print(f"\nfigures (open {args.out}/along_encoders.png first): " + ", ".join(map(str, sweep.report.figures)))
    clock.step("done")
    return 0 if sane else 1


if __name__ == "__main__":
    sys.exit(main())
