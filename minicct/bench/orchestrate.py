"""Orchestration: every measurement of measure.py in a fresh subprocess (`python -m minicct.bench --worker KIND`)
with the same environment for every side (NumPy, PyTorch, a --baseline checkout), in alternating rounds."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .measure import NO_REG, Case, REPO, bench_numpy, bench_torch, matmul_rate, snp_analysis, snp_paper_scale
from .report import _one_line

# -------------------------------------------------------------------------------------- subprocess driver

#: Environment overrides that force OpenBLAS onto other kernels / cache sizes than it would pick on the user's
#: machine: removed for the measuring processes unless --keep-openblas-env (the tests keep them).
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def malloc_env() -> dict:
    """glibc's environment form of what minicct's training step sets for itself (minicct/memory.py: freed memory stays
    in the process), given to EVERY measuring process -- PyTorch and the baseline too -- so that no side wins by
    its allocator settings alone (measured: ~20 % of a cct_7_3x1_32 step for PyTorch and for the old minicct).
    Empty when MINICCT_RETAIN_MEMORY=0 (then no side keeps freed memory). Variables already set are kept."""
    from ..memory import MMAP_THRESHOLD, TRIM_THRESHOLD
    if os.environ.get("MINICCT_RETAIN_MEMORY", "1").strip() == "0":
        return {}
    return {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}


def _child_env(threads, repo, keep_openblas_env=False):
    env = dict(os.environ)
    if not keep_openblas_env:
        for var in OPENBLAS_OVERRIDES:
            env.pop(var, None)
    for var, value in malloc_env().items():
        env.setdefault(var, value)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(repo)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _run_worker(python, kind, payload, threads, repo=REPO, timeout=3600, keep_openblas_env=False):
    """Run `python -m minicct.bench --worker KIND --payload JSON` with the minicct of the source tree `repo`
    (this one by default) and return its JSON result (the last line it prints)."""
    cmd = [python, "-m", "minicct.bench", "--worker", kind, "--payload", json.dumps(payload)]
    proc = subprocess.run(cmd, env=_child_env(threads, repo, keep_openblas_env), cwd=repo, capture_output=True,
                          text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return {"error": f"{kind} worker failed (exit {proc.returncode}):\n{tail}"}
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {"error": f"{kind} worker printed nothing"}


def _worker(kind, payload):
    if kind == "matmul":
        return {"gflops": matmul_rate(payload["n"])}
    if kind == "paper":
        return snp_paper_scale(payload["n_capture"], payload["n_readout"], payload["epochs"],
                               workers=payload["workers"])
    if kind == "snp":
        return snp_analysis(payload["checkpoint"], payload["epochs"], max_capture_bytes=payload["max_capture_bytes"])
    case = Case(**payload["case"])
    if kind == "numpy":
        kw = {"workers": payload["workers"]} if "workers" in payload else {}      # older checkouts: no workers
        return bench_numpy(case, payload["steps"], payload["warmup"], payload["breakdown_steps"],
                           payload["matmul_n"], **kw)
    if kind == "torch":
        return bench_torch(case, payload["steps"], payload["warmup"], payload["threads"])
    raise ValueError(f"unknown worker {kind!r}")


def _blas_name():
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:                                           # numpy < 1.25 has no mode="dicts"
        return "?"


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def with_and_without_regularisation(cases) -> list:
    """Each case as configured (the CCT recipe: attention dropout 0.1, drop-path 0.1) and, if that regularises,
    the same without any dropout / drop-path (overrides NO_REG)."""
    out = []
    for c in cases:
        out.append(c)
        cfg = c.config()
        if cfg.attention_dropout or cfg.stochastic_depth or cfg.dropout:
            out.append(Case(c.name, c.batch, c.num_classes, {**c.overrides, **NO_REG}))
    return out


def _best(rounds):
    """The fastest round (smallest median step) of one side, with every round's median listed."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return rounds[-1]
    best = dict(min(ok, key=lambda r: r["step_s"]))
    best["round_step_s"] = [r["step_s"] for r in ok]
    return best


def run(cases, steps=10, warmup=2, breakdown_steps=3, threads=None, torch_python=None, snp_checkpoint=None,
        snp_epochs=3, matmul_n=2048, snp_capture_bytes=None, baseline=None, progress=None, rounds=3,
        keep_openblas_env=False) -> dict:
    """Benchmark `cases` at each thread count in `threads` (a list; default [usable CPUs]), every measurement in
    its own subprocess, and optionally time the SNP analysis (once per thread count). Returns one dict.

    NumPy runs `nt` batch-parallel workers with one BLAS thread each (minicct.parallel); PyTorch runs
    torch.set_num_threads(nt). rounds: NumPy and PyTorch (and the baseline) are measured in alternating rounds,
    each round a fresh process; each side's fastest round counts, so that a noisy neighbour cannot tilt the ratio.
    keep_openblas_env: keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the measuring processes (default: removed).
    baseline: another source tree with a minicct package (and a compatible minicct/bench.py), e.g. an older
    checkout: its NumPy step and SNP analysis are timed too, in the same run, for before/after ratios."""
    threads = list(threads or [usable_cpus()])
    say = progress or (lambda msg: None)
    overrides = {v: os.environ.get(v) for v in OPENBLAS_OVERRIDES}
    res = {"machine": {"cpu": _cpu_name(), "cpus": os.cpu_count(), "python": platform.python_version(),
                       "numpy": np.__version__, "blas": _blas_name(), "load_start": os.getloadavg()[0],
                       "openblas_env": overrides, "OPENBLAS_CORETYPE": overrides["OPENBLAS_CORETYPE"]},
           "keep_openblas_env": keep_openblas_env, "rounds": rounds,
           "malloc_env": {k: os.environ.get(k, v) for k, v in malloc_env().items()},
           "threads": threads, "steps": steps, "warmup": warmup, "breakdown_steps": breakdown_steps,
           "matmul_n": matmul_n, "torch_python": torch_python, "baseline": baseline and str(baseline),
           "cases": [], "snp": []}
    kw = {"keep_openblas_env": keep_openblas_env}
    for nt in threads:
        for case in cases:
            say(f"{case.label}{_reg_tag(case)}, {nt} thread(s) ...")
            payload = {"case": asdict(case), "steps": steps, "warmup": warmup, "breakdown_steps": breakdown_steps,
                       "matmul_n": matmul_n, "workers": nt}
            sides = {"numpy": []}
            if baseline:
                sides["baseline"] = []
            if torch_python:
                sides["torch"] = []
            for r in range(max(1, rounds)):
                first = r == 0
                sides["numpy"].append(_run_worker(sys.executable, "numpy", dict(
                    payload, breakdown_steps=breakdown_steps if first else 0, matmul_n=matmul_n), nt, **kw))
                if baseline:
                    sides["baseline"].append(_run_worker(sys.executable, "numpy", payload, nt, repo=baseline, **kw))
                if torch_python:
                    sides["torch"].append(_run_worker(torch_python, "torch", {
                        "case": asdict(case), "steps": steps, "warmup": warmup, "threads": nt}, nt, **kw))
            entry = {"case": asdict(case), "label": case.label, "reg": _reg_tag(case).strip(" ,") or "none",
                     "threads": nt}
            n_rounds = sides["numpy"]
            entry["numpy"] = _best(n_rounds)
            if "error" not in entry["numpy"]:
                first = n_rounds[0]                                   # breakdown / matmul of the first round
                for k in ("parts_s", "part_calls", "breakdown_step_s", "matmul_gflops"):
                    entry["numpy"][k] = first.get(k, entry["numpy"].get(k))
                entry["numpy"]["matmul_fraction"] = entry["numpy"]["gflops"] / entry["numpy"]["matmul_gflops"]
            if baseline:
                entry["baseline"] = _best(sides["baseline"])
                if "error" not in entry["baseline"] and "error" not in entry["numpy"]:
                    entry["speedup"] = entry["baseline"]["step_s"] / entry["numpy"]["step_s"]
            if torch_python:
                entry["torch"] = _best(sides["torch"])
                n, t = entry["numpy"], entry["torch"]
                if "error" not in n and "error" not in t:
                    entry["time_ratio"] = n["step_s"] / t["step_s"]
                    entry["mem_ratio"] = n["step_mem_mb"] / max(t["step_mem_mb"], 1e-9)
            res["cases"].append(entry)
            say(_one_line(entry))
        if snp_checkpoint is not None:
            if Path(snp_checkpoint).is_file():
                say(f"SNP analysis of {snp_checkpoint}, {nt} thread(s) ...")
                payload = {"checkpoint": str(Path(snp_checkpoint).resolve()), "epochs": snp_epochs,
                           "max_capture_bytes": snp_capture_bytes}
                snp = _run_worker(sys.executable, "snp", payload, nt, **kw)
                if baseline:
                    snp["baseline"] = _run_worker(sys.executable, "snp", payload, nt, repo=baseline, **kw)
            else:
                snp = {"error": f"no checkpoint at {snp_checkpoint}"}
            res["snp"].append(dict(snp, checkpoint=str(snp_checkpoint), threads=nt))
            say(f"  SNP analysis, {nt} thread(s): " + (snp["error"].splitlines()[0] if "error" in snp else
                                                       f"{snp['seconds']['total']:.1f} s"))
    res["machine"]["load_end"] = os.getloadavg()[0]
    return res


def _reg_tag(case) -> str:
    cfg = case.config()
    bits = [f"{name} {v:g}" for name, v in (("attn-drop", cfg.attention_dropout), ("drop-path", cfg.stochastic_depth),
                                             ("dropout", cfg.dropout)) if v]
    return (", " + " ".join(bits)) if bits else ""
