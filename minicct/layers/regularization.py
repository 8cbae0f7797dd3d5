"""Dropout and drop-path (stochastic depth), both driven by an explicit generator.

Both are the identity in evaluation (train=False) or at rate 0; then the cache is None.
Shape legend: any shape; drop-path draws one number per sample (the first axis, N).
"""
import numpy as np


def _check_rate(p, name):
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name}: rate must be in [0, 1), got {p}")


def dropout_forward(x, p, rng=None, train=True):
    """Inverted dropout: y = x * m / (1 - p), m ~ Bernoulli(1 - p) per element.

    Inputs: x any shape, p rate, rng a np.random.Generator (required when it acts).
    Returns: y (same shape), cache (mask, scale) or None when inactive.
    """
    _check_rate(p, "dropout")
    if not train or p == 0.0:
        return x, None
    if rng is None:
        raise ValueError("dropout: pass rng=np.random.default_rng(seed) when training with p > 0")
    mask = rng.random(x.shape, dtype=np.float32) >= p
    scale = 1.0 / (1.0 - p)
    y = x * mask
    y *= scale                                          # in place: one temporary, not two
    return y, (mask, scale)


def dropout_backward(dout, cache):
    """dx = dout * m / (1 - p)."""
    if cache is None:
        return dout
    mask, scale = cache
    dx = dout * mask
    dx *= scale
    return dx


def drop_path_forward(x, p, rng=None, train=True):
    """Stochastic depth per sample, as the reference (src/utils/stochastic_depth.py):
    keep = 1 - p, m = floor(keep + U[0, 1)) of shape [N, 1, ...], y = x / keep * m.

    Inputs: x [N, ...]. Returns y [N, ...], cache (m, keep) or None when inactive.
    """
    _check_rate(p, "drop_path")
    if not train or p == 0.0:
        return x, None
    if rng is None:
        raise ValueError("drop_path: pass rng=np.random.default_rng(seed) when training with p > 0")
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    m = np.floor(keep + rng.random(shape)).astype(x.dtype)  # [N, 1, ...] of 0/1
    return x * (m / keep), (m, keep)


def drop_path_backward(dout, cache):
    """dx = dout * m / keep."""
    if cache is None:
        return dout
    m, keep = cache
    return dout * (m / keep)
