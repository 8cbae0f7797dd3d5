"""The grading machinery: load a student's file, run seeded cases, compare with minicct, explain failures.

A grader (graders/, one file per exercise) is a function of a `Session`. It calls `session.part(function_name, cases)` for every
function the student writes; a case is (label, run) and `run()` calls the student through `session.call`,
compares with `compare` / `compare_exact` and returns an optional note for the PASS line. The first
failure of a function stops its remaining cases (they are reported as not run): one clear message beats
twenty consequences of the same bug.

Comparison (CS231n "Gradient checks"): float64 everywhere, and

    rel_error(expected, received) = max|e - r| / max(1e-8, max(|e| + |r|))   <= 1e-7

An element is "wrong" when |e - r| > 1e-7 * max(|e| + |r|), so the first wrong element is reported exactly
when rel_error fails. On a failure the received array is also compared with known wrong answers (a missing
transpose, a mean instead of a sum, ...): a match names the mistake.
"""
from __future__ import annotations

import copy
import importlib.util
import sys
import traceback
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..gradcheck import rel_error

TOL = 1e-7          # analytic (student) vs analytic (minicct); ~1e-15 for a correct float64 answer
NUM_TOL = 1e-6      # analytic vs centered differences (h = 1e-5, float64); ~1e-10 for a correct answer
VARIANT_TOL = 1e-6  # a received array this close to a known wrong answer is taken to be that mistake


class NotYetImplemented(Exception):
    """The student's function raised NotImplementedError (the shipped blank)."""


class CaseFailed(Exception):
    """A case failed. args[0] is a list of report lines (without indentation)."""

    def __init__(self, lines):
        super().__init__(list(lines) if not isinstance(lines, str) else [lines])

    @property
    def lines(self):
        return self.args[0]


class StudentFileError(Exception):
    """The student's file could not be found or imported; the message says why."""


class InternalError(Exception):
    """The checker itself is inconsistent with minicct (not the student's fault)."""


class TimeLimit(BaseException):
    """A student call ran past the per-case time limit (a BaseException: a student's `except Exception` cannot
    swallow it)."""


TIME_LIMIT = 20.0   # seconds per student call (a case makes one to a few calls); None or 0: no limit


def _limited(fn, args, seconds):
    """fn(*args), interrupted by TimeLimit after `seconds` (SIGALRM; main thread of a Unix process only,
    elsewhere no limit)."""
    import signal
    import threading
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        return fn(*args)

    def on_alarm(signum, frame):
        raise TimeLimit()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class Hint:
    """A known wrong answer and what it means.

    value: the array (or a zero-argument function returning it, evaluated only on a failure) a student
    with this mistake returns; shape: the shape such a student returns (for shape mismatches). Either may
    be None.
    """

    message: str
    value: object = None
    shape: tuple | None = None

    def get_value(self):
        return self.value() if callable(self.value) else self.value


# ------------------------------------------------------------------------------------------ loading
def load_student(path):
    """Import the Python file at `path` as a fresh module (a new name every time, never installed).

    The file's own folder is on sys.path while it is executed, so a student may import a sibling file
    (e.g. their ex01 from their ex03). Raises StudentFileError with a readable message.
    """
    path = Path(path)
    if not path.is_file():
        raise StudentFileError(f"file not found: {path}")
    name = f"_minicct_student_{path.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise StudentFileError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.modules[name] = module
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise StudentFileError(f"{path.name} has a syntax error at line {e.lineno}: {e.msg}\n"
                               f"    {(e.text or '').strip()}") from None
    except Exception as e:  # noqa: BLE001 - anything the student's module level raises
        raise StudentFileError(f"importing {path.name} raised {type(e).__name__}: {e}"
                               f"{_student_location(e, path)}") from None
    finally:
        sys.modules.pop(name, None)
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _same_file(a, b):
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, ValueError):
        return False


def _student_location(exc, path):
    """' (line 12 of ex02.py: `dx = ...`)' for the deepest traceback frame inside the student's file."""
    try:
        target = Path(path).resolve()
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == target]
    except (OSError, ValueError):
        return ""
    if not frames:
        return ""
    f = frames[-1]
    code = f" `{f.line.strip()}`" if f.line else ""
    return f" (line {f.lineno} of {target.name}, in {f.name}:{code})"


# ------------------------------------------------------------------------------------- formatting
def shape_str(a):
    return "[" + ", ".join(str(int(s)) for s in np.shape(a)) + "]"


def _fmt(v):
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.10g}"


def _describe(obj):
    if isinstance(obj, np.ndarray):
        return f"an array of shape {obj.shape} ({obj.dtype})"
    if obj is None:
        return "None"
    return f"a {type(obj).__name__}"


def _same_inputs(a, b):
    """Exact recursive equality of the argument structures (arrays, tuples, lists, dicts, scalars)."""
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_same_inputs(u, v) for u, v in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_inputs(a[k], b[k]) for k in a)
    return True


# ------------------------------------------------------------------------------------- comparison
def _first_hint(received, hints, default):
    """Message of the first Hint whose wrong answer equals `received` (values, else shape); else `default`."""
    for h in hints:
        if h.value is None:
            continue
        try:
            v = np.asarray(h.get_value(), dtype=np.float64)
        except Exception:  # noqa: BLE001 - a variant that cannot be built for this case simply does not match
            continue
        if v.shape == received.shape and np.isfinite(v).all() and rel_error(v, received) <= VARIANT_TOL:
            return h.message
    return default


def _as_array(name, received, expected_shape):
    if received is None:
        raise CaseFailed([f"`{name}`: received None, expected an array of shape {list(expected_shape)}",
                          "hint: is a `return` missing, or a value missing in the returned tuple?"])
    try:
        r = np.asarray(received)
    except Exception as e:  # noqa: BLE001
        raise CaseFailed([f"`{name}`: cannot be read as an array ({type(e).__name__}: {e})"]) from None
    if r.dtype == object or not (np.issubdtype(r.dtype, np.number) or r.dtype == bool):
        raise CaseFailed([f"`{name}`: expected a numeric array of shape {list(expected_shape)}, received "
                          f"{_describe(received)}"])
    return r


def compare(name, expected, received, *, tol=TOL, hints=(), hint=None, where=None, none_hint=None,
            nan_hint=None):
    """Check one returned value against minicct's; return rel_error, or raise CaseFailed explaining it.

    expected: array, or None when the right answer is None (e.g. db without bias).
    hints: Hints for known wrong answers (values and shapes); hint: the fall-back hint.
    where: function(index tuple) -> text naming the element (e.g. ' = the k weights of head 1').
    """
    if expected is None:
        if received is not None:
            raise CaseFailed([f"`{name}`: expected None, received {_describe(received)}",
                              f"hint: {none_hint or 'return None here'}"])
        return 0.0
    e = np.asarray(expected)
    r = _as_array(name, received, e.shape)
    if r.shape != e.shape:
        lines = [f"`{name}` has shape {shape_str(r)}, expected {shape_str(e)}"]
        msg = next((h.message for h in hints if h.shape is not None and tuple(h.shape) == r.shape), None)
        if msg is None and r.ndim == e.ndim == 2 and r.shape == e.shape[::-1]:
            msg = "it looks transposed"
        if msg is None and r.size == e.size:
            msg = "same number of elements but a different shape: a reshape where a transpose was needed?"
        raise CaseFailed(lines + [f"hint: {msg or hint or 'compare the shape of every step with the docstring'}"])
    e64, r64 = e.astype(np.float64), r.astype(np.float64)
    if not np.isfinite(r64).all():
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(r64))[0])
        raise CaseFailed([f"`{name}` contains {r64[idx]} at index {idx}{where(idx) if where else ''}, "
                          f"expected {_fmt(e[idx])}",
                          f"hint: {nan_hint or 'a division by zero or an overflow: check the denominators'}"])
    err = rel_error(e64, r64)
    if err <= tol:
        return err
    scale = max(1e-8, float(np.max(np.abs(e64) + np.abs(r64))))
    bad = np.abs(e64 - r64) > tol * scale
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    lines = [f"`{name}`: first wrong element at index {idx}{where(idx) if where else ''}: "
             f"expected {_fmt(e[idx])}, received {_fmt(r[idx])}",
             f"({int(bad.sum())} of {bad.size} elements wrong; rel_error {err:.1e}, tolerance {tol:.0e})"]
    msg = _first_hint(r64, hints, None)
    if msg is None and r.dtype in (np.float32, np.float16) and err < 1e-2:
        msg = f"you returned {r.dtype}: compute in float64 (the inputs are float64)"
    if msg is None and rel_error(-e64, r64) <= VARIANT_TOL:
        msg = "the sign is flipped"
    raise CaseFailed(lines + [f"hint: {msg or hint or 'compare each step with the formula in the docstring'}"])


def with_numeric(compare_call, name, received, numeric):
    """Run `compare_call()`; then compare `received` with the centered-difference estimate `numeric()`.

    On a failure against minicct the numerical gradient's verdict is added (it confirms the reference).
    Returns a short note 'name: rel_error to minicct a, to numerical b'.
    """
    try:
        err = compare_call()
    except CaseFailed as f:
        try:
            num = numeric()
            r = np.asarray(received, dtype=np.float64)
            if r.shape == num.shape:
                f.lines.insert(-1, f"(the numerical gradient agrees with minicct; your `{name}` is "
                                   f"{rel_error(r, num):.1e} away from it)")
        except Exception:  # noqa: BLE001 - the extra line is optional
            pass
        raise
    num_err = rel_error(np.asarray(received, dtype=np.float64), numeric())
    if num_err > NUM_TOL:
        raise InternalError(f"`{name}` matches minicct but not the numerical gradient (rel_error {num_err:.1e}): "
                            f"minicct's reference may be broken; please report this")
    return f"{name} {err:.0e}/{num_err:.0e}"


def compare_exact(name, expected, received, *, hints=(), hint=None, normalise=None):
    """Equality of non-array results (lists of clusters, integers). `hints`: list of (wrong_value, message).

    normalise: function received -> canonical form (raise CaseFailed on a bad type).
    """
    got = normalise(received) if normalise else received
    if got == expected:
        return
    lines = [f"`{name}`: expected {expected!r}, received {received!r}"]
    msg = next((m for v, m in hints if v == got and v != expected), None)
    raise CaseFailed(lines + [f"hint: {msg or hint or 'follow the steps in the docstring on this input'}"])


# ------------------------------------------------------------------------------------------ session
class Session:
    """One run of one grader on one student module: calls, bookkeeping and the report lines."""

    def __init__(self, module, path, seed=0):
        self.module, self.path, self.seed = module, Path(path), seed
        self.lines = []
        self.passed = self.failed = self.not_run = 0
        self.not_implemented = []
        self.warnings = []          # warnings raised by the student's code in the current case
        self.time_limit = TIME_LIMIT
        self.parts = {}             # function -> {"passed": n, "total": n}

    def rng(self, *key):
        """A generator for one case: np.random.default_rng([seed, *key]) (same inputs every run)."""
        return np.random.default_rng([self.seed, *key])

    def function(self, name):
        fn = getattr(self.module, name, None)
        if not callable(fn):
            raise CaseFailed([f"your file defines no function `{name}`",
                              "hint: keep the function names and signatures of the shipped exercise file"])
        return fn

    def call(self, name, *args, error_hint=None):
        """Call the student's `name` on deep copies of args; report exceptions and in-place changes."""
        fn = self.function(name)
        given = copy.deepcopy(args)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = _limited(fn, given, self.time_limit)
            own = [w for w in caught if _same_file(w.filename, self.path)] or caught[:1]
            self.warnings.extend(f"{w.category.__name__}: {w.message} (line {w.lineno} of {Path(w.filename).name})"
                                 for w in own)
        except NotImplementedError:
            raise NotYetImplemented(name) from None
        except TimeLimit:
            raise CaseFailed([f"`{name}` did not finish within {self.time_limit:g} s (the time limit of one call)",
                              "hint: look for a loop that never ends, or a loop over every element where one "
                              "array operation would do"]) from None
        except Exception as e:  # noqa: BLE001 - any student error becomes a readable failure
            last = traceback.format_exception_only(type(e), e)[-1].strip()
            hint = error_hint or "print the shape of every intermediate array and compare with the docstring"
            raise CaseFailed([f"`{name}` raised {last}{_student_location(e, self.path)}", f"hint: {hint}"]) from None
        for i, (a, b) in enumerate(zip(args, given)):
            if not _same_inputs(a, b):
                raise CaseFailed([f"`{name}` modified its argument {i + 1} in place",
                                  "hint: never write into the inputs (no `x -= ...`, `x[...] = ...` or "
                                  "`out=` on an input); work on new arrays"])
        return out

    @staticmethod
    def unpack(name, out, n, what):
        """Check that the student returned an n-tuple; return it as a tuple."""
        if not isinstance(out, (tuple, list)) or len(out) != n:
            raise CaseFailed([f"`{name}` must return a tuple {what}, received {_describe(out)}"
                              + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")])
        return tuple(out)

    def part(self, name, cases):
        """Run the cases of one student function, stopping at its first failure."""
        self.lines.append(f"  {name}")
        tally = self.parts.setdefault(name.split()[0], {"passed": 0, "total": 0})
        tally["total"] += len(cases)
        for i, (label, run) in enumerate(cases):
            self.warnings = []
            try:
                note = run()
            except NotYetImplemented as e:
                needed = "" if e.args[0] == name.split()[0] else f" (`{name.split()[0]}` is checked through it)"
                self.lines.append(f"    not yet implemented: `{e.args[0]}` still raises NotImplementedError{needed}")
                self.not_implemented.append(e.args[0])
                self.not_run += len(cases) - i
                return False
            except (CaseFailed, InternalError, Exception) as f:  # noqa: BLE001 - report, never crash
                if not isinstance(f, CaseFailed):
                    who = "" if isinstance(f, InternalError) else f"{type(f).__name__}: "
                    f = CaseFailed([f"CHECKER ERROR (not your fault, please report it): {who}{f}"])
                self.failed += 1
                self.lines.append(f"    FAIL  {label}")
                self.lines.extend(f"          {line}" for line in f.lines)
                self.lines.extend(f"          (your code warned: {w})" for w in dict.fromkeys(self.warnings))
                rest = len(cases) - i - 1
                if rest:
                    self.lines.append(f"    ({rest} more case{'s' if rest > 1 else ''} not run)")
                self.not_run += rest
                return False
            self.passed += 1
            tally["passed"] += 1
            self.lines.append(f"    PASS  {label}" + (f"   [{note}]" if note else ""))
        return True

    @property
    def ok(self):
        return self.failed == 0 and self.not_run == 0 and not self.not_implemented and self.passed > 0
