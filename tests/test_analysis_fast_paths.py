"""The speed kernels of the SNP analysis against their naive twins, and parallel read-outs against serial ones.

all_assignments (vectorised enumeration) vs _all_assignments_naive; clusters_inside (bit masks) vs
_clusters_inside_naive; seqpool_backward without dx (the read-out's) vs with it; the "mean" read-out's pooled-once
features vs the per-batch token mean; seed_sweep on 2 threads vs 1 thread (bit for bit).
"""
import numpy as np
import pytest

from minicct.analysis._validate import take_rows
from minicct.analysis.nulls import (_all_assignments_naive, _clusters_inside_naive, all_assignments,
                                    clusters_inside, group_permutation_test, n_assignments)
from minicct.analysis.readout import pooled_features
from minicct.analysis.replicate import seed_sweep
from minicct.layers.pooling import seqpool_backward, seqpool_forward


@pytest.mark.parametrize("g", [[0, 0, 1, 1, 1, 2, 2, 2, 2], [1, 0, 2, 0, 1, 3, 2, 0], [0] * 7 + [1] * 7,
                               [0, 0, 0], [3, 1]])
def test_all_assignments_equals_the_naive_enumeration(g):
    A = all_assignments(np.array(g))
    assert np.array_equal(A, _all_assignments_naive(np.array(g)))          # same rows, same order
    assert A.shape == (n_assignments(g), len(g)) and len(np.unique(A, axis=0)) == len(A)
    assert (np.sort(A, axis=1) == np.sort(g)).all()                         # every row keeps the group sizes


def test_clusters_inside_equals_the_naive_count():
    rng = np.random.default_rng(0)
    K = 12
    clusters = [rng.choice(K, rng.integers(1, 6), replace=False).tolist() for _ in range(40)]
    clusters += clusters[:15] + [[3, 3, 4]]                                 # repeats count with multiplicity
    for g in (np.repeat([0, 1], 6), np.repeat([0, 1, 2], 4), np.array([0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 0, 1])):
        P = np.concatenate([all_assignments(g)[:500], g[np.argsort(rng.random((300, K)), axis=1)]])
        assert np.array_equal(clusters_inside(clusters, P), _clusters_inside_naive(clusters, P))
        assert clusters_inside(clusters, g) == _clusters_inside_naive(clusters, g)
    r = group_permutation_test(clusters, np.repeat([0, 1], 6))              # exact: every assignment enumerated
    assert r["method"] == "exact" and r["n_null"] == n_assignments(np.repeat([0, 1], 6)) == 924


def test_seqpool_backward_without_dx_gives_the_same_parameter_gradients():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 5, 4)).astype(np.float32)
    w, b = rng.standard_normal((1, 4)).astype(np.float32), rng.standard_normal(1).astype(np.float32)
    dz = rng.standard_normal((7, 4)).astype(np.float32)
    _, cache = seqpool_forward(x, w, b)
    _, dw, db = seqpool_backward(dz, cache)
    dx2, dw2, db2 = seqpool_backward(dz, cache, need_dx=False)
    assert dx2 is None and np.array_equal(dw, dw2) and np.array_equal(db, db2)


def test_pooled_mean_rows_equal_the_per_batch_mean():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((2500, 9, 6)).astype(np.float32)
    Z = pooled_features(A, "mean")                                          # computed 1000 images at a time
    idx = np.sort(rng.permutation(2500)[:100])
    assert np.array_equal(Z[idx], take_rows(A, idx, np.empty((100, 9, 6), np.float32)).mean(axis=1))
    with pytest.raises(IndexError):
        take_rows(A, np.array([0, 2500]), np.empty((2, 9, 6), np.float32))


def test_parallel_seed_sweep_equals_serial():
    rng = np.random.default_rng(3)
    K, T, D = 4, 5, 6
    proto = 2 * rng.standard_normal((K, T, D))
    y, yt = rng.integers(0, K, 300), rng.integers(0, K, 120)
    names = ["tokens", "enc0.out"]
    A = {n: (proto[y] + rng.standard_normal((300, T, D))).astype(np.float32) for n in names}
    At = {n: (proto[yt] + rng.standard_normal((120, T, D))).astype(np.float32) for n in names}
    modes = ("flat", "mean", "seqpool")
    keep = [(n, m) for n in names for m in modes]
    v1, k1 = seed_sweep(A, y, At, yt, K, names, modes, (0, 1), 2, keep=keep, workers=1)
    v2, k2 = seed_sweep(A, y, At, yt, K, names, modes, (0, 1), 2, keep=keep, workers=2)
    for m in modes:
        for q in v1[m]:
            assert np.array_equal(v1[m][q], v2[m][q], equal_nan=True), (m, q)
    assert list(k1) == list(k2)
    for key in k1:
        assert np.array_equal(k1[key].readout.W, k2[key].readout.W) and np.array_equal(k1[key].V, k2[key].V)
        assert np.array_equal(k1[key].readout.test_acc, k2[key].readout.test_acc)


def test_gil_switch_interval_is_restored():
    import sys

    from minicct.parallel import gil_switch_interval
    before = sys.getswitchinterval()
    with gil_switch_interval(2e-4):
        with gil_switch_interval(1e-3):                                     # nested: the outer value stays
            assert sys.getswitchinterval() == pytest.approx(2e-4)
    assert sys.getswitchinterval() == before


def test_exact_permutation_null_shared_by_group_sizes_equals_the_vectors_own_enumeration():
    # the cached enumeration is keyed by the group sizes; the null must be that of the vector's own permutations
    rng = np.random.default_rng(4)
    clusters = [sorted(rng.choice(9, size=int(rng.integers(2, 4)), replace=False).tolist()) for _ in range(30)]
    clusters += [clusters[0]] * 3
    for g in ([3, 3, 7, 7, 7, 3, 9, 9, 3], [0, 0, 0, 0, 1, 1, 1, 2, 2], [5, 5, 5, 5, 2, 2, 2, 0, 0]):
        g = np.array(g)
        own = _clusters_inside_naive(clusters, all_assignments(g))             # [P] over g's own permutations
        obs = _clusters_inside_naive(clusters, g[None])[0]
        r = group_permutation_test(clusters, g)
        assert r["method"] == "exact" and r["n_null"] == len(own) == n_assignments(g)
        assert r["inside"] == obs
        assert r["p_value"] == np.count_nonzero(own >= obs) / len(own)
        assert r["null_mean"] == own.mean() / r["n"]
