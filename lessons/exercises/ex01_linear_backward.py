"""Exercise 01 - the backward pass of a linear layer.                         (about 30 minutes)

The forward pass (given below; the same as minicct/layers/linear.py and torch.nn.Linear):

    y = x W^T + b        x [..., in]   W [out, in]   b [out]   ->   y [..., out]

x may have any number of leading axes: [N, in] for a batch of vectors, [N, T, in] for N images of T
tokens each. Every row of x (every sample, every token) is multiplied by the same W.

What to write
    linear_backward(dout, cache) -> (dx, dw, db)
        dout   [..., out]   dL/dy, the gradient arriving from the layer above (same shape as y)
        cache  (x, w, has_bias), exactly what linear_forward returns
        dx     [..., in]    dL/dx, same shape as x
        dw     [out, in]    dL/dW, same shape as W
        db     [out]        dL/db, or None when has_bias is False
    Return float64 arrays (the checker feeds float64). Do not modify dout or the cache.

Hints (a teacher may delete this block for a harder version)
    - Write y for one row first: y_m[o] = sum_i x_m[i] W[o, i] + b[o]. Differentiate with respect to x_m[i],
      W[o, i] and b[o], then turn the sums into matrix products.
    - A gradient always has the shape of the thing it is the gradient of.
    - W is used by every row m, so its gradient is a SUM over all rows (all leading axes): reshape dout to
      [M, out] and x to [M, in], with M the product of the leading axes. A sum, not a mean: if the loss
      averages over the batch, that 1/N is already inside dout.

Check your work:
    python -m minicct.exercises check 01          (or: python lessons/exercises/check.py 01)
"""
import numpy as np


def linear_forward(x, w, b=None):
    """(given) y = x W^T + b. Returns y [..., out] and cache (x, w, has_bias)."""
    y = x @ w.T                                   # [..., in] @ [in, out] -> [..., out]
    if b is not None:
        y = y + b
    return y, (x, w, b is not None)


def linear_backward(dout, cache):
    """dout [..., out], cache (x [..., in], w [out, in], has_bias) -> (dx [..., in], dw [out, in], db [out] or None)."""
    x, w, has_bias = cache
    raise NotImplementedError("exercise 01: write linear_backward")
