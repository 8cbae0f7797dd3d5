"""ReLU, GELU (exact erf form) and softmax, with the one softmax backward used everywhere.

Shape legend: N batch, T tokens, D embedding, h heads, F hidden; element-wise layers take any shape.
"""
import numpy as np

from .kernels import gelu, gelu_float32, gelu_slope, gelu_slope_float32, row_dot


def relu_forward(x):
    """y = max(x, 0). Any shape. Cache: the boolean mask x > 0 (1 byte per element)."""
    mask = x > 0
    return x * mask, mask


def relu_backward(dout, cache):
    """dx = dout * [x > 0]. (The kink at 0 gets gradient 0, as in PyTorch.)"""
    return dout * cache


def gelu_forward(x, need_grad=True):
    """GELU, exact form used by torch.nn.functional.gelu: y = x * Phi(x), Phi(x) = (1 + erf(x/sqrt2)) / 2.

    Any shape. The local slope dy/dx = Phi(x) + x phi(x) is computed here with y, phi(x) = exp(-x^2/2) / sqrt(2 pi),
    and cached (one array, instead of x and Phi(x)): the backward is then one product. float32 input uses the
    kernel `gelu_slope_float32` (speed), other dtypes `gelu_slope`, its naive twin on scipy's erf (float64
    gradient checks stay exact).
    need_grad=False (a forward that no backward follows, e.g. model.predict): y alone, the same numbers bit for
    bit (kernel `gelu_float32`, naive twin `gelu`), and the cache is None.
    """
    if not need_grad:
        return (gelu_float32(x) if x.dtype == np.float32 else gelu(x)), None
    y, slope = gelu_slope_float32(x) if x.dtype == np.float32 else gelu_slope(x)
    return y, slope


def gelu_backward(dout, cache):
    """dx = dout * dy/dx, dy/dx = Phi(x) + x phi(x) (cached by the forward)."""
    if cache is None:
        raise ValueError("gelu_backward: the forward ran with need_grad=False and kept no slope; "
                         "run gelu_forward(x) (need_grad=True) before a backward")
    return dout * cache


def softmax(x, axis=-1, out=None):
    """softmax along `axis`, shifted by the max for stability. Any shape; same shape out.

    out: optional array to write into; out=x computes in place (no second [.., T, T] array in attention).
    """
    e = np.subtract(x, x.max(axis=axis, keepdims=True), out=out)
    np.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def log_softmax(x, axis=-1):
    """log softmax along `axis`: x - max - log(sum exp(x - max))."""
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def softmax_backward(y, dy, axis=-1, out=None):
    """Vector-Jacobian product of y = softmax(x) along `axis`.

    dx = y * (dy - sum(dy * y, axis))   (the Jacobian diag(y) - y y^T applied to dy, in O(T), never built).
    Used by attention (axis -1), sequence pooling (token axis) and the loss.
    out: optional array to write into; out=dy when the caller owns dy (attention: no second [.., T, T] array).
    """
    s = row_dot(dy, y, axis)                        # sum(dy * y, axis), kept as [..., 1]
    dx = np.subtract(dy, s, out=out)
    dx *= y
    return dx
