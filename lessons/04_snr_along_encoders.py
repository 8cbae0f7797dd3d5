"""Lesson 04: does the SNP structure sharpen along the encoders? (Koresh et al. 2025: "these features are
progressively sharpened along the transformer encoders, enhancing the signal-to-noise ratio")

For the tokenizer output and every encoder of the classroom checkpoint, with three read-outs (the authors'
on the flattened tokens, a token-averaged one, and a fresh sequence pooling like the CCT's own head): the
read-out accuracy, the noise per node
and the SNR. It prints whether each quantity rises (or, for the noise, falls) from the tokenizer to the last
encoder, and how many encoder-to-encoder steps go that way: the answer is measured in this run, not assumed.

Run:  python lessons/04_snr_along_encoders.py  [--sites out,ff_hidden,mha_heads] [--epochs 5] [--out runs/04_snr]
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

from minicct.analysis.report import run_snp  # noqa: E402
from minicct.datasets import load  # noqa: E402
from minicct.plots import plot_along_encoders  # noqa: E402
from minicct.train.checkpoint import load_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def trend(values, want):
    """'rises' / 'falls' verdict of a sequence: first vs last, and the number of steps in the wanted direction."""
    steps = [b - a for a, b in zip(values, values[1:])]
    good = sum((s > 0) if want == "rise" else (s < 0) for s in steps)
    change = values[-1] - values[0]
    holds = change > 0 if want == "rise" else change < 0
    return holds, good, len(steps)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "data" / "checkpoints" / "classroom.npz"))
    ap.add_argument("--dataset", default="embedded")
    ap.add_argument("--sites", default="out", help="comma separated: out, mha_heads, mha_out, ff_hidden")
    ap.add_argument("--modes", default="flat,mean,seqpool",
                    help="read-outs: flat (the authors'), mean (token average), seqpool (the CCT's own pooling)")
    ap.add_argument("--epochs", type=int, default=10, help="read-out training epochs (authors: 200)")
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--out", default="runs/04_snr")
    args = ap.parse_args(argv)

    t0 = time.time()
    params, cfg, meta, _ = load_checkpoint(args.checkpoint)
    data = load(args.dataset)
    sites, modes = tuple(args.sites.split(",")), tuple(args.modes.split(","))
    rep = run_snp(params, cfg, data, sites=sites, modes=modes, epochs=args.epochs, threshold=args.threshold,
                  n_train=args.n_train)
    plot = plot_along_encoders(rep, Path(args.out) / "along_encoders.png")
    print()
    verdicts = []
    for site in sites:
        for mode in modes:
            rs = sorted([r for r in rep.results if r.mode == mode and r.part in (site, "tokens")],
                        key=lambda r: r.depth)
            acc = [100 * r.accuracy for r in rs]
            noise = [r.summary["mean_noise"] for r in rs]
            snr = [r.summary["snr"] for r in rs]
            print(f"site {site}, {mode} read-out      " + "".join(f"{'tok' if r.depth == 0 else 'enc ' + str(r.depth):>8}"
                                                            for r in rs))
            for name, vals, fmt in (("read-out accuracy %", acc, "8.1f"), ("noise per node", noise, "8.2f"),
                                    ("SNR", snr, "8.2f")):
                print(f"  {name:<28}" + "".join(format(v, fmt) for v in vals))
            for name, vals, want in (("accuracy", acc, "rise"), ("noise", noise, "fall"), ("SNR", snr, "rise")):
                holds, good, n = trend(vals, want)
                verdicts.append(holds)
                print(f"  -> {name} {'does' if holds else 'does NOT'} {want} from the tokenizer to encoder "
                      f"{cfg.num_layers} ({vals[0]:.2f} -> {vals[-1]:.2f}); {good} of {n} steps {want}")
            print()
    print(f"plot: {plot}")
    print(f"{sum(verdicts)} of {len(verdicts)} of the paper's trends hold here ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
