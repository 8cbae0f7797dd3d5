"""Lesson 1: every layer of the CCT, and proof that its hand-written backward is right.

    python lessons/01_layers.py [--seed 0]

Part 1 walks through the layers in the order of the CCT forward pass
    conv -> relu -> max-pool -> tokens -> linear -> layernorm -> gelu -> softmax -> attention
    -> dropout / drop-path -> sequence pooling -> loss -> the whole encoder block
and, for each, compares every gradient its backward returns with a centered-difference estimate
(minicct/gradcheck.py): in float64, against a random upstream gradient (never all ones: the gradient of a
sum of softmax outputs is exactly 0, which would hide any bug in softmax's backward).
    rel_error = max|analytic - numerical| / max(|analytic| + |numerical|)
Smooth layers must reach 1e-7; where ReLU or max-pool kinks apply 1e-5 (inputs are kept away from 0 and
from ties, so no perturbation of +-h crosses a kink).

Part 2 checks the fast conv and max-pool (im2col: one strided copy per kernel offset, then one matrix
multiply) against their naive twins (a Python loop over every output element) on a CIFAR-sized batch, and
measures the speed-up in this run.

Exit code 0 only when every check passes.
"""
import argparse
import os
import sys
import time

from pathlib import Path

# The matrices here are small: one BLAS thread is as fast as two, and on a shared, busy machine a second
# OpenBLAS thread can stall a 0.3 ms product for 100+ ms. Set before NumPy loads; your own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # run from a checkout without installing

import numpy as np

from minicct.gradcheck import check_vjp, numerical_vjp, rel_error
from minicct.layers.activations import gelu_backward, gelu_forward, relu_backward, relu_forward, softmax, \
    softmax_backward
from minicct.layers.attention import attention_backward, attention_forward
from minicct.layers.conv import (conv2d_backward, conv2d_backward_naive, conv2d_forward, conv2d_forward_naive,
                                 maxpool2d_backward, maxpool2d_backward_naive, maxpool2d_forward,
                                 maxpool2d_forward_naive)
from minicct.layers.encoder import PARAM_KEYS, encoder_backward, encoder_forward
from minicct.layers.linear import linear_backward, linear_forward
from minicct.layers.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from minicct.layers.norm import layernorm_backward, layernorm_forward
from minicct.layers.pooling import seqpool_backward, seqpool_forward
from minicct.layers.regularization import drop_path_backward, drop_path_forward, dropout_backward, dropout_forward

SMOOTH, KINK = 1e-7, 1e-5
results = []                                     # (what, passed), for the final verdict and the exit code


def shape(a):
    return "[" + ", ".join(map(str, np.shape(a))) + "]"


def report(n, name, formula, shapes, errors, tol):
    """One table row: the layer, its shapes, PASS/FAIL, every gradient's relative error; the formula below."""
    ok = max(errors.values()) <= tol
    results.append((name, ok))
    items = [f"{k.replace('.weight', '.w').replace('.bias', '.b')} {v:.1e}" for k, v in errors.items()]
    lines = [""]
    for item in items:                                   # wrap between "name error" items, never inside one
        if lines[-1] and len(lines[-1]) + len(item) > 56:
            lines[-1] += ","
            lines.append("")
        lines[-1] += (", " if lines[-1] else "") + item
    print(f"{n:>2}  {name:<13} {shapes:<33} {tol:.0e}  {'PASS' if ok else 'FAIL'}  {lines[0]}")
    for line in lines[1:]:
        print(f"{'':<65}{line}")
    print(f"{'':<18}{formula}")


def spaced(rng, shape_, gap=0.05):
    """Distinct values `gap` apart, none within gap/2 of 0: no ReLU kink, no max-pool tie within +-h."""
    n = int(np.prod(shape_))
    return rng.permutation((np.arange(n) - n / 2 + 0.5) * gap).reshape(shape_)


def part1(seed):
    rng = np.random.default_rng(seed)
    N, C, H, D, T, h, F, K = 2, 3, 8, 8, 16, 2, 16, 10
    print("Part 1. Every backward against centered differences (float64, random upstream gradient, h = 1e-5)")
    print(f"{'#':>2}  {'layer':<13} {'input -> output':<33} {'tol':<5}  {'':<4}  gradient: rel. error")

    # 1. conv2d (the tokenizer's 3x3, stride 1, padding 1)
    x, w, b = rng.standard_normal((N, C, H, H)), rng.standard_normal((D, C, 3, 3)), rng.standard_normal(D)
    errs = check_vjp(lambda x, w, b: conv2d_forward(x, w, b, 1, 1)[0],
                     lambda d, x, w, b: dict(zip("xwb", conv2d_backward(d, conv2d_forward(x, w, b, 1, 1)[1]))),
                     {"x": x, "w": w, "b": b}, seed=seed)
    report(1, "conv2d", "y[n,o,i,j] = b[o] + sum_{c,u,v} w[o,c,u,v] x_pad[n,c,i+u,j+v]   (cross-correlation)",
           f"{shape(x)} -> [{N}, {D}, {H}, {H}]", errs, SMOOTH)

    # 2. ReLU
    z = spaced(rng, (N, D, H, H))
    errs = check_vjp(lambda x: relu_forward(x)[0], lambda d, x: {"x": relu_backward(d, relu_forward(x)[1])},
                     {"x": z}, seed=seed)
    report(2, "relu", "y = max(x, 0);  dx = dy [x > 0]", f"{shape(z)} -> {shape(z)}", errs, KINK)

    # 3. max-pool 3/2/1 (implicit -inf padding)
    z = spaced(rng, (N, D, H, H))
    errs = check_vjp(lambda x: maxpool2d_forward(x, 3, 2, 1)[0],
                     lambda d, x: {"x": maxpool2d_backward(d, maxpool2d_forward(x, 3, 2, 1)[1])}, {"x": z}, seed=seed)
    report(3, "maxpool 3/2/1", "y = max of each 3x3 window (stride 2, -inf padding); dy goes to the argmax",
           f"{shape(z)} -> [{N}, {D}, {H // 2}, {H // 2}]", errs, KINK)

    # 4. tokens: [N, D, H', W'] -> [N, T, D], token t = y * W' + x (flatten(2, 3).transpose(1, 2))
    z = rng.standard_normal((N, D, 4, 4))
    errs = check_vjp(lambda x: x.transpose(0, 2, 3, 1).reshape(N, T, D),
                     lambda d, x: {"x": d.reshape(N, 4, 4, D).transpose(0, 3, 1, 2)}, {"x": z}, seed=seed)
    report(4, "tokens", "tokens[n, y*W'+x, d] = feat[n, d, y, x];  backward is the inverse reshape",
           f"{shape(z)} -> [{N}, {T}, {D}]", errs, SMOOTH)

    # 5. linear (linear1 of the MLP)
    x, w, b = rng.standard_normal((N, T, D)), rng.standard_normal((F, D)), rng.standard_normal(F)
    errs = check_vjp(lambda x, w, b: linear_forward(x, w, b)[0],
                     lambda d, x, w, b: dict(zip("xwb", linear_backward(d, linear_forward(x, w, b)[1]))),
                     {"x": x, "w": w, "b": b}, seed=seed)
    report(5, "linear", "y = x W^T + b;  dx = dy W, dW = dy^T x, db = sum dy", f"{shape(x)} -> [{N}, {T}, {F}]",
           errs, SMOOTH)

    # 6. LayerNorm
    x, g, b = rng.standard_normal((N, T, D)), 1 + 0.3 * rng.standard_normal(D), 0.3 * rng.standard_normal(D)
    errs = check_vjp(lambda x, g, b: layernorm_forward(x, g, b)[0],
                     lambda d, x, g, b: dict(zip("xgb", layernorm_backward(d, layernorm_forward(x, g, b)[1]))),
                     {"x": x, "g": g, "b": b}, seed=seed)
    report(6, "layernorm", "y = (x - mean) / sqrt(var + 1e-5) * g + b   (Ba et al. 2016, over D)",
           f"{shape(x)} -> {shape(x)}", errs, SMOOTH)

    # 7. GELU (exact erf form)
    z = 2 * rng.standard_normal((N, T, F))
    errs = check_vjp(lambda x: gelu_forward(x)[0], lambda d, x: {"x": gelu_backward(d, gelu_forward(x)[1])},
                     {"x": z}, seed=seed)
    report(7, "gelu", "y = x Phi(x);  dy/dx = Phi(x) + x phi(x)", f"{shape(z)} -> {shape(z)}", errs, SMOOTH)

    # 8. softmax over the keys of attention scores
    z = rng.standard_normal((N, h, T, T))
    errs = check_vjp(lambda x: softmax(x, -1), lambda d, x: {"x": softmax_backward(softmax(x, -1), d, -1)},
                     {"x": z}, seed=seed)
    report(8, "softmax", "y = exp(x) / sum exp(x);  dx = y * (dy - sum(dy * y))", f"{shape(z)} -> {shape(z)}",
           errs, SMOOTH)

    # 9. multi-head self-attention
    x = rng.standard_normal((N, T, D))
    ap = {"qkv.weight": rng.standard_normal((3 * D, D)) / np.sqrt(D),
          "proj.weight": rng.standard_normal((D, D)) / np.sqrt(D), "proj.bias": 0.1 * rng.standard_normal(D)}

    def attn_bwd(d, x, **p):
        dx, grads = attention_backward(d, attention_forward(x, p, h)[1])
        return {"x": dx, **grads}

    errs = check_vjp(lambda x, **p: attention_forward(x, p, h)[0], attn_bwd, {"x": x, **ap}, seed=seed)
    report(9, f"attention h={h}", "y = concat_j softmax(q_j k_j^T / sqrt(d)) v_j  Wproj^T + b  (Vaswani 2017)",
           f"{shape(x)} -> {shape(x)}", errs, SMOOTH)

    # 10. dropout and drop-path, with a generator re-created for every call (the same mask each time)
    x = rng.standard_normal((N, T, D))
    for fwd, bwd, name, formula in [
            (dropout_forward, dropout_backward, "dropout .3", "y = x m / (1-p), m ~ Bernoulli(1-p) per element"),
            (drop_path_forward, drop_path_backward, "drop-path .3", "y = x m / (1-p), one m per sample")]:
        errs = check_vjp(lambda x: fwd(x, 0.3, np.random.default_rng(seed + 1))[0],
                         lambda d, x: {"x": bwd(d, fwd(x, 0.3, np.random.default_rng(seed + 1))[1])},
                         {"x": x}, seed=seed)
        report(10, name, formula + "  (fixed generator)", f"{shape(x)} -> {shape(x)}", errs, SMOOTH)

    # 11. sequence pooling; its score bias has gradient 0 (softmax is shift invariant), checked absolutely
    x, w, b = rng.standard_normal((N, T, D)), rng.standard_normal((1, D)), rng.standard_normal(1)
    errs = check_vjp(lambda x, w, b: seqpool_forward(x, w, b)[0],
                     lambda d, x, w, b: dict(zip("xw", seqpool_backward(d, seqpool_forward(x, w, b)[1])[:2])),
                     {"x": x, "w": w, "b": b}, seed=seed)
    report(11, "seqpool", "z = softmax_T(x w^T + b)^T x   (CCT, Hassani et al. 2021)", f"{shape(x)} -> [{N}, {D}]",
           errs, SMOOTH)
    z, cache = seqpool_forward(x, w, b)
    dz = np.random.default_rng(seed).standard_normal(z.shape)
    _, dw, db = seqpool_backward(dz, cache)
    num_db = numerical_vjp(lambda: seqpool_forward(x, w, b)[0], b, dz)
    ok = abs(db[0]) <= 1e-12 * np.abs(dw).max() and abs(num_db[0]) <= 1e-9 * np.abs(dw).max()
    results.append(("seqpool db = 0", ok))
    print(f"    {'':<13} score bias: analytic db = {db[0]:.1e}, numerical db = {num_db[0]:.1e}, max|dw| = "
          f"{np.abs(dw).max():.1f}  -> zero up to rounding: {'PASS' if ok else 'FAIL'}")

    # 12. loss: label smoothing on integer labels, and soft (mixup) targets
    z = 2 * rng.standard_normal((N * 2, K))
    labels = rng.integers(0, K, N * 2)
    soft = 0.3 * np.eye(K)[labels] + 0.7 * np.eye(K)[rng.integers(0, K, N * 2)]
    for t, name in [(labels, "CE labels"), (soft, "CE mixup")]:
        def loss(z):
            return softmax_cross_entropy_forward(z, t, smoothing=0.1)

        errs = check_vjp(lambda z: np.float64(loss(z)[0]),
                         lambda d, z: {"z": softmax_cross_entropy_backward(d, loss(z)[1])}, {"z": z}, seed=seed)
        report(12, name, "L = -mean_n sum_k q log softmax(z), q smoothed by 0.1;  dz = (p - q) / N",
               f"{shape(z)} -> scalar", errs, SMOOTH)

    # 13. the whole encoder block: regularisation off, then on with a fixed generator
    x = rng.standard_normal((N, T, D))
    s = 1 / np.sqrt(D)
    p = {"pre_norm.weight": 1 + 0.2 * rng.standard_normal(D), "pre_norm.bias": 0.1 * rng.standard_normal(D),
         "self_attn.qkv.weight": s * rng.standard_normal((3 * D, D)),
         "self_attn.proj.weight": s * rng.standard_normal((D, D)), "self_attn.proj.bias": 0.1 * rng.standard_normal(D),
         "linear1.weight": s * rng.standard_normal((F, D)), "linear1.bias": 0.1 * rng.standard_normal(F),
         "norm1.weight": 1 + 0.2 * rng.standard_normal(D), "norm1.bias": 0.1 * rng.standard_normal(D),
         "linear2.weight": rng.standard_normal((D, F)) / np.sqrt(F), "linear2.bias": 0.1 * rng.standard_normal(D)}
    formula = "a = x + DropPath(Attn(LN_pre(x))); a1 = LN_1(a); y = a1 + DropPath(MLP(a1))"
    for name, kw, note in [
            ("encoder", {}, "   (eval)"),
            ("encoder+drop", {"train": True, "drop_path": 0.2, "attn_drop": 0.1, "dropout": 0.1},
             "\n" + " " * 18 + "with drop-path .2, attention and MLP dropout .1 (fixed generator)")]:
        def run(x, **q):
            return encoder_forward(x, q, h, rng=np.random.default_rng(seed + 2), **kw)

        def enc_bwd(d, x, **q):
            dx, grads = encoder_backward(d, run(x, **q)[1])
            return {"x": dx, **grads}

        errs = check_vjp(lambda x, **q: run(x, **q)[0], enc_bwd, {"x": x, **p}, seed=seed)
        assert set(errs) == {"x", *PARAM_KEYS}
        report(13, name, formula + note, f"{shape(x)} -> {shape(x)}", errs, SMOOTH)


def best_time(f, repeat):
    """The fastest of `repeat` runs (the least disturbed by other processes), and the last result."""
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def part2(seed):
    rng = np.random.default_rng(seed)
    print("\nPart 2. Fast (im2col, one strided copy per kernel offset) vs naive (a loop per output element)")
    print("        on a CIFAR-sized batch; naive timed once, fast the best of 5 runs; "
          f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    print(f"{'op':<28} {'pass':<9} {'naive s':>8} {'fast ms':>8} {'speed-up':>9}  rel. difference naive vs fast")

    x, w, b = rng.standard_normal((8, 3, 32, 32)), rng.standard_normal((16, 3, 3, 3)), rng.standard_normal(16)
    pool_x = rng.standard_normal((8, 16, 32, 32))
    cases = [
        ("conv2d 3->16, k3 s1 p1", x, lambda: conv2d_forward_naive(x, w, b, 1, 1),
         lambda: conv2d_forward(x, w, b, 1, 1), conv2d_backward_naive, conv2d_backward, "x w b"),
        ("maxpool 3/2/1", pool_x, lambda: maxpool2d_forward_naive(pool_x, 3, 2, 1),
         lambda: maxpool2d_forward(pool_x, 3, 2, 1), maxpool2d_backward_naive,
         lambda d, c: (maxpool2d_backward(d, c),), "x"),
    ]
    for name, inp, fwd_naive, fwd_fast, bwd_naive, bwd_fast, names in cases:
        t_n, (out_n, cache_n) = best_time(fwd_naive, 1)
        t_f, (out_f, cache_f) = best_time(fwd_fast, 5)
        err = rel_error(out_f, out_n)
        ok = err <= 1e-12
        results.append((name + " forward", ok))
        print(f"{name + ' ' + shape(inp):<28}")
        print(f"  {'forward -> ' + shape(out_f):<26} {'PASS' if ok else 'FAIL':<9} {t_n:8.2f} {1e3 * t_f:8.2f} "
              f"{t_n / t_f:8.0f}x  out {err:.1e}")
        dout = rng.standard_normal(out_n.shape)
        t_nb, g_n = best_time(lambda: bwd_naive(dout, cache_n), 1)
        t_fb, g_f = best_time(lambda: bwd_fast(dout, cache_f), 5)
        g_n = g_n if isinstance(g_n, tuple) else (g_n,)
        errs = [rel_error(a, c) for a, c in zip(g_f, g_n)]
        ok = max(errs) <= 1e-12
        results.append((name + " backward", ok))
        print(f"  {'backward':<26} {'PASS' if ok else 'FAIL':<9} {t_nb:8.2f} {1e3 * t_fb:8.2f} "
              f"{t_nb / t_fb:8.0f}x  " + ", ".join(f"d{k} {e:.1e}" for k, e in zip(names.split(), errs)))
    # the -inf padding of max-pool: an all-negative input never gives 0 at the border
    neg = -1 - rng.random((2, 4, 7, 7))
    out, _ = maxpool2d_forward(neg, 3, 2, 1)
    ok = bool((out < -1).all())
    results.append(("maxpool -inf padding", ok))
    print(f"  all-negative input: largest pooled value {out.max():.3f} < 0 (padding is -inf, not 0): "
          f"{'PASS' if ok else 'FAIL'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="seed of every random input (default 0)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    part1(args.seed)
    part2(args.seed)
    failed = [name for name, ok in results if not ok]
    print(f"\n{len(results) - len(failed)}/{len(results)} checks passed in {time.perf_counter() - t0:.1f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
