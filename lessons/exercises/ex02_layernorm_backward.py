"""Exercise 02 - the backward pass of LayerNorm.                              (about 45 minutes)

The forward pass (as torch.nn.LayerNorm(D) and minicct/layers/norm.py), over the LAST axis only:

    mu     = mean_d x[..., d]                            [..., 1]
    var    = mean_d (x[..., d] - mu)^2                   [..., 1]   biased: divide by D, not D - 1
    rstd   = 1 / sqrt(var + eps)                         [..., 1]
    xhat   = (x - mu) * rstd                             [..., D]   the normalised input
    y      = xhat * gamma + beta                         [..., D]   gamma, beta [D]

x may be [N, D] or [N, T, D] (every token is normalised on its own). Ba et al., arXiv 1607.06450.

What to write
    layernorm_backward(dout, x, gamma, eps=1e-5) -> (dx, dgamma, dbeta)
        dout    [..., D]   dL/dy
        x       [..., D]   the forward's input (recompute mu, rstd, xhat from it)
        gamma   [D]        the scale (beta does not enter the backward)
        eps     float      the same eps as the forward; use the argument, do not hard-code 1e-5
        dx      [..., D]   dL/dx
        dgamma  [D]        dL/dgamma
        dbeta   [D]        dL/dbeta
    Return float64 arrays; do not modify the inputs.

Hints (a teacher may delete this block for a harder version)
    - gamma and beta are shared by every row, so their gradients are sums over all leading axes.
    - Call dn = dout * gamma the gradient with respect to xhat. x reaches xhat by three paths: directly,
      through mu, and through var. Forget one and the check fails (the checker tells you which).
    - The three paths collapse into one line with two means over the feature axis (keepdims=True):
          dx = rstd * (dn - mean(dn) - xhat * mean(dn * xhat))
      Derive it before you use it: karpathy/llm.c doc/layernorm/layernorm.md walks through the steps.
    - Sanity check: with D = 1, xhat = 0 and y = beta, so dx must be exactly 0.

Check your work:
    python -m minicct.exercises check 02          (or: python lessons/exercises/check.py 02)
"""
import numpy as np


def layernorm_backward(dout, x, gamma, eps=1e-5):
    """dout [..., D], x [..., D], gamma [D] -> (dx [..., D], dgamma [D], dbeta [D])."""
    raise NotImplementedError("exercise 02: write layernorm_backward")
