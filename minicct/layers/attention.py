"""Multi-head self-attention exactly as the CCT reference (src/utils/transformers.py::Attention, from timm).

    qkv = x Wqkv^T                       no bias; rows [0:D) are q, [D:2D) k, [2D:3D) v
    q, k, v: head j uses the contiguous slice [j*d, (j+1)*d) of each
    S = (q d^-0.5) k^T                   [N, h, T, T]   (scaling q: T/d times fewer elements than S)
    P = softmax(S) over keys, then attention dropout
    O = P v                              [N, h, T, d]
    heads = concat_j O_j                 [N, T, D]   (node n belongs to head n // d)
    y = heads Wproj^T + bproj            [N, T, D]   (proj dropout is 0 in CCT, not applied)
Vaswani et al., "Attention is all you need", arXiv 1706.03762.

Parameters (dict): "qkv.weight" [3D, D], "proj.weight" [D, D], "proj.bias" [D].
Shape legend: N batch, T tokens, D embedding, h heads, d = D / h head dim.
"""
import numpy as np

from .activations import softmax, softmax_backward
from .kernels import qkv_grad_views
from .linear import linear_backward, linear_forward
from .regularization import dropout_backward, dropout_forward

PARAM_KEYS = ("qkv.weight", "proj.weight", "proj.bias")


def attention_forward(x, params, num_heads, attn_drop=0.0, train=False, rng=None):
    """Inputs: x [N, T, D]; params as in the module docstring; num_heads h (must divide D).

    Returns: y [N, T, D], cache. cache["heads"] [N, T, D] is the concatenated per-head P v before the
    output projection (the "MHA nodes" of the SNP analysis).
    """
    if x.ndim != 3:
        raise ValueError(f"attention: expected tokens [N, T, D], got shape {x.shape}")
    N, T, D = x.shape
    if num_heads < 1 or D % num_heads:
        raise ValueError(f"attention: num_heads={num_heads} must divide the embedding dim D={D} "
                         f"(input shape {x.shape})")
    h, d = num_heads, D // num_heads
    scale = d ** -0.5

    qkv, qkv_cache = linear_forward(x, params["qkv.weight"])        # [N, T, D] -> [N, T, 3D]
    qkv = qkv.reshape(N, T, 3, h, d).transpose(2, 0, 3, 1, 4)       # -> [3, N, h, T, d]
    q, k, v = qkv[0], qkv[1], qkv[2]                                # each [N, h, T, d]
    q *= scale                                                      # in place: cache["q"] is q * d^-0.5
    S = q @ k.transpose(0, 1, 3, 2)                                 # [N, h, T, d] @ [N, h, d, T] -> [N, h, T, T]
    P = softmax(S, axis=-1, out=S)                                  # over keys; in place, S is not kept
    Pd, drop_cache = dropout_forward(P, attn_drop, rng, train)      # attention dropout
    heads = np.empty((N, T, D), dtype=np.result_type(Pd, v))        # concat_j O_j: node n of head n // d
    O = heads.reshape(N, T, h, d).transpose(0, 2, 1, 3)             # its view [N, h, T, d]: O_j lands in place
    np.matmul(Pd, v, out=O)                                         # [N, h, T, T] @ [N, h, T, d] -> [N, h, T, d]
    y, proj_cache = linear_forward(heads, params["proj.weight"], params["proj.bias"])
    cache = {"qkv": qkv_cache, "q": q, "k": k, "v": v, "P": P, "Pd": Pd, "drop": drop_cache,
             "proj": proj_cache, "heads": heads, "h": h, "scale": scale}
    return y, cache


def attention_backward(dy, cache):
    """Returns (dx [N, T, D], grads dict with keys PARAM_KEYS). Mirrors the forward, last line first."""
    h, scale = cache["h"], cache["scale"]
    q, k, v, P, Pd = cache["q"], cache["k"], cache["v"], cache["P"], cache["Pd"]
    N, _, T, d = q.shape
    D = h * d
    # forward: y = heads Wproj^T + b
    dheads, dWproj, dbproj = linear_backward(dy, cache["proj"])
    # forward: heads = O.transpose(0, 2, 1, 3).reshape(N, T, D)
    dO = dheads.reshape(N, T, h, d).transpose(0, 2, 1, 3)          # [N, T, D] -> [N, h, T, d]
    # dq, dk, dv [N, h, T, d] are views of dqkv [N, T, 3, h, d], the layout of the forward's qkv (kernel)
    dqkv, dq, dk, dv = qkv_grad_views(N, T, h, d, dO.dtype)
    # forward: O = Pd v
    dPd = dO @ v.transpose(0, 1, 3, 2)                              # [N, h, T, d] @ [N, h, d, T] -> [N, h, T, T]
    np.matmul(Pd.transpose(0, 1, 3, 2), dO, out=dv)                 # [N, h, T, T] @ [N, h, T, d] -> [N, h, T, d]
    # forward: Pd = dropout(P)
    dP = dropout_backward(dPd, cache["drop"], out=dPd)               # in place: dPd is ours
    # forward: P = softmax(S)
    dS = softmax_backward(P, dP, axis=-1, out=dP)                  # in place: dP is ours
    # forward: S = qs k^T with qs = q * scale (the cached q)
    np.matmul(dS, k, out=dq)                                        # [N, h, T, T] @ [N, h, T, d] -> [N, h, T, d]
    dq *= scale                                                     # dqs -> dq
    np.matmul(dS.transpose(0, 1, 3, 2), q, out=dk)                  # [N, h, T, T] @ [N, h, T, d] -> [N, h, T, d]
    # forward: qkv = x Wqkv^T
    dx, dWqkv, _ = linear_backward(dqkv.reshape(N, T, 3 * D), cache["qkv"])
    return dx, {"qkv.weight": dWqkv, "proj.weight": dWproj, "proj.bias": dbproj}
