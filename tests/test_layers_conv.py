"""conv2d and max-pool: fast equals naive, both equal the definition, gradients, purity, dtypes, errors."""
import itertools

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import correlate2d

from minicct.gradcheck import check_vjp
from minicct.layers.activations import relu_backward, relu_forward
from minicct.layers.conv import (conv2d_backward, conv2d_backward_naive, conv2d_forward, conv2d_forward_naive,
                                 maxpool2d_backward, maxpool2d_backward_naive, maxpool2d_forward,
                                 maxpool2d_forward_naive)
from _purity import assert_backward_pure


def _spaced(rng, shape, gap=0.1, low=None):
    """Distinct values at least `gap` apart (no ties in any max-pool window); all negative if low is given."""
    n = int(np.prod(shape))
    v = np.arange(n) * gap + (low if low is not None else -n * gap / 2)
    return rng.permutation(v).reshape(shape)


CHANNELS = [(1, 1), (2, 3), (3, 2), (4, 5)]
CONV_CASES = [(k, s, p, CHANNELS[i % 4], (9, 11) if i % 2 else (10, 7))
              for i, (k, s, p) in enumerate(itertools.product((1, 3, 5, 7), (1, 2, 3), (0, 1, 2)))]


# ---------------------------------------------------------------------------------------------- conv2d

@pytest.mark.parametrize("k,s,p,ch,hw", CONV_CASES)
def test_conv_fast_equals_naive(k, s, p, ch, hw):
    rng = np.random.default_rng(k * 100 + s * 10 + p)
    (c_in, c_out), (H, W) = ch, hw
    x = rng.standard_normal((2, c_in, H, W))
    w = rng.standard_normal((c_out, c_in, k, k))
    b = rng.standard_normal(c_out) if (k + s + p) % 2 else None
    out, cache = conv2d_forward(x, w, b, s, p)
    out_n, cache_n = conv2d_forward_naive(x, w, b, s, p)
    assert out.shape == (2, c_out, (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1)
    np.testing.assert_allclose(out, out_n, rtol=0, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    for g, g_n in zip(conv2d_backward(dout, cache), conv2d_backward_naive(dout, cache_n)):
        if g_n is None:
            assert g is None
        else:
            assert g.shape == g_n.shape
            np.testing.assert_allclose(g, g_n, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (5, 2, 2), (3, 3, 0)])
def test_conv_naive_is_the_definition(k, s, p):
    """The naive twin against scipy's 2-D cross-correlation of the zero-padded input, per (n, o, c)."""
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 3, 8, 9)), rng.standard_normal((4, 3, k, k)), rng.standard_normal(4)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ref = np.array([[sum(correlate2d(xp[n, c], w[o, c], mode="valid") for c in range(3))[::s, ::s] + b[o]
                     for o in range(4)] for n in range(2)])
    np.testing.assert_allclose(conv2d_forward_naive(x, w, b, s, p)[0], ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(conv2d_forward(x, w, b, s, p)[0], ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (3, 2, 0), (5, 2, 2), (1, 1, 0)])
def test_conv_gradcheck(k, s, p):
    rng = np.random.default_rng(2)
    inputs = {"x": rng.standard_normal((2, 2, 6, 5)), "w": rng.standard_normal((3, 2, k, k)),
              "b": rng.standard_normal(3)}
    fwd = lambda x, w, b: conv2d_forward(x, w, b, s, p)[0]                       # noqa: E731

    def bwd(d, x, w, b):
        dx, dw, db = conv2d_backward(d, conv2d_forward(x, w, b, s, p)[1])
        return {"x": dx, "w": dw, "b": db}

    errs = check_vjp(fwd, bwd, inputs)
    assert max(errs.values()) <= 1e-7, errs


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (3, 2, 1)])
def test_conv_relu_gradcheck(k, s, p):
    rng = np.random.default_rng(3)
    inputs = {"x": rng.standard_normal((2, 2, 6, 5)), "w": rng.standard_normal((3, 2, k, k)),
              "b": rng.standard_normal(3)}
    pre = conv2d_forward(**inputs, stride=s, pad=p)[0]
    assert np.abs(pre).min() > 1e-3, "pick another seed: a pre-activation sits on the ReLU kink"
    fwd = lambda x, w, b: relu_forward(conv2d_forward(x, w, b, s, p)[0])[0]      # noqa: E731

    def bwd(d, x, w, b):
        z, c_conv = conv2d_forward(x, w, b, s, p)
        dx, dw, db = conv2d_backward(relu_backward(d, relu_forward(z)[1]), c_conv)
        return {"x": dx, "w": dw, "b": db}

    errs = check_vjp(fwd, bwd, inputs)
    assert max(errs.values()) <= 1e-5, errs


def test_conv_need_dx_false():
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    out, cache = conv2d_forward(x, w, b, 1, 1)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, cache, need_dx=False)
    _, dw_full, db_full = conv2d_backward(dout, cache)
    assert dx is None
    np.testing.assert_array_equal(dw, dw_full)
    np.testing.assert_array_equal(db, db_full)


@pytest.mark.parametrize("bias", [True, False])
def test_conv_backward_pure(bias):
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4) if bias else None
    out, cache = conv2d_forward(x, w, b, 2, 1)
    dout = rng.standard_normal(out.shape)
    assert_backward_pure(conv2d_backward, dout, cache)
    assert_backward_pure(conv2d_backward, dout.transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2), cache)
    assert_backward_pure(conv2d_backward_naive, dout, conv2d_forward_naive(x, w, b, 2, 1)[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_dtype(dtype):
    rng = np.random.default_rng(6)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in [(2, 3, 7, 6), (4, 3, 3, 3), (4,)])
    for fwd, bwd in [(conv2d_forward, conv2d_backward), (conv2d_forward_naive, conv2d_backward_naive)]:
        out, cache = fwd(x, w, b, 1, 1)
        assert out.dtype == dtype
        grads = bwd(rng.standard_normal(out.shape).astype(dtype), cache)
        assert all(g.dtype == dtype for g in grads)


def test_conv_errors():
    x, w = np.zeros((2, 3, 8, 8)), np.zeros((4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\].*got shape \(3, 8, 8\)"):
        conv2d_forward(x[0], w)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\].*got shape \(3, 8, 8\)"):
        conv2d_forward_naive(x[0], w)
    with pytest.raises(ValueError, match=r"3 channels \(shape \(2, 3, 8, 8\)\).*C_in=5"):
        conv2d_forward(x, np.zeros((4, 5, 3, 3)))
    with pytest.raises(ValueError, match=r"kernel 5 .*\(2 \+ 2\*1 = 4\)"):
        conv2d_forward(np.zeros((1, 3, 2, 8)), np.zeros((4, 3, 5, 5)), pad=1)
    with pytest.raises(ValueError, match=r"kernel 5 .*\(2 \+ 2\*1 = 4\)"):
        conv2d_forward_naive(np.zeros((1, 3, 2, 8)), np.zeros((4, 3, 5, 5)), pad=1)
    with pytest.raises(ValueError, match=r"\(C_out, C_in, k, k\).*\(4, 3, 3, 2\)"):
        conv2d_forward(x, np.zeros((4, 3, 3, 2)))
    with pytest.raises(ValueError, match=r"k >= 1.*\(4, 3, 0, 0\)"):
        conv2d_forward(x, np.zeros((4, 3, 0, 0)))
    with pytest.raises(ValueError, match=r"\(4,\).*\(3,\)"):
        conv2d_forward(x, w, np.zeros(3))
    with pytest.raises(ValueError, match="stride=0"):
        conv2d_forward(x, w, stride=0)


# -------------------------------------------------------------------------------------------- max-pool

POOL_CASES = [(k, s, p, hw) for (k, s, p), hw in zip(
    itertools.product((2, 3), (1, 2), (0, 1)), itertools.cycle([(7, 10), (8, 9), (3, 4)]))] + [
    (1, 1, 0, (5, 6)), (5, 3, 2, (11, 7)), (3, 2, 1, (32, 32))]


def _pool_ref(x, k, s, p):
    """max over the k x k windows of the -inf padded input (an independent, vectorised definition)."""
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    return sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(axis=(-2, -1))


@pytest.mark.parametrize("k,s,p,hw", POOL_CASES)
def test_maxpool_fast_equals_naive(k, s, p, hw):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3) + hw)
    out, cache = maxpool2d_forward(x, k, s, p)
    out_n, cache_n = maxpool2d_forward_naive(x, k, s, p)
    assert out.shape == (2, 3, (hw[0] + 2 * p - k) // s + 1, (hw[1] + 2 * p - k) // s + 1)
    np.testing.assert_array_equal(out, out_n)
    np.testing.assert_array_equal(out, _pool_ref(x, k, s, p))
    dout = rng.standard_normal(out.shape)
    dx, dx_n = maxpool2d_backward(dout, cache), maxpool2d_backward_naive(dout, cache_n)
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, dx_n, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 1, 1), (3, 1, 0)])
def test_maxpool_ties_go_to_the_first_element(k, s, p):
    """Many ties (values in {0, 1, 2}): fast and naive both route to the first maximum in row-major order."""
    rng = np.random.default_rng(8)
    x = rng.integers(0, 3, size=(2, 2, 7, 6)).astype(np.float64)
    out, cache = maxpool2d_forward(x, k, s, p)
    out_n, cache_n = maxpool2d_forward_naive(x, k, s, p)
    np.testing.assert_array_equal(out, out_n)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(maxpool2d_backward(dout, cache), maxpool2d_backward_naive(dout, cache_n),
                               rtol=0, atol=1e-12)
    # by hand: one window of all-equal values sends the whole gradient to its top-left element
    one = np.ones((1, 1, 2, 2))
    o, c = maxpool2d_forward(one, 2, 2, 0)
    np.testing.assert_array_equal(maxpool2d_backward(np.full(o.shape, 5.0), c)[0, 0], [[5, 0], [0, 0]])


@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 2, 1), (3, 1, 1)])
def test_maxpool_padding_is_minus_infinity(k, s, p):
    """An all-negative input must never give 0 at the borders (zero padding would)."""
    x = -1.0 - np.random.default_rng(9).random((2, 2, 5, 6))
    for fwd in (maxpool2d_forward, maxpool2d_forward_naive):
        out, _ = fwd(x, k, s, p)
        assert (out < -1.0).all() and np.isfinite(out).all()
        np.testing.assert_array_equal(out, _pool_ref(x, k, s, p))
    # the top-left output of a 3/2/1 pool is the max of x[0:2, 0:2]
    out, _ = maxpool2d_forward(x, 3, 2, 1)
    np.testing.assert_array_equal(out[:, :, 0, 0], x[:, :, :2, :2].max(axis=(-2, -1)))


@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 2, 0), (2, 1, 1), (3, 1, 0)])
def test_maxpool_gradcheck(k, s, p):
    rng = np.random.default_rng(10)
    x = _spaced(rng, (2, 2, 5, 6))
    fwd = lambda x: maxpool2d_forward(x, k, s, p)[0]                            # noqa: E731
    bwd = lambda d, x: {"x": maxpool2d_backward(d, maxpool2d_forward(x, k, s, p)[1])}   # noqa: E731
    assert check_vjp(fwd, bwd, {"x": x})["x"] <= 1e-5
    xn = _spaced(rng, (2, 2, 5, 6), low=-10.0)                                   # all negative: -inf padding
    assert check_vjp(fwd, bwd, {"x": xn})["x"] <= 1e-5


def test_maxpool_backward_pure():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 7, 8))
    out, cache = maxpool2d_forward(x, 3, 2, 1)
    dout = rng.standard_normal(out.shape)
    assert_backward_pure(maxpool2d_backward, dout, cache)
    assert_backward_pure(maxpool2d_backward_naive, dout, maxpool2d_forward_naive(x, 3, 2, 1)[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_dtype(dtype):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 7, 8)).astype(dtype)
    for fwd, bwd in [(maxpool2d_forward, maxpool2d_backward), (maxpool2d_forward_naive, maxpool2d_backward_naive)]:
        out, cache = fwd(x, 3, 2, 1)
        assert out.dtype == dtype
        assert bwd(rng.standard_normal(out.shape).astype(dtype), cache).dtype == dtype


def test_maxpool_errors():
    x = np.zeros((2, 3, 8, 8))
    for fwd in (maxpool2d_forward, maxpool2d_forward_naive):
        with pytest.raises(ValueError, match=r"\[N, C, H, W\].*got shape \(3, 8, 8\)"):
            fwd(x[0], 3, 2, 1)
        with pytest.raises(ValueError, match=r"kernel 5 .*\(2 \+ 2\*1 = 4\)"):
            fwd(np.zeros((1, 1, 2, 9)), 5, 1, 1)
        with pytest.raises(ValueError, match=r"k=3, p=2"):
            fwd(x, 3, 1, 2)
        with pytest.raises(ValueError, match="stride must be >= 1, got 0"):
            fwd(x, 3, 0, 1)
        with pytest.raises(ValueError, match="padding must be >= 0, got -1"):
            fwd(x, 3, 1, -1)
        with pytest.raises(ValueError, match="1..16.*got 17"):
            fwd(np.zeros((1, 1, 20, 20)), 17, 1, 0)
        with pytest.raises(ValueError, match="1..16.*got 0"):
            fwd(x, 0, 1, 0)
