"""Lesson 06: do the attention heads specialise on labels? (the multi-head "modus vivendi" of Koresh et al. 2025)

The paper's abstract: "spontaneous symmetry breaking occurs among the MHA heads, such that each head focuses
its attention on a subset of labels through cooperation among its SNPs. Consequently, each head becomes an
expert in recognizing its designated labels". Its per-head metric is not in the parts available to this
project; what follows is this project's operationalisation [INF] built on the authors' SNP steps [CODE]:

  nodes      The MHA nodes of encoder e are the D = h x d coordinates of the concatenated per-head outputs
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
summed over seeds. `python -m minicct replicate` gives the same verdicts with more seeds.

Run:  python lessons/06_heads.py  [--checkpoint PATH] [--seeds 3] [--epochs 3] [--n-train 2000] [--shuffles 200]
      [--n-perm 2000] [--fields-on test|train] [--out runs/06_heads]
Exit code 0 when it ran; the verdict lines report what was measured, whichever way it goes.
"""
import argparse
import os
import sys
import time
from pathlib import Path

# One OpenBLAS thread: on a shared 2-core machine a second thread stalls the many small products of the
# forward pass (measured: 5 vs 230 images/s while training). Set before NumPy loads; your own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

import numpy as np  # noqa: E402

from minicct.analysis import interventions as I  # noqa: E402
from minicct.analysis.clusters import node_labels  # noqa: E402
from minicct.analysis.heads import designated_labels, head_metrics, partition_counts, shp_label_sets  # noqa: E402
from minicct.analysis.nulls import holm  # noqa: E402
from minicct.analysis.replicate import head_ablation_tests, head_null_tests  # noqa: E402
from minicct.analysis.report import analyse_site, capture  # noqa: E402
from minicct.analysis.snp import node_fields, normalise_threshold  # noqa: E402
from minicct.datasets import load  # noqa: E402
from minicct.parallel import predict  # noqa: E402
from minicct.plots import plot_head_label_sets  # noqa: E402
from minicct.io.checkpoints import load_any_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "data" / "checkpoints" / "classroom.npz"))
    ap.add_argument("--dataset", default="embedded")
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
        raise SystemExit("--shuffles must be at least 20 (mean and spread of the control)")

    t0 = time.time()
    params, cfg, meta = load_any_checkpoint(args.checkpoint)   # .npz, .pth or training checkpoint
    data = load(args.dataset)
    if data.num_classes != cfg.num_classes:
        raise SystemExit(f"dataset {data.name} has {data.num_classes} classes, the checkpoint {cfg.num_classes}")
    K, L, h, d = cfg.num_classes, cfg.num_layers, cfg.num_heads, cfg.head_dim
    seeds = list(range(args.seed, args.seed + args.seeds))
    names = data.class_names
    n_train = args.n_train or None
    x_tr, y_tr, y_te = data.x_train[:n_train], data.y_train[:n_train], data.y_test
    print(__doc__.split("Run:")[0])
    print(f"checkpoint {args.checkpoint}: {L} encoders x {h} heads of d={d} (D={cfg.embedding_dim}), "
          f"{meta.get('dataset')}, {meta.get('epochs')} epochs")
    print(f"dataset {data.name}: read-outs on {len(y_tr)} training images, {args.epochs} epochs, seeds {seeds}; node "
          f"fields on the {args.fields_on} images; ablations on {len(y_te)} test images\n")
    if h < 2:
        print("this model has a single head per encoder: there is nothing to specialise between heads")
        return 0

    heads_sites = [f"enc{e}.mha_heads" for e in range(L)]
    A_tr = capture(params, cfg, x_tr, data.mean, data.std, heads_sites)
    A_te = capture(params, cfg, data.x_test, data.mean, data.std,
                   ["tokens"] + heads_sites + [f"enc{e}.out" for e in range(L - 1)])
    full_logits = predict(params, I.encoder_input(params, cfg, A_te, 0), cfg, 500, start_encoder=0)
    acc_model = float((full_logits.argmax(1) == y_te).mean())
    print(f"whole model: test accuracy {100 * acc_model:.1f}%  [captured in {time.time() - t0:.0f} s]\n")

    # node label sets and fields of every encoder's MHA nodes, for every read-out seed
    heads_L, heads_V, ro_acc = [[] for _ in range(L)], [[] for _ in range(L)], [[] for _ in range(L)]
    for seed in seeds:
        for e in range(L):
            r = analyse_site(A_tr[heads_sites[e]], y_tr, A_te[heads_sites[e]], y_te, K, "flat", args.epochs,
                             args.threshold, seed, heads_sites[e])
            V = r.V if args.fields_on == "test" else node_fields(A_tr[heads_sites[e]], y_tr, r.readout.W, K)
            B = r.B if args.fields_on == "test" else normalise_threshold(V, args.threshold)
            heads_L[e].append(node_labels(B))
            heads_V[e].append(V)
            ro_acc[e].append(r.accuracy)
    si_res, shp_res = head_null_tests(heads_L, heads_V, d, args.threshold, args.shuffles, seed=args.seed)
    si_holm, _ = holm([r["p_value"] for r in si_res])
    shp_holm, _ = holm([r["p_value"] for r in shp_res])
    abl = head_ablation_tests(params, cfg, data, heads_L, full_logits, A_te, args.n_perm, seed=args.seed)

    print("Per encoder: SI = specialisation index, SHP heads/label = heads whose single-head diagonal holds a label\n"
          f"(both averaged over {len(seeds)} seeds) against {args.shuffles} random partitions of the nodes into heads "
          f"(mean +- sd, one-sided p, Holm over {L} encoders).\nPer head: labels seen = labels on the diagonal of >= 1 "
          f"of its nodes (summed over seeds); designated = its labels by the '{args.designation}' rule;\n"
          "SHP diag = diagonal labels of the single-head matrix (first seed); acc drop = whole-model test accuracy lost "
          "when the head is zeroed;\ngap = mean per-label drop on its designated labels ('max' rule) minus on the "
          "others; p = permutation p; p_Holm over all heads.\n")
    counts, desig = [], []
    for e in range(L):
        c = sum(partition_counts(Lx, np.arange(cfg.embedding_dim).reshape(h, d)) for Lx in heads_L[e])   # [h, K]
        Ld = designated_labels(c, rule=args.designation)
        m = head_metrics(c, Ld)
        counts.append(c)
        desig.append(Ld)
        shp_sets = shp_label_sets(heads_V[e][0], np.arange(cfg.embedding_dim).reshape(h, d), args.threshold)
        si, sh = si_res[e], shp_res[e]
        print(f"encoder {e + 1}: mha_heads read-out {100 * np.mean(ro_acc[e]):.1f}% (mean of {len(seeds)} seeds)")
        print(f"  SI {si['observed']:.3f} vs random partitions {si['null_mean']:.3f} +- {si['null_sd']:.3f} "
              f"(p {si['p_value']:.3f}, p_Holm {si_holm[e]:.3f}; 1/h = {1 / h:.3f});  SHP heads/label "
              f"{sh['observed']:.2f} vs {sh['null_mean']:.2f} +- {sh['null_sd']:.2f} (p {sh['p_value']:.3f}, "
              f"p_Holm {shp_holm[e]:.3f})")
        print(f"  mean Jaccard of designated sets {m['mean_jaccard']:.2f};  coverage {m['coverage']:.2f};  "
              f"heads per covered label {m['mean_heads_per_label']:.2f}")
        print(f"  {'head':<6}{'labels seen':>12}{'designated':>11}{'SHP diag':>9} | {'acc drop':>9}{'gap':>8}"
              f"{'p':>7}{'p_Holm':>8}")
        for g in range(h):
            i = e * h + g
            print(f"  {g:<6}{int((c[g] > 0).sum()):>12}{int(Ld[g].sum()):>11}{int(shp_sets[g].sum()):>9} | "
                  f"{100 * abl['acc_drop'][i]:>8.1f}%{100 * abl['gap'][i]:>7.1f}%{abl['p'][i]:>7.3f}"
                  f"{abl['p_holm'][i]:>8.3f}")
        for g in range(h):
            lab = ", ".join(names[j] for j in np.flatnonzero(Ld[g]))
            print(f"    head {g} designated: {lab or '-'}")
        print(f"  [{time.time() - t0:.0f} s]\n", flush=True)

    fig = plot_head_label_sets(counts, names, Path(args.out) / "head_label_sets.png", designated=desig,
                               titles=[f"encoder {e + 1}: c_h(j), designated framed" for e in range(L)],
                               title=f"head label counts from the SNP of the MHA nodes (threshold {args.threshold})")
    print(f"figure: {fig}\n")
    n_heads, n_sig = abl["m"], sum(abl["reject"])
    si_sig = sum(p <= 0.05 for p in si_holm)
    shp_sig = sum(p <= 0.05 for p in shp_holm)
    print("verdicts (measured in this run; rules stated before the numbers):")
    print(f"  - specialisation index above random partitions (Holm p <= 0.05): {si_sig} of {L} encoders")
    print(f"  - fewer heads per label (SHP) than random partitions (Holm p <= 0.05): {shp_sig} of {L} encoders")
    print(f"  - zeroing a head costs its designated labels more than the others: gap > 0 in {abl['n_positive']} of "
          f"{n_heads} heads, significant after Holm in {n_sig} of {n_heads}; this test detects a gap of "
          f"{100 * abl['mde']:.1f} points with 80 % power (alpha 0.05/{n_heads})")
    supported = si_sig > L / 2 and n_sig > n_heads / 2
    print(f"  => head specialisation ('modus vivendi') is {'SUPPORTED' if supported else 'NOT supported'} by this "
          f"checkpoint (needed: a majority of encoders in the SI test and of heads in the ablation test)")
    print(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
