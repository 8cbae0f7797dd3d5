"""Measuring, in the process it runs in: the training step (time, time per named stage, FLOPs, memory), the
PyTorch step, the SNP analysis and its paper-scale projection. The orchestration (orchestrate.py) runs these in
fresh subprocesses; report.py prints them."""
from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

#: (variant, batch, classes) timed by default: the two issue-6 configurations and the classroom model.
DEFAULT_CASES = ("cct_2_3x2_32@128:10", "cct_7_3x1_32@32:100", "classroom@128:20")
#: Parts of the breakdown, in forward order; "rest" = step time minus the timed parts (residual adds,
#: positional embedding, drop-path, cache bookkeeping).
PARTS = ("tokenizer", "attention", "mlp", "norms", "pool+head", "loss", "optimizer", "rest")
LR, WEIGHT_DECAY, SMOOTHING = 1e-3, 0.05, 0.1
#: A case's overrides without dropout / drop-path (--reg off, and the second row of --reg both).
NO_REG = {"attention_dropout": 0.0, "stochastic_depth": 0.0, "dropout": 0.0}
REPO = Path(__file__).resolve().parents[2]
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
        from .. import model as M
        return M.get_config(self.name, num_classes=self.num_classes, **self.overrides)

    @property
    def label(self) -> str:
        return f"{self.name} @{self.batch} K={self.config().num_classes}"


def parse_overrides(items) -> dict:
    """['embedding_dim=16', 'positional_embedding=sine', ...] -> typed dict for CCTConfig fields."""
    from ..model import CCTConfig
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
    """Wall time per part of the step, by the names of the stages the model calls: nothing is replaced.

    While active, a profile function (sys.setprofile) sees every Python call of this thread; a call of a stage
    function below, from the caller named with it, starts its part's clock and its return stops it (an inner
    stage of a running part, e.g. attention's own linear layers, stays in that part). So the step timed is the
    library's own train_step, line for line. The final LayerNorm counts as "norms"; the loss lines of
    train_step as "loss", its optimizer line as "optimizer". Calls are counted, so a part that is never reached
    (e.g. after a refactoring of the model) shows up as 0 calls instead of silently moving into "rest".
    """

    STAGES = {  # (caller, stage function) -> part
        **{(c, f"tokenizer_stage_{d}"): "tokenizer" for c in ("_forward", "backward") for d in ("forward", "backward")},
        **{(c, f"{n}_{d}"): "pool+head" for c in ("forward_from", "backward") for n in ("seqpool", "linear")
           for d in ("forward", "backward")},
        **{(c, f"layernorm_{d}"): "norms" for c in ("forward_from", "backward", "encoder_forward", "encoder_backward")
           for d in ("forward", "backward")},
        **{(f"encoder_{d}", f"attention_{d}"): "attention" for d in ("forward", "backward")},
        **{(f"encoder_{d}", f"{n}_{d}"): "mlp" for n in ("linear", "gelu", "dropout") for d in ("forward", "backward")},
        **{("grads_of", f"softmax_cross_entropy_{d}"): "loss" for d in ("forward", "backward")},
        ("train_step", "step"): "optimizer",
    }

    def __init__(self):
        self.seconds = {p: 0.0 for p in PARTS}
        self.calls = {p: 0 for p in PARTS}
        self._running = None                                  # (frame, part, start) of the part being timed

    def _profile(self, frame, event, arg):
        if event == "call" and self._running is None:
            caller = frame.f_back.f_code.co_name if frame.f_back is not None else None
            part = self.STAGES.get((caller, frame.f_code.co_name))
            if part is not None:
                self._running = (frame, part, time.perf_counter())
        elif event == "return" and self._running is not None and self._running[0] is frame:
            _, part, start = self._running
            self.seconds[part] += time.perf_counter() - start
            self.calls[part] += 1
            self._running = None

    @contextmanager
    def active(self):
        """Time the parts of what runs in this thread inside the block."""
        sys.setprofile(self._profile)
        try:
            yield self
        finally:
            sys.setprofile(None)
            self._running = None


def one_step(params, x, y, cfg, opt, rng, workers=1) -> float:
    """One real float32 training step of the library (train.step.train_step): forward (train mode), cross-entropy
    (smoothing 0.1), backward, AdamW; run by minicct.parallel.batch_parallel(workers) as the training loop runs it
    (freed memory kept in the process; workers > 1: the batch split over threads of one BLAS thread each,
    gradients summed; one worker: the step on this thread, what PartTimer times)."""
    from ..parallel import batch_parallel
    from ..train.step import train_step as the_step
    return the_step(params, opt, x, y, cfg, rng, smoothing=SMOOTHING, run_shards=batch_parallel(workers)).loss


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
    from ..parallel import blas_info
    from .. import model as M
    from ..layers.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
    from ..train.optim import AdamW
    cfg = case.config()
    params = M.init_params(cfg, seed)
    x, y = make_batch(cfg, case.batch, seed)
    opt = AdamW(LR, weight_decay=WEIGHT_DECAY, frozen=M.frozen_params(cfg))
    rng = np.random.default_rng(seed)
    losses = []
    blas = blas_info()                                              # before the steps: threads as configured
    out = timed_steps(lambda: losses.append(one_step(params, x, y, cfg, opt, rng, workers=workers)), steps, warmup)
    step = out["step_s"]
    mm = matmul_rate(matmul_n) if matmul_n else float("nan")       # right after the steps, same conditions

    timer = PartTimer()
    timed = []
    for _ in range(breakdown_steps):                                # one worker, BLAS at its configured threads
        t0 = time.perf_counter()
        with timer.active():
            one_step(params, x, y, cfg, opt, rng)
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
    from .. import model as M
    from ..tools.torch_cct import torch_cct
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
    from ..analysis import report
    from ..datasets import load
    from ..io.npz_checkpoint import load_checkpoint
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
    from .. import model as M
    from ..analysis.capture_disk import site_shape
    from ..analysis.costs import measure_snp_rates, project_snp_seconds
    from ..parallel import blas_info, resolve_workers
    from ..sites import Site
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
