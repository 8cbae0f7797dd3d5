"""Greedy clusters, per-node noise/signal and layer summaries (analysis/clusters.py) on hand-built matrices."""
import numpy as np
import pytest

from minicct.analysis.clusters import (greedy_clusters, greedy_clusters_reference, layer_summary, node_labels,
                                      node_stats)
from minicct.analysis.snp import normalise_threshold


def _blocks(K, groups, extra=()):
    B = np.zeros((K, K), dtype=bool)
    for g in groups:
        B[np.ix_(g, g)] = True
    for i, j in extra:
        B[i, j] = True
    return B


def test_matches_authors_algorithm_on_random_matrices():
    rng = np.random.default_rng(0)
    for trial in range(300):
        K = int(rng.integers(1, 14))
        B = rng.random((K, K)) < rng.uniform(0.1, 0.9)
        if trial % 2:
            B = B | B.T                                       # symmetric: many multi-label clusters
        np.fill_diagonal(B, rng.random(K) < 0.8)
        assert greedy_clusters(B) == greedy_clusters_reference(B.astype(int))


def test_permuted_block_diagonal_groups_are_found():
    groups = [[0, 5, 7], [2, 9], [3], [1, 4, 6, 8, 10, 11]]
    B = _blocks(12, groups)
    assert greedy_clusters(B) == [[0, 5, 7], [1, 4, 6, 8, 10, 11], [2, 9], [3]]
    st = node_stats(B[None])
    assert st.n_clusters[0] == 4 and st.labels_in_clusters[0] == 12
    assert st.signal[0] == 9 + 4 + 1 + 36 == st.total_ones[0]
    assert st.noise[0] == 0 and st.column_noise[0] == 0


def test_overlapping_blocks_greedy_order_decides():
    # all-ones blocks {0, 2} and {1, 2, 3}. Step by step: lb=0 -> try 1 (B[0,1]=0, no), 2 (yes), 3 (B[0,3]=0,
    # no) -> [0, 2]; lb=1 -> try 3 (yes) -> [1, 3]. The larger clique {1, 2, 3} is NOT found (greedy, not max).
    B = _blocks(4, [[0, 2], [1, 2, 3]])
    assert greedy_clusters(B) == [[0, 2], [1, 3]]
    st = node_stats(B[None])
    assert st.total_ones[0] == 12 and st.signal[0] == 8
    assert st.noise[0] == 4                                   # (1,2), (2,1), (2,3), (3,2)
    assert st.column_noise[0] == 4                            # all four sit in cluster-label columns


def test_asymmetric_entry_breaks_a_cluster():
    B = _blocks(3, [[0, 1]])
    B[1, 0] = False                                           # (0,1) above threshold but not (1,0)
    assert greedy_clusters(B) == [[0], [1]]


def test_stray_noise_counts():
    B = _blocks(6, [[0, 1]], extra=[(3, 0)])                  # true label 3 pushes output 0 (a cluster label)
    st = node_stats(B[None])
    assert greedy_clusters(B) == [[0, 1]]
    assert st.noise[0] == 1 and st.column_noise[0] == 1
    B[3, 4] = True                                            # column 4 is no cluster label
    st = node_stats(B[None])
    assert st.noise[0] == 2 and st.column_noise[0] == 1


def test_empty_and_negative_max_nodes_have_no_clusters():
    V = np.zeros((3, 4, 4))
    V[1] = -np.abs(np.random.default_rng(1).standard_normal((4, 4))) - 0.1   # all negative: max < 0
    V[2, 0, 1] = V[2, 2, 3] = 1.0                             # only off-diagonal ones
    B = normalise_threshold(V)
    assert not B[:2].any()
    st = node_stats(B)
    assert st.n_clusters.tolist() == [0, 0, 0]
    assert st.noise.tolist() == [-1, -1, -1]
    assert st.noise_with_zeros.tolist() == [0, 0, 2]
    assert st.column_noise.tolist() == [0, 0, 0]
    s = layer_summary(st)
    assert s["n_nodes_with_cluster"] == 0 and np.isnan(s["snr"]) and np.isnan(s["mean_noise"])
    assert s["mean_noise_with_zeros"] == pytest.approx(2 / 3)


def test_noise_plus_signal_is_total_and_labels_are_the_diagonal():
    rng = np.random.default_rng(2)
    B = rng.random((50, 15, 15)) < 0.25
    B |= B.transpose(0, 2, 1) & (rng.random((50, 15, 15)) < 0.5)
    st = node_stats(B)
    has = st.n_clusters > 0
    assert np.array_equal(st.noise[has] + st.signal[has], st.total_ones[has])
    assert np.array_equal(st.noise_with_zeros + st.signal, st.total_ones)
    assert (st.noise[~has] == -1).all()
    diag = np.diagonal(B, axis1=1, axis2=2)
    assert np.array_equal(st.labels_in_clusters, diag.sum(1))
    assert np.array_equal(st.in_cluster, diag)
    assert np.array_equal(node_labels(B, "clusters"), node_labels(B, "diagonal"))
    # column noise, straight from the code's definition: zero the blocks, count ones in cluster columns
    for n in range(50):
        Bz = B[n].copy()
        for c in st.clusters[n]:
            Bz[np.ix_(c, c)] = False
        cols = [j for c in st.clusters[n] for j in c]
        assert st.column_noise[n] == Bz[:, cols].sum()
        # every cluster is an all-ones block and clusters are disjoint
        assert all(B[n][np.ix_(c, c)].all() for c in st.clusters[n])
        assert len(cols) == len(set(cols))


def test_min_cluster_size_labels():
    B = _blocks(5, [[0, 3], [1], [4]])
    L = node_labels(B[None], "clusters", min_cluster_size=2)
    assert L[0].tolist() == [True, False, False, True, False]
    with pytest.raises(ValueError, match="min_cluster_size"):
        node_labels(B[None], "diagonal", min_cluster_size=2)


def test_layer_summary_by_hand():
    n0 = _blocks(5, [[0, 1], [3]], extra=[(2, 0)])            # S = 5, N = 1, col noise 1, 2 clusters
    n1 = _blocks(5, [[2, 3, 4]], extra=[(0, 1), (1, 0), (0, 4)])  # S = 9, N = 3, col noise 1, 1 cluster
    n2 = np.zeros((5, 5), bool)                               # no cluster
    st = node_stats(np.stack([n0, n1, n2]))
    s = layer_summary(st)
    assert s["n_nodes_with_cluster"] == 2
    assert s["mean_clusters_per_node"] == pytest.approx(1.0)
    assert s["mean_clusters_per_node_with_cluster"] == pytest.approx(1.5)
    assert s["mean_labels_in_clusters"] == pytest.approx(2.0)  # (3 + 3 + 0) / 3
    assert s["mean_labels_in_clusters_with_cluster"] == pytest.approx(3.0)
    assert s["mean_cluster_size"] == pytest.approx(2.0)       # sizes 2, 1, 3
    assert s["cluster_size_hist"].tolist() == [0, 1, 1, 1, 0, 0]
    assert s["mean_noise"] == pytest.approx(2.0)
    assert s["mean_noise_with_zeros"] == pytest.approx(4 / 3)
    assert s["snr"] == pytest.approx(7.0 / 2.0)               # <S> = 7, <N> = 2
    assert s["snr_a"] == pytest.approx(3.0 / 2.0)
    assert s["snr_b"] == pytest.approx(np.median([5 / 1, 9 / 3]))
    assert s["snr_d"] == pytest.approx(7.0 / 1.0)


def test_layer_summary_field_ratio_and_consistency_check():
    V = np.full((1, 4, 4), 0.1)
    V[0, :2, :2] = 1.0                                        # cluster {0, 1}
    V[0, 3, 0] = 0.5                                          # noise above 0.3
    st = node_stats(normalise_threshold(V))
    s = layer_summary(st, V=V)
    assert s["snr_c"] == pytest.approx(1.0 / 0.5)
    with pytest.raises(ValueError, match="does not give the B"):
        layer_summary(st, V=V, threshold=0.6)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="square"):
        greedy_clusters(np.ones((3, 4)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        node_stats(np.full((2, 3, 3), 0.5))
    with pytest.raises(ValueError, match="NodeStats"):
        layer_summary({"n": 1})


def test_layer_of_realistic_size_is_fast():
    # a few hundred nodes x K = 100, typical sparse matrices: the per-node greedy loop stays cheap
    rng = np.random.default_rng(3)
    B = rng.random((256, 100, 100)) < 0.02
    idx = np.arange(100)
    B[:, idx, idx] = rng.random((256, 100)) < 0.05
    import time
    t = time.perf_counter()
    layer_summary(node_stats(B))
    assert time.perf_counter() - t < 5.0                      # measured ~0.05 s; generous for a shared CI box
