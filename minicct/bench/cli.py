"""`python -m minicct.bench`: the command line (the package docstring is its help)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __doc__ as PACKAGE_DOC
from .measure import CLASSROOM_CHECKPOINT, NO_REG, Case, DEFAULT_CASES, parse_overrides, torch_available
from .orchestrate import _run_worker, _worker, run, usable_cpus, with_and_without_regularisation
from .report import format_paper, format_report

def _thread_list(text):
    try:
        out = [int(t) for t in text.split(",")]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"--threads expects positive integers separated by commas, got {text!r}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m minicct.bench", description=PACKAGE_DOC.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", metavar="NAME@BATCH[:CLASSES]",
                    help=f"configuration to time (repeatable); default: {' '.join(DEFAULT_CASES)}")
    ap.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a CCTConfig field for all "
                    "configurations (repeatable), e.g. --set embedding_dim=16")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per configuration (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default 2)")
    ap.add_argument("--breakdown-steps", type=int, default=3, help="steps timed part by part (default 3)")
    ap.add_argument("--threads", type=_thread_list, default=None, metavar="N[,N...]",
                    help="BLAS / torch thread counts, each measured in turn, e.g. 1,2 (default: all usable CPUs)")
    ap.add_argument("--matmul-size", type=int, default=2048, help="side of the reference float32 matmul")
    ap.add_argument("--torch-python", default=None, metavar="PYTHON",
                    help="interpreter with torch for the PyTorch side (default: this one, if torch imports)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--snp-checkpoint", default=str(CLASSROOM_CHECKPOINT), help="checkpoint for the SNP timing")
    ap.add_argument("--snp-epochs", type=int, default=3, help="read-out epochs in the SNP timing (default 3)")
    ap.add_argument("--snp-capture-bytes", type=float, default=None,
                    help="max_capture_bytes passed to analysis.report.run_snp (default: run_snp's own)")
    ap.add_argument("--no-snp", action="store_true", help="skip the SNP analysis timing")
    ap.add_argument("--baseline", metavar="DIR", default=None,
                    help="also time the NumPy step and SNP analysis with the minicct package of source tree DIR "
                         "(e.g. an older checkout with a compatible minicct/bench.py): before/after in one run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating NumPy / PyTorch rounds, each a fresh "
                    "process; each side's fastest round counts (default 3)")
    ap.add_argument("--reg", choices=("both", "on", "off"), default="both", help="regularisation: each config as "
                    "configured and without dropout / drop-path (both, default), only as configured (on), or "
                    "only without (off)")
    ap.add_argument("--keep-openblas-env", action="store_true", help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE "
                    "in the measuring processes (default: removed, as on a user's machine)")
    ap.add_argument("--snp-scale", choices=("paper",), default=None, help="paper: time the SNP analysis at the "
                    "paper's scale (cct_7_3x1_32, CIFAR-100 sizes, random weights and images) on a subset and "
                    "project it; replaces the step benchmark")
    ap.add_argument("--paper-images", type=int, default=1024, help="images captured for --snp-scale paper")
    ap.add_argument("--paper-readout-images", type=int, default=2000, help="memory-mapped images per read-out "
                    "epoch for --snp-scale paper")
    ap.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH ('-': JSON on stdout "
                    "instead of the table)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--payload", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(_worker(args.worker, json.loads(args.payload))))
        return 0
    if args.steps < 1 or args.warmup < 0 or args.breakdown_steps < 0 or args.matmul_size < 0 or args.rounds < 1:
        ap.error("--steps and --rounds must be >= 1, --warmup, --breakdown-steps and --matmul-size >= 0")
    try:
        overrides = parse_overrides(args.set)
        cases = [Case.parse(s, overrides) for s in (args.config or DEFAULT_CASES)]
        if args.reg == "both":
            cases = with_and_without_regularisation(cases)
        elif args.reg == "off":
            cases = [Case(c.name, c.batch, c.num_classes, {**c.overrides, **NO_REG}) for c in cases]
    except ValueError as e:
        ap.error(str(e))
    torch_python = None
    if not args.no_torch:
        if args.torch_python:
            torch_python = args.torch_python
        elif torch_available():
            torch_python = sys.executable
    quiet = args.json == "-"
    if args.snp_scale == "paper":
        nt = (args.threads or [usable_cpus()])[0]
        r = _run_worker(sys.executable, "paper", {"n_capture": args.paper_images, "n_readout":
                        args.paper_readout_images, "epochs": 1, "workers": nt}, nt,
                        keep_openblas_env=args.keep_openblas_env)
        r["load"] = os.getloadavg()[0]
        print(json.dumps(r, indent=1) if quiet else format_paper(r) + f"\n  load average at the end {r['load']:.1f}")
        if args.json and not quiet:
            Path(args.json).write_text(json.dumps(r, indent=1))
        return 0
    res = run(cases, args.steps, args.warmup, args.breakdown_steps, args.threads, torch_python,
              None if args.no_snp else args.snp_checkpoint, args.snp_epochs, args.matmul_size,
              args.snp_capture_bytes, args.baseline,
              progress=None if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True)),
              rounds=args.rounds, keep_openblas_env=args.keep_openblas_env)
    if quiet:
        print(json.dumps(res, indent=1))
        return 0
    print(format_report(res))
    if not torch_python and not args.no_torch:
        print("\n(PyTorch is not importable here: --torch-python PATH compares with an interpreter that has it)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0
