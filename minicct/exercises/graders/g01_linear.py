"""Grader of exercise 01 linear backward (python -m minicct.exercises check 01 ...).

Seeded cases, minicct's answer, and the known wrong answers (graders/__init__.py).
"""
from __future__ import annotations

import numpy as np

from ...gradcheck import numerical_vjp
from ...layers.linear import linear_backward as ref_linear_backward
from ...layers.linear import linear_forward as ref_linear_forward
from ..checker import Hint, compare, with_numeric
from ._shapes import _shapes


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
