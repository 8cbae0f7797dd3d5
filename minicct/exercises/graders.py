"""The seven graders: for each exercise, seeded cases, minicct's answer, and the known wrong answers.

Every reference value comes from minicct's own functions (layers/*, analysis/*); the wrong answers
("variants") are built from the reference or from a small parametrised re-implementation whose
mistake-free setting is checked against minicct on every run (so a hint can never be computed from a
reference that drifted away from minicct).
Shape legend: N batch, C channels, H, W, T tokens, D embedding / nodes, h heads, d head dim, K classes.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..analysis.andc import andc_mask as ref_andc_mask
from ..analysis.andc import prune_readout as ref_apply_mask
from ..analysis.clusters import greedy_clusters as ref_greedy_clusters
from ..analysis.clusters import node_stats as ref_node_stats
from ..analysis.readout import readout_logits as ref_readout_logits
from ..analysis.snp import node_fields as ref_node_fields
from ..gradcheck import numerical_vjp, rel_error
from ..layers.activations import softmax as ref_softmax
from ..layers.activations import softmax_backward as ref_softmax_backward
from ..layers.attention import attention_backward as ref_attention_backward
from ..layers.attention import attention_forward as ref_attention_forward
from ..layers.conv import conv2d_backward as ref_conv2d_backward
from ..layers.conv import conv2d_forward as ref_conv2d_forward
from ..layers.linear import linear_backward as ref_linear_backward
from ..layers.linear import linear_forward as ref_linear_forward
from ..layers.norm import layernorm_backward as ref_layernorm_backward
from ..layers.norm import layernorm_forward as ref_layernorm_forward
from .checker import CaseFailed, Hint, InternalError, compare, compare_exact, with_numeric


def _shapes(**arrays):
    return ", ".join(f"{k} [{', '.join(map(str, np.shape(v)))}]" for k, v in arrays.items())


# ============================================================================== 01 linear backward
def grade_linear(s):
    """linear_backward(dout, cache=(x, w, has_bias)) -> (dx, dw, db), against minicct.layers.linear."""
    def case(key, x_shape, n_out, bias, note="", numeric=False):
        def run():
            rng = s.rng(1, key)
            x = rng.standard_normal(x_shape)
            w = rng.standard_normal((n_out, x_shape[-1]))
            b = rng.standard_normal(n_out) if bias else None
            y, cache = ref_linear_forward(x, w, b)
            dout = rng.standard_normal(y.shape)
            dx_e, dw_e, db_e = ref_linear_backward(dout, cache)
            dx, dw, db = s.unpack("linear_backward", s.call(
                "linear_backward", dout, (x, w, bias),
                error_hint="shapes: dout [..., out], x [..., in], W [out, in]; dx = dout W keeps the leading "
                           "axes; for dW and db reshape dout and x to [M, out] and [M, in] (M = product of "
                           "the leading axes)"),
                3, "(dx, dw, db)")
            M = int(np.prod(x_shape[:-1]))
            lead = tuple(x_shape[:-1])
            dw_hints = [
                Hint("missing transpose: W has shape (out, in), so dW = dout^T x is (out, in), not x^T dout",
                     value=dw_e.T, shape=dw_e.T.shape),
                Hint(f"you averaged over the {M} rows; the loss already did: dW is a SUM over the batch",
                     value=lambda: dw_e / M),
                Hint("dW must be summed over ALL leading axes of x (reshape to [M, in] and [M, out] first)",
                     shape=lead[1:] + dw_e.shape if len(lead) > 1 else None),
            ]
            db_hints = [
                Hint(f"you averaged over the {M} rows; the loss already did: db is a SUM over the batch",
                     value=lambda: db_e / M if db_e is not None else None),
                Hint("db must be summed over ALL leading axes of dout (axis=0 only sums the first one)",
                     shape=lead[1:] + (n_out,) if len(lead) > 1 else None),
            ]
            dx_hints = [Hint("dx = dout W: W is (out, in), so no transpose is needed here",
                             shape=lead + (n_out,))]
            f = lambda: ref_linear_forward(x, w, b)[0]   # noqa: E731 - reads x, w, b in place
            dx_call = lambda: compare("dx", dx_e, dx, hints=dx_hints,   # noqa: E731
                                      hint="dx = dout W has the shape of x")
            dw_call = lambda: compare("dw", dw_e, dw, hints=dw_hints, hint="dW = dout^T x")   # noqa: E731
            notes = []
            if numeric:
                notes = [with_numeric(dx_call, "dx", dx, lambda: numerical_vjp(f, x, dout)),
                         with_numeric(dw_call, "dw", dw, lambda: numerical_vjp(f, w, dout))]
            else:
                dx_call(), dw_call()
            db_err = compare("db", db_e, db, hints=db_hints, hint="db = sum of dout over all leading axes",
                             none_hint="has_bias is False: the layer has no bias, return None for db")
            if numeric and bias:
                notes.append(with_numeric(lambda: db_err, "db", db, lambda: numerical_vjp(f, b, dout)))
            return "rel_error minicct/numerical: " + ", ".join(notes) if numeric else None
        label = _shapes(x=np.empty(x_shape), w=np.empty((n_out, x_shape[-1]))) + (", bias" if bias else ", no bias")
        return (label + (f" ({note})" if note else ""), run)

    s.part("linear_backward", [
        case(0, (4, 5), 3, True, numeric=True),
        case(1, (2, 3, 5), 4, True, "leading token axis", numeric=True),
        case(2, (3, 4), 4, True, "square W: a missing transpose keeps the shape"),
        case(3, (1, 1, 6), 2, True, "a single token"),
        case(4, (3, 5), 1, False, "one output, has_bias False -> db is None"),
        case(5, (2, 2, 3, 1), 3, True, "one input feature, two leading axes"),
    ])


# ============================================================================ 02 LayerNorm backward
def _ln_variants(dout, x, gamma, eps):
    """dx of typical LayerNorm-backward mistakes: dict name -> array (float64)."""
    D = x.shape[-1]
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc * rstd
    dn = dout * gamma
    mean = lambda a: a.mean(axis=-1, keepdims=True)    # noqa: E731
    out = {
        "constants": dn * rstd,
        "no_var": rstd * (dn - mean(dn)),
        "no_mean": rstd * (dn - xhat * mean(dn * xhat)),
        "no_gamma": rstd * (dout - mean(dout) - xhat * mean(dout * xhat)),
    }
    if D > 1:
        var_u = (xc * xc).sum(axis=-1, keepdims=True) / (D - 1)
        r_u = 1.0 / np.sqrt(var_u + eps)
        out["unbiased"] = r_u * (dn - mean(dn)) - r_u ** 3 * xc * (dn * xc).sum(axis=-1, keepdims=True) / (D - 1)
        xh_u = xc * r_u
        out["unbiased_formula"] = r_u * (dn - mean(dn) - xh_u * mean(dn * xh_u))
    if eps != 1e-5:
        r5 = 1.0 / np.sqrt(var + 1e-5)
        xh5 = xc * r5
        out["eps"] = r5 * (dn - mean(dn) - xh5 * mean(dn * xh5))
    return out


def grade_layernorm(s):
    """layernorm_backward(dout, x, gamma, eps) -> (dx, dgamma, dbeta), against minicct.layers.norm."""
    def case(key, x_shape, eps=1e-5, note="", numeric=False):
        def run():
            rng = s.rng(2, key)
            D = x_shape[-1]
            x = 1.5 * rng.standard_normal(x_shape) + 0.7           # not zero-mean: the mean path matters
            gamma = 1.0 + 0.5 * rng.standard_normal(D)
            beta = 0.5 * rng.standard_normal(D)
            y, cache = ref_layernorm_forward(x, gamma, beta, eps)
            dout = rng.standard_normal(y.shape)
            dx_e, dg_e, db_e = ref_layernorm_backward(dout, cache)
            dx, dg, db = s.unpack("layernorm_backward", s.call(
                "layernorm_backward", dout, x, gamma, eps,
                error_hint="mu, var and rstd have shape [..., 1] (keepdims=True); gamma and beta [D]"),
                3, "(dx, dgamma, dbeta)")
            M = int(np.prod(x_shape[:-1]))
            lead = tuple(x_shape[:-1])
            v = _ln_variants(dout, x, gamma, eps)
            dx_hints = [
                Hint("you treated mean and variance as constants: x also reaches xhat through mu and var",
                     value=v["constants"]),
                Hint("the path through the variance is missing: the term - xhat * mean(dn * xhat)",
                     value=v["no_var"]),
                Hint("the path through the mean is missing: the term - mean(dn)", value=v["no_mean"]),
                Hint("multiply dout by gamma first: dn = dout * gamma is the gradient of xhat",
                     value=v["no_gamma"]),
                Hint("the variance is biased (divide by D, as torch.nn.LayerNorm), not np.var(ddof=1)",
                     value=v.get("unbiased")),
                Hint("the variance is biased (divide by D, as torch.nn.LayerNorm), not np.var(ddof=1)",
                     value=v.get("unbiased_formula")),
                Hint(f"use the eps argument (this case has eps = {eps}), do not hard-code 1e-5",
                     value=v.get("eps")),
                Hint("the means in dx run over the feature axis (axis=-1, keepdims=True)",
                     value=lambda: _ln_axis0(dout, x, gamma, eps) if len(lead) == 1 and lead[0] > 1 else None),
            ]
            sum_hint = "dgamma and dbeta are SUMS over every leading axis (every row uses the same gamma)"
            dg_hints = [
                Hint("dgamma multiplies the NORMALISED input: sum(dout * xhat), not sum(dout * x)",
                     value=lambda: (dout * x).reshape(-1, D).sum(axis=0)),
                Hint(f"you averaged over the {M} rows; {sum_hint}", value=lambda: dg_e / M),
                Hint(sum_hint, shape=lead[1:] + (D,) if len(lead) > 1 else None),
                Hint(sum_hint, shape=lead + (D,)),
            ]
            db_hints = [Hint(f"you averaged over the {M} rows; {sum_hint}", value=lambda: db_e / M),
                        Hint(sum_hint, shape=lead[1:] + (D,) if len(lead) > 1 else None),
                        Hint(sum_hint, shape=lead + (D,))]
            f = lambda: ref_layernorm_forward(x, gamma, beta, eps)[0]   # noqa: E731
            dx_call = lambda: compare("dx", dx_e, dx, hints=dx_hints,   # noqa: E731
                                      hint="dx = rstd * (dn - mean(dn) - xhat * mean(dn * xhat)), means over axis -1")
            dg_call = lambda: compare("dgamma", dg_e, dg, hints=dg_hints,   # noqa: E731
                                      hint="dgamma = sum over rows of dout * xhat")
            if numeric:
                notes = [with_numeric(dx_call, "dx", dx, lambda: numerical_vjp(f, x, dout)),
                         with_numeric(dg_call, "dgamma", dg, lambda: numerical_vjp(f, gamma, dout))]
            else:
                dx_call(), dg_call()
            db_err = compare("dbeta", db_e, db, hints=db_hints, hint="dbeta = sum over rows of dout")
            if numeric:
                notes.append(with_numeric(lambda: db_err, "dbeta", db, lambda: numerical_vjp(f, beta, dout)))
                return "rel_error minicct/numerical: " + ", ".join(notes)
            return None
        label = _shapes(x=np.empty(x_shape)) + (f", eps {eps:g}" if eps != 1e-5 else "")
        return (label + (f" ({note})" if note else ""), run)

    s.part("layernorm_backward", [
        case(0, (4, 6), numeric=True),
        case(1, (2, 3, 5), note="leading token axis", numeric=True),
        case(2, (1, 1, 8), note="a single token"),
        case(3, (3, 1), note="one feature: xhat = 0, so dx = 0"),
        case(4, (5, 4), eps=0.1, note="a large eps"),
    ])


def _ln_axis0(dout, x, gamma, eps):
    """The correct dx formula with its two means taken over axis 0 (the batch) instead of the features."""
    mu = x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + eps)
    xhat = (x - mu) * rstd
    dn = dout * gamma
    return rstd * (dn - dn.mean(axis=0, keepdims=True) - xhat * (dn * xhat).mean(axis=0, keepdims=True))


# ==================================================================== 03 softmax and attention backward
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


# ============================================================================== 04 conv2d by im2col
def _conv_weight_orders(w):
    """Weights a student effectively uses when cols and w.reshape disagree on the (c, i, j) order."""
    C_out, C, k, _ = w.shape
    flat_ijc = w.transpose(0, 2, 3, 1).reshape(C_out, -1)
    return (flat_ijc.reshape(C_out, C, k, k),                          # (i, j, c) weights on (c, i, j) columns
            w.reshape(C_out, -1).reshape(C_out, k, k, C).transpose(0, 3, 1, 2))   # the other way round


def _col2im_assign(dout, w, x_shape, stride, pad, order="ij"):
    """dx of a col2im that ASSIGNS (=) overlapping windows instead of adding, loops in `order`."""
    N, C, H, Wd = x_shape
    _, _, k, _ = w.shape
    Ho, Wo = dout.shape[2:]
    dcols = np.einsum("noyx,ocij->ncijyx", dout, w)                  # [N, C, k, k, H', W']
    dxp = np.zeros((N, C, H + 2 * pad, Wd + 2 * pad))
    offsets = [(i, j) for i in range(k) for j in range(k)]
    if order == "ji":
        offsets = [(i, j) for j in range(k) for i in range(k)]
    for i, j in offsets:
        dxp[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride] = dcols[:, :, i, j]
    return dxp[:, :, pad:pad + H, pad:pad + Wd]


def grade_conv(s):
    """conv2d_forward(x, w, b, stride, pad) -> (out, cache); conv2d_backward(dout, cache) -> (dx, dw, db)."""
    def setup(key, x_shape, w_shape, bias):
        rng = s.rng(4, key)
        x = rng.standard_normal(x_shape)
        w = rng.standard_normal(w_shape)
        b = rng.standard_normal(w_shape[0]) if bias else None
        return rng, x, w, b

    def label(x_shape, w_shape, bias, stride, pad, note):
        return (f"{_shapes(x=np.empty(x_shape), w=np.empty(w_shape))}, stride {stride}, pad {pad}"
                + ("" if bias else ", no bias") + (f" ({note})" if note else ""))

    def out_hints(x, w, b, stride, pad, out_e):
        N, C, H, Wd = x.shape
        k = w.shape[2]
        Ho, Wo = out_e.shape[2:]
        w1, w2 = _conv_weight_orders(w)
        ref = lambda ww: np.asarray(ref_conv2d_forward(x, ww, b, stride, pad)[0])   # noqa: E731
        return [
            Hint("conv2d in deep learning is a cross-correlation: do not flip the kernel",
                 value=lambda: ref(w[:, :, ::-1, ::-1].copy())),
            Hint("the bias b[o] is missing (added to every output pixel of channel o)",
                 value=lambda: out_e - b[None, :, None, None] if b is not None else None),
            Hint("the order of the entries of a cols row must match w.reshape(C_out, -1), i.e. (c, i, j) "
                 "with c slowest", value=lambda: ref(w1)),
            Hint("the order of the entries of a cols row must match w.reshape(C_out, -1), i.e. (c, i, j) "
                 "with c slowest", value=lambda: ref(w2)),
            Hint(f"H' = (H + 2*pad - k) // stride + 1 = ({H} + {2 * pad} - {k}) // {stride} + 1 = {Ho}",
                 shape=(N, w.shape[0], (H - k) // stride + 1, (Wd - k) // stride + 1) if pad else None),
            Hint("the output is [N, C_out, H', W'] (channels first)", shape=(N, Ho, Wo, w.shape[0])),
        ]

    def fwd_case(key, x_shape, w_shape, bias, stride, pad, note=""):
        def run():
            _, x, w, b = setup(key, x_shape, w_shape, bias)
            out_e, _ = ref_conv2d_forward(x, w, b, stride, pad)
            out = s.unpack("conv2d_forward", s.call(
                "conv2d_forward", x, w, b, stride, pad,
                error_hint="b may be None; pad with np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))"),
                2, "(out, cache)")[0]
            compare("out", out_e, out, hints=out_hints(x, w, b, stride, pad, np.asarray(out_e)),
                    hint="out[n, o, y, x] = b[o] + sum_{c,i,j} w[o, c, i, j] xpad[n, c, s*y + i, s*x + j]")
            return None
        return (label(x_shape, w_shape, bias, stride, pad, note), run)

    def bwd_case(key, x_shape, w_shape, bias, stride, pad, note="", numeric=False):
        def run():
            rng, x, w, b = setup(key, x_shape, w_shape, bias)
            out_e, cache = ref_conv2d_forward(x, w, b, stride, pad)
            dout = rng.standard_normal(out_e.shape)
            dx_e, dw_e, db_e = ref_conv2d_backward(dout, cache)
            _, st_cache = s.unpack("conv2d_forward", s.call("conv2d_forward", x, w, b, stride, pad),
                                   2, "(out, cache)")
            dx, dw, db = s.unpack("conv2d_backward", s.call(
                "conv2d_backward", dout, st_cache,
                error_hint="dcols has the shape of cols; col2im loops over the k*k offsets like im2col"),
                3, "(dx, dw, db)")
            N, C, H, Wd = x_shape
            Ho, Wo = out_e.shape[2:]
            M = N * Ho * Wo
            dx_hints = [
                Hint("overlapping windows: col2im must ADD (+=) each window's gradient, not assign (=)",
                     value=lambda: _col2im_assign(dout, w, x_shape, stride, pad, "ij")),
                Hint("overlapping windows: col2im must ADD (+=) each window's gradient, not assign (=)",
                     value=lambda: _col2im_assign(dout, w, x_shape, stride, pad, "ji")),
                Hint("conv2d is a cross-correlation: do not flip the kernel",
                     value=lambda: ref_conv2d_backward(dout, ref_conv2d_forward(
                         x, w[:, :, ::-1, ::-1].copy(), b, stride, pad)[1])[0]),
                Hint(f"dx has the shape of x: crop the padding, dxpad[:, :, {pad}:{pad}+H, {pad}:{pad}+W]",
                     shape=(N, C, H + 2 * pad, Wd + 2 * pad) if pad else None),
            ]
            dw_hints = [
                Hint("conv2d is a cross-correlation: do not flip the kernel",
                     value=lambda: dw_e[:, :, ::-1, ::-1]),
                Hint(f"you averaged over the batch (N = {N}); dW is a SUM", value=lambda: dw_e / N),
                Hint(f"you averaged over the {M} output positions; dW is a SUM", value=lambda: dw_e / M),
                Hint("dW [C_out, C, k, k] = (dout as [C_out, N*H'*W']) @ cols, reshaped in the (c, i, j) order",
                     shape=(w_shape[1], w_shape[0], w_shape[2], w_shape[3])),
            ]
            db_hints = [
                Hint(f"you averaged; db is a SUM of dout over N, H', W' ({M} positions)",
                     value=lambda: db_e / M if db_e is not None else None),
                Hint("db sums dout over N, H' and W' (axes 0, 2, 3)", shape=(w_shape[0], Ho, Wo)),
                Hint("db sums dout over N, H' and W' (axes 0, 2, 3)", shape=(N, w_shape[0])),
            ]
            f = lambda: ref_conv2d_forward(x, w, b, stride, pad)[0]   # noqa: E731
            dx_call = lambda: compare("dx", dx_e, dx, hints=dx_hints,   # noqa: E731
                                      hint="dcols = dout_mat @ w_mat, then col2im: the (i, j) loop with +=, then crop")
            dw_call = lambda: compare("dw", dw_e, dw, hints=dw_hints,   # noqa: E731
                                      hint="dW = dout_mat^T @ cols, reshaped to [C_out, C, k, k]")
            notes = []
            if numeric:
                notes = [with_numeric(dx_call, "dx", dx, lambda: numerical_vjp(f, x, dout)),
                         with_numeric(dw_call, "dw", dw, lambda: numerical_vjp(f, w, dout))]
            else:
                dx_call(), dw_call()
            db_err = compare("db", db_e, db, hints=db_hints, hint="db = dout.sum(axis=(0, 2, 3))",
                             none_hint="the convolution had no bias (b=None): return None for db")
            if numeric and bias:
                notes.append(with_numeric(lambda: db_err, "db", db, lambda: numerical_vjp(f, b, dout)))
            return "rel_error minicct/numerical: " + ", ".join(notes) if numeric else None
        return (label(x_shape, w_shape, bias, stride, pad, note), run)

    cases = [  # key, x, w, bias, stride, pad, note
        (0, (2, 3, 5, 5), (4, 3, 3, 3), True, 1, 1, ""),
        (1, (2, 2, 7, 6), (3, 2, 3, 3), True, 2, 0, "stride 2, not square"),
        (2, (1, 1, 4, 5), (2, 1, 1, 1), True, 1, 0, "1x1 kernel"),
        (3, (2, 3, 4, 4), (2, 3, 4, 4), False, 1, 0, "kernel as large as the input: one output pixel"),
        (4, (1, 2, 5, 5), (2, 2, 2, 2), True, 3, 1, "stride > kernel: some pixels are in no window"),
    ]
    s.part("conv2d_forward", [fwd_case(*c) for c in cases])
    s.part("conv2d_backward", [bwd_case(*c, numeric=(c[0] == 0)) for c in cases])


# ============================================================================= 05 SNP node fields
def _quantised(rng, shape):
    """Multiples of 1/16 in [-2, 2]: products and sums are exact in float32, so minicct's float32 read-out
    and class-sum accumulation give exactly the float64 answer (tolerance stays 1e-7)."""
    return np.clip(np.round(rng.standard_normal(shape) * 8.0), -32, 32) / 16.0


def _snp_inputs(s, key, N, T, D, K, empty=()):
    rng = s.rng(5, key)
    A = _quantised(rng, (N, T, D))
    W = _quantised(rng, (K, T, D))
    labels = np.array([c for c in range(K) if c not in empty])
    y = labels[np.arange(N) % labels.size]                      # every non-empty label at least once (N >= K)
    y = rng.permutation(y).astype(np.int64) if N > 1 else y.astype(np.int64)
    return A, y, W


_SNP_CASES = [  # key, N, T, D, K, empty labels, note
    (0, 12, 3, 4, 3, (), ""),
    (1, 10, 1, 5, 4, (), "one token"),
    (2, 9, 2, 1, 3, (), "one node"),
    (3, 8, 3, 4, 5, (1, 4), "labels 1 and 4 have no images"),
    (4, 1, 2, 3, 2, (1,), "a single image"),
]


def grade_snp(s):
    """readout_logits(A, W) -> [N, K]; node_fields(A, y, W, K) -> V [D, K, K], against minicct.analysis."""
    def label(N, T, D, K, note):
        return f"A [{N}, {T}, {D}], K {K}" + (f" ({note})" if note else "")

    def logit_case(key, N, T, D, K, empty, note):
        def run():
            A, _, W = _snp_inputs(s, key, N, T, D, K, empty)
            z_e = ref_readout_logits(A, W)
            z = s.call("readout_logits", A, W, error_hint="flatten A to [N, T*D] and W to [K, T*D]")
            compare("z", z_e, z, hints=[
                Hint("W is [K, T, D]: flatten it to [K, T*D] and transpose; W.reshape(-1, K) scrambles the weights",
                     value=lambda: A.reshape(N, -1) @ W.reshape(-1, K)),
                Hint("the logit is a SUM over tokens and nodes, not a mean",
                     value=lambda: np.asarray(z_e, np.float64) / (T * D)),
                Hint("the logits are [N, K] (images x labels)", shape=(K, N)),
            ], hint="z[k, j] = sum_{t, n} W[j, t, n] A[k, t, n]")
            return None
        return (label(N, T, D, K, note), run)

    def field_case(key, N, T, D, K, empty, note):
        def run():
            A, y, W = _snp_inputs(s, key, N, T, D, K, empty)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")                   # minicct warns about labels without images
                V_e = ref_node_fields(A, y, W, K)
            V = s.call("node_fields", A, y, W, K,
                       error_hint="V has shape [D, K, K]; count the images of each label with np.bincount(y, "
                                  "minlength=num_classes)")
            counts = np.bincount(y, minlength=K).astype(np.float64)
            hints = [
                Hint("a per-label MEAN, not a sum: divide by the number of images of label i",
                     value=lambda: V_e * counts[None, :, None]),
                Hint("divide by the number of images of label i, not by N",
                     value=lambda: V_e * counts[None, :, None] / N),
                Hint("rows are the TRUE label i, columns the output j: V[n, i, j] averages h_n(k, j) over images "
                     "of label i (you have it transposed)", value=lambda: V_e.transpose(0, 2, 1)),
                Hint("V[n] uses node n only: you summed over the nodes (that gives the read-out logits)",
                     value=lambda: np.broadcast_to(V_e.sum(axis=0), V_e.shape)),
                Hint("the node axis comes first: V [D, K, K]", shape=(K, K, D)),
                Hint("these look like per-image fields h [D, N, K]: average them over the images of each label",
                     shape=(D, N, K)),
            ]
            compare("V", V_e, V, hints=hints, where=lambda i: f" (node {i[0]}, true label {i[1]}, output {i[2]})",
                    hint="V[n, i, j] = mean over images k of label i of sum_t W[j, t, n] A[k, t, n]",
                    nan_hint="a label without images must give zeros, not the mean of nothing (0/0)")
            return None
        return (label(N, T, D, K, note), run)

    s.part("readout_logits", [logit_case(*c) for c in _SNP_CASES])
    s.part("node_fields", [field_case(*c) for c in _SNP_CASES])


# ========================================================================== 06 clusters and noise
def _greedy_variant(B, mistake):
    """Greedy clusters with one typical mistake (the reference loop of the docstring otherwise)."""
    K = B.shape[0]
    mutual = B if mistake == "one_direction" else (B & B.T)
    cand = list(range(K)) if mistake == "no_diagonal" else [j for j in range(K) if B[j, j]]
    remaining = set(cand)
    out = []
    for lb in cand:
        if lb not in remaining:
            continue
        remaining.discard(lb)
        cluster = [lb]
        for lb2 in sorted(remaining):
            members = cluster[:1] if mistake == "first_only" else cluster
            if all(mutual[lb2, c] and (mistake == "one_direction" or mutual[c, lb2]) for c in members):
                cluster.append(lb2)
                remaining.discard(lb2)
        out.append(cluster)
    return out


_CLUSTER_HINTS = {
    "first_only": "a new label must form ones with EVERY label already in the cluster, not only the first",
    "one_direction": "both directions must be 1: B[lb2, c] AND B[c, lb2] (use B & B.T)",
    "no_diagonal": "only labels with B[j, j] = 1 are candidates; a label with a zero diagonal is in no cluster",
}


def _cluster_inputs():
    """Hand-made node matrices [K, K] bool, each with what it tests."""
    def sym(K, pairs, diag):
        B = np.zeros((K, K), dtype=bool)
        B[list(diag), list(diag)] = True
        for a, b in pairs:
            B[a, b] = B[b, a] = True
        return B

    block = sym(5, [(0, 2), (0, 3), (2, 3)], [0, 2, 3, 4])
    block[1, 0] = block[4, 1] = block[1, 3] = True                  # noise; label 1 has no diagonal one
    one_way = sym(3, [], [0, 1, 2])
    one_way[0, 1] = True                                            # B[0, 1] = 1 but B[1, 0] = 0
    one_way[2, 0] = one_way[0, 2] = True
    empty = np.zeros((4, 4), dtype=bool)
    empty[0, 1] = empty[1, 0] = empty[2, 3] = True                  # ones, but no diagonal one
    off_diag = sym(4, [(0, 1), (0, 2), (1, 2)], [0, 2, 3])          # label 1 pairs with all, but B[1, 1] = 0
    return [
        ("a 3-label block, a singleton and noise", block),
        ("ties: the greedy order decides ([0, 1] first, not the larger [0, 2, 3])",
         sym(4, [(0, 1), (0, 2), (0, 3), (2, 3)], range(4))),
        ("a label joins only if it fits every member", sym(4, [(0, 1), (0, 2), (1, 3), (2, 3)], range(4))),
        ("one direction is not enough", one_way),
        ("a label with a zero diagonal", off_diag),
        ("an empty node: no diagonal one", empty),
        ("all ones", np.ones((4, 4), dtype=bool)),
        ("K = 1", np.ones((1, 1), dtype=bool)),
    ]


def _random_clusters_inputs(s):
    out = []
    for key, (K, p) in enumerate([(8, 0.35), (8, 0.6), (10, 0.5)]):
        rng = s.rng(6, key)
        U = rng.random((K, K)) < p
        B = U | (U.T & (rng.random((K, K)) < 0.7))                   # mostly symmetric, some one-way ones
        out.append((f"random K = {K}, density ~{p}", B))
    return out


def _normalise_clusters(obj):
    if isinstance(obj, np.ndarray) and obj.ndim == 2:
        obj = obj.tolist()
    if not isinstance(obj, (list, tuple)):
        raise CaseFailed([f"`greedy_clusters` must return a list of clusters, received a {type(obj).__name__}",
                          "hint: e.g. [[0, 2, 3], [4]]; [] when the node has no cluster"])
    out = []
    for c in obj:
        try:
            labels = [int(v) for v in (c.tolist() if isinstance(c, np.ndarray) else c)]
        except (TypeError, ValueError):
            raise CaseFailed([f"`greedy_clusters`: every cluster must be a list of int labels, received {c!r}",
                              "hint: e.g. [[0, 2, 3], [4]]"]) from None
        out.append(labels)
    return out


def grade_clusters(s):
    """greedy_clusters(B) -> list of lists; node_noise(B) -> int, against minicct.analysis.clusters."""
    inputs = _cluster_inputs() + _random_clusters_inputs(s)

    def cl_case(label, B):
        def run():
            expected = ref_greedy_clusters(B)
            got = s.call("greedy_clusters", B, error_hint="B is a bool [K, K] array; return lists of ints")
            norm = _normalise_clusters(got)
            hints = [(_greedy_variant(B, m), msg) for m, msg in _CLUSTER_HINTS.items()]
            if sorted(sorted(c) for c in norm) == sorted(expected) and norm != expected:
                hints.append((norm, "right clusters, wrong order: labels ascending inside a cluster, clusters "
                                    "in the order found (by smallest label)"))
            compare_exact("clusters", expected, norm, hints=hints,
                          hint="follow the greedy loop: candidates ascending, each cluster grows with the "
                               "smallest remaining label that fits every member")
            return None
        return (label, run)

    def noise_case(label, B):
        def run():
            st = ref_node_stats(B[None])
            expected = int(st.noise[0])
            got = s.call("node_noise", B, error_hint="B is a bool [K, K] array; return an int")
            try:
                val = int(got) if float(got) == int(got) else float(got)
            except (TypeError, ValueError, OverflowError):
                raise CaseFailed([f"`node_noise` must return an int, received {got!r}"]) from None
            total = int(B.sum())
            sizes = st.cluster_sizes[0]
            hints = []
            try:                                                   # noise of the student's own clusters
                own = _normalise_clusters(getattr(s.module, "greedy_clusters")(B.copy()))
                if own != ref_greedy_clusters(B):
                    hints.append((total - sum(len(c) ** 2 for c in own) if own else -1,
                                  f"your greedy_clusters gives {own} here, not {ref_greedy_clusters(B)}: "
                                  f"fix it first, the noise follows from the clusters"))
            except Exception:  # noqa: BLE001 - no usable clusters of the student: no such hint
                pass
            hints += [
                (total, "a node without clusters has noise -1 (the authors' code marks it)"
                 if not sizes else "subtract the ones inside the cluster blocks (|c|^2 per cluster)"),
                (total - sum(sizes), "a cluster block holds |c|^2 ones (the whole |c| x |c| block), not |c|"),
            ]
            compare_exact("noise", expected, val, hints=hints,
                          hint="noise = ones of B - sum over clusters of |c|^2, or -1 when there is no cluster")
            return None
        return (label, run)

    s.part("greedy_clusters", [cl_case(lb, B) for lb, B in inputs])
    s.part("node_noise", [noise_case(lb, B) for lb, B in inputs])


# ================================================================================= 07 the ANDC mask
def _andc_inputs(s, key, D, K, empty_node=None):
    rng = s.rng(7, key)
    B = rng.random((D, K, K)) < 0.5
    if empty_node is not None:
        B[empty_node][np.arange(K), np.arange(K)] = False            # no diagonal one, off-diagonal ones stay
    return B


_ANDC_CASES = [  # key, D, K, empty node, note
    (0, 6, 4, None, "more nodes than labels"),
    (1, 5, 5, None, "D = K: wrong axes keep the shape"),
    (2, 3, 4, 1, "node 1 has no diagonal one: it loses every label"),
    (3, 1, 4, None, "one node"),
    (4, 3, 1, None, "one label"),
]


def grade_andc(s):
    """andc_mask(B) -> M [K, D]; prune_readout(W, M) -> W * M at every token, against minicct.analysis.andc."""
    def where(idx):
        return f" (label {idx[0]}, node {idx[1]})"

    def mask_case(key, D, K, empty, note):
        def run():
            B = _andc_inputs(s, key, D, K, empty)
            M_e = ref_andc_mask(B)
            M = s.call("andc_mask", B, error_hint="B is bool [D, K, K]; M is [K, D]")
            diag = np.diagonal(B, axis1=1, axis2=2)                  # [D, K], the right diagonal, untransposed
            hints = [
                Hint("np.diagonal(B) pairs axes 0 and 1 (node n with label n); each node's K x K matrix "
                     "is on axes 1 and 2: np.diagonal(B, axis1=1, axis2=2)", value=lambda: np.diagonal(B)),
                Hint("np.diagonal(B) pairs axes 0 and 1 (node n with label n); each node's K x K matrix "
                     "is on axes 1 and 2: np.diagonal(B, axis1=1, axis2=2)", value=lambda: np.diagonal(B).T),
                Hint("np.diagonal(B) pairs axes 0 and 1 (node n with label n); each node's K x K matrix "
                     "is on axes 1 and 2: np.diagonal(B, axis1=1, axis2=2)", shape=np.diagonal(B).shape),
                Hint("M is [K, D] (labels x nodes, the layout of the read-out): transpose the [D, K] diagonal",
                     value=lambda: diag),
                Hint("M is [K, D] (labels x nodes, the layout of the read-out): transpose the [D, K] diagonal",
                     shape=diag.shape),
                Hint("the rule keeps label j only when B[n, j, j] = 1 (the diagonal), not when any field of "
                     "row j passes", value=lambda: B.any(axis=2).T),
                Hint("the rule keeps label j only when B[n, j, j] = 1 (the diagonal), not when any field of "
                     "column j passes", value=lambda: B.any(axis=1).T),
            ]
            compare("M", M_e, M, hints=hints, where=where, hint="M[j, n] = B[n, j, j]")
            return None
        return (f"B [{D}, {K}, {K}]" + (f" ({note})" if note else ""), run)

    def prune_case(key, D, K, T, note):
        def run():
            rng = s.rng(7, 100 + key)
            M = rng.random((K, D)) < 0.5
            W = rng.standard_normal((K, T, D))
            Wp_e = ref_apply_mask(W, M)
            Wp = s.call("prune_readout", W, M,
                        error_hint="M [K, D] needs a token axis to multiply W [K, T, D]: M[:, None, :]")
            hints = [
                Hint("M [K, D] broadcasts against the LAST two axes of W [K, T, D]: insert the token axis, "
                     "M[:, None, :], so node n loses label j at every token",
                     value=lambda: W * M[None, :, :] if T == K else None),
                Hint("keep a weight where M is True and zero it where M is False (not the other way round)",
                     value=lambda: W * ~M[:, None, :]),
            ]
            compare("W_pruned", Wp_e, Wp, hints=hints,
                    where=lambda i: f" (label {i[0]}, token {i[1]}, node {i[2]})",
                    hint="W_pruned[j, t, n] = M[j, n] * W[j, t, n]")
            return None
        return (f"W [{K}, {T}, {D}]" + (f" ({note})" if note else ""), run)

    s.part("andc_mask", [mask_case(*c) for c in _ANDC_CASES])
    s.part("prune_readout", [prune_case(0, 5, 3, 4, ""), prune_case(1, 4, 3, 3, "T = K"),
                             prune_case(2, 1, 2, 1, "one node, one token")])
