"""Speed and memory of a float32 training step, and of the SNP analysis: `python -m minicct.bench`.

For every configuration (a named variant, a batch size, a number of classes), in a fresh subprocess:
    step      median wall time of one real training step (model.forward, cross-entropy with label smoothing
              0.1, model.backward, AdamW.step) over --steps steps after --warmup steps; images per second.
    parts     the same step again with a timer around the layer calls (see PARTS): where the time goes.
    GFLOP/s   FLOPs of the step's convolutions and matrix products (`step_flops`) / median step time, next to
              the float32 matrix-multiply rate NumPy reaches in the same process (`matmul_rate`).
    memory    peak resident memory of the steps: VmHWM of /proc/self/status after the steps (reset just before
              the first step) minus VmRSS before the first step. Parameters, batch and imports are in the
              baseline; the optimizer state and the libraries' work buffers, made by the first step, count as
              step memory. Where /proc is missing: ru_maxrss, same subtraction.
Then the full SNP analysis of the classroom checkpoint (analysis.report.run_snp on every site of every encoder)
is timed (`snp_analysis`), also in its own subprocess.

PyTorch is never a dependency. When it is importable, or `--torch-python PATH` names an interpreter that has
it (e.g. a venv: `--torch-python /tmp/torchenv/bin/python`), every configuration is also timed in PyTorch, in
its own subprocess, with the same architecture (minicct/tools/torch_cct.py: the reference CCT, norm1 on the residual stream),
the same initial parameters, the same batch, label smoothing, AdamW settings and thread count; the time and
memory ratios are printed. All numbers of one invocation come from one run on one machine: compare ratios,
not absolute times (a shared machine can be several times slower from one minute to the next; the load
average at start and end is printed).

    python -m minicct.bench                                     # the default configurations, table output
    python -m minicct.bench --config cct_7_3x1_32@32:100 --steps 10 --json bench.json
    python -m minicct.bench --torch-python /tmp/torchenv/bin/python --no-snp
    python -m minicct.bench --threads 2,1 --baseline ../minicct-old     # before/after against another checkout
Threads: --threads N[,N...] (default: the CPUs this process may use): N batch-parallel workers of one BLAS thread
each for NumPy (minicct.parallel; OPENBLAS_NUM_THREADS=N for the rest, e.g. the matmul rate), torch.set_num_threads(N)
for PyTorch; several counts are measured one after the other.
Fairness: the measuring processes run without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (machine overrides that force
other OpenBLAS kernels; --keep-openblas-env keeps them); each prints its BLAS library, kernel and threads; NumPy and
PyTorch run in --rounds alternating rounds (fresh processes) and each side's fastest round counts. Every
configuration with dropout / drop-path is measured as configured and without them (--reg). minicct's train_step
keeps freed memory in its process (minicct/memory.py); every measuring process -- PyTorch and --baseline too --
gets the same glibc settings (MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_, `malloc_env`), so no side wins by
its allocator alone; MINICCT_RETAIN_MEMORY=0 gives every side glibc's defaults.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

#: (variant, batch, classes) timed by default: the two issue-6 configurations and the classroom model.
DEFAULT_CASES = ("cct_2_3x2_32@128:10", "cct_7_3x1_32@32:100", "classroom@128:20")
#: Parts of the breakdown, in forward order; "rest" = step time minus the timed parts (residual adds,
#: positional embedding, drop-path, cache bookkeeping).
PARTS = ("tokenizer", "attention", "mlp", "norms", "pool+head", "loss", "optimizer", "rest")
LR, WEIGHT_DECAY, SMOOTHING = 1e-3, 0.05, 0.1
REPO = Path(__file__).resolve().parents[1]
CLASSROOM_CHECKPOINT = REPO / "data" / "checkpoints" / "classroom.npz"


# ------------------------------------------------------------------------------------------------ cases

@dataclass
class Case:
    """One configuration: a variant name for model.get_config, batch size, classes, field overrides."""

    name: str
    batch: int
    num_classes: int | None = None
    overrides: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str, overrides: dict | None = None) -> "Case":
        """'NAME@BATCH[:CLASSES]', e.g. 'cct_7_3x1_32@32:100'."""
        name, sep, rest = spec.partition("@")
        batch, _, k = rest.partition(":")
        try:
            if not sep or not name:
                raise ValueError
            case = cls(name, int(batch), int(k) if k else None, dict(overrides or {}))
        except ValueError:
            raise ValueError(f"config spec must look like NAME@BATCH or NAME@BATCH:CLASSES "
                             f"(e.g. cct_7_3x1_32@32:100), got {spec!r}") from None
        if case.batch < 1 or (case.num_classes is not None and case.num_classes < 2):
            raise ValueError(f"{spec!r}: batch must be >= 1 and classes >= 2")
        case.config()                                   # fail early on unknown names / fields
        return case

    def config(self):
        from . import model as M
        return M.get_config(self.name, num_classes=self.num_classes, **self.overrides)

    @property
    def label(self) -> str:
        return f"{self.name} @{self.batch} K={self.config().num_classes}"


def parse_overrides(items) -> dict:
    """['embedding_dim=16', 'positional_embedding=sine', ...] -> typed dict for CCTConfig fields."""
    from .model import CCTConfig
    types = {f.name: f.type for f in fields(CCTConfig)}
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise ValueError(f"--set expects FIELD=VALUE with FIELD one of {sorted(types)}, got {item!r}")
        t = str(types[key])
        if value == "None" and "None" in t:
            out[key] = None
        elif t.startswith("int"):
            out[key] = int(value)
        elif t.startswith("float"):
            out[key] = float(value)
        else:
            out[key] = value
    return out


# ------------------------------------------------------------------------------------------------ FLOPs

def step_flops(cfg, batch: int) -> dict:
    """FLOPs of the convolutions and matrix products of one training step (2 M N K per product).

    Forward, N = batch, with T tokens, D embedding, F ff width, h heads, K classes:
        conv i     2 N H'_i W'_i C_out,i (C_in,i k^2)          (its im2col product)
        per block  2 N T D 3D (qkv) + 2 N T^2 D (q k^T) + 2 N T^2 D (P v) + 2 N T D^2 (proj)
                   + 2 N T D F (linear1) + 2 N T F D (linear2)
        head       2 N T D (pool scores) + 2 N T D (pooled = a^T x) + 2 N D K (fc)
    Backward: every product costs 2x its forward (one product for the input gradient, one for the weight or
    second operand), except the first convolution, which needs no gradient for the images (1x).
    Element-wise work (norms, softmax, GELU, dropout, optimizer) is not counted.
    Returns {tokenizer, attention, mlp, head, forward, backward, step} (the first four are forward FLOPs).
    """
    N, T, D, F, K = batch, cfg.seq_len, cfg.embedding_dim, cfg.ff_dim, cfg.num_classes
    k, s, p = cfg.kernel_size, cfg.conv_stride, cfg.conv_padding
    conv, size = [], cfg.img_size
    for c_in, c_out in zip(cfg.channels[:-1], cfg.channels[1:]):
        size = (size + 2 * p - k) // s + 1                                    # conv output side
        conv.append(2 * N * size * size * c_out * c_in * k * k)
        size = (size + 2 * cfg.pooling_padding - cfg.pooling_kernel_size) // cfg.pooling_stride + 1
    L = cfg.num_layers
    attention = L * (2 * N * T * D * 3 * D + 2 * 2 * N * T * T * D + 2 * N * T * D * D)
    mlp = L * (2 * N * T * D * F * 2)
    head = 2 * N * T * D * 2 + 2 * N * D * K
    forward = sum(conv) + attention + mlp + head
    backward = 2 * forward - conv[0]
    return {"tokenizer": sum(conv), "attention": attention, "mlp": mlp, "head": head,
            "forward": forward, "backward": backward, "step": forward + backward}


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a float32 [n, n] @ [n, n] product in NumPy: 2 n^3 / median time (after one warm-up)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / float(np.median(times)) / 1e9


# ----------------------------------------------------------------------------------------------- memory

def _status_kb(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_now_mb():
    """Current resident set size in MB (VmRSS; ru_maxrss where /proc is missing)."""
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else _maxrss_mb()


def peak_rss_mb():
    """Peak resident set size in MB since the start or the last `reset_peak_rss` (VmHWM; else ru_maxrss)."""
    kb = _status_kb("VmHWM")
    return kb / 1024 if kb is not None else _maxrss_mb()


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs). False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def _maxrss_mb():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2 ** 20 if sys.platform == "darwin" else r / 1024     # bytes on macOS, KB on Linux


def timed_steps(step, steps, warmup) -> dict:
    """Run `step()` warmup times, then `steps` times with a wall clock; and the peak memory of the steps.

    Memory: peak RSS over all steps (warm-up included: the first step allocates the optimizer state and the
    libraries' work buffers) minus the RSS before the first step (parameters, batch and imports are in this
    baseline). The peak counter is reset at the baseline where Linux allows it, so import-time peaks do not count.
    """
    reset = reset_peak_rss()
    rss0 = rss_now_mb()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = peak_rss_mb()
    method = ("VmHWM (reset before the first step) - VmRSS before the first step" if reset else
              "peak RSS (ru_maxrss) - RSS before the first step")
    return {"step_s": float(np.median(times)), "step_times_s": times, "rss_before_mb": rss0,
            "peak_rss_mb": peak, "step_mem_mb": peak - rss0, "memory_method": method}


# -------------------------------------------------------------------------------------- the NumPy step

def make_batch(cfg, batch: int, seed: int = 0):
    """A fixed random float32 batch: images [N, C, S, S] ~ N(0, 1) and integer labels [N]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, cfg.n_input_channels, cfg.img_size, cfg.img_size), dtype=np.float32)
    return x, rng.integers(0, cfg.num_classes, batch)


class PartTimer:
    """Wall time per part of the step, collected by wrapping the layer functions the model calls.

    model.py and layers/encoder.py call the layers by the names they import; while the timer is active those
    module attributes are replaced by timing wrappers, so the step itself (model.forward / model.backward) is
    unchanged. Attention is timed as a whole (its own linear layers included); the final LayerNorm counts as
    "norms"; loss and optimizer are timed by `train_step`. Calls are counted, so a part that is never reached
    (e.g. after a refactoring of the model) shows up as 0 calls instead of silently moving into "rest".
    """

    WRAP = {  # module -> {function name: part}
        "minicct.model": {
            **{f"{n}_{d}": "tokenizer" for n in ("conv2d", "relu", "maxpool2d") for d in ("forward", "backward")},
            "layernorm_forward": "norms", "layernorm_backward": "norms",
            "seqpool_forward": "pool+head", "seqpool_backward": "pool+head",
            "linear_forward": "pool+head", "linear_backward": "pool+head"},
        "minicct.layers.encoder": {
            "layernorm_forward": "norms", "layernorm_backward": "norms",
            "attention_forward": "attention", "attention_backward": "attention",
            **{f"{n}_{d}": "mlp" for n in ("linear", "gelu", "dropout") for d in ("forward", "backward")}},
    }

    def __init__(self):
        self.seconds = {p: 0.0 for p in PARTS}
        self.calls = {p: 0 for p in PARTS}

    def add(self, part, seconds):
        self.seconds[part] += seconds
        self.calls[part] += 1

    def _wrap(self, fn, part):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(part, time.perf_counter() - t0)
        return timed

    @contextmanager
    def active(self):
        saved = []
        try:
            for mod_name, names in self.WRAP.items():
                mod = sys.modules[mod_name]
                for name, part in names.items():
                    saved.append((mod, name, getattr(mod, name)))
                    setattr(mod, name, self._wrap(getattr(mod, name), part))
            yield self
        finally:
            for mod, name, fn in saved:
                setattr(mod, name, fn)


def train_step(params, x, y, cfg, opt, rng, timer: PartTimer | None = None, workers=1) -> float:
    """One real float32 training step: forward (train mode), cross-entropy (smoothing 0.1), backward, AdamW.

    workers > 1: the batch-parallel step of minicct.parallel (threads, one BLAS thread each, gradients summed).
    With a timer the step runs on one worker (the part timers are not thread-aware)."""
    from . import model as M
    from .layers.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
    if timer is None:
        from .parallel import batch_parallel
        from .train.step import train_step as the_step                # the one training step of the library
        return the_step(params, opt, x, y, cfg, rng, smoothing=SMOOTHING, run_shards=batch_parallel(workers)).loss
    logits, cache = M.forward(params, x, cfg, train=True, rng=rng)
    t0 = time.perf_counter()
    loss, lcache = softmax_cross_entropy_forward(logits, y, SMOOTHING)
    dlogits = softmax_cross_entropy_backward(1.0, lcache)
    t1 = time.perf_counter()
    grads = M.backward(dlogits, cache)
    del cache
    t2 = time.perf_counter()
    opt.step(params, grads)
    t3 = time.perf_counter()
    if timer is not None:
        timer.add("loss", t1 - t0)
        timer.add("optimizer", t3 - t2)
    return loss


def non_float32_arrays(obj, path="", out=None) -> list:
    """Paths of the floating arrays in a nested cache / gradient structure that are not float32."""
    out = [] if out is None else out
    if isinstance(obj, np.ndarray):
        if np.issubdtype(obj.dtype, np.floating) and obj.dtype != np.float32:
            out.append(f"{path}: {obj.dtype} {obj.shape}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            non_float32_arrays(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(obj, (tuple, list)):
        for i, v in enumerate(obj):
            non_float32_arrays(v, f"{path}[{i}]", out)
    return out


def bench_numpy(case: Case, steps=10, warmup=2, breakdown_steps=3, matmul_n=2048, seed=0, workers=1) -> dict:
    """Time and measure the NumPy training step of one configuration (run it in a fresh process for memory).

    workers: batch-parallel workers of the step (minicct.parallel; each uses one BLAS thread)."""
    from .parallel import blas_info
    from . import model as M
    from .layers.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
    from .train.optim import AdamW
    cfg = case.config()
    params = M.init_params(cfg, seed)
    x, y = make_batch(cfg, case.batch, seed)
    opt = AdamW(LR, weight_decay=WEIGHT_DECAY, frozen=M.frozen_params(cfg))
    rng = np.random.default_rng(seed)
    losses = []
    blas = blas_info()                                              # before the steps: threads as configured
    out = timed_steps(lambda: losses.append(train_step(params, x, y, cfg, opt, rng, workers=workers)), steps, warmup)
    step = out["step_s"]
    mm = matmul_rate(matmul_n) if matmul_n else float("nan")       # right after the steps, same conditions

    timer = PartTimer()
    timed = []
    with timer.active():
        for _ in range(breakdown_steps):                            # one worker, BLAS at its configured threads
            t0 = time.perf_counter()
            train_step(params, x, y, cfg, opt, rng, timer)
            timed.append(time.perf_counter() - t0)
    timed_total = float(np.sum(timed))
    parts = {p: timer.seconds[p] / max(breakdown_steps, 1) for p in PARTS}
    parts["rest"] = max(0.0, (timed_total - sum(timer.seconds.values())) / max(breakdown_steps, 1))

    # float32 everywhere: one more forward / backward whose cache and gradients are inspected (with the breakdown)
    not32 = []
    if breakdown_steps:
        logits, cache = M.forward(params, x, cfg, train=True, rng=rng)
        _, lcache = softmax_cross_entropy_forward(logits, y, SMOOTHING)
        grads = M.backward(softmax_cross_entropy_backward(1.0, lcache), cache)
        not32 = non_float32_arrays({"logits": logits, "cache": cache, "grads": grads})
        del cache, grads

    flops = step_flops(cfg, case.batch)
    gflops = flops["step"] / step / 1e9
    return {**out, "images_per_s": case.batch / step, "parts_s": parts,
            "part_calls": {p: timer.calls[p] for p in PARTS if p != "rest"},
            "breakdown_step_s": timed_total / max(breakdown_steps, 1),
            "flops": flops, "gflops": gflops, "matmul_gflops": mm, "matmul_n": matmul_n,
            "matmul_fraction": gflops / mm if mm == mm else float("nan"),
            "first_loss": losses[0], "last_loss": losses[-1],
            "non_float32": not32, "params": M.count_params(cfg), "workers": workers, "blas": blas}


# ------------------------------------------------------------------------------------------ the PyTorch side

def torch_available() -> bool:
    """True when `import torch` works in this interpreter (torch is optional, never required)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def bench_torch(case: Case, steps=10, warmup=2, threads=None, seed=0) -> dict:
    """The same step in PyTorch (float32, CPU): forward, cross_entropy(label_smoothing=0.1), backward,
    torch.optim.AdamW with the same decay rule. Imports torch (call only where it is installed)."""
    import torch
    from . import model as M
    from .tools.torch_cct import torch_cct
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    cfg = case.config()
    params = M.init_params(cfg, seed)
    net = torch_cct(torch, cfg)
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
    xn, yn = make_batch(cfg, case.batch, seed)
    x, y = torch.from_numpy(xn), torch.from_numpy(yn)
    trained = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    decay = [p for n, p in trained if p.ndim > 1 and not n.endswith(".bias")]        # timm's rule, as AdamW here
    no_decay = [p for n, p in trained if not (p.ndim > 1 and not n.endswith(".bias"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR)
    net.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(x), y, label_smoothing=SMOOTHING)
        loss.backward()
        opt.step()

    out = timed_steps(step, steps, warmup)
    # the two implementations agree: evaluation logits of the same parameters (after the steps) and batch
    net.eval()
    with torch.no_grad():
        ref = net(x).numpy()
        now = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    ours = M.forward(now, xn, cfg)[0]
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        capability = "?"
    blas = "MKL" if torch.backends.mkl.is_available() else "?"
    return {**out, "images_per_s": case.batch / out["step_s"], "torch_version": torch.__version__,
            "threads": torch.get_num_threads(), "max_abs_logit_diff": float(np.abs(ref - ours).max()),
            "blas": {"library": blas, "corename": f"CPU capability {capability}", "threads": torch.get_num_threads(),
                     "config": None}}


# ------------------------------------------------------------------------------------------ SNP analysis

def snp_analysis(checkpoint, epochs=3, data=None, max_capture_bytes=None) -> dict:
    """The full SNP analysis of a checkpoint, timed: minicct.analysis.report.run_snp over the tokenizer output and
    every site of every encoder (report.SITES), with the authors' flat read-out trained `epochs` epochs.

    data: the Dataset to use (default: the one named in the checkpoint's metadata, "embedded" if none).
    max_capture_bytes: run_snp's budget for captured activations (None: run_snp's default), which sets how
    many forward passes over the images the capture takes.
    Returns {"seconds": {load, capture, analysis, total}, "sites": {name: summary}, ...}; "analysis" is the sum
    of the per-site times (read-out, fields, clusters, single-node predictions), "capture" the rest of run_snp.
    """
    from .analysis import report
    from .datasets import load
    from .io.npz_checkpoint import load_checkpoint
    t0 = time.perf_counter()
    params, cfg, meta, _ = load_checkpoint(checkpoint)
    data = data if data is not None else load(meta.get("dataset", "embedded"))
    t1 = time.perf_counter()
    kw = {} if max_capture_bytes is None else {"max_capture_bytes": max_capture_bytes}
    rep = report.run_snp(params, cfg, data, sites=report.SITES, modes=("flat",), epochs=epochs, progress=None, **kw)
    t2 = time.perf_counter()
    analysis = sum(r.seconds for r in rep.results)
    sites = {r.name: {"readout_test_acc": r.accuracy, "snr": r.summary["snr"],
                      "mean_clusters_per_node": r.summary["mean_clusters_per_node"],
                      "mean_cluster_size": r.summary["mean_cluster_size"], "mean_noise": r.summary["mean_noise"]}
             for r in rep.results}
    return {"seconds": {"load": t1 - t0, "capture": (t2 - t1) - analysis, "analysis": analysis, "total": t2 - t0},
            "sites": sites, "n_sites": len(sites), "epochs": epochs, "n_train": int(len(data.y_train)),
            "n_test": int(len(data.y_test)), "dataset": data.name, "max_capture_bytes": max_capture_bytes}


# ------------------------------------------------------------------------------------ the paper's scale

#: Koresh et al.: cct_7_3x1_32 trained on CIFAR-100, the flat read-out [100, T*D] per site.
PAPER = {"variant": "cct_7_3x1_32", "classes": 100, "n_train": 50_000, "n_test": 10_000, "sites_per_pass": 7}


def snp_paper_scale(n_capture=1024, n_readout=2000, readout_epochs=1, batch_size=32, workers=None,
                    directory=None, seed=0, n_test=500) -> dict:
    """Time the SNP analysis at the paper's scale on a subset, with random weights and random images (the time
    does not depend on the values), and project it to 50,000 training + 10,000 test images.

    The measurement is analysis.costs.measure_snp_rates (the same one lesson 07's estimate uses), to disk:
    capture: model.predict over n_capture images, the 7 encoder outputs enc{e}.out [T=256, D=256] written to
    float32 .npy files (analysis.capture_disk, batch-parallel workers); seconds per image x 60,000 = one pass.
    read-out: the authors' flat read-out [100, 256 x 256] trained one epoch (train_readout, mini-batch 100,
    from a memory-mapped float32 file of n_readout rows), its test-accuracy pass and the node fields on
    n_test memory-mapped rows; projected by analysis.costs.project_snp_seconds.
    memory: peak resident memory of this process (VmHWM; reset after imports) and the disk the files need.
    batch_size: images per forward in the capture; the evaluation forward keeps every layer's cache, so resident
    memory grows with batch_size x workers (at 256 x 2 workers it measured 20 GB; hence 32).
    Caveat: the subset's files fit in the page cache; at full scale a site's 13.1 GB training file is read
    once per epoch and fits the page cache only on a machine with more free memory than that.
    """
    from . import model as M
    from .analysis.capture_disk import site_shape
    from .analysis.costs import measure_snp_rates, project_snp_seconds
    from .parallel import blas_info, resolve_workers
    from .sites import Site
    if readout_epochs != 1:
        raise ValueError("snp_paper_scale measures one read-out epoch (the projection is linear in epochs)")
    cfg = M.get_config(PAPER["variant"], num_classes=PAPER["classes"])
    workers = resolve_workers(workers)
    sites = [Site(e, "out").name for e in range(cfg.num_layers)]
    row_bytes = int(np.prod(site_shape(cfg, sites[0]))) * 4
    reset = reset_peak_rss()
    rss0 = rss_now_mb()
    rates = measure_snp_rates(cfg, sites, ("flat",), n_capture=n_capture, n_readout=n_readout, n_test=n_test,
                              batch_size=batch_size, workers=workers, to_disk=True, directory=directory, seed=seed)
    peak = peak_rss_mb()
    n_tr, n_te = PAPER["n_train"], PAPER["n_test"]
    one = lambda E, names: project_snp_seconds(rates, cfg, names, ("flat",), n_tr, n_te, E)   # noqa: E731
    ro = rates["readout"][f"flat/{cfg.seq_len}x{cfg.embedding_dim}"]
    epoch_full = one(1, sites[:1])["readouts"] - one(0, sites[:1])["readouts"]
    return {"variant": PAPER["variant"], "workers": workers, "blas": blas_info(), "n_capture": n_capture,
            "n_readout": n_readout, "n_test": n_test, "readout_epochs_measured": 1, "sites": sites,
            "rates": rates, "capture_s": rates["capture_s"], "capture_s_per_image": rates["capture_s_per_image"],
            "readout_epoch_s": ro["epoch_s"], "readout_test_pass_s": ro["test_s_per_image"] * n_test,
            "projected": {"capture_pass_all_sites_s": one(10, sites[:1])["capture"],
                          "readout_epoch_per_site_s": epoch_full,
                          "site_10_epochs_s": one(10, sites[:1])["total"],
                          "site_200_epochs_s": one(200, sites[:1])["total"],
                          "site_10_epochs_readout_s": one(10, sites[:1])["readouts"],
                          "all_sites_10_epochs_s": one(10, sites)["total"],
                          "all_sites_200_epochs_s": one(200, sites)["total"]},
            "disk_gb_per_site": (n_tr + n_te) * row_bytes / 1e9,
            "disk_gb_all_sites": (n_tr + n_te) * row_bytes * len(sites) / 1e9,
            "peak_rss_mb": peak, "rss_before_mb": rss0, "peak_step_mem_mb": peak - rss0,
            "memory_method": "VmHWM reset after imports" if reset else "ru_maxrss"}


def format_paper(r) -> str:
    """The report of `snp_paper_scale`."""
    if "error" in r:
        return "paper scale: " + r["error"]
    p = r["projected"]
    h = lambda s: f"{s:.0f} s ({s / 60:.1f} min)" if s < 7200 else f"{s / 3600:.1f} h"      # noqa: E731
    b = r["blas"]
    return "\n".join([
        f"SNP analysis at the paper's scale: {r['variant']}, CIFAR-100 sizes (50,000 train + 10,000 test images), "
        f"flat read-out [100, 256 x 256] per site; random weights and images; {r['workers']} worker(s), OpenBLAS "
        f"kernel {b.get('corename')}",
        f"  measured: capture of the 7 encoder outputs for {r['n_capture']} images {r['capture_s']:.1f} s "
        f"({1000 * r['capture_s_per_image']:.1f} ms/image); read-out epoch on {r['n_readout']} memory-mapped "
        f"images {r['readout_epoch_s']:.1f} s, test pass on {r['n_test']} {r['readout_test_pass_s']:.1f} s "
        f"(analysis.costs.measure_snp_rates)",
        f"  peak resident memory {r['peak_rss_mb']:.0f} MB ({r['peak_step_mem_mb']:.0f} MB above the start)",
        f"  projected (linear in images): one capture pass over 60,000 images {h(p['capture_pass_all_sites_s'])}; "
        f"one read-out epoch of one site {h(p['readout_epoch_per_site_s'])}",
        f"  one site, 10 read-out epochs: {h(p['site_10_epochs_s'])}; 200 epochs (the authors'): "
        f"{h(p['site_200_epochs_s'])}",
        f"  all 7 sites: 10 epochs {h(p['all_sites_10_epochs_s'])}; 200 epochs {h(p['all_sites_200_epochs_s'])}",
        f"  disk: {r['disk_gb_per_site']:.1f} GB per site (float32), {r['disk_gb_all_sites']:.0f} GB for all 7 "
        f"in one pass (else one pass per group of sites that fits)",
        f"  targets: [{'met' if r['peak_rss_mb'] < 12000 else 'MISSED'}] peak memory < 12 GB (measured on the "
        f"subset; resident memory is one chunk / one mini-batch, independent of the number of images); "
        f"[{'met' if p['site_10_epochs_readout_s'] < 600 else 'MISSED'}] one site at 10 read-out epochs "
        f"< 10 min: {h(p['site_10_epochs_readout_s'])} (read-out training, test passes and fields; plus the "
        f"capture pass above, shared by all sites)"])


# -------------------------------------------------------------------------------------- subprocess driver

#: Environment overrides that force OpenBLAS onto other kernels / cache sizes than it would pick on the user's
#: machine: removed for the measuring processes unless --keep-openblas-env (the tests keep them).
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def malloc_env() -> dict:
    """glibc's environment form of what minicct's train_step sets for itself (minicct/memory.py: freed memory stays
    in the process), given to EVERY measuring process -- PyTorch and the baseline too -- so that no side wins by
    its allocator settings alone (measured: ~20 % of a cct_7_3x1_32 step for PyTorch and for the old minicct).
    Empty when MINICCT_RETAIN_MEMORY=0 (then no side keeps freed memory). Variables already set are kept."""
    from .memory import MMAP_THRESHOLD, TRIM_THRESHOLD
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


NO_REG = {"attention_dropout": 0.0, "stochastic_depth": 0.0, "dropout": 0.0}


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


# ------------------------------------------------------------------------------------------------ report

def _one_line(entry) -> str:
    """Progress summary of a finished configuration (printed as soon as it is measured)."""
    parts = []
    for side in ("numpy", "torch", "baseline"):
        r = entry.get(side)
        if r is None:
            continue
        parts.append(f"{side}: " + (r["error"].splitlines()[0] if "error" in r else
                                    f"{r['step_s']:.3f} s/step (rounds {_fmt_rounds(r)}), {r['step_mem_mb']:.0f} MB"))
    return f"  {entry['label']} [{entry['reg']}], {entry['threads']} thread(s): " + "; ".join(parts)


def _fmt_rounds(r):
    return " ".join(f"{t:.3f}" for t in r.get("round_step_s", [r["step_s"]]))


def _reg_pairs(res):
    """{(name, batch, K, threads): {"reg": entry, "none": entry}} for configurations measured both ways."""
    pairs = {}
    for c in res["cases"]:
        key = (c["case"]["name"], c["case"]["batch"], c["label"], c["threads"])
        pairs.setdefault(key, {})["none" if c["reg"] == "none" else "reg"] = c
    return {k: v for k, v in pairs.items() if len(v) == 2}


def targets(res) -> list:
    """(target, measured, met) for the issue-15 targets this run measured (named configurations only)."""
    out = []
    full = max(res["threads"])
    for c in res["cases"]:
        n, name = c["numpy"], c["case"]["name"]
        tag = f"{c['label']} [{c['reg']}], {c['threads']} thr"
        extra = set(c["case"]["overrides"]) - set(NO_REG)
        if "error" in n or extra:
            continue
        if "time_ratio" in c and name in ("cct_2_3x2_32", "cct_7_3x1_32") and c["threads"] == full:
            out.append((f"{tag}: step time <= 0.6x PyTorch", f"{c['time_ratio']:.2f}x", c["time_ratio"] <= 0.6))
        if name == "cct_7_3x1_32" and c["threads"] == full:
            out.append((f"{tag}: >= 40% of the matmul rate", f"{100 * n['matmul_fraction']:.0f}%",
                        n["matmul_fraction"] >= 0.4))
        if "mem_ratio" in c:
            out.append((f"{tag}: step memory <= PyTorch's", f"{c['mem_ratio']:.2f}x", c["mem_ratio"] <= 1.0))
    for (name, batch, label, nt), pair in _reg_pairs(res).items():
        a, b = pair["reg"]["numpy"], pair["none"]["numpy"]
        if "error" in a or "error" in b or set(pair["reg"]["case"]["overrides"]) - set(NO_REG):
            continue
        extra = a["step_s"] / b["step_s"] - 1
        out.append((f"{label}, {nt} thr: attention dropout + drop-path add <= 15% to a step",
                    f"{100 * extra:+.0f}%", extra <= 0.15))
    for snp in res.get("snp", []):
        if "error" not in snp:
            out.append((f"SNP analysis of the classroom checkpoint < 60 s, {snp['threads']} thr",
                        f"{snp['seconds']['total']:.1f} s", snp["seconds"]["total"] < 60))
    return out


def _blas_line(side, r):
    b = r.get("blas") or {}
    return (f"  {side}: {b.get('library')} {b.get('config') or ''} kernel {b.get('corename')}, "
            f"{b.get('threads')} BLAS thread(s)" + (f" x {r['workers']} worker(s)" if "workers" in r else ""))


def format_report(res) -> str:
    """The human-readable report of `run`'s result."""
    m = res["machine"]
    env = m.get("openblas_env", {})
    lines = [f"minicct.bench: {m['cpu']} ({m['cpus']} CPUs), Python {m['python']}, NumPy {m['numpy']} "
             f"({m['blas']}); load average {m['load_start']:.1f} at start, {m['load_end']:.1f} at end",
             f"float32 training step = model.forward + cross-entropy + model.backward + AdamW.step; "
             f"median of {res['steps']} steps after {res['warmup']} warm-up steps, in each of "
             f"{res.get('rounds', 1)} alternating rounds (fresh processes); each side's fastest round counts",
             f"OpenBLAS overrides in this shell: {env or 'none'}; measuring processes "
             + ("KEEP them (--keep-openblas-env)" if res.get("keep_openblas_env") else "run WITHOUT them"),
             *(["allocator: every measuring process (NumPy, PyTorch, before) keeps freed memory, as minicct's "
                f"train_step does for itself: {res['malloc_env']}" if res["malloc_env"] else
                "allocator: glibc defaults in every measuring process (MINICCT_RETAIN_MEMORY=0)"]
               if "malloc_env" in res else []),
             "NumPy with N threads = N batch-parallel workers (minicct.parallel) of one BLAS thread each; "
             "PyTorch: torch.set_num_threads(N)", ""]
    head = (f"{'configuration':<24} {'regularisation':<27} {'thr':>3} {'step s':>7} {'img/s':>6} {'GFLOP':>6} "
            f"{'GFLOP/s':>7} {'matmul':>6} {'%mm':>4} {'mem MB':>6}")
    if res["torch_python"]:
        head += f" | {'torch s':>7} {'mem MB':>6} {'time x':>6} {'mem x':>5} {'logit diff':>10}"
    if res.get("baseline"):
        head += f" | {'before s':>8} {'mem MB':>6} {'speedup':>7}"
    lines += [head, "-" * len(head)]
    for c in res["cases"]:
        n = c["numpy"]
        if "error" in n:
            lines.append(f"{c['label']:<24} {c['reg']:<27} {c['threads']:3d} {n['error']}")
            continue
        row = (f"{c['label']:<24} {c['reg']:<27} {c['threads']:3d} {n['step_s']:7.3f} {n['images_per_s']:6.0f} "
               f"{n['flops']['step'] / 1e9:6.1f} {n['gflops']:7.1f} {n['matmul_gflops']:6.1f} "
               f"{100 * n['matmul_fraction']:3.0f}% {n['step_mem_mb']:6.0f}")
        t = c.get("torch")
        if t and "error" not in t:
            row += (f" | {t['step_s']:7.3f} {t['step_mem_mb']:6.0f} {c['time_ratio']:6.2f} {c['mem_ratio']:5.2f} "
                    f"{t['max_abs_logit_diff']:10.1e}")
        elif t:
            row += " | " + t["error"].splitlines()[0]
        b = c.get("baseline")
        if b and "error" not in b:
            row += f" | {b['step_s']:8.3f} {b['step_mem_mb']:6.0f} {c['speedup']:7.2f}"
        elif b:
            row += " | before: " + b["error"].splitlines()[0]
        lines.append(row)
    lines += ["", f"GFLOP: convolution and matmul FLOPs of one step (minicct.bench.step_flops). matmul: GFLOP/s of a "
              f"float32 [{res['matmul_n']}]^2 product in NumPy, same process, BLAS at N threads; %mm = GFLOP/s / matmul.",
              "mem: peak RSS of all steps minus RSS before the first step (VmHWM - VmRSS, same process). "
              "time x, mem x: NumPy / PyTorch. logit diff: max |difference| of the two models' logits."
              + (f" before: the minicct of {res['baseline']}; speedup = before / now." if res.get("baseline") else ""),
              "step s of every round: " + "; ".join(
                  f"{c['label']} [{c['reg']}] {c['threads']} thr: numpy {_fmt_rounds(c['numpy'])}"
                  + (f", torch {_fmt_rounds(c['torch'])}" if c.get("torch") and "error" not in c["torch"] else "")
                  for c in res["cases"] if "error" not in c["numpy"]),
              "", "what each side ran (BLAS library, kernel, threads):"]
    seen = set()
    for c in res["cases"]:
        for side in ("numpy", "torch"):
            r = c.get(side)
            if r and "error" not in r:
                line = _blas_line(f"{side}, {c['threads']} thr", r)
                if line not in seen:
                    seen.add(line)
                    lines.append(line)
    if res["breakdown_steps"]:
        lines += ["", f"where the time goes (one worker, BLAS at N threads): seconds per step (mean of "
                  f"{res['breakdown_steps']} steps with timers) and % of that step"]
        head = f"{'configuration':<24} {'regularisation':<27} {'thr':>3} " + " ".join(f"{p:>13}" for p in PARTS)
        lines += [head, "-" * len(head)]
    for c in res["cases"]:
        n = c["numpy"]
        if "error" in n or not n.get("breakdown_step_s"):
            continue
        tot = n["breakdown_step_s"]
        lines.append(f"{c['label']:<24} {c['reg']:<27} {c['threads']:3d} " + " ".join(
            f"{n['parts_s'][p]:7.3f} {100 * n['parts_s'][p] / tot:4.0f}%" for p in PARTS))
        missing = [p for p, k in n["part_calls"].items() if k == 0]
        if missing:
            lines.append(f"{'':<28} parts never called (the timer hooks missed them): {missing}")
        if n["non_float32"]:
            lines.append(f"{'':<28} arrays in the step that are not float32: {n['non_float32'][:5]}")
    for snp in res.get("snp", []):
        lines.append("")
        if "error" in snp:
            lines.append(f"SNP analysis ({snp['threads']} thread(s)): {snp['error']}")
            continue
        s = snp["seconds"]
        lines.append(f"SNP analysis of {snp['checkpoint']}, {snp['threads']} thread(s): {s['total']:.1f} s for "
                     f"{snp['n_sites']} sites ({snp['n_train']} training / {snp['n_test']} test images, "
                     f"{snp['epochs']} flat read-out epochs): load {s['load']:.1f} s, capturing activations "
                     f"{s['capture']:.1f} s, read-outs + fields + clusters + single-node predictions "
                     f"{s['analysis']:.1f} s")
        b = snp.get("baseline")
        if b:
            lines.append(f"  before ({res['baseline']}): " + (b["error"].splitlines()[0] if "error" in b else
                         f"{b['seconds']['total']:.1f} s (capturing {b['seconds']['capture']:.1f} s, analysis "
                         f"{b['seconds']['analysis']:.1f} s); speedup {b['seconds']['total'] / s['total']:.2f}"))
    tg = targets(res)
    if tg:
        lines += ["", "targets:"]
        lines += [f"  [{'met' if ok else 'MISSED'}] {name}: {value}" for name, value, ok in tg]
    return "\n".join(lines)


def _thread_list(text):
    try:
        out = [int(t) for t in text.split(",")]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"--threads expects positive integers separated by commas, got {text!r}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m minicct.bench", description=__doc__.split("\n\n")[0],
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


if __name__ == "__main__":
    sys.exit(main())
