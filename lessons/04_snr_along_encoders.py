"""Lesson 04: does the SNP structure sharpen along the encoders? (Koresh et al. 2025: "these features are
progressively sharpened along the transformer encoders, enhancing the signal-to-noise ratio")

For the tokenizer output and every encoder of the classroom checkpoint, with three read-outs (the authors'
on the flattened tokens, a token-averaged one, and a fresh sequence pooling like the CCT's own head), and for
several read-out seeds (each seed trains every read-out afresh): the read-out accuracy, the noise per node and
the SNR, as mean [95 % interval over seeds].

One seed is not enough: a read-out is a trained model, and its SNR moves from seed to seed. The verdict on
"X rises along the encoders" is therefore decided on paired differences within a seed (minicct.analysis.stats,
trend_verdict), by a rule stated before looking:
  supported     the 95 % interval of (last - first) is above 0 and no encoder-to-encoder step is significantly
                the other way (step intervals Bonferroni-corrected);
  contradicted  the (last - first) interval is below 0, or some step is significantly the other way;
  inconclusive  otherwise.
The answer is measured in this run, not assumed. `python -m minicct replicate --seeds 5` runs the same rule
(and all the other claims) with more seeds.

Run:  python lessons/04_snr_along_encoders.py  [--seeds 3] [--epochs 5] [--sites out] [--out runs/04_snr]
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

from minicct.analysis.replicate import seed_sweep  # noqa: E402
from minicct.analysis.report import capture  # noqa: E402
from minicct.analysis.stats import trend_verdict  # noqa: E402
from minicct.datasets import load  # noqa: E402
from minicct.io.checkpoints import load_any_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRENDS = (("accuracy", "read-out accuracy %", 100, "rise"), ("noise", "noise per node", 1, "fall"),
          ("snr", "SNR <S>/<N>", 1, "rise"))


def plot(vals, modes, site, L, path):
    from minicct.plots import _save, plt
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.6))
    x = np.arange(L + 1)
    for a, (q, label, scale, _) in zip(ax, TRENDS):
        for mode in modes:
            t = trend_verdict(vals[mode][q] * scale)["per_position"]
            m = np.array([s.mean for s in t])
            lo, hi = np.array([s.lo for s in t]), np.array([s.hi for s in t])
            a.plot(x, m, marker="o", label=mode)
            ok = np.isfinite(lo) & np.isfinite(hi)
            a.fill_between(x[ok], lo[ok], hi[ok], alpha=0.2)
        a.set_xticks(x, ["tok"] + [f"enc {e + 1}" for e in range(L)])
        a.set_title(f"{label} (site {site})")
        a.legend(fontsize=8)
    return _save(fig, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "data" / "checkpoints" / "classroom.npz"))
    ap.add_argument("--dataset", default="embedded")
    ap.add_argument("--sites", default="out", help="comma separated: out, mha_heads, mha_out, ff_hidden")
    ap.add_argument("--modes", default="flat,mean,seqpool",
                    help="read-outs: flat (the authors'), mean (token average), seqpool (the CCT's own pooling)")
    ap.add_argument("--seeds", type=int, default=3, help="read-out seeds (>= 2 for a verdict)")
    ap.add_argument("--epochs", type=int, default=5, help="read-out training epochs (authors: 200)")
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--out", default="runs/04_snr")
    args = ap.parse_args(argv)

    t0 = time.time()
    params, cfg, meta = load_any_checkpoint(args.checkpoint)   # .npz, .pth or training checkpoint
    data = load(args.dataset)
    sites, modes = tuple(args.sites.split(",")), tuple(args.modes.split(","))
    L, seeds = cfg.num_layers, list(range(args.seeds))
    x_tr, y_tr = data.x_train[:args.n_train], data.y_train[:args.n_train]
    names = ["tokens"] + [f"enc{e}.{s}" for s in sites for e in range(L)]
    A_tr = capture(params, cfg, x_tr, data.mean, data.std, names)
    A_te = capture(params, cfg, data.x_test, data.mean, data.std, names)
    print(f"checkpoint {args.checkpoint}: {L} encoders x {cfg.num_heads} heads; read-outs of {args.epochs} epochs on "
          f"{len(y_tr)} images, seeds {seeds}; mean [95 % interval over seeds]\n")
    verdicts, rule = [], ""
    for site in sites:
        order = ["tokens"] + [f"enc{e}.{site}" for e in range(L)]
        vals, _ = seed_sweep(A_tr, y_tr, A_te, data.y_test, cfg.num_classes, order, modes, seeds, args.epochs,
                             args.threshold)
        for mode in modes:
            print(f"site {site}, {mode} read-out" + "".join(f"{'tok' if p == 0 else 'enc ' + str(p):>22}"
                                                         for p in range(L + 1)))
            for q, label, scale, want in TRENDS:
                t = trend_verdict(vals[mode][q] * scale, want)
                print(f"  {label:<22}" + "".join(f"{s.fmt(1, 1 if scale > 1 else 2):>22}" for s in t["per_position"]))
            for q, label, scale, want in TRENDS:
                t = trend_verdict(vals[mode][q] * scale, want)
                verdicts.append(t["verdict"])
                rule = t["rule"]
                print(f"  -> {q} {want}s along the encoders: {t['verdict'].upper()}  (last - first "
                      f"{t['total'].fmt()}; steps significantly {want}: {t['steps_with']} of {L}, against: "
                      f"{t['steps_against']})")
                if L > 1:                                      # the tokenizer is not an encoder: also from encoder 1
                    te = trend_verdict(vals[mode][q][:, 1:] * scale, want)
                    print(f"     from encoder 1 to {L}: {te['verdict'].upper()}  (last - first {te['total'].fmt()})")
            print()
        fig = plot(vals, modes, site, L, Path(args.out) / f"along_encoders_{site}.png")
        print(f"plot: {fig}")
    print(f"\nrule (for 'falls' read 'below 0'): {rule}")
    print(f"verdicts: {verdicts.count('supported')} supported, {verdicts.count('contradicted')} contradicted, "
          f"{verdicts.count('inconclusive')} inconclusive of {len(verdicts)} trends ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
