"""The replication report: each claim of the paper, measured over read-out seeds, against its null or baseline.

    replicate(params, cfg, data, seeds=(0, 1, 2))  ->  dict (claims table rows + per-position summaries)

One capture pass of the frozen model (tokenizer output and, per encoder, out / mha_heads / ff_hidden), then
for every read-out seed s:
    per position (tokenizer, encoder 1..L) and read-out mode: report.analyse_site -> accuracy, clusters per
        node, cluster size, labels in clusters, noise, SNR and variants, single-node accuracy / top fraction;
    heads: flat read-out of every encoder's mha_heads -> node label sets L [D, K] and fields V [D, K, K];
    ANDC on the last encoder's flat read-out against random / magnitude same-degree masks and the unpruned
        read-out, all retrained identically (baselines.readout_baselines);
    ANDC on FF linear2 of every encoder at once against random / magnitude masks of the same per-node degree
        (whole-model accuracy, no retraining).
Then every claim gets its verdict by a stated rule (stats: paired differences over seeds; nulls: label
permutation, random node partitions with the statistic averaged over seeds, Holm over tests). Each row holds
the paper's claim in its own words, the measured quantity with its 95 % interval, the null or baseline, the
verdict and the rule. `write_outputs` writes claims.json (first), claims.md and one PNG figure.
Shape legend: N images, T tokens, D nodes, F FF hidden width, h heads, d head dim, K classes, S seeds.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..parallel import predict
from . import interventions as I
from .andc import andc_mask, ff_mask
from .baselines import ff_baseline_masks, readout_baselines
from .clusters import node_labels
from .heads import designated_labels, heads_per_label, partition_counts, partition_si, shp_label_sets
from .nulls import NULL_DRAWS, group_permutation_test, holm, min_detectable_effect, partition_null, sweep_with_null
from .report import LABELS, SWEEP_QUANTITIES as QUANTITIES, analyse_site, capture, run_snp, sweep_values
from .stats import (CONTRADICTED, INCONCLUSIVE, NULL_RULE, SUPPORTED, bootstrap_summary, null_check, summarise,
                    summarise_columns, trend_verdict, verdict_from)
from ..sites import Site


def small_clusters_verdict(lab, K):
    """P-T "small clusters": labels in clusters per node (a Summary over seeds) against K labels. Supported if the
    interval lies below K/4, contradicted if above K/2, else inconclusive (claims table and lesson 03)."""
    return SUPPORTED if lab.hi < K / 4 else CONTRADICTED if lab.lo > K / 2 else INCONCLUSIVE


def single_label_verdict(top):
    """P-M "each node selects a single output label": fraction of test images on a node's most frequent label
    (a Summary over seeds). Supported if the interval lies above 1/2, contradicted if below, else inconclusive."""
    return SUPPORTED if top.lo > 0.5 else CONTRADICTED if top.hi < 0.5 else INCONCLUSIVE


def near_chance_verdict(sacc, K):
    """P-M "single nodes classify near chance": single-node accuracy (a Summary over seeds) below 2/K: supported;
    above 2/K: contradicted; else inconclusive (lesson 03)."""
    return SUPPORTED if sacc.hi < 2 / K else CONTRADICTED if sacc.lo > 2 / K else INCONCLUSIVE



# the paper's claims in their own words (abstracts; docs/method.md sec. 10.1)
CLAIMS = {
    "small_clusters": ("P-T", "Each node identifies small clusters of possible output labels, with additional "
                              "noise represented as labels outside these clusters."),
    "single_label": ("P-M", "Each filter essentially selects a single output label independent of the input "
                            "label"),
    "accuracy_rises": ("P-M", "resulting in SRs that progress with the layers"),
    "sharpened": ("P-T", "These features are progressively sharpened along the transformer encoders, enhancing "
                         "the signal-to-noise ratio."),
    "andc": ("P-T", "enables an efficient applied nodal diagonal connection (ANDC) pruning technique without "
                    "affecting the accuracy"),
    "heads_break_symmetry": ("P-T", "spontaneous symmetry breaking occurs among the MHA heads, such that each "
                                    "head focuses its attention on a subset of labels"),
    "heads_expert": ("P-T", "each head becomes an expert in recognizing its designated labels"),
    "few_heads": ("P-L", "each label being explicitly recognized by a few heads"),
    "groups": ("minicct", "(lesson 03) clusters follow the dataset's ground-truth label groups more often than "
                          "chance"),
}


_site_values = sweep_values


def seed_sweep(A_train, y_train, A_test, y_test, num_classes, names, modes=("flat",), seeds=(0, 1, 2), epochs=10,
               threshold=0.3, keep=(), progress=None, workers=None):
    """Every SNP quantity of every site in `names` (in order along the encoders) for every read-out seed and mode.

    A_train / A_test: {name: activations [N, T, D]}; y_train [N], y_test [M]. For each seed and name and mode
    a fresh read-out is trained with that seed (report.analyse_site). The read-outs are independent, so they
    run on `workers` forked processes (parallel.run_forked, threads where fork is not available; None = the
    usable CPUs); each is computed whole by one worker, so the results are those of workers=1, bit for bit.
    Returns (vals, kept):
        vals[mode][quantity]  float [S, E]  (S seeds, E = len(names)); quantities QUANTITIES
        kept[(seed, name, mode)]  the SiteAnalysis, for the (name, mode) pairs listed in keep.
    """
    from ..parallel import gil_switch_interval, run_forked
    vals = {m: {q: np.full((len(seeds), len(names)), np.nan) for q in QUANTITIES} for m in modes}
    kept = {}
    jobs = [(si, seed, p, name, mode) for si, seed in enumerate(seeds) for p, name in enumerate(names)
            for mode in modes]
    cost = {"flat": 0, "seqpool": 1, "mean": 2}                # longest read-outs first: the workers end together
    order = sorted(range(len(jobs)), key=lambda i: cost[jobs[i][4]])
    with gil_switch_interval(2e-4):                 # threads (no fork): many short NumPy calls per step (parallel.py)
        done = run_forked(lambda i: analyse_site(A_train[jobs[i][3]], y_train, A_test[jobs[i][3]], y_test,
                                                 num_classes, jobs[i][4], epochs, threshold, jobs[i][1], jobs[i][3]),
                          order, workers)
    results = dict(zip(order, done))                          # job index -> its SiteAnalysis
    for i, (si, seed, p, name, mode) in enumerate(jobs):
        r = results[i]
        for q, v in _site_values(r).items():
            vals[mode][q][si, p] = v
        if (name, mode) in keep:
            kept[(seed, name, mode)] = r
    if progress:
        progress(f"  {len(seeds)} seeds x {len(names)} sites x {len(modes)} read-outs done", flush=True)
    return vals, kept


def head_null_tests(heads_L, heads_V, head_dim, threshold=0.3, n_draws=200, seed=0):
    """Per encoder, the heads' specialisation index and SHP heads-per-label against random node partitions. [INF]

    heads_L[e]: list over seeds of node label sets L [D, K] of encoder e's mha_heads site; heads_V[e]: list over
    seeds of its node fields V [D, K, K]. Each statistic is averaged over the seeds, for the real heads and for
    every random partition alike (nulls.partition_null). Returns (si_results, shp_results), one dict per encoder:
        SI  = specialisation index of the partition (higher = more specialised; alternative 'greater')
        SHP = mean number of groups whose single-head diagonal set holds a label (fewer = more specialised;
              alternative 'less').
    """
    si_res, hp_res = [], []
    for Ls, Vs in zip(heads_L, heads_V):
        D = Ls[0].shape[0]
        si_res.append(partition_null(lambda g: np.mean([partition_si(Lx, g) for Lx in Ls]), D, head_dim, n_draws,
                                     seed=seed))
        hp_res.append(partition_null(lambda g: np.mean([heads_per_label(shp_label_sets(Vx, g, threshold))
                                                        for Vx in Vs]), D, head_dim, n_draws, seed=seed,
                                     alternative="less"))
    return si_res, hp_res


def head_ablation_tests(params, cfg, data, heads_L, full_logits, A_test, n_perm=2000, seed=0, alpha=0.05):
    """Zero every head in turn; is the accuracy drop larger on its designated labels? Holm over all heads. [INF]

    Designated labels of head g in encoder e: the labels where g has the most nodes with the label on their
    diagonal, counts summed over the seeds (heads.designated_labels, rule 'max'). For each head the gap =
    mean drop on them - mean drop on the others, its one-sided permutation p over n_perm random label sets of
    the same size (interventions.designated_drop), then Holm over the L x h heads, and the minimum detectable
    gap (80 % power at the strictest Holm level alpha / m, from the median null spread).
    A_test: captured test activations with "tokens" and enc{e}.out (for the residual stream entering e).
    Returns a dict: encoder, head, designated [m, K], gap, p, p_holm, reject, p_other / p_holm_other (the
    opposite tail: designated labels hurt LESS than random label sets), n_positive, m, mde, acc_drop.
    """
    L, h = cfg.num_layers, cfg.num_heads
    D, d = cfg.embedding_dim, cfg.head_dim
    y = data.y_test
    out = {k: [] for k in ("encoder", "head", "designated", "gap", "p", "p_other", "null_sd", "acc_drop")}
    for e in range(L):
        c = sum(partition_counts(Lx, np.arange(D).reshape(h, d)) for Lx in heads_L[e])       # [h, K]
        Ld = designated_labels(c, rule="max")
        zt = I.encoder_input(params, cfg, A_test, e)
        for g in range(h):
            ab = I.head_ablation(params, cfg, data, e, g, Ld[g], full_logits=full_logits, z_test=zt)
            _, _, gap, p, null = I.designated_drop(ab.drop, Ld[g], n_perm, seed=seed + 1000 * e + g,
                                                   return_null=True)
            for k, v in (("encoder", e), ("head", g), ("designated", Ld[g]), ("gap", gap),
                         ("p", p if np.isfinite(p) else 1.0),
                         ("p_other", opposite_tail_p(gap, null) if np.isfinite(gap) else 1.0),
                         ("acc_drop", ab.acc_full - ab.acc_ablated),
                         ("null_sd", float(null.std(ddof=1)) if null.size > 1 else float("nan"))):
                out[k].append(v)
    m = len(out["p"])
    p_adj, rej = holm(out["p"], alpha)
    p_adj_other, _ = holm(out["p_other"], alpha)
    out.update(p_holm=[float(x) for x in p_adj], reject=[bool(x) for x in rej], m=m,
               p_holm_other=[float(x) for x in p_adj_other],
               n_positive=int(sum(gp > 0 for gp in out["gap"])),
               mde=min_detectable_effect(float(np.nanmedian(out["null_sd"])), alpha / m))
    return out


def positions_summary(vals):
    """{mode: {quantity: [Summary dict per position]}} from seed_sweep's vals (for format_positions_table)."""
    return {mode: {q: [s.to_dict() for s in summarise_columns(X)] for q, X in per.items()} for mode, per in vals.items()}


def seeded_snp(params, cfg, data, site="out", modes=("flat", "mean", "seqpool"), seeds=(0, 1, 2), epochs=10,
               threshold=0.3, n_train=None, out_dir=None, batch_size=250, acts=None, workers=None):
    """The SNP analysis of lesson 03 over several read-out seeds: tokenizer + every encoder's `site`.

    acts: (A_train, A_test), dicts {name: [N, T, D]} already captured for data.x_train[:n_train] and
    data.x_test at "tokens" and every "enc{e}.{site}"; then no forward pass is run. workers: threads for the
    read-outs (seed_sweep; the results do not depend on it).

    Returns (vals, report, kept): vals[mode][quantity] [S, E] (seed_sweep); report = an SNPReport of the first
    seed's SiteAnalyses (figures written to out_dir when given); kept[(seed, name, mode)] every SiteAnalysis.
    """
    report = run_snp(params, cfg, data, (site,), modes, True, epochs, threshold, n_train, seeds[0], None, None,
                     batch_size, float("inf"), acts, seeds, seed_sweep, workers)     # one pipeline (report.run_snp)
    if out_dir is not None:
        from .. import plots
        from .nulls import NullSweep
        names = [Site.tokens().name] + [Site(e, site).name for e in range(cfg.num_layers)]
        S, E = len(seeds), len(names)                 # the figure shows what the table shows: mean over seeds
        no_null = {m: {q: np.empty((S, 0, E)) for q in report.vals[m]} for m in modes}
        report.figures = plots.snp_figures(report, out_dir, sweep=NullSweep(names, tuple(modes), list(seeds), 0,
                                                                            report.vals, no_null))
    return report.vals, report, report.kept


@dataclass
class SNPSweep:
    """What lesson 03 shows, with the label-permutation null (snp_sweep).

    sweep: nulls.NullSweep -- every quantity [S, E] per mode (sweep.real), its null [S, P, E] (sweep.null),
        sweep.compare(mode, q) (value / null / excess per position), sweep.trend(mode, q, "rise"), sweep.table(mode);
    report: an SNPReport of the first seed's SiteAnalyses (report.figures: the figures written, if out_dir).
    vals / kept: as seeded_snp returns them (sweep.real, sweep.kept).
    """

    sweep: object
    report: object

    @property
    def vals(self):
        return self.sweep.real

    @property
    def kept(self):
        return self.sweep.kept


def snp_sweep(params, cfg, data, site="out", modes=("flat", "mean", "seqpool"), seeds=(0, 1, 2), epochs=10,
              threshold=0.3, n_train=None, out_dir=None, batch_size=250, acts=None, workers=None,
              null_draws=NULL_DRAWS) -> SNPSweep:
    """seeded_snp with the label-permutation null: tokenizer + every encoder's `site`, every mode and seed, and
    null_draws permuted-label runs per seed (nulls.sweep_with_null; 0 = none). The true-label numbers are
    seeded_snp's, digit for digit. Figures (out_dir): along_encoders.png shows the mean over seeds, its
    interval and the null band. acts: (A_train, A_test) already captured (as seeded_snp). Returns an SNPSweep.
    """
    from .report import SNPReport
    names = ["tokens"] + [f"enc{e}.{site}" for e in range(cfg.num_layers)]
    x_tr, y_tr = data.x_train[:n_train], data.y_train[:n_train]
    if acts is None:
        A_tr = capture(params, cfg, x_tr, data.mean, data.std, names, batch_size)
        A_te = capture(params, cfg, data.x_test, data.mean, data.std, names, batch_size)
    else:
        A_tr, A_te = acts
        missing = [n for n in names if n not in A_tr or n not in A_te]
        if missing:
            raise ValueError(f"acts lacks the activations of {missing}; capture them or pass acts=None")
    seeds = [int(x) for x in seeds]
    sw = sweep_with_null(A_tr, y_tr, A_te, data.y_test, cfg.num_classes, names, modes, seeds, epochs, threshold,
                         null_draws, keep=[(n, m) for n in names for m in modes], workers=workers)
    report = SNPReport([sw.kept[(seeds[0], n, m)] for n in names for m in modes], list(data.class_names),
                       dict(data.groups), dict(data.group_names))
    if out_dir is not None:
        from .. import plots
        report.figures = plots.snp_figures(report, out_dir, sweep=sw)
    return SNPSweep(sw, report)


def andc_experiment(params, cfg, A_train, y_train, A_test, y_test, seed, epochs=10, retrain_epochs=1, threshold=0.3,
                    z0=None, out_B=None, last=None):
    """ANDC against its same-degree baselines for one read-out seed. [INF]

    Read-out: the last encoder's flat read-out (`last`, a SiteAnalysis with this seed, trained if None) is pruned
    by its ANDC mask, by a random and by a magnitude mask of the same per-node degree, and all three and the
    unpruned read-out are retrained retrain_epochs identically (baselines.readout_baselines).
    FF: linear2 of every encoder is pruned at once by ANDC (labels of enc{e}.ff_hidden and enc{e}.out read-outs
    with this seed; out_B = {e: B of enc{e}.out} if already computed) and by random / magnitude masks of the same
    per-output-node degree; whole-model test predictions, no retraining.
    A_train / A_test: captured activations with enc{e}.out and enc{e}.ff_hidden (and "tokens" in A_test when
    z0, the stream entering encoder 0, is not given). Returns a dict: readout {name: bool [N_test] correct},
    readout_before {name: accuracy before retraining}, readout_pruned (fraction), ff {name: bool [N_test]},
    ff_pruned (fraction).
    """
    L, K = cfg.num_layers, cfg.num_classes
    outs = [f"enc{e}.out" for e in range(L)]
    if last is None:
        last = analyse_site(A_train[outs[-1]], y_train, A_test[outs[-1]], y_test, K, "flat", epochs, threshold, seed,
                            outs[-1])
    M = andc_mask(last.B)                                                    # [K, D]
    base = readout_baselines(A_train[outs[-1]], y_train, A_test[outs[-1]], y_test, K, last.readout.W, M,
                             epochs=retrain_epochs, seed=seed)
    out_B = dict(out_B or {})
    out_B[L - 1] = last.B
    pruned = {k: params for k in ("andc", "random", "magnitude")}
    n_kept = n_total = 0
    for e in range(L):
        if e not in out_B:
            out_B[e] = analyse_site(A_train[outs[e]], y_train, A_test[outs[e]], y_test, K, "flat", epochs, threshold,
                                    seed, outs[e]).B
        name = f"enc{e}.ff_hidden"
        rh = analyse_site(A_train[name], y_train, A_test[name], y_test, K, "flat", epochs, threshold, seed, name)
        Mff = ff_mask(node_labels(rh.B), node_labels(out_B[e]))              # [D, F]
        rand, mag = ff_baseline_masks(Mff, params[f"classifier.blocks.{e}.linear2.weight"], seed=seed)
        for k, mk in (("andc", Mff), ("random", rand), ("magnitude", mag)):
            pruned[k] = I.prune_linear2(pruned[k], e, mk)
        n_kept, n_total = n_kept + int(Mff.sum()), n_total + Mff.size
    if z0 is None:
        z0 = I.encoder_input(params, cfg, A_test, 0)
    ff = {k: predict(p, z0, cfg, 500, start_encoder=0).argmax(1) == y_test for k, p in pruned.items()}
    return {"readout": {k: v["correct"] for k, v in base.items()},
            "readout_before": {k: v["acc_before"] for k, v in base.items()},
            "readout_pruned": 1 - float(M.mean()), "ff": ff, "ff_pruned": 1 - n_kept / n_total}


def andc_rows(runs, full_logits, y_test, num_layers, retrain_epochs=1, tolerance=0.01, seed=0):
    """Claims-table rows of ANDC from andc_experiment runs (one per seed). Intervals of paired accuracy
    differences come from a two-stage bootstrap over seeds and test images (stats.bootstrap_summary), so the
    size of the test set counts as well as the read-out seed. Rules: 'without affecting the accuracy' = the
    interval of ANDC - unpruned lies above -tolerance; 'selective' = ANDC beats both same-degree baselines
    beyond their intervals (contradicted if a baseline beats ANDC)."""
    L = num_layers
    rc = {k: np.array([r["readout"][k] for r in runs], dtype=np.float64) for k in runs[0]["readout"]}   # [S, N]
    boot = lambda diff: bootstrap_summary(diff, seed=seed)
    s_loss, s_rand, s_mag = (boot(rc["andc"] - rc[k]) for k in ("unpruned", "random", "magnitude"))
    v_loss, v_rand, v_mag = verdict_from(s_loss, tolerance=tolerance), verdict_from(s_rand), verdict_from(s_mag)
    frac = summarise([r["readout_pruned"] for r in runs])
    note = "intervals: bootstrap over seeds and test images"
    sel = lambda a, b: (SUPPORTED if a == SUPPORTED and b == SUPPORTED else
                        CONTRADICTED if CONTRADICTED in (a, b) else INCONCLUSIVE)
    rows = [_row("andc", f"encoder {L} read-out: ANDC minus unpruned accuracy, both +{retrain_epochs} epoch(s)",
                 f"{_pct(s_loss)} points ({_pct(boot(rc['andc']))} vs {_pct(boot(rc['unpruned']))} %; "
                 f"{_pct(frac)} % of weights pruned)", f"unpruned read-out; tolerance {100 * tolerance:g} point",
                 v_loss, f"supported if the interval is above -{100 * tolerance:g} point; contradicted if below; "
                 + note),
            _row("andc", f"encoder {L} read-out: ANDC is selective (minus same-degree random / magnitude)",
                 f"vs random {_pct(s_rand)}, vs magnitude {_pct(s_mag)} points",
                 f"random {_pct(boot(rc['random']))} %, magnitude {_pct(boot(rc['magnitude']))} % (same per-node "
                 f"degree, retrained identically)", sel(v_rand, v_mag),
                 "supported if ANDC beats both beyond their intervals; contradicted if a baseline beats ANDC; " + note)]
    fc = {k: np.array([r["ff"][k] for r in runs], dtype=np.float64) for k in runs[0]["ff"]}
    dense = np.broadcast_to((np.asarray(full_logits).argmax(1) == y_test).astype(np.float64), fc["andc"].shape)
    s_ffl, s_r, s_m = boot(fc["andc"] - dense), boot(fc["andc"] - fc["random"]), boot(fc["andc"] - fc["magnitude"])
    v_ffl, v_r, v_m = verdict_from(s_ffl, tolerance=tolerance), verdict_from(s_r), verdict_from(s_m)
    rows.append(_row("andc", "FF linear2 of all encoders at once (no retraining): ANDC minus unpruned; selective",
                     f"{_pct(s_ffl)} points ({_pct(boot(fc['andc']))} vs {100 * dense.mean():.1f} %; "
                     f"{_pct(summarise([r['ff_pruned'] for r in runs]))} % pruned); vs random {_pct(s_r)}, "
                     f"vs magnitude {_pct(s_m)}",
                     f"random {_pct(boot(fc['random']))} %, magnitude {_pct(boot(fc['magnitude']))} % "
                     f"(same per-node degree)", f"no loss: {v_ffl}; selective: {sel(v_r, v_m)}",
                     "no loss as above; selective if ANDC beats both baselines beyond their intervals; " + note))
    return rows


def _row(key, quantity, measured, null, verdict, rule, null_check=None, **details):
    source, claim = CLAIMS[key]
    row = {"id": key, "source": source, "claim": claim, "quantity": quantity, "measured": measured,
           "null_or_baseline": null, "verdict": verdict, "rule": rule, "details": details}
    if null_check is not None:
        row["null_check"] = null_check
    return row


def _null_of(sw, mode, q, pos):
    """The label-permutation null of quantity q at position pos as a Summary (nulls.compare_to_null), or None."""
    if not sw.draws:
        return None
    return sw.compare(mode, q)[pos]["null"]


def _null_text(sw, mode, quantities, pos):
    """'; label-permutation null: q1 m [lo, hi], ...' for the null column of a row ('' without draws)."""
    if not sw.draws:
        return ""
    cells = []
    for q in quantities:
        label, scale, digits = LABELS[q]
        cells.append(f"{label} {sw.compare(mode, q)[pos]['null'].fmt(scale, 1 if scale > 1 else digits)}")
    return f"; label-permutation null ({sw.draws} draw(s) per seed): " + ", ".join(cells)


def _check_text(verdict, null_verdict):
    """stats.null_check with the null's own verdict named."""
    if null_verdict is None:
        return "no null run"
    return f"{null_check(verdict, null_verdict)} (null {null_verdict})"



def _pct(s):
    return s.fmt(100, 1)


def opposite_tail_p(observed, null, alternative="greater"):
    """One-sided p of the OTHER tail of a null sample: (1 + #{null <= observed}) / (1 + n) for alternative
    "greater" (is the real statistic significantly BELOW chance?), mirrored for "less". [INF]"""
    null = np.asarray(null, dtype=np.float64)
    null = null[np.isfinite(null)]
    if alternative == "greater":
        hits = int(np.count_nonzero(null <= observed + 1e-12))
    else:
        hits = int(np.count_nonzero(null >= observed - 1e-12))
    return (1 + hits) / (1 + null.size)


def _null_verdict(p_adj, p_adj_other, alpha=0.05):
    """Verdict over several null tests (encoders or heads), each tested on both tails with Holm over the tests:
    supported if a majority are significant on the claimed side, contradicted if a majority are significant on
    the opposite side (the real heads are significantly LESS specialised than chance), inconclusive otherwise.
    A statistic that merely sits near its null is inconclusive, not contradicted: read it with its power (MDE)."""
    m = len(p_adj)
    if sum(p <= alpha for p in p_adj) > m / 2:
        return SUPPORTED
    if sum(p <= alpha for p in p_adj_other) > m / 2:
        return CONTRADICTED
    return INCONCLUSIVE


def replicate(params, cfg, data, seeds=(0, 1, 2), modes=("flat", "mean", "seqpool"), epochs=10, retrain_epochs=1,
              threshold=0.3, n_train=None, tolerance=0.01, n_draws=200, n_perm=2000, group_draws=10000,
              batch_size=250, progress=print, null_draws=NULL_DRAWS) -> dict:
    """The replication report of a trained CCT on a dataset (module docstring). Returns a dict:

    rows (claims table rows), positions (per mode: per quantity a list of Summaries as dicts, tokenizer first),
    config (seeds, epochs, ...), model_accuracy, seconds.
    seeds: read-out seeds (>= 2 for any verdict); epochs: read-out epochs; retrain_epochs: masked retraining
    of the ANDC read-out and its baselines; tolerance: accuracy loss counted as 'without affecting' (0.01 =
    1 point); n_draws: random node partitions; n_perm: random label sets per head ablation; null_draws:
    label-permutation draws per seed (nulls.sweep_with_null; 0 = none): every per-position quantity gets its
    null (result["null"]) and every claim on them is also decided on the null (stats.null_check, the row's
    "null_check"). The true-label numbers do not depend on null_draws.
    """
    t0 = time.time()
    say = progress or (lambda *a, **k: None)
    seeds = [int(s) for s in seeds]
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers, got {seeds}")
    if data.num_classes != cfg.num_classes:
        raise ValueError(f"dataset {data.name} has {data.num_classes} classes, the model {cfg.num_classes}")
    if "flat" not in modes:
        raise ValueError(f"modes must include 'flat' (the authors' read-out), got {modes}")
    K, L, h, d = cfg.num_classes, cfg.num_layers, cfg.num_heads, cfg.head_dim
    D = cfg.embedding_dim
    x_tr, y_tr, y_te = data.x_train[:n_train], data.y_train[:n_train], data.y_test
    pos = ["tokens"] + [f"enc{e}.out" for e in range(L)]
    heads_sites = [f"enc{e}.mha_heads" for e in range(L)]
    ff_sites = [f"enc{e}.ff_hidden" for e in range(L)]
    say(f"capturing {len(pos) + 2 * L} sites for {len(y_tr)} training and {len(y_te)} test images ...", flush=True)
    A_tr = capture(params, cfg, x_tr, data.mean, data.std, pos + heads_sites + ff_sites, batch_size)
    A_te = capture(params, cfg, data.x_test, data.mean, data.std, pos + heads_sites + ff_sites, batch_size)
    z0 = I.encoder_input(params, cfg, A_te, 0)
    full_logits = predict(params, z0, cfg, 500, start_encoder=0)
    acc_model = float((full_logits.argmax(1) == y_te).mean())
    say(f"model test accuracy {100 * acc_model:.2f}%  [{time.time() - t0:.0f} s]", flush=True)

    sw = sweep_with_null(A_tr, y_tr, A_te, y_te, K, pos, modes, seeds, epochs, threshold, null_draws,
                         keep=[(name, "flat") for name in pos[1:]], progress=say)
    vals, kept = sw.real, sw.kept
    last_clusters, heads_L, heads_V = [], [[] for _ in range(L)], [[] for _ in range(L)]
    andc_runs = []
    for si, seed in enumerate(seeds):
        B_out = {e: kept[(seed, pos[e + 1], "flat")].B for e in range(L)}
        res_last = kept.pop((seed, pos[-1], "flat"))
        last_clusters += [c for node in res_last.stats.clusters for c in node]
        for e in range(L):
            r = analyse_site(A_tr[heads_sites[e]], y_tr, A_te[heads_sites[e]], y_te, K, "flat", epochs, threshold,
                             seed, heads_sites[e])
            heads_L[e].append(node_labels(r.B))                 # [D, K]
            heads_V[e].append(r.V)                              # [D, K, K]
        ex = andc_experiment(params, cfg, A_tr, y_tr, A_te, y_te, seed, epochs, retrain_epochs, threshold, z0,
                             out_B=B_out, last=res_last)
        andc_runs.append(ex)
        ro, ff_acc = ({k: [float(r[part][k].mean()) for r in andc_runs] for k in andc_runs[0][part]}
                      for part in ("readout", "ff"))
        say(f"seed {seed}: last-encoder flat read-out {100 * vals['flat']['accuracy'][si, -1]:.1f}%, ANDC "
            f"{100 * ro['andc'][-1]:.1f}% (random {100 * ro['random'][-1]:.1f}%, magnitude "
            f"{100 * ro['magnitude'][-1]:.1f}%, unpruned {100 * ro['unpruned'][-1]:.1f}%); FF ANDC "
            f"{100 * ff_acc['andc'][-1]:.1f}%  [{time.time() - t0:.0f} s]", flush=True)

    rows = []
    S = len(seeds)
    last = L                                                    # index of the last encoder among the positions
    fl = vals["flat"]
    # 1. small clusters
    lab = summarise(fl["labels_in_clusters"][:, last])
    size = summarise(fl["cluster_size"][:, last])
    noise = summarise(fl["noise"][:, last])
    v = small_clusters_verdict(lab, K)
    nl = _null_of(sw, "flat", "labels_in_clusters", last)
    nv = small_clusters_verdict(nl, K) if nl is not None else None
    rows.append(_row("small_clusters", f"labels in clusters per node, encoder {L} (flat read-out)",
                     f"{lab.fmt()} of K={K} labels; cluster size {size.fmt()}; noise {noise.fmt()} per node",
                     f"K/4 = {K / 4:g} labels (few) / K/2 (many)" + _null_text(sw, "flat", (
                         "labels_in_clusters", "cluster_size", "noise"), last), v,
                     "supported if the interval is below K/4; contradicted if above K/2",
                     null_verdict=nv, null_check=_check_text(v, nv)))
    # 2. one label per node
    top = summarise(fl["single_node_top_fraction"][:, last])
    sacc = summarise(fl["single_node_accuracy"][:, last])
    v = single_label_verdict(top)
    nt = _null_of(sw, "flat", "single_node_top_fraction", last)
    nv = single_label_verdict(nt) if nt is not None else None
    rows.append(_row("single_label", f"fraction of test images on a node's most frequent label, encoder {L} (flat)",
                     f"{_pct(top)} %; single-node accuracy {_pct(sacc)} %", f"chance accuracy {100 / K:.1f} %; "
                     f"1/K = {100 / K:.1f} % if predictions were spread" + _null_text(sw, "flat", (
                         "single_node_top_fraction", "single_node_accuracy"), last), v,
                     "supported if the interval of the top fraction is above 50 %; contradicted if below",
                     null_verdict=nv, null_check=_check_text(v, nv)))
    # 3. accuracy, noise and SNR along the encoders, every read-out; from the tokenizer and from encoder 1
    #    (the tokenizer is not an encoder: "along the transformer encoders" is read both ways)
    def trend_row(key, mode, q, want, name, scale, unit):
        t, te = trend_verdict(vals[mode][q] * scale, want), trend_verdict(vals[mode][q][:, 1:] * scale, want)
        a, digits = t["per_position"], 1 if scale > 1 else 2
        up = "up" if want == "rise" else "down"
        meas = (f"{a[0].fmt(1, digits)} -> {a[1].fmt(1, digits)} -> {a[-1].fmt(1, digits)}{unit} (tokenizer, "
                f"encoder 1, encoder {L}); last-first {t['total'].fmt(1, digits)}, from encoder 1 "
                f"{te['total'].fmt(1, digits)}; steps significantly {up} {t['steps_with']}/{L}, against "
                f"{t['steps_against']}/{L}")
        verdict = (f"tokenizer -> enc {L}: {t['verdict']}; enc 1 -> enc {L}: {te['verdict']}" if L > 1
                   else t["verdict"])
        null, check, nd = "paired differences over seeds", "no null run", {}
        if sw.draws:
            n0, n1 = sw.trend(mode, q, want, 0, scale), sw.trend(mode, q, want, 1, scale) if L > 1 else None
            pn = n0["null"]["per_position"]
            null += (f"; label-permutation null ({sw.draws} draw(s) per seed): {pn[0].fmt(1, digits)} -> "
                     f"{pn[1].fmt(1, digits)} -> {pn[-1].fmt(1, digits)}{unit}, last-first "
                     f"{n0['null']['total'].fmt(1, digits)}; excess over the null, last-first "
                     + (n0["excess"]["total"].fmt(1, digits) if n0["excess"] else "-"))
            parts = [(f"tokenizer -> enc {L}", n0)] + ([(f"enc 1 -> enc {L}", n1)] if n1 else [])
            word = lambda n: (f"{n['check']} (null {n['null']['verdict']}; excess over the null "   # noqa: E731
                              f"{n['excess']['verdict'] if n['excess'] else '-'})")
            check = "; ".join(f"{w}: {word(n)}" for w, n in parts) if L > 1 else word(n0)
            nd = {"null_verdict": {w: n["null"]["verdict"] for w, n in parts},
                  "excess_verdict": {w: n["excess"]["verdict"] if n["excess"] else None for w, n in parts}}
        rows.append(_row(key, f"{name} ({mode} read-out)", meas, null, verdict, t["rule"], null_check=check, **nd))
        return t, te

    trends = {}
    for mode in modes:
        trends[(mode, "accuracy")] = trend_row("accuracy_rises", mode, "accuracy", "rise", "read-out accuracy", 100,
                                               " %")
    for mode in modes:
        for q, want, name in (("snr", "rise", "SNR <S>/<noise>"), ("noise", "fall", "noise per node")):
            trends[(mode, q)] = trend_row("sharpened", mode, q, want, name, 1, "")
    variants = {q: (trend_verdict(vals["flat"][q], "rise"), trend_verdict(vals["flat"][q][:, 1:], "rise"))
                for q in ("snr_a", "snr_b", "snr_c", "snr_d")}
    vnull, vcheck = "paired differences over seeds", "no null run"
    if sw.draws:
        vn = {q: sw.trend("flat", q, "rise") for q in variants}
        vnull += "; label-permutation null: " + "; ".join(
            f"{q[-1]}: {n['null']['per_position'][0].fmt()} -> {n['null']['per_position'][-1].fmt()}"
            for q, n in vn.items())
        vcheck = "; ".join(f"{q[-1]}: {n['check']} (null {n['null']['verdict']})" for q, n in vn.items())
    rows.append(_row("sharpened", f"SNR variants (a) labels/noise, (b) median S/noise, (c) field ratio, (d) S/column "
                     f"noise, tokenizer -> encoder {L} (flat read-out)",
                     "; ".join(f"{q[-1]}: {t['per_position'][0].fmt()} -> {t['per_position'][-1].fmt()}"
                               for q, (t, _) in variants.items()), vnull,
                     "; ".join(f"{q[-1]}: {t['verdict']} (from enc 1: {te['verdict']})"
                               for q, (t, te) in variants.items()), trends[("flat", "snr")][0]["rule"],
                     null_check=vcheck))
    # 4. ANDC against its baselines
    rows += andc_rows(andc_runs, full_logits, y_te, L, retrain_epochs, tolerance, seed=seeds[0])
    # 5. heads: specialisation index and SHP against random partitions (statistic averaged over seeds)
    head_rows = {}
    if h >= 2:
        si_res, hp_res = head_null_tests(heads_L, heads_V, d, threshold, n_draws, seed=seeds[0])
        for key, res, word, alt in (("heads_break_symmetry", si_res, "specialisation index", 1),
                                    ("few_heads", hp_res, "heads per recognised label (SHP diagonal)", -1)):
            p_adj, _ = holm([r["p_value"] for r in res])
            p_other, _ = holm([opposite_tail_p(r["observed"], r["null"], "greater" if alt > 0 else "less")
                               for r in res])
            v = _null_verdict(p_adj, p_other)
            meas = "; ".join(f"enc {e + 1}: {r['observed']:.3f} vs {r['null_mean']:.3f} +- {r['null_sd']:.3f} "
                             f"(p_Holm {p:.2g})" for e, (r, p) in enumerate(zip(res, p_adj)))
            rows.append(_row(key, f"{word} of the real heads, per encoder (flat read-out of mha_heads, averaged "
                             f"over {S} seeds)", meas, f"{n_draws} random partitions of the {D} nodes into "
                             f"groups of {d} (shuffled-node control)", v,
                             "supported if a majority of encoders are beyond the null on the claimed side (Holm p <= "
                             "0.05, one-sided); contradicted if a majority are beyond it on the opposite side; "
                             "inconclusive otherwise"))
            head_rows[key] = [{"observed": r["observed"], "null_mean": r["null_mean"], "null_sd": r["null_sd"],
                               "p_value": r["p_value"], "p_holm": float(p)} for r, p in zip(res, p_adj)]
        # 6. head ablation: designated labels from the seed-summed counts, Holm over all heads, MDE
        abl = head_ablation_tests(params, cfg, data, heads_L, full_logits, A_te, n_perm, seed=seeds[0])
        ps, gaps, n_pos, m, p_adj, rej, mde = (abl[k] for k in ("p", "gap", "n_positive", "m", "p_holm", "reject",
                                                                 "mde"))
        v = _null_verdict(abl["p_holm"], abl["p_holm_other"])
        rows.append(_row("heads_expert", "zeroing a head: mean per-label accuracy drop on its designated labels "
                         "minus on the others",
                         f"gap > 0 in {n_pos}/{m} heads; significant after Holm in {sum(rej)}/{m}; "
                         f"median gap {100 * float(np.nanmedian(gaps)):.1f} points; minimum detectable gap "
                         f"{100 * mde:.1f} points (80 % power at alpha 0.05/{m})",
                         f"{n_perm} random label sets of the same size per head", v,
                         "supported if a majority of heads have a gap significantly > 0 after Holm; contradicted if "
                         "a majority have a gap significantly < 0 after Holm; inconclusive otherwise (see the MDE)"))
        head_rows["ablation"] = {"p": ps, "p_holm": list(p_adj), "gap": gaps, "mde": mde}
    # 7. clusters vs ground-truth groups (clusters of the last encoder, all seeds pooled)
    if data.groups:
        tests = {g: group_permutation_test(last_clusters, np.asarray(gv), n_draws=group_draws, seed=seeds[0])
                 for g, gv in data.groups.items()}
        p_adj, rej = holm([t["p_value"] for t in tests.values()])
        v = SUPPORTED if rej.any() else INCONCLUSIVE
        meas = "; ".join(f"{g}: {100 * t['fraction']:.1f} % inside vs {100 * t['null_mean']:.1f} % (p_Holm "
                         f"{p:.2g}, {t['method']})" for (g, t), p in zip(tests.items(), p_adj))
        rows.append(_row("groups", f"multi-label clusters of encoder {L} inside one group ({S} seeds pooled)", meas,
                         "label-permutation null (group sizes kept)", v,
                         "supported if any grouping is significant after Holm (p <= 0.05); inconclusive otherwise"))
    positions = {mode: {q: [s.to_dict() for s in summarise_columns(vals[mode][q])] for q in QUANTITIES}
                 for mode in modes}
    for r in rows:                                              # rows with a null of their own (ANDC baselines,
        r.setdefault("null_check", "own null / baseline (previous column)")   # partitions, group permutation)
    return {"rows": rows, "positions": positions, "heads": head_rows, "null": sw.to_dict(), "null_rule": NULL_RULE,
            "andc_readout": ro, "andc_readout_before": {k: [r["readout_before"][k] for r in andc_runs] for k in ro},
            "ff": ff_acc, "model_accuracy": acc_model,
            "config": {"seeds": seeds, "modes": list(modes), "epochs": epochs, "retrain_epochs": retrain_epochs,
                       "threshold": threshold, "n_train": len(y_tr), "n_test": len(y_te), "tolerance": tolerance,
                       "n_draws": n_draws, "n_perm": n_perm, "num_layers": L, "num_heads": h, "K": K,
                       "null_draws": sw.draws},
            "seconds": time.time() - t0}


def format_claims_table(result, title=None) -> str:
    """The claims table as Markdown: claim (source), measured (95 % interval over seeds), null / baseline,
    verdict."""
    lines = []
    if title:
        lines.append(f"**{title}**\n")
    lines.append("| claim (source) | measured: quantity, mean [95 % interval] | null / baseline | verdict | "
                 "against the label-permutation null |")
    lines.append("|---|---|---|---|---|")
    for r in result["rows"]:
        cell = lambda s: str(s).replace("|", "/")
        lines.append(f"| \"{cell(r['claim'])}\" ({r['source']}) | {cell(r['quantity'])}: {cell(r['measured'])} | "
                     f"{cell(r['null_or_baseline'])} | **{cell(r['verdict'])}** | {cell(r.get('null_check', '-'))} |")
    if result.get("null_rule"):
        lines.append(f"\nNull rule: {result['null_rule']}.")
    return "\n".join(lines)




def format_positions_table(positions, mode="flat", quantities=None) -> str:
    """Per-encoder quantities of one read-out mode as text: mean [95 % interval over seeds], tokenizer first.

    positions: result["positions"] of `replicate` (or {mode: {quantity: [Summary dicts]}})."""
    per = positions[mode]
    E = len(next(iter(per.values())))
    width = 22
    lines = [f"{mode + ' read-out':<26}" + "".join(f"{'tokenizer' if p == 0 else 'encoder ' + str(p):>{width}}"
                                                     for p in range(E))]
    for q in quantities or QUANTITIES:
        label, scale, digits = LABELS[q]
        cells = []
        for sd in per[q]:
            m, lo, hi = (sd[k] if sd[k] is not None else float("nan") for k in ("mean", "lo", "hi"))
            f = f"{{:.{digits}f}}"
            cells.append(f"{f.format(scale * m)} [{f.format(scale * lo)}, {f.format(scale * hi)}]"
                         if np.isfinite(lo) else f.format(scale * m))
        lines.append(f"  {label:<24}" + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    return x


def write_outputs(result, out_dir, title="") -> dict:
    """Write claims.json (first, atomically), claims.md and claims.png into out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from ..io.atomic import atomic_write_text     # a full disk or a kill keeps the previous file, no .tmp left
    js = out / "claims.json"
    atomic_write_text(js, json.dumps(_jsonable(dict(result, title=title)), indent=1))
    md = out / "claims.md"
    atomic_write_text(md, format_claims_table(result, title) + "\n")
    png = plot_claims_summary(result, out / "claims.png", title)
    return {"json": str(js), "md": str(md), "png": str(png)}


def plot_claims_summary(result, path, title=""):
    """One PNG: read-out accuracy and SNR along the encoders (mean and 95 % interval over seeds, every read-out;
    dashed with a hatched band: the label-permutation null, mean and 95 % interval),
    ANDC read-out against its baselines, and the heads' specialisation index against random partitions."""
    from ..plots import _save, plt
    fig, ax = plt.subplots(1, 4, figsize=(18, 4))
    cfg = result["config"]
    x = np.arange(cfg["num_layers"] + 1)
    ticks = ["tok"] + [f"enc {e + 1}" for e in range(cfg["num_layers"])]
    for a, q, lab in ((ax[0], "accuracy", "read-out accuracy"), (ax[1], "snr", "SNR <S>/<noise>")):
        for mode, per in result["positions"].items():
            m = np.array([s["mean"] for s in per[q]], dtype=float)
            lo = np.array([s["lo"] for s in per[q]], dtype=float)
            hi = np.array([s["hi"] for s in per[q]], dtype=float)
            line, = a.plot(x, m, marker="o", label=mode)
            ok = np.isfinite(lo) & np.isfinite(hi)
            a.fill_between(x[ok], lo[ok], hi[ok], alpha=0.2, color=line.get_color())
            nul = (result.get("null") or {}).get("quantities", {}).get(mode, {}).get(q)
            if nul and result["null"]["null_draws"]:               # the label-permutation null beside the curve
                from ..plots import draw_null_band
                draw_null_band(a, x, [r["null"] for r in nul], line.get_color(), f"{mode}, shuffled labels")
        a.set_xticks(x, ticks)
        a.set_title(f"{lab} (95 % interval, {len(cfg['seeds'])} seeds)")
        a.legend(fontsize=8)
    names = ["andc", "random", "magnitude", "unpruned"]
    from .stats import summarise
    ss = [summarise(result["andc_readout"][k]) for k in names]
    means = [100 * s.mean for s in ss]
    err = [[100 * (s.mean - s.lo) if np.isfinite(s.lo) else 0 for s in ss],
           [100 * (s.hi - s.mean) if np.isfinite(s.hi) else 0 for s in ss]]
    ax[2].bar(names, means, yerr=err, capsize=4, color=["C3", "C0", "C1", "C7"])
    ax[2].tick_params(axis="x", labelsize=8)
    ax[2].set_ylim(max(0, min(means) - 10), min(100, max(means) + 5))
    ax[2].set_title(f"last-encoder read-out, +{cfg['retrain_epochs']} ep retrained (%)")
    si = result["heads"].get("heads_break_symmetry")
    if si:
        e = np.arange(1, len(si) + 1)
        ax[3].errorbar(e, [r["null_mean"] for r in si], yerr=[2 * r["null_sd"] for r in si], fmt="s", color="C7",
                       capsize=4, label="random partitions (mean +- 2 sd)")
        ax[3].plot(e, [r["observed"] for r in si], "o", color="C3", label="real heads")
        ax[3].set_xticks(e)
        ax[3].set_xlabel("encoder")
        ax[3].legend(fontsize=8)
    ax[3].set_title("head specialisation index")
    fig.suptitle(title, y=1.04)
    return _save(fig, path)


def head_verdicts(sweep, head_sites, head_dim, threshold=0.3, n_draws=200, seed=0, alpha=0.05) -> dict:
    """Head verdicts of the attention-head sites of a NullSweep, as the claims table gives them (replicate.py):
    per site the specialisation index (SI) and the SHP heads per recognised label of the real heads against
    n_draws random partitions of the nodes into groups of head_dim (the statistic averaged over the seeds),
    one-sided p, Holm over the sites, both tails; verdict by replicate._null_verdict (a majority of sites beyond
    the null on the claimed side: supported; on the other side: contradicted; else inconclusive).
    Needs the SiteAnalyses of every seed at those sites in sweep.kept (read-out "flat" if swept, else the first).
    Returns a dict: mode, sites, si / shp (per site: observed, null_mean, null_sd, p_value, p_holm),
    si_verdict, shp_verdict, text.
    """
    from .clusters import node_labels
    mode = "flat" if "flat" in sweep.modes else sweep.modes[0]
    missing = [(s, n) for n in head_sites for s in sweep.seeds if (s, n, mode) not in sweep.kept]
    if missing:
        raise ValueError(f"head_verdicts needs the {mode} SiteAnalyses of every seed at {missing[:3]}...")
    Ls = [[node_labels(sweep.kept[(s, n, mode)].B) for s in sweep.seeds] for n in head_sites]
    Vs = [[sweep.kept[(s, n, mode)].V for s in sweep.seeds] for n in head_sites]
    si_res, hp_res = head_null_tests(Ls, Vs, head_dim, threshold, n_draws, seed=seed)
    out = {"mode": mode, "sites": list(head_sites), "head_dim": head_dim, "n_draws": n_draws}
    lines = [f"head verdicts ({mode} read-out, {len(sweep.seeds)} seed(s) averaged; null: {n_draws} random partitions "
             f"of the nodes into groups of {head_dim}; Holm over {len(head_sites)} site(s)):"]
    for key, res, alt, word in (("si", si_res, "greater", "specialisation index (higher = specialised)"),
                                ("shp", hp_res, "less", "SHP heads per recognised label (fewer = specialised)")):
        p_adj, _ = holm([r["p_value"] for r in res], alpha)
        p_oth, _ = holm([opposite_tail_p(r["observed"], r["null"], alt) for r in res], alpha)
        out[key] = [{"site": n, "observed": r["observed"], "null_mean": r["null_mean"], "null_sd": r["null_sd"],
                     "p_value": r["p_value"], "p_holm": float(p)} for n, r, p in zip(head_sites, res, p_adj)]
        out[f"{key}_verdict"] = _null_verdict(p_adj, p_oth, alpha)
        lines.append(f"  {word}: {out[f'{key}_verdict'].upper()}; " + "; ".join(
            f"{n}: {r['observed']:.3f} vs {r['null_mean']:.3f} +- {r['null_sd']:.3f} (p_Holm {p:.2g})"
            for n, r, p in zip(head_sites, res, p_adj)))
    out["text"] = "\n".join(lines)
    return out


def row_verdict(text) -> str:
    """One verdict per claims row: a row comparing several spans ("tokenizer -> enc 4: supported; enc 1 ->
    enc 4: inconclusive") is 'mixed' when they differ, so verdict counts add up to the rows."""
    import re
    parts = re.findall(r"\b(supported|contradicted|inconclusive)\b", str(text))
    if not parts:
        return str(text).split()[0] if str(text).split() else "none"
    return parts[0] if len(set(parts)) == 1 else "mixed"
