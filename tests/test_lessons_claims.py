"""Lessons 04 (trends with intervals) and 08 (replication) end to end on a tiny checkpoint trained here."""
import re

import pytest

from _lessons import LESSONS, load_lesson, tiny_checkpoint


_lesson = load_lesson     # lessons/ importable and the material's images = data (tests/_lessons.py)


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
    assert "rows; verdicts: " in out and "full table (measured values, nulls, rules): " in out
    assert "| claim (source) |" not in out                    # the Markdown table is in claims.md, not printed
    assert "encoder 0" not in out and "enc3." not in out
    assert all((tmp_path / f).exists() for f in ("claims.json", "claims.md", "claims.png"))
    assert "| claim (source) |" in (tmp_path / "claims.md").read_text()


def test_lesson_03_prints_intervals_and_interval_checks(tiny, tmp_path, monkeypatch, capsys):
    ckpt, data = tiny
    mod = _lesson("03_snp.py", data, monkeypatch)
    rc = mod.main(["--checkpoint", str(ckpt), "--seeds", "2", "--epochs", "1", "--modes", "flat", "--out",
                   str(tmp_path)])
    out = capsys.readouterr().out
    assert rc in (0, 1)                                       # 1 only if the read-out is not above chance
    assert ("PASS" in out) == (rc == 0)
    assert "top-label fraction" in out and "(supported above 50 %)" in out and "supported below 2/K" in out
    words = ("SUPPORTED ", "CONTRADICTED ", "INCONCLUSIVE ", "NOT SHOWN ")
    assert sum(out.count(w) for w in words) == 4              # three claims and the ground-truth groups
    assert "p_Holm" in out and "read-out accuracy %" in out


def test_lesson_03_and_the_claims_table_share_one_rule():
    """The lesson's three-valued words come from the claims table's rules (no second threshold)."""
    from minicct.analysis.replicate import near_chance_verdict, single_label_verdict, small_clusters_verdict
    from minicct.analysis.stats import summarise
    K = 20
    assert small_clusters_verdict(summarise([3.0, 4.0, 3.5]), K) == "supported"          # below K/4 = 5
    assert small_clusters_verdict(summarise([6.0, 6.5, 7.0]), K) == "inconclusive"       # between K/4 and K/2
    assert small_clusters_verdict(summarise([12.0, 12.5, 13.0]), K) == "contradicted"    # above K/2 = 10
    assert single_label_verdict(summarise([0.46, 0.47, 0.48])) == "contradicted"
    assert single_label_verdict(summarise([0.40, 0.55, 0.60])) == "inconclusive"
    assert near_chance_verdict(summarise([0.07, 0.075, 0.08]), K) == "supported"         # below 2/K = 10 %
    assert near_chance_verdict(summarise([0.2, 0.21, 0.22]), K) == "contradicted"
