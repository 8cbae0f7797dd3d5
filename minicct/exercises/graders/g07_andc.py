"""Grader of exercise 07 the ANDC mask (python -m minicct.exercises check 07 ...).

Seeded cases, minicct's answer, and the known wrong answers (graders/__init__.py).
"""
from __future__ import annotations

import numpy as np

from ...analysis.andc import andc_mask as ref_andc_mask
from ...analysis.andc import prune_readout as ref_prune_readout
from ..checker import Hint, compare


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
            Wp_e = ref_prune_readout(W, M)
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
