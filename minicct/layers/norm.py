"""LayerNorm over the last axis, as torch.nn.LayerNorm(D): biased variance, eps 1e-5, affine.

Ba et al., "Layer Normalization", arXiv 1607.06450.
    y = (x - mean) / sqrt(var + eps) * gamma + beta
Shape legend: x [..., D], gamma and beta [D].
"""
import numpy as np

from .kernels import row_dot


def layernorm_forward(x, gamma, beta, eps=1e-5):
    """Inputs: x [..., D], gamma [D], beta [D]. Returns y [..., D] and cache (xhat, gamma, rstd).

    Only the normalised input and 1/std are kept (llm.c's choice): backward needs nothing else.
    """
    if gamma.shape != (x.shape[-1],) or beta.shape != (x.shape[-1],):
        raise ValueError(f"layernorm: gamma and beta must have shape ({x.shape[-1]},) to match input "
                         f"{x.shape}, got {gamma.shape} and {beta.shape}")
    D = x.shape[-1]
    mu = x.mean(axis=-1, keepdims=True)             # [..., 1]
    xc = x - mu
    var = row_dot(xc, xc) / D                       # biased variance mean(xc^2), [..., 1]
    rstd = 1.0 / np.sqrt(var + eps)                 # [..., 1]
    xhat = xc
    xhat *= rstd                                    # [..., D]
    y = xhat * gamma
    y += beta
    return y, (xhat, gamma, rstd)


def layernorm_backward(dout, cache):
    """Returns (dx [..., D], dgamma [D], dbeta [D]).

    With n = xhat and dn = dout * gamma:
        dx = rstd * (dn - mean(dn) - n * mean(dn * n))      (means over the feature axis)
        dgamma = sum(dout * n), dbeta = sum(dout)          (sums over all leading axes)
    """
    xhat, gamma, rstd = cache
    D = xhat.shape[-1]
    dgamma = np.einsum("md,md->d", dout.reshape(-1, D), xhat.reshape(-1, D))   # sum over rows of dout * n
    dbeta = dout.reshape(-1, D).sum(axis=0)
    dn = dout * gamma
    dx = xhat * (row_dot(dn, xhat) / D)             # n * mean(dn * n)
    dx += dn.mean(axis=-1, keepdims=True)
    np.subtract(dn, dx, out=dx)
    dx *= rstd
    return dx, dgamma, dbeta
