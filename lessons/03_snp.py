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
CCT's own head) [the last two: INF].
Then: one node's clusters with label names, and whether the clusters follow the dataset's ground-truth groups
(shape, colour family, layout) more often than chance (label-permutation p-value, Holm over the groupings).
Every read-out is trained afresh for each of --seeds seeds; the table shows mean [95 % interval over seeds] and
the checks at the end are decided on those intervals (minicct.analysis.stats), not on one seed.

Run:  python lessons/03_snp.py  [--site out|mha_heads|ff_hidden|mha_out] [--threshold 0.3] [--checkpoint PATH]
      [--dataset embedded|cifar100|...] [--seeds 3] [--epochs 10] [--n-train N] [--out runs/03_snp]
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

import numpy as np  # noqa: E402

from minicct.analysis.clusters import greedy_clusters, node_noise, node_signal, snr  # noqa: E402
from minicct.analysis.nulls import group_permutation_test, holm  # noqa: E402
from minicct.analysis.replicate import (format_positions_table, near_chance_verdict, positions_summary,
                                       seeded_snp, single_label_verdict, small_clusters_verdict)  # noqa: E402
from minicct.analysis.readout import train_readout  # noqa: E402
from minicct.analysis.report import capture, group_agreement  # noqa: E402
from minicct.analysis.snp import node_fields, normalise_threshold  # noqa: E402
from minicct.analysis.stats import summarise  # noqa: E402
from minicct.datasets import load  # noqa: E402
from minicct.plots import pick_node  # noqa: E402
from minicct.io.checkpoints import load_any_checkpoint  # noqa: E402
from minicct.sites import Site, site_names  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def one_site_step_by_step(A_tr, y_tr, A_te, y_te, K, site, args, trained=None):
    """Steps 2-6 of the docstring for one site, each a named call, printing what it produced.

    trained: this very read-out if already trained (seeded_snp trains it: same activations, seed and epochs).
    """
    print(f"Step by step, {site.label()} (capture name {site.name!r}), flat read-out:")
    print(f"  1. capture               A_train {A_tr.shape}, A_test {A_te.shape}   [N, T, D]")
    ro = trained if trained is not None else \
        train_readout(A_tr, y_tr, K, epochs=args.epochs, seed=args.seed, A_test=A_te, y_test=y_te)
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
    ap.add_argument("--seed", type=int, default=0, help="first read-out seed")
    ap.add_argument("--seeds", type=int, default=3, help="read-out seeds (>= 2 for intervals)")
    ap.add_argument("--out", default="runs/03_snp", help="folder for the figures")
    args = ap.parse_args(argv)

    t0 = time.time()
    params, cfg, meta = load_any_checkpoint(args.checkpoint)   # .npz, .pth or training checkpoint
    data = load(args.dataset)
    print(f"checkpoint {args.checkpoint}: {cfg.num_layers} encoders x {cfg.num_heads} heads, D={cfg.embedding_dim}, "
          f"test accuracy {100 * meta.get('test_acc', float('nan')):.1f}% ({meta.get('dataset')}, "
          f"{meta.get('epochs')} epochs, seed {meta.get('seed')})")
    print(f"dataset {data.name}: {len(data.y_train)} train / {len(data.y_test)} test images, {data.num_classes} labels\n")

    modes = tuple(args.modes.split(","))
    seeds = list(range(args.seed, args.seed + args.seeds))
    K = data.num_classes
    x_tr, y_tr, x_te, y_te = data.x_train[:args.n_train], data.y_train[:args.n_train], data.x_test, data.y_test
    names = site_names(cfg.num_layers, (args.site,))                       # ["tokens", "enc0.out", ...]
    t_capture = time.time()
    A_tr = capture(params, cfg, x_tr, data.mean, data.std, names)          # {name: [N, T, D]}, one forward pass
    A_te = capture(params, cfg, x_te, data.mean, data.std, names)
    t_capture, n_sites = time.time() - t_capture, len(names)
    site = Site(cfg.num_layers - 1, args.site)                             # the last encoder
    # every read-out of the sweep below at once (on both cores); its flat read-out of this site with the first
    # seed is the step-by-step one, so it is trained once
    t_sweep = time.time()
    vals, rep, kept = seeded_snp(params, cfg, data, site=args.site, modes=modes, seeds=seeds, epochs=args.epochs,
                                 threshold=args.threshold, n_train=args.n_train, out_dir=args.out,
                                 acts=(A_tr, A_te))
    t_sweep = time.time() - t_sweep
    same = kept.get((args.seed, site.name, "flat"))
    one_site_step_by_step(A_tr[site.name], y_tr, A_te[site.name], y_te, K, site, args,
                          trained=same.readout if same is not None else None)

    print(f"The same for the tokenizer and every encoder, {len(modes)} read-outs, {len(seeds)} read-out seeds "
          f"(replicate.seeded_snp):")

    print(f"\nPer-encoder SNP at site '{args.site}' (threshold {args.threshold}; K = {K} labels; encoder 0 = "
          f"tokenizer output), mean [95 % interval over {len(seeds)} read-out seeds].\nread-out accuracy = test "
          f"accuracy of the read-out; clusters per node; cluster size = mean size; labels in clusters per node;\n"
          f"noise = ones outside the cluster blocks per node (nodes with a cluster); SNR = <signal>/<noise>; "
          f"single-node accuracy (chance {100 / K:.0f}%);\ntop-label fraction = images on which a node picks its "
          f"most frequent label\n")
    pos = positions_summary(vals)
    for mode in modes:
        print(format_positions_table(pos, mode, ("accuracy", "clusters_per_node", "cluster_size", "labels_in_clusters",
                                                 "noise", "snr", "single_node_accuracy", "single_node_top_fraction")))

    # one node's clusters, by name: the last encoder, authors' read-out
    last = [r for r in rep.results if r.mode == modes[0]][-1]
    n = pick_node(last)
    names = data.class_names
    where = last.site.label()
    print(f"\nNode {n} of {where}, {last.mode} read-out: {len(last.stats.clusters[n])} clusters, "
          f"noise {last.stats.noise[n]}, picks label '{names[last.single['top_label'][n]]}' for "
          f"{100 * last.single['top_fraction'][n]:.0f}% of the test images")
    for c in sorted(last.stats.clusters[n], key=len, reverse=True):
        print(f"   {{{', '.join(names[i] for i in c)}}}")

    # clusters against the ground-truth groups
    ok_groups = False
    if data.groups:
        print(f"\nMulti-label clusters whose labels all share one ground-truth group ({modes[0]} read-out, first "
              f"seed), against chance\n(chance = same-size random label sets, exact):")
        print(f"{'encoder':<10}" + "".join(f"{g:>26}" for g in data.groups))
        for p, r in enumerate([r for r in rep.results if r.mode == modes[0]]):
            agree = group_agreement([c for node in r.stats.clusters for c in node], data.groups,
                                    permutation=False)     # fractions only; the test is on the pooled seeds below
            cells = "".join(f"{100 * a['inside']:7.1f}% vs {100 * a['chance']:5.1f}% (n={a['n']:4d})"
                            for a in agree.values())
            print(f"{p:<10}{cells}")
        pooled = [c for seed in seeds for node in kept[(seed, last.name, last.mode)].stats.clusters for c in node]
        tests = {g: group_permutation_test(pooled, np.asarray(gv), seed=args.seed) for g, gv in data.groups.items()}
        p_holm, reject = holm([t["p_value"] for t in tests.values()])
        print(f"last encoder, clusters of all {len(seeds)} seeds pooled, one-sided label-permutation p (Holm over "
              f"{len(tests)} groupings): " + ", ".join(f"{g} {100 * t['fraction']:.0f}% vs {100 * t['null_mean']:.0f}%"
                                                      f" p_Holm = {p:.2g}" for (g, t), p in zip(tests.items(), p_holm)))
        above = [g for g, r in zip(tests, reject) if r]
        print(f"last encoder: clusters follow {', '.join(above) or 'no group'} more often than chance (Holm p <= 0.05)")
        ok_groups = bool(above)

    print("\nfigures:")
    for f in rep.figures:
        print(f"  {f}")
    ci = lambda q: summarise(vals[last.mode][q][:, -1])              # last encoder, over seeds
    acc, single, top, lab = ci("accuracy"), ci("single_node_accuracy"), ci("single_node_top_fraction"), \
        ci("labels_in_clusters")
    print(f"\nsanity check (measured in this run; the lesson fails if it fails):")
    sane = (acc.lo if np.isfinite(acc.lo) else acc.mean) > 3 / K
    print(f"  {'PASS' if sane else 'FAIL'}  read-out of the last encoder well above chance: {acc.fmt(100, 1)} % "
          f"(interval above {300 / K:.0f} %)")
    print(f"claims, last encoder, {last.mode} read-out, decided on the interval over {len(seeds)} seeds:")
    claims = {     # the rules of the claims table (replicate.py), three-valued: supported / contradicted / inconclusive
        "single nodes classify near chance (P-M): single-node accuracy below 2/K = "
        f"{200 / K:.0f} % (above: contradicted): {single.fmt(100, 1)} %": near_chance_verdict(single, K),
        "a node picks mostly one label (P-M: 'selects a single output label'): top-label fraction above 50 % "
        f"(below: contradicted): {top.fmt(100, 1)} %": single_label_verdict(top),
        f"nodes see small clusters (P-T): labels in clusters per node below K/4 = {K / 4:g} (above K/2 = {K / 2:g}: "
        f"contradicted): {lab.fmt()}": small_clusters_verdict(lab, K),
    }
    if data.groups:
        claims["clusters follow at least one ground-truth group more than chance (label permutation, Holm)"] = \
            "supported" if ok_groups else "not shown"
    for text, verdict in claims.items():
        word = verdict if len(seeds) > 1 or "ground-truth" in text else "no interval"
        print(f"  {word.upper():<13} {text}")
    print(f"done in {time.time() - t0:.0f} s (capture of {len(y_tr) + len(y_te)} images at {n_sites} sites "
          f"{t_capture:.1f} s; {len(seeds) * n_sites * len(modes)} read-outs and the figures {t_sweep:.1f} s)")
    return 0 if sane else 1


if __name__ == "__main__":
    sys.exit(main())
