"""Every speed kernel (layers/kernels.py) against its naive twin, and the tokenizer's commuting order against
the reference order conv -> ReLU -> max-pool."""
import numpy as np
import pytest

from minicct import model as M
from minicct.layers import kernels as Kn
from minicct.layers.activations import relu_backward, relu_forward
from minicct.layers.conv import conv2d_backward, conv2d_forward, maxpool2d_backward, maxpool2d_forward


def test_normal_cdf_float32_against_erf():
    x = np.concatenate([np.linspace(-9, 9, 20002), np.random.default_rng(0).standard_normal(70000) * 3])
    x = x.astype(np.float32)                                            # > one block of 65536 elements
    got = Kn.normal_cdf_float32(x)
    ref = Kn.normal_cdf(x.astype(np.float64))
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.abs(got - ref).max() < 3e-7
    small = np.abs(x) <= 2
    assert (np.abs(got - ref)[small] / ref[small]).max() < 1e-6
    np.testing.assert_array_equal(Kn.normal_cdf_float32(x.reshape(2, -1)).ravel(), got)


def test_gelu_slope_float32_against_naive():
    x = np.concatenate([np.linspace(-9, 9, 20002), np.random.default_rng(1).standard_normal(70000) * 3])
    x = x.astype(np.float32)                                            # > one block of 65536 elements
    y, slope = Kn.gelu_slope_float32(x)
    y64, slope64 = Kn.gelu_slope(x.astype(np.float64))
    assert y.dtype == slope.dtype == np.float32 and y.shape == slope.shape == x.shape
    assert np.abs(y - y64).max() < 3e-6 * max(1.0, np.abs(x).max())   # |x| * (error of Phi) + rounding
    assert np.abs(slope - slope64).max() < 2e-6
    np.testing.assert_array_equal(y, x * Kn.normal_cdf_float32(x))     # the same Phi as the cdf kernel
    y2, s2 = Kn.gelu_slope_float32(x.reshape(2, -1))
    np.testing.assert_array_equal(y2.ravel(), y)
    np.testing.assert_array_equal(s2.ravel(), slope)
    # the naive slope is the derivative of the naive GELU (central differences in float64)
    u, e = np.linspace(-4, 4, 41), 1e-6
    fd = (Kn.gelu_slope(u + e)[0] - Kn.gelu_slope(u - e)[0]) / (2 * e)
    np.testing.assert_allclose(Kn.gelu_slope(u)[1], fd, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_dot_against_naive(dtype):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 2, 3, 5, 7)).astype(dtype)               # each [2, 3, 5, 7]
    for axis in (-1, 3, 1):
        got, ref = Kn.row_dot(a, b, axis), Kn.row_dot_naive(a, b, axis)
        assert got.shape == ref.shape and got.dtype == dtype
        np.testing.assert_allclose(got, ref, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


@pytest.mark.parametrize("k,stride,pad", [(3, 1, 1), (3, 2, 1), (2, 2, 0), (5, 3, 2)])
def test_im2col_col2im_against_naive(k, stride, pad):
    rng = np.random.default_rng(k + stride + pad)
    x = rng.standard_normal((3, 9, 8, 4))
    cols = Kn.im2col(x, k, stride, pad)
    np.testing.assert_array_equal(cols, Kn.im2col_naive(x, k, stride, pad))
    d = rng.standard_normal(cols.shape)
    np.testing.assert_allclose(Kn.col2im(d, x.shape, stride, pad), Kn.col2im_naive(d, x.shape, stride, pad),
                               rtol=0, atol=1e-12)
    # col2im is the adjoint of im2col: <im2col(x), d> = <x, col2im(d)>
    assert np.sum(cols * d) == pytest.approx(np.sum(x * Kn.col2im(d, x.shape, stride, pad)))


@pytest.mark.parametrize("C", [1, 3])
def test_im2col_of_a_channels_last_view(C):
    # the tokenizer passes x.transpose(0, 2, 3, 1) of an NCHW batch; with C = 1 NumPy calls that view
    # contiguous although its channel stride is not the item size
    x = np.random.default_rng(C).standard_normal((2, C, 7, 6)).transpose(0, 2, 3, 1)
    for k, stride, pad in [(3, 2, 0), (2, 1, 0), (3, 1, 1)]:
        np.testing.assert_array_equal(Kn.im2col(x, k, stride, pad), Kn.im2col_naive(x, k, stride, pad))


def test_image_blocks_cover_the_batch():
    for N, per, budget in [(10, 3, 7), (1, 100, 10), (0, 5, 10), (7, 1, 100)]:
        blocks = Kn.image_blocks(N, per, budget)
        covered = np.concatenate([np.arange(N)[b] for b in blocks]) if N else np.zeros(0)
        np.testing.assert_array_equal(covered, np.arange(N))


@pytest.mark.parametrize("k,stride", [(3, 2), (2, 2), (3, 1)])
def test_window_max_argmax_against_naive(k, stride):
    rng = np.random.default_rng(k * 10 + stride)
    xp = rng.integers(0, 4, (2, 9, 9, 3)).astype(np.float32)           # many ties: the first maximum must win
    xp[:, 0, :] = -np.inf
    Ho = Wo = (9 - k) // stride + 1
    out, arg = np.empty((2, Ho, Wo, 3), np.float32), np.empty((2, Ho, Wo, 3), np.uint8)
    out2, arg2 = np.empty_like(out), np.empty((2, Ho, Wo, 3), np.int64)
    Kn.window_max_argmax(xp, k, stride, out, arg)
    Kn.window_max_argmax_naive(xp, k, stride, out2, arg2)
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(arg, arg2)


def test_qkv_grad_views_against_stacking():
    rng = np.random.default_rng(1)
    N, T, h, d = 2, 5, 3, 4
    dqkv, dq, dk, dv = Kn.qkv_grad_views(N, T, h, d, np.float64)
    a, b, c = (rng.standard_normal((N, h, T, d)) for _ in range(3))
    dq[...], dk[...], dv[...] = a, b, c
    np.testing.assert_array_equal(dqkv, Kn.stack_qkv_grads(a, b, c))
    assert dqkv.flags.c_contiguous and dqkv.reshape(N, T, 3 * h * d).base is not None   # a view, no copy


def test_tokenizer_stage_equals_the_reference_order():
    cfg = M.get_config("classroom")
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 3, 32, 32)), rng.standard_normal((32, 3, 3, 3)) * 0.3
    y, cache = M.tokenizer_stage_forward(x, w, cfg)
    # the reference order: conv -> ReLU -> max-pool
    h, c_conv = conv2d_forward(x, w, None, cfg.conv_stride, cfg.conv_padding)
    r, c_relu = relu_forward(h)
    ref, c_pool = maxpool2d_forward(r, cfg.pooling_kernel_size, cfg.pooling_stride, cfg.pooling_padding)
    np.testing.assert_array_equal(y, ref)
    dout = rng.standard_normal(y.shape)
    dx, dw = M.tokenizer_stage_backward(dout, cache)
    dx_ref, dw_ref, _ = conv2d_backward(relu_backward(maxpool2d_backward(dout, c_pool), c_relu), c_conv)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-12)
