"""Grader of exercise 03 softmax and attention backward (python -m minicct.exercises check 03 ...).

Seeded cases, minicct's answer, and the known wrong answers (graders/__init__.py).
"""
from __future__ import annotations

import numpy as np

from ...gradcheck import numerical_vjp, rel_error
from ...layers.activations import softmax as ref_softmax
from ...layers.activations import softmax_backward as ref_softmax_backward
from ...layers.attention import attention_backward as ref_attention_backward
from ...layers.attention import attention_forward as ref_attention_forward
from ..checker import CaseFailed, Hint, InternalError, compare, with_numeric
from ._shapes import _shapes


def _attention_variant(dout, x, w, h, mistake=None):
    """(dx, dWqkv) of attention without output projection, optionally with one typical mistake.

    mistake None must equal minicct's attention_backward with proj = identity (checked by the grader).
    """
    N, T, D = x.shape
    d = D // h
    scale = d ** -0.5
    q, k, v = (x @ w.T).reshape(N, T, 3, h, d).transpose(2, 0, 3, 1, 4)          # each [N, h, T, d]
    P = ref_softmax(q @ k.swapaxes(-1, -2) * scale, axis=-1)                      # [N, h, T, T]
    if mistake == "head_merge":
        dO = dout.reshape(N, h, T, d)                                             # reshape without the transpose
    else:
        dO = dout.reshape(N, T, h, d).transpose(0, 2, 1, 3)                       # [N, T, D] -> [N, h, T, d]
    dP = dO @ v.swapaxes(-1, -2)                                                  # [N, h, T, T]
    dv = (P if mistake == "dv_no_transpose" else P.swapaxes(-1, -2)) @ dO
    if mistake == "softmax_axis":
        dS = ref_softmax_backward(P, dP, axis=-2)
    elif mistake == "softmax_diag":
        dS = P * (1 - P) * dP
    else:
        dS = ref_softmax_backward(P, dP, axis=-1)
    if mistake != "no_scale":
        dS = dS * scale
    if mistake == "swap_qk":
        dq, dk = dS.swapaxes(-1, -2) @ k, dS @ q
    else:
        dq = dS @ k
        dk = (dS if mistake == "dk_no_transpose" else dS.swapaxes(-1, -2)) @ q
    dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(N, T, 3 * D)   # [3, N, h, T, d] -> [N, T, 3D]
    if mistake == "qkv_split":
        dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 2, 4, 0).reshape(N, T, 3 * D)   # split as (h, d, 3)
    return dqkv @ w, dqkv.reshape(-1, 3 * D).T @ x.reshape(-1, D)


_ATTENTION_HINTS = {
    "no_scale": "the 1/sqrt(d) of S = q k^T / sqrt(d) is missing on the way back (dS must be scaled too)",
    "dk_no_transpose": "dk = dS^T q: the keys are the COLUMNS of S, so transpose dS (last two axes)",
    "dv_no_transpose": "dv = P^T dO: transpose P (last two axes), as for any C = A B, dB = A^T dC",
    "softmax_axis": "the softmax runs over the keys (the LAST axis of P): its backward sums over axis -1",
    "softmax_diag": "P*(1-P)*dP keeps only the diagonal of the softmax Jacobian: dS = P * (dP - sum(dP * P))",
    "swap_qk": "dq and dk are swapped: S = q k^T gives dq = dS k and dk = dS^T q",
    "head_merge": "heads = O.transpose(0, 2, 1, 3).reshape(N, T, D): undo it with reshape(N, T, h, d) then "
                  "transpose(0, 2, 1, 3), not a plain reshape to [N, h, T, d]",
    "qkv_split": "qkv is split as reshape(N, T, 3, h, d): put dq, dk, dv back in that order before reshaping",
}


def _softmax_variants(y, dy, axis):
    out = [Hint("y*(1-y)*dy keeps only the diagonal of the Jacobian; the off-diagonal terms -y_i y_j add "
                "-y * sum(dy * y)", value=lambda: y * (1 - y) * dy),
           Hint("the sum must be weighted by y: dx = y * (dy - sum(dy * y))",
                value=lambda: y * (dy - dy.sum(axis=axis, keepdims=True))),
           Hint("multiply by y at the end: dx = y * (dy - sum(dy * y))",
                value=lambda: dy - (dy * y).sum(axis=axis, keepdims=True))]
    ax = axis % y.ndim
    for a in range(y.ndim):
        if a != ax:
            out.append(Hint(f"you summed over axis {a}; the softmax normalises along axis {ax} (the `axis` "
                            f"argument): sum over it, with keepdims=True",
                            value=(lambda a=a: y * (dy - (dy * y).sum(axis=a, keepdims=True)))))
    return out


def grade_softmax_attention(s):
    """Part A softmax_backward(y, dy, axis); part B the given attention_forward and attention_backward."""
    def sm_case(key, shape, axis, note="", numeric=False):
        def run():
            rng = s.rng(3, key)
            x = 2.0 * rng.standard_normal(shape)
            y = ref_softmax(x, axis=axis)
            dy = rng.standard_normal(shape)
            dx_e = ref_softmax_backward(y, dy, axis=axis)
            dx = s.call("softmax_backward", y, dy, axis,
                        error_hint="keep the signature softmax_backward(y, dy, axis=-1); sums need keepdims=True")
            call = lambda: compare("dx", dx_e, dx, hints=_softmax_variants(y, dy, axis),   # noqa: E731
                                   hint="dx = y * (dy - sum(dy * y, axis, keepdims=True))")
            if numeric:
                return "rel_error minicct/numerical: " + with_numeric(
                    call, "dx", dx, lambda: numerical_vjp(lambda: ref_softmax(x, axis=axis), x, dy))
            call()
            return None
        return (f"{_shapes(y=np.empty(shape))}, axis {axis}" + (f" ({note})" if note else ""), run)

    softmax_ok = s.part("softmax_backward", [
        sm_case(0, (3, 5), -1, numeric=True),
        sm_case(1, (2, 4, 3), 1, "the token axis, as in sequence pooling"),
        sm_case(2, (2, 2, 4, 4), -1, "attention probabilities [N, h, T, T]"),
        sm_case(3, (4, 1), -1, "a single element: y = 1, dx = 0"),
        sm_case(4, (3, 4), 0),
    ])

    def att_inputs(key, N, T, D, h):
        rng = s.rng(3, 100 + key)
        x = rng.standard_normal((N, T, D))
        w = 0.5 * rng.standard_normal((3 * D, D))
        params = {"qkv.weight": w, "proj.weight": np.eye(D), "proj.bias": np.zeros(D)}
        y, cache = ref_attention_forward(x, params, h)      # proj = identity: y = heads
        dout = rng.standard_normal((N, T, D))
        return x, w, params, y, cache, dout

    def fwd_case(key, N, T, D, h, note=""):
        def run():
            x, w, _, y, _, _ = att_inputs(key, N, T, D, h)
            out = s.unpack("attention_forward", s.call("attention_forward", x, w, h), 2, "(heads, cache)")
            compare("heads", y, out[0], hint="attention_forward is given: restore it from the shipped file")
            return None
        return (f"{_shapes(x=np.empty((N, T, D)))}, h {h}" + (f" ({note})" if note else ""), run)

    s.part("attention_forward (given, checked against minicct)", [fwd_case(0, 2, 4, 6, 2)])

    def att_case(key, N, T, D, h, note="", numeric=False):
        def run():
            try:
                return checked()
            except CaseFailed as f:
                if not softmax_ok:
                    f.lines.append("note: your softmax_backward fails above and attention_backward uses it: "
                                   "fix part A first")
                raise

        def checked():
            x, w, params, _, cache, dout = att_inputs(key, N, T, D, h)
            dx_e, grads = ref_attention_backward(dout, cache)
            dw_e = grads["qkv.weight"]
            ok_dx, ok_dw = _attention_variant(dout, x, w, h)
            if max(rel_error(ok_dx, dx_e), rel_error(ok_dw, dw_e)) > 1e-10:
                raise InternalError("the checker's attention re-implementation disagrees with "
                                    "minicct.layers.attention; its hints cannot be trusted")
            _, st_cache = s.unpack("attention_forward", s.call("attention_forward", x, w, h), 2, "(heads, cache)")
            dx, dw = s.unpack("attention_backward", s.call(
                "attention_backward", dout, st_cache,
                error_hint="q, k, v, P are [N, h, T, d] / [N, h, T, T]; transposes of batched matrices swap the "
                           "last two axes only (np.swapaxes(a, -1, -2))"), 2, "(dx, dw_qkv)")
            hints = [Hint(msg, value=(lambda m=m, i=i: _attention_variant(dout, x, w, h, m)[i]))
                     for m, msg in _ATTENTION_HINTS.items() for i in (0, 1)]
            dx_hints = [hh for j, hh in enumerate(hints) if j % 2 == 0]
            dw_hints = [hh for j, hh in enumerate(hints) if j % 2 == 1]
            d = D // h

            def where(idx):
                part = "qkv"[idx[0] // D]
                return f" (row {idx[0]}: the {part} weights of head {(idx[0] % D) // d})"

            f = lambda: ref_attention_forward(x, params, h)[0]   # noqa: E731
            dx_call = lambda: compare("dx", dx_e, dx, hints=dx_hints,   # noqa: E731
                                      hint="go backwards line by line: heads -> O -> (P, v) -> S -> (q, k) -> qkv -> x")
            dw_call = lambda: compare("dw_qkv", dw_e, dw, hints=dw_hints, where=where,   # noqa: E731
                                      hint="dWqkv = dqkv^T x summed over all N*T tokens, dqkv [N, T, 3D] "
                                           "in the (3, h, d) order of the forward's reshape")
            if numeric:
                return "rel_error minicct/numerical: " + ", ".join([
                    with_numeric(dx_call, "dx", dx, lambda: numerical_vjp(f, x, dout)),
                    with_numeric(dw_call, "dw_qkv", dw, lambda: numerical_vjp(f, w, dout))])
            dx_call(), dw_call()
            return None
        return (f"{_shapes(x=np.empty((N, T, D)))}, h {h}, d {D // h}" + (f" ({note})" if note else ""), run)

    s.part("attention_backward", [
        att_case(0, 2, 4, 6, 2, numeric=True),
        att_case(1, 1, 5, 4, 1, "one head"),
        att_case(2, 3, 6, 8, 4),
        att_case(3, 2, 3, 3, 3, "head dimension 1"),
        att_case(4, 2, 1, 6, 3, "a single token: P = 1, so dq = dk = 0"),
    ])
