"""ANDC masks, the random control and masked retraining (analysis/andc.py)."""
import numpy as np
import pytest

from minicct.analysis.andc import (andc_mask, prune_readout, expand_mask, ff_mask, masked_retrain, pruned_fraction,
                                   random_mask_like)
from minicct.analysis.readout import readout_accuracy, train_readout


def _hand_B():
    """3 nodes, K = 4. Node 0: block {0, 2}; node 1: diagonal {1} plus noise (0, 1); node 2: nothing."""
    B = np.zeros((3, 4, 4), bool)
    B[0][np.ix_([0, 2], [0, 2])] = True
    B[1, 1, 1] = B[1, 0, 1] = True
    return B


def test_andc_mask_by_hand():
    M = andc_mask(_hand_B())
    assert M.shape == (4, 3)                                  # [K, D]
    assert M.astype(int).tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]]
    assert np.array_equal(andc_mask(_hand_B(), rule="clusters"), M)        # union of clusters = diagonal set
    Mc2 = andc_mask(_hand_B(), rule="clusters", min_cluster_size=2)
    assert Mc2.astype(int).tolist() == [[1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]]
    MT = andc_mask(_hand_B(), num_tokens=5)
    assert MT.shape == (4, 5, 3) and np.array_equal(MT, expand_mask(M, 5))
    assert all(np.array_equal(MT[:, t], M) for t in range(5))


def test_pruned_fraction_formula():
    M = andc_mask(_hand_B())
    assert pruned_fraction(M) == pytest.approx(1 - 3 / 12)
    assert pruned_fraction(expand_mask(M, 7)) == pytest.approx(1 - 3 / 12)
    assert pruned_fraction(np.ones((5, 2))) == 0.0


def test_prune_readout():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((4, 5, 3))
    M = andc_mask(_hand_B())
    P = prune_readout(W, M)
    assert np.array_equal(P[:, :, 0][[0, 2]], W[:, :, 0][[0, 2]]) and not P[[1, 3]][:, :, 0].any()
    assert not P[:, :, 2].any()
    with pytest.raises(ValueError, match="does not fit"):
        prune_readout(W, M.T)


def test_random_mask_keeps_degrees_and_spreads_labels():
    rng = np.random.default_rng(1)
    K, D = 10, 37
    M = rng.random((K, D)) < rng.uniform(0, 0.6, size=D)     # varied labels per node, some nodes empty
    R = random_mask_like(M, seed=3)
    assert R.shape == M.shape and R.dtype == bool
    np.testing.assert_array_equal(R.sum(0), M.sum(0))         # each node keeps its number of labels
    use = R.sum(1)
    assert use.max() - use.min() <= 1                         # every label used (nearly) equally often
    assert np.array_equal(R, random_mask_like(M, seed=3))
    assert not np.array_equal(R, random_mask_like(M, seed=4))


def test_masked_retraining_keeps_pruned_weights_exactly_zero():
    rng = np.random.default_rng(2)
    K, T, D, N = 3, 4, 6, 300
    proto = rng.standard_normal((K, T, D)).astype(np.float32)
    y = rng.integers(0, K, N)
    A = (proto[y] + 0.5 * rng.standard_normal((N, T, D))).astype(np.float32)
    dense = train_readout(A, y, K, epochs=3)
    B = np.zeros((D, K, K), bool)
    B[np.arange(D), np.arange(D) % K, np.arange(D) % K] = True   # node n keeps label n mod K
    M = andc_mask(B)
    r = masked_retrain(A, y, dense.W, M, epochs=2, A_test=A, y_test=y)
    pruned = ~np.broadcast_to(M[:, None, :], r.W.shape)
    assert np.all(r.W[pruned] == 0.0)
    assert not np.array_equal(r.W[~pruned], dense.W[~pruned])  # the kept weights were trained
    assert r.mask is not None and np.array_equal(r.mask, M)
    assert r.final_test_acc >= readout_accuracy(A, y, prune_readout(dense.W, M)) - 0.05
    assert (dense.W[pruned] != 0).any()                       # the caller's W was not modified


def test_ff_mask_by_hand():
    hidden = [{0}, {1, 2}, set(), {3}]                        # F = 4 hidden nodes
    out = [{2}, {0, 3}, {1}]                                  # D = 3 output nodes
    M = ff_mask(hidden, out, num_classes=4)
    assert M.shape == (3, 4)
    assert M.astype(int).tolist() == [[0, 1, 0, 0], [1, 0, 0, 1], [0, 1, 0, 0]]
    Lh = np.zeros((4, 4), bool)
    for a, s in enumerate(hidden):
        Lh[a, list(s)] = True
    assert np.array_equal(ff_mask(Lh, out), M)
    with pytest.raises(ValueError, match="num_classes"):
        ff_mask(hidden, out)
    with pytest.raises(ValueError, match="outside"):
        ff_mask([{5}], out, num_classes=4)
