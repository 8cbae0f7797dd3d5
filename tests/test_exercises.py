"""The exercise checker: passes minicct's own functions, fails typical wrong answers with the right hint,
reports the shipped blanks as "not yet implemented", and its CLI exit codes."""
import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from minicct.exercises import EXERCISES, check, check_all, default_file, get_exercise
from minicct.exercises.graders.g03_attention import _ATTENTION_HINTS, _attention_variant
from minicct.layers.attention import attention_backward, attention_forward

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "lessons" / "exercises"

# ------------------------------------------------------------------------- minicct's own functions
DELEGATE = {
    "01": "from minicct.layers.linear import linear_backward\n",
    "02": """
        import numpy as np
        from minicct.layers.norm import layernorm_backward as _bw, layernorm_forward as _fw

        def layernorm_backward(dout, x, gamma, eps=1e-5):
            return _bw(dout, _fw(x, gamma, np.zeros_like(gamma), eps)[1])
        """,
    "03": """
        import numpy as np
        from minicct.layers.activations import softmax_backward
        from minicct.layers.attention import attention_backward as _bw, attention_forward as _fw

        def attention_forward(x, w_qkv, num_heads):
            D = x.shape[-1]
            return _fw(x, {"qkv.weight": w_qkv, "proj.weight": np.eye(D), "proj.bias": np.zeros(D)}, num_heads)

        def attention_backward(dout, cache):
            dx, grads = _bw(dout, cache)
            return dx, grads["qkv.weight"]
        """,
    "04": "from minicct.layers.conv import conv2d_backward, conv2d_forward\n",
    "05": "from minicct.analysis.readout import readout_logits\nfrom minicct.analysis.snp import node_fields\n",
    "06": "from minicct.analysis.clusters import greedy_clusters, node_noise\n",
    "07": "from minicct.analysis.andc import andc_mask, prune_readout\n",
}

# ------------------------------------------------------- typical wrong answers, per exercise (>= 2 each)
WRONG = [
    ("01", "dw_transposed", """
        def linear_backward(dout, cache):
            x, w, has_bias = cache
            d2, x2 = dout.reshape(-1, w.shape[0]), x.reshape(-1, w.shape[1])
            return dout @ w, x2.T @ d2, (d2.sum(axis=0) if has_bias else None)
        """, "missing transpose"),
    ("01", "mean_not_sum", """
        def linear_backward(dout, cache):
            x, w, has_bias = cache
            d2, x2 = dout.reshape(-1, w.shape[0]), x.reshape(-1, w.shape[1])
            return dout @ w, d2.T @ x2 / len(d2), (d2.mean(axis=0) if has_bias else None)
        """, "you averaged over the 4 rows"),
    ("01", "db_first_axis_only", """
        def linear_backward(dout, cache):
            x, w, has_bias = cache
            d2, x2 = dout.reshape(-1, w.shape[0]), x.reshape(-1, w.shape[1])
            return dout @ w, d2.T @ x2, (dout.sum(axis=0) if has_bias else None)
        """, "summed over ALL leading axes"),
    ("02", "mean_var_as_constants", """
        import numpy as np

        def layernorm_backward(dout, x, gamma, eps=1e-5):
            D = x.shape[-1]
            rstd = 1 / np.sqrt(x.var(axis=-1, keepdims=True) + eps)
            xhat = (x - x.mean(axis=-1, keepdims=True)) * rstd
            return dout * gamma * rstd, (dout * xhat).reshape(-1, D).sum(0), dout.reshape(-1, D).sum(0)
        """, "treated mean and variance as constants"),
    ("02", "dgamma_from_x", """
        import numpy as np

        def layernorm_backward(dout, x, gamma, eps=1e-5):
            D = x.shape[-1]
            rstd = 1 / np.sqrt(x.var(axis=-1, keepdims=True) + eps)
            xhat = (x - x.mean(axis=-1, keepdims=True)) * rstd
            dn = dout * gamma
            dx = rstd * (dn - dn.mean(-1, keepdims=True) - xhat * (dn * xhat).mean(-1, keepdims=True))
            return dx, (dout * x).reshape(-1, D).sum(0), dout.reshape(-1, D).sum(0)
        """, "multiplies the NORMALISED input"),
    ("02", "unbiased_variance", """
        import numpy as np

        def layernorm_backward(dout, x, gamma, eps=1e-5):
            D = x.shape[-1]
            rstd = 1 / np.sqrt(x.var(axis=-1, ddof=1, keepdims=True) + eps)
            xhat = (x - x.mean(axis=-1, keepdims=True)) * rstd
            dn = dout * gamma
            dx = rstd * (dn - dn.mean(-1, keepdims=True) - xhat * (dn * xhat).mean(-1, keepdims=True))
            return dx, (dout * xhat).reshape(-1, D).sum(0), dout.reshape(-1, D).sum(0)
        """, "not np.var(ddof=1)"),
    ("03", "softmax_diagonal_only", """
        def softmax_backward(y, dy, axis=-1):
            return y * (1 - y) * dy
        """, "keeps only the diagonal of the Jacobian"),
    ("03", "softmax_fixed_axis", """
        def softmax_backward(y, dy, axis=-1):
            return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
        """, "you summed over axis 2; the softmax normalises along axis 1"),
    ("03", "dk_without_transpose", """
        import numpy as np

        def softmax_backward(y, dy, axis=-1):
            return y * (dy - (dy * y).sum(axis=axis, keepdims=True))

        def attention_forward(x, w_qkv, num_heads):
            N, T, D = x.shape
            h, d = num_heads, D // num_heads
            q, k, v = (x @ w_qkv.T).reshape(N, T, 3, h, d).transpose(2, 0, 3, 1, 4)
            S = q @ k.transpose(0, 1, 3, 2) * d ** -0.5
            P = np.exp(S - S.max(-1, keepdims=True))
            P /= P.sum(-1, keepdims=True)
            return (P @ v).transpose(0, 2, 1, 3).reshape(N, T, D), (x, w_qkv, q, k, v, P, h)

        def attention_backward(dout, cache):
            x, w, q, k, v, P, h = cache
            N, T, D = x.shape
            d = D // h
            dO = dout.reshape(N, T, h, d).transpose(0, 2, 1, 3)
            dv = P.swapaxes(-1, -2) @ dO
            dS = softmax_backward(P, dO @ v.swapaxes(-1, -2)) * d ** -0.5
            dq, dk = dS @ k, dS @ q
            dqkv = np.stack([dq, dk, dv], axis=2).transpose(0, 3, 2, 1, 4).reshape(N, T, 3 * D)
            return dqkv @ w, dqkv.reshape(-1, 3 * D).T @ x.reshape(-1, D)
        """, "dk = dS^T q"),
    ("04", "flipped_kernel", """
        from minicct.layers.conv import conv2d_forward as _fw, conv2d_backward

        def conv2d_forward(x, w, b=None, stride=1, pad=0):
            return _fw(x, w[:, :, ::-1, ::-1].copy(), b, stride, pad)
        """, "do not flip the kernel"),
    ("04", "col2im_assigns", """
        import numpy as np

        def conv2d_forward(x, w, b=None, stride=1, pad=0):
            N, C, H, W = x.shape
            Co, _, k, _ = w.shape
            Ho, Wo = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
            xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
            cols = np.empty((N, C, k, k, Ho, Wo))
            for i in range(k):
                for j in range(k):
                    cols[:, :, i, j] = xp[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride]
            cols = cols.reshape(N, C * k * k, Ho * Wo)
            out = (w.reshape(Co, -1) @ cols).reshape(N, Co, Ho, Wo)
            if b is not None:
                out = out + b[:, None, None]
            return out, (cols, w, b is not None, x.shape, stride, pad)

        def conv2d_backward(dout, cache):
            cols, w, has_b, (N, C, H, W), s, p = cache
            Co, _, k, _ = w.shape
            Ho, Wo = dout.shape[2:]
            dm = dout.reshape(N, Co, Ho * Wo)
            dw = np.einsum("nom,nfm->of", dm, cols).reshape(w.shape)
            dcols = (w.reshape(Co, -1).T @ dm).reshape(N, C, k, k, Ho, Wo)
            dxp = np.zeros((N, C, H + 2 * p, W + 2 * p))
            for i in range(k):
                for j in range(k):
                    dxp[:, :, i:i + s * Ho:s, j:j + s * Wo:s] = dcols[:, :, i, j]
            return dxp[:, :, p:p + H, p:p + W], dw, (dout.sum(axis=(0, 2, 3)) if has_b else None)
        """, "col2im must ADD (+=)"),
    ("05", "sum_not_mean", """
        import numpy as np

        def readout_logits(A, W):
            return A.reshape(len(A), -1) @ W.reshape(len(W), -1).T

        def node_fields(A, y, W, num_classes):
            h = np.einsum("ktn,jtn->nkj", A, W)
            onehot = np.eye(num_classes)[y]                     # [N, K]
            return np.einsum("nkj,ki->nij", h, onehot)
        """, "a per-label MEAN, not a sum"),
    ("05", "rows_and_columns_swapped", """
        import numpy as np

        def readout_logits(A, W):
            return A.reshape(len(A), -1) @ W.reshape(len(W), -1).T

        def node_fields(A, y, W, num_classes):
            h = np.einsum("ktn,jtn->nkj", A, W)
            onehot = np.eye(num_classes)[y]
            counts = np.maximum(onehot.sum(0), 1)
            return np.einsum("nkj,ki->nji", h, onehot) / counts[None, None, :]
        """, "you have it transposed"),
    ("06", "compares_with_first_label_only", """
        def greedy_clusters(B):
            cand = [j for j in range(len(B)) if B[j, j]]
            remaining, out = list(cand), []
            for lb in cand:
                if lb not in remaining:
                    continue
                remaining.remove(lb)
                cluster = [lb]
                for lb2 in list(remaining):
                    if B[lb, lb2] and B[lb2, lb]:
                        cluster.append(lb2)
                        remaining.remove(lb2)
                out.append(cluster)
            return out

        def node_noise(B):
            return -1
        """, "with EVERY label already in the cluster"),
    ("06", "no_minus_one", """
        from minicct.analysis.clusters import greedy_clusters

        def node_noise(B):
            return int(B.sum()) - sum(len(c) ** 2 for c in greedy_clusters(B))
        """, "a node without clusters has noise -1"),
    ("07", "np_diagonal_default_axes", """
        import numpy as np

        def andc_mask(B):
            return np.diagonal(B)

        def prune_readout(W, M):
            return W * M[:, None, :]
        """, "np.diagonal(B, axis1=1, axis2=2)"),
    ("07", "missing_transpose", """
        import numpy as np

        def andc_mask(B):
            return np.diagonal(B, axis1=1, axis2=2)
        """, "transpose the [D, K] diagonal"),
    ("07", "mask_without_token_axis", """
        import numpy as np

        def andc_mask(B):
            return np.diagonal(B, axis1=1, axis2=2).T

        def prune_readout(W, M):
            return W * M
        """, "M[:, None, :]"),
]


def _write(tmp_path, name, text):
    p = tmp_path / f"{name}.py"
    p.write_text(textwrap.dedent(text))
    return p


def _failure_lines(text):
    return "\n".join(line for line in text.splitlines() if "FAIL" in line or line.startswith("          "))


@pytest.mark.parametrize("ex", sorted(EXERCISES))
def test_minicct_itself_passes(tmp_path, ex):
    ok, text = check(ex, _write(tmp_path, f"good{ex}", DELEGATE[ex]))
    assert ok, text
    assert f"RESULT {ex}: PASSED" in text and "FAIL" not in text


@pytest.mark.parametrize("ex,name,src,hint", WRONG, ids=[f"{w[0]}-{w[1]}" for w in WRONG])
def test_typical_wrong_answer_fails_with_hint(tmp_path, ex, name, src, hint):
    ok, text = check(ex, _write(tmp_path, name, src))
    assert not ok
    assert "FAIL" in text and f"RESULT {ex}: FAILED" in text
    assert hint in _failure_lines(text), text


def test_every_exercise_has_two_wrong_answers():
    counts = {ex: sum(w[0] == ex for w in WRONG) for ex in EXERCISES}
    assert all(c >= 2 for c in counts.values()), counts


@pytest.mark.parametrize("ex", sorted(EXERCISES))
def test_shipped_blank_is_not_yet_implemented(ex):
    path = default_file(ex)
    assert path == SHIPPED / EXERCISES[ex].filename and path.is_file()
    ok, text = check(ex)
    assert not ok
    assert "not yet implemented" in text and "Traceback" not in text and "FAIL" not in text
    lines = text.splitlines()
    for fn in EXERCISES[ex].functions:                # every function's section says so, nothing else
        assert lines[lines.index(f"  {fn}") + 1].startswith("    not yet implemented: ")


@pytest.mark.parametrize("ex", sorted(EXERCISES))
def test_shipped_files_import_only_numpy_and_document_shapes(ex):
    path = SHIPPED / EXERCISES[ex].filename
    tree = ast.parse(path.read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules <= {"numpy", "scipy"}, modules
    doc = ast.get_docstring(tree)
    assert doc and "What to write" in doc and f"check {ex}" in doc
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert set(EXERCISES[ex].functions) <= defined


def test_report_names_first_wrong_element_and_values(tmp_path):
    src = """
        from minicct.layers.linear import linear_backward as _bw

        def linear_backward(dout, cache):
            dx, dw, db = _bw(dout, cache)
            dw = dw.copy()
            dw[1, 2] += 1.0
            return dx, dw, db
        """
    ok, text = check("01", _write(tmp_path, "one_off", src))
    assert not ok
    line = next(t for t in text.splitlines() if "first wrong element" in t)
    assert "`dw`" in line and "index (1, 2)" in line and "expected" in line and "received" in line
    assert "1 of 15 elements wrong" in text


def test_shape_mismatch_reports_both_shapes(tmp_path):
    src = """
        import numpy as np
        def andc_mask(B):
            return np.zeros((2, 2), bool)
        """
    ok, text = check("07", _write(tmp_path, "shape", src))
    assert not ok and "`M` has shape [2, 2], expected [4, 6]" in text


def test_student_exception_shows_last_line_and_location(tmp_path):
    src = """
        def layernorm_backward(dout, x, gamma, eps=1e-5):
            mu = x.mean(axis=-1)
            return x - mu, gamma, gamma
        """
    ok, text = check("02", _write(tmp_path, "boom", src))
    assert not ok
    assert "raised ValueError: operands could not be broadcast" in text
    assert "line 4 of boom.py" in text and "hint: mu, var and rstd have shape [..., 1]" in text


def test_in_place_modification_is_reported(tmp_path):
    src = """
        def andc_mask(B):
            import numpy as np
            return np.diagonal(B, axis1=1, axis2=2).T

        def prune_readout(W, M):
            W *= M[:, None, :]
            return W
        """
    ok, text = check("07", _write(tmp_path, "inplace", src))
    assert not ok and "`prune_readout` modified its argument 1 in place" in text


def test_unloadable_and_incomplete_files(tmp_path):
    ok, text = check("06", _write(tmp_path, "syntax", "def greedy_clusters(B):\n    return [\n"))
    assert not ok and "syntax error at line" in text
    ok, text = check("06", _write(tmp_path, "missing", "def node_noise(B):\n    return -1\n"))
    assert not ok and "defines no function `greedy_clusters`" in text
    ok, text = check("06", tmp_path / "absent.py")
    assert not ok and "file not found" in text


def test_seed_makes_reproducible_different_inputs(tmp_path):
    log = tmp_path / "seen.txt"
    spy = _write(tmp_path, "spy07", f"""
        from minicct.analysis.andc import andc_mask as _mask, prune_readout

        def andc_mask(B):
            with open({str(log)!r}, "a") as f:
                f.write(str(int(B.sum())) + ",")
            return _mask(B)
        """)

    def seen(seed):
        log.write_text("")
        assert check("07", spy, seed=seed)[0]
        return log.read_text()

    first = seen(0)
    assert first.count(",") == 5                      # every andc_mask case called the student once
    assert seen(0) == first and seen(5) != first


def test_attention_hint_variants_are_distinct_wrong_answers():
    """The checker's re-implementation equals minicct without a mistake and differs with each one."""
    rng = np.random.default_rng(0)
    N, T, D, h = 2, 4, 6, 2
    x, w = rng.standard_normal((N, T, D)), 0.5 * rng.standard_normal((3 * D, D))
    params = {"qkv.weight": w, "proj.weight": np.eye(D), "proj.bias": np.zeros(D)}
    _, cache = attention_forward(x, params, h)
    dout = rng.standard_normal((N, T, D))
    dx, grads = attention_backward(dout, cache)
    ok_dx, ok_dw = _attention_variant(dout, x, w, h)
    np.testing.assert_allclose(ok_dx, dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ok_dw, grads["qkv.weight"], rtol=1e-12, atol=1e-12)
    for mistake in _ATTENTION_HINTS:
        bad_dx, _ = _attention_variant(dout, x, w, h, mistake)
        assert np.abs(bad_dx - dx).max() > 1e-3, mistake


def test_exercise_ids_and_check_all(tmp_path):
    assert get_exercise("2") is get_exercise("02") is get_exercise("ex02") is \
        get_exercise("ex02_layernorm_backward.py")
    with pytest.raises(ValueError, match="unknown exercise"):
        get_exercise("9")
    for ex, src in DELEGATE.items():
        _write(tmp_path, EXERCISES[ex].stem, src)
    ok, text = check_all(tmp_path)
    assert ok and text.count("PASSED, all") == 2 * len(EXERCISES)     # each report and its summary line
    (tmp_path / EXERCISES["05"].filename).unlink()
    ok, text = check_all(tmp_path)
    assert not ok and "05  FAILED (file not loaded)" in text


def test_cli_exit_codes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    good = _write(tmp_path, "good07", DELEGATE["07"])
    bad = _write(tmp_path, "bad07", dict((w[1], w[2]) for w in WRONG)["missing_transpose"])

    def run(*args, script=None):
        cmd = [sys.executable] + ([str(script)] if script else ["-m", "minicct.exercises"]) + list(args)
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    r = run("check", "07", "--file", str(good))
    assert r.returncode == 0 and "RESULT 07: PASSED" in r.stdout, r.stdout + r.stderr
    r = run("07", "--file", str(bad), script=SHIPPED / "check.py")
    assert r.returncode == 1 and "transpose the [D, K] diagonal" in r.stdout, r.stdout + r.stderr
    r = run("check", "42")
    assert r.returncode == 2 and "unknown exercise" in r.stderr
