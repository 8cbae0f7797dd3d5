"""Batch-parallel workers: both (all) CPU cores for the training step, evaluation and activation capture.

How: a batch is cut into `workers` contiguous shards; each shard runs in its own thread; NumPy releases the GIL
inside its element-wise loops and BLAS calls, so the shards run on different cores while sharing the
parameters (no copies, no pickling as with processes). Each worker must use ONE BLAS thread (w workers each
running a w-threaded BLAS would oversubscribe the cores). OpenBLAS's thread count is process-wide; it is set
through OpenBLAS's own C API (`openblas_set_num_threads`, found with ctypes in the library NumPy loaded) for
the duration of a parallel section and restored afterwards (`blas_threads`). Where NumPy uses another BLAS
(MKL, Accelerate) that cannot be set this way, `default_workers()` is 1 (set workers or MINICCT_WORKERS to
override).

Results equal those of one worker:
  * evaluation / capture (`predict`, `map_batches`): every batch is computed whole by one worker, at the same
    batch boundaries as serially -> bit for bit the same.
  * training step (`batch_parallel`, given to train.step.train_step as run_shards): each shard's gradient is
    that of its share of the mean loss (dlogits scaled by n_shard / N); the shards' gradients are summed -> equal to one worker up to float32 rounding (the sum
    over the batch is split in a different order). Dropout / drop-path masks are the same as one worker's:
    every element of a mask consumes exactly 16 bits of the generator's raw stream
    (layers/kernels.keep_mask), so shard [a, b) jumps (`bit_generator.advance`) to its part of each
    mask. Needs a bit generator with `advance` (PCG64 -- np.random.default_rng's --, PCG64DXSM, Philox).

    workers = None -> default_workers(): MINICCT_WORKERS if set, else the usable CPUs (1 without BLAS control).

Many independent jobs of short NumPy calls (the read-outs of a seed sweep) run on forked processes instead
(`run_forked`, Linux): with threads, each step's dozen small calls wait for the GIL. Each job is computed whole
by one process, so those results too are bit for bit those of one worker.
"""
from __future__ import annotations

import ctypes
import glob
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from . import model as M
from .layers.kernels import raw_to_uint16
from .memory import retain_freed_memory

# ------------------------------------------------------------------------------------------ BLAS control

_BLAS = None            # (ctypes lib, symbol prefix, symbol suffix, path) or False when not found
_BLAS_LOCK = threading.Lock()


def _openblas():
    """The OpenBLAS library NumPy loaded, via ctypes: (lib, prefix, suffix, path), or None."""
    global _BLAS
    if _BLAS is None:
        _BLAS = False
        paths = []
        try:
            with open("/proc/self/maps") as f:
                paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
        except OSError:
            pass
        base = os.path.dirname(np.__file__)
        paths += sorted(glob.glob(os.path.join(base, "..", "numpy.libs", "*openblas*")))
        paths += sorted(glob.glob(os.path.join(base, ".dylibs", "*openblas*")))
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for pre in ("scipy_openblas", "openblas"):
                for suf in ("64_", ""):
                    if hasattr(lib, f"{pre}_set_num_threads{suf}") and hasattr(lib, f"{pre}_get_num_threads{suf}"):
                        _BLAS = (lib, pre, suf, path)
                        return _BLAS
    return _BLAS or None


def _fn(name, restype=ctypes.c_int):
    lib, pre, suf, _ = _openblas()
    f = getattr(lib, f"{pre}_{name}{suf}")
    f.restype = restype
    return f


def blas_controllable() -> bool:
    """True when NumPy's BLAS is an OpenBLAS whose thread count this module can set."""
    return _openblas() is not None


def get_blas_threads():
    """OpenBLAS's current thread count, or None when it cannot be read."""
    return int(_fn("get_num_threads")()) if blas_controllable() else None


def set_blas_threads(n: int):
    """Set OpenBLAS's (process-wide) thread count; no-op without BLAS control."""
    if blas_controllable():
        _fn("set_num_threads", None).argtypes = [ctypes.c_int]
        _fn("set_num_threads", None)(int(n))


_DEPTH = 0


@contextmanager
def blas_threads(n: int):
    """Run the body with OpenBLAS at n threads, then restore the previous count (nested sections: outermost
    restores)."""
    global _DEPTH
    with _BLAS_LOCK:
        before = get_blas_threads()
        _DEPTH += 1
        if before is not None and before != n:
            set_blas_threads(n)
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _DEPTH -= 1
            if _DEPTH == 0 and before is not None and before != n:
                set_blas_threads(before)


def blas_info() -> dict:
    """What NumPy's BLAS is and does here: library, OpenBLAS config string and kernel (core) name, threads,
    and the OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE overrides of this process's environment."""
    info = {"library": None, "config": None, "corename": None, "threads": None,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}
    if blas_controllable():
        info["library"] = os.path.basename(_openblas()[3])
        for key, name in (("config", "get_config"), ("corename", "get_corename")):
            try:
                info[key] = _fn(name, ctypes.c_char_p)().decode()
            except AttributeError:
                pass
        info["threads"] = get_blas_threads()
    return info


# ------------------------------------------------------------------------------------------ workers

def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """MINICCT_WORKERS if set, else the usable CPUs when the BLAS threads can be controlled, else 1."""
    env = os.environ.get("MINICCT_WORKERS")
    if env:
        return resolve_workers(int(env))
    return usable_cpus() if blas_controllable() else 1


def resolve_workers(workers) -> int:
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer (or None for the usable CPUs), got {workers!r}")
    return int(workers)


def split(n: int, workers: int) -> list:
    """Contiguous shards of range(n) as slices, sizes differing by at most 1, none empty (<= workers)."""
    k = max(1, min(int(workers), int(n)))
    edges = [n * i // k for i in range(k + 1)]
    return [slice(edges[i], edges[i + 1]) for i in range(k)]


_POOLS = {}


def _pool(n_threads):
    """The reused thread pool of n_threads threads (created on first use)."""
    if n_threads not in _POOLS:
        _POOLS[n_threads] = ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="minicct")
    return _POOLS[n_threads]


def _shutdown_pools():
    """Stop the idle pool threads (run never leaves work in them); _pool makes new ones when needed."""
    for ex in _POOLS.values():
        ex.shutdown(wait=True)
    _POOLS.clear()


def run(fn, items, workers=None) -> list:
    """[fn(item) for item in items] on `workers` threads (one BLAS thread each), results in item order.

    The calling thread computes items too. Exceptions are raised after every item has finished (no worker
    is left writing into shared arrays).
    """
    items = list(items)
    w = min(resolve_workers(workers), len(items))
    if w <= 1 or in_forked_job():                           # a forked job already has its core
        return [fn(it) for it in items]
    lock = threading.Lock()
    nxt = [0]
    out = [None] * len(items)
    errors = []

    def drain():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(items) or errors:
                return
            try:
                out[i] = fn(items[i])
            except BaseException as e:                      # noqa: BLE001  re-raised below
                errors.append(e)

    with blas_threads(1):
        futures = [_pool(w - 1).submit(drain) for _ in range(w - 1)]
        drain()
        for f in futures:
            f.result()
    if errors:
        raise errors[0]
    return out


# ------------------------------------------------------------------------------------------ forked workers

_FORKED_JOB = [None, None]  # (job, pid of the process that forked): inherited by the forked processes


def in_forked_job() -> bool:
    """True inside a process forked by run_forked: there, run and run_forked compute serially."""
    return _FORKED_JOB[1] is not None and _FORKED_JOB[1] != os.getpid()


def _forked_call(i):
    return _FORKED_JOB[0](i)


def die_with_parent(parent_pid: int) -> None:
    """Initializer of a forked worker: on Linux ask the kernel to SIGKILL this process when its parent dies
    (prctl PR_SET_PDEATHSIG), then exit at once if the parent is already gone. Without it, `kill -9` of
    snp/replicate left their workers computing (and writing figures) for nobody."""
    if sys.platform.startswith("linux"):
        try:
            import signal
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)   # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def fork_available() -> bool:
    """True where run_forked uses processes: Linux, whose "fork" start method gives the children the parent's
    memory (the activations) without pickling, with Python >= 3.11 (whose process pool forks its children
    before it starts its manager thread). Elsewhere (macOS, Windows) forking a process that uses system
    frameworks is unsafe or impossible, and run_forked falls back to `run`'s threads."""
    import multiprocessing
    return (sys.platform.startswith("linux") and sys.version_info >= (3, 11)
            and "fork" in multiprocessing.get_all_start_methods())


def run_forked(fn, items, workers=None, fallback="threads") -> list:
    """[fn(item) for item in items] on `workers` forked processes (one BLAS thread each), results in item order.

    For many independent jobs made of short NumPy calls (read-outs: a dozen small operations per step), where
    threads wait for each other's GIL: each process has its own interpreter. The children see the parent's
    arrays (copy-on-write: read them, do not write them); each result is pickled back, so fn must return
    picklable values, and what fn changes in memory stays in the child. Every item is computed whole by one
    process, so the results are those of `run` and of one worker, bit for bit. Falls back, with one worker,
    where fork is not available (fork_available) or refused (OSError), and off the main thread, to `run`'s
    threads (fallback="threads") or to a serial loop (fallback="serial": for jobs that must not share a
    process concurrently, e.g. pyplot figures); inside a forked job it runs serially (as `run` does there).
    The first exception of a job is raised in the caller, after the jobs not yet started are cancelled; a
    child that dies (e.g. killed for lack of memory) raises concurrent.futures.process.BrokenProcessPool
    instead of leaving the caller waiting.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    if fallback not in ("threads", "serial"):
        raise ValueError(f"fallback must be 'threads' or 'serial', got {fallback!r}")
    items = list(items)
    w = min(resolve_workers(workers), len(items))
    fall_back = lambda: run(fn, items, workers if fallback == "threads" else 1)   # noqa: E731  (serial in a job)
    if (w <= 1 or in_forked_job() or not fork_available()
            or threading.current_thread() is not threading.main_thread()):
        return fall_back()
    _shutdown_pools()             # no idle worker threads across the fork (Python 3.12+ warns about them)
    _FORKED_JOB[:] = [lambda i: fn(items[i]), os.getpid()]
    try:
        with blas_threads(1):                               # set before the fork: the children inherit it
            pool = ProcessPoolExecutor(w, mp_context=multiprocessing.get_context("fork"),
                                       initializer=die_with_parent, initargs=(os.getpid(),))
            try:
                futures = [pool.submit(_forked_call, i) for i in range(len(items))]   # forks the children
            except OSError:                                 # fork refused (e.g. strict memory overcommit)
                futures = None
            try:
                if futures is not None:
                    return [f.result() for f in futures]
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        _FORKED_JOB[:] = [None, None]
    return fall_back()


_SWITCH_LOCK = threading.Lock()
_SWITCH_DEPTH = [0, None]


@contextmanager
def gil_switch_interval(seconds):
    """Run the body with Python's thread switch interval (sys.setswitchinterval) at `seconds`, then restore it.

    Threads whose work is many short NumPy calls (a read-out step: two small GEMMs between a dozen tiny
    element-wise ops) hand the GIL back and forth; a thread returning from a GIL-free BLAS call waits up to
    the interval (default 5 ms) for the other to yield, so two such workers ran no faster than one. A short
    interval (0.2 ms) lets them overlap. Nested sections: the outermost restores.
    """
    import sys
    with _SWITCH_LOCK:
        if _SWITCH_DEPTH[0] == 0:
            _SWITCH_DEPTH[1] = sys.getswitchinterval()
            sys.setswitchinterval(seconds)
        _SWITCH_DEPTH[0] += 1
    try:
        yield
    finally:
        with _SWITCH_LOCK:
            _SWITCH_DEPTH[0] -= 1
            if _SWITCH_DEPTH[0] == 0:
                sys.setswitchinterval(_SWITCH_DEPTH[1])


# ------------------------------------------------------------------------------------ shard random streams

class ShardStream:
    """The part [a, b) (rows of the first axis) of the masks a batch of N would draw from one generator.

    Implements `uniform16(n)` (layers/regularization.uniform16): a mask call of n values for this shard is a
    call of n / (b - a) * N values for the batch; the shard jumps to its rows, draws them, and jumps to the
    end of the batch's call, so after the forward every shard's stream stands where the batch's would.
    """

    def __init__(self, bit_generator, a, b, n):
        if not hasattr(bit_generator, "advance"):
            raise ValueError(f"batch-parallel dropout needs a bit generator with advance() (PCG64, the default of "
                             f"np.random.default_rng; PCG64DXSM; Philox), got {type(bit_generator).__name__}; "
                             f"use workers=1 or np.random.default_rng(seed)")
        self.bit_generator = type(bit_generator)()
        self.bit_generator.state = bit_generator.state
        self.a, self.b, self.n = a, b, n

    def uniform16(self, count):
        rows = self.b - self.a
        if count % rows:
            raise ValueError(f"shard random stream: a mask of {count} values does not split into {rows} rows")
        per = count // rows                                      # values per sample
        start, stop, total = self.a * per, self.b * per, -(-(per * self.n) // 4)
        r0, r1 = start // 4, -(-stop // 4)                       # raw outputs holding values [start, stop)
        bg = self.bit_generator
        if r0:
            bg.advance(r0)
        raw = bg.random_raw(r1 - r0)
        if total - r1:
            bg.advance(total - r1)
        off = start - 4 * r0
        return raw_to_uint16(raw)[off:off + count]

    def __getattr__(self, name):
        raise AttributeError(f"a shard random stream only supplies dropout / drop-path masks (uniform16); "
                             f"{name!r} was asked for: a layer drew randomness another way")


def shard_streams(rng, shards, n):
    """One ShardStream per shard, all starting at rng's current state (None when rng is None)."""
    if rng is None:
        return [None] * len(shards)
    return [ShardStream(rng.bit_generator, s.start, s.stop, n) for s in shards]


def finish_streams(rng, streams):
    """Move rng to where one worker's forward would have left it (all shard streams end there)."""
    if rng is not None and streams and streams[0] is not None:
        rng.bit_generator.state = streams[0].bit_generator.state


# ------------------------------------------------------------------------------------------ jobs

def batch_parallel(workers=None):
    """A shard runner for the training step: train_step(..., run_shards=batch_parallel(workers)).

    run_shards(grads_of, x, y, rng) cuts the batch into `workers` contiguous shards and calls
    grads_of(x[a:b], y[a:b], shard_stream, (b - a) / N) for each on its own thread (grads_of is train_step's
    forward -> loss -> backward, its loss gradient scaled by the shard's share of the batch mean); returns
    (loss, logits [N, K], grads) with the shards' gradients summed in shard order (the same sum at every run).
    One shard: exactly grads_of(x, y, rng, 1.0). The first call raises glibc's malloc thresholds so that steps
    reuse freed memory (minicct.memory).
    """
    w = resolve_workers(workers)

    def run_shards(grads_of, x, y, rng):
        retain_freed_memory()
        N = x.shape[0]
        shards = split(N, w)
        if len(shards) == 1:
            return grads_of(x, y, rng, 1.0)
        streams = shard_streams(rng, shards, N)
        out = run(lambda i: grads_of(x[shards[i]], y[shards[i]], streams[i], (shards[i].stop - shards[i].start) / N),
                  range(len(shards)), len(shards))
        finish_streams(rng, streams)
        grads = out[0][2]
        for _, _, g in out[1:]:
            for k, v in g.items():
                grads[k] += v                                   # shard order: the same sum at every run
        loss = sum(o[0] * (s.stop - s.start) for o, s in zip(out, shards)) / N
        return float(loss), np.concatenate([o[1] for o in out]), grads

    return run_shards


def predict(params, x, cfg, batch_size=256, capture=None, transform=None, start_encoder=None, workers=None,
            out=None):
    """model.predict with its batches spread over `workers` threads (None: the usable CPUs); every batch is
    computed whole by one worker, so the result is bit for bit that of model.predict. Freed batch buffers stay
    in the process (minicct.memory)."""
    retain_freed_memory()
    return M.predict(params, x, cfg, batch_size, capture, transform, start_encoder, out,
                     run=lambda fn, batches: run(fn, batches, workers))


def map_batches(fn, n, batch_size, workers=None) -> list:
    """[fn(slice) for each batch slice of range(n)], the batches spread over `workers` threads; the batch
    boundaries do not depend on workers (so each result is bit for bit that of one worker)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    slices = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    return run(fn, slices, workers)
