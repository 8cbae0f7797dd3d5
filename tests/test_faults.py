"""Issue 14: nothing lost, nothing silently wrong. Every case of tests/fault_cases.py (hostile pickles and .pth
files, a local HTTP server that truncates, stalls, lies about sizes, gzips and redirects, SIGKILL during saves,
bad CLI values) must end in the right result or a clear error; plus the atomic-write helper itself.
The census of the same cases, each in its own memory-capped process: `python tests/fault_cases.py`."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fault_cases as fc
from minicct.io import atomic


@pytest.mark.parametrize("name", sorted(fc.CASES))
def test_fault_case(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("minicct.io.download.MAX_UNKNOWN_BYTES", 2 << 30)  # cases that lower it restore
    verdict = fc.run_case(name, tmp_path)
    assert verdict in ("ok", "clear"), f"{name}: {verdict}"


def test_cli_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    (tmp_path / "afile").write_text("x")
    rc, out, err = fc._cli(["train", "--out", str(tmp_path / "afile" / "m.npz")])
    assert rc == 1 and err.strip().count("\n") == 0 and err.startswith("error: ") and "afile" in err
    rc, out, err = fc._cli(["--debug", "train", "--out", str(tmp_path / "afile" / "m.npz")])
    assert rc == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")
    rc, out, err = fc._cli(["train", "--debug", "--out", str(tmp_path / "afile" / "m.npz")])
    assert rc == 1 and "Traceback" in err


def test_unexpected_exception_named_with_debug_hint(monkeypatch):
    import minicct.__main__ as cli
    monkeypatch.setattr(cli, "cmd_info", lambda args: 1 / 0)
    rc, out, err = fc._cli(["info"])
    assert rc == 1 and "ZeroDivisionError" in err and "--debug" in err and "Traceback" not in err


def _small_data(monkeypatch, n_train=400, n_test=200):
    """The CLI's dataset cut to its first images (keeps the CLI tests to seconds)."""
    import dataclasses

    import minicct.datasets as datasets
    real = datasets.load

    def load(*a, **k):
        d = real(*a, **k)
        return dataclasses.replace(d, x_train=d.x_train[:n_train], y_train=d.y_train[:n_train],
                                   x_test=d.x_test[:n_test], y_test=d.y_test[:n_test])
    monkeypatch.setattr(datasets, "load", load)


def test_snp_results_saved_before_figures(tmp_path, monkeypatch):
    """A figure that fails must not lose the numbers: table printed and snp_results.json written first."""
    from minicct import plots
    _small_data(monkeypatch)

    def boom(*a, **k):
        raise OSError("disk full while drawing")
    monkeypatch.setattr(plots, "snp_figures", boom)
    out = tmp_path / "snp"
    rc, stdout, err = fc._cli(["snp", "--checkpoint", fc.CKPT, "--n-train", "400", "--epochs", "1",
                               "--modes", "flat", "--out", str(out)])
    assert rc == 1 and "disk full" in err and "SNR" in stdout
    import json
    table = json.loads((out / "snp_results.json").read_text())["table"]
    assert len(table["accuracy"]) >= 2 and all(0 <= a <= 1 for a in table["accuracy"])


def test_train_overwrite_and_resume_pass_the_output_check(tmp_path, monkeypatch):
    """--overwrite, or --resume of the same file, lets train reach the training (stubbed here)."""
    import minicct.train.loop as loop

    def reached(*a, **k):
        raise RuntimeError("reached training")
    monkeypatch.setattr(loop, "train", reached)
    out = tmp_path / "m.npz"
    out.write_bytes(b"old")
    for extra in (["--overwrite"], ["--resume", str(out)]):
        rc, stdout, err = fc._cli(fc._tiny_train_args(out, extra))
        assert rc == 1 and "reached training" in err, err
    rc, stdout, err = fc._cli(fc._tiny_train_args(out))
    assert rc == 1 and "refusing to replace" in err and out.read_bytes() == b"old"


# ------------------------------------------------------------------------------------------ atomic helper

def test_atomic_write_keeps_old_file_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    atomic.atomic_write_bytes(target, b"old")

    def fail(f):
        f.write(b"half")
        raise RuntimeError("writer died")
    with pytest.raises(RuntimeError):
        atomic.atomic_write(target, fail)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


def test_atomic_write_to_a_directory_leaves_no_temporary(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        atomic.atomic_write_bytes(tmp_path / "d", b"x")
    (tmp_path / "t.part").write_bytes(b"x")
    with pytest.raises(IsADirectoryError):  # commit (downloads' .part -> final name) removes its temporary
        atomic.commit(tmp_path / "t.part", tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"] and not list((tmp_path / "d").iterdir())


def test_sweep_removes_dead_writers_temporaries_only(tmp_path):
    target = tmp_path / "m.npz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f"m.npz.{dead}-abc123xy.tmp"
    live = tmp_path / f"m.npz.{os.getpid()}-abc123xy.tmp"
    legacy_old, legacy_new = tmp_path / "m.npz.q1w2e3r4.tmp", tmp_path / "m.npz.z9x8c7v6.tmp"
    other = tmp_path / f"n.npz.{dead}-abc123xy.tmp"
    for p in (stale, live, legacy_old, legacy_new, other):
        p.write_bytes(b"x")
    os.utime(legacy_old, (time.time() - 2 * atomic.LEGACY_TMP_AGE,) * 2)
    atomic.atomic_write_bytes(target, b"new")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert stale.name not in names and legacy_old.name not in names
    assert {live.name, legacy_new.name, other.name, "m.npz"} <= set(names)


def test_stamp_not_trusted_after_a_copy_with_preserved_mtime(tmp_path):
    """Replacing a verified file by another of the same size and mtime (cp -p) must be noticed."""
    from minicct.io import download as dl
    path = tmp_path / "f"
    path.write_bytes(b"a" * 100)
    md5 = dl.file_md5(path)
    assert dl.is_verified(path, md5)
    st = path.stat()
    other = tmp_path / "g"
    other.write_bytes(b"b" * 100)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, path)
    assert not dl.is_verified(path, md5)


def test_pickle_scan_accepts_real_pickles_and_bounds_containers():
    import pickle

    from minicct.io.safe_pickle import check_pickle_structure
    obj = {b"data": list(range(1000)), b"labels": [(i, {"a": [i]}) for i in range(100)]}
    for proto in range(0, 6):
        check_pickle_structure(pickle.dumps(obj, protocol=proto))
    with pytest.raises(pickle.UnpicklingError, match="more than 10 items"):
        check_pickle_structure(pickle.dumps(list(range(11)), protocol=2), max_container=10)
    with pytest.raises(pickle.UnpicklingError, match="deep"):
        check_pickle_structure(pickle.dumps([[[[[1]]]]], protocol=2), max_depth=4)


def test_pth_views_share_storage_without_copies(tmp_path):
    """Two contiguous slices of one storage come back as views (no copy), writable, with the right values."""
    raw = np.arange(8, dtype="<f4").tobytes()
    entries = [("a", fc._tensor("FloatStorage", "0", 8, 0, (2, 2), (2, 1))),
               ("b", fc._tensor("FloatStorage", "0", 8, 4, (4,), (1,))),
               ("t", fc._tensor("FloatStorage", "0", 8, 0, (2, 2), (1, 2)))]
    path = fc.write_pth(tmp_path / "v.pth", fc._state_dict_pickle(entries), {"0": raw})
    from minicct.io.torch_io import load_state_dict
    sd = load_state_dict(path)
    assert np.array_equal(sd["a"], [[0, 1], [2, 3]]) and np.array_equal(sd["b"], [4, 5, 6, 7])
    assert np.array_equal(sd["t"], [[0, 2], [1, 3]]) and sd["t"].flags.c_contiguous
    assert sd["a"].base is not None and sd["b"].base is sd["a"].base  # views of the one storage array
    assert sd["a"].flags.writeable and sd["t"].base is None            # the transposed one is a copy


def test_sigint_at_every_step_resumes_to_the_same_run(tmp_path, monkeypatch):
    """A real SIGINT after every step of a 2-epoch x 3-step run (the last step of an epoch included): each
    interrupted run resumes to exactly the uninterrupted parameters, step losses and recorded epoch losses."""
    import signal

    import minicct.train.loop as loop
    from minicct import model as M
    from minicct.datasets.base import Dataset, channel_stats
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = rng.integers(0, 255, (120, 16, 16, 3), dtype=np.uint8)
    mean, std = channel_stats(x)
    data = Dataset("toy", x, y, x[:30], y[:30], ["a", "b", "c"], mean, std)
    cfg = fc.tiny_cfg()
    tc = loop.TrainConfig(epochs=2, batch_size=40, lr=1e-2, warmup_epochs=0.5, seed=2)
    full_params, full, _ = loop.train(cfg, data, tc, quiet=True)
    orig = loop._Progress.update
    for k in range(1, 7):
        calls = {"n": 0}

        def update(self, text, k=k):
            orig(self, text)
            calls["n"] += 1
            if calls["n"] == k:
                os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C: the handler sets the stop flag
        monkeypatch.setattr(loop._Progress, "update", update)
        ck = tmp_path / f"ck{k}.npz"
        with pytest.raises(KeyboardInterrupt):
            loop.train(cfg, data, tc, checkpoint=ck, quiet=True)
        monkeypatch.setattr(loop._Progress, "update", orig)
        params, hist, _ = loop.train(cfg, data, tc, checkpoint=ck, resume=ck, quiet=True)
        assert hist.step_losses == full.step_losses, k
        np.testing.assert_allclose(hist.train_loss, full.train_loss, rtol=1e-12, err_msg=f"k={k}")
        for name in params:
            np.testing.assert_array_equal(params[name], full_params[name], err_msg=f"k={k} {name}")


def test_capture_to_disk_leaves_no_part_file_when_interrupted(tmp_path, monkeypatch):
    from minicct import model as M
    from minicct.analysis import capture_disk
    cfg = fc.tiny_cfg()
    params = M.init_params(cfg, np.random.default_rng(0))

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(capture_disk.M, "predict", interrupted)
    x = np.zeros((4, 3, 16, 16), np.float32)
    with pytest.raises(KeyboardInterrupt):
        capture_disk.capture_to_disk(params, x, cfg, ["pooled"], tmp_path / "acts")
    assert not list((tmp_path / "acts").iterdir())
    monkeypatch.undo()
    out = capture_disk.capture_to_disk(params, x, cfg, ["pooled"], tmp_path / "acts")
    assert out["pooled"].shape == (4, cfg.embedding_dim) and sorted(p.name for p in (tmp_path / "acts").iterdir()) \
        == ["pooled.npy"]


# ------------------------------------------------------------------------------------------- issue 24

def test_replicate_out_dirs_keep_same_names_apart(tmp_path):
    from minicct.__main__ import replicate_out_dirs
    assert replicate_out_dirs(tmp_path, ["a/m.npz"]) == [tmp_path]
    got = replicate_out_dirs(tmp_path, ["x/a/model.npz", "x/b/model.npz", "c.npz", "x/a/model.npz"])
    assert [p.name for p in got] == ["a_model", "b_model", "c", "a_model-2"]


def test_npz_read_refuses_before_inflating(tmp_path):
    """The bounded reader: duplicates, lying headers and over-budget members are refused by their names."""
    import io
    import zipfile

    from minicct.io.npz_read import open_npz, read_npy
    path = tmp_path / "a.npz"
    np.savez(path, a=np.arange(6, dtype=np.int16).reshape(2, 3), s=np.array("NCHW"))
    with open_npz(path) as zf:
        a, s = read_npy(zf, path, "a"), read_npy(zf, path, "s")
        assert a.dtype == np.int16 and a.tolist() == [[0, 1, 2], [3, 4, 5]] and s.shape == () and str(s) == "NCHW"
        with pytest.raises(ValueError, match="'a' declares"):
            read_npy(zf, path, "a", max_bytes=4)
    h = io.BytesIO()
    np.lib.format.write_array_header_1_0(h, {"descr": "<f4", "fortran_order": False, "shape": (1000,)})
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("b.npy", h.getvalue() + bytes(8))
    with open_npz(path) as zf, pytest.raises(ValueError, match="'b' declares .* holds"):
        read_npy(zf, path, "b")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr("a.npy", b"x")
    with pytest.raises(ValueError, match="more than once"):
        open_npz(path)
