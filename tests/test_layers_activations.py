"""ReLU, GELU, softmax and the one softmax_backward: values, gradients, purity, dtypes."""
import math

import numpy as np
import pytest

from minicct.gradcheck import check_vjp, rel_error
from minicct.layers.activations import (gelu_backward, gelu_forward, log_softmax, relu_backward, relu_forward,
                                        softmax, softmax_backward)
from _purity import assert_backward_pure


def _spaced_nonzero(rng, shape, gap=0.05):
    """Distinct values at least `gap` apart, none closer than gap/2 to 0 (away from the ReLU kink)."""
    n = int(np.prod(shape))
    v = (np.arange(n) - n / 2 + 0.5) * gap
    return rng.permutation(v).reshape(shape)


# ------------------------------------------------------------------------------------------------ ReLU

def test_relu_forward_values():
    x = np.array([[-2.0, -0.5, 0.0], [0.5, 3.0, -1e-9]])
    y, _ = relu_forward(x)
    np.testing.assert_array_equal(y, [[0, 0, 0], [0.5, 3.0, 0]])


def test_relu_gradcheck():
    rng = np.random.default_rng(0)
    x = _spaced_nonzero(rng, (3, 4, 5))
    fwd = lambda x: relu_forward(x)[0]                                        # noqa: E731
    bwd = lambda d, x: {"x": relu_backward(d, relu_forward(x)[1])}           # noqa: E731
    assert check_vjp(fwd, bwd, {"x": x})["x"] <= 1e-5


def test_relu_backward_pure():
    rng = np.random.default_rng(1)
    _, cache = relu_forward(rng.standard_normal((4, 6)))
    assert_backward_pure(relu_backward, rng.standard_normal((4, 6)), cache)


# ------------------------------------------------------------------------------------------------ GELU

def test_gelu_forward_matches_erf_formula():
    x = np.linspace(-4, 4, 17)
    y, _ = gelu_forward(x)
    ref = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(y, ref, rtol=1e-14, atol=1e-15)
    assert y[8] == 0.0                                                        # gelu(0) = 0


def test_gelu_gradcheck():
    x = np.random.default_rng(2).standard_normal((2, 3, 7)) * 2
    fwd = lambda x: gelu_forward(x)[0]                                        # noqa: E731
    bwd = lambda d, x: {"x": gelu_backward(d, gelu_forward(x)[1])}           # noqa: E731
    assert check_vjp(fwd, bwd, {"x": x})["x"] <= 1e-7


def test_gelu_backward_pure():
    rng = np.random.default_rng(3)
    _, cache = gelu_forward(rng.standard_normal((4, 6)))
    assert_backward_pure(gelu_backward, rng.standard_normal((4, 6)), cache)


# --------------------------------------------------------------------------------------------- softmax

@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_values_and_stability(axis):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 5))
    y = softmax(x, axis=axis)
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(softmax(x + 1000.0, axis=axis), y, rtol=1e-12)   # shift invariant, no overflow
    ref = np.exp(x) / np.exp(x).sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(y, ref, rtol=1e-13)
    np.testing.assert_allclose(log_softmax(x, axis=axis), np.log(ref), rtol=1e-13, atol=1e-14)
    assert np.isfinite(log_softmax(x * 1e4, axis=axis)).all()


def _explicit_softmax_vjp(y, dy, axis):
    """The Jacobian J = diag(y) - y y^T built for every slice along `axis`, then J^T dy (J is symmetric)."""
    yt, dyt = np.moveaxis(y, axis, -1), np.moveaxis(dy, axis, -1)
    out = np.empty_like(yt)
    for idx in np.ndindex(yt.shape[:-1]):
        v = yt[idx]
        J = np.diag(v) - np.outer(v, v)
        out[idx] = J.T @ dyt[idx]
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_softmax_backward_equals_explicit_jacobian(axis):
    rng = np.random.default_rng(5)
    y = softmax(rng.standard_normal((3, 4, 5)), axis=axis)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(softmax_backward(y, dy, axis=axis), _explicit_softmax_vjp(y, dy, axis),
                               rtol=0, atol=1e-15)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_gradcheck(axis):
    x = np.random.default_rng(6).standard_normal((3, 4, 5))
    fwd = lambda x: softmax(x, axis=axis)                                      # noqa: E731
    bwd = lambda d, x: {"x": softmax_backward(softmax(x, axis=axis), d, axis=axis)}   # noqa: E731
    assert check_vjp(fwd, bwd, {"x": x})["x"] <= 1e-7


def test_softmax_backward_pure():
    rng = np.random.default_rng(7)
    y = softmax(rng.standard_normal((4, 6)))
    assert_backward_pure(lambda d, c: softmax_backward(c, d, axis=-1), rng.standard_normal((4, 6)), y)


# ----------------------------------------------------------------------------------------------- dtypes

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(dtype):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 5)).astype(dtype)
    d = rng.standard_normal((3, 5)).astype(dtype)
    y, c = relu_forward(x)
    assert y.dtype == dtype and relu_backward(d, c).dtype == dtype
    y, c = gelu_forward(x)
    assert y.dtype == dtype and gelu_backward(d, c).dtype == dtype
    y = softmax(x, axis=0)
    assert y.dtype == dtype and log_softmax(x).dtype == dtype
    assert softmax_backward(y, d, axis=0).dtype == dtype


def test_float32_gelu_close_to_float64():
    x = np.random.default_rng(9).standard_normal(50)
    y64, c64 = gelu_forward(x)
    y32, c32 = gelu_forward(x.astype(np.float32))
    assert rel_error(y32, y64) < 1e-6
    d = np.ones(50)
    assert rel_error(gelu_backward(d.astype(np.float32), c32), gelu_backward(d, c64)) < 1e-6
