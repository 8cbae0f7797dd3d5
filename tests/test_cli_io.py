"""CLI of issue 13: one --checkpoint (npz, pth, training checkpoint), npz: datasets, export, train --init,
snp-arrays (equal to snp on minicct's own activations)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from minicct import __main__ as cli
from minicct import model as M
from minicct.analysis.report import capture, site_names
from minicct.datasets import load
from minicct.io.features import write_features
from minicct.io.torch_io import load_state_dict
from minicct.io.npz_checkpoint import save_checkpoint
from minicct.train.loop import evaluate

FIX = Path(__file__).resolve().parent / "fixtures"
TINY = dict(img_size=16, n_conv_layers=2, kernel_size=3, in_planes=8, embedding_dim=16, num_heads=2, num_layers=2,
            mlp_ratio=2.0, num_classes=5, positional_embedding="learnable")


def _npz_data(tmp_path, n=40, K=5, seed=0):
    rng = np.random.default_rng(seed)
    x_tr = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    x_te = rng.integers(0, 256, (n // 2, 16, 16, 3), dtype=np.uint8)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x_tr, y_train=np.arange(n) % K, x_test=x_te.transpose(0, 3, 1, 2),
             y_test=np.arange(n // 2) % K)
    return path


def test_evaluate_training_checkpoint_end_to_end(tmp_path, capsys):
    data_path = _npz_data(tmp_path)
    rc = cli.main(["evaluate", "--checkpoint", str(FIX / "train_ckpt_cuda.pth"), "--heads", "2",
                   "--dataset", f"npz:{data_path}"])
    out = capsys.readouterr().out
    cfg = M.CCTConfig(**TINY)
    sd = load_state_dict(FIX / "train_ckpt_cuda.pth")
    params = {k: sd[k] for k in M.param_shapes(cfg)}
    data = load(f"npz:{data_path}")
    mean, std = (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)      # the checkpoint's args (timm train.py)
    loss, acc = evaluate(params, cfg, data.x_test, data.y_test, mean, std)
    assert rc == 0, out
    assert "training checkpoint; arch cct_tiny, epoch 299, metric 80.92" in out
    assert "recorded with the model (the training checkpoint's args" in out
    assert f"loss {loss:.4f}, top-1 accuracy {100 * acc:.2f}%" in out
    assert "metric recorded in the training checkpoint (epoch 299): 80.92" in out


def test_evaluate_errors_are_clear(tmp_path, capsys):
    data_path = _npz_data(tmp_path, K=4)
    rc = cli.main(["evaluate", "--checkpoint", str(FIX / "train_ckpt_cuda.pth"), "--dataset", f"npz:{data_path}"])
    assert rc == 1 and "--heads H" in capsys.readouterr().err
    rc = cli.main(["evaluate", "--checkpoint", str(FIX / "train_ckpt_cuda.pth"), "--heads", "2",
                   "--dataset", f"npz:{data_path}"])
    err = capsys.readouterr().err
    assert rc == 1 and "expects 5 classes at 16px" in err and "has 4 classes" in err
    rc = cli.main(["evaluate", "--checkpoint", str(FIX / "train_ckpt_foreign.pth"), "--heads", "2",
                   "--dataset", f"npz:{data_path}"])
    assert rc == 1 and "types.SimpleNamespace" in capsys.readouterr().err


def test_export_round_trip_and_torch_loads_it(tmp_path, capsys):
    ck = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "classroom.npz"
    assert cli.main(["export", "--checkpoint", str(ck), "--out", str(tmp_path / "c.pth")]) == 0
    out = capsys.readouterr().out
    assert "weights_only=True" in out and "in_planes=32" in out and "from src.cct import CCT" in out
    assert cli.main(["export", "--checkpoint", str(tmp_path / "c.pth"), "--model", "classroom",
                     "--out", str(tmp_path / "c.npz")]) == 0
    from minicct.io.npz_checkpoint import load_checkpoint
    p0, cfg0, _, _ = load_checkpoint(ck)
    p1, cfg1, _, _ = load_checkpoint(tmp_path / "c.npz")
    assert M.param_shapes(cfg1) == M.param_shapes(cfg0) and all(np.array_equal(p0[k], p1[k]) for k in p0)
    torch = pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("make_torch_fixture", FIX / "make_torch_fixture.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    net = mk.CCT(img_size=32, n_conv_layers=2, kernel_size=3, in_planes=32, embedding_dim=64, num_heads=2,
                 num_layers=4, mlp_ratio=2.0, num_classes=20, positional_embedding="sine").eval()
    net.load_state_dict(torch.load(tmp_path / "c.pth", weights_only=True))
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = M.predict(p0, x, cfg0)
    assert np.abs(got - want).max() < 1e-4


def test_train_init_fine_tunes_from_a_training_checkpoint(tmp_path, capsys):
    data_path = _npz_data(tmp_path, K=3)
    rc = cli.main(["train", "--init", str(FIX / "train_ckpt_cuda.pth"), "--heads", "2", "--dataset",
                   f"npz:{data_path}", "--epochs", "1", "--batch-size", "20", "--out", str(tmp_path / "ft.npz"),
                   "--no-augment"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "5 classes in" in out and "3 in npz:mine.npz: classifier.fc starts afresh" in out
    from minicct.io.npz_checkpoint import load_checkpoint
    params, cfg, meta, _ = load_checkpoint(tmp_path / "ft.npz")
    assert cfg.num_classes == 3 and cfg.embedding_dim == 16 and meta["init"].endswith("train_ckpt_cuda.pth")


def _table(out):
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("site ") and "readout" in l)
    table = []
    for line in lines[start:]:
        if not line.startswith(("site", "-", "tokenizer", "enc ")):
            break
        table.append(line)
    return table


def test_snp_arrays_equals_snp_on_minicct_activations(tmp_path, capsys):
    cfg = M.CCTConfig(**TINY)
    params = M.init_params(cfg, 3)
    ck = save_checkpoint(tmp_path / "m.npz", params, cfg, {})
    data_path = _npz_data(tmp_path, n=60)
    opts = ["--modes", "flat,mean,seqpool", "--epochs", "2", "--seed", "1", "--n-train", "50"]
    assert cli.main(["snp", "--checkpoint", str(ck), "--dataset", f"npz:{data_path}", "--site", "all",
                     "--out", str(tmp_path / "figs"), *opts]) == 0
    snp_table = _table(capsys.readouterr().out)
    data = load(f"npz:{data_path}")
    names = site_names(cfg, ("mha_heads", "mha_out", "ff_hidden", "out"))
    tr = capture(params, cfg, data.x_train[:50], data.mean, data.std, names)
    te = capture(params, cfg, data.x_test, data.mean, data.std, names)
    write_features(tmp_path / "f.npz", {n: (tr[n], te[n]) for n in names}, data.y_train[:50], data.y_test)
    assert cli.main(["snp-arrays", str(tmp_path / "f.npz"), "--head-dim", "8", *opts]) == 0
    out = capsys.readouterr().out
    assert _table(out) == snp_table and len(snp_table) == 2 + 3 * len(names)
    assert re.search(r"heads enc0\.mha_heads +flat: 2 heads of 8, specialisation index [0-9.]+ \(shuffled", out)


def test_snp_arrays_generic_sites_and_bad_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y_tr, y_te = np.arange(60) % 3, np.arange(30) % 3
    A = lambda n, *s: rng.standard_normal((n, *s)).astype(np.float32) + 0.0   # noqa: E731
    write_features(tmp_path / "f.npz", {"fc1": (A(60, 12), A(30, 12)), "conv2": (A(60, 4, 6), A(30, 4, 6))},
                   y_tr, y_te, class_names=["a", "b", "c"])
    assert cli.main(["snp-arrays", str(tmp_path / "f.npz"), "--modes", "flat", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "fc1 [T=1, D=12], conv2 [T=4, D=6]" in out and "\nfc1 " in out and "\nconv2 " in out
    np.savez(tmp_path / "bad.npz", y_train=y_tr, y_test=y_te, **{"train/x": A(59, 3), "test/x": A(30, 3)})
    assert cli.main(["snp-arrays", str(tmp_path / "bad.npz")]) == 1
    assert "train/x has shape (59, 3); expected [60, T, D]" in capsys.readouterr().err
    np.savez(tmp_path / "bad2.npz", y_train=y_tr, y_test=y_te, **{"train/x": A(60, 3)})
    assert cli.main(["snp-arrays", str(tmp_path / "bad2.npz")]) == 1
    assert "has no 'test/x' array" in capsys.readouterr().err
