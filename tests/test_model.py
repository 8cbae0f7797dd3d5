"""The CCT model: parameter counts and names, whole-model gradient check, capture contract, sanity of training."""
import math

import numpy as np
import pytest

from minicct import model as M
from minicct.gradcheck import numerical_vjp, rel_error
from minicct.layers.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from minicct.train.optim import AdamW

TINY = M.CCTConfig(img_size=12, n_conv_layers=2, kernel_size=3, in_planes=4, embedding_dim=8, num_heads=2,
                   num_layers=2, mlp_ratio=2.0, num_classes=5, attention_dropout=0.0, stochastic_depth=0.0)


@pytest.mark.parametrize("name,K,count", [
    ("cct_2_3x2_32", 10, 283_723), ("cct_4_3x2_32", 10, 482_123), ("cct_6_3x1_32", 10, 3_233_803),
    ("cct_6_3x2_32", 10, 3_326_923), ("cct_7_3x1_32", 10, 3_760_139), ("cct_7_3x1_32", 100, 3_783_269),
    ("cct_7_3x2_32", 10, 3_853_259), ("cct_7_7x2_224", 102, 4_573_735), ("cct_14_7x2_224", 1000, 22_367_273)])
def test_parameter_counts_equal_the_reference(name, K, count):
    assert M.count_params(M.get_config(name, num_classes=K)) == count


def test_official_key_names_and_order():
    keys = list(M.param_shapes(M.get_config("cct_7_3x1_32")))
    assert keys[:4] == ["tokenizer.conv_layers.0.0.weight", "classifier.positional_emb",
                        "classifier.attention_pool.weight", "classifier.attention_pool.bias"]
    assert keys[4:15] == [f"classifier.blocks.0.{k}" for k in (
        "pre_norm.weight", "pre_norm.bias", "self_attn.qkv.weight", "self_attn.proj.weight", "self_attn.proj.bias",
        "linear1.weight", "linear1.bias", "norm1.weight", "norm1.bias", "linear2.weight", "linear2.bias")]
    assert keys[-4:] == ["classifier.norm.weight", "classifier.norm.bias", "classifier.fc.weight",
                         "classifier.fc.bias"]


def test_variant_derivations():
    c = M.get_config("cct_7_7x2_224")
    assert (c.conv_stride, c.conv_padding, c.seq_len, c.num_classes) == (2, 3, 196, 102)
    c = M.get_config("cct_7_3x1_32_sine_c100")
    assert (c.positional_embedding, c.num_classes, c.seq_len) == ("sine", 100, 256)
    assert M.get_config("cct_7_3x1_32").drop_path_rates()[0] == 0.0
    with pytest.raises(ValueError, match="unknown variant"):
        M.get_config("cct_5_3x1_32")


def test_sine_table_formula_and_frozen():
    pe = M.sine_embedding(6, 8)[0]
    p, i = 3, 5
    assert pe[p, i] == pytest.approx(math.cos(p / 10000 ** (2 * (i // 2) / 8)), abs=1e-6)
    assert pe[p, 4] == pytest.approx(math.sin(p / 10000 ** (2 * 2 / 8)), abs=1e-6)
    cfg = M.get_config("cct_2_3x2_32_sine")
    assert M.frozen_params(cfg) == ("classifier.positional_emb",)
    assert np.array_equal(M.init_params(cfg)["classifier.positional_emb"], M.sine_embedding(64, 128))


def test_initialisation_statistics():
    p = M.init_params(M.get_config("cct_7_3x1_32"), seed=0)
    assert p["tokenizer.conv_layers.0.0.weight"].std() == pytest.approx(math.sqrt(2 / 27), rel=0.05)
    assert p["classifier.blocks.0.linear1.weight"].std() == pytest.approx(0.02, rel=0.05)
    assert p["classifier.positional_emb"].std() == pytest.approx(0.2, rel=0.05)
    assert np.all(p["classifier.norm.weight"] == 1) and np.all(p["classifier.fc.bias"] == 0)
    assert all(v.dtype == np.float32 for v in p.values())


def _tiny_params(seed=0):
    p = M.init_params(TINY, seed, np.float64)
    rng = np.random.default_rng(seed + 1)
    for k in p:                        # move away from the symmetric init: LN (1, 0), zero biases
        if not k.startswith("tokenizer"):
            p[k] = p[k] + 0.1 * rng.standard_normal(p[k].shape)
    return p


def test_whole_model_gradient_check_float64():
    p = _tiny_params()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 3, 12, 12))
    y = np.array([0, 3, 4])
    logits, cache = M.forward(p, x, TINY)
    loss, lc = softmax_cross_entropy_forward(logits, y, 0.1)
    grads = M.backward(softmax_cross_entropy_backward(1.0, lc), cache)
    assert list(grads) == list(p)
    f = lambda: np.array(softmax_cross_entropy_forward(M.forward(p, x, TINY)[0], y, 0.1)[0])
    for k in p:
        num = numerical_vjp(f, p[k], np.float64(1.0), h=1e-6)
        assert rel_error(grads[k], num) <= 1e-6, k


def test_whole_model_gradient_check_with_dropout_and_drop_path():
    cfg = M.CCTConfig(**{**TINY.to_dict(), "attention_dropout": 0.2, "stochastic_depth": 0.3, "dropout": 0.1,
                         "num_layers": 3})
    p = M.init_params(cfg, 0, np.float64)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 12, 12))
    dout = rng.standard_normal((2, cfg.num_classes))
    f = lambda: M.forward(p, x, cfg, train=True, rng=np.random.default_rng(7))[0]
    _, cache = M.forward(p, x, cfg, train=True, rng=np.random.default_rng(7))
    grads = M.backward(dout, cache)
    for k in ("classifier.blocks.2.linear1.weight", "classifier.blocks.1.self_attn.qkv.weight",
              "tokenizer.conv_layers.0.0.weight", "classifier.positional_emb"):
        num = numerical_vjp(f, p[k], dout, h=1e-6)
        assert rel_error(grads[k], num) <= 1e-6, k


def test_capture_contract():
    p = M.init_params(TINY, 0)
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    logits, cache = M.forward(p, x, TINY, capture=True)
    acts = cache["acts"]
    assert set(acts) == set(M.capture_sites(TINY))
    T, D, F = TINY.seq_len, TINY.embedding_dim, TINY.ff_dim
    assert acts["tokens"].shape == (2, T, D) and acts["pooled"].shape == (2, D)
    for e in range(TINY.num_layers):
        assert acts[f"enc{e}.mha_heads"].shape == (2, T, D)
        assert acts[f"enc{e}.ff_hidden"].shape == (2, T, F)
        assert acts[f"enc{e}.out"].shape == (2, T, D)
    # the last encoder output, normed, pooled and classified gives the logits
    np.testing.assert_allclose(acts["pooled"] @ p["classifier.fc.weight"].T + p["classifier.fc.bias"], logits,
                               rtol=1e-5, atol=1e-6)
    lg, acts2 = M.predict(p, x, TINY, batch_size=1, capture=["enc0.out"])
    np.testing.assert_allclose(lg, logits, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown activation"):
        M.predict(p, x, TINY, capture=["enc9.out"])


def test_loss_at_init_is_log_num_classes():
    cfg = M.get_config("classroom")
    p = M.init_params(cfg, 0)
    x = np.random.default_rng(0).standard_normal((64, 3, 32, 32)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, cfg.num_classes, 64)
    loss, _ = softmax_cross_entropy_forward(M.forward(p, x, cfg)[0], y)
    assert abs(loss - math.log(cfg.num_classes)) < 0.05


def test_overfits_a_tiny_batch():
    cfg = M.CCTConfig(**{**TINY.to_dict(), "embedding_dim": 16, "num_classes": 4})
    p = M.init_params(cfg, 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 12, 12)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    opt = AdamW(3e-3, weight_decay=0.0)
    for _ in range(300):
        logits, cache = M.forward(p, x, cfg)
        _, lc = softmax_cross_entropy_forward(logits, y)
        opt.step(p, M.backward(softmax_cross_entropy_backward(1.0, lc), cache))
    logits, _ = M.forward(p, x, cfg)
    assert (logits.argmax(1) == y).all()
    assert softmax_cross_entropy_forward(logits, y)[0] < 0.05


def test_float_dtypes_preserved():
    p32 = M.init_params(TINY, 0)
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    logits, cache = M.forward(p32, x, TINY)
    assert logits.dtype == np.float32
    assert all(g.dtype == np.float32 for g in M.backward(np.ones_like(logits), cache).values())


def test_wrong_input_raises_clear_errors():
    p = M.init_params(TINY, 0)
    with pytest.raises(ValueError, match=r"\[N, 3, 12, 12\].*\(2, 3, 16, 16\)"):
        M.forward(p, np.zeros((2, 3, 16, 16), np.float32), TINY)
    bad = np.zeros((2, 3, 12, 12), np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        M.forward(p, bad, TINY)
    with pytest.raises(ValueError, match="float"):
        M.forward(p, np.zeros((2, 3, 12, 12), np.uint8), TINY)
    with pytest.raises(ValueError, match="labels must be in 0..4"):
        softmax_cross_entropy_forward(np.zeros((2, 5), np.float32), np.array([0, 5]))
    other = M.init_params(M.CCTConfig(**{**TINY.to_dict(), "num_classes": 7}), 0)
    with pytest.raises(ValueError, match="classifier.fc.weight: expected shape \\(5, 8\\), found \\(7, 8\\)"):
        M.check_params(other, TINY)
    with pytest.raises(ValueError, match="must divide"):
        M.CCTConfig(embedding_dim=10, num_heads=4)


def _tail_by_hand(p, z, cfg, start):
    """The model's tail written out with the layer functions, independently of model.forward_from."""
    from minicct.layers.encoder import PARAM_KEYS, encoder_forward
    from minicct.layers.norm import layernorm_forward
    for e in range(start, cfg.num_layers):
        z, _ = encoder_forward(z, {k: p[f"classifier.blocks.{e}.{k}"] for k in PARAM_KEYS}, cfg.num_heads)
    z, _ = layernorm_forward(z, p["classifier.norm.weight"], p["classifier.norm.bias"])
    a = p["classifier.attention_pool.weight"]
    s = z @ a.T + p["classifier.attention_pool.bias"]                       # [N, T, 1]
    w = np.exp(s - s.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    pooled = (w * z).sum(axis=1)                                             # [N, D]
    return pooled @ p["classifier.fc.weight"].T + p["classifier.fc.bias"]


def test_forward_from_runs_the_tail_of_the_full_forward():
    p = M.init_params(TINY, 3)
    x = np.random.default_rng(0).standard_normal((5, 3, 12, 12)).astype(np.float32)
    logits, cache = M.forward(p, x, TINY, capture=True)
    acts = cache["acts"]
    z0 = acts["tokens"] + p["classifier.positional_emb"]
    for e in range(TINY.num_layers):
        z = z0 if e == 0 else acts[f"enc{e - 1}.out"]
        tail, c = M.forward_from(p, z, TINY, e, capture=["pooled"])
        np.testing.assert_allclose(tail, logits, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tail, _tail_by_hand(p, z, TINY, e), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(c["acts"]["pooled"], acts["pooled"], rtol=1e-5, atol=1e-6)
        # batched, through predict
        np.testing.assert_allclose(M.predict(p, z, TINY, batch_size=2, start_encoder=e), logits,
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="start_encoder"):
        M.forward_from(p, z0, TINY, TINY.num_layers)
    with pytest.raises(ValueError, match=r"residual stream \[N, 9, 8\]"):
        M.forward_from(p, z0[:, :4], TINY, 0)


def test_predict_transform_and_capture_batches():
    p = M.init_params(TINY, 0)
    imgs = np.random.default_rng(1).integers(0, 256, (7, 12, 12, 3), dtype=np.uint8)
    to_x = lambda b: ((b.astype(np.float32) / 255 - 0.5) / 0.25).transpose(0, 3, 1, 2)
    ref, cache = M.forward(p, to_x(imgs), TINY, capture=["enc1.ff_hidden"])
    lg, acts = M.predict(p, imgs, TINY, batch_size=3, capture=["enc1.ff_hidden"], transform=to_x)
    np.testing.assert_allclose(lg, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts["enc1.ff_hidden"], cache["acts"]["enc1.ff_hidden"], rtol=1e-5, atol=1e-6)
    assert acts["enc1.ff_hidden"].dtype == np.float32 and lg.dtype == np.float32
