"""Shared test helper: a backward must be repeatable and must not modify dout or its cache."""
import copy

import numpy as np

def _same(a, b):
    """Exact, recursive equality of arrays / tuples / dicts / scalars (dtype and shape included)."""
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=True))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    return a == b


def assert_backward_pure(backward, dout, cache):
    """backward twice gives identical results and leaves dout and every cache array unchanged."""
    dout0, cache0 = copy.deepcopy(dout), copy.deepcopy(cache)
    g1 = copy.deepcopy(backward(dout, cache))
    g2 = backward(dout, cache)
    assert _same(g1, g2), "backward is not repeatable"
    assert _same(dout, dout0), "backward modified dout"
    assert _same(cache, cache0), "backward modified the cache"
