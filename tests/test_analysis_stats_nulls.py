"""Replicate summaries, the trend rule, permutation nulls, Holm and the same-degree baselines (tiny synthetic data)."""
import itertools
import math

import numpy as np
import pytest

from minicct.analysis.baselines import ff_baseline_masks, magnitude_mask_like, random_mask_like, readout_scores
from minicct.analysis.nulls import (clusters_inside, group_permutation_test, holm, min_detectable_effect,
                                    n_assignments, partition_null)
from minicct.analysis.stats import (CONTRADICTED, INCONCLUSIVE, SUPPORTED, compare_verdict, no_loss_verdict,
                                    summarise, trend_verdict)


# ------------------------------------------------------------------------------------------ summaries
def test_summary_is_the_t_interval_of_the_mean():
    x = np.array([1.0, 2.0, 4.0])
    s = summarise(x)
    sd = x.std(ddof=1)
    half = 4.302652729911275 * sd / math.sqrt(3)            # t_{2, 0.975}
    assert s.mean == pytest.approx(x.mean()) and s.sd == pytest.approx(sd)
    assert (s.lo, s.hi) == pytest.approx((x.mean() - half, x.mean() + half))
    one = summarise([3.0])
    assert one.n == 1 and math.isnan(one.lo)                 # one replicate: no interval
    assert summarise([1.0, np.inf, 3.0]).n == 2              # non-finite values are dropped


def _snr_along(seed, rising, S=5, E=5):
    rng = np.random.default_rng(seed)
    base = np.arange(E) * (1.0 if rising else 0.0)
    return base[None, :] + rng.normal(0, 0.2, (S, E))        # [S, E] replicate x encoder


def test_trend_rule_planted_rise_supported_shuffled_not():
    X = _snr_along(0, rising=True)
    r = trend_verdict(X, "rise")
    assert r["verdict"] == SUPPORTED and r["steps_with"] == 4 and r["steps_against"] == 0
    assert trend_verdict(X, "fall")["verdict"] == CONTRADICTED
    rng = np.random.default_rng(1)
    shuffled = np.stack([row[rng.permutation(row.size)] for row in X])   # order along encoders destroyed
    assert trend_verdict(shuffled, "rise")["verdict"] != SUPPORTED
    assert trend_verdict(_snr_along(2, rising=False), "rise")["verdict"] == INCONCLUSIVE
    # a significant reversal in one step contradicts "progressively", even when last > first
    Y = np.tile([0.0, 3.0, 1.0, 4.0], (4, 1)) + np.random.default_rng(3).normal(0, 0.05, (4, 4))
    assert trend_verdict(Y, "rise")["verdict"] == CONTRADICTED
    assert trend_verdict(X[:1], "rise")["verdict"] == INCONCLUSIVE       # one seed: no verdict


def test_compare_and_no_loss_verdicts():
    assert compare_verdict([0.02, 0.03, 0.025], "greater")[0] == SUPPORTED
    assert compare_verdict([-0.02, -0.03, -0.025], "greater")[0] == CONTRADICTED
    assert compare_verdict([-0.02, 0.03, 0.0], "greater")[0] == INCONCLUSIVE
    assert no_loss_verdict([-0.001, 0.002, 0.0], 0.01)[0] == SUPPORTED
    assert no_loss_verdict([-0.05, -0.06, -0.055], 0.01)[0] == CONTRADICTED
    assert no_loss_verdict([-0.05, 0.04, 0.0], 0.01)[0] == INCONCLUSIVE


# --------------------------------------------------------------------------------- group permutation
G8 = np.array([0, 0, 0, 0, 1, 1, 1, 1])
PERFECT = [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_permutation_p_of_a_planted_perfect_grouping_is_the_exact_minimum():
    # independent brute force over all 8! label permutations
    stats = [clusters_inside(PERFECT, G8[list(p)]) for p in itertools.permutations(range(8))]
    stats = np.array(stats)
    p_min_attainable = min(np.mean(stats >= s) for s in set(stats.tolist()))
    r = group_permutation_test(PERFECT, G8)
    assert r["method"] == "exact" and r["n_null"] == n_assignments(G8) == 70
    assert r["inside"] == 4 and r["p_value"] == pytest.approx(p_min_attainable) == pytest.approx(6 / 70)
    mc = group_permutation_test(PERFECT, G8, n_draws=20000, seed=0, exact_max=0)
    assert mc["method"] == "monte carlo"
    assert abs(mc["p_value"] - r["p_value"]) <= mc["se"]
    # no structure: clusters straddling the groups are not significant
    mixed = group_permutation_test([[0, 4], [1, 5], [2, 6], [3, 7]], G8)
    assert mixed["inside"] == 0 and mixed["p_value"] == 1.0


def test_permutation_detects_planted_clusters_and_not_shuffled_ones():
    rng = np.random.default_rng(0)
    K, groups = 20, np.repeat(np.arange(5), 4)
    planted = [sorted(rng.choice(np.flatnonzero(groups == rng.integers(5)), 2, replace=False)) for _ in range(30)]
    r = group_permutation_test(planted, groups, n_draws=2000, seed=0)
    assert r["fraction"] == 1.0 and r["p_value"] < 0.01 and r["method"] == "monte carlo"
    shuffled = [sorted(rng.choice(K, 2, replace=False)) for _ in range(30)]
    assert group_permutation_test(shuffled, groups, n_draws=2000, seed=0)["p_value"] > 0.01
    # deterministic for a given seed
    assert group_permutation_test(planted, groups, n_draws=500, seed=3) == \
        group_permutation_test(planted, groups, n_draws=500, seed=3)


def test_partition_null_holm_and_mde():
    # nodes of head 0 prefer labels 0-4, nodes of head 1 labels 5-9: heads specialise by construction
    D, d, K = 16, 8, 10
    L = np.zeros((D, K), dtype=bool)
    L[:8, :5] = True
    L[8:, 5:] = True

    def si(groups):
        c = L[groups].sum(axis=1)                            # [h, K]
        return float((c.max(0) / np.maximum(c.sum(0), 1)).mean())

    r = partition_null(si, D, d, n_draws=200, seed=0)
    assert r["observed"] == 1.0 and r["p_value"] < 0.05
    Ls = L[np.random.default_rng(0).permutation(D)]          # node-to-head structure shuffled away
    L[:] = Ls
    assert partition_null(si, D, d, n_draws=200, seed=0)["p_value"] > 0.05
    adj, rej = holm([0.01, 0.04, 0.03, 0.5])
    np.testing.assert_allclose(adj, [0.04, 0.09, 0.09, 0.5])
    assert rej.tolist() == [True, False, False, False]
    assert min_detectable_effect(1.0, 0.05) == pytest.approx(1.6448536 + 0.8416212, rel=1e-6)


# ------------------------------------------------------------------------------------------ baselines
def test_magnitude_and_random_masks_have_the_andc_degrees():
    rng = np.random.default_rng(0)
    K, T, D = 12, 3, 9
    M = rng.random((K, D)) < 0.3
    M[:, 0] = False                                          # a node with no label
    W = rng.standard_normal((K, T, D))
    for mask in (magnitude_mask_like(M, readout_scores(W)), random_mask_like(M, seed=1)):
        np.testing.assert_array_equal(mask.sum(axis=0), M.sum(axis=0))
    mag = magnitude_mask_like(M, readout_scores(W))
    s = readout_scores(W)
    for n in range(D):                                       # kept = the largest scores of the node
        if M[:, n].any():
            assert s[mag[:, n], n].min() >= s[~mag[:, n], n].max()
    Mff = rng.random((D, 2 * D)) < 0.4                       # FF linear2 mask [D out, F hidden]
    W2 = rng.standard_normal((D, 2 * D))
    r, m = ff_baseline_masks(Mff, W2, seed=0)
    np.testing.assert_array_equal(r.sum(axis=1), Mff.sum(axis=1))
    np.testing.assert_array_equal(m.sum(axis=1), Mff.sum(axis=1))
    np.testing.assert_array_equal(ff_baseline_masks(Mff, W2, seed=0)[0], r)     # deterministic


def test_planted_node_matrices_heads_and_groups():
    from minicct.analysis.clusters import node_stats
    from minicct.analysis.heads import heads_per_label, shp_label_sets
    rng = np.random.default_rng(0)
    K, groups = 12, np.repeat(np.arange(3), 4)               # 3 ground-truth groups of 4 labels
    # node matrices whose clusters are pairs of labels of one group
    B = np.zeros((30, K, K), dtype=bool)
    for n in range(30):
        c = rng.choice(np.flatnonzero(groups == rng.integers(3)), 2, replace=False)
        B[n][np.ix_(c, c)] = True
    clusters = [c for node in node_stats(B).clusters for c in node]
    assert group_permutation_test(clusters, groups, n_draws=2000, seed=0)["p_value"] < 0.01
    perm = rng.permutation(K)                                # labels shuffled: the structure is gone
    Bs = B[:, perm][:, :, perm]
    shuffled = [c for node in node_stats(Bs).clusters for c in node]
    assert group_permutation_test(shuffled, groups, n_draws=2000, seed=0)["p_value"] > 0.05
    # heads whose nodes prefer disjoint label halves: SHP diagonal sets of the real heads are disjoint
    D, d, K = 16, 8, 10
    V = rng.random((D, K, K)) * 0.1
    for n in range(D):
        j = rng.integers(0, 5) + (5 if n >= d else 0)
        V[n, j, j] += 1.0
    stat = lambda g: heads_per_label(shp_label_sets(V, g))
    r = partition_null(stat, D, d, n_draws=200, seed=0, alternative="less")
    assert r["observed"] == 1.0 and r["p_value"] < 0.05
    Vs = V[rng.permutation(D)]
    stat_s = lambda g: heads_per_label(shp_label_sets(Vs, g))
    assert partition_null(stat_s, D, d, n_draws=200, seed=0, alternative="less")["p_value"] > 0.05


def test_two_stage_bootstrap_of_paired_accuracy():
    from minicct.analysis.stats import bootstrap_summary, verdict_from
    rng = np.random.default_rng(0)
    truth = rng.random(1000) < 0.6                            # shared difficulty of the test images
    a = np.stack([truth | (rng.random(1000) < 0.2) for _ in range(3)]).astype(float)   # better read-out [S, N]
    b = np.stack([truth & (rng.random(1000) < 0.95) for _ in range(3)]).astype(float)
    s = bootstrap_summary(a - b, seed=0)
    assert s.mean == pytest.approx((a - b).mean()) and s.lo < s.mean < s.hi
    assert verdict_from(s) == SUPPORTED and verdict_from(bootstrap_summary(b - a, seed=0)) == CONTRADICTED
    assert verdict_from(bootstrap_summary(a - a, seed=0), tolerance=0.01) == SUPPORTED
    assert bootstrap_summary(a - b, seed=0) == bootstrap_summary(a - b, seed=0)     # deterministic
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 2, (3, 1000)) - rng.integers(0, 2, (3, 1000))
    assert verdict_from(bootstrap_summary(noise.astype(float), seed=0)) == INCONCLUSIVE


def test_head_verdicts_need_significance_on_either_side():
    """Null-test verdicts: supported / contradicted only when a majority of tests are significant (Holm) on
    the claimed / the opposite side; a statistic that sits at its null is inconclusive, not contradicted."""
    from minicct.analysis.replicate import _null_verdict, opposite_tail_p

    rng = np.random.default_rng(0)
    null = rng.standard_normal(999)
    # opposite tail: far below the null -> smallest attainable p; far above -> 1
    assert opposite_tail_p(-10.0, null, "greater") == 1 / 1000
    assert opposite_tail_p(10.0, null, "greater") == 1.0
    assert opposite_tail_p(10.0, null, "less") == 1 / 1000
    # written out: (1 + #{null <= obs}) / (1 + n)
    assert opposite_tail_p(0.3, null) == (1 + int((null <= 0.3).sum())) / 1000

    def verdict(observed):
        p = [(1 + int((null >= o).sum())) / 1000 for o in observed]
        p_other = [opposite_tail_p(o, null) for o in observed]
        return _null_verdict(holm(p)[0], holm(p_other)[0])

    assert verdict([5.0, 5.0, 5.0, 0.0]) == SUPPORTED           # planted: 3 of 4 far above chance
    assert verdict([-5.0, -5.0, -5.0, 0.0]) == CONTRADICTED     # planted the other way
    assert verdict([-0.1, 0.05, -0.2, 0.1]) == INCONCLUSIVE     # at the null: neither side
