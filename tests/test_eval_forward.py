"""The forward that no backward follows (need_grad=False, what model.predict runs): the same numbers bit for bit,
without what only the backward needs (GELU's slope, max-pool's arg-max map, the layer caches), and a clear error
if a backward is attempted on its cache. The value-only kernels against the training kernels and their twins."""
import numpy as np
import pytest

from minicct import model as M
from minicct.layers import kernels as Kn
from minicct.layers.activations import gelu_backward, gelu_forward
from minicct.layers.conv import maxpool2d_backward, maxpool2d_forward
from minicct.layers.encoder import PARAM_KEYS, encoder_backward, encoder_forward

SMALL = M.CCTConfig(img_size=16, n_conv_layers=2, kernel_size=3, in_planes=8, embedding_dim=16, num_heads=2,
                    num_layers=2, mlp_ratio=2.0, num_classes=5, positional_embedding="sine",
                    attention_dropout=0.0, stochastic_depth=0.0)


def _same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    bits = lambda v: np.ascontiguousarray(v).view(np.uint8)           # noqa: E731 - -0.0 vs 0.0 fails too
    np.testing.assert_array_equal(bits(a), bits(b))


def test_gelu_float32_is_the_training_value_bit_for_bit():
    x = np.concatenate([np.linspace(-9, 9, 20002), np.random.default_rng(0).standard_normal(70000) * 3,
                        [0.0, -0.0]]).astype(np.float32)                # > one block of 65536 elements
    y = Kn.gelu_float32(x)
    _same_bits(y, Kn.gelu_slope_float32(x)[0])
    _same_bits(Kn.gelu_float32(x.reshape(2, -1)).ravel(), y)
    y64 = Kn.gelu(x.astype(np.float64))                                  # the naive twin, scipy's erf
    assert np.abs(y - y64).max() < 3e-6 * max(1.0, np.abs(x).max())
    _same_bits(Kn.gelu(x.astype(np.float64)), Kn.gelu_slope(x.astype(np.float64))[0])


@pytest.mark.parametrize("k,stride", [(3, 2), (2, 2), (3, 1), (1, 1)])
def test_window_max_is_the_training_max(k, stride):
    rng = np.random.default_rng(k * 10 + stride)
    xp = rng.integers(-3, 4, (2, 9, 9, 3)).astype(np.float32)          # ties and zeros
    xp[:, 0, :] = -np.inf
    Ho = Wo = (9 - k) // stride + 1
    out, out2, ref = (np.empty((2, Ho, Wo, 3), np.float32) for _ in range(3))
    Kn.window_max(xp, k, stride, out)
    Kn.window_max_naive(xp, k, stride, out2)
    Kn.window_max_argmax(xp, k, stride, ref, np.empty((2, Ho, Wo, 3), np.uint8))
    _same_bits(out, ref)
    _same_bits(out2, ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_and_maxpool_layers_without_grad(dtype):
    x = np.random.default_rng(1).standard_normal((3, 4, 9, 7)).astype(dtype)
    y, cache = gelu_forward(x, need_grad=False)
    assert cache is None
    _same_bits(y, gelu_forward(x)[0])
    with pytest.raises(ValueError, match="need_grad=False"):
        gelu_backward(np.ones_like(x), cache)
    out, cache = maxpool2d_forward(x, 3, 2, 1, need_grad=False)
    assert cache is None
    _same_bits(out, maxpool2d_forward(x, 3, 2, 1)[0])
    with pytest.raises(ValueError, match="need_grad=False"):
        maxpool2d_backward(np.ones_like(out), cache)


def test_encoder_without_grad_keeps_only_the_captured_activations():
    rng = np.random.default_rng(2)
    N, T, D, F = 3, 5, 8, 16
    p = {"pre_norm.weight": 1 + 0.1 * rng.standard_normal(D), "pre_norm.bias": 0.1 * rng.standard_normal(D),
         "self_attn.qkv.weight": 0.3 * rng.standard_normal((3 * D, D)),
         "self_attn.proj.weight": 0.3 * rng.standard_normal((D, D)), "self_attn.proj.bias": rng.standard_normal(D),
         "linear1.weight": 0.3 * rng.standard_normal((F, D)), "linear1.bias": rng.standard_normal(F),
         "norm1.weight": 1 + 0.1 * rng.standard_normal(D), "norm1.bias": 0.1 * rng.standard_normal(D),
         "linear2.weight": 0.3 * rng.standard_normal((D, F)), "linear2.bias": rng.standard_normal(D)}
    p = {k: p[k].astype(np.float32) for k in PARAM_KEYS}
    x = rng.standard_normal((N, T, D)).astype(np.float32)
    y, cache = encoder_forward(x, p, 2)
    y2, c2 = encoder_forward(x, p, 2, need_grad=False)
    _same_bits(y2, y)
    assert set(c2) == {"mha_heads", "mha_out", "ff_hidden"}
    for k in c2:
        _same_bits(c2[k], cache[k])
    with pytest.raises(ValueError, match="need_grad=False"):
        encoder_backward(np.ones_like(y), c2)


@pytest.fixture(scope="module")
def small_model():
    p = M.init_params(SMALL, 3)
    rng = np.random.default_rng(4)
    for k in p:                                           # away from the init: GELU and max-pool see varied inputs
        if not k.endswith("positional_emb"):
            p[k] = (p[k] + 0.2 * rng.standard_normal(p[k].shape)).astype(np.float32)
    x = rng.standard_normal((7, 3, 16, 16)).astype(np.float32)
    return p, x


def test_forward_without_grad_equals_forward_bit_for_bit(small_model):
    p, x = small_model
    logits, cache = M.forward(p, x, SMALL, capture=True)
    logits2, cache2 = M.forward(p, x, SMALL, capture=True, need_grad=False)
    _same_bits(logits2, logits)
    assert set(cache2["acts"]) == set(M.capture_sites(SMALL))
    for name, a in cache["acts"].items():
        _same_bits(cache2["acts"][name], a)
    assert not any(k.startswith("block") for k in cache2)                 # no encoder caches kept
    with pytest.raises(ValueError, match="need_grad=False"):
        M.backward(np.ones_like(logits2), cache2)
    # the tail from a stored residual stream, likewise
    z1 = cache["acts"]["enc0.out"]
    tail, _ = M.forward_from(p, z1, SMALL, 1)
    _same_bits(M.forward_from(p, z1, SMALL, 1, need_grad=False)[0], tail)


def test_predict_equals_the_training_forward_without_dropout(small_model):
    # predict (need_grad=False) against the training forward (train=True, dropout rates 0, caches for backward)
    p, x = small_model
    names = M.capture_sites(SMALL)
    logits, cache = M.forward(p, x, SMALL, train=True, rng=np.random.default_rng(0), capture=True)
    got, acts = M.predict(p, x, SMALL, batch_size=len(x), capture=names)
    _same_bits(got, logits)
    for name in names:
        _same_bits(acts[name], cache["acts"][name])


def test_capture_does_not_depend_on_the_batch_size():
    # report.capture's batch size (CAPTURE_BATCH) is a speed setting only: every image's activations are the
    # same bits in any batch (classroom shapes: the tokenizer's blocked convolutions, T = 64, D = 64). Not the
    # logits: the fc is one [N, D] @ [D, K] product over the batch, whose rounding may depend on N.
    cfg = M.get_config("classroom")
    p = M.init_params(cfg, 5)
    x = np.random.default_rng(6).standard_normal((9, 3, 32, 32)).astype(np.float32)
    names = M.capture_sites(cfg)
    _, ref = M.predict(p, x, cfg, batch_size=9, capture=names)
    for bs in (1, 4):
        _, acts = M.predict(p, x, cfg, batch_size=bs, capture=names)
        for name in names:
            _same_bits(acts[name], ref[name])
