"""parallel.run_forked: independent jobs on forked processes give the serial results, in order; errors reach the
caller; nested calls inside a job run serially; without fork it is parallel.run."""
import os

import numpy as np
import pytest

from minicct import parallel

needs_fork = pytest.mark.skipif(not parallel.fork_available(), reason="processes need the fork start method (Linux)")


def _job(A):
    def fn(i):                                   # reads the parent's array; NumPy work; a picklable result
        rng = np.random.default_rng(i)
        w = rng.standard_normal(A.shape[1]).astype(np.float32)
        return {"i": i, "z": A @ w, "pid": os.getpid()}
    return fn


@needs_fork
def test_forked_equals_serial_bit_for_bit_and_in_order():
    A = np.random.default_rng(0).standard_normal((300, 40)).astype(np.float32)
    fn = _job(A)
    items = [5, 3, 8, 1, 0, 7]
    got = parallel.run_forked(fn, items, workers=2)
    want = [fn(i) for i in items]
    assert [g["i"] for g in got] == items
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g["z"], w["z"])
    assert {g["pid"] for g in got} - {os.getpid()}, "the jobs ran in child processes"


@needs_fork
def test_forked_job_error_is_raised_in_caller():
    def fn(i):
        if i == 2:
            raise ValueError(f"bad item {i}")
        return i
    with pytest.raises(ValueError, match="bad item 2"):
        parallel.run_forked(fn, range(4), workers=2)
    assert parallel.run_forked(lambda i: i * i, range(4), workers=2) == [0, 1, 4, 9]   # usable again


@needs_fork
def test_inside_a_forked_job_everything_is_serial():
    def fn(i):
        inner = parallel.run_forked(lambda j: (j, os.getpid()), range(3), workers=2)
        threads = parallel.run(lambda j: j, range(3), workers=2)
        return parallel.in_forked_job(), {p for _, p in inner} == {os.getpid()}, threads
    out = parallel.run_forked(fn, range(2), workers=2)
    assert out == [(True, True, [0, 1, 2])] * 2
    assert not parallel.in_forked_job()


def test_without_fork_it_is_run(monkeypatch):
    monkeypatch.setattr(parallel, "fork_available", lambda: False)
    A = np.arange(12, dtype=np.float32).reshape(4, 3)
    got = parallel.run_forked(lambda i: (A[i].sum(), os.getpid()), range(4), workers=2)
    assert got == [(A[i].sum(), os.getpid()) for i in range(4)]


def test_off_the_main_thread_it_uses_threads():
    import threading
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", parallel.run_forked(lambda i: (i, os.getpid()),
                                                                                range(4), workers=2)))
    t.start()
    t.join()
    assert out["r"] == [(i, os.getpid()) for i in range(4)]


@needs_fork
def test_refused_fork_falls_back_to_threads(monkeypatch):
    import multiprocessing.context

    def refuse(self, process_obj):
        raise OSError(12, "Cannot allocate memory")
    monkeypatch.setattr(multiprocessing.context.ForkProcess, "_Popen", staticmethod(lambda p: refuse(None, p)))
    assert parallel.run_forked(lambda i: (i, os.getpid()), range(3), workers=2) == [(i, os.getpid()) for i in range(3)]
    assert not parallel.in_forked_job()


@needs_fork
def test_a_killed_child_raises_instead_of_hanging():
    import signal
    from concurrent.futures.process import BrokenProcessPool

    def fn(i):
        if i == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return i
    with pytest.raises(BrokenProcessPool):
        parallel.run_forked(fn, range(4), workers=2)
    assert parallel.run_forked(lambda i: i + 1, range(3), workers=2) == [1, 2, 3]


def test_serial_fallback_never_uses_threads(monkeypatch):
    import threading
    monkeypatch.setattr(parallel, "fork_available", lambda: False)
    got = parallel.run_forked(lambda i: threading.current_thread().name, range(4), workers=2, fallback="serial")
    assert got == [threading.current_thread().name] * 4
    with pytest.raises(ValueError, match="fallback"):
        parallel.run_forked(lambda i: i, range(2), workers=2, fallback="processes")
