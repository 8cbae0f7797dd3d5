"""Classroom exercises: students write the key functions, this checker grades them against minicct.

The exercise files live in lessons/exercises/ (ex01_linear_backward.py ... ex07_andc_mask.py): a
statement and a function body that raises NotImplementedError. The checker imports the student's file
from its path, calls its functions on seeded random inputs of several shapes (with the edge cases: a
single token, a head of dimension 1, an empty node, ties, ...) and compares every result with minicct's
own implementation and, for the backward passes, with centered-difference gradients.

    python -m minicct.exercises list
    python -m minicct.exercises check 02 [--file my_ex02.py] [--seed 0]
    python -m minicct.exercises check all [--dir folder_with_exNN_files]

From Python: `check("02", file=None) -> (ok, report_text)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import graders
from .checker import Session, StudentFileError, load_student


@dataclass(frozen=True)
class Exercise:
    """One exercise: its number, file name, title, the functions the student writes, and its grader."""

    id: str
    stem: str
    title: str
    functions: tuple
    minutes: str
    teaches: str
    grade: object

    @property
    def filename(self):
        return f"{self.stem}.py"


EXERCISES = {e.id: e for e in [
    Exercise("01", "ex01_linear_backward", "Linear layer backward", ("linear_backward",), "30",
             "gradients have the shape of their variable; shared weights sum over every leading axis",
             graders.grade_linear),
    Exercise("02", "ex02_layernorm_backward", "LayerNorm backward", ("layernorm_backward",), "45",
             "a gradient through a normalisation: three paths (direct, mean, variance), means over features",
             graders.grade_layernorm),
    Exercise("03", "ex03_softmax_attention_backward", "Softmax and multi-head attention backward",
             ("softmax_backward", "attention_backward"), "60-90",
             "a Jacobian-vector product without the Jacobian; batched matmul backward; head reshapes",
             graders.grade_softmax_attention),
    Exercise("04", "ex04_conv2d_im2col", "conv2d by im2col, forward and backward",
             ("conv2d_forward", "conv2d_backward"), "90",
             "convolution as one matrix product; the loop over kernel offsets; col2im adds overlaps",
             graders.grade_conv),
    Exercise("05", "ex05_snp_node_fields", "SNP read-out logits and node fields V",
             ("readout_logits", "node_fields"), "45",
             "what one node says about the labels: per-node fields, per-class means, einsum",
             graders.grade_snp),
    Exercise("06", "ex06_clusters_noise", "Greedy label clusters and node noise",
             ("greedy_clusters", "node_noise"), "45",
             "reproducing the authors' greedy algorithm exactly, order and ties included; signal and noise",
             graders.grade_clusters),
    Exercise("07", "ex07_andc_mask", "The ANDC pruning mask", ("andc_mask", "prune_readout"), "20",
             "axes of a stacked batch of matrices (the right diagonal); broadcasting a mask",
             graders.grade_andc),
]}


def get_exercise(exercise_id):
    """'2', '02', 'ex02', 'ex02_layernorm_backward(.py)' or 2 -> the Exercise. ValueError otherwise."""
    key = str(exercise_id).strip().lower()
    key = key[:-3] if key.endswith(".py") else key
    for e in EXERCISES.values():
        if key == e.stem:
            return e
    key = key[2:] if key.startswith("ex") else key
    key = key.split("_")[0]
    if key.isdigit() and f"{int(key):02d}" in EXERCISES:
        return EXERCISES[f"{int(key):02d}"]
    raise ValueError(f"unknown exercise {exercise_id!r}: choose one of {', '.join(EXERCISES)} "
                     f"(python -m minicct.exercises list)")


def exercises_dir():
    """The folder of the exercise files: lessons/exercises of this checkout, else of the current directory,
    else the copy installed with minicct (<prefix>/share/minicct/lessons/exercises; see minicct.resources)."""
    from ..resources import checkout_root, package_data_root
    for base in (checkout_root(), Path.cwd(), package_data_root()):
        folder = base / "lessons" / "exercises" if base is not None else None
        if folder is not None and folder.is_dir() and any(folder.glob("ex0*.py")):
            return folder
    raise FileNotFoundError("cannot find lessons/exercises (not in a minicct checkout, the current directory or "
                            "the installed package): pass --file / --dir")


def default_file(exercise_id, folder=None):
    """Path of the exercise's file in `folder` (default: exercises_dir())."""
    e = get_exercise(exercise_id)
    return Path(folder if folder is not None else exercises_dir()) / e.filename


def minicct_imports(path):
    """The lines of a student file that import minicct (other than minicct.exercises): [(line, text)]. A file
    that imports minicct's own implementation would pass by calling it, so the checker flags it."""
    import ast
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return []
    found = []
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        for n in names:
            if (n == "minicct" or n.startswith("minicct.")) and not n.startswith("minicct.exercises"):
                found.append((node.lineno, ast.get_source_segment(Path(path).read_text(), node) or n))
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                and str(node.args[0].value).startswith("minicct"):
            found.append((node.lineno, f"import of {node.args[0].value!r}"))
    return found


def grade(exercise_id, file=None, seed=0, time_limit=None, extra=None) -> dict:
    """Grade one exercise; a dict: id, title, file, status ('passed' | 'failed' | 'not implemented' |
    'not loaded'), passed, total, functions {name: {passed, total}}, imports_minicct [(line, text)], report.

    time_limit: seconds per student call (default checker.TIME_LIMIT). extra: a folder of the instructor's own
    cases, kept outside the repository: exNN_cases.py defining grade(session) (the grader API of
    minicct.exercises.checker), run after the built-in cases (also $MINICCT_EXTRA_CASES)."""
    import os

    from . import checker
    e = get_exercise(exercise_id)
    path = Path(file) if file is not None else default_file(e.id)
    head = f"Exercise {e.id} - {e.title}   ({_short(path)})"
    res = {"id": e.id, "title": e.title, "file": str(path), "passed": 0, "total": 0, "functions": {},
           "imports_minicct": []}
    try:
        module = load_student(path)
    except StudentFileError as err:
        res.update(status="not loaded", report="\n".join(
            [head, f"  cannot load your file: {err}", f"RESULT {e.id}: FAILED (file not loaded)"]))
        return res
    session = Session(module, path, seed)
    if time_limit is not None:
        session.time_limit = time_limit
    e.grade(session)
    extra = extra or os.environ.get("MINICCT_EXTRA_CASES")
    if extra and (Path(extra) / f"ex{e.id}_cases.py").is_file():
        try:
            load_student(Path(extra) / f"ex{e.id}_cases.py").grade(session)
        except (StudentFileError, AttributeError) as err:
            session.lines.append(f"  CHECKER ERROR in the extra cases {extra}/ex{e.id}_cases.py: {err}")
    lines = [head] + session.lines
    imports = minicct_imports(path)
    if imports:
        lines.append("  FLAG: your file imports minicct itself (" + "; ".join(f"line {n}: {t}" for n, t in imports)
                     + "): the checker compares with minicct, so calling it proves nothing; write the code")
    total = session.passed + session.failed + session.not_run
    if session.ok:
        verdict = f"RESULT {e.id}: PASSED, all {total} cases"
        status = "passed"
    elif session.not_implemented and session.failed == 0:
        names = ", ".join(dict.fromkeys(session.not_implemented))
        done = f"; {session.passed} of {total} cases passed so far" if session.passed else ""
        verdict = f"RESULT {e.id}: not yet implemented ({names}){done}"
        status = "not implemented"
    else:
        names = ", ".join(dict.fromkeys(session.not_implemented))
        extra_txt = f"; not yet implemented: {names}" if names else ""
        verdict = (f"RESULT {e.id}: FAILED, {session.passed} of {total} cases passed, {session.failed} failed, "
                   f"{session.not_run} not run{extra_txt}")
        status = "failed"
    if imports:
        verdict += " (FLAGGED: imports minicct)"
    res.update(status=status, passed=session.passed, total=total, functions=session.parts,
               imports_minicct=imports, report="\n".join(lines + [verdict]))
    return res


def check(exercise_id, file=None, seed=0, time_limit=None, extra=None):
    """Grade one exercise. Returns (ok, report_text); ok is True only when every case passed (a file that
    imports minicct is flagged in the report; the command line then exits with 1).

    file: the student's Python file (default: the shipped file in lessons/exercises). seed: changes the
    random inputs (the same seed gives the same inputs). time_limit, extra: see `grade`.
    """
    r = grade(exercise_id, file, seed, time_limit, extra)
    return r["status"] == "passed", r["report"]


def grade_folder(folder=None, seed=0, time_limit=None, extra=None) -> list:
    """`grade` of every exercise of one folder (a student's), as a list of dicts."""
    folder = Path(folder) if folder is not None else exercises_dir()
    return [grade(e.id, folder / e.filename, seed, time_limit, extra) for e in EXERCISES.values()]


def check_all(folder=None, seed=0, time_limit=None, extra=None):
    """Grade every exercise found in `folder` (default exercises_dir()). Returns (ok, report_text)."""
    results = grade_folder(folder, seed, time_limit, extra)
    ok_all = all(r["status"] == "passed" for r in results)
    summary = [f"  {r['id']}  {r['report'].splitlines()[-1].split(': ', 1)[1]}" for r in results]
    return ok_all, "\n\n".join(r["report"] for r in results) + "\n\nSummary\n" + "\n".join(summary)


def grade_class(folder, seed=0, time_limit=None, extra=None) -> dict:
    """Every student sub-folder of `folder` (one folder of exNN_*.py files per student): {student: [grade]}."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no class folder at {folder} (expected {folder}/<student>/exNN_*.py)")
    students = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))
    if not students:
        raise ValueError(f"{folder} has no student sub-folders (expected {folder}/<student>/exNN_*.py)")
    return {d.name: grade_folder(d, seed, time_limit, extra) for d in students}


def class_table(results: dict) -> str:
    """One row per student: cases passed per exercise (P = all passed, - = not implemented, x = not loaded,
    ! = imports minicct) and the total."""
    ids = list(EXERCISES)
    w = max(8, *(len(s) for s in results))
    head = f"{'student':<{w}}" + "".join(f"{'ex' + i:>9}" for i in ids) + f"{'cases':>10}  flags"
    rows = [head, "-" * len(head)]
    for student, res in results.items():
        cells, passed, total, flags = [], 0, 0, []
        for r in res:
            passed, total = passed + r["passed"], total + r["total"]
            cell = ("x" if r["status"] == "not loaded" else "-" if r["status"] == "not implemented" and
                    not r["passed"] else f"{r['passed']}/{r['total']}")
            if r["imports_minicct"]:
                cell += "!"
                flags.append(f"ex{r['id']} imports minicct")
            cells.append(f"{cell:>9}")
        rows.append(f"{student:<{w}}" + "".join(cells) + f"{f'{passed}/{total}':>10}  {', '.join(flags)}")
    rows.append("x: file not loaded, -: not implemented, !: imports minicct (flagged)")
    return "\n".join(rows)


def write_results(results: dict, json_path=None, csv_path=None):
    """results {student: [grade dicts]} to JSON (everything but the report text) and/or CSV (one row per
    student, exercise and function: passed, total, status, flagged)."""
    import csv
    import json
    written = []
    if json_path:
        slim = {s: [{k: v for k, v in r.items() if k != "report"} for r in res] for s, res in results.items()}
        Path(json_path).write_text(json.dumps(slim, indent=1) + "\n")
        written.append(Path(json_path))
    if csv_path:
        with open(csv_path, "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["student", "exercise", "function", "passed", "total", "status", "imports_minicct"])
            for s, res in results.items():
                for r in res:
                    funcs = r["functions"] or {"(file)": {"passed": 0, "total": 0}}
                    for fn, t in funcs.items():
                        wr.writerow([s, r["id"], fn, t["passed"], t["total"], r["status"],
                                     "yes" if r["imports_minicct"] else ""])
        written.append(Path(csv_path))
    return written


def list_text():
    """The exercise list (id, title, time, functions) as printed by `python -m minicct.exercises list`."""
    try:
        folder = exercises_dir()
    except FileNotFoundError:
        folder = None
    rows = [f"{'id':<4}{'minutes':<9}{'title':<44}functions to write"]
    for e in EXERCISES.values():
        rows.append(f"{e.id:<4}{e.minutes:<9}{e.title:<44}{', '.join(e.functions)}")
    rows.append("")
    rows.append(f"files: {folder / 'exNN_*.py'}" if folder else
                "files: not found from here (no lessons/exercises); grade your own with --file / --dir")
    rows.append(f"copy them to work on: cp {folder / 'ex0*.py'} my_folder/" if folder else "")
    rows.append("check: python -m minicct.exercises check NN [--file path/to/your_file.py]")
    return "\n".join(rows)


def _short(path):
    """path relative to the current directory when it lies below it, else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


__all__ = ["EXERCISES", "Exercise", "check", "check_all", "class_table", "default_file", "exercises_dir",
           "get_exercise", "grade", "grade_class", "grade_folder", "list_text", "minicct_imports", "write_results"]
