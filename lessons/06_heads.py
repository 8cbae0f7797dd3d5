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
             index SI = mean_j max_h c_h(j) / sum_h c_h(j) (1: each label seen by one head; 1/h: all alike),
             against a shuffled-node control (nodes reassigned to heads at random, head sizes kept) [INF].
  causal     Zero head h's slice of attn @ v in the trained model and measure the per-label test accuracy drop:
             larger on the head's designated labels than on the others? (one-sided permutation p over random
             label sets of the same size) [INF].

Run:  python lessons/06_heads.py  [--checkpoint PATH] [--epochs 3] [--n-train 2000] [--shuffles 50]
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
from minicct.analysis.clusters import node_stats  # noqa: E402
from minicct.analysis.heads import (designated_labels, head_fields, head_label_counts, head_metrics,  # noqa: E402
                                    shuffled_control)
from minicct.analysis.report import analyse_site, capture  # noqa: E402
from minicct.model import predict  # noqa: E402
from minicct.analysis.snp import node_fields, normalise_threshold  # noqa: E402
from minicct.datasets import load  # noqa: E402
from minicct.plots import plot_head_label_sets  # noqa: E402
from minicct.train.checkpoint import load_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def jaccard(a, b):
    u = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / u if u else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "data" / "checkpoints" / "classroom.npz"))
    ap.add_argument("--dataset", default="embedded")
    ap.add_argument("--epochs", type=int, default=3, help="read-out training epochs (authors: 200)")
    ap.add_argument("--n-train", type=int, default=2000, help="training images for the read-outs (0: all)")
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--designation", default="max", choices=["max", "threshold"],
                    help="designated labels: the heads with the most nodes (max) or every head with >= 1")
    ap.add_argument("--shuffles", type=int, default=50, help="shuffled-node controls (>= 20)")
    ap.add_argument("--n-perm", type=int, default=2000, help="random label sets for the ablation p-value")
    ap.add_argument("--fields-on", default="test", choices=["test", "train"],
                    help="images for the node fields (authors: test; train keeps the ablation test held out)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/06_heads", help="folder for the figure")
    args = ap.parse_args(argv)
    if args.shuffles < 20:
        raise SystemExit("--shuffles must be at least 20 (mean and spread of the control)")

    t0 = time.time()
    params, cfg, meta, _ = load_checkpoint(args.checkpoint)
    data = load(args.dataset)
    if data.num_classes != cfg.num_classes:
        raise SystemExit(f"dataset {data.name} has {data.num_classes} classes, the checkpoint {cfg.num_classes}")
    K, L, h, d = cfg.num_classes, cfg.num_layers, cfg.num_heads, cfg.head_dim
    names = data.class_names
    n_train = args.n_train or None
    x_tr, y_tr, y_te = data.x_train[:n_train], data.y_train[:n_train], data.y_test
    print(__doc__.split("Run:")[0])
    print(f"checkpoint {args.checkpoint}: {L} encoders x {h} heads of d={d} (D={cfg.embedding_dim}), "
          f"{meta.get('dataset')}, {meta.get('epochs')} epochs")
    print(f"dataset {data.name}: read-outs on {len(y_tr)} training images, {args.epochs} epochs; node fields on "
          f"the {args.fields_on} images; ablations on {len(y_te)} test images\n")
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

    print("Per encoder: SI = specialisation index (sd = its distance from the shuffled control in control sd).\n"
          "Per head: labels seen = labels on the diagonal of >= 1 of its nodes; designated = its labels by the "
          f"'{args.designation}' rule;\nSHP diag / clus / noise = diagonal labels, clusters and noise of the "
          "single-head matrix; J(des,SHP) = Jaccard of the two sets;\nacc drop = whole-model test accuracy lost "
          "when the head is zeroed; on des. / others = mean per-label drop; p = permutation p of the difference.\n")
    counts, desig, verdict_si, verdict_abl, n_gap_pos = [], [], [], [], 0
    for e in range(L):
        r = analyse_site(A_tr[heads_sites[e]], y_tr, A_te[heads_sites[e]], y_te, K, "flat", args.epochs,
                         args.threshold, args.seed, heads_sites[e])
        V = r.V if args.fields_on == "test" else node_fields(A_tr[heads_sites[e]], y_tr, r.readout.W, K)
        B = r.B if args.fields_on == "test" else normalise_threshold(V, args.threshold)
        c = head_label_counts(B, d)                                     # [h, K]
        Ld = designated_labels(c, rule=args.designation)                # [h, K]
        m = head_metrics(c, Ld)
        ctrl_mean, ctrl_std = shuffled_control(B, d, n_shuffles=args.shuffles, seed=args.seed)
        Bh = normalise_threshold(head_fields(V, d), args.threshold)     # SHP: [h, K, K]
        shp = node_stats(Bh)
        shp_sets = np.diagonal(Bh, axis1=1, axis2=2)                    # [h, K] the heads' SHP diagonal sets
        counts.append(c)
        desig.append(Ld)
        z = I.encoder_input(params, cfg, A_te, e)
        abl = [I.head_ablation(params, cfg, data, e, g, Ld[g], full_logits=full_logits, z_test=z,
                               n_perm=args.n_perm, seed=args.seed) for g in range(h)]

        sig = f"{(m['si'] - ctrl_mean) / ctrl_std:+.1f} sd" if ctrl_std > 0 else "control has no spread"
        verdict_si.append(m["si"] > ctrl_mean + 2 * ctrl_std)
        print(f"encoder {e + 1}: mha_heads read-out {100 * r.accuracy:.1f}%, "
              f"{B.diagonal(axis1=1, axis2=2).sum(1).mean():.2f} diagonal labels per node")
        print(f"  SI {m['si']:.3f} vs shuffled {ctrl_mean:.3f} +- {ctrl_std:.3f} ({args.shuffles} shuffles; {sig}; "
              f"1/h = {1 / h:.3f});  mean Jaccard of designated sets {m['mean_jaccard']:.2f};  "
              f"coverage {m['coverage']:.2f};  heads per covered label {m['mean_heads_per_label']:.2f}")
        head = (f"  {'head':<6}{'labels seen':>12}{'designated':>11}{'SHP diag':>9}{'SHP clus':>9}"
                f"{'SHP noise':>10}{'J(des,SHP)':>11} | {'acc drop':>9}{'on des.':>8}{'others':>8}{'p':>7}")
        print(head)
        for g in range(h):
            a = abl[g]
            n_gap_pos += a.gap > 0
            verdict_abl.append(a.gap > 0 and a.p_value < 0.05)
            print(f"  {g:<6}{int((c[g] > 0).sum()):>12}{int(Ld[g].sum()):>11}{int(shp_sets[g].sum()):>9}"
                  f"{shp.n_clusters[g]:>9}{shp.noise[g]:>10}{jaccard(Ld[g], shp_sets[g]):>11.2f} | "
                  f"{100 * (a.acc_full - a.acc_ablated):>8.1f}%{100 * a.mean_drop_designated:>7.1f}%"
                  f"{100 * a.mean_drop_others:>7.1f}%{a.p_value:>7.3f}")
        for g in range(h):
            lab = ", ".join(names[j] for j in np.flatnonzero(Ld[g]))
            print(f"    head {g} designated: {lab or '-'}")
        print(f"  [{time.time() - t0:.0f} s]\n", flush=True)

    fig = plot_head_label_sets(counts, names, Path(args.out) / "head_label_sets.png", designated=desig,
                               titles=[f"encoder {e + 1}: c_h(j), designated framed" for e in range(L)],
                               title=f"head label counts from the SNP of the MHA nodes (threshold {args.threshold})")
    print(f"figure: {fig}\n")
    n_heads = L * h
    print("verdicts (measured in this run):")
    print(f"  - specialisation index above the shuffled-node control (> mean + 2 sd) in {sum(verdict_si)} of {L} "
          f"encoders")
    print(f"  - ablating a head costs its designated labels more accuracy than the others in {n_gap_pos} of "
          f"{n_heads} heads; significantly (one-sided p < 0.05, {args.n_perm} random label sets) in "
          f"{sum(verdict_abl)} of {n_heads}")
    supported = sum(verdict_si) > L / 2 and sum(verdict_abl) > n_heads / 2
    print(f"  => head specialisation ('modus vivendi') is {'SUPPORTED' if supported else 'NOT supported'} by this "
          f"checkpoint (needed: a majority of encoders in the SI test and of heads in the ablation test)")
    print(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
