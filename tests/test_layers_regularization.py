"""Dropout and drop-path: identity when off, mask structure, expectation, gradients, purity, dtypes, errors."""

import numpy as np
import pytest

from minicct.gradcheck import check_vjp
from minicct.layers.regularization import drop_path_backward, drop_path_forward, dropout_backward, dropout_forward
from _purity import assert_backward_pure


LAYERS = [(dropout_forward, dropout_backward), (drop_path_forward, drop_path_backward)]


@pytest.mark.parametrize("fwd,bwd", LAYERS)
@pytest.mark.parametrize("p,train", [(0.0, True), (0.5, False), (0.0, False)])
def test_identity_when_off(fwd, bwd, p, train):
    rng = np.random.default_rng(0)
    x, d = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    y, cache = fwd(x, p, np.random.default_rng(1), train)
    assert cache is None
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(bwd(d, cache), d)
    y, _ = fwd(x, p, None, train)                                  # no generator needed when inactive
    np.testing.assert_array_equal(y, x)


def test_dropout_mask_and_backward():
    x = np.random.default_rng(2).standard_normal((20, 30)) + 5.0  # no zeros in x
    p = 0.4
    y, cache = dropout_forward(x, p, np.random.default_rng(3))
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-15)
    assert abs((~kept).mean() - p) < 0.1
    d = np.random.default_rng(4).standard_normal(x.shape)
    np.testing.assert_allclose(dropout_backward(d, cache), d * kept / (1 - p), rtol=1e-15)
    y2, _ = dropout_forward(x, p, np.random.default_rng(3))
    np.testing.assert_array_equal(y, y2)                          # same seed, same mask


def test_drop_path_is_per_sample():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 3, 4)) + 5.0
    p = 0.5
    y, cache = drop_path_forward(x, p, np.random.default_rng(6))
    dropped = (y == 0).all(axis=(1, 2))
    kept = np.isclose(y, x / (1 - p), rtol=1e-15, atol=0).all(axis=(1, 2))
    assert (dropped ^ kept).all()                                 # each sample: all dropped or all kept
    assert 10 < dropped.sum() < 54
    d = rng.standard_normal(x.shape)
    np.testing.assert_allclose(drop_path_backward(d, cache), d * kept[:, None, None] / (1 - p), rtol=1e-15)
    np.testing.assert_array_equal(y, drop_path_forward(x, p, np.random.default_rng(6))[0])


@pytest.mark.parametrize("fwd", [dropout_forward, drop_path_forward])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.7])
def test_expectation_preserved(fwd, p):
    """mean over many draws ~ x: 20000 copies of the same row, dropped independently."""
    row = np.array([1.0, -2.0, 0.5])
    x = np.tile(row, (20000, 1))
    y, _ = fwd(x, p, np.random.default_rng(7))
    # per-entry standard error of the mean: |row| * sqrt(p / ((1 - p) * 20000)); allow 5 sigma
    se = np.abs(row) * np.sqrt(p / ((1 - p) * 20000))
    assert (np.abs(y.mean(axis=0) - row) < 5 * se).all()
    assert not np.array_equal(y, x)


@pytest.mark.parametrize("fwd,bwd", LAYERS)
def test_gradcheck_with_fixed_generator(fwd, bwd):
    x = np.random.default_rng(8).standard_normal((6, 3, 4))
    f = lambda x: fwd(x, 0.5, np.random.default_rng(9))[0]                  # noqa: E731  fresh rng: same mask
    b = lambda d, x: {"x": bwd(d, fwd(x, 0.5, np.random.default_rng(9))[1])}    # noqa: E731
    y = f(x)
    assert (y == 0).any() and (y != 0).any()
    assert check_vjp(f, b, {"x": x})["x"] <= 1e-7


@pytest.mark.parametrize("fwd,bwd", LAYERS)
def test_backward_pure(fwd, bwd):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((6, 3, 4))
    y, cache = fwd(x, 0.3, np.random.default_rng(11))
    assert_backward_pure(bwd, rng.standard_normal(y.shape), cache)


@pytest.mark.parametrize("fwd,bwd", LAYERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("train", [True, False])
def test_dtype(fwd, bwd, dtype, train):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((6, 3, 4)).astype(dtype)
    y, cache = fwd(x, 0.3, np.random.default_rng(13), train)
    assert y.dtype == dtype
    assert bwd(rng.standard_normal(y.shape).astype(dtype), cache).dtype == dtype


@pytest.mark.parametrize("fwd,name", [(dropout_forward, "dropout"), (drop_path_forward, "drop_path")])
def test_errors(fwd, name):
    x = np.ones((2, 3))
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=rf"{name}: rate must be in \[0, 1\), got {bad}"):
            fwd(x, bad, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng=np.random.default_rng"):
        fwd(x, 0.5, None, True)


def test_keep_mask_equals_naive_twin():
    from minicct.layers.kernels import keep_mask, keep_mask_naive, raw_to_uint16, raw_to_uint16_naive
    for shape, p in [((7, 3, 5), 0.1), ((4,), 0.5), ((2, 3, 4, 4), 0.3)]:
        np.testing.assert_array_equal(keep_mask(np.random.default_rng(1), shape, p),
                                      keep_mask_naive(np.random.default_rng(1), shape, p))
    raw = np.random.default_rng(2).bit_generator.random_raw(9)
    np.testing.assert_array_equal(raw_to_uint16(raw), raw_to_uint16_naive(raw))


def test_keep_mask_rate_and_threshold():
    from minicct.layers.kernels import drop_threshold, keep_mask
    assert drop_threshold(0.1) == 6554 and abs(drop_threshold(0.1) / 65536 - 0.1) <= 2 ** -17
    m = keep_mask(np.random.default_rng(3), (200_000,), 0.1)
    # binomial standard error sqrt(p (1 - p) / n) ~ 6.7e-4: allow 5 sigma
    assert abs((~m).mean() - 6554 / 65536) < 5 * 6.7e-4
