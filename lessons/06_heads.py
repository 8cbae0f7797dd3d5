"""Lesson 06: do the attention heads specialise on labels? (the multi-head "modus vivendi" of Koresh et al. 2025)

The paper's abstract: "spontaneous symmetry breaking occurs among the MHA heads, such that each head focuses
its attention on a subset of labels through cooperation among its SNPs. Consequently, each head becomes an
expert in recognizing its designated labels". Its per-head metric is not in the parts available to this
project; what follows is this project's operationalisation [INF] built on the authors' SNP steps [CODE]:

  nodes      The MHA nodes of an encoder are the D = h x d coordinates of the concatenated per-head outputs
             attn @ v, before the output projection (site mha_heads); node n belongs to head n // d [INF].
  SNP        A bias-free read-out on the flattened tokens, node fields per true label, max-normalised,
             thresholded at 0.3 -> B_n [CODE, as lesson 03].
  counts     c_h(j) = number of head h's nodes with B_n[j, j] = 1; designated labels of head h: the labels
             where head h has the most such nodes (ties: every head at the max) [INF].
  SHP        Single-head performance (P-L): all read-out weights silenced except head h's nodes; the field
             matrix is then the sum of its nodes' matrices, normalised / thresholded / clustered as a node's [INF].
  metrics    Jaccard overlap of the heads' designated sets, coverage, heads per label, and the specialisation
             index SI = mean_j max_h c_h(j) / sum_h c_h(j) (1: each label seen by one head; 1/h: all alike) [INF].
  nulls      Real heads against random partitions of the same D nodes into groups of d (the shuffled-node
             control), with each statistic averaged over the read-out seeds: SI (higher = specialised) and the
             number of heads whose SHP diagonal holds a label (fewer = specialised; P-L: "each label being
             explicitly recognized by a few heads"); one-sided p = (1 + hits) / (1 + draws), Holm over encoders.
  causal     Zero head h's slice of attn @ v in the trained model and measure the per-label test accuracy drop:
             larger on the head's designated labels than on the others? One-sided permutation p over random
             label sets of the same size, Holm over all heads, and the minimum detectable gap printed, so that
             "not significant" can be read against what this test could have seen [INF].
Several read-out seeds (--seeds): node label sets move from seed to seed; the designated labels use the counts
summed over seeds. Heads are counted from 0 within an encoder ("head 0" .. "head h-1"), encoders from 1.
The material's 4-head classroom CCT is the default model. `python -m minicct replicate` gives the same
verdicts with more seeds.

Run:  python lessons/06_heads.py  [--material real|embedded] [--seeds 3] [--epochs 3] [--n-train 2000]
      [--shuffles 200] [--n-perm 2000] [--fields-on test|train] [--out runs/06_heads]
Exit code 0 when it ran; the verdict lines report what was measured, whichever way it goes.
"""
import _common  # noqa: F401  (first: one BLAS thread, minicct importable from a checkout)

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _common import Clock, add_material_args, load_material
from minicct.analysis import interventions
from minicct.analysis.clusters import node_labels
from minicct.analysis.heads import designated_labels, head_metrics, partition_counts, shp_label_sets
from minicct.analysis.nulls import holm
from minicct.analysis.replicate import head_ablation_tests, head_null_tests
from minicct.analysis.report import analyse_site, capture
from minicct.analysis.snp import node_fields, normalise_threshold
from minicct.parallel import predict
from minicct.plots import plot_head_label_sets
from minicct.sites import Site


@dataclass
class Captured:
    """The MHA nodes of every encoder (+ what the ablations need on the test images)."""
    train: dict             # capture name -> [N, T, D]
    test: dict
    y_train: np.ndarray
    y_test: np.ndarray
    full_logits: np.ndarray     # [N, K] the unmodified model on the test images
    acc_model: float


@dataclass
class HeadSNP:
    """The SNP of every encoder's MHA nodes, per read-out seed (lists indexed [encoder][seed])."""
    label_sets: list        # node label sets [D, K] bool
    fields: list            # node fields V [D, K, K]
    readout_acc: list       # read-out test accuracy


@dataclass
class NullTests:
    """Real heads against random node partitions, per encoder; p-values Holm-adjusted over the encoders."""
    si: list                # dicts: observed, null_mean, null_sd, p_value
    si_holm: np.ndarray
    shp: list
    shp_holm: np.ndarray


@dataclass
class EncoderHeads:
    """What one encoder's heads see: counts c_h(j), designated labels, metrics, single-head diagonal sets."""
    counts: np.ndarray      # [h, K] summed over seeds
    designated: np.ndarray  # [h, K] bool, by the --designation rule
    metrics: dict
    shp_sets: np.ndarray    # [h, K] bool, first seed


def capture_heads(m, args) -> Captured:
    L, n = m.cfg.num_layers, args.n_train or None
    heads = [Site(e, "mha_heads").name for e in range(L)]
    A_tr = capture(m.params, m.cfg, m.data.x_train[:n], m.data.mean, m.data.std, heads)
    A_te = capture(m.params, m.cfg, m.data.x_test, m.data.mean, m.data.std,
                   ["tokens"] + heads + [Site(e, "out").name for e in range(L - 1)])
    logits = predict(m.params, interventions.encoder_input(m.params, m.cfg, A_te, 0), m.cfg, 500, start_encoder=0)
    return Captured(A_tr, A_te, m.data.y_train[:n], m.data.y_test, logits,
                    float((logits.argmax(1) == m.data.y_test).mean()))


def head_snp(m, c: Captured, seeds, args) -> HeadSNP:
    """A flat read-out of every encoder's MHA nodes for every seed: node label sets and fields."""
    L, K = m.cfg.num_layers, m.cfg.num_classes
    snp = HeadSNP([[] for _ in range(L)], [[] for _ in range(L)], [[] for _ in range(L)])
    for seed in seeds:
        for e in range(L):
            name = Site(e, "mha_heads").name
            r = analyse_site(c.train[name], c.y_train, c.test[name], c.y_test, K, "flat", args.epochs,
                             args.threshold, seed, name)
            V = r.V if args.fields_on == "test" else node_fields(c.train[name], c.y_train, r.readout.W, K)
            B = r.B if args.fields_on == "test" else normalise_threshold(V, args.threshold)
            snp.label_sets[e].append(node_labels(B))
            snp.fields[e].append(V)
            snp.readout_acc[e].append(r.accuracy)
    return snp


def null_tests(snp: HeadSNP, d, args) -> NullTests:
    si, shp = head_null_tests(snp.label_sets, snp.fields, d, args.threshold, args.shuffles, seed=args.seed)
    return NullTests(si, holm([r["p_value"] for r in si])[0], shp, holm([r["p_value"] for r in shp])[0])


def encoder_heads(snp: HeadSNP, e, cfg, args) -> EncoderHeads:
    groups = np.arange(cfg.embedding_dim).reshape(cfg.num_heads, cfg.head_dim)       # node n -> head n // d
    c = sum(partition_counts(Lx, groups) for Lx in snp.label_sets[e])                 # [h, K]
    designated = designated_labels(c, rule=args.designation)
    return EncoderHeads(c, designated, head_metrics(c, designated),
                        shp_label_sets(snp.fields[e][0], groups, args.threshold))


def print_legend(L, n_seeds, args):
    print(f"\nPer encoder: SI = specialisation index, SHP heads/label = heads whose single-head diagonal holds a "
          f"label (both averaged over {n_seeds} seeds),\nagainst {args.shuffles} random partitions of the nodes into "
          f"heads (mean +- sd, one-sided p, Holm over {L} encoders).\nPer head: labels seen = labels on the diagonal "
          f"of >= 1 of its nodes (summed over seeds); designated = by the '{args.designation}' rule; SHP diag = "
          f"diagonal labels of the single-head matrix (first seed);\nacc drop = whole-model test accuracy lost when "
          f"the head is zeroed; gap = mean per-label drop on its designated labels ('max' rule) minus on the others; "
          f"p = permutation p; p_Holm over all heads.\n")


def print_encoder(e, eh: EncoderHeads, snp: HeadSNP, nulls: NullTests, ablation, names, h):
    si, sh, m = nulls.si[e], nulls.shp[e], eh.metrics
    print(f"encoder {e + 1}: mha_heads read-out {100 * np.mean(snp.readout_acc[e]):.1f}% (mean of "
          f"{len(snp.readout_acc[e])} seeds)")
    print(f"  SI {si['observed']:.3f} vs random partitions {si['null_mean']:.3f} +- {si['null_sd']:.3f} "
          f"(p {si['p_value']:.3f}, p_Holm {nulls.si_holm[e]:.3f}; 1/h = {1 / h:.3f});  SHP heads/label "
          f"{sh['observed']:.2f} vs {sh['null_mean']:.2f} +- {sh['null_sd']:.2f} (p {sh['p_value']:.3f}, "
          f"p_Holm {nulls.shp_holm[e]:.3f})")
    print(f"  mean Jaccard of designated sets {m['mean_jaccard']:.2f};  coverage {m['coverage']:.2f};  "
          f"heads per covered label {m['mean_heads_per_label']:.2f}")
    print(f"  {'head':<6}{'labels seen':>12}{'designated':>11}{'SHP diag':>9} | {'acc drop':>9}{'gap':>8}"
          f"{'p':>7}{'p_Holm':>8}")
    for g in range(h):
        i = e * h + g
        print(f"  {g:<6}{int((eh.counts[g] > 0).sum()):>12}{int(eh.designated[g].sum()):>11}"
              f"{int(eh.shp_sets[g].sum()):>9} | {100 * ablation['acc_drop'][i]:>8.1f}%{100 * ablation['gap'][i]:>7.1f}%"
              f"{ablation['p'][i]:>7.3f}{ablation['p_holm'][i]:>8.3f}")
    for g in range(h):
        print(f"    head {g} designated: {', '.join(names[j] for j in np.flatnonzero(eh.designated[g])) or '-'}")
    print()


def print_verdicts(nulls: NullTests, ablation, L):
    n_heads, n_sig = ablation["m"], sum(ablation["reject"])
    si_sig, shp_sig = sum(p <= 0.05 for p in nulls.si_holm), sum(p <= 0.05 for p in nulls.shp_holm)
    print("verdicts (measured in this run; rules stated before the numbers):")
    print(f"  - specialisation index above random partitions (Holm p <= 0.05): {si_sig} of {L} encoders")
    print(f"  - fewer heads per label (SHP) than random partitions (Holm p <= 0.05): {shp_sig} of {L} encoders")
    print(f"  - zeroing a head costs its designated labels more than the others: gap > 0 in "
          f"{ablation['n_positive']} of {n_heads} heads, significant after Holm in {n_sig} of {n_heads}; this test "
          f"detects a gap of {100 * ablation['mde']:.1f} points with 80 % power (alpha 0.05/{n_heads})")
    supported = si_sig > L / 2 and n_sig > n_heads / 2
    print(f"  => head specialisation ('modus vivendi') is {'SUPPORTED' if supported else 'NOT supported'} by this "
          f"checkpoint (needed: a majority of encoders in the SI test and of heads in the ablation test)")


def main(argv=None):
    args = parse_args(argv)
    clock = Clock()
    m = load_material(args, heads=4)
    K, L, h, d = m.cfg.num_classes, m.cfg.num_layers, m.cfg.num_heads, m.cfg.head_dim
    if m.data.num_classes != K:
        raise SystemExit(f"dataset {m.data.name} has {m.data.num_classes} classes, the checkpoint {K}")
    if h < 2:
        print("this model has a single head per encoder: there is nothing to specialise between heads")
        return 0
    seeds = list(range(args.seed, args.seed + args.seeds))
    print(f"heads of d = {d} nodes; read-outs of {args.epochs} epochs on {len(m.data.y_train[:args.n_train or None])} "
          f"training images, seeds {seeds}; node fields on the {args.fields_on} images; ablations on "
          f"{len(m.data.y_test)} test images")
    clock.step(f"capturing the MHA nodes of the {L} encoders ...")
    c = capture_heads(m, args)
    print(f"whole model: test accuracy {100 * c.acc_model:.1f}%")
    clock.step(f"{len(seeds) * L} read-outs of the MHA nodes ({len(seeds)} seeds x {L} encoders) ...")
    snp = head_snp(m, c, seeds, args)
    clock.step(f"the heads against {args.shuffles} random node partitions, and {L * h} head ablations "
               f"({args.n_perm} random label sets each) ...")
    nulls = null_tests(snp, d, args)
    ablation = head_ablation_tests(m.params, m.cfg, m.data, snp.label_sets, c.full_logits, c.test, args.n_perm,
                                   seed=args.seed)
    print_legend(L, len(seeds), args)
    encoders = [encoder_heads(snp, e, m.cfg, args) for e in range(L)]
    for e, eh in enumerate(encoders):
        print_encoder(e, eh, snp, nulls, ablation, m.data.class_names, h)
    fig = plot_head_label_sets([eh.counts for eh in encoders], m.data.class_names,
                               Path(args.out) / "head_label_sets.png", designated=[eh.designated for eh in encoders],
                               titles=[f"encoder {e + 1}: c_h(j), designated framed" for e in range(L)],
                               title=f"head label counts from the SNP of the MHA nodes (threshold {args.threshold})")
    print(f"figure: {fig}  (per encoder: how many of each head's nodes hold each label)\n")
    print_verdicts(nulls, ablation, L)
    print(f"done in {clock.total():.0f} s")
    return 0


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_material_args(ap, heads=4)
    ap.add_argument("--seeds", type=int, default=3, help="read-out seeds (>= 2 for intervals)")
    ap.add_argument("--epochs", type=int, default=3, help="read-out training epochs (authors: 200)")
    ap.add_argument("--n-train", type=int, default=2000, help="training images for the read-outs (0: all)")
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--designation", default="max", choices=["max", "threshold"],
                    help="designated labels (table only): the heads with the most nodes (max) or every head with >= 1")
    ap.add_argument("--shuffles", type=int, default=200, help="random node partitions (shuffled-node control, >= 20)")
    ap.add_argument("--n-perm", type=int, default=2000, help="random label sets for the ablation p-value")
    ap.add_argument("--fields-on", default="test", choices=["test", "train"],
                    help="images for the node fields (authors: test; train keeps the ablation test held out)")
    ap.add_argument("--seed", type=int, default=0, help="first read-out seed; also seeds the nulls")
    ap.add_argument("--out", default="runs/06_heads", help="folder for the figure")
    args = ap.parse_args(argv)
    if args.shuffles < 20:
        ap.error("--shuffles must be at least 20 (mean and spread of the control)")
    return args


if __name__ == "__main__":
    sys.exit(main())
