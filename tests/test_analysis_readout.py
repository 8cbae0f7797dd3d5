"""Per-encoder read-out training (analysis/readout.py) on synthetic activations."""
import numpy as np
import pytest

from minicct.analysis.readout import (_step_grads, init_readout, readout_accuracy, readout_logits,
                                      train_readout)

K, T, D = 4, 6, 5


def _separable(n, seed, noise=0.7):
    """Class prototypes [K, T, D] + noise; the token mean also separates the classes."""
    rng = np.random.default_rng(100)
    proto = rng.standard_normal((K, T, D)).astype(np.float32)
    proto += 3 * rng.standard_normal((K, 1, D)).astype(np.float32)  # a class offset shared by all tokens
    r = np.random.default_rng(seed)
    y = r.integers(0, K, n)
    return (proto[y] + noise * r.standard_normal((n, T, D))).astype(np.float32), y


@pytest.mark.parametrize("mode", ["flat", "mean", "seqpool"])
def test_separable_data_is_learned(mode):
    A, y = _separable(600, 1)
    At, yt = _separable(300, 2)
    r = train_readout(A, y, K, epochs=6, A_test=At, y_test=yt, mode=mode)
    assert r.final_test_acc >= 0.9
    assert r.train_loss[-1] < r.train_loss[0]
    assert r.final_test_acc == pytest.approx(readout_accuracy(At, yt, r.W, mode=mode, pool=r.pool))
    assert r.W.shape == ((K, T, D) if mode == "flat" else (K, D))
    assert (r.pool is None) == (mode != "seqpool")


def test_fixed_seed_is_reproducible_and_lr_schedule_is_the_authors():
    A, y = _separable(250, 3)
    r1 = train_readout(A, y, K, epochs=3, seed=7)
    r2 = train_readout(A, y, K, epochs=3, seed=7)
    r3 = train_readout(A, y, K, epochs=3, seed=8)
    np.testing.assert_array_equal(r1.W, r2.W)
    np.testing.assert_array_equal(r1.train_loss, r2.train_loss)
    assert not np.array_equal(r1.W, r3.W)
    np.testing.assert_allclose(r1.lr, 0.01 * 0.975 ** np.arange(1, 4))


def test_one_step_is_nesterov_sgd_with_weight_decay():
    # one epoch, one batch: w1 = w0 - lr (g + mu b), b = g = grad + wd w0 (torch's first momentum buffer)
    A, y = _separable(40, 4)
    W0, _, _ = init_readout("flat", T, D, K, np.random.default_rng(11))
    r = train_readout(A, y, K, epochs=1, batch_size=40, seed=11)
    X = A.reshape(40, -1).astype(np.float64)
    z = X @ W0.reshape(K, -1).T.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(40), y] -= 1.0
    g = (p / 40).T @ X + 1e-3 * W0.reshape(K, -1)
    w1 = W0.reshape(K, -1) - 0.01 * 0.975 * (g + 0.975 * g)
    np.testing.assert_allclose(r.W.reshape(K, -1), w1, rtol=1e-4, atol=1e-6)
    assert np.abs(W0).max() <= 1 / np.sqrt(T * D)            # torch.nn.Linear init bound


@pytest.mark.parametrize("mode", ["flat", "mean", "seqpool"])
def test_readout_gradients_match_finite_differences(mode):
    A, y = _separable(8, 5)
    A = A.astype(np.float64)
    rng = np.random.default_rng(6)
    fan_in = A.shape[1] * A.shape[2] if mode == "flat" else D
    params = {"W^T": rng.standard_normal((fan_in, K))}      # the step's transposed weight [T*D or D, K]
    if mode == "seqpool":
        params["pool.weight"], params["pool.bias"] = rng.standard_normal((1, D)), rng.standard_normal(1)
    if mode == "mean":
        A = A.mean(axis=1)                                    # the step reads token averages Z [B, D]
    _, _, grads = _step_grads(A, y, params, mode)
    assert set(grads) == set(params)
    h = 1e-6
    for name in params:
        for idx in [(0,) * params[name].ndim, tuple(s - 1 for s in params[name].shape)]:
            p = params[name]
            old = p[idx]
            p[idx] = old + h
            lp = _step_grads(A, y, params, mode)[0]
            p[idx] = old - h
            lm = _step_grads(A, y, params, mode)[0]
            p[idx] = old
            assert grads[name][idx] == pytest.approx((lp - lm) / (2 * h), rel=1e-5, abs=1e-8)


def test_memmap_training_matches_in_memory(tmp_path):
    A, y = _separable(230, 6)
    mm = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.float32, shape=A.shape)
    mm[:] = A
    r_mem = train_readout(A, y, K, epochs=2, seed=1)
    r_map = train_readout(mm, y, K, epochs=2, seed=1)
    np.testing.assert_array_equal(r_mem.W, r_map.W)
    r16 = train_readout(A.astype(np.float16), y, K, epochs=1, seed=1)  # float16 cache, cast per batch
    assert r16.W.dtype == np.float32


def test_logits_progress_and_mask():
    A, y = _separable(120, 7)
    seen = []
    M = np.zeros((K, D), bool)
    M[np.arange(K), np.arange(K)] = True                      # node n keeps only label n (n < K)
    r = train_readout(A, y, K, epochs=2, progress=seen.append, mask=M)
    assert [s["epoch"] for s in seen] == [0, 1] and seen[0]["test_acc"] is None
    assert (r.W[~np.broadcast_to(M[:, None, :], r.W.shape)] == 0).all()
    np.testing.assert_allclose(readout_logits(A, r.W, batch_size=7), A.reshape(120, -1) @ r.W.reshape(K, -1).T,
                               rtol=1e-5, atol=1e-5)
    W0, _, _ = init_readout("flat", T, D, K, np.random.default_rng(0), mask=M)
    assert np.abs(W0[0, :, 0]).max() <= 1 / np.sqrt(T)        # masked fan-in T (Random_AFCC init)
    assert (W0[:, :, K:] == 0).all()


def test_bad_input_is_rejected():
    A, y = _separable(20, 8)
    with pytest.raises(ValueError, match=r"\[N, T, D\]"):
        train_readout(A[:, 0], y, K)
    with pytest.raises(ValueError, match="in 0..3"):
        train_readout(A, y + 1, K)
    with pytest.raises(ValueError, match="both A_test and y_test"):
        train_readout(A, y, K, A_test=A)
    with pytest.raises(ValueError, match="mode must be one of"):
        train_readout(A, y, K, mode="cls")
    with pytest.raises(ValueError, match="pooled=True"):
        train_readout(A, y, K, pooled=True, mode="mean")
    with pytest.raises(ValueError, match="mask must have shape"):
        train_readout(A, y, K, mask=np.ones((K, T)))
    with pytest.raises(ValueError, match="integer labels"):
        train_readout(A, y.astype(float), K)
