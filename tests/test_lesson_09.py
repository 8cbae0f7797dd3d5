"""Lesson 09: activations -> features file -> the SNP analysis; without PyTorch on minicct's own CCT."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from minicct.io.features import read_features

REPO = Path(__file__).resolve().parents[1]


def _lesson():
    spec = importlib.util.spec_from_file_location("lesson09", REPO / "lessons" / "09_any_network.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_without_torch_it_says_so_and_analyses_the_classroom_cct(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)            # import torch -> ImportError
    lesson = _lesson()
    assert lesson.main(["--backend", "torch", "--out", str(tmp_path)]) == 2
    assert "PyTorch is not installed" in capsys.readouterr().err
    rc = lesson.main(["--n-train", "120", "--n-test", "60", "--epochs", "1", "--modes", "mean",
                      "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "PyTorch is not installed: analysing minicct's own classroom CCT" in out
    fs = read_features(tmp_path / "features.npz")
    assert fs.sites[:3] == ["tokens", "enc0.mha_heads", "enc0.out"] and fs.shapes["tokens"] == (64, 64)
    assert "enc 4 out" in out and "enc3.mha_heads" in out and "SI " in out and "snp-arrays" in out
