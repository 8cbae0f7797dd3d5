"""Exercise 03 - softmax backward, then the backward pass of multi-head self-attention.   (60-90 minutes)

What to write: softmax_backward (part A), then attention_backward (part B). attention_forward is given.

Part A. softmax along one axis: y = softmax(x), y_i = exp(x_i) / sum_j exp(x_j).

    softmax_backward(y, dy, axis=-1) -> dx
        y   any shape   the softmax OUTPUT (the forward keeps it; x is not needed)
        dy  same shape  dL/dy
        dx  same shape  dL/dx
    Its Jacobian dy_i/dx_j = y_i (delta_ij - y_j) is a full T x T matrix per row: never build it.
    Apply it to dy directly, in O(T) per row. `axis` is the softmax axis (-1 in attention, the token
    axis 1 in the CCT's sequence pooling).

Part B. Multi-head self-attention without its output projection, exactly the CCT attention
(minicct/layers/attention.py, from timm) with proj = identity. attention_forward is GIVEN below:

    qkv = x Wqkv^T                     x [N, T, D], Wqkv [3D, D], no bias -> [N, T, 3D]
    q, k, v                            rows [0:D) of Wqkv make q, [D:2D) k, [2D:3D) v; head j owns the
                                       slice [j*d, (j+1)*d) of each (d = D / h)   -> each [N, h, T, d]
    S = q k^T / sqrt(d)                [N, h, T, T]   (query t, key u)
    P = softmax(S) over the keys       [N, h, T, T]   (the last axis)
    O = P v                            [N, h, T, d]
    heads = O with the heads put side by side again   [N, T, D]

    attention_backward(dout, cache) -> (dx, dw_qkv)
        dout    [N, T, D]    dL/dheads
        cache   what attention_forward returns (read it below)
        dx      [N, T, D]    dL/dx
        dw_qkv  [3D, D]      dL/dWqkv
    Use your softmax_backward from part A. Return float64 arrays; do not modify the inputs.

Hints (a teacher may delete this block for a harder version)
    - Part A: write dx_j = sum_i dy_i dy_i/dx_j, insert the Jacobian, and you get y times (dy minus one
      number per row). Which number? The sums run along `axis`; keepdims=True makes them broadcast.
    - Part B: go through the forward from the last line to the first; every line gives one line of the
      backward. Undo the reshapes/transposes in reverse order.
    - For C = A B (batched matmul on the last two axes): dA = dC B^T and dB = A^T dC. The transposes swap
      the LAST TWO axes only (np.swapaxes(a, -1, -2)).
    - Do not forget the 1/sqrt(d) on the way back.
    - The checker names the first wrong row of dw_qkv as q, k or v of a head: that tells you where to look.

Check your work:
    python -m minicct.exercises check 03          (or: python lessons/exercises/check.py 03)
"""
import numpy as np


def softmax_backward(y, dy, axis=-1):
    """y = softmax(x, axis) and dL/dy (same shape) -> dL/dx (same shape)."""
    raise NotImplementedError("exercise 03 part A: write softmax_backward")


def attention_forward(x, w_qkv, num_heads):
    """(given) heads = multi-head self-attention of x without the output projection.

    x [N, T, D], w_qkv [3D, D], num_heads h (must divide D). Returns heads [N, T, D] and the cache.
    """
    N, T, D = x.shape
    h = num_heads
    d = D // h
    qkv = x @ w_qkv.T                                             # [N, T, D] @ [D, 3D] -> [N, T, 3D]
    qkv = qkv.reshape(N, T, 3, h, d).transpose(2, 0, 3, 1, 4)     # -> [3, N, h, T, d]
    q, k, v = qkv[0], qkv[1], qkv[2]                              # each [N, h, T, d]
    S = q @ k.transpose(0, 1, 3, 2) * d ** -0.5                   # [N, h, T, d] @ [N, h, d, T] -> [N, h, T, T]
    S = S - S.max(axis=-1, keepdims=True)                         # softmax over the keys, shifted for stability
    P = np.exp(S)
    P /= P.sum(axis=-1, keepdims=True)                            # [N, h, T, T]
    O = P @ v                                                     # [N, h, T, T] @ [N, h, T, d] -> [N, h, T, d]
    heads = O.transpose(0, 2, 1, 3).reshape(N, T, D)              # [N, h, T, d] -> [N, T, h, d] -> [N, T, D]
    cache = (x, w_qkv, q, k, v, P, h)
    return heads, cache


def attention_backward(dout, cache):
    """dout [N, T, D] (dL/dheads), cache from attention_forward -> (dx [N, T, D], dw_qkv [3D, D])."""
    x, w_qkv, q, k, v, P, h = cache
    raise NotImplementedError("exercise 03 part B: write attention_backward")
