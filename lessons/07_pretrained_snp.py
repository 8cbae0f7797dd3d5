"""Lesson 7: the single-nodal-performance (SNP) analysis of the official CCT-7/3x1 CIFAR-100 weights.

    python lessons/07_pretrained_snp.py [--pretrained cct_7_3x1_32_c100] [--n-train 2000] [--n-test 2000]
        [--epochs 3] [--site out] [--modes flat,mean] [--threshold 0.3] [--memory-gb 4] [--probe-images N]
        [--out DIR]

The earlier lessons ran the analysis on the small classroom model. Here it runs on the network the paper's
authors studied: CCT-7/3x1 trained by Hassani et al. for 300 epochs on CIFAR-100 (published top-1 80.92%),
loaded from the official PyTorch checkpoint without PyTorch (minicct/io/pretrained.py, minicct/io/torch_io.py).

    1. plan and run-time estimate, measured on this machine with random weights and images by
       analysis.costs.measure_snp_rates (the measurement of `python -m minicct.bench --snp-scale paper`):
       seconds per captured image, and per training / test image of one epoch of each read-out; then
           estimate = capture passes x images x capture rate + epochs x images x read-out rates + fields
       Every capture pass pushes all n_train + n_test images through the network; run_snp packs as many
       sites into one pass as fit in --memory-gb (float32 [N, T, D] per site: 262 KB per image here).
    2. the weights and CIFAR-100 (downloaded once, verified; offline: the manual steps, exit code 2)
    3. the model's own top-1 on the first n_test test images, checked against the published accuracy
    4. analysis.report.run_snp: per-encoder read-out accuracy, node fields, clusters, noise, SNR, figures
    5. group_agreement: do multi-label clusters stay inside one CIFAR-100 superclass more often than chance?

Read-outs are trained on the first n_train training images without augmentation for a few epochs (the
authors: all 50,000 images, augmented, 200 epochs), so their accuracies are lower bounds [INF].
Exit code: 0 when the model's accuracy check passes, 1 when it fails, 2 when files are missing offline.
"""
import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

# Measured here: with two OpenBLAS threads on a busy 2-core machine the CCT-7/3x1 forward ran at 1-2 images/s,
# with one at 6-15. Set before NumPy loads; your own setting wins (try 2 on an idle machine).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # run from a checkout without installing

from minicct import model as M
from minicct.io import pretrained as P
from minicct.analysis.costs import measure_snp_rates, project_snp_seconds
from minicct.analysis.nulls import group_agreement
from minicct.analysis.report import SITES, run_snp, site_names
from minicct.datasets import load
from minicct.io.download import DownloadError
from minicct.parallel import resolve_workers
from minicct.train.loop import evaluate

LESSON_DATASETS = ("cifar10", "cifar100")


def capture_passes(cfg, names, n_images, budget_bytes) -> int:
    """Forward passes run_snp makes: the same greedy packing of sites under the byte budget (report.py)."""
    passes, size = 1, 0.0
    for i, n in enumerate(names):
        width = cfg.ff_dim if n.endswith("ff_hidden") else cfg.embedding_dim
        b = n_images * cfg.seq_len * width * 4                  # float32 [N, T, width]
        if i and size + b > budget_bytes:
            passes, size = passes + 1, 0.0
        size += b
    return passes


def plan_and_estimate(args, cfg, entry):
    """Print what will run and how long it should take; returns the estimated seconds.

    The rates come from analysis.costs.measure_snp_rates, the measurement behind
    `python -m minicct.bench --snp-scale paper`: a capture of --probe-images random images through the model
    with random weights, and one epoch of each read-out on random activations of each site shape."""
    names = site_names(cfg, args.sites)
    n_img = args.n_train + args.n_test
    n_probe = args.probe_images or resolve_workers(None) * args.batch_size   # every worker busy
    passes = capture_passes(cfg, names, n_img, args.memory_gb * 1e9)
    rates = measure_snp_rates(cfg, names, args.modes, n_capture=n_probe, n_readout=min(args.n_train, 500),
                              n_test=min(args.n_test, 200), batch_size=args.batch_size, seed=args.seed)
    t_acc = args.n_test * rates["capture_s_per_image"]                  # the accuracy check: one forward pass
    run = project_snp_seconds(rates, cfg, names, args.modes, args.n_train, args.n_test, args.epochs, passes)
    total = t_acc + run["total"]
    full_img = 60000
    full = 10000 * rates["capture_s_per_image"] + project_snp_seconds(
        rates, cfg, names, args.modes, 50000, 10000, args.epochs,
        capture_passes(cfg, names, full_img, args.memory_gb * 1e9))["total"]
    print(f"weights   {entry.name}: {entry.description}; published top-1 {entry.published_top1:.2f}%")
    print(f"model     {M.count_params(cfg):,} parameters, {cfg.seq_len} tokens x D={cfg.embedding_dim}, "
          f"{cfg.num_layers} encoders, {P.forward_macs(cfg) / 1e9:.3f} GMAC per image")
    print(f"analysis  {len(names)} sites ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}), read-outs "
          f"{'/'.join(args.modes)}, {args.epochs} epochs, {args.n_train} training + {args.n_test} test images, "
          f"threshold {args.threshold}")
    print(f"speed     {1 / rates['capture_s_per_image']:.1f} images/s measured (capture of {n_probe} "
          f"random images, batch {args.batch_size}, {rates['workers']} worker(s), random weights); read-out "
          "epoch per 1000 training images: " + ", ".join(
              f"{k} {1000 * v['train_s_per_image']:.2f} s" for k, v in rates["readout"].items())
          + " (analysis.costs.measure_snp_rates)")
    print(f"estimate  model accuracy {P.format_seconds(t_acc)} + activations {passes} capture "
          f"pass{'es' if passes > 1 else ''} x {n_img} images {P.format_seconds(run['capture'])} + read-outs "
          f"{P.format_seconds(run['readouts'])} = about {P.format_seconds(total)}")
    print(f"          (all 50000 + 10000 images would take about {P.format_seconds(full)} with "
          f"--memory-gb {args.memory_gb:g})", flush=True)
    return total


def get_inputs(args, entry):
    """(params, cfg, data, missing, broken): the weights and the dataset; `missing` lists the messages of
    files that could not be had (offline), `broken` those of files that are there but wrong."""
    params = cfg = data = None
    missing, broken = [], []
    try:
        params, cfg, _ = P.load_pretrained(entry.name, download=not args.no_download, allow_http=args.allow_http)
    except (DownloadError, FileNotFoundError) as exc:
        missing.append(f"the weights {entry.name}:\n{exc}")
    except ValueError as exc:                       # PretrainedError: hash mismatch or not this model
        broken.append(f"the weights {entry.name}:\n{exc}")
    try:
        data = load(entry.dataset, download=not args.no_download)
    except (DownloadError, FileNotFoundError) as exc:
        missing.append(f"the dataset {entry.dataset}:\n{exc}")
    except ValueError as exc:
        broken.append(f"the dataset {entry.dataset}:\n{exc}")
    return params, cfg, data, missing, broken


def offline_help(args, problems) -> int:
    print("\nCannot run: the following files are missing and could not be downloaded (no network, "
          "MINICCT_OFFLINE set, or --no-download).\n", file=sys.stderr)
    for i, p in enumerate(problems, 1):
        print(f"({i}) {p}\n", file=sys.stderr)
    env = f"MINICCT_DATA={os.environ['MINICCT_DATA']} " if os.environ.get("MINICCT_DATA") else ""
    cmd = env + " ".join(["python", *sys.argv])
    print("Manual steps: fetch each file above with a browser, wget or curl on a machine with network access, "
          "copy it to the path given (files already in place are used even offline), then run again:\n    "
          + cmd, file=sys.stderr)
    return 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pretrained", default="cct_7_3x1_32_c100",
                    help="official weights (CIFAR ones: " + ", ".join(
                        n for n, e in P.REGISTRY.items() if e.dataset in LESSON_DATASETS) + ")")
    ap.add_argument("--n-train", type=int, default=2000, help="training images for the read-outs (first N; "
                    "default 2000, all: 50000)")
    ap.add_argument("--n-test", type=int, default=2000, help="test images (first N; default 2000, all: 10000)")
    ap.add_argument("--epochs", type=int, default=3, help="read-out training epochs (default 3)")
    ap.add_argument("--site", default="out", choices=[*SITES, "all"], help="encoder site (default out)")
    ap.add_argument("--modes", default="flat,mean", help="read-out modes: flat (authors'), mean, seqpool")
    ap.add_argument("--threshold", type=float, default=0.3, help="threshold on V/max (default 0.3, authors')")
    ap.add_argument("--memory-gb", type=float, default=4.0, help="activation memory per capture pass (default 4)")
    ap.add_argument("--batch-size", type=int, default=50, help="images per forward batch (default 50)")
    ap.add_argument("--probe-images", type=int, default=None, help="random images captured to measure the speed "
                    "(default: one batch per worker)")
    ap.add_argument("--no-download", action="store_true", help="never download; stop if files are missing")
    ap.add_argument("--allow-http", action="store_true", help="also try the plain-HTTP mirror of the weights "
                    "(unauthenticated; default: HTTPS only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/07_pretrained_snp", help="folder for the figures")
    args = ap.parse_args(argv)
    args.sites = SITES if args.site == "all" else (args.site,)
    args.modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not (1 <= args.n_train <= 50000 and 1 <= args.n_test <= 10000 and args.epochs >= 1 and (args.probe_images or 1) >= 1):
        ap.error("need 1 <= --n-train <= 50000, 1 <= --n-test <= 10000, --epochs >= 1 and --probe-images >= 1")

    try:
        entry = P.get_entry(args.pretrained)
    except ValueError as exc:
        ap.error(str(exc))
    if entry.dataset not in LESSON_DATASETS:
        print(f"{entry.name} belongs to {entry.dataset}; this lesson analyses the 32x32 CIFAR weights. "
              f"Evaluate it with: python -m minicct evaluate --pretrained {entry.name}", file=sys.stderr)
        return 2

    # 1. plan and estimate (before anything long, and before any download)
    estimate = plan_and_estimate(args, entry.config(), entry)

    # 2. the files
    params, cfg, data, missing, broken = get_inputs(args, entry)
    for b in broken:
        print(f"error: {b}", file=sys.stderr)
    if missing:
        return offline_help(args, missing)
    if broken:
        return 1
    t_start = time.time()
    data = dataclasses.replace(data, x_test=data.x_test[:args.n_test], y_test=data.y_test[:args.n_test])

    # 3. the model's own accuracy: the check that loading, normalisation and forward are right
    print(f"\nmodel accuracy on the first {args.n_test} test images ...", flush=True)
    t0 = time.time()
    _, acc = evaluate(params, cfg, data.x_test, data.y_test, data.mean, data.std, args.batch_size)
    p = entry.published_top1 / 100
    se = math.sqrt(p * (1 - p) / args.n_test)                  # binomial standard error of a subset accuracy
    ok = abs(acc - p) <= 3 * se
    print(f"top-1 {100 * acc:.2f}% (published on all 10000: {100 * p:.2f}%; 3 standard errors for "
          f"{args.n_test} images: {300 * se:.2f} points)  {'PASS' if ok else 'FAIL'}  ({time.time() - t0:.0f} s)")

    # 4. the SNP analysis
    print()
    rep = run_snp(params, cfg, data, sites=args.sites, modes=args.modes, epochs=args.epochs,
                  threshold=args.threshold, n_train=args.n_train, seed=args.seed, out_dir=args.out,
                  batch_size=args.batch_size, max_capture_bytes=args.memory_gb * 1e9)
    print()
    print(rep.format_table())

    # 5. clusters against the superclasses (CIFAR-100)
    if data.groups:
        print("\nmulti-label clusters inside one superclass, per encoder (chance in brackets):")
        for r in rep.results:
            agree = group_agreement([c for node in r.stats.clusters for c in node], data.groups)  # all nodes
            for g, a in agree.items():
                where = r.site.label(short=True)
                print(f"  {where:<16}{r.mode:>6}  {g}: {100 * a['inside']:5.1f}% of {a['n']:5d} clusters "
                      f"({100 * a['chance']:.1f}%)")
    for f in rep.figures:
        print(f"figure: {f}")
    took = time.time() - t_start
    print(f"\nrun time {P.format_seconds(took)} (estimated {P.format_seconds(estimate)}); "
          f"model accuracy check {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
