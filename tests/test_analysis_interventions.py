"""Model-level experiments (analysis/interventions.py) on a tiny CCT: per-label accuracy, FF linear2 pruning,
head ablation, the encoder-tail shortcut and the ANDC read-out sweep."""
import numpy as np
import pytest

from minicct import model as M
from minicct.analysis import interventions as I
from minicct.analysis.andc import ff_mask, pruned_fraction
from minicct.analysis.readout import readout_accuracy, train_readout
from minicct.analysis.report import capture
from minicct.datasets.base import Dataset

TINY = M.CCTConfig(img_size=12, n_conv_layers=2, kernel_size=3, in_planes=4, embedding_dim=8, num_heads=2,
                   num_layers=2, mlp_ratio=2.0, num_classes=5, attention_dropout=0.0, stochastic_depth=0.0)
K, D, F, T = TINY.num_classes, TINY.embedding_dim, TINY.ff_dim, TINY.seq_len


def _params(seed=0):
    """Random parameters large enough that every block visibly changes the logits."""
    rng = np.random.default_rng(seed)
    p = M.init_params(TINY, seed)
    for k, v in p.items():
        if "norm" not in k:
            p[k] = (rng.standard_normal(v.shape) * (0.5 if v.ndim > 1 else 0.1)).astype(np.float32)
    return p


def _data(n_train=30, n_test=40, seed=0):
    rng = np.random.default_rng(seed)
    img = lambda n: rng.integers(0, 256, size=(n, 12, 12, 3), dtype=np.uint8)
    lab = lambda n: np.arange(n, dtype=np.int64) % K
    return Dataset("tiny", img(n_train), lab(n_train), img(n_test), lab(n_test), [f"c{i}" for i in range(K)],
                   np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32))


# ------------------------------------------------------------------------------------ per-label accuracy
def test_per_label_accuracy_by_hand():
    logits = np.array([[2, 1, 0], [0, 3, 1], [5, 0, 0], [0, 0, 1], [1, 1, 0]], dtype=float)   # argmax 0 1 0 2 0
    y = np.array([0, 1, 1, 2, 0])
    acc = I.per_label_accuracy(logits, y, 3)
    np.testing.assert_allclose(acc, [1.0, 0.5, 1.0])          # the tie in the last row goes to label 0
    acc4 = I.per_label_accuracy(np.c_[logits, np.zeros(5)], y, 4)
    assert np.isnan(acc4[3]) and np.allclose(acc4[:3], acc)   # a label without images is nan, not 0
    with pytest.raises(ValueError, match="logits must be"):
        I.per_label_accuracy(logits, y, 4)
    with pytest.raises(ValueError, match="in 0..2"):
        I.per_label_accuracy(logits, np.array([0, 1, 3, 2, 0]), 3)


def test_designated_drop_and_permutation_p():
    drop = np.array([0.5, 0.4, 0.0, 0.1, -0.1, 0.0, np.nan])
    mean_in, mean_out, gap, p = I.designated_drop(drop, [0, 1])
    assert mean_in == pytest.approx(0.45) and mean_out == pytest.approx(0.0) and gap == pytest.approx(0.45)
    assert np.isnan(p)                                        # n_perm = 0: no test
    same = I.designated_drop(drop, np.array([1, 1, 0, 0, 0, 0, 0], bool), n_perm=2000, seed=1)
    assert same[:3] == (mean_in, mean_out, gap)
    assert same[3] == pytest.approx(1 / 15, abs=0.02)          # {0, 1} is the best of C(6, 2) = 15 pairs
    assert I.designated_drop(drop, [2, 5], n_perm=500, seed=1)[3] > 0.5
    assert np.isnan(I.designated_drop(drop, [])[0])
    with pytest.raises(ValueError, match="labels in 0..6"):
        I.designated_drop(drop, [7])


# ------------------------------------------------------------------------------------- the encoder tail
def _ln(x, w, b):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * w + b


def _logits_with_head_mask(p, tokens, cfg, silenced):
    """Plain reference of the old `head_mask` behaviour: the model's tail from the tokens, in float64, one
    head at a time, with head g's P v multiplied by 0 for every (encoder, head) in `silenced`."""
    from math import erf
    z = tokens.astype(np.float64) + p["classifier.positional_emb"]
    D, h = cfg.embedding_dim, cfg.num_heads
    d = D // h
    for e in range(cfg.num_layers):
        q = {k[len(f"classifier.blocks.{e}."):]: v.astype(np.float64) for k, v in p.items()
             if k.startswith(f"classifier.blocks.{e}.")}
        x1 = _ln(z, q["pre_norm.weight"], q["pre_norm.bias"])
        heads = np.zeros_like(z)
        for g in range(h):
            Wq, Wk, Wv = (q["self_attn.qkv.weight"][i * D + g * d:i * D + (g + 1) * d] for i in range(3))
            S = (x1 @ Wq.T) @ (x1 @ Wk.T).transpose(0, 2, 1) / np.sqrt(d)
            P = np.exp(S - S.max(-1, keepdims=True))
            P /= P.sum(-1, keepdims=True)
            heads[..., g * d:(g + 1) * d] = (P @ (x1 @ Wv.T)) * (0.0 if (e, g) in silenced else 1.0)
        a = z + heads @ q["self_attn.proj.weight"].T + q["self_attn.proj.bias"]
        a1 = _ln(a, q["norm1.weight"], q["norm1.bias"])
        f = a1 @ q["linear1.weight"].T + q["linear1.bias"]
        gelu = f * 0.5 * (1 + np.vectorize(erf)(f / np.sqrt(2)))
        z = a1 + gelu @ q["linear2.weight"].T + q["linear2.bias"]
    z = _ln(z, p["classifier.norm.weight"], p["classifier.norm.bias"])
    s = z @ p["classifier.attention_pool.weight"].T.astype(np.float64) + p["classifier.attention_pool.bias"]
    w = np.exp(s - s.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    return (w * z).sum(1) @ p["classifier.fc.weight"].T + p["classifier.fc.bias"]


def test_ablate_head_equals_the_old_head_mask():
    p, data = _params(), _data()
    acts = capture(p, TINY, data.x_test, data.mean, data.std, ["tokens"])
    full = I.model_logits(p, TINY, data.x_test, data.mean, data.std)
    np.testing.assert_allclose(_logits_with_head_mask(p, acts["tokens"], TINY, ()), full, rtol=1e-4, atol=1e-4)
    for e in range(TINY.num_layers):
        for g in range(TINY.num_heads):
            q = I.ablate_head(p, e, g, TINY.num_heads)
            ref = _logits_with_head_mask(p, acts["tokens"], TINY, {(e, g)})
            got = I.model_logits(q, TINY, data.x_test, data.mean, data.std)
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
            assert np.abs(got - full).max() > 1e-3                # the ablation matters in this model
    # two heads at once, and the input dict is left alone
    before = {k: v.copy() for k, v in p.items()}
    q = I.ablate_head(I.ablate_head(p, 0, 1, 2), 1, 0, 2)
    np.testing.assert_allclose(I.model_logits(q, TINY, data.x_test, data.mean, data.std),
                               _logits_with_head_mask(p, acts["tokens"], TINY, {(0, 1), (1, 0)}), rtol=1e-4, atol=1e-4)
    assert all(np.array_equal(before[k], p[k]) for k in p)
    with pytest.raises(ValueError, match="head must be in 0..1"):
        I.ablate_head(p, 0, 2, 2)
    with pytest.raises(ValueError, match="encoder must be an index in 0..1"):
        I.ablate_head(p, 2, 0, 2)
    with pytest.raises(ValueError, match="num_heads"):
        I.ablate_head(p, 0, 0, 3)


def test_encoder_input_and_the_tail_equal_the_full_forward():
    p, data = _params(), _data()
    full = I.model_logits(p, TINY, data.x_test, data.mean, data.std, batch_size=16)
    acts = capture(p, TINY, data.x_test, data.mean, data.std, ["tokens", "enc0.out"])
    for e in range(TINY.num_layers):
        z = I.encoder_input(p, TINY, acts, e)
        np.testing.assert_allclose(M.predict(p, z, TINY, batch_size=7, start_encoder=e), full, rtol=1e-5, atol=1e-5)
    q = I.ablate_head(p, 1, 0, TINY.num_heads)
    np.testing.assert_allclose(M.predict(q, I.encoder_input(p, TINY, acts, 1), TINY, start_encoder=1),
                               I.model_logits(q, TINY, data.x_test, data.mean, data.std), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="enc0.out"):
        I.encoder_input(p, TINY, {"tokens": acts["tokens"]}, 1)


# ------------------------------------------------------------------------------------------ FF pruning
def test_prune_linear2_ones_zeros_and_no_side_effects():
    p, data = _params(), _data()
    key = "classifier.blocks.1.linear2.weight"
    before = p[key].copy()
    base = I.model_logits(p, TINY, data.x_test, data.mean, data.std)
    ones = I.prune_linear2(p, 1, np.ones((D, F), bool))
    np.testing.assert_array_equal(I.model_logits(ones, TINY, data.x_test, data.mean, data.std), base)
    zeros = I.prune_linear2(p, 1, np.zeros((D, F)))
    by_hand = dict(p)
    by_hand[key] = np.zeros_like(p[key])
    np.testing.assert_array_equal(I.model_logits(zeros, TINY, data.x_test, data.mean, data.std),
                                  I.model_logits(by_hand, TINY, data.x_test, data.mean, data.std))
    assert not np.allclose(I.model_logits(zeros, TINY, data.x_test, data.mean, data.std), base)
    np.testing.assert_array_equal(p[key], before)              # the input dict is untouched
    assert zeros["classifier.blocks.0.linear2.weight"] is p["classifier.blocks.0.linear2.weight"]
    M_half = np.zeros((D, F), bool)
    M_half[:, ::2] = True
    np.testing.assert_array_equal(I.prune_linear2(p, 0, M_half)["classifier.blocks.0.linear2.weight"][:, 1::2], 0)
    with pytest.raises(ValueError, match="shape"):
        I.prune_linear2(p, 1, np.ones((F, D)))
    with pytest.raises(ValueError, match="encoder"):
        I.prune_linear2(p, 2, np.ones((D, F)))


def _diag_B(L):
    """Label sets [R, K] -> node matrices [R, K, K] with exactly those diagonal ones."""
    B = np.zeros((L.shape[0], K, K), bool)
    n, j = np.nonzero(L)
    B[n, j, j] = True
    return B


def test_ff_pruning_experiment_with_given_label_sets():
    p, data = _params(), _data()
    acts = capture(p, TINY, data.x_test, data.mean, data.std, ["tokens"])
    z0 = I.encoder_input(p, TINY, acts, 0)
    full = I.model_logits(p, TINY, data.x_test, data.mean, data.std)
    acc_full = float((full.argmax(1) == data.y_test).mean())
    every = np.ones((F, K), bool)
    r = I.ff_pruning_experiment(p, TINY, data, 0, B_hidden=_diag_B(every), B_out=_diag_B(np.ones((D, K), bool)))
    assert r.mask.all() and r.pruned_fraction == 0.0 and r.random_mask.all()
    assert r.acc_pruned == r.acc_dense == pytest.approx(acc_full) and r.readout_acc == {}
    none = I.ff_pruning_experiment(p, TINY, data, 0, B_hidden=_diag_B(every), B_out=_diag_B(np.zeros((D, K), bool)),
                                   z_test=z0)
    zeroed = I.prune_linear2(p, 0, np.zeros((D, F)))
    acc_zero = float((I.model_logits(zeroed, TINY, data.x_test, data.mean, data.std).argmax(1)
                      == data.y_test).mean())
    assert not none.mask.any() and none.pruned_fraction == 1.0 and none.acc_pruned == pytest.approx(acc_zero)
    rng = np.random.default_rng(2)
    Lh, Lo = rng.random((F, K)) < 0.2, rng.random((D, K)) < 0.2
    r = I.ff_pruning_experiment(p, TINY, data, 1, B_hidden=_diag_B(Lh), B_out=_diag_B(Lo), seed=3)
    np.testing.assert_array_equal(r.mask, ff_mask(Lh, Lo))
    np.testing.assert_array_equal(r.random_mask.sum(1), r.mask.sum(1))   # same inputs per output node b
    assert r.pruned_fraction == pytest.approx(pruned_fraction(r.mask))
    assert r.acc_pruned == pytest.approx(float((I.model_logits(I.prune_linear2(p, 1, r.mask), TINY, data.x_test,
                                                               data.mean, data.std).argmax(1) == data.y_test).mean()))
    with pytest.raises(ValueError, match="both"):
        I.ff_pruning_experiment(p, TINY, data, 0, B_hidden=_diag_B(every))


def test_ff_pruning_experiment_end_to_end():
    p, data = _params(), _data()
    r = I.ff_pruning_experiment(p, TINY, data, 1, epochs=2, seed=0)
    assert r.labels_hidden.shape == (F, K) and r.labels_out.shape == (D, K) and r.mask.shape == (D, F)
    np.testing.assert_array_equal(r.mask, ff_mask(r.labels_hidden, r.labels_out))
    assert set(r.readout_acc) == {"ff_hidden", "out"} and 0 <= r.readout_acc["out"] <= 1
    assert 0.0 <= r.pruned_fraction <= 1.0


# --------------------------------------------------------------------------------------- head ablation
def test_head_ablation_the_right_slice():
    p, data = _params(), _data()
    # a head whose slice of attn @ v never reaches proj: ablating it changes nothing, the other head does
    d = TINY.head_dim
    q = dict(p)
    q["classifier.blocks.1.self_attn.proj.weight"] = p["classifier.blocks.1.self_attn.proj.weight"].copy()
    q["classifier.blocks.1.self_attn.proj.weight"][:, d:2 * d] = 0.0
    r1 = I.head_ablation(q, TINY, data, 1, 1, [0, 1])
    np.testing.assert_array_equal(r1.drop[np.isfinite(r1.drop)], 0.0)
    assert r1.acc_ablated == r1.acc_full and r1.gap == 0.0
    r0 = I.head_ablation(q, TINY, data, 1, 0, np.array([True, True, False, False, False]), n_perm=50)
    full_logits = I.model_logits(q, TINY, data.x_test, data.mean, data.std)
    abl = I.model_logits(I.ablate_head(q, 1, 0, TINY.num_heads), TINY, data.x_test, data.mean, data.std)
    np.testing.assert_allclose(r0.per_label_ablated, I.per_label_accuracy(abl, data.y_test, K))
    np.testing.assert_allclose(r0.drop, I.per_label_accuracy(full_logits, data.y_test, K) - r0.per_label_ablated)
    assert r0.mean_drop_designated == pytest.approx(r0.drop[:2].mean())
    assert r0.mean_drop_others == pytest.approx(r0.drop[2:].mean())
    assert 0 < r0.p_value <= 1
    acts = capture(q, TINY, data.x_test, data.mean, data.std, ["enc0.out"])
    fast = I.head_ablation(q, TINY, data, 1, 0, [0, 1], full_logits=full_logits,
                           z_test=I.encoder_input(q, TINY, acts, 1))
    np.testing.assert_allclose(fast.drop, r0.drop)
    with pytest.raises(ValueError, match="head must be"):
        I.head_ablation(q, TINY, data, 1, 2, [0])
    with pytest.raises(ValueError, match="encoder must be"):
        I.head_ablation(q, TINY, data, 2, 0, [0])


# ----------------------------------------------------------------------------------- ANDC read-out sweep
def test_andc_readout_sweep():
    rng = np.random.default_rng(0)
    N, Tn, Dn, Kn = 300, 3, 12, 4
    y = np.arange(N) % Kn
    centers = rng.standard_normal((Kn, Tn, Dn)).astype(np.float32)
    A = centers[y] + 0.8 * rng.standard_normal((N, Tn, Dn)).astype(np.float32)
    At, yt = A[:200], y[:200]
    Ae, ye = A[200:], y[200:]
    ro = train_readout(At, yt, Kn, epochs=3, seed=0)
    dense = readout_accuracy(Ae, ye, ro.W)
    res = I.andc_readout_sweep(At, yt, Ae, ye, Kn, ro.W, thresholds=(-1e9, 0.3, 0.7), retrain_epochs=1, seed=2)
    assert [r.threshold for r in res] == [-1e9, 0.3, 0.7]
    fr = [r.pruned_fraction for r in res]
    assert fr[0] <= fr[1] <= fr[2]                             # a higher threshold keeps fewer labels
    for r in res:
        np.testing.assert_array_equal(r.random_mask.sum(0), r.mask.sum(0))
        assert r.pruned_fraction == pytest.approx(1 - r.mask.sum() / (Kn * Dn))
        assert r.labels_per_node == pytest.approx(r.mask.sum() / Dn)
    # threshold -inf keeps every label of every node whose max field is positive
    valid = [n for n in range(Dn) if res[0].mask[:, n].any()]
    pruned_W = ro.W * res[0].mask[:, None, :]
    assert res[0].acc_pruned == pytest.approx(readout_accuracy(Ae, ye, pruned_W))
    assert res[0].mask[:, valid].all()
    assert 0 <= res[2].acc_random <= 1 and 0 <= res[2].acc_random_retrained <= 1
    assert dense > 0.5
    tr = I.andc_readout_sweep(At, yt, Ae, ye, Kn, ro.W, thresholds=(0.3,), retrain_epochs=0, fields_on="train")
    assert tr[0].acc_retrained == pytest.approx(tr[0].acc_pruned)   # zero retraining epochs change nothing
    with pytest.raises(ValueError, match="fields_on"):
        I.andc_readout_sweep(At, yt, Ae, ye, Kn, ro.W, fields_on="val")
