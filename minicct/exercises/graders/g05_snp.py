"""Grader of exercise 05 SNP node fields (python -m minicct.exercises check 05 ...).

Seeded cases, minicct's answer, and the known wrong answers (graders/__init__.py).
"""
from __future__ import annotations

import warnings

import numpy as np

from ...analysis.readout import readout_logits as ref_readout_logits
from ...analysis.snp import node_fields as ref_node_fields
from ..checker import Hint, compare


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
