"""Head specialisation metrics (analysis/heads.py) on constructed node matrices."""
import numpy as np
import pytest

from minicct.analysis.heads import (designated_labels, head_fields, head_label_counts, head_matrix, head_metrics,
                                    shuffled_control, specialisation_index)
from minicct.analysis.snp import node_fields

h, d, K = 4, 5, 12                                            # D = 20 nodes


def _diag_B(L):
    """[D, K] label sets -> B [D, K, K] with exactly those diagonal ones."""
    B = np.zeros((L.shape[0], K, K), bool)
    n, j = np.nonzero(L)
    B[n, j, j] = True
    return B


def _specialised(seed=0):
    """Head g's nodes only ever hold labels 3g..3g+2."""
    rng = np.random.default_rng(seed)
    L = np.zeros((h * d, K), bool)
    for n in range(h * d):
        g = n // d
        L[n, 3 * g + rng.choice(3, size=2, replace=False)] = True
    return L


def test_fully_specialised_heads():
    B = _diag_B(_specialised())
    c = head_label_counts(B, d)
    assert c.shape == (h, K) and c.sum() == 2 * h * d
    m = head_metrics(c)
    assert m["si"] == pytest.approx(1.0)
    assert m["mean_jaccard"] == pytest.approx(0.0)
    assert m["mean_heads_per_label"] == pytest.approx(1.0)
    assert np.nanmax(m["entropy"]) == pytest.approx(0.0)
    real = m["si"]
    mean, std = shuffled_control(B, d, n_shuffles=20, seed=1)
    assert mean < real - 0.2 and std >= 0.0
    assert (mean, std) == shuffled_control(B, d, n_shuffles=20, seed=1)


def test_identical_heads():
    one = _specialised()[:d]                                  # head 0's nodes, copied into every head
    B = _diag_B(np.tile(one, (h, 1)))
    c = head_label_counts(B, d)
    assert (c == c[0]).all()
    m = head_metrics(c)
    assert m["si"] == pytest.approx(1 / h)
    assert m["mean_jaccard"] == pytest.approx(1.0)
    seen = c[0] > 0
    assert m["mean_entropy"] == pytest.approx(np.log(h))
    assert m["mean_entropy_normalised"] == pytest.approx(1.0)
    assert m["coverage"] == pytest.approx(seen.mean())
    assert m["heads_per_label"][seen].tolist() == [h] * int(seen.sum())


def test_counts_designation_and_metrics_by_hand():
    c = np.array([[2, 0, 1, 0],
                  [1, 0, 1, 3]])
    assert designated_labels(c, "threshold", tau=1).astype(int).tolist() == [[1, 0, 1, 0], [1, 0, 1, 1]]
    assert designated_labels(c, "threshold", tau=2).astype(int).tolist() == [[1, 0, 0, 0], [0, 0, 0, 1]]
    assert designated_labels(c, "max").astype(int).tolist() == [[1, 0, 1, 0], [0, 0, 1, 1]]  # tie on label 2
    assert specialisation_index(c) == pytest.approx(np.mean([2 / 3, 1 / 2, 1.0]))
    m = head_metrics(c)
    assert m["jaccard"][0, 1] == pytest.approx(2 / 3)
    assert m["coverage"] == pytest.approx(3 / 4)
    assert np.isnan(m["entropy"][1])
    p = np.array([2 / 3, 1 / 3])
    assert m["entropy"][0] == pytest.approx(-(p * np.log(p)).sum())
    assert m["labels_per_head"].tolist() == [2, 3]
    B = np.zeros((4, 3, 3), bool)
    B[0, 0, 0] = B[1, 0, 0] = B[1, 2, 2] = B[3, 1, 1] = True
    B[2, 0, 1] = True                                         # off-diagonal: not counted
    assert head_label_counts(B, 2).tolist() == [[2, 0, 1], [0, 1, 0]]


def test_head_fields_equal_silencing_other_heads():
    rng = np.random.default_rng(5)
    N, T = 90, 3
    A = rng.standard_normal((N, T, h * d)).astype(np.float32)
    y = rng.integers(0, K, N)
    W = rng.standard_normal((K, T, h * d)).astype(np.float32)
    V = node_fields(A, y, W, K)
    Vh = head_fields(V, d)
    assert Vh.shape == (h, K, K)
    for g in range(h):
        Wg = np.zeros_like(W)
        Wg[:, :, g * d:(g + 1) * d] = W[:, :, g * d:(g + 1) * d]   # read-out of head g only
        np.testing.assert_allclose(node_fields(A, y, Wg, K).sum(0), Vh[g], rtol=1e-6, atol=1e-8)
        np.testing.assert_array_equal(head_matrix(V, d, g), Vh[g])


def test_bad_input_is_rejected():
    B = _diag_B(_specialised())
    with pytest.raises(ValueError, match="divisor"):
        head_label_counts(B, 7)
    with pytest.raises(ValueError, match="head index"):
        head_matrix(np.zeros((h * d, K, K)), d, h)
    with pytest.raises(ValueError, match="rule"):
        designated_labels(np.ones((2, 3)), rule="mode")
    with pytest.raises(ValueError, match="non-negative"):
        head_metrics(-np.ones((2, 3)))
