"""The named paper steps node_signal, node_noise, snr (analysis/clusters.py), the validation module, the Site
type and the shared table formatter, each against a plain reference written differently."""
import numpy as np
import pytest

from minicct.analysis import _validate as V
from minicct.analysis.clusters import (greedy_clusters, layer_summary, node_noise, node_noise_reference, node_signal,
                                      node_stats, snr)
from minicct.sites import SITES, Site, site_names
from minicct.tables import format_table


def _random_layer(seed, D=12, K=7):
    rng = np.random.default_rng(seed)
    B = rng.random((D, K, K)) < 0.45
    B = B | B.transpose(0, 2, 1) & (rng.random((D, K, K)) < 0.5)       # some mutual pairs -> clusters
    B[0] = False                                                      # a node without any one
    B[1][np.arange(K), np.arange(K)] = False                          # ones, but no diagonal one: no cluster
    return B


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_node_signal_and_noise_match_cell_counts(seed):
    B = _random_layer(seed)
    S, N = node_signal(B), node_noise(B)
    assert S.shape == N.shape == (B.shape[0],) and S.dtype == N.dtype == np.int64
    for n in range(B.shape[0]):
        cl = greedy_clusters(B[n])
        inside, outside = node_noise_reference(B[n], cl)               # counted cell by cell
        assert S[n] == inside                                          # blocks are all ones: sum |c|^2
        assert N[n] == outside
        assert node_noise(B[n]) == N[n] and isinstance(node_noise(B[n]), int)   # one node -> an int
        assert node_signal(B[n]) == S[n]
    assert N[0] == -1 and N[1] == -1 and S[0] == 0
    st = node_stats(B)
    np.testing.assert_array_equal(st.noise, N)
    np.testing.assert_array_equal(st.signal, S)
    np.testing.assert_array_equal(node_noise(B, st.clusters), N)      # clusters passed in: same answer


def test_node_noise_by_hand():
    B = np.zeros((4, 4), bool)
    B[:2, :2] = True                                                  # one cluster {0, 1}: 4 ones inside
    B[3, 0] = B[2, 3] = True                                          # two ones outside, no diagonal at 2, 3
    assert greedy_clusters(B) == [[0, 1]]
    assert node_signal(B) == 4 and node_noise(B) == 2
    assert node_noise(np.zeros((3, 3), bool)) == -1 and node_signal(np.zeros((3, 3), bool)) == 0
    assert node_noise(np.eye(3, dtype=int)) == 0                      # three singletons, nothing outside
    with pytest.raises(ValueError, match="0 and 1"):
        node_noise(np.full((3, 3), 0.5))
    with pytest.raises(ValueError, match="square"):
        node_noise(np.zeros((3, 4), bool))


def test_snr_against_a_loop():
    rng = np.random.default_rng(5)
    S = rng.integers(0, 30, 50)
    N = rng.integers(-1, 20, 50)
    num = den = cnt = 0
    for s, n in zip(S, N):
        if n == -1:
            continue
        num, den, cnt = num + s, den + n, cnt + 1
    assert snr(S, N) == pytest.approx((num / cnt) / (den / cnt))
    assert snr([4, 9], [0, 0]) == float("inf")
    assert np.isnan(snr([0, 0], [0, 0])) and np.isnan(snr([3, 1], [-1, -1]))
    with pytest.raises(ValueError, match="same length"):
        snr([1, 2], [1])


def test_layer_summary_uses_snr():
    B = _random_layer(3)
    st = node_stats(B)
    assert layer_summary(st)["snr"] == snr(node_signal(B), node_noise(B))


# ------------------------------------------------------------------------------------------ validation
def test_finiteness_is_checked_and_names_the_array():
    A = np.zeros((300, 2, 3), np.float32)
    V.check_activations(A, "A_train")
    A[270, 1, 2] = np.inf                                             # in the second chunk
    with pytest.raises(ValueError, match=r"A_train contains NaN or inf \(first at index \(270, 1, 2\)\)"):
        V.check_activations(A, "A_train")
    with pytest.raises(ValueError, match="V contains NaN"):
        V.check_fields(np.full((2, 3, 3), np.nan))
    with pytest.raises(ValueError, match="read-out weight W contains NaN"):
        V.check_weight(np.full((2, 3), np.nan), "mean", 4, 3)


def test_analysis_entry_points_reject_non_finite_input():
    from minicct.analysis.readout import train_readout
    from minicct.analysis.snp import node_fields, normalise_threshold
    rng = np.random.default_rng(0)
    A = rng.standard_normal((20, 3, 4)).astype(np.float32)
    y = np.arange(20) % 2
    W = rng.standard_normal((2, 3, 4)).astype(np.float32)
    bad = A.copy()
    bad[3, 0, 0] = np.nan
    with pytest.raises(ValueError, match="A_train contains NaN"):
        train_readout(bad, y, 2, epochs=1)
    with pytest.raises(ValueError, match="A contains NaN"):
        node_fields(bad, y, W, 2)
    W[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="W contains NaN or inf"):
        node_fields(A, y, W, 2)
    with pytest.raises(ValueError, match="V contains NaN"):
        normalise_threshold(np.full((1, 2, 2), np.nan))


def test_check_mask_written_once():
    np.testing.assert_array_equal(V.check_mask([[0, 1], [1, 0]]), [[False, True], [True, False]])
    assert V.check_mask(np.ones((2, 2), np.float32)).dtype == bool
    with pytest.raises(ValueError, match="M must be boolean or hold only 0 and 1"):
        V.check_mask([[0, 2]], "M")
    with pytest.raises(ValueError, match=r"must have shape \(2, 3\)"):
        V.check_mask(np.ones((3, 2), bool), shapes=[(2, 3)])


# ------------------------------------------------------------------------------------------ sites, tables
def test_site_names_labels_and_parsing():
    assert Site.parse("tokens") == Site.tokens() and Site.tokens().depth == 0
    s = Site.parse("enc2.ff_hidden")
    assert (s.encoder, s.part, s.name, s.depth) == (2, "ff_hidden", "enc2.ff_hidden", 3)
    assert s.label() == "encoder 3 ff_hidden" and s.label(part=False) == "encoder 3"
    assert s.label(short=True) == "enc 3 ff_hidden" and Site.tokens().label() == "tokenizer"
    for part in SITES:                                                # capture names round-trip
        assert Site.parse(Site(1, part).name) == Site(1, part)
    assert site_names(2, ("out", "mha_heads")) == ["tokens", "enc0.mha_heads", "enc0.out", "enc1.mha_heads",
                                                  "enc1.out"]
    with pytest.raises(ValueError, match="not a site name"):
        Site.parse("encoder1.out")
    with pytest.raises(ValueError, match="unknown site"):
        Site(0, "heads")
    with pytest.raises(ValueError, match="counted from 0"):
        Site(-1, "out")


def test_format_table_matches_f_strings():
    rows = [("enc 1 out", "flat", 45.125, 2.0), ("tokenizer", "mean", 7.0, 0.5)]
    got = format_table([("site", "<12"), ("mode", ">6"), " | ", ("acc %", "7.1f"), ("SNR", "6.2f")], rows)
    head = f"{'site':<12}{'mode':>6} | {'acc %':>7}{'SNR':>6}"
    want = [head, "-" * len(head)] + [f"{a:<12}{b:>6} | {c:7.1f}{d:6.2f}" for a, b, c, d in rows]
    assert got == "\n".join(want)
    assert format_table([("x", "<4"), ("y", "5.1f")], [("", 1.0)]).splitlines()[2] == "      1.0"
