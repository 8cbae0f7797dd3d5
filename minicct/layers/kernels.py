"""Speed kernels of the layers: each trick is one named function here, beside its naive twin, and tested
against it (tests/test_layers_kernels.py). The layers call them by name and otherwise read like their
equations (the split of llm.c between the clean reference and the fast versions).

    kernel                what it does fast                                        naive twin
    normal_cdf_float32    Phi(x) for GELU in float32 NumPy passes, cache-sized blocks    normal_cdf (scipy erf)
    gelu_slope_float32    GELU and its derivative from one cache-blocked pass            gelu_slope
    gelu_float32          GELU alone (evaluation: no slope), the same numbers as above   gelu
    row_dot               sum(a * b) over the last axis without the product array        row_dot_naive
    im2col / col2im       channels-last windows, one strided copy per kernel row/offset  im2col_naive / col2im_naive
    image_blocks          the batch in slices of a cache / GEMM byte budget              (a single block)
    window_max_argmax     max over the k*k window offsets with a uint8 arg-max map       window_max_argmax_naive
    window_max            the same max alone (evaluation: no arg-max map)                window_max_naive
    qkv_grad_views        dq, dk, dv written straight into the [N, T, 3, h, d] layout     stack_qkv_grads
    keep_mask             dropout / drop-path keep-masks from 16 bits of the raw stream   keep_mask_naive
    raw_to_uint16         raw 64-bit outputs as four 16-bit values each (a view)          raw_to_uint16_naive
Shape legend: N batch, C channels, H, W height/width, k kernel, T tokens, h heads, d head dim.
"""
import math

import numpy as np
from scipy.special import erf

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


# ------------------------------------------------------------------------------------- GELU: normal cdf
# erfc(z) = t exp(P(t) - z^2), t = 1 / (1 + z/2), z >= 0: Numerical Recipes' `erfcc` (Press et al., 2nd ed.,
# section 6.2), relative error < 1.2e-7 for every z. Coefficients of P, constant term first.
_ERFC_P = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587,
           -0.82215223, 0.17087277)
_BLOCK = 1 << 16  # elements per block of the float32 normal cdf: the block's temporaries stay in cache


def normal_cdf_float32(x):
    """Phi(x) = erfc(-x / sqrt2) / 2 for a float32 array (any shape), in float32.

    scipy's erf evaluates float32 input in float64, one element at a time (~20-30 ns per element); this is
    NumPy element-wise passes only, about 3x faster. q = Phi(-|x|) = erfc(|x|/sqrt2) / 2 comes straight from
    the erfc formula above (no cancellation in the left tail), then Phi(x) = q for x < 0 and 1 - q for x >= 0.
    Measured against float64: relative error of Phi below 7e-7 for |x| <= 2 and 1.5e-6 for |x| <= 3 (growing
    like x^2: float32 rounding of the exponent P(t) - z^2), absolute error below 3e-7 everywhere.
    The input is processed in blocks of _BLOCK elements so that the ~25 passes run in cache.
    """
    xf = np.ravel(x)                                          # a view when x is contiguous
    out = np.empty(xf.size, dtype=np.float32)
    z_buf, t_buf = np.empty(min(_BLOCK, xf.size), np.float32), np.empty(min(_BLOCK, xf.size), np.float32)
    for s in range(0, xf.size, _BLOCK):
        xb = xf[s:s + _BLOCK]
        _normal_cdf_block(xb, out[s:s + _BLOCK], z_buf[:xb.size], t_buf[:xb.size])
    return out.reshape(x.shape)


def _normal_cdf_block(xb, q, z, t):
    """One block of normal_cdf_float32: q <- Phi(xb) (float32 [n]); z, t [n] scratch. Leaves z = xb^2 / 2."""
    np.abs(xb, out=z)
    z *= _INV_SQRT2                                           # z = |x| / sqrt2
    np.multiply(z, 0.5, out=t)
    t += 1.0
    np.reciprocal(t, out=t)                                   # t = 1 / (1 + z/2)
    q.fill(_ERFC_P[-1])
    for c in _ERFC_P[-2::-1]:                                 # Horner: q = P(t)
        q *= t
        q += c
    z *= z                                                    # z = x^2 / 2
    q -= z
    np.exp(q, out=q)
    q *= t                                                    # erfc(z)
    q *= 0.5                                                  # q = Phi(-|x|)
    np.multiply(q, -2.0, out=t)
    t += 1.0
    t *= xb >= 0                                              # 1 - 2q where x >= 0, else 0
    q += t                                                    # Phi(x)


def gelu_slope_float32(x):
    """GELU and its derivative in one go, float32 (any shape): y = x Phi(x), slope = Phi(x) + x phi(x),
    phi(x) = exp(-x^2 / 2) / sqrt(2 pi).

    Phi as normal_cdf_float32, block by block; phi, y and the slope are made from the block while it is in
    cache, so the forward writes y and slope once and the backward is one product dout * slope (instead of
    writing Phi, reading it back for y, and six passes of exp(-x^2/2) arithmetic in the backward).
    """
    xf = np.ravel(x)
    y, slope = np.empty(xf.size, dtype=np.float32), np.empty(xf.size, dtype=np.float32)
    n = min(_BLOCK, xf.size)
    q_buf, z_buf, t_buf = np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.float32)
    for s in range(0, xf.size, _BLOCK):
        xb = xf[s:s + _BLOCK]
        q, z, t = q_buf[:xb.size], z_buf[:xb.size], t_buf[:xb.size]
        _normal_cdf_block(xb, q, z, t)                        # q = Phi(x), z = x^2 / 2
        np.multiply(xb, q, out=y[s:s + _BLOCK])               # y = x Phi(x)
        np.negative(z, out=z)
        np.exp(z, out=z)                                      # exp(-x^2 / 2)
        z *= xb
        z *= _INV_SQRT2PI                                     # x phi(x)
        np.add(q, z, out=slope[s:s + _BLOCK])                 # Phi(x) + x phi(x)
    return y.reshape(x.shape), slope.reshape(x.shape)


def gelu_float32(x):
    """GELU alone, float32 (any shape): y = x Phi(x), bit for bit the y of gelu_slope_float32 (the same Phi
    block, the same product) without the slope, which only the backward needs: about 40 % less work.
    """
    xf = np.ravel(x)
    y = np.empty(xf.size, dtype=np.float32)
    n = min(_BLOCK, xf.size)
    z_buf, t_buf = np.empty(n, np.float32), np.empty(n, np.float32)
    for s in range(0, xf.size, _BLOCK):
        xb, yb = xf[s:s + _BLOCK], y[s:s + _BLOCK]
        _normal_cdf_block(xb, yb, z_buf[:xb.size], t_buf[:xb.size])    # yb = Phi(x)
        yb *= xb                                                       # y = Phi(x) x  (= x Phi(x) exactly)
    return y.reshape(x.shape)


def gelu(x):
    """Naive twin of gelu_float32 (any float dtype, scipy's erf): x Phi(x), the y of gelu_slope."""
    return x * normal_cdf(x)


def gelu_slope(x):
    """Naive twin of gelu_slope_float32 (any float dtype, scipy's erf): (x Phi(x), Phi(x) + x phi(x))."""
    cdf = normal_cdf(x)
    return x * cdf, cdf + x * np.exp(-0.5 * x * x) * _INV_SQRT2PI


def normal_cdf(x):
    """Naive twin of normal_cdf_float32: Phi(x) = (1 + erf(x / sqrt2)) / 2 with scipy's erf, in x's dtype."""
    cdf = erf(x * _INV_SQRT2)
    cdf += 1.0
    cdf *= 0.5
    return cdf


# ------------------------------------------------------------------------------------- row sums of products
def row_dot(a, b, axis=-1):
    """sum(a * b, axis, keepdims=True) for a, b of the same shape [..., n] -> [..., 1].

    Over the last axis this is one einsum (multiply and add in one pass, no [..., n] product array written
    and read back: about 1.4x faster on attention's [N, h, T, T]); other axes use the naive twin.
    """
    if axis not in (-1, a.ndim - 1) or a.shape != b.shape:
        return row_dot_naive(a, b, axis)
    return np.einsum("...i,...i->...", a, b)[..., None]


def row_dot_naive(a, b, axis=-1):
    """Naive twin of row_dot: the product array, then its sum."""
    return (a * b).sum(axis=axis, keepdims=True)


# ------------------------------------------------------------------------------------- conv: im2col, blocks
# Work on blocks of images where a whole-batch temporary would be large. Max-pool: blocks that fit in a core's
# L2 cache (about 1 MB), so its k*k passes run in cache instead of streaming the batch through memory k*k
# times (~1.5-2x faster). Convolution: blocks of about 8 MB of columns (few, large matrix products).
_BLOCK_BYTES = 1 << 20
_GEMM_BLOCK_BYTES = 8 << 20


def image_blocks(N, bytes_per_image, budget=_BLOCK_BYTES):
    """Slices of the batch axis, each a few images holding about `budget` bytes."""
    nb = max(1, budget // max(1, bytes_per_image))
    return [slice(s, s + nb) for s in range(0, max(N, 1), nb)]           # one empty block when N = 0


def im2col(x_nhwc, k, stride, pad):
    """[N, H, W, C] -> cols [N, H', W', k, k, C], one strided copy per kernel row i.

    In channels-last memory the k offsets j of one window row are k*C consecutive numbers (for any stride), so
    a read-only strided view of the padded input, windows [N, H', W', k, k*C], is copied with runs of k*C
    contiguous values (2-5x faster than one copy per offset (i, j), whose runs are only C long: 3 values in
    the first convolution).
    """
    N, H, W, C = x_nhwc.shape
    Ho, Wo = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    if pad:
        xp = np.zeros((N, H + 2 * pad, W + 2 * pad, C), dtype=x_nhwc.dtype)
        xp[:, pad:pad + H, pad:pad + W] = x_nhwc
    else:
        xp = np.ascontiguousarray(x_nhwc)
    sC = xp.itemsize                                   # C-contiguous strides from the shape (a size-1 axis
    sW, sH, sN = C * sC, (W + 2 * pad) * C * sC, (H + 2 * pad) * (W + 2 * pad) * C * sC   # may report any stride)
    windows = np.lib.stride_tricks.as_strided(xp, (N, Ho, Wo, k, k * C), (sN, sH * stride, sW * stride, sH, sC),
                                              writeable=False)                    # [N, H', W', k (i), k*C (j, c)]
    cols = np.empty((N, Ho, Wo, k, k, C), dtype=x_nhwc.dtype)
    cols.reshape(N, Ho, Wo, k, k * C)[...] = windows
    return cols


def col2im(dcols, x_shape_nhwc, stride, pad):
    """Adjoint of im2col: dcols [N, H', W', k, k, C] -> dx [N, H, W, C], summing overlapping windows."""
    N, H, W, C = x_shape_nhwc
    _, Ho, Wo, k, _, _ = dcols.shape
    dxp = np.zeros((N, H + 2 * pad, W + 2 * pad, C), dtype=dcols.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, i:i + stride * Ho:stride, j:j + stride * Wo:stride] += dcols[:, :, :, i, j]
    return dxp[:, pad:pad + H, pad:pad + W]


def im2col_naive(x_nhwc, k, stride, pad):
    """Naive twin of im2col: one window per output position (y, x), copied whole."""
    N, H, W, C = x_nhwc.shape
    Ho, Wo = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    xp = np.pad(x_nhwc, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    cols = np.empty((N, Ho, Wo, k, k, C), dtype=x_nhwc.dtype)
    for y in range(Ho):
        for x in range(Wo):
            cols[:, y, x] = xp[:, y * stride:y * stride + k, x * stride:x * stride + k]
    return cols


def col2im_naive(dcols, x_shape_nhwc, stride, pad):
    """Naive twin of col2im: each output position's window gradient added back, one position at a time."""
    N, H, W, C = x_shape_nhwc
    _, Ho, Wo, k, _, _ = dcols.shape
    dxp = np.zeros((N, H + 2 * pad, W + 2 * pad, C), dtype=dcols.dtype)
    for y in range(Ho):
        for x in range(Wo):
            dxp[:, y * stride:y * stride + k, x * stride:x * stride + k] += dcols[:, y, x]
    return dxp[:, pad:pad + H, pad:pad + W]


# ------------------------------------------------------------------------------------- max-pool: arg-max
def window_max_argmax(xp, k, stride, out, arg):
    """Max over every k x k window of a -inf padded block xp [n, Hp, Wp, C], and the winner's offset.

    Writes out [n, H', W', C] (the max) and arg [n, H', W', C] uint8 (offset o = i*k + j of the first maximum
    in row-major order, as PyTorch). One pass per kernel offset keeps the running max; the arg-max is updated
    without a masked copy (~10x slower in NumPy): arg = max(arg, better * o) is where(better, o, arg) because
    every earlier winner has an offset < o.
    """
    Ho, Wo = out.shape[1:3]
    out[...] = xp[:, 0:stride * Ho:stride, 0:stride * Wo:stride]      # offset (0, 0)
    arg.fill(0)
    for o in range(1, k * k):
        i, j = divmod(o, k)
        window = xp[:, i:i + stride * Ho:stride, j:j + stride * Wo:stride]
        better = np.greater(window, out)                                 # strict: the first maximum stays
        np.maximum(out, window, out=out)
        np.maximum(arg, better.view(np.uint8) * np.uint8(o), out=arg)


def window_max(xp, k, stride, out):
    """Max over every k x k window of a -inf padded block xp [n, Hp, Wp, C] into out [n, H', W', C]: the out of
    window_max_argmax without the arg-max map (evaluation needs no backward): one np.maximum per offset.
    """
    Ho, Wo = out.shape[1:3]
    out[...] = xp[:, 0:stride * Ho:stride, 0:stride * Wo:stride]      # offset (0, 0)
    for o in range(1, k * k):
        i, j = divmod(o, k)
        np.maximum(out, xp[:, i:i + stride * Ho:stride, j:j + stride * Wo:stride], out=out)


def window_max_naive(xp, k, stride, out):
    """Naive twin of window_max: all k*k offsets stacked, then their max."""
    Ho, Wo = out.shape[1:3]
    out[...] = np.stack([xp[:, i:i + stride * Ho:stride, j:j + stride * Wo:stride]
                         for i in range(k) for j in range(k)]).max(axis=0)


def window_max_argmax_naive(xp, k, stride, out, arg):
    """Naive twin of window_max_argmax: all k*k offsets stacked, then max and argmax (first maximum)."""
    Ho, Wo = out.shape[1:3]
    stack = np.stack([xp[:, i:i + stride * Ho:stride, j:j + stride * Wo:stride]
                      for i in range(k) for j in range(k)])               # [k*k, n, H', W', C]
    out[...] = stack.max(axis=0)
    arg[...] = stack.argmax(axis=0)


# ------------------------------------------------------------------------------------- attention: layouts
def qkv_grad_views(N, T, h, d, dtype):
    """One buffer dqkv [N, T, 3, h, d] (the layout of the forward's qkv) and its views dq, dk, dv [N, h, T, d].

    Attention's backward writes the gradients of q, k, v into the views (np.matmul(..., out=dq)), so the
    [N, T, 3D] gradient of the qkv projection exists without transposed copies.
    """
    dqkv = np.empty((N, T, 3, h, d), dtype=dtype)
    dq, dk, dv = dqkv.transpose(2, 0, 3, 1, 4)                           # each [N, h, T, d]
    return dqkv, dq, dk, dv


def stack_qkv_grads(dq, dk, dv):
    """Naive twin of qkv_grad_views: separate [N, h, T, d] gradients stacked and transposed -> [N, T, 3, h, d]."""
    return np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4)


# ------------------------------------------------------------------------------------- dropout masks
# Each element of a dropout / drop-path mask gets a 16-bit uniform integer u, four per raw 64-bit output of the
# generator's bit generator, and is kept when u >= round(65536 p). ~8x cheaper than one float per element
# (rng.random); and because every element consumes exactly 16 bits of the stream, a slice of a batch can draw
# exactly its own part of the batch's mask (minicct.parallel.ShardStream: batch-parallel workers see the same
# masks as one worker).
_U16 = 65536


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
