"""Node fields, normalisation / threshold and single-node predictions (analysis/snp.py) on random arrays."""
import numpy as np
import pytest

from minicct.analysis.readout import pooled_features, readout_logits
from minicct.analysis.snp import (class_means, node_fields, node_fields_reference, normalise_fields,
                                  normalise_threshold, per_image_fields, pooled_node_fields, single_node_predictions,
                                  single_node_summary)

N, T, D, K = 230, 5, 7, 4


def _data(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((N, T, D)).astype(dtype)
    y = rng.choice(K, size=N, p=[0.5, 0.3, 0.15, 0.05])       # unbalanced classes
    W = rng.standard_normal((K, T, D)).astype(np.float32)
    pool = (rng.standard_normal((1, D)).astype(np.float32), rng.standard_normal(1).astype(np.float32))
    Wp = rng.standard_normal((K, D)).astype(np.float32)
    return A, y, W, Wp, pool


def _class_mean_logits(logits, y):
    return np.stack([logits[y == i].astype(np.float64).mean(0) for i in range(K)])   # [K (true), K (out)]


def test_fields_sum_over_nodes_is_class_mean_logits():
    A, y, W, Wp, pool = _data()
    V = node_fields(A, y, W, K, chunk=64)
    assert V.shape == (D, K, K) and V.dtype == np.float64
    np.testing.assert_allclose(V.sum(0), _class_mean_logits(readout_logits(A, W), y), rtol=1e-5, atol=1e-5)
    for mode, p in (("mean", None), ("seqpool", pool)):
        Vp = node_fields(A, y, Wp, K, chunk=50, mode=mode, pool=p)
        np.testing.assert_allclose(Vp.sum(0), _class_mean_logits(readout_logits(A, Wp, mode=mode, pool=p), y),
                                   rtol=1e-5, atol=1e-5)


def test_fields_follow_the_per_image_definition():
    A, y, W, Wp, pool = _data(1)
    h = np.einsum("ktn,jtn->nkj", A.astype(np.float64), W.astype(np.float64))   # h_n(k, j), [D, N, K]
    np.testing.assert_allclose(per_image_fields(A, W), h, rtol=1e-4, atol=1e-4)
    want = np.stack([h[:, y == i].mean(axis=1) for i in range(K)], axis=1)         # [D, K, K]
    np.testing.assert_allclose(node_fields(A, y, W, K, chunk=17), want, rtol=1e-6, atol=1e-6)
    Z = A.mean(axis=1).astype(np.float64)                                          # mean read-out
    hp = Z.T[:, :, None] * Wp.T.astype(np.float64)[:, None, :]
    wantp = np.stack([hp[:, y == i].mean(axis=1) for i in range(K)], axis=1)
    np.testing.assert_allclose(node_fields(A, y, Wp, K, mode="mean"), wantp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled_node_fields(pooled_features(A, "seqpool", pool), y, Wp, K),
                               node_fields(A, y, Wp, K, mode="seqpool", pool=pool))


def test_node_fields_equal_their_per_image_reference():
    A, y, W, Wp, pool = _data(2)
    np.testing.assert_allclose(node_fields(A, y, W, K, chunk=19), node_fields_reference(A, y, W, K),
                               rtol=1e-5, atol=1e-6)   # float32 class sums
    for mode, p in (("mean", None), ("seqpool", pool)):
        np.testing.assert_allclose(node_fields(A, y, Wp, K, mode=mode, pool=p),
                                   node_fields_reference(A, y, Wp, K, mode=mode, pool=p), rtol=1e-5, atol=1e-6)


def test_memmap_and_float16_inputs(tmp_path):
    A, y, W, _, _ = _data(2)
    mm = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.float32, shape=A.shape)
    mm[:] = A
    np.testing.assert_array_equal(node_fields(mm, y, W, K, chunk=40), node_fields(A, y, W, K, chunk=40))
    A_nc = np.ascontiguousarray(A.transpose(0, 2, 1)).transpose(0, 2, 1)   # same values, not C-contiguous
    np.testing.assert_array_equal(node_fields(A_nc, y, W, K, chunk=40), node_fields(A, y, W, K, chunk=40))
    A16 = A.astype(np.float16)
    mm16 = np.lib.format.open_memmap(tmp_path / "b.npy", mode="w+", dtype=np.float16, shape=A.shape)
    mm16[:] = A16
    np.testing.assert_array_equal(node_fields(mm16, y, W, K, chunk=40),
                                  node_fields(A16.astype(np.float32), y, W, K, chunk=40))


def test_class_means_and_missing_class():
    A, y, _, _, _ = _data(3)
    M, counts = class_means(A, y, K, chunk=33)
    np.testing.assert_allclose(M, np.stack([A[y == i].mean(0) for i in range(K)]), rtol=1e-5, atol=1e-6)
    assert counts.tolist() == np.bincount(y, minlength=K).tolist()
    with pytest.warns(UserWarning, match="no images"):
        M5, c5 = class_means(A, y, K + 1)
    assert c5[K] == 0 and not M5[K].any()


def test_normalise_threshold_by_hand():
    V = np.zeros((4, 3, 3))
    V[0] = [[2.0, 0.7, 0.0], [0.5, 1.0, -1.0], [0.61, 0.0, 0.6]]
    V[1] = -np.ones((3, 3)) - np.eye(3)                       # max -1: would flip signs; treated as empty
    V[3] = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 3.0]]
    B = normalise_threshold(V)
    assert B.dtype == bool
    assert B[0].astype(int).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]   # / 2, strict > 0.3
    assert not B[1].any() and not B[2].any()
    assert B[3].sum() == 1 and B[3, 2, 2]
    Vn, valid = normalise_fields(V)
    assert valid.tolist() == [True, False, False, True]
    assert Vn[0].max() == 1.0 and not Vn[1].any()


def test_raising_the_threshold_never_adds_ones():
    rng = np.random.default_rng(4)
    for _ in range(30):
        V = rng.standard_normal((6, 5, 5)) + rng.uniform(-1, 1)
        t1, t2 = np.sort(rng.uniform(-0.5, 0.99, size=2))
        B1, B2 = normalise_threshold(V, t1), normalise_threshold(V, t2)
        assert not (B2 & ~B1).any()


def test_single_node_predictions_and_summary():
    A, y, W, Wp, pool = _data(5)
    P = single_node_predictions(A, W, chunk=50)
    assert P.shape == (D, N) and P.dtype == np.int32
    assert np.array_equal(P, per_image_fields(A, W).argmax(axis=2))
    Pp = single_node_predictions(A, Wp, mode="seqpool", pool=pool)
    assert np.array_equal(Pp, per_image_fields(A, Wp, "seqpool", pool).argmax(axis=2))
    s = single_node_summary(P, y, K)
    for n in range(D):
        assert s["accuracy"][n] == pytest.approx(np.mean(P[n] == y))
        _, cnt = np.unique(P[n], return_counts=True)
        assert s["top_fraction"][n] == pytest.approx(cnt.max() / N)
        assert s["label_counts"][n].sum() == N
    assert s["chance"] == 1 / K


def test_a_node_that_always_picks_one_label():
    # node 0 is a constant positive input with a read-out that favours label 2: it predicts 2 for every image
    A = np.zeros((10, 3, 2), np.float32)
    A[:, :, 0] = 1.0
    W = np.zeros((3, 3, 2), np.float32)
    W[2, :, 0] = 1.0
    y = np.arange(10) % 3
    s = single_node_summary(single_node_predictions(A, W), y, 3)
    assert s["top_label"][0] == 2 and s["top_fraction"][0] == 1.0
    assert s["accuracy"][0] == pytest.approx(np.mean(y == 2))


def test_bad_input_is_rejected():
    A, y, W, Wp, pool = _data()
    with pytest.raises(ValueError, match="shape"):
        node_fields(A, y, W[:, :, :-1], K)
    with pytest.raises(ValueError, match="needs pool"):
        node_fields(A, y, Wp, K, mode="seqpool")
    with pytest.raises(ValueError, match=r"\[N, T, D\]"):
        node_fields(A[0], y, W, K)
    with pytest.raises(ValueError, match="in 0..3"):
        node_fields(A, y + 1, W, K)
    with pytest.raises(ValueError, match="NaN"):
        normalise_threshold(np.full((1, 2, 2), np.nan))
    with pytest.raises(ValueError, match=r"\[D, K, K\]"):
        normalise_threshold(np.ones((3, 3)))


def test_threshold_at_exact_ties_on_integer_fields():
    # a field exactly at 0.3 x max must not pass the strict threshold (the code divides, then compares with >)
    B = normalise_threshold(np.array([[[10, 3], [0, 0]]]), 0.3)
    np.testing.assert_array_equal(B[0], [[True, False], [False, False]])
    for vmax in (10, 20, 30, 100, 1000, 70):
        tie = 3 * vmax // 10
        V = np.array([[[vmax, tie], [tie + 1, 0]]], dtype=np.int64)
        np.testing.assert_array_equal(normalise_threshold(V, 0.3)[0], [[True, False], [True, False]])
        np.testing.assert_array_equal(normalise_threshold(V.astype(np.float32), 0.3)[0],
                                      [[True, False], [True, False]])
    # the same at other thresholds with exact rational ties: t = a / m
    for a, m in ((1, 2), (1, 4), (7, 10), (9, 10)):
        V = np.array([[[m, a], [a + 1, 0]]])
        np.testing.assert_array_equal(normalise_threshold(V, a / m)[0], [[True, False], [True, False]])
    Vn, valid = normalise_fields(np.array([[[10, 3], [0, 0]]]))
    assert valid[0] and Vn[0, 0, 1] == 0.3
