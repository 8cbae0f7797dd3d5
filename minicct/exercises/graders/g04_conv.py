"""Grader of exercise 04 conv2d by im2col (python -m minicct.exercises check 04 ...).

Seeded cases, minicct's answer, and the known wrong answers (graders/__init__.py).
"""
from __future__ import annotations

import numpy as np

from ...gradcheck import numerical_vjp
from ...layers.conv import conv2d_backward as ref_conv2d_backward
from ...layers.conv import conv2d_forward as ref_conv2d_forward
from ..checker import Hint, compare, with_numeric
from ._shapes import _shapes


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
