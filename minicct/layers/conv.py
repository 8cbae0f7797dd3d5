"""2-D convolution and max-pooling, as torch.nn.Conv2d / MaxPool2d (dilation 1, ceil_mode False).

conv2d is a cross-correlation with weights (C_out, C_in, k, k), stride s, zero padding p:
    out[n, o, y, x] = b[o] + sum_{c, i, j} w[o, c, i, j] * xpad[n, c, s*y + i, s*x + j]
    H' = floor((H + 2p - k) / s) + 1
max-pool takes the max over each k x k window with implicit -inf padding (PyTorch semantics; ties go to
the first window element in row-major order, as PyTorch).

Fast versions build the columns with the kernel im2col (layers/kernels.py: one strided copy per kernel offset,
a block of images at a time) and let one matrix multiply per block do the work; col2im is its adjoint. They work
channels-last ([N, H, W, C]): that is the token layout the CCT needs after flattening, so the returned
NCHW arrays are views of channels-last memory and the tokenizer never copies to transpose.
The naive twins loop over every output element; they exist for tests and for reading.

Shape legend: N batch, C channels, H, W height/width, k kernel, s stride, p padding.
"""
import numpy as np

from .kernels import _BLOCK_BYTES, _GEMM_BLOCK_BYTES, col2im, im2col, image_blocks, window_max, window_max_argmax


def _out_size(size, k, s, p, what):
    out = (size + 2 * p - k) // s + 1
    if k > size + 2 * p or out < 1:
        raise ValueError(f"{what}: kernel {k} is larger than the padded input ({size} + 2*{p} = {size + 2 * p}); "
                         f"use a larger input or more padding")
    return out


def _check_input(x, what):
    if x.ndim != 4:
        raise ValueError(f"{what}: expected input [N, C, H, W] (4-D), got shape {x.shape}")


def _check_conv(x, w, b, stride, pad):
    _check_input(x, "conv2d")
    if w.ndim != 4 or w.shape[2] != w.shape[3] or w.shape[2] < 1:
        raise ValueError(f"conv2d: weight must be (C_out, C_in, k, k) with k >= 1, got shape {w.shape}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels (shape {x.shape}) but the weight expects "
                         f"C_in={w.shape[1]} (weight shape {w.shape})")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"conv2d: bias must have shape ({w.shape[0]},), got {b.shape}")
    if stride < 1 or pad < 0:
        raise ValueError(f"conv2d: stride must be >= 1 and padding >= 0, got stride={stride}, padding={pad}")


def conv2d_forward(x, w, b=None, stride=1, pad=0):
    """Inputs: x [N, C_in, H, W], w [C_out, C_in, k, k], b [C_out] or None.

    Returns: out [N, C_out, H', W'] (a view of channels-last memory), cache.
    The columns (k*k times the input's size) are built and multiplied a block of images at a time, so the
    whole batch's column matrix never exists; backward rebuilds a block's columns from the cached input.
    """
    _check_conv(x, w, b, stride, pad)
    N, C_in, H, W = x.shape
    C_out, _, k, _ = w.shape
    Ho, Wo = _out_size(H, k, stride, pad, "conv2d"), _out_size(W, k, stride, pad, "conv2d")
    xn = x.transpose(0, 2, 3, 1)                                     # [N, H, W, C_in] view
    w_mat = w.transpose(0, 2, 3, 1).reshape(C_out, k * k * C_in)     # [C_out, k*k*C_in], same (i, j, c) order
    out = np.empty((N, Ho, Wo, C_out), dtype=np.result_type(x, w))
    for blk in image_blocks(N, Ho * Wo * k * k * C_in * x.itemsize, _GEMM_BLOCK_BYTES):
        cols = im2col(xn[blk], k, stride, pad)                       # [n, H', W', k, k, C_in]
        # [m, k*k*C_in] @ [k*k*C_in, C_out] -> [m, C_out], written into the block's rows of out
        np.matmul(cols.reshape(-1, k * k * C_in), w_mat.T, out=out[blk].reshape(-1, C_out))
    if b is not None:
        out += b
    out = out.transpose(0, 3, 1, 2)                                  # [N, H', W', C_out] -> [N, C_out, H', W'] view
    return out, (xn, w_mat, w.shape, stride, pad, b is not None)


def conv2d_backward(dout, cache, need_dx=True):
    """Returns (dx [N, C_in, H, W] or None, dw [C_out, C_in, k, k], db [C_out] or None).

    dW = sum over blocks of dout_mat^T cols ; db = sum dout ; dcols = dout_mat W ; dx = col2im(dcols).
    Block by block as the forward: the block's columns are rebuilt from the input (one more im2col instead of
    keeping k*k copies of every input in the cache) and its dcols folded back at once.
    need_dx=False skips dx (the first layer's input is the image, which needs no gradient).
    """
    xn, w_mat, w_shape, stride, pad, has_bias = cache
    C_out, C_in, k, _ = w_shape
    N, H, W, _ = xn.shape
    Ho, Wo = dout.shape[2:]
    dout_mat = dout.transpose(0, 2, 3, 1).reshape(N * Ho * Wo, C_out)  # [N, C_out, H', W'] -> [M, C_out]
    dw = np.zeros((C_out, k * k * C_in), dtype=np.result_type(dout, xn))
    dx = np.empty((N, H, W, C_in), dtype=dout.dtype) if need_dx else None
    for blk in image_blocks(N, Ho * Wo * k * k * C_in * xn.itemsize, _GEMM_BLOCK_BYTES):
        rows = dout_mat[blk.start * Ho * Wo:blk.stop * Ho * Wo]          # the block's rows of [M, C_out]
        cols = im2col(xn[blk], k, stride, pad)                          # [n, H', W', k, k, C_in]
        dw += rows.T @ cols.reshape(len(rows), -1)                       # [C_out, m] @ [m, k*k*C_in]
        if need_dx:
            dcols = (rows @ w_mat).reshape(cols.shape)                   # [m, C_out] @ [C_out, k*k*C_in]
            dx[blk] = col2im(dcols, (len(dcols), H, W, C_in), stride, pad)
    dw = dw.reshape(C_out, k, k, C_in).transpose(0, 3, 1, 2)             # -> [C_out, C_in, k, k]
    db = dout_mat.sum(axis=0) if has_bias else None
    if need_dx:
        dx = dx.transpose(0, 3, 1, 2)                                    # [N, C_in, H, W] view
    return dx, np.ascontiguousarray(dw), db


def conv2d_forward_naive(x, w, b=None, stride=1, pad=0):
    """The definition, one output element at a time. Same API as conv2d_forward. For tests and reading."""
    _check_conv(x, w, b, stride, pad)
    N, C_in, H, W = x.shape
    C_out, _, k, _ = w.shape
    Ho, Wo = _out_size(H, k, stride, pad, "conv2d"), _out_size(W, k, stride, pad, "conv2d")
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((N, C_out, Ho, Wo), dtype=x.dtype)
    for n in range(N):
        for o in range(C_out):
            for y in range(Ho):
                for xx in range(Wo):
                    window = xp[n, :, y * stride:y * stride + k, xx * stride:xx * stride + k]
                    out[n, o, y, xx] = np.sum(window * w[o]) + (b[o] if b is not None else 0)
    return out, (x, w, b, stride, pad)


def conv2d_backward_naive(dout, cache):
    """Loops over every output element and scatters its gradient into dx and dw."""
    x, w, b, stride, pad = cache
    N, C_in, H, W = x.shape
    C_out, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for n in range(N):
        for o in range(C_out):
            for y in range(dout.shape[2]):
                for xx in range(dout.shape[3]):
                    g = dout[n, o, y, xx]
                    ys, xs = y * stride, xx * stride
                    dxp[n, :, ys:ys + k, xs:xs + k] += g * w[o]
                    dw[o] += g * xp[n, :, ys:ys + k, xs:xs + k]
    db = dout.sum(axis=(0, 2, 3)) if b is not None else None
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, db


# ----------------------------------------------------------------------------------------------- max-pool

def _check_pool(x, k, stride, pad):
    _check_input(x, "maxpool2d")
    if not 1 <= k <= 16:
        raise ValueError(f"maxpool2d: kernel_size must be in 1..16 (the winner's offset is kept as uint8), got {k}")
    if pad < 0:
        raise ValueError(f"maxpool2d: padding must be >= 0, got {pad}")
    if pad > k // 2:
        raise ValueError(f"maxpool2d: padding must be at most kernel_size // 2 (PyTorch rule), got k={k}, p={pad}")
    if stride < 1:
        raise ValueError(f"maxpool2d: stride must be >= 1, got {stride}")


def maxpool2d_forward(x, k=3, stride=2, pad=1, need_grad=True):
    """Inputs: x [N, C, H, W]. Returns out [N, C, H', W'] (view of channels-last memory), cache.

    Per block of images (cache-sized): pad with -inf, then the kernel window_max_argmax (the max and the offset
    of the first maximum, as PyTorch). The cache is that uint8 offset map, not the input.
    need_grad=False (no backward follows, e.g. model.predict): the max alone (kernel window_max, the same
    numbers), no offset map; the cache is None.
    """
    _check_pool(x, k, stride, pad)
    N, C, H, W = x.shape
    Ho, Wo = _out_size(H, k, stride, pad, "maxpool2d"), _out_size(W, k, stride, pad, "maxpool2d")
    xn = x.transpose(0, 2, 3, 1)                                      # [N, H, W, C] view
    out = np.empty((N, Ho, Wo, C), dtype=x.dtype)
    arg = np.empty((N, Ho, Wo, C), dtype=np.uint8) if need_grad else None
    blocks = image_blocks(N, ((H + 2 * pad) * (W + 2 * pad) + 2 * Ho * Wo) * C * x.itemsize)
    xp = np.full((blocks[0].stop - blocks[0].start, H + 2 * pad, W + 2 * pad, C), -np.inf, dtype=x.dtype)
    for b in blocks:
        xb, ob = xn[b], out[b]
        xpb = xp[:len(xb)]
        xpb[:, pad:pad + H, pad:pad + W] = xb                         # -inf border stays from np.full
        if need_grad:
            window_max_argmax(xpb, k, stride, ob, arg[b])              # out = max over the window, arg = winner
        else:
            window_max(xpb, k, stride, ob)                             # out = max over the window
    return out.transpose(0, 3, 1, 2), (arg, x.shape, k, stride, pad) if need_grad else None


def maxpool2d_backward(dout, cache):
    """Routes each output gradient to the input element that won the max: dx [N, C, H, W] (a view of
    channels-last memory, like the forward's output)."""
    if cache is None:
        raise ValueError("maxpool2d_backward: the forward ran with need_grad=False and kept no arg-max map; "
                         "run maxpool2d_forward(x, ...) (need_grad=True) before a backward")
    arg, x_shape, k, stride, pad = cache
    N, C, H, W = x_shape
    _, Ho, Wo, _ = arg.shape
    dn = dout.transpose(0, 2, 3, 1)                                   # [N, H', W', C]
    dx = np.empty((N, H, W, C), dtype=dout.dtype)
    blocks = image_blocks(N, ((H + 2 * pad) * (W + 2 * pad) + 2 * Ho * Wo) * C * dout.itemsize)
    dxp = np.empty((blocks[0].stop - blocks[0].start, H + 2 * pad, W + 2 * pad, C), dtype=dout.dtype)
    for b in blocks:
        db, ab = dn[b], arg[b]
        dxpb = dxp[:len(db)]
        dxpb.fill(0)
        for o in range(k * k):
            i, j = divmod(o, k)
            dxpb[:, i:i + stride * Ho:stride, j:j + stride * Wo:stride] += db * (ab == o)
        dx[b] = dxpb[:, pad:pad + H, pad:pad + W]                     # drop the padding
    return dx.transpose(0, 3, 1, 2)


def maxpool2d_forward_naive(x, k=3, stride=2, pad=1):
    """The definition, one output element at a time (implicit -inf padding). Same API as the fast one."""
    _check_pool(x, k, stride, pad)
    N, C, H, W = x.shape
    Ho, Wo = _out_size(H, k, stride, pad, "maxpool2d"), _out_size(W, k, stride, pad, "maxpool2d")
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    out = np.zeros((N, C, Ho, Wo), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for y in range(Ho):
                for xx in range(Wo):
                    out[n, c, y, xx] = xp[n, c, y * stride:y * stride + k, xx * stride:xx * stride + k].max()
    return out, (xp, x.shape, k, stride, pad)


def maxpool2d_backward_naive(dout, cache):
    """Gives each output's gradient to the first maximal element of its window."""
    xp, x_shape, k, stride, pad = cache
    N, C, H, W = x_shape
    dxp = np.zeros(xp.shape, dtype=dout.dtype)
    for n in range(N):
        for c in range(C):
            for y in range(dout.shape[2]):
                for xx in range(dout.shape[3]):
                    win = xp[n, c, y * stride:y * stride + k, xx * stride:xx * stride + k]
                    i, j = np.unravel_index(np.argmax(win), win.shape)
                    dxp[n, c, y * stride + i, xx * stride + j] += dout[n, c, y, xx]
    return dxp[:, :, pad:pad + H, pad:pad + W]
