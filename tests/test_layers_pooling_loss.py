"""Sequence pooling and softmax cross-entropy (label smoothing, soft targets)."""
import math

import numpy as np
import pytest

from minicct.gradcheck import check_vjp, numerical_vjp
from minicct.layers.activations import softmax_backward
from minicct.layers.loss import smooth_targets, softmax_cross_entropy_backward, softmax_cross_entropy_forward
from minicct.layers.pooling import seqpool_backward, seqpool_forward
from _purity import assert_backward_pure


# --------------------------------------------------------------------------------------------- seqpool

def _seqpool_inputs(rng, N=3, T=6, D=5, dtype=np.float64):
    return (rng.standard_normal((N, T, D)).astype(dtype), rng.standard_normal((1, D)).astype(dtype),
            rng.standard_normal(1).astype(dtype))


def test_seqpool_forward_by_hand():
    rng = np.random.default_rng(0)
    x, w, b = _seqpool_inputs(rng)
    z, cache = seqpool_forward(x, w, b)
    for n in range(x.shape[0]):
        s = x[n] @ w[0] + b[0]                                   # [T] scores
        a = np.exp(s) / np.exp(s).sum()                          # softmax over tokens
        np.testing.assert_allclose(z[n], a @ x[n], rtol=1e-13)
        np.testing.assert_allclose(cache[2][n, :, 0], a, rtol=1e-13)


def test_seqpool_gradcheck():
    rng = np.random.default_rng(1)
    x, w, b = _seqpool_inputs(rng)
    fwd = lambda x, w, b: seqpool_forward(x, w, b)[0]              # noqa: E731

    def bwd(d, x, w, b):
        dx, dw, db = seqpool_backward(d, seqpool_forward(x, w, b)[1])
        return {"x": dx, "w": dw}

    # b is left out here: both its gradients are rounding noise around 0 (~1e-16 analytic, ~1e-11 numerical),
    # whose relative error means nothing; test_seqpool_bias_gradient_is_zero bounds them absolutely.
    errs = check_vjp(fwd, bwd, {"x": x, "w": w, "b": b})
    assert set(errs) == {"x", "w"} and max(errs.values()) <= 1e-7, errs


@pytest.mark.parametrize("seed", range(5))
def test_seqpool_bias_gradient_is_zero(seed):
    """softmax(s + c) = softmax(s): the score bias cannot change z, its gradient is 0 up to rounding."""
    rng = np.random.default_rng(seed)
    x, w, b = _seqpool_inputs(rng, N=4, T=9, D=6)
    z, cache = seqpool_forward(x, w, b)
    dz = rng.standard_normal(z.shape)
    _, dw, db = seqpool_backward(dz, cache)
    assert db.shape == (1,)
    assert np.abs(dw).max() > 0.1
    assert np.abs(db).max() <= 1e-12 * np.abs(dw).max()
    num_db = numerical_vjp(lambda: seqpool_forward(x, w, b)[0], b, dz)   # (z(b+h) - z(b-h)) / 2h: rounding only
    assert np.abs(num_db).max() <= 1e-9 * np.abs(dw).max()
    np.testing.assert_allclose(seqpool_forward(x, w, b + 3.0)[0], z, rtol=1e-12)


def test_seqpool_backward_pure():
    rng = np.random.default_rng(3)
    z, cache = seqpool_forward(*_seqpool_inputs(rng))
    assert_backward_pure(seqpool_backward, rng.standard_normal(z.shape), cache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_seqpool_dtype(dtype):
    rng = np.random.default_rng(4)
    z, cache = seqpool_forward(*_seqpool_inputs(rng, dtype=dtype))
    assert z.dtype == dtype
    assert all(g.dtype == dtype for g in seqpool_backward(rng.standard_normal(z.shape).astype(dtype), cache))


def test_seqpool_errors():
    w, b = np.zeros((1, 5)), np.zeros(1)
    with pytest.raises(ValueError, match=r"\[N, T, D\].*got shape \(6, 5\)"):
        seqpool_forward(np.zeros((6, 5)), w, b)
    with pytest.raises(ValueError, match=r"\(1, 4\).*\(1,\).*\(1, 5\)"):
        seqpool_forward(np.zeros((2, 6, 4)), w, b)


# ------------------------------------------------------------------------------------------------ loss

def test_loss_hand_formula_with_smoothing():
    logits = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    labels = np.array([2, 0])
    eps, K = 0.1, 3
    loss, _ = softmax_cross_entropy_forward(logits, labels, smoothing=eps)
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        lse = math.log(sum(math.exp(v) for v in row))
        for k, v in enumerate(row):
            q = eps / K + (1 - eps if k == y else 0.0)           # timm: off eps/K, on 1 - eps + eps/K
            total -= q * (v - lse)
    assert loss == pytest.approx(total / 2, rel=1e-14)
    assert isinstance(loss, float)


def test_loss_at_uniform_logits_is_log_k():
    for eps in (0.0, 0.2):
        loss, _ = softmax_cross_entropy_forward(np.zeros((4, 10)), np.array([0, 3, 9, 5]), smoothing=eps)
        assert loss == pytest.approx(math.log(10), rel=1e-14)


def test_soft_targets_mix_linearly():
    """Mixup: the loss of a mixed target is the same mix of the two label losses (also with smoothing)."""
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((4, 6))
    y1, y2, lam = np.array([0, 2, 5, 1]), np.array([3, 2, 0, 4]), 0.3
    onehot = np.eye(6)
    soft = lam * onehot[y1] + (1 - lam) * onehot[y2]
    for eps in (0.0, 0.1):
        l_soft, c_soft = softmax_cross_entropy_forward(logits, soft, smoothing=eps)
        l1, c1 = softmax_cross_entropy_forward(logits, y1, smoothing=eps)
        l2, c2 = softmax_cross_entropy_forward(logits, y2, smoothing=eps)
        assert l_soft == pytest.approx(lam * l1 + (1 - lam) * l2, rel=1e-13)
        np.testing.assert_allclose(softmax_cross_entropy_backward(1.0, c_soft),
                                   lam * softmax_cross_entropy_backward(1.0, c1)
                                   + (1 - lam) * softmax_cross_entropy_backward(1.0, c2), rtol=0, atol=1e-15)
    np.testing.assert_allclose(smooth_targets(soft, 6, 0.1, np.float64), 0.9 * soft + 0.1 / 6, rtol=1e-15)


@pytest.mark.parametrize("targets,eps", [("labels", 0.0), ("labels", 0.1), ("soft", 0.0), ("soft", 0.2)])
def test_loss_gradcheck(targets, eps):
    rng = np.random.default_rng(6)
    logits = 2 * rng.standard_normal((5, 4))
    t = rng.integers(0, 4, 5) if targets == "labels" else rng.dirichlet(np.ones(4), size=5)
    fwd = lambda z: np.float64(softmax_cross_entropy_forward(z, t, eps)[0])     # noqa: E731
    bwd = lambda d, z: {"z": softmax_cross_entropy_backward(d, softmax_cross_entropy_forward(z, t, eps)[1])}  # noqa
    assert check_vjp(fwd, bwd, {"z": logits})["z"] <= 1e-7


def test_loss_gradient_is_the_softmax_identity():
    """(p - q)/N equals softmax_backward(p, -q/p)/N: the loss uses the same softmax VJP, simplified."""
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((6, 5))                          # p not tiny
    for t in (rng.integers(0, 5, 6), rng.dirichlet(np.ones(5), size=6)):
        _, (p, q) = softmax_cross_entropy_forward(logits, t, smoothing=0.1)
        assert p.min() > 1e-3
        g = softmax_cross_entropy_backward(1.0, (p, q))
        np.testing.assert_allclose(g, softmax_backward(p, -q / p, axis=1) / 6, rtol=0, atol=1e-15)
        np.testing.assert_allclose(g, (p - q) / 6, rtol=0, atol=1e-16)


def test_loss_backward_pure():
    rng = np.random.default_rng(8)
    _, cache = softmax_cross_entropy_forward(rng.standard_normal((4, 3)), np.array([0, 1, 2, 1]), 0.1)
    assert_backward_pure(softmax_cross_entropy_backward, 0.7, cache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("soft", [False, True])
def test_loss_dtype(dtype, soft):
    rng = np.random.default_rng(9)
    logits = rng.standard_normal((4, 3)).astype(dtype)
    t = rng.dirichlet(np.ones(3), size=4) if soft else np.array([0, 1, 2, 1])
    loss, cache = softmax_cross_entropy_forward(logits, t, 0.1)
    assert isinstance(loss, float) and np.isfinite(loss)
    assert all(c.dtype == dtype for c in cache)
    assert softmax_cross_entropy_backward(1.0, cache).dtype == dtype


def test_loss_errors():
    z = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"0\.\.3.*0\.\.4"):
        softmax_cross_entropy_forward(z, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"0\.\.3.*-1\.\.2"):
        softmax_cross_entropy_forward(z, np.array([-1, 2, 1]))
    with pytest.raises(ValueError, match="integer labels.*float64"):
        softmax_cross_entropy_forward(z, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="sum to 1"):
        softmax_cross_entropy_forward(z, np.full((3, 4), 0.5))
    with pytest.raises(ValueError, match="sum to 1"):
        softmax_cross_entropy_forward(z, np.array([[1.5, -0.5, 0, 0]] * 3))
    with pytest.raises(ValueError, match=r"\[N, 4\].*\(3, 5\)"):
        softmax_cross_entropy_forward(z, np.full((3, 5), 0.2))
    with pytest.raises(ValueError, match="3 logits rows but 2 targets"):
        softmax_cross_entropy_forward(z, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\[N, K\].*\(12,\)"):
        softmax_cross_entropy_forward(z.ravel(), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"smoothing.*got 1\.0"):
        softmax_cross_entropy_forward(z, np.array([0, 1, 2]), smoothing=1.0)
