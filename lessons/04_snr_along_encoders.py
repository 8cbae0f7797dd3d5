"""Lesson 04: does the SNP structure sharpen along the encoders? (Koresh et al. 2025: "these features are
progressively sharpened along the transformer encoders, enhancing the signal-to-noise ratio")

For the tokenizer output and every encoder ("encoder 1" .. "encoder L"), with three read-outs (the authors' on
the flattened tokens, a token-averaged one, and a fresh sequence pooling like the CCT's own head), and for several
read-out seeds (each seed trains every read-out afresh): the read-out accuracy, the noise per node and the SNR,
as mean [95 % interval over seeds].

One seed is not enough: a read-out is a trained model, and its SNR moves from seed to seed. The verdict on
"X rises along the encoders" is therefore decided on paired differences within a seed (minicct.analysis.stats,
trend_verdict), by a rule stated before looking:
  supported     the 95 % interval of (last - first) is above 0 and no encoder-to-encoder step is significantly
                the other way (step intervals Bonferroni-corrected);
  contradicted  the (last - first) interval is below 0, or some step is significantly the other way;
  inconclusive  otherwise.
The tokenizer is not an encoder, so every trend is also decided from encoder 1 to encoder L. The answer is
measured in this run, not assumed. `python -m minicct replicate --seeds 5` runs the same rule (and all the other
claims) with more seeds.

Run:  python lessons/04_snr_along_encoders.py  [--material real|embedded] [--seeds 3] [--epochs 5] [--sites out]
      [--out runs/04_snr]
"""
import _common  # noqa: F401  (first: one BLAS thread, minicct importable from a checkout)

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _common import Clock, add_material_args, load_material
from minicct.analysis.nulls import NULL_DRAWS, sweep_with_null
from minicct.analysis.report import capture
from minicct.analysis.stats import trend_verdict
from minicct.sites import site_names


@dataclass(frozen=True)
class Quantity:
    """One SNP quantity followed along the encoders, and the direction the paper's claim expects."""
    key: str        # column of seed_sweep's values
    label: str      # printed name
    scale: float    # 100 for percentages
    want: str       # "rise" or "fall"


QUANTITIES = (Quantity("accuracy", "read-out accuracy %", 100, "rise"), Quantity("noise", "noise per node", 1, "fall"),
              Quantity("snr", "SNR <S>/<noise>", 1, "rise"))


@dataclass
class Trend:
    """A quantity along the positions (tokenizer, encoder 1 .. encoder L) and the verdicts on its trend."""
    quantity: Quantity
    per_position: list      # Summary per position, tokenizer first
    verdict: str            # tokenizer -> encoder L: supported / contradicted / inconclusive
    total: object           # Summary of last - first
    steps_with: int         # steps significantly in the claimed direction
    steps_against: int
    rule: str
    from_encoder_1: dict | None   # the same rule from encoder 1 to encoder L (None with one encoder)
    null_check: str = ""          # the same trend under permuted labels (stats.null_check), "" without a null


def measure_trend(values, q: Quantity, null_check="") -> Trend:
    """values: [seeds, positions] of one read-out mode and quantity, tokenizer first."""
    t = trend_verdict(values * q.scale, q.want)
    te = trend_verdict(values[:, 1:] * q.scale, q.want) if values.shape[1] > 2 else None
    return Trend(q, t["per_position"], t["verdict"], t["total"], t["steps_with"], t["steps_against"], t["rule"], te,
                 null_check)


def print_trends(site, mode, trends, L):
    width = 22
    print(f"site {site}, {mode} read-out   " + "".join(f"{'tokenizer' if p == 0 else f'encoder {p}':>{width}}"
                                                       for p in range(L + 1)))
    for t in trends:
        digits = 1 if t.quantity.scale > 1 else 2
        print(f"  {t.quantity.label:<22}" + "".join(f"{s.fmt(1, digits):>{width}}" for s in t.per_position))
    for t in trends:
        q = t.quantity
        print(f"  -> {q.key} {q.want}s along the encoders: {t.verdict.upper()}  (last - first {t.total.fmt()}; "
              f"steps significantly {q.want}: {t.steps_with} of {L}, against: {t.steps_against})")
        if t.from_encoder_1:
            print(f"     from encoder 1 to {L}: {t.from_encoder_1['verdict'].upper()}  (last - first "
                  f"{t.from_encoder_1['total'].fmt()})")
        if t.null_check:
            print(f"     against the label-permutation null: {t.null_check}")
    print()


def plot(vals, modes, site, L, path):
    from minicct.plots import _save, plt
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.6))
    x = np.arange(L + 1)
    for a, q in zip(ax, QUANTITIES):
        for mode in modes:
            t = measure_trend(vals[mode][q.key], q).per_position
            m, lo, hi = (np.array([getattr(s, k) for s in t]) for k in ("mean", "lo", "hi"))
            a.plot(x, m, marker="o", label=mode)
            ok = np.isfinite(lo) & np.isfinite(hi)
            a.fill_between(x[ok], lo[ok], hi[ok], alpha=0.2)
        a.set_xticks(x, ["tokenizer"] + [f"encoder {e + 1}" for e in range(L)], fontsize=8)
        a.set_title(f"{q.label} (site {site})")
        a.legend(fontsize=8)
    return _save(fig, path)


def main(argv=None):
    args = parse_args(argv)
    clock = Clock()
    m = load_material(args)
    sites, modes = tuple(args.sites.split(",")), tuple(args.modes.split(","))
    L, seeds, K = m.cfg.num_layers, list(range(args.seeds)), m.cfg.num_classes
    x_tr, y_tr, y_te = m.data.x_train[:args.n_train], m.data.y_train[:args.n_train], m.data.y_test
    clock.step(f"capturing the tokenizer and {L} encoders (sites: {', '.join(sites)}) for {len(y_tr)} + "
               f"{len(y_te)} images ...")
    names = site_names(L, sites)                                        # "tokens", then encoder by encoder
    A_tr = capture(m.params, m.cfg, x_tr, m.data.mean, m.data.std, names)       # {name: [N, T, D]}
    A_te = capture(m.params, m.cfg, m.data.x_test, m.data.mean, m.data.std, names)
    trends, figures = [], []
    for site in sites:
        clock.step(f"site {site}: {len(seeds) * (L + 1) * len(modes)} read-outs ({len(modes)} kinds x {len(seeds)} "
                   f"seeds x tokenizer and {L} encoders, {args.epochs} epochs each) ...")
        sweep = sweep_with_null(A_tr, y_tr, A_te, y_te, K, site_names(L, (site,)), modes, seeds, args.epochs,
                                args.threshold, args.null_draws)        # and with permuted labels
        vals = sweep.real                                               # vals[mode][quantity]: [seeds, positions]
        print(f"each cell: mean [95 % interval over read-out seeds {', '.join(map(str, seeds))}]")
        for mode in modes:
            site_trends = [measure_trend(vals[mode][q.key], q, sweep.trend(mode, q.key, q.want)["check"]
                                         if args.null_draws else "") for q in QUANTITIES]
            print_trends(site, mode, site_trends, L)
            trends += site_trends
        figures.append(plot(vals, modes, site, L, Path(args.out) / f"along_encoders_{site}.png"))
    verdicts = [t.verdict for t in trends]
    print(f"rule (for 'falls' read 'below 0'): {trends[0].rule}")
    print(f"verdicts: {verdicts.count('supported')} supported, {verdicts.count('contradicted')} contradicted, "
          f"{verdicts.count('inconclusive')} inconclusive of {len(verdicts)} trends ({clock.total():.0f} s)")
    print(f"look at: the '->' lines (tokenizer to encoder {L}) and the 'from encoder 1' lines; open "
          + ", ".join(str(f) for f in figures) + " (mean and interval per position)")
    return 0


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_material_args(ap)
    ap.add_argument("--sites", default="out", help="comma separated: out, mha_heads, mha_out, ff_hidden")
    ap.add_argument("--modes", default="flat,mean,seqpool",
                    help="read-outs: flat (the authors'), mean (token average), seqpool (the CCT's own pooling)")
    ap.add_argument("--seeds", type=int, default=3, help="read-out seeds (>= 2 for a verdict)")
    ap.add_argument("--epochs", type=int, default=5, help="read-out training epochs (authors: 200)")
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--null-draws", type=int, default=NULL_DRAWS,
                    help=f"label-permutation runs per seed (default {NULL_DRAWS}; 0 = no null)")
    ap.add_argument("--n-train", type=int, default=None, help="training images for the read-outs (all)")
    ap.add_argument("--out", default="runs/04_snr", help="folder for the figure")
    return ap.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
