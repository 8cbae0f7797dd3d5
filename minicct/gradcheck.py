"""Numerical gradient checks: how we know every hand-written backward is right.

The idea (CS231n, "Gradient checks"): for a function y = f(x) and any upstream gradient g (random, never
all ones: a sum of softmax outputs, for one, has gradient 0), the backward must return the vector-Jacobian
product dx = J^T g. The centered difference estimates each of its entries:

    dx[i] ~ sum( (f(x + h e_i) - f(x - h e_i)) * g ) / (2h)          (error O(h^2))

Run in float64 (float32 rounding swamps h^2), with h ~ 1e-5 and inputs away from kinks (ReLU at 0, ties
in max-pool). Compare with the relative error

    rel_error(a, n) = max|a - n| / max(1e-8, max(|a| + |n|))

i.e. the largest absolute difference measured against the scale of the gradient: ~1e-10 for a correct
smooth layer, 1e-2 or more means a bug.
"""
import numpy as np


def rel_error(a, n):
    """max|a - n| / max(1e-8, max(|a| + |n|)); a scalar in [0, 1]."""
    a, n = np.asarray(a, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {n.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - n)) / max(1e-8, np.max(np.abs(a) + np.abs(n))))


def numerical_vjp(f, x, dout, h=1e-5, coords=None):
    """Centered-difference estimate of J^T dout for y = f() that reads the array x in place.

    f: a function of no arguments returning an array (it must read x, which is perturbed in place and restored).
    x: float64 array. dout: array shaped like f(). coords: optional list of flat indices to check (others 0).
    Returns an array shaped like x (entries outside `coords` are nan).
    """
    if x.dtype != np.float64:
        raise ValueError(f"numerical_vjp: check gradients in float64, got {x.dtype}")
    grad = np.full(x.shape, np.nan) if coords is not None else np.zeros(x.shape)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("numerical_vjp: x must be contiguous so it can be perturbed in place")
    for i in (range(x.size) if coords is None else coords):
        old = flat[i]
        flat[i] = old + h
        plus = np.sum(f() * dout)
        flat[i] = old - h
        minus = np.sum(f() * dout)
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def numerical_gradient(f, x, h=1e-5, coords=None):
    """Centered-difference gradient of a scalar function f() that reads x in place."""
    return numerical_vjp(lambda: np.asarray(f()), x, np.float64(1.0), h, coords)


def check_vjp(forward, backward, inputs, dout=None, h=1e-5, seed=0, max_coords=None):
    """Check a layer's backward against centered differences, for every array input.

    forward: function(**inputs) -> out (an array).
    backward: function(dout, **inputs) -> dict name -> analytic gradient (for the names to check).
    inputs: dict name -> float64 array (the arrays are perturbed in place and restored).
    dout: upstream gradient; by default random normal of out's shape (never all ones).
    max_coords: check at most this many random coordinates per input (all when None).
    Returns: dict name -> rel_error.
    """
    rng = np.random.default_rng(seed)
    out = forward(**inputs)
    if dout is None:
        dout = rng.standard_normal(np.shape(out))
    analytic = backward(dout, **inputs)
    errors = {}
    for name, grad in analytic.items():
        x = inputs[name]
        coords = None
        if max_coords is not None and x.size > max_coords:
            coords = rng.choice(x.size, size=max_coords, replace=False)
        num = numerical_vjp(lambda: forward(**inputs), x, dout, h, coords)
        if coords is None:
            errors[name] = rel_error(grad, num)
        else:
            errors[name] = rel_error(np.asarray(grad).reshape(-1)[coords], num.reshape(-1)[coords])
    return errors
