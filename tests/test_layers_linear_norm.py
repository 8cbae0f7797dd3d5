"""Linear (y = x W^T + b) and LayerNorm: values, gradients, purity, dtypes, errors."""

import numpy as np
import pytest

from minicct.gradcheck import check_vjp
from minicct.layers.linear import linear_backward, linear_forward
from minicct.layers.norm import layernorm_backward, layernorm_forward
from _purity import assert_backward_pure


# ---------------------------------------------------------------------------------------------- linear

@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (4,)])
def test_linear_forward_values(shape):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(shape), rng.standard_normal((3, 4)), rng.standard_normal(3)
    y, _ = linear_forward(x, w, b)
    np.testing.assert_allclose(y, np.einsum("...i,oi->...o", x, w) + b, rtol=1e-13)
    y0, _ = linear_forward(x, w)
    np.testing.assert_allclose(y0, y - b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradcheck(shape, bias):
    rng = np.random.default_rng(1)
    inputs = {"x": rng.standard_normal(shape), "w": rng.standard_normal((3, 4))}
    if bias:
        inputs["b"] = rng.standard_normal(3)

    def fwd(x, w, b=None):
        return linear_forward(x, w, b)[0]

    def bwd(d, x, w, b=None):
        dx, dw, db = linear_backward(d, linear_forward(x, w, b)[1])
        assert (db is None) == (b is None)
        return {"x": dx, "w": dw, **({"b": db} if b is not None else {})}

    errs = check_vjp(fwd, bwd, inputs)
    assert set(errs) == set(inputs) and max(errs.values()) <= 1e-7, errs


def test_linear_backward_pure():
    rng = np.random.default_rng(2)
    y, cache = linear_forward(rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5))
    assert_backward_pure(linear_backward, rng.standard_normal(y.shape), cache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_dtype(dtype):
    rng = np.random.default_rng(3)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in [(2, 3, 4), (5, 4), (5,)])
    y, cache = linear_forward(x, w, b)
    assert y.dtype == dtype
    assert all(g.dtype == dtype for g in linear_backward(rng.standard_normal(y.shape).astype(dtype), cache))


def test_linear_errors():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((5, 4))
    with pytest.raises(ValueError, match=r"6 features.*\(2, 6\).*expects 4.*\(5, 4\)"):
        linear_forward(rng.standard_normal((2, 6)), w)
    with pytest.raises(ValueError, match=r"2-D.*got shape \(4,\)"):            # weight of the wrong ndim
        linear_forward(rng.standard_normal((2, 4)), rng.standard_normal(4))
    with pytest.raises(ValueError, match=r"\[\.\.\., in\].*got shape \(\)"):    # a 0-d input
        linear_forward(np.float64(1.0), w)
    with pytest.raises(ValueError, match=r"\(5,\).*\(4,\)"):
        linear_forward(rng.standard_normal((2, 4)), w, rng.standard_normal(4))


# ------------------------------------------------------------------------------------------- layernorm

def _ln_params(rng, D):
    return 1 + 0.3 * rng.standard_normal(D), 0.3 * rng.standard_normal(D)


def test_layernorm_forward_values():
    rng = np.random.default_rng(5)
    x = 3 + 2 * rng.standard_normal((2, 3, 6))
    y, _ = layernorm_forward(x, np.ones(6), np.zeros(6))
    np.testing.assert_allclose(y.mean(axis=-1), 0, atol=1e-14)
    var = x.var(axis=-1)
    np.testing.assert_allclose(y.var(axis=-1), var / (var + 1e-5), rtol=1e-12)   # biased variance, eps 1e-5
    g, b = _ln_params(rng, 6)
    y, _ = layernorm_forward(x, g, b)
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * g + b
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 5)])
def test_layernorm_gradcheck(shape):
    rng = np.random.default_rng(6)
    g, b = _ln_params(rng, shape[-1])
    inputs = {"x": rng.standard_normal(shape), "g": g, "b": b}
    fwd = lambda x, g, b: layernorm_forward(x, g, b)[0]                     # noqa: E731

    def bwd(d, x, g, b):
        dx, dg, db = layernorm_backward(d, layernorm_forward(x, g, b)[1])
        return {"x": dx, "g": dg, "b": db}

    errs = check_vjp(fwd, bwd, inputs)
    assert max(errs.values()) <= 1e-7, errs


def test_layernorm_backward_pure():
    rng = np.random.default_rng(7)
    y, cache = layernorm_forward(rng.standard_normal((2, 3, 5)), *_ln_params(rng, 5))
    assert_backward_pure(layernorm_backward, rng.standard_normal(y.shape), cache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layernorm_dtype(dtype):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 5)).astype(dtype)
    g, b = (p.astype(dtype) for p in _ln_params(rng, 5))
    y, cache = layernorm_forward(x, g, b)
    assert y.dtype == dtype
    grads = layernorm_backward(rng.standard_normal(y.shape).astype(dtype), cache)
    assert all(t.dtype == dtype for t in grads)


def test_layernorm_errors():
    x = np.zeros((2, 5))
    with pytest.raises(ValueError, match=r"\(5,\).*\(2, 5\).*\(4,\)"):
        layernorm_forward(x, np.ones(4), np.zeros(4))
