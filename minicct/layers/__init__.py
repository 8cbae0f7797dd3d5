"""Layers of the Compact Convolutional Transformer, each a forward/backward pair.

Contract, the same in every file:
    out, cache = <layer>_forward(x, ...params..., ...options...)
    grads      = <layer>_backward(dout, cache)
Primitive layers return gradients as a tuple in the order of the forward's array inputs (dx, dw, db);
composite layers (attention, encoder block) take a dict of parameters and return (dx, grads) with grads a
dict with the same keys. backward never modifies `dout` or the cache.
A layer whose forward does work only its backward needs (gelu: the slope; maxpool2d: the arg-max map; the
encoder block: its layer caches) takes need_grad=True; need_grad=False (model.predict) gives the same output
without that work and a cache its backward refuses with a clear error.

Shape legend: N batch, C channels, H, W height/width, T tokens, D embedding, h heads, d head dim
(D = h*d), F feed-forward hidden width, K classes.

Map (one family per file):
    kernels.py        the speed tricks, each a named kernel beside its naive twin (normal cdf, GELU with its
                      slope or alone, row sums of products, im2col, window max with or without arg-max, the
                      qkv gradient layout)
    activations.py    relu, gelu (exact erf; caches its slope), softmax and the one softmax_backward
    linear.py         y = x W^T + b over any leading dims
    norm.py           LayerNorm
    conv.py           conv2d (im2col over kernel rows) + naive twin; max-pool + naive twin
    attention.py      multi-head self-attention (forward and its mirrored backward)
    regularization.py dropout, drop-path (stochastic depth)
    pooling.py        sequence pooling
    loss.py           softmax cross-entropy with label smoothing / soft targets
    encoder.py        the CCT encoder block (with the reference's norm1 on the residual stream)
"""
