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
    else the copy installed with minicct (minicct/_data/lessons/exercises; see minicct.resources)."""
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


def check(exercise_id, file=None, seed=0):
    """Grade one exercise. Returns (ok, report_text); ok is True only when every case passed.

    file: the student's Python file (default: the shipped file in lessons/exercises). seed: changes the
    random inputs (the same seed gives the same inputs).
    """
    e = get_exercise(exercise_id)
    path = Path(file) if file is not None else default_file(e.id)
    head = f"Exercise {e.id} - {e.title}   ({_short(path)})"
    try:
        module = load_student(path)
    except StudentFileError as err:
        return False, "\n".join([head, f"  cannot load your file: {err}", f"RESULT {e.id}: FAILED (file not loaded)"])
    session = Session(module, path, seed)
    e.grade(session)
    lines = [head] + session.lines
    total = session.passed + session.failed + session.not_run
    if session.ok:
        verdict = f"RESULT {e.id}: PASSED, all {total} cases"
    elif session.not_implemented and session.failed == 0:
        names = ", ".join(dict.fromkeys(session.not_implemented))
        done = f"; {session.passed} of {total} cases passed so far" if session.passed else ""
        verdict = f"RESULT {e.id}: not yet implemented ({names}){done}"
    else:
        names = ", ".join(dict.fromkeys(session.not_implemented))
        extra = f"; not yet implemented: {names}" if names else ""
        verdict = (f"RESULT {e.id}: FAILED, {session.passed} of {total} cases passed, {session.failed} failed, "
                   f"{session.not_run} not run{extra}")
    return session.ok, "\n".join(lines + [verdict])


def check_all(folder=None, seed=0):
    """Grade every exercise found in `folder` (default exercises_dir()). Returns (ok, report_text)."""
    folder = Path(folder) if folder is not None else exercises_dir()
    reports, summary, ok_all = [], [], True
    for e in EXERCISES.values():
        ok, text = check(e.id, folder / e.filename, seed)
        ok_all &= ok
        reports.append(text)
        summary.append(f"  {e.id}  {text.splitlines()[-1].split(': ', 1)[1]}")
    return ok_all, "\n\n".join(reports) + "\n\nSummary\n" + "\n".join(summary)


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


__all__ = ["EXERCISES", "Exercise", "check", "check_all", "default_file", "exercises_dir",
           "get_exercise", "list_text"]
