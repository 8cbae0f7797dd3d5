"""Lessons 04 (trends with intervals) and 08 (replication) end to end on a tiny checkpoint trained here."""
import pytest

from _lessons import load_lesson as _lesson, tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), 15, 8)


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
