"""snp-arrays and snp with --seeds, --null-draws, --out and --head-sites (tiny arrays / a tiny untrained model)."""
import json

import numpy as np
import pytest

from minicct import __main__ as cli
from minicct.io.features import write_features


def _features(tmp_path, informative=True):
    rng = np.random.default_rng(0)
    K, n_tr, n_te = 3, 60, 30
    y_tr, y_te = np.arange(n_tr) % K, np.arange(n_te) % K
    proto = rng.standard_normal((K, 2, 8)).astype(np.float32)
    A = lambda y: (rng.standard_normal((len(y), 2, 8)).astype(np.float32) + 2 * proto[y] * informative)  # noqa: E731
    path = tmp_path / "f.npz"
    write_features(path, {"tokens": (A(y_tr), A(y_te)), "enc0.mha_heads": (A(y_tr), A(y_te)),
                          "enc0.out": (A(y_tr), A(y_te))}, y_tr, y_te)
    return path


def test_snp_arrays_seeds_null_out_and_head_sites(tmp_path, capsys):
    path = _features(tmp_path)
    out = tmp_path / "res"
    assert cli.main(["snp-arrays", str(path), "--modes", "flat", "--epochs", "8", "--seeds", "2", "--null-draws", "2",
                     "--head-dim", "4", "--draws", "20", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "label-permutation null (2 draw(s) per seed, 2 seed(s))" in text and "null variance at" in text
    assert "heads enc0.mha_heads" in text and "heads enc0.out" not in text      # only the head sites
    assert "head verdicts (flat read-out, 2 seed(s)" in text
    js = json.loads((out / "snp_arrays_results.json").read_text())
    acc = js["sweep"]["quantities"]["flat"]["accuracy"]
    assert [r["name"] for r in acc] == ["tokens", "enc0.mha_heads", "enc0.out"]
    assert all(r["excess"]["mean"] > 0.3 for r in acc)        # planted labels: accuracy far above its null
    assert js["heads"]["sites"] == ["enc0.mha_heads"] and (out / "along_encoders.png").exists()
    assert js["table"]["accuracy"][0] == acc[0]["value"]["values"][0]      # the table is the first seed's
    assert cli.main(["snp-arrays", str(path), "--head-sites", "enc0.out", "--modes", "flat", "--epochs", "1"]) == 1
    assert "--head-sites needs --head-dim" in capsys.readouterr().err
    assert cli.main(["snp-arrays", str(path), "--head-sites", "nope", "--head-dim", "4", "--epochs", "1"]) == 1
    assert "nope not in the file" in capsys.readouterr().err


def test_snp_arrays_table_is_the_same_with_and_without_the_null(tmp_path, capsys):
    path = _features(tmp_path)
    tables = []
    for extra in (["--null-draws", "0"], ["--null-draws", "1", "--seeds", "2"]):
        assert cli.main(["snp-arrays", str(path), "--modes", "flat,mean", "--epochs", "2", *extra]) == 0
        lines = capsys.readouterr().out.splitlines()
        start = next(i for i, l in enumerate(lines) if l.startswith("site ") and "readout" in l)
        tables.append(lines[start:start + 2 + 3 * 2])
    assert tables[0] == tables[1]
