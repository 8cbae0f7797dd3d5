"""Grader of exercise 02 LayerNorm backward (python -m minicct.exercises check 02 ...).

Seeded cases, minicct's answer, and the known wrong answers (graders/__init__.py).
"""
from __future__ import annotations

import numpy as np

from ...gradcheck import numerical_vjp
from ...layers.norm import layernorm_backward as ref_layernorm_backward
from ...layers.norm import layernorm_forward as ref_layernorm_forward
from ..checker import Hint, compare, with_numeric
from ._shapes import _shapes


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
