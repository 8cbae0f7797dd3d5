"""Multi-head self-attention: the reference's head slicing, gradients for several head counts,
attention dropout, purity, dtypes, errors."""

import numpy as np
import pytest

from minicct.gradcheck import check_vjp
from minicct.layers.attention import PARAM_KEYS, attention_backward, attention_forward
from _purity import assert_backward_pure


N, T, D = 2, 5, 8


def _params(rng, D=D, dtype=np.float64):
    p = {"qkv.weight": rng.standard_normal((3 * D, D)) / np.sqrt(D),
         "proj.weight": rng.standard_normal((D, D)) / np.sqrt(D),
         "proj.bias": 0.1 * rng.standard_normal(D)}
    return {k: v.astype(dtype) for k, v in p.items()}


def _loop_attention(x, p, h, P_used=None):
    """Straightforward reference: one head and one sample at a time, q rows [0:D), k [D:2D), v [2D:3D),
    head j the slice [j*d, (j+1)*d). P_used: optional [N, h, T, T] attention matrix to use instead of
    softmax (to replay a dropout mask). Returns (y, heads)."""
    Dm = x.shape[-1]
    d = Dm // h
    Wq, Wk, Wv = p["qkv.weight"][:Dm], p["qkv.weight"][Dm:2 * Dm], p["qkv.weight"][2 * Dm:]
    heads = np.zeros_like(x)
    for n in range(x.shape[0]):
        for j in range(h):
            sl = slice(j * d, (j + 1) * d)
            q, k, v = x[n] @ Wq[sl].T, x[n] @ Wk[sl].T, x[n] @ Wv[sl].T      # [T, d] each
            s = q @ k.T / np.sqrt(d)                                            # [T, T]
            a = np.exp(s - s.max(axis=1, keepdims=True))
            a /= a.sum(axis=1, keepdims=True)
            if P_used is not None:
                a = P_used[n, j]
            heads[n, :, sl] = a @ v
    return heads @ p["proj.weight"].T + p["proj.bias"], heads


@pytest.mark.parametrize("h", [1, 2, 4, 8])
def test_matches_per_head_loop(h):
    rng = np.random.default_rng(h)
    x, p = rng.standard_normal((N, T, D)), _params(rng)
    y, cache = attention_forward(x, p, h)
    y_ref, heads_ref = _loop_attention(x, p, h)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cache["heads"], heads_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cache["P"].sum(axis=-1), 1.0, atol=1e-14)


def _check(x, p, h, **kw):
    """Gradient check of x and every parameter; kw go to attention_forward (a fresh generator each call)."""
    seed = kw.pop("seed", None)

    def run(x, **params):
        rng = np.random.default_rng(seed) if seed is not None else None
        return attention_forward(x, params, h, rng=rng, **kw)

    def bwd(d, x, **params):
        dx, grads = attention_backward(d, run(x, **params)[1])
        assert set(grads) == set(PARAM_KEYS)
        return {"x": dx, **grads}

    return check_vjp(lambda x, **params: run(x, **params)[0], bwd, {"x": x, **p})


@pytest.mark.parametrize("h", [1, 2, 4])
def test_gradcheck(h):
    rng = np.random.default_rng(10 + h)
    errs = _check(rng.standard_normal((N, T, D)), _params(rng), h)
    assert set(errs) == {"x", *PARAM_KEYS} and max(errs.values()) <= 1e-7, errs


def test_gradcheck_with_attention_dropout():
    rng = np.random.default_rng(21)
    x, p = rng.standard_normal((N, T, D)), _params(rng)
    _, cache = attention_forward(x, p, 2, attn_drop=0.3, train=True, rng=np.random.default_rng(5))
    assert (cache["Pd"] == 0).any() and (cache["Pd"] != 0).any()              # the mask really acts
    errs = _check(x, p, 2, attn_drop=0.3, train=True, seed=5)
    assert max(errs.values()) <= 1e-7, errs


def test_attention_dropout_with_fixed_generator():
    rng = np.random.default_rng(23)
    x, p = rng.standard_normal((N, T, D)), _params(rng)
    rate = 0.25
    y1, c1 = attention_forward(x, p, 2, attn_drop=rate, train=True, rng=np.random.default_rng(7))
    y2, c2 = attention_forward(x, p, 2, attn_drop=rate, train=True, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(y1, y2)                                       # same seed, same mask
    y3, _ = attention_forward(x, p, 2, attn_drop=rate, train=True, rng=np.random.default_rng(8))
    assert not np.array_equal(y1, y3)
    kept = c1["Pd"] != 0
    np.testing.assert_allclose(c1["Pd"][kept], c1["P"][kept] / (1 - rate), rtol=1e-15)   # inverted dropout
    assert 0 < (~kept).mean() < 0.6
    y_ref, _ = _loop_attention(x, p, 2, P_used=c1["Pd"])
    np.testing.assert_allclose(y1, y_ref, rtol=0, atol=1e-12)
    # evaluation: no dropout, no generator needed
    y_eval, c_eval = attention_forward(x, p, 2, attn_drop=rate, train=False)
    np.testing.assert_array_equal(y_eval, attention_forward(x, p, 2)[0])
    assert c_eval["drop"] is None


@pytest.mark.parametrize("kw", [{}, {"attn_drop": 0.3, "train": True, "rng": np.random.default_rng(1)}])
def test_backward_pure(kw):
    rng = np.random.default_rng(24)
    y, cache = attention_forward(rng.standard_normal((N, T, D)), _params(rng), 2, **kw)
    assert_backward_pure(attention_backward, rng.standard_normal(y.shape), cache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("drop", [0.0, 0.3])
def test_dtype(dtype, drop):
    rng = np.random.default_rng(25)
    x, p = rng.standard_normal((N, T, D)).astype(dtype), _params(rng, dtype=dtype)
    y, cache = attention_forward(x, p, 2, attn_drop=drop, train=True, rng=np.random.default_rng(0))
    assert y.dtype == dtype and cache["heads"].dtype == dtype and cache["Pd"].dtype == dtype
    dx, grads = attention_backward(rng.standard_normal(y.shape).astype(dtype), cache)
    assert dx.dtype == dtype and all(g.dtype == dtype for g in grads.values())


def test_errors():
    rng = np.random.default_rng(26)
    p = _params(rng)
    with pytest.raises(ValueError, match=r"\[N, T, D\].*got shape \(5, 8\)"):
        attention_forward(np.zeros((5, 8)), p, 2)
    with pytest.raises(ValueError, match=r"num_heads=3 .*D=8"):
        attention_forward(np.zeros((2, 5, 8)), p, 3)
    with pytest.raises(ValueError, match=r"num_heads=0 .*D=8"):
        attention_forward(np.zeros((2, 5, 8)), p, 0)
