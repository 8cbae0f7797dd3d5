"""minicct.gradcheck: the tool every layer test relies on must itself find wrong gradients."""
import numpy as np
import pytest

from minicct.gradcheck import check_vjp, numerical_gradient, numerical_vjp, rel_error
from minicct.layers.activations import softmax


def test_rel_error_values():
    a = np.array([1.0, -2.0, 3.0])
    assert rel_error(a, a) == 0.0
    assert rel_error(a, -a) == pytest.approx(1.0)                 # |2a| / |2a| at the largest entry
    assert rel_error(a, a + np.array([0.0, 0.0, 6e-6])) == pytest.approx(6e-6 / (6 + 6e-6))
    # the 1e-8 floor: two gradients that are both ~0 are not "100 % different"
    assert rel_error(np.array([1e-12]), np.array([-1e-12])) == pytest.approx(2e-4)
    assert rel_error(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0


def test_rel_error_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(3,\) vs \(1, 3\)"):
        rel_error(np.zeros(3), np.zeros((1, 3)))


def test_numerical_vjp_matches_known_derivative_and_restores_x():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    x0 = x.copy()
    c = rng.standard_normal((3, 4))
    dout = rng.standard_normal((3, 4))
    num = numerical_vjp(lambda: c * x ** 3, x, dout)              # d/dx (c x^3) = 3 c x^2
    assert rel_error(num, 3 * c * x0 ** 2 * dout) < 1e-9
    np.testing.assert_array_equal(x, x0)                          # perturbed in place, then restored


def test_numerical_vjp_coords_only():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(10)
    dout = rng.standard_normal(10)
    num = numerical_vjp(lambda: np.sin(x), x, dout, coords=[2, 7])
    checked = np.isfinite(num)
    assert checked.sum() == 2 and checked[2] and checked[7]
    np.testing.assert_allclose(num[[2, 7]], (np.cos(x) * dout)[[2, 7]], rtol=1e-9)


def test_numerical_gradient_of_scalar():
    x = np.array([[0.5, -1.5], [2.0, 3.0]])
    g = numerical_gradient(lambda: (x ** 2).sum(), x)
    np.testing.assert_allclose(g, 2 * x, rtol=1e-9)


def test_numerical_vjp_refuses_float32_and_noncontiguous():
    x32 = np.ones(3, dtype=np.float32)
    with pytest.raises(ValueError, match="float64.*float32"):
        numerical_vjp(lambda: x32, x32, np.ones(3))
    xt = np.ones((3, 4)).T                                        # a non-contiguous view
    with pytest.raises(ValueError, match="contiguous"):
        numerical_vjp(lambda: xt, xt, np.ones((4, 3)))


def _softmax_fwd(x):
    return softmax(x, axis=-1)


def _softmax_bwd_right(dout, x):
    y = softmax(x, axis=-1)
    return {"x": y * (dout - (dout * y).sum(axis=-1, keepdims=True))}


def test_check_vjp_accepts_right_and_rejects_wrong_backward():
    x = np.random.default_rng(2).standard_normal((3, 5))
    assert check_vjp(_softmax_fwd, _softmax_bwd_right, {"x": x})["x"] < 1e-9
    # wrong by 1 %: caught
    err = check_vjp(_softmax_fwd, lambda d, x: {"x": 1.01 * _softmax_bwd_right(d, x)["x"]}, {"x": x})["x"]
    assert err > 1e-3
    # a backward that forgets the y y^T term: caught
    err = check_vjp(_softmax_fwd, lambda d, x: {"x": softmax(x) * d}, {"x": x})["x"]
    assert err > 1e-2


def test_check_vjp_default_upstream_is_random_not_ones():
    """With dout = ones the VJP of softmax is exactly 0, so a backward returning zeros would pass;
    the default random dout must catch it."""
    x = np.random.default_rng(3).standard_normal((2, 4))
    zeros = lambda d, x: {"x": np.zeros_like(x)}                  # noqa: E731
    # only rounding noise (~1e-11) against the 1e-8 floor: the zero backward "passes"
    assert check_vjp(_softmax_fwd, zeros, {"x": x}, dout=np.ones((2, 4)))["x"] < 1e-2
    assert check_vjp(_softmax_fwd, zeros, {"x": x})["x"] == pytest.approx(1.0)


def test_check_vjp_max_coords_and_several_inputs():
    rng = np.random.default_rng(4)
    inputs = {"a": rng.standard_normal((6, 7)), "b": rng.standard_normal(7)}
    fwd = lambda a, b: np.tanh(a * b)                              # noqa: E731

    def bwd(d, a, b):
        g = d * (1 - np.tanh(a * b) ** 2)
        return {"a": g * b, "b": (g * a).sum(axis=0)}

    errs = check_vjp(fwd, bwd, inputs, max_coords=5)
    assert set(errs) == {"a", "b"} and max(errs.values()) < 1e-8
    bad = lambda d, a, b: {"a": bwd(d, a, b)["a"], "b": -bwd(d, a, b)["b"]}   # noqa: E731
    assert check_vjp(fwd, bad, inputs, max_coords=5)["b"] > 0.5
