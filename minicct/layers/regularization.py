"""Dropout and drop-path (stochastic depth), both driven by an explicit generator.

Both are the identity in evaluation (train=False) or at rate 0; then the cache is None.
Shape legend: any shape; drop-path draws one number per sample (the first axis, N).

Random masks come from one named kernel, `keep_mask` (naive twin: `keep_mask_naive`): each element gets a
16-bit uniform integer u, four per raw 64-bit output of the generator's bit generator, and is kept when
u >= round(65536 p). So the drop rate actually used is p' = round(65536 p) / 65536 (|p' - p| <= 2^-17, e.g.
p = 0.1 -> p' = 0.1000061); the scale stays 1 / (1 - p) as in the equations below. This is ~8x cheaper than
drawing one float per element (`rng.random`), and because every element consumes exactly 16 bits of the
stream, a slice of a batch can draw exactly its own part of the batch's mask (minicct.parallel uses this so
that batch-parallel workers see the same masks as one worker).
"""
import numpy as np

_U16 = 65536


def _check_rate(p, name):
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name}: rate must be in [0, 1), got {p}")


def drop_threshold(p) -> int:
    """The 16-bit threshold of rate p: an element is dropped when its u < round(65536 p)."""
    return int(round(float(p) * _U16))


def uniform16(rng, n):
    """n uniform 16-bit integers (uint16 [n]) from rng's bit generator: raw 64-bit outputs, 4 values each.

    `rng` is a np.random.Generator or an object with a `uniform16(n)` method (minicct.parallel's shard
    stream, which hands out one slice of a batch's stream). Consumes ceil(n / 4) raw outputs.
    """
    if hasattr(rng, "uniform16"):
        return rng.uniform16(n)
    raw = rng.bit_generator.random_raw(-(-n // 4))                     # uint64 [ceil(n / 4)]
    return raw_to_uint16(raw)[:n]


def raw_to_uint16(raw):
    """uint64 [m] -> uint16 [4 m]: value j is bits 16 (j % 4) .. 16 (j % 4) + 15 of raw[j // 4]."""
    if np.little_endian:
        return raw.view(np.uint16)                                     # a view, no copy
    return raw_to_uint16_naive(raw)


def raw_to_uint16_naive(raw):
    """Naive twin of `raw_to_uint16`: explicit shifts (the definition; endian-independent)."""
    shifts = np.arange(4, dtype=np.uint64) * np.uint64(16)
    return ((raw[:, None] >> shifts) & np.uint64(0xFFFF)).astype(np.uint16).reshape(-1)


def keep_mask(rng, shape, p):
    """Boolean keep-mask of `shape`: True with probability 1 - p' (module docstring). Kernel of dropout and
    drop-path; elements in C order take consecutive 16-bit values of the stream."""
    n = int(np.prod(shape))
    return (uniform16(rng, n) >= drop_threshold(p)).reshape(shape)


def keep_mask_naive(rng, shape, p):
    """Naive twin of `keep_mask`: raw outputs one by one, 16-bit fields by shifting, compared in a loop."""
    n = int(np.prod(shape))
    thr = drop_threshold(p)
    out = np.empty(n, dtype=bool)
    raw = rng.bit_generator.random_raw(-(-n // 4))
    for j in range(n):
        u = (int(raw[j // 4]) >> (16 * (j % 4))) & 0xFFFF
        out[j] = u >= thr
    return out.reshape(shape)


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
