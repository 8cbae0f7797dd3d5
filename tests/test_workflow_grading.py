"""Issue 23, goal 3: classroom grading: a per-call time limit, JSON / CSV with cases passed per function, a
class mode over student folders with one table, a flag for files that import minicct, extra cases kept
outside the repository."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from minicct.exercises import grade, minicct_imports
from minicct.exercises.__main__ import main

SHIPPED = Path(__file__).resolve().parents[1] / "lessons" / "exercises"


def _student(folder, ex01=None, ex07=None):
    folder.mkdir(parents=True)
    for f in SHIPPED.glob("ex0*.py"):
        shutil.copyfile(f, folder / f.name)
    if ex01 is not None:
        (folder / "ex01_linear_backward.py").write_text(ex01)
    if ex07 is not None:
        (folder / "ex07_andc_mask.py").write_text(ex07)


LOOP = "def linear_backward(dout, cache):\n    while True:\n        pass\n"
CHEAT = "from minicct.analysis.andc import andc_mask, prune_readout  # noqa\n"


def test_time_limit_stops_an_infinite_loop(tmp_path):
    _student(tmp_path / "s", ex01=LOOP)
    r = grade("01", tmp_path / "s" / "ex01_linear_backward.py", time_limit=0.3)
    assert r["status"] == "failed" and "did not finish within 0.3 s" in r["report"]


def test_importing_minicct_is_flagged(tmp_path):
    _student(tmp_path / "s", ex07=CHEAT)
    path = tmp_path / "s" / "ex07_andc_mask.py"
    assert minicct_imports(path)[0][0] == 1
    r = grade("07", path)
    assert r["status"] == "passed" and r["imports_minicct"] and "FLAG" in r["report"]
    assert main(["check", "07", "--file", str(path), "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["student"][0]["imports_minicct"]


def test_class_mode_table_json_csv_and_extra_cases(tmp_path, capsys):
    cls = tmp_path / "class"
    _student(cls / "alice", ex07=CHEAT)
    _student(cls / "bob", ex01=LOOP)
    extra = tmp_path / "instructor"
    extra.mkdir()
    (extra / "ex07_cases.py").write_text(
        "def grade(session):\n"
        "    import numpy as np\n"
        "    def run():\n"
        "        m = session.call('andc_mask', np.ones((2, 3, 3)))\n"
        "        return 'extra case ran'\n"
        "    session.part('andc_mask (instructor)', [('instructor case', run)])\n")
    rc = main(["class", str(cls), "--time-limit", "0.3", "--json", str(tmp_path / "r.json"),
               "--csv", str(tmp_path / "r.csv"), "--extra", str(extra)])
    out = capsys.readouterr().out
    assert rc == 1
    alice = [ln for ln in out.splitlines() if ln.startswith("alice")][0]
    assert "!" in alice and "ex07 imports minicct" in alice
    bob = [ln for ln in out.splitlines() if ln.startswith("bob")][0]
    assert "0/" in bob
    res = json.loads((tmp_path / "r.json").read_text())
    a07 = [r for r in res["alice"] if r["id"] == "07"][0]
    assert a07["imports_minicct"] and a07["functions"]["andc_mask"]["passed"] >= 1
    r = grade("07", cls / "alice" / "ex07_andc_mask.py", extra=extra)
    assert "PASS  instructor case" in r["report"] and r["total"] == a07["total"]
    assert r["total"] == grade("07", cls / "alice" / "ex07_andc_mask.py")["total"] + 1
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert {r["student"] for r in rows} == {"alice", "bob"}
    assert any(r["function"] == "linear_backward" and r["student"] == "bob" and r["passed"] == "0" for r in rows)
