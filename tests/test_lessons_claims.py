"""Lessons 04 (trends with intervals) and 08 (replication) end to end on a tiny checkpoint trained here."""
import importlib.util
from pathlib import Path

import pytest

from minicct import model as M
from minicct.datasets.embedded import make_embedded
from minicct.train.loop import TrainConfig, train

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
TINY = M.CCTConfig(img_size=32, n_conv_layers=2, kernel_size=3, in_planes=8, embedding_dim=16, num_heads=2,
                   num_layers=2, mlp_ratio=2.0, num_classes=20, attention_dropout=0.0, stochastic_depth=0.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data = make_embedded(n_train_per_class=15, n_test_per_class=8)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.npz"
    tc = TrainConfig(epochs=1, batch_size=50, optimizer="sgd", lr=0.05, weight_decay=5e-4, warmup_epochs=0,
                     augment=False)
    train(TINY, data, tc, checkpoint=path, quiet=True)
    return path, data


def _lesson(name, data, monkeypatch):
    spec = importlib.util.spec_from_file_location(name.replace(".py", "").lstrip("0123456789_"), LESSONS / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "load", lambda *a, **k: data, raising=False)   # the small embedded set instead of the cached one
    return mod


def test_lesson_04_prints_verdicts_with_intervals(tiny, tmp_path, monkeypatch, capsys):
    ckpt, data = tiny
    mod = _lesson("04_snr_along_encoders.py", data, monkeypatch)
    assert mod.main(["--checkpoint", str(ckpt), "--seeds", "2", "--epochs", "1", "--modes", "flat",
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("along the encoders: ") == 3
    assert all(w in ("SUPPORTED", "CONTRADICTED", "INCONCLUSIVE")
               for w in (ln.split(": ")[1].split()[0] for ln in out.splitlines() if "along the encoders: " in ln))
    assert "[" in out.split("read-out accuracy %")[1].splitlines()[0]      # intervals printed
    assert (tmp_path / "along_encoders_out.png").exists()


def test_lesson_08_runs_the_replicate_command(tiny, tmp_path, monkeypatch, capsys):
    import minicct.datasets
    ckpt, data = tiny
    monkeypatch.setattr(minicct.datasets, "load", lambda *a, **k: data)
    mod = _lesson("08_replication.py", data, monkeypatch)
    assert mod.main(["--checkpoint", str(ckpt), "--seeds", "2", "--epochs", "1", "--modes", "flat", "--draws", "20",
                     "--n-perm", "50", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| claim (source) |" in out and "rows; verdicts: " in out and "Per-encoder quantities" in out
    assert (tmp_path / "claims.json").exists() and (tmp_path / "claims.png").exists()


def test_lesson_03_prints_intervals_and_interval_checks(tiny, tmp_path, monkeypatch, capsys):
    ckpt, data = tiny
    mod = _lesson("03_snp.py", data, monkeypatch)
    rc = mod.main(["--checkpoint", str(ckpt), "--seeds", "2", "--epochs", "1", "--modes", "flat", "--out",
                   str(tmp_path)])
    out = capsys.readouterr().out
    assert rc in (0, 1)                                       # 1 only if the read-out is not above chance
    assert ("PASS" in out) == (rc == 0)
    assert "top-label fraction interval above 50 %" in out and "single-node accuracy interval below" in out
    assert out.count("HOLDS ") + out.count("FAILS ") == 4     # three claims and the ground-truth groups
    assert "p_Holm" in out and "read-out accuracy %" in out
