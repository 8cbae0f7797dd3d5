"""The label-permutation null of every SNP quantity (nulls.sweep_with_null): exact where it can be, and calibrated."""
import numpy as np
import pytest

from minicct.analysis.nulls import (NullSweep, compare_to_null, label_permutation, null_site, sweep_with_null)
from minicct.analysis.replicate import QUANTITIES, seed_sweep
from minicct.analysis.report import analyse_site
from minicct.analysis.stats import LABEL_DRIVEN, NOT_LABEL_DRIVEN, SUPPORTED, null_check, summarise

K = 4


def _data(informative, seed=0, n_tr=120, n_te=80, T=3, D=12):
    rng = np.random.default_rng(seed)
    y_tr, y_te = np.arange(n_tr) % K, np.arange(n_te) % K
    proto = rng.standard_normal((K, T, D)).astype(np.float32)
    A = lambda y: (rng.standard_normal((len(y), T, D)).astype(np.float32)          # noqa: E731
                   + (1.5 * proto[y] if informative else 0))
    return A(y_tr), y_tr, A(y_te), y_te


def _same(a, b):
    np.testing.assert_array_equal(a.V, b.V)
    np.testing.assert_array_equal(a.readout.W, b.readout.W)
    for k, v in a.summary.items():
        np.testing.assert_array_equal(v, b.summary[k])
    assert a.single["mean_accuracy"] == b.single["mean_accuracy"]


@pytest.mark.parametrize("mode", ["flat", "seqpool"])
def test_a_permutation_that_keeps_every_label_gives_the_real_run(mode):
    A_tr, y_tr, A_te, y_te = _data(True)
    real = analyse_site(A_tr, y_tr, A_te, y_te, K, mode, 2, 0.3, 5, "enc0.out")
    ident = (np.arange(len(y_tr)), np.arange(len(y_te)))
    _same(null_site(A_tr, y_tr, A_te, y_te, K, mode, 2, 0.3, 5, perms=ident), real)
    rng = np.random.default_rng(1)                            # shuffle images only within their class: y[p] == y
    within = tuple(np.concatenate([rng.permutation(np.flatnonzero(y == k)) for k in range(K)])[np.argsort(
        np.argsort(y, kind="stable"), kind="stable")] for y in (y_tr, y_te))
    assert all(np.array_equal(y[p], y) for p, y in zip(within, (y_tr, y_te)))
    _same(null_site(A_tr, y_tr, A_te, y_te, K, mode, 2, 0.3, 5, perms=within), real)


def test_permutations_are_seeded_and_keep_class_counts():
    p = label_permutation(100, 3, 1, 0)
    assert np.array_equal(p, label_permutation(100, 3, 1, 0)) and not np.array_equal(p, label_permutation(100, 3, 2, 0))
    assert not np.array_equal(p, label_permutation(100, 3, 1, 1)) and sorted(p) == list(range(100))
    with pytest.raises(ValueError, match="permutation"):
        null_site(*_data(True), K, perms=(np.zeros(120, int), np.arange(80)))


def test_true_label_values_are_those_of_seed_sweep():
    A_tr, y_tr, A_te, y_te = _data(True)
    names = ["tokens", "enc0.out"]
    acts_tr, acts_te = dict(zip(names, (A_tr, A_tr[:, :, ::-1].copy()))), dict(zip(names, (A_te, A_te[:, :, ::-1].copy())))
    vals, _ = seed_sweep(acts_tr, y_tr, acts_te, y_te, K, names, ("flat", "mean"), (0, 1), 2, 0.3, workers=1)
    sw = sweep_with_null(acts_tr, y_tr, acts_te, y_te, K, names, ("flat", "mean"), (0, 1), 2, 0.3, null_draws=2,
                         workers=2)
    for m in ("flat", "mean"):
        for q in QUANTITIES:
            np.testing.assert_array_equal(sw.real[m][q], vals[m][q])
    assert sw.null["flat"]["accuracy"].shape == (2, 2, 2)
    none = sweep_with_null(acts_tr, y_tr, acts_te, y_te, K, ["tokens"], ("flat",), (0,), 2, 0.3, null_draws=0,
                           workers=1)
    assert none.null["flat"]["snr"].shape == (1, 0, 1) and none.compare("flat", "snr")[0]["beyond"] == "n/a"


def test_random_features_agree_with_their_null_and_planted_labels_do_not():
    seeds = (0, 1, 2, 3)
    A_tr, y_tr, A_te, y_te = _data(False, seed=2)
    sw = sweep_with_null({"x": A_tr}, y_tr, {"x": A_te}, y_te, K, ["x"], ("flat",), seeds, 3, 0.3, null_draws=1)
    for q in ("accuracy", "clusters_per_node", "cluster_size", "labels_in_clusters", "noise", "snr", "signal",
              "single_node_accuracy", "single_node_top_fraction"):
        c = sw.compare("flat", q)[0]
        v, n = c["value"], c["null"]
        assert v.lo <= n.hi and n.lo <= v.hi, (q, v, n)        # the intervals overlap
    A_tr, y_tr, A_te, y_te = _data(True, seed=2)
    sw = sweep_with_null({"x": A_tr}, y_tr, {"x": A_te}, y_te, K, ["x"], ("flat",), seeds, 3, 0.3, null_draws=1)
    c = sw.compare("flat", "accuracy")[0]
    assert c["beyond"] == "above" and c["null"].hi < 0.45 and c["value"].lo > 0.8
    assert c["excess"].mean == pytest.approx(c["value"].mean - c["null"].mean)


def test_compare_to_null_arithmetic_and_one_seed():
    c = compare_to_null([1.0, 1.1, 1.2], [[0.0, 0.2], [0.1, 0.1], [0.0, 0.0]])
    assert c["null"].mean == pytest.approx(0.4 / 6) and c["excess"].values == pytest.approx([0.9, 1.0, 1.2])
    assert c["beyond"] == "above"
    one = compare_to_null([1.0], [[0.9, 1.1, 1.0]])           # one seed: interval over the draws
    assert one["null"].n == 3 and one["beyond"] == "within" and one["excess"].mean == pytest.approx(0.0)
    with pytest.raises(ValueError, match="S, P"):
        compare_to_null([1.0, 2.0], [[1.0]])


def test_null_rule_words():
    assert null_check(SUPPORTED, SUPPORTED) == NOT_LABEL_DRIVEN
    assert null_check(SUPPORTED, "inconclusive") == LABEL_DRIVEN
    assert null_check("contradicted", SUPPORTED) == "only the null shows it (real: contradicted)"
    assert null_check("contradicted", "inconclusive").startswith("neither")
    assert null_check(SUPPORTED, None) == "no null run"
    assert null_check(SUPPORTED, "inconclusive", "supported") == LABEL_DRIVEN
    assert null_check(SUPPORTED, "inconclusive", "inconclusive").startswith("the null does not show it, but")


def test_trend_under_the_null_and_concat():
    S, P, E = 4, 1, 3
    rise = np.arange(E)[None] + np.random.default_rng(0).normal(0, 0.05, (S, E))
    real = {"flat": {"snr": rise}}
    sw = NullSweep(["t", "e1", "e2"], ("flat",), list(range(S)), P, real, {"flat": {"snr": rise[:, None] - 0.1}})
    t = sw.trend("flat", "snr", "rise")
    assert t["real"]["verdict"] == SUPPORTED and t["null"]["verdict"] == SUPPORTED and t["check"] == NOT_LABEL_DRIVEN
    flat_null = NullSweep(sw.names, sw.modes, sw.seeds, P, real, {"flat": {"snr": np.zeros((S, P, E)) +
                          np.random.default_rng(1).normal(0, 0.05, (S, P, E))}})
    assert flat_null.trend("flat", "snr", "rise")["check"] == LABEL_DRIVEN
    both = NullSweep.concat([sw, flat_null])
    assert both.names == sw.names * 2 and both.null["flat"]["snr"].shape == (S, P, 2 * E)
    assert "label-permutation null" in sw.table("flat") and sw.to_dict()["quantities"]["flat"]["snr"][0]["beyond"]
