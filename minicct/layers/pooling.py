"""Sequence pooling (CCT, Hassani et al. 2021, section 3): an attention-weighted average of the tokens.

    s = x w^T + b          [N, T, 1]   (attention_pool = Linear(D, 1))
    a = softmax_T(s)       [N, T, 1]   (softmax over the token axis)
    z = a^T x              [N, D]
Shape legend: N batch, T tokens, D embedding.
"""
import numpy as np

from .activations import softmax, softmax_backward


def seqpool_forward(x, w, b):
    """Inputs: x [N, T, D], w [1, D], b [1]. Returns z [N, D], cache (x, w, a)."""
    if x.ndim != 3:
        raise ValueError(f"seqpool: expected tokens [N, T, D], got shape {x.shape}")
    if w.shape != (1, x.shape[2]) or b.shape != (1,):
        raise ValueError(f"seqpool: expected w (1, {x.shape[2]}) and b (1,), got {w.shape} and {b.shape}")
    s = x @ w.T + b                       # [N, T, D] @ [D, 1] -> [N, T, 1]
    a = softmax(s, axis=1)                # over tokens
    z = (a.transpose(0, 2, 1) @ x)[:, 0]  # [N, 1, T] @ [N, T, D] -> [N, D]
    return z, (x, w, a)


def seqpool_backward(dz, cache, need_dx=True):
    """Returns (dx [N, T, D], dw [1, D], db [1]); dx is None with need_dx=False (frozen inputs, e.g. a read-out
    on stored activations: the [N, T, D] products are skipped, dw and db are the same numbers).

    z = a^T x  ->  dx = a dz,  da = x dz ;  a = softmax_T(s) -> ds = softmax_backward(a, da, T)
    s = x w^T + b -> dx += ds w, dw = sum ds x, db = sum ds (zero up to rounding: softmax is shift invariant).
    """
    x, w, a = cache
    dx = a * dz[:, None, :] if need_dx else None   # [N, T, 1] * [N, 1, D] -> [N, T, D]
    da = x @ dz[:, :, None]                        # [N, T, D] @ [N, D, 1] -> [N, T, 1]
    ds = softmax_backward(a, da, axis=1)           # [N, T, 1]
    if need_dx:
        dx += ds * w                               # [N, T, 1] * [1, D] -> [N, T, D]
    D = x.shape[2]
    dw = ds.reshape(1, -1) @ x.reshape(-1, D)      # [1, N*T] @ [N*T, D] -> [1, D]
    db = ds.sum(axis=(0, 1))                       # [1]
    return dx, dw, db
