"""Exercise 04 - 2-D convolution by im2col: forward and backward.             (about 90 minutes)

conv2d as in torch.nn.Conv2d (and minicct/layers/conv.py): a cross-correlation (the kernel is NOT flipped)
with zero padding p and stride s:

    out[n, o, y, x] = b[o] + sum_{c, i, j} w[o, c, i, j] * xpad[n, c, s*y + i, s*x + j]
    H' = (H + 2p - k) // s + 1,   W' = (W + 2p - k) // s + 1

    x [N, C, H, W]   w [C_out, C, k, k]   b [C_out] or None   ->   out [N, C_out, H', W']

What to write
    conv2d_forward(x, w, b=None, stride=1, pad=0) -> (out, cache)
        out [N, C_out, H', W']; cache: anything your backward needs (the checker only hands it back).
    conv2d_backward(dout, cache) -> (dx, dw, db)
        dout [N, C_out, H', W'] -> dx [N, C, H, W], dw [C_out, C, k, k], db [C_out] (None when b was None)
    Return float64 arrays; do not modify the inputs.

The im2col idea: copy every k x k window of the padded input into one row of a matrix ("cols"); then the
whole convolution is ONE matrix product with the weights flattened to [C_out, C*k*k]. Build cols with a
loop over the k*k kernel offsets (i, j), never over pixels: for one offset, the entries of all windows
form one strided slice of the padded input,

    xpad[:, :, i : i + s*H' : s, j : j + s*W' : s]        [N, C, H', W']

Backward runs the same steps in reverse: dW and dcols from one matrix product each, db a sum, and
col2im (the loop over (i, j) again) sends each window's gradient back to the pixels it came from.

Hints (a teacher may delete this block for a harder version)
    - The order of the entries in a row of cols must match w.reshape(C_out, -1), i.e. (c, i, j), c slowest.
      A cols array of shape [N, C, k, k, H', W'] reshaped to [N, C*k*k, H'*W'] has exactly that order.
    - Windows overlap when s < k: one input pixel then sits in several windows, and its gradient is the
      SUM of what those windows send back (+=, not =).
    - dx has the shape of x, not of the padded input: crop the padding at the end.
    - Try k = 1 first (then cols is just x), then stride 1 without padding, then the rest.

Check your work:
    python -m minicct.exercises check 04          (or: python lessons/exercises/check.py 04)
"""
import numpy as np


def conv2d_forward(x, w, b=None, stride=1, pad=0):
    """x [N, C, H, W], w [C_out, C, k, k], b [C_out] or None -> (out [N, C_out, H', W'], cache)."""
    raise NotImplementedError("exercise 04: write conv2d_forward")


def conv2d_backward(dout, cache):
    """dout [N, C_out, H', W'] and your cache -> (dx [N, C, H, W], dw [C_out, C, k, k], db [C_out] or None)."""
    raise NotImplementedError("exercise 04: write conv2d_backward")
