"""Linear layer, y = x W^T + b, as torch.nn.Linear: W has shape (out, in).

Shape legend: any leading dims [..., in] -> [..., out].
"""
import numpy as np


def _check(x, w, b):
    if x.ndim < 1:
        raise ValueError(f"linear: expected input [..., in] with at least 1 axis, got shape {x.shape}")
    if w.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out, in), got shape {w.shape}")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features (shape {x.shape}) but weight expects "
                         f"{w.shape[1]} (weight shape {w.shape}); the last input axis must equal weight.shape[1]")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"linear: bias must have shape ({w.shape[0]},), got {b.shape}")


def linear_forward(x, w, b=None):
    """y = x W^T + b.

    Inputs: x [..., in], w [out, in], b [out] or None.
    Returns: y [..., out], cache (x, w, has_bias).
    """
    _check(x, w, b)
    # [N, T, in] @ [in, out]: NumPy runs one product per sample, so a sample's output does not depend on the
    # other samples of its batch (captures are bit for bit those of any batching). One flattened [N T, in]
    # product would be ~5-15 % faster but rounds a row differently depending on its place in the batch.
    y = x @ w.T                                     # [..., in] @ [in, out] -> [..., out]
    if b is not None:
        y += b
    return y, (x, w, b is not None)


def linear_backward(dout, cache):
    """Returns (dx [..., in], dw [out, in], db [out] or None).

    dx = dout W ; dW = sum over leading dims of dout^T x ; db = sum of dout over leading dims.
    """
    x, w, has_bias = cache
    d_out, d_in = w.shape
    dout2 = dout.reshape(-1, d_out)                 # [..., out] -> [M, out]
    dw = dout2.T @ x.reshape(-1, d_in)              # [out, M] @ [M, in] -> [out, in]
    db = dout2.sum(axis=0) if has_bias else None    # [out]
    dx = (dout2 @ w).reshape(*dout.shape[:-1], d_in)  # [M, out] @ [out, in] -> [..., in]
    return dx, dw, db
