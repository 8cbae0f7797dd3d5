"""The CCT transformer encoder block, exactly as the reference computes it
(src/utils/transformers.py::TransformerEncoderLayer.forward, SHI-Labs/Compact-Transformers @ cd11f09):

    a  = x + DropPath(Attn(LN_pre(x)))
    a' = LN_1(a)                                 <- norm1 overwrites the residual stream (issue #25 of the
                                                    reference: "a bad merge", kept because every released
                                                    checkpoint depends on it)
    y  = a' + DropPath(Drop2(W2 Drop1(GELU(W1 a' + b1)) + b2))

Parameters (dict, keys as the official state_dict below `classifier.blocks.{l}.`):
    pre_norm.weight/bias [D], self_attn.qkv.weight [3D, D], self_attn.proj.weight [D, D], .bias [D],
    norm1.weight/bias [D], linear1.weight [F, D], linear1.bias [F], linear2.weight [D, F], linear2.bias [D]
Shape legend: N batch, T tokens, D embedding, F = mlp_ratio * D hidden width, h heads.
"""
from .activations import gelu_backward, gelu_forward
from .attention import attention_backward, attention_forward
from .linear import linear_backward, linear_forward
from .norm import layernorm_backward, layernorm_forward
from .regularization import drop_path_backward, drop_path_forward, dropout_backward, dropout_forward

PARAM_KEYS = ("pre_norm.weight", "pre_norm.bias", "self_attn.qkv.weight", "self_attn.proj.weight",
              "self_attn.proj.bias", "linear1.weight", "linear1.bias", "norm1.weight", "norm1.bias",
              "linear2.weight", "linear2.bias")


def _attn_params(p):
    return {k[len("self_attn."):]: p[k] for k in p if k.startswith("self_attn.")}


def encoder_forward(x, p, num_heads, drop_path=0.0, attn_drop=0.0, dropout=0.0, train=False, rng=None,
                    need_grad=True):
    """Inputs: x [N, T, D], p the block's parameters. Returns y [N, T, D], cache.

    The cache also holds the activations the SNP analysis reads: cache["mha_heads"] [N, T, D] (per-head
    P v, concatenated, before proj), cache["mha_out"] [N, T, D] (a, the stream after the attention
    residual), cache["ff_hidden"] [N, T, F] (after GELU), and y itself is the block output.
    need_grad=False (no backward follows, e.g. model.predict): the same y, GELU without its slope, and the
    cache holds only those three activations (the layers' intermediates are freed when the block returns).
    """
    h1, c_pre = layernorm_forward(x, p["pre_norm.weight"], p["pre_norm.bias"])      # [N, T, D]
    at, c_attn = attention_forward(h1, _attn_params(p), num_heads, attn_drop, train, rng)
    at, c_dp1 = drop_path_forward(at, drop_path, rng, train, out=at)               # in place: at is ours
    a = x + at                                                                     # residual 1
    a1, c_n1 = layernorm_forward(a, p["norm1.weight"], p["norm1.bias"])              # norm1 on the stream
    f, c_l1 = linear_forward(a1, p["linear1.weight"], p["linear1.bias"])             # [N, T, D] -> [N, T, F]
    g, c_gelu = gelu_forward(f, need_grad)
    gd, c_d1 = dropout_forward(g, dropout, rng, train)                              # dropout1
    f2, c_l2 = linear_forward(gd, p["linear2.weight"], p["linear2.bias"])            # [N, T, F] -> [N, T, D]
    f2, c_d2 = dropout_forward(f2, dropout, rng, train)                             # dropout2
    f2, c_dp2 = drop_path_forward(f2, drop_path, rng, train, out=f2)
    y = a1 + f2                                                                    # residual 2, onto LN_1(a)
    if not need_grad:
        return y, {"mha_heads": c_attn["heads"], "mha_out": a, "ff_hidden": g}
    cache = {"pre": c_pre, "attn": c_attn, "dp1": c_dp1, "n1": c_n1, "l1": c_l1, "gelu": c_gelu,
             "d1": c_d1, "l2": c_l2, "d2": c_d2, "dp2": c_dp2,
             "mha_heads": c_attn["heads"], "mha_out": a, "ff_hidden": g}
    return y, cache


def encoder_backward(dy, cache):
    """Returns (dx [N, T, D], grads dict with the keys of PARAM_KEYS). The forward read bottom-up."""
    if "gelu" not in cache:
        raise ValueError("encoder_backward: the forward ran with need_grad=False and kept no layer caches; "
                         "run encoder_forward(...) (need_grad=True) before a backward")
    grads = {}
    # y = a1 + DropPath(Drop2(linear2(Drop1(gelu(linear1(a1))))))
    df = drop_path_backward(dy, cache["dp2"])
    df = dropout_backward(df, cache["d2"])
    dg, grads["linear2.weight"], grads["linear2.bias"] = linear_backward(df, cache["l2"])
    dg = dropout_backward(dg, cache["d1"])
    df1 = gelu_backward(dg, cache["gelu"])
    da1, grads["linear1.weight"], grads["linear1.bias"] = linear_backward(df1, cache["l1"])
    da1 += dy                                                       # the residual path into a1
    # a1 = LN_1(a)
    da, grads["norm1.weight"], grads["norm1.bias"] = layernorm_backward(da1, cache["n1"])
    # a = x + DropPath(Attn(LN_pre(x)))
    dat = drop_path_backward(da, cache["dp1"])
    dh1, g_attn = attention_backward(dat, cache["attn"])
    for k, v in g_attn.items():
        grads["self_attn." + k] = v
    dx, grads["pre_norm.weight"], grads["pre_norm.bias"] = layernorm_backward(dh1, cache["pre"])
    dx += da                                                        # the residual path into x
    return dx, {k: grads[k] for k in PARAM_KEYS}
