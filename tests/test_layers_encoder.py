"""The CCT encoder block: the reference's wiring (norm1 on the residual stream), whole-block gradient checks
with regularisation off and on (fixed generator), captured activations, purity, dtypes."""
import math

import numpy as np
import pytest
from scipy.special import erf

from minicct.gradcheck import check_vjp
from minicct.layers.encoder import PARAM_KEYS, encoder_backward, encoder_forward
from _purity import assert_backward_pure


N, T, D, F = 2, 4, 8, 12
ON = {"drop_path": 0.3, "attn_drop": 0.2, "dropout": 0.25}


def _params(rng, dtype=np.float64):
    """Small random parameters with the official key names (LayerNorm gains around 1, never all ones)."""
    s = 1 / math.sqrt(D)
    p = {"pre_norm.weight": 1 + 0.2 * rng.standard_normal(D), "pre_norm.bias": 0.1 * rng.standard_normal(D),
         "self_attn.qkv.weight": s * rng.standard_normal((3 * D, D)),
         "self_attn.proj.weight": s * rng.standard_normal((D, D)), "self_attn.proj.bias": 0.1 * rng.standard_normal(D),
         "linear1.weight": s * rng.standard_normal((F, D)), "linear1.bias": 0.1 * rng.standard_normal(F),
         "norm1.weight": 1 + 0.2 * rng.standard_normal(D), "norm1.bias": 0.1 * rng.standard_normal(D),
         "linear2.weight": rng.standard_normal((D, F)) / math.sqrt(F), "linear2.bias": 0.1 * rng.standard_normal(D)}
    assert set(p) == set(PARAM_KEYS)
    return {k: v.astype(dtype) for k, v in p.items()}


def _reference_block(x, p, h):
    """The reference forward (eval mode) in plain NumPy, from the formulas:
    a = x + Attn(LN_pre(x)); a1 = LN_1(a); y = a1 + W2 GELU(W1 a1 + b1) + b2."""
    def ln(v, g, b):
        mu, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + 1e-5) * g + b

    def attn(v):
        d = D // h
        qkv = v @ p["self_attn.qkv.weight"].T
        out = np.zeros_like(v)
        for j in range(h):
            q, k, vv = (qkv[..., i * D + j * d: i * D + (j + 1) * d] for i in range(3))
            s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
            a = np.exp(s - s.max(-1, keepdims=True))
            out[..., j * d:(j + 1) * d] = (a / a.sum(-1, keepdims=True)) @ vv
        return out @ p["self_attn.proj.weight"].T + p["self_attn.proj.bias"]

    a = x + attn(ln(x, p["pre_norm.weight"], p["pre_norm.bias"]))
    a1 = ln(a, p["norm1.weight"], p["norm1.bias"])
    f = a1 @ p["linear1.weight"].T + p["linear1.bias"]
    g = f * 0.5 * (1 + erf(f / math.sqrt(2)))
    return a1 + g @ p["linear2.weight"].T + p["linear2.bias"], a, g


@pytest.mark.parametrize("h", [1, 2, 4])
def test_forward_matches_reference_wiring(h):
    rng = np.random.default_rng(h)
    x, p = rng.standard_normal((N, T, D)), _params(rng)
    y, cache = encoder_forward(x, p, h)
    y_ref, a_ref, g_ref = _reference_block(x, p, h)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cache["mha_out"], a_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cache["ff_hidden"], g_ref, rtol=0, atol=1e-12)
    assert cache["mha_heads"].shape == (N, T, D) and cache["ff_hidden"].shape == (N, T, F)
    assert cache["mha_heads"] is cache["attn"]["heads"]


def test_norm1_overwrites_the_residual_stream():
    """With the MLP's output zeroed, the block returns LN_1(x + Attn(LN_pre(x))), not x + Attn(...)."""
    rng = np.random.default_rng(5)
    x, p = 3 + rng.standard_normal((N, T, D)), _params(rng)
    p["linear2.weight"][:] = 0
    p["linear2.bias"][:] = 0
    y, cache = encoder_forward(x, p, 2)
    a = cache["mha_out"]
    assert np.abs(y - a).max() > 1.0                              # x has mean 3: LN_1 visibly moves it
    ref = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-5) * p["norm1.weight"] \
        + p["norm1.bias"]
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)


def _check(x, p, h, seed=None, **kw):
    """Whole-block gradient check of x and all 11 parameter tensors. A fresh generator with the same seed
    for every forward call, so every dropout / drop-path mask is the same in all of them."""
    def run(x, **params):
        rng = np.random.default_rng(seed) if seed is not None else None
        return encoder_forward(x, params, h, rng=rng, **kw)

    def bwd(d, x, **params):
        dx, grads = encoder_backward(d, run(x, **params)[1])
        assert list(grads) == list(PARAM_KEYS)
        return {"x": dx, **grads}

    return check_vjp(lambda x, **params: run(x, **params)[0], bwd, {"x": x, **p})


@pytest.mark.parametrize("h", [1, 2, 4])
def test_gradcheck_eval(h):
    rng = np.random.default_rng(10 + h)
    errs = _check(rng.standard_normal((N, T, D)), _params(rng), h)
    assert set(errs) == {"x", *PARAM_KEYS} and max(errs.values()) <= 1e-7, errs


def test_gradcheck_with_regularisation_on():
    rng = np.random.default_rng(20)
    x, p = rng.standard_normal((N, T, D)), _params(rng)
    _, cache = encoder_forward(x, p, 2, train=True, rng=np.random.default_rng(0), **ON)
    # the seed is chosen so that every mask acts: each drop-path keeps one sample and drops the other,
    # each dropout zeros some entries
    for k in ("dp1", "dp2"):
        assert sorted(cache[k][0].ravel()) == [0.0, 1.0]
    assert all((~cache[k][0]).any() for k in ("d1", "d2")) and (~cache["attn"]["drop"][0]).any()
    errs = _check(x, p, 2, seed=0, train=True, **ON)
    assert max(errs.values()) <= 1e-7, errs


def test_eval_mode_ignores_rates():
    rng = np.random.default_rng(22)
    x, p = rng.standard_normal((N, T, D)), _params(rng)
    y0, _ = encoder_forward(x, p, 2)
    y_eval, c_eval = encoder_forward(x, p, 2, train=False, **ON)
    np.testing.assert_array_equal(y_eval, y0)
    assert all(c_eval[k] is None for k in ("dp1", "d1", "d2", "dp2"))
    y_tr, _ = encoder_forward(x, p, 2, train=True, rng=np.random.default_rng(0), **ON)
    assert not np.array_equal(y_tr, y0)


@pytest.mark.parametrize("train", [False, True])
def test_backward_pure(train):
    rng = np.random.default_rng(23)
    y, cache = encoder_forward(rng.standard_normal((N, T, D)), _params(rng), 2, train=train,
                               rng=np.random.default_rng(1), **ON)
    assert_backward_pure(encoder_backward, rng.standard_normal(y.shape), cache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("train", [False, True])
def test_dtype(dtype, train):
    rng = np.random.default_rng(24)
    x, p = rng.standard_normal((N, T, D)).astype(dtype), _params(rng, dtype)
    y, cache = encoder_forward(x, p, 2, train=train, rng=np.random.default_rng(1), **ON)
    assert y.dtype == dtype
    assert all(cache[k].dtype == dtype for k in ("mha_heads", "mha_out", "ff_hidden"))
    dx, grads = encoder_backward(rng.standard_normal(y.shape).astype(dtype), cache)
    assert dx.dtype == dtype and all(g.dtype == dtype for g in grads.values())


def test_errors_from_the_sublayers():
    rng = np.random.default_rng(25)
    p = _params(rng)
    with pytest.raises(ValueError, match=r"num_heads=3 .*D=8"):
        encoder_forward(rng.standard_normal((N, T, D)), p, 3)
    with pytest.raises(ValueError, match=r"\(2, 4, 6\), got \(8,\)"):
        encoder_forward(rng.standard_normal((N, T, 6)), p, 2)
