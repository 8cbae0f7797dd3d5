"""Lesson 05: ANDC pruning (applied nodal diagonal connection) of a trained CCT, against random and magnitude
pruning of the same degree.

Koresh et al. (2025) state that the single-nodal performance (SNP) "enables an efficient applied nodal diagonal
connection (ANDC) pruning technique without affecting the accuracy". Which connections ANDC keeps, how many it
removes and the accuracies are not in the parts of the paper available to this project, so the rule used
here is this project's operationalisation [INF] of the group's verified AFCC code [CODE]:

  read-out   For every encoder output: a bias-free read-out on the flattened tokens is trained on the frozen
             activations [CODE: AFCC Cut_VGG / Train_Network], node fields V[n, i, j] are averaged per true
             label, divided by each node's max and thresholded at 0.3 -> B_n [CODE]. ANDC keeps the weight from
             node n to label j (at every token) iff B_n[j, j] = 1 [INF]; AFCC keeps the labels of the node's
             clusters [CODE] (identical sets; the variant with clusters of >= 2 labels is [INF]). Scored with
             no retraining and after a short masked retraining (the mask re-applied after every SGD step)
             [CODE: AFCC train_func]. Control: every node keeps as many labels, chosen at random with every
             label used equally often [CODE: Random_AFCC.py; same per-node degree is INF]. The dense read-out
             also gets the same extra epochs, so that retraining is not mistaken for pruning.
  encoders   The same rule inside each encoder, on the FF output weights linear2 [D, F] (hidden a -> output b):
             keep W2[b, a] iff the label sets of hidden node a (site ff_hidden) and output node b (site out)
             intersect [INF, after AFCC's between-layer rule]. Whole-model test accuracy before and after,
             no retraining; control: a random mask keeping every output node's number of inputs.
The story: the ANDC rule step by step on the last encoder's read-out; then tables 1-3 (first read-out seed):
every encoder's read-out, a threshold sweep, linear2 inside the encoders; then section 4, the verdicts over
--seeds read-out seeds against two more baselines of exactly the ANDC mask's per-node degree (the weights of
largest magnitude, and the unpruned read-out retrained identically), with intervals from a bootstrap over
seeds and test images. ANDC is called selective only where it beats both same-degree baselines beyond their
intervals. Read-outs are trained for a few epochs on --n-train images without augmentation (the authors:
200 epochs, all images, augmented), so read-out accuracies are lower bounds.

Run:  python lessons/05_andc_pruning.py  [--material real|embedded] [--seeds 3] [--epochs 3] [--retrain-epochs 1]
      [--n-train 2000] [--thresholds 0.3,0.5,0.7,0.9] [--fields-on test|train] [--out runs/05_andc]
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
from minicct.analysis.andc import andc_mask, prune_readout, pruned_fraction, random_mask_like
from minicct.analysis.readout import readout_accuracy, train_readout
from minicct.analysis.replicate import andc_experiment, andc_rows
from minicct.analysis.report import analyse_site, capture
from minicct.analysis.snp import AFCC_THRESHOLD, node_fields, normalise_threshold
from minicct.parallel import predict
from minicct.plots import plot_accuracy_vs_pruned
from minicct.sites import Site
from minicct.tables import format_table


@dataclass
class Captured:
    """Activations of every encoder's output and FF hidden units (+ tokenizer on the test images)."""
    train: dict             # capture name -> [N, T, D or F]
    test: dict
    y_train: np.ndarray
    y_test: np.ndarray
    z0: np.ndarray          # [N, T, D] the residual stream entering encoder 1, test images
    acc_model: float        # whole-model test accuracy


@dataclass
class EncoderPruning:
    """ANDC on one encoder, first read-out seed."""
    encoder: int            # counted from 0 (printed from 1)
    readout_out: object     # SiteAnalysis of the encoder's output (flat read-out)
    readout_ff: object      # SiteAnalysis of its FF hidden units
    dense_more_epochs: float    # the dense read-out's accuracy after the retraining epochs too
    andc_readout: object    # interventions' read-out pruning result at the table threshold
    ff: object              # interventions' linear2 pruning result


@dataclass
class AllEncodersLinear2:
    """linear2 of every encoder pruned at once, whole-model test accuracy."""
    acc_andc: float
    acc_random: float
    pruned_fraction: float


def pct(a):
    return f"{100 * a:5.1f}"


def standard_error(acc, n):
    """Binomial standard error of a test accuracy on n images."""
    return np.sqrt(acc * (1 - acc) / n)


def capture_all(m, args) -> Captured:
    L, n = m.cfg.num_layers, args.n_train or None
    names = [Site(e, part).name for part in ("out", "ff_hidden") for e in range(L)]
    A_tr = capture(m.params, m.cfg, m.data.x_train[:n], m.data.mean, m.data.std, names)
    A_te = capture(m.params, m.cfg, m.data.x_test, m.data.mean, m.data.std, ["tokens"] + names)
    z0 = interventions.encoder_input(m.params, m.cfg, A_te, 0)
    acc = float((predict(m.params, z0, m.cfg, 500, start_encoder=0).argmax(1) == m.data.y_test).mean())
    return Captured(A_tr, A_te, m.data.y_train[:n], m.data.y_test, z0, acc)


def prune_encoder(m, c: Captured, e, args) -> EncoderPruning:
    """Read-out SNP of the encoder's output and FF hidden units, ANDC on the read-out, ANDC on linear2."""
    K, out, ff = m.cfg.num_classes, Site(e, "out").name, Site(e, "ff_hidden").name
    A_tr, A_te, y_tr, y_te = c.train, c.test, c.y_train, c.y_test
    r_out = analyse_site(A_tr[out], y_tr, A_te[out], y_te, K, "flat", args.epochs, args.threshold, args.seed, out)
    r_ff = analyse_site(A_tr[ff], y_tr, A_te[ff], y_te, K, "flat", args.epochs, args.threshold, args.seed, ff)
    more = train_readout(A_tr[out], y_tr, K, epochs=args.retrain_epochs, seed=args.seed,
                         W_init=r_out.readout.W).accuracy(A_te[out], y_te)
    pr = interventions.andc_readout_sweep(A_tr[out], y_tr, A_te[out], y_te, K, r_out.readout.W,
                                          thresholds=(args.threshold,), retrain_epochs=args.retrain_epochs,
                                          seed=args.seed, fields_on=args.fields_on,
                                          V=r_out.V if args.fields_on == "test" else None)[0]
    if args.fields_on == "train":                               # masks from fields on training images
        B_h = normalise_threshold(node_fields(A_tr[ff], y_tr, r_ff.readout.W, K), args.threshold)
        B_o = normalise_threshold(node_fields(A_tr[out], y_tr, r_out.readout.W, K), args.threshold)
    else:
        B_h, B_o = r_ff.B, r_out.B
    ffp = interventions.ff_pruning_experiment(m.params, m.cfg, m.data, e, B_hidden=B_h, B_out=B_o, seed=args.seed,
                                              z_test=interventions.encoder_input(m.params, m.cfg, A_te, e),
                                              acc_dense=c.acc_model)
    return EncoderPruning(e, r_out, r_ff, more, pr, ffp)


def andc_step_by_step(r_out, A_te, y_te, threshold, seed):
    """The ANDC rule on one read-out, each step a named call (the sweep repeats it per threshold)."""
    print(f"ANDC step by step on the read-out of {r_out.site.label()}:")
    B = normalise_threshold(r_out.V, threshold)                            # [D, K, K] bool
    print(f"  normalise_threshold  B {B.shape} [D, K, K]: node n passes label j to j iff B[n, j, j]")
    M = andc_mask(B)                                                       # [K, D] bool, M[j, n] = B[n, j, j]
    print(f"  andc_mask            M {M.shape} [K, D]: {M.sum(0).mean():.2f} labels kept per node, "
          f"{100 * pruned_fraction(M):.1f}% of the read-out weights pruned")
    W_pruned = prune_readout(r_out.readout.W, M)                           # [K, T, D], W * M at every token
    print(f"  prune_readout        W {W_pruned.shape} [K, T, D]: test accuracy {pct(r_out.accuracy)}% dense -> "
          f"{pct(readout_accuracy(A_te, y_te, W_pruned))}% pruned (no retraining)")
    R = random_mask_like(M, seed=seed)                                     # [K, D], same labels per node
    print(f"  random_mask_like     the control keeps as many labels per node: "
          f"{pct(readout_accuracy(A_te, y_te, prune_readout(r_out.readout.W, R)))}%")


def sweep_last_encoder(m, c: Captured, last: EncoderPruning, args):
    """The threshold sweep and the AFCC (clusters >= 2 labels) variant on the last encoder's read-out."""
    name = Site(last.encoder, "out").name
    kw = dict(retrain_epochs=args.retrain_epochs, seed=args.seed, fields_on=args.fields_on,
              V=last.readout_out.V if args.fields_on == "test" else None)
    ro = (c.train[name], c.y_train, c.test[name], c.y_test, m.cfg.num_classes, last.readout_out.readout.W)
    sweep = interventions.andc_readout_sweep(*ro, thresholds=[float(t) for t in args.thresholds.split(",")], **kw)
    afcc2 = interventions.andc_readout_sweep(*ro, thresholds=(args.threshold,), rule="clusters", min_cluster_size=2,
                                             **kw)[0]
    return sweep, afcc2


def prune_all_linear2(m, c: Captured, rows) -> AllEncodersLinear2:
    p_andc, p_rand = m.params, m.params
    for r in rows:
        p_andc = interventions.prune_linear2(p_andc, r.encoder, r.ff.mask)
        p_rand = interventions.prune_linear2(p_rand, r.encoder, r.ff.random_mask)
    acc = [float((predict(p, c.z0, m.cfg, 500, start_encoder=0).argmax(1) == c.y_test).mean()) for p in (p_andc, p_rand)]
    frac = 1 - sum(int(r.ff.mask.sum()) for r in rows) / sum(r.ff.mask.size for r in rows)
    return AllEncodersLinear2(acc[0], acc[1], frac)


def print_tables(rows, sweep, afcc2, both: AllEncodersLinear2, c: Captured, cfg, args):
    """The three result tables (accuracies in %)."""
    L, n = cfg.num_layers, args.retrain_epochs
    ro_cols = [("labels/node", "12.2f"), ("pruned %", "9.1f"), " | ", ("ANDC", ">6"), ("retrain", ">8"), " | ",
               ("random", ">7"), ("retrain", ">8")]
    scores = lambda pr: (pr.labels_per_node, 100 * pr.pruned_fraction, pct(pr.acc_pruned), pct(pr.acc_retrained),
                         pct(pr.acc_random), pct(pr.acc_random_retrained))
    print(f"\n1. ANDC on the read-out of every encoder output (threshold {args.threshold}; accuracies in %; "
          f"'+{n} ep' = the dense read-out trained as long as the retraining)")
    print(format_table([("encoder", "<9"), ("dense", ">7"), (f"+{n} ep", ">7")] + ro_cols,
                       [(r.encoder + 1, pct(r.readout_out.accuracy), pct(r.dense_more_epochs), *scores(r.andc_readout))
                        for r in rows]))
    print(f"AFCC variant, encoder {L}, only clusters of >= 2 labels: {afcc2.labels_per_node:.2f} labels/node, "
          f"pruned {100 * afcc2.pruned_fraction:.1f}%, accuracy {pct(afcc2.acc_pruned)} -> retrained "
          f"{pct(afcc2.acc_retrained)} (random {pct(afcc2.acc_random)} -> {pct(afcc2.acc_random_retrained)})")
    print(f"\n2. Threshold sweep on encoder {L}'s read-out (dense {pct(rows[-1].readout_out.accuracy)}%, "
          f"+{n} ep {pct(rows[-1].dense_more_epochs)}%)")
    print(format_table([("threshold", "<10.2f")] + ro_cols, [(pr.threshold, *scores(pr)) for pr in sweep]))
    print(f"\n3. ANDC inside the encoders: FF linear2 [D={cfg.embedding_dim}, F={cfg.ff_dim}] keeps hidden a -> "
          f"output b iff their label sets intersect;\n   whole-model test accuracy (%), no retraining "
          f"(dense {pct(c.acc_model)} +- {pct(standard_error(c.acc_model, len(c.y_test)))})")
    print(format_table([("encoder", "<9"), ("ro ff", ">7"), ("ro out", ">7"), ("labels/hid", ">11"),
                        ("labels/out", ">11"), ("pruned %", "9.1f"), " | ", ("ANDC", ">6"), ("random", ">8")],
                       [(r.encoder + 1, pct(r.readout_ff.accuracy), pct(r.readout_out.accuracy),
                         f"{r.ff.labels_hidden.sum(1).mean():.2f}", f"{r.ff.labels_out.sum(1).mean():.2f}",
                         100 * r.ff.pruned_fraction, pct(r.ff.acc_pruned), pct(r.ff.acc_random)) for r in rows]
                       + [("all", "", "", "", "", 100 * both.pruned_fraction, pct(both.acc_andc),
                           pct(both.acc_random))]))


def plot_sweep(sweep, rows, K, args):
    curves = {name: ([p.pruned_fraction for p in sweep], [getattr(p, key) for p in sweep]) for name, key in (
        ("ANDC, no retraining", "acc_pruned"), (f"ANDC, {args.retrain_epochs} ep retrained", "acc_retrained"),
        ("random, no retraining", "acc_random"),
        (f"random, {args.retrain_epochs} ep retrained", "acc_random_retrained"))}
    return plot_accuracy_vs_pruned(curves, Path(args.out) / "accuracy_vs_pruned.png",
                                   dense_acc=rows[-1].dense_more_epochs, chance=1 / K,
                                   dense_label=f"dense read-out (+{args.retrain_epochs} ep)",
                                   title=f"ANDC vs random pruning, encoder {len(rows)} read-out "
                                         f"(thresholds {args.thresholds})")


def print_verdicts_over_seeds(m, c: Captured, rows, seeds, args):
    """ANDC against random, magnitude and unpruned baselines of the same per-node degree, one ANDC experiment
    per read-out seed (replicate.andc_experiment), intervals over seeds and test images."""
    L, runs = m.cfg.num_layers, []
    for s in seeds:
        reuse = s == args.seed and args.fields_on == "test"       # the first seed's read-outs are already trained
        runs.append(andc_experiment(m.params, m.cfg, c.train, c.y_train, c.test, c.y_test, s, args.epochs,
                                    args.retrain_epochs, args.threshold, c.z0,
                                    out_B={r.encoder: r.readout_out.B for r in rows} if reuse else None,
                                    last=rows[-1].readout_out if reuse else None))
    full_logits = predict(m.params, c.z0, m.cfg, 500, start_encoder=0)
    print(f"\n4. Verdicts over {len(seeds)} read-out seeds (fields on the test images; mean [95 % interval]):")
    for row in andc_rows(runs, full_logits, c.y_test, L, args.retrain_epochs, args.tolerance / 100, seed=args.seed):
        print(f"  - {row['quantity']}:\n      {row['measured']}\n      baseline: {row['null_or_baseline']}\n"
              f"      => {row['verdict'].upper()}   (rule: {row['rule']})")


def print_first_seed_details(rows, sweep, both: AllEncodersLinear2, c: Captured, args):
    """What the first seed measured, whichever way it goes (descriptive)."""
    L, tol, last = len(rows), args.tolerance / 100, rows[-1]

    def ahead(pairs):
        """'a of n (by more than the tolerance: b of n)' for (ANDC, random) accuracy pairs."""
        pairs = list(pairs)
        return (f"{sum(a > r for a, r in pairs)} of {len(pairs)} (by more than {args.tolerance:.1f} points: "
                f"{sum(a - r > tol for a, r in pairs)} of {len(pairs)})")

    se = standard_error(last.dense_more_epochs, len(c.y_test))
    print(f"\nfirst-seed details (descriptive; 'unaffected' = within {args.tolerance:.1f} accuracy points, the test "
          f"accuracy's standard error here is about {pct(se).strip()} points):")
    d_ro = last.andc_readout.acc_retrained - last.dense_more_epochs
    print(f"  - encoder {L} read-out, ANDC at threshold {args.threshold}: "
          f"{100 * last.andc_readout.pruned_fraction:.1f}% of the weights removed; retrained accuracy "
          f"{d_ro * 100:+.1f} points vs the dense read-out with the same epochs -> accuracy "
          f"{'UNAFFECTED' if d_ro >= -tol else 'REDUCED'}")
    print(f"  - ANDC ahead of the same-degree random control over the thresholds: after retraining "
          f"{ahead((p.acc_retrained, p.acc_random_retrained) for p in sweep)}, without "
          f"{ahead((p.acc_pruned, p.acc_random) for p in sweep)}")
    kept_ro = sum(r.andc_readout.acc_retrained - r.dense_more_epochs >= -tol for r in rows)
    print(f"  - read-outs of all encoders (threshold {args.threshold}): retrained ANDC unaffected in {kept_ro} of "
          f"{L}, ahead of random in {ahead((r.andc_readout.acc_retrained, r.andc_readout.acc_random_retrained) for r in rows)}")
    kept_ff = sum(r.ff.acc_pruned - r.ff.acc_dense >= -tol for r in rows)
    print(f"  - FF linear2 pruning (no retraining): model accuracy unaffected in {kept_ff} of {L} encoders; ANDC "
          f"ahead of random in {ahead((r.ff.acc_pruned, r.ff.acc_random) for r in rows)}")
    print(f"    all encoders at once: {100 * both.pruned_fraction:.1f}% of linear2 removed, {pct(c.acc_model).strip()}"
          f" -> {pct(both.acc_andc).strip()}% (random {pct(both.acc_random).strip()}%)")


def main(argv=None):
    args = parse_args(argv)
    clock = Clock()
    m = load_material(args)
    K, L, seeds = m.cfg.num_classes, m.cfg.num_layers, list(range(args.seed, args.seed + args.seeds))
    if m.data.num_classes != K:
        raise SystemExit(f"dataset {m.data.name} has {m.data.num_classes} classes, the checkpoint {K}")
    print(f"read-outs of {args.epochs} epochs on {len(m.data.y_train[:args.n_train or None])} training images; "
          f"scored on {len(m.data.y_test)} test images; masks from node fields on the {args.fields_on} images")
    clock.step("capturing every encoder's output and FF hidden units ...")
    c = capture_all(m, args)
    print(f"whole model: test accuracy {pct(c.acc_model)}% (+-{pct(standard_error(c.acc_model, len(c.y_test)))}), "
          f"chance {pct(1 / K)}%")
    rows = []
    for e in range(L):
        clock.step(f"encoder {e + 1}: read-outs of its output and FF hidden units, ANDC on the read-out and on "
                   f"linear2 ...")
        rows.append(prune_encoder(m, c, e, args))
    print()
    andc_step_by_step(rows[-1].readout_out, c.test[Site(L - 1, "out").name], c.y_test, args.threshold, args.seed)
    clock.step(f"threshold sweep on encoder {L}'s read-out, and linear2 of all encoders pruned at once ...")
    sweep, afcc2 = sweep_last_encoder(m, c, rows[-1], args)
    both = prune_all_linear2(m, c, rows)
    print_tables(rows, sweep, afcc2, both, c, m.cfg, args)
    print(f"\nfigure: {plot_sweep(sweep, rows, K, args)}  (accuracy against the pruned fraction, ANDC and random)\n")
    clock.step(f"ANDC and its baselines for {len(seeds)} read-out seeds ...")
    print_verdicts_over_seeds(m, c, rows, seeds, args)
    print_first_seed_details(rows, sweep, both, c, args)
    print(f"\nlook at: the '=>' lines of section 4 (decided over {len(seeds)} seeds); done in {clock.total():.0f} s")
    return 0


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_material_args(ap)
    ap.add_argument("--epochs", type=int, default=3, help="read-out training epochs (authors: 200)")
    ap.add_argument("--retrain-epochs", type=int, default=1, help="masked retraining epochs of the read-outs")
    ap.add_argument("--n-train", type=int, default=2000, help="training images for the read-outs (0: all)")
    ap.add_argument("--threshold", type=float, default=AFCC_THRESHOLD,
                    help="SNP threshold of the tables (authors: 0.3)")
    ap.add_argument("--thresholds", default="0.3,0.5,0.7,0.9", help="sweep for the plot (last encoder)")
    ap.add_argument("--fields-on", default="test", choices=["test", "train"],
                    help="images for the node fields that choose the masks (authors: test)")
    ap.add_argument("--tolerance", type=float, default=1.0, help="accuracy points counted as 'unaffected'")
    ap.add_argument("--seed", type=int, default=0, help="first read-out seed")
    ap.add_argument("--seeds", type=int, default=3, help="read-out seeds for the verdicts (>= 2 for intervals)")
    ap.add_argument("--out", default="runs/05_andc", help="folder for the figure")
    return ap.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
