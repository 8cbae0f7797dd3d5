"""Dropout and drop-path (stochastic depth), both driven by an explicit generator.

Both are the identity in evaluation (train=False) or at rate 0; then the cache is None.
Shape legend: any shape; drop-path draws one number per sample (the first axis, N).

The random keep-masks m come from one named kernel, layers/kernels.keep_mask (naive twin keep_mask_naive): 16 bits
of the generator's stream per element, kept when u >= round(65536 p), so the drop rate actually used is
p' = round(65536 p) / 65536 (|p' - p| <= 2^-17, e.g. p = 0.1 -> p' = 0.1000061); the scale stays 1 / (1 - p) as
in the equations below.
"""
import numpy as np

from .kernels import keep_mask


def dropout_forward(x, p, rng=None, train=True):
    """Inverted dropout: y = x * m / (1 - p), m ~ Bernoulli(1 - p') per element (`keep_mask`).

    Inputs: x any shape, p rate, rng a np.random.Generator (required when it acts).
    Returns: y (same shape, a new array), cache (mask bool, scale) or None when inactive.
    """
    _check_rate(p, "dropout")
    if not train or p == 0.0:
        return x, None
    if rng is None:
        raise ValueError("dropout: pass rng=np.random.default_rng(seed) when training with p > 0")
    mask = keep_mask(rng, x.shape, p)
    scale = 1.0 / (1.0 - p)
    y = np.multiply(x, mask)
    y *= y.dtype.type(scale)                            # in place: one temporary, not two
    return y, (mask, scale)


def dropout_backward(dout, cache, out=None):
    """dx = dout * m / (1 - p). out: optional array to write into (out=dout when the caller owns dout)."""
    if cache is None:
        return dout
    mask, scale = cache
    dx = np.multiply(dout, mask, out=out)
    dx *= dx.dtype.type(scale)
    return dx


def drop_path_forward(x, p, rng=None, train=True, out=None):
    """Stochastic depth per sample, as the reference (src/utils/stochastic_depth.py):
    keep = 1 - p, m ~ Bernoulli(1 - p') of shape [N, 1, ...] (the reference: floor(keep + U[0, 1))),
    y = x / keep * m.

    Inputs: x [N, ...]; out: optional array to write into (out=x when the caller owns x).
    Returns y [N, ...], cache (m [N, 1, ...] of 0/1 in x's dtype, keep) or None when inactive.
    """
    _check_rate(p, "drop_path")
    if not train or p == 0.0:
        return x, None
    if rng is None:
        raise ValueError("drop_path: pass rng=np.random.default_rng(seed) when training with p > 0")
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    m = keep_mask(rng, shape, p).astype(x.dtype)            # [N, 1, ...] of 0/1
    return np.multiply(x, m / keep, out=out), (m, keep)


def drop_path_backward(dout, cache):
    """dx = dout * m / keep."""
    if cache is None:
        return dout
    m, keep = cache
    return dout * (m / keep)


def _check_rate(p, name):
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name}: rate must be in [0, 1), got {p}")
