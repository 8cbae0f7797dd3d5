"""Lessons 05 (ANDC pruning) and 06 (heads) end to end on a tiny checkpoint trained here, on a small embedded set."""
from pathlib import Path

import numpy as np
import pytest

from _lessons import LESSONS, TINY, load_lesson, tiny_checkpoint


_lesson = load_lesson     # lessons/ importable and the material's images = data (tests/_lessons.py)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), 20, 10)


def _is_png(path):
    return Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("fields_on", ["test", "train"])
def test_lesson_05_runs(tiny, tmp_path, monkeypatch, capsys, fields_on):
    ckpt, data = tiny
    mod = _lesson("05_andc_pruning.py", data, monkeypatch)
    rc = mod.main(["--checkpoint", str(ckpt), "--epochs", "1", "--retrain-epochs", "1", "--n-train", "0", "--seeds", "2",
                   "--thresholds", "0.3,0.9", "--fields-on", fields_on, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    for text in ("1. ANDC on the read-out", "2. Threshold sweep", "3. ANDC inside the encoders", "4. Verdicts over 2",
                 "ANDC is selective", "magnitude", "=> ",
                 "ANDC ahead of the same-degree random control", "FF linear2 pruning"):
        assert text in out
    sweep = out.split("2. Threshold sweep")[1].split("3. ANDC")[0]
    rows = [ln.split() for ln in sweep.splitlines() if ln[:4] in ("0.30", "0.90")]
    assert len(rows) == 2 and float(rows[0][2]) <= float(rows[1][2])   # pruned % grows with the threshold
    assert _is_png(tmp_path / "accuracy_vs_pruned.png")


def test_lesson_06_runs(tiny, tmp_path, monkeypatch, capsys):
    ckpt, data = tiny
    mod = _lesson("06_heads.py", data, monkeypatch)
    rc = mod.main(["--checkpoint", str(ckpt), "--epochs", "1", "--n-train", "0", "--shuffles", "20", "--seeds", "2",
                   "--n-perm", "100", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("vs random partitions") == TINY.num_layers
    assert "detects a gap of" in out and "significant after Holm" in out
    assert out.count("designated: ") == TINY.num_layers * TINY.num_heads
    assert "head specialisation ('modus vivendi') is" in out
    assert _is_png(tmp_path / "head_label_sets.png")
    with pytest.raises(SystemExit):
        mod.main(["--checkpoint", str(ckpt), "--shuffles", "5"])
    assert np.isfinite(float(out.split("whole model: test accuracy ")[1].split("%")[0]))
