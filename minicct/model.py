"""The Compact Convolutional Transformer (Hassani et al., arXiv 2104.05704), as the reference code computes it
(SHI-Labs/Compact-Transformers @ cd11f09: src/cct.py, src/utils/tokenizer.py, src/utils/transformers.py).

    x [N, 3, S, S]
    tokenizer: n_conv_layers x (conv k x k, stride s, pad p, no bias -> ReLU -> max-pool 3/2/1)
               (tokenizer_stage_forward; computed as conv -> max-pool -> ReLU, the same function and gradient)
    tokens = flatten(2, 3).transpose: [N, D, H', W'] -> [N, T, D], token index t = y * W' + x
    + positional embedding (learnable (1, T, D), sine, or none) -> dropout (p = dropout, 0 in CCT)
    L encoder blocks (layers/encoder.py; drop-path rates linspace(0, stochastic_depth, L))
    final LayerNorm -> sequence pooling [N, D] -> fc [N, K]

Parameters live in one dict whose keys are the official state_dict keys (`tokenizer.conv_layers.0.0.weight`,
`classifier.blocks.3.self_attn.qkv.weight`, ...), in the official order, with the official shapes, so
official checkpoints map one to one (minicct/io/torch_io.py). Gradients come back in a dict with the same keys.

One path per job: `forward` (a batch, with the cache for `backward`), `forward_from` (the tail from a stored
residual stream: encoders e..L-1 and the head; forward runs its own tail through it), `predict` (the one batched
evaluation loop, used by training evaluation, activation capture and the interventions; it runs its batches
one after the other, minicct.parallel.predict the same batches on threads). predict runs forward with
need_grad=False: no backward follows, so GELU skips its slope, max-pool its arg-max map and no layer cache is kept; the logits and activations are the same numbers bit for bit (tests/test_eval_forward.py).

Captured activations (the contract with minicct.analysis; minicct/sites.py names them), e counting encoders
from 0:
    tokens             [N, T, D]  tokenizer output (before the positional embedding)
    enc{e}.mha_heads   [N, T, D]  concatenated per-head P v, before the output projection;
                                  node n belongs to head n // head_dim
    enc{e}.mha_out     [N, T, D]  the residual stream after the attention residual (a = x + Attn(LN(x)))
    enc{e}.ff_hidden   [N, T, F]  the feed-forward hidden units after GELU
    enc{e}.out         [N, T, D]  the encoder block output
    pooled             [N, D]     the sequence-pooled vector fed to fc
Shape legend: N batch, T tokens, D embedding, F feed-forward width, h heads, d head dim, K classes.
"""
from __future__ import annotations

import math
import re
import threading
from dataclasses import asdict, dataclass, fields

import numpy as np

from .layers.activations import relu_backward, relu_forward
from .layers.conv import conv2d_backward, conv2d_forward, maxpool2d_backward, maxpool2d_forward
from .layers.encoder import PARAM_KEYS as BLOCK_KEYS
from .layers.encoder import encoder_backward, encoder_forward
from .layers.linear import linear_backward, linear_forward
from .layers.norm import layernorm_backward, layernorm_forward
from .layers.pooling import seqpool_backward, seqpool_forward
from .layers.regularization import dropout_backward, dropout_forward
from .sites import SITES, Site


# ------------------------------------------------------------------------------------------------- forward

def forward(params, x, cfg: CCTConfig, train=False, rng=None, capture=False, need_grad=True):
    """Logits of a batch, and the cache for backward.

    Inputs: params (dict, official keys), x [N, C, S, S] float, cfg.
    train: dropout / attention dropout / drop-path active (needs rng, a np.random.Generator).
    capture: False, True (all activations) or a collection of names (see the module docstring).
    need_grad: False when no backward follows (predict): the same logits and activations, computed without
    what only the backward needs (GELU's slope, max-pool's arg-max map, the layer caches).
    Returns: logits [N, K], cache (cache["acts"] holds the captured activations by name).
    """
    if "classifier.fc.weight" not in params:
        check_params(params, cfg)                          # names what is missing (a ValueError)
    try:
        logits, caches = _forward(params, x, cfg, train, rng, capture, need_grad)
    except KeyError:                                       # a parameter is missing: name it (and all others)
        check_params(params, cfg)
        raise
    if not train and not np.isfinite(logits).all():       # cheap ([N, K]); training checks its own loss
        bad = [k for k, v in params.items() if not np.isfinite(v).all()]
        raise ValueError(f"the logits are not finite because parameters {bad[:3]}{' ...' if len(bad) > 3 else ''} "
                         f"hold NaN or inf; the weights are damaged or come from a diverged training"
                         if bad else "the logits overflowed float32 (NaN or inf) although the parameters "
                         "and images are finite; check the input normalisation (mean/std)")
    return logits, caches


def _forward(params, x, cfg, train, rng, capture, need_grad):
    """forward's computation (forward adds the checks that name a missing or damaged parameter)."""
    check_input(x, cfg, params["classifier.fc.weight"].dtype)
    if train and rng is None and (cfg.dropout or cfg.attention_dropout or cfg.stochastic_depth):
        raise ValueError("forward(train=True) needs rng=np.random.default_rng(seed) for dropout / drop-path")
    acts, caches = {}, {}
    # tokenizer: n_conv_layers x (conv -> ReLU -> max-pool), as the reference
    h = x
    for i in range(cfg.n_conv_layers):
        h, caches[f"tok{i}"] = tokenizer_stage_forward(h, params[f"tokenizer.conv_layers.{i}.0.weight"], cfg,
                                                       need_grad)
    N, D, G, _ = h.shape
    tokens = h.transpose(0, 2, 3, 1).reshape(N, G * G, D)              # [N, D, G, G] -> [N, T, D]
    if _want(capture, "tokens"):
        acts["tokens"] = tokens
    z = tokens + params["classifier.positional_emb"] if cfg.positional_embedding != "none" else tokens
    z, caches["emb_drop"] = dropout_forward(z, cfg.dropout, rng, train)
    logits, tail = forward_from(params, z, cfg, 0, train, rng, capture, need_grad)
    acts.update(tail.pop("acts"))
    caches.update(tail)
    caches["acts"], caches["grid"] = acts, G
    return logits, caches


def forward_from(params, z, cfg: CCTConfig, start_encoder=0, train=False, rng=None, capture=False,
                 need_grad=True):
    """The model's tail: encoders start_encoder..L-1, final LayerNorm, sequence pooling, fc.

    z [N, T, D]: the residual stream entering encoder `start_encoder` (counted from 0): for encoder 0 the
    tokens plus the positional embedding, for encoder e > 0 the captured "enc{e-1}.out". `forward` runs its
    tail through this function, so forward_from(params, z_e, cfg, e) gives exactly the full forward's logits.
    need_grad=False: no backward follows (as in forward).
    Returns logits [N, K], cache (the encoders' and head's caches; cache["acts"] the captured activations).
    """
    if isinstance(start_encoder, bool) or not isinstance(start_encoder, (int, np.integer)) or \
            not 0 <= start_encoder < cfg.num_layers:
        raise ValueError(f"start_encoder must be an encoder index in 0..{cfg.num_layers - 1} (counted from 0), "
                         f"got {start_encoder!r}")
    if not isinstance(z, np.ndarray) or z.ndim != 3 or z.shape[1:] != (cfg.seq_len, cfg.embedding_dim):
        raise ValueError(f"z must be the residual stream [N, {cfg.seq_len}, {cfg.embedding_dim}] (N, T, D), "
                         f"got shape {getattr(z, 'shape', type(z).__name__)}")
    acts, caches = {}, {"cfg": cfg, "start": int(start_encoder), "need_grad": need_grad}
    rates = cfg.drop_path_rates()
    for layer in range(start_encoder, cfg.num_layers):
        z, c = encoder_forward(z, _block_params(params, layer), cfg.num_heads, rates[layer],
                               cfg.attention_dropout, cfg.dropout, train, rng, need_grad)  # [N, T, D] -> same
        if need_grad:
            caches[f"block{layer}"] = c
        for part in ("mha_heads", "mha_out", "ff_hidden"):
            if _want(capture, Site(layer, part).name):
                acts[Site(layer, part).name] = c[part]
        if _want(capture, Site(layer, "out").name):
            acts[Site(layer, "out").name] = z
    # head: LayerNorm -> sequence pooling -> fc
    z, caches["norm"] = layernorm_forward(z, params["classifier.norm.weight"], params["classifier.norm.bias"])
    pooled, caches["pool"] = seqpool_forward(z, params["classifier.attention_pool.weight"],
                                             params["classifier.attention_pool.bias"])   # [N, T, D] -> [N, D]
    if _want(capture, "pooled"):
        acts["pooled"] = pooled
    logits, caches["fc"] = linear_forward(pooled, params["classifier.fc.weight"],
                                          params["classifier.fc.bias"])                  # [N, D] -> [N, K]
    caches["acts"] = acts
    return logits, caches


def backward(dlogits, cache) -> dict:
    """Gradients of all parameters (dict, same keys and order as the parameters), given dL/dlogits [N, K]."""
    if not cache["need_grad"]:
        raise ValueError("backward: this cache comes from forward(..., need_grad=False), which keeps nothing for "
                         "a backward; run forward(params, x, cfg, ...) with need_grad=True (the default)")
    cfg = cache["cfg"]
    g = {}
    dpooled, g["classifier.fc.weight"], g["classifier.fc.bias"] = linear_backward(dlogits, cache["fc"])
    dz, g["classifier.attention_pool.weight"], g["classifier.attention_pool.bias"] = \
        seqpool_backward(dpooled, cache["pool"])
    dz, g["classifier.norm.weight"], g["classifier.norm.bias"] = layernorm_backward(dz, cache["norm"])
    for layer in reversed(range(cfg.num_layers)):
        dz, gb = encoder_backward(dz, cache[f"block{layer}"])
        for k, v in gb.items():
            g[f"classifier.blocks.{layer}.{k}"] = v
    dz = dropout_backward(dz, cache["emb_drop"])
    if cfg.positional_embedding != "none":
        g["classifier.positional_emb"] = dz.sum(axis=0, keepdims=True)   # [N, T, D] -> [1, T, D]
    N, T, D = dz.shape
    G = cache["grid"]
    dh = dz.reshape(N, G, G, D).transpose(0, 3, 1, 2)                     # [N, T, D] -> [N, D, G, G]
    for i in reversed(range(cfg.n_conv_layers)):
        dh, g[f"tokenizer.conv_layers.{i}.0.weight"] = tokenizer_stage_backward(dh, cache[f"tok{i}"], need_dx=i > 0)
    return {k: g[k] for k in param_shapes(cfg)}


def tokenizer_stage_forward(x, w, cfg: CCTConfig, need_grad=True):
    """One tokenizer stage as the reference: conv (no bias) -> ReLU -> max-pool. x [N, C, H, W] -> [N, C', H', W'].

    Computed in the commuting order conv -> max-pool -> ReLU: ReLU is monotone, so max(relu) = relu(max) and the
    gradient reaches the same input; after the pool ReLU touches 4x fewer elements. Tested against the
    reference order (tests/test_layers_kernels.py).
    need_grad=False (no backward follows): the same output, max-pool without its arg-max map, cache None.
    """
    h, c_conv = conv2d_forward(x, w, None, cfg.conv_stride, cfg.conv_padding)
    h, c_pool = maxpool2d_forward(h, cfg.pooling_kernel_size, cfg.pooling_stride, cfg.pooling_padding, need_grad)
    h, c_relu = relu_forward(h)                                          # relu(maxpool(.)) = maxpool(relu(.))
    return h, (c_conv, c_pool, c_relu) if need_grad else None


def tokenizer_stage_backward(dout, cache, need_dx=True):
    """Returns (dx, dw) of tokenizer_stage_forward, its lines read bottom-up."""
    c_conv, c_pool, c_relu = cache
    dh = relu_backward(dout, c_relu)
    dh = maxpool2d_backward(dh, c_pool)
    dx, dw, _ = conv2d_backward(dh, c_conv, need_dx=need_dx)
    return dx, dw


def _block_params(params, layer):
    prefix = f"classifier.blocks.{layer}."
    return {k: params[prefix + k] for k in BLOCK_KEYS}


def _want(capture, name):
    return capture is True or (capture and name in capture)


def check_input(x, cfg: CCTConfig, dtype=None):
    """Images must be a float array [N, n_input_channels, img_size, img_size], finite."""
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"expected images [N, {cfg.n_input_channels}, {cfg.img_size}, {cfg.img_size}], "
                         f"got {type(x).__name__} of shape {getattr(x, 'shape', None)}")
    if x.shape[1:] != (cfg.n_input_channels, cfg.img_size, cfg.img_size):
        raise ValueError(f"expected images [N, {cfg.n_input_channels}, {cfg.img_size}, {cfg.img_size}] for this "
                         f"config, got {x.shape}; resize the images or build the model with img_size={x.shape[-1]}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"images must be float (normalised), got dtype {x.dtype}; "
                         f"use minicct.datasets.to_model_input")
    if dtype is not None and x.dtype != dtype:
        raise ValueError(f"images are {x.dtype} but the parameters are {dtype}; cast one of them")
    if not np.isfinite(x).all():
        raise ValueError("images contain NaN or inf")


# ------------------------------------------------------------------------------------------------- config

@dataclass(frozen=True)
class CCTConfig:
    """Hyper-parameters of a CCT. Defaults are those of the reference `CCT` class (src/cct.py)."""

    img_size: int = 32
    n_input_channels: int = 3
    n_conv_layers: int = 1
    kernel_size: int = 3
    stride: int | None = None          # None: max(1, k // 2 - 1), as the reference's _cct factory
    padding: int | None = None         # None: max(1, k // 2)
    pooling_kernel_size: int = 3
    pooling_stride: int = 2
    pooling_padding: int = 1
    in_planes: int = 64                # width of the intermediate tokenizer convs
    embedding_dim: int = 256
    num_layers: int = 7
    num_heads: int = 4
    mlp_ratio: float = 2.0
    num_classes: int = 10
    positional_embedding: str = "learnable"   # 'learnable' | 'sine' | 'none'
    dropout: float = 0.0
    attention_dropout: float = 0.1
    stochastic_depth: float = 0.1

    def __post_init__(self):
        """Every field checked at the boundary: a bad value raises a ValueError naming the field, its value and
        the allowed range (a zero stride or head count would otherwise surface as a ZeroDivisionError)."""
        def whole(name, lo, optional=False):
            v = getattr(self, name)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"CCTConfig.{name} must be an integer >= {lo}"
                                 f"{' (or None for the default)' if optional else ''}, got {v!r}")
        for name in ("img_size", "n_input_channels", "n_conv_layers", "kernel_size", "pooling_kernel_size",
                     "pooling_stride", "in_planes", "embedding_dim", "num_layers", "num_heads", "num_classes"):
            whole(name, 1)
        whole("pooling_padding", 0)
        whole("stride", 1, optional=True)
        whole("padding", 0, optional=True)
        r = self.mlp_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float, np.number)) or not math.isfinite(r) or r <= 0:
            raise ValueError(f"CCTConfig.mlp_ratio must be a finite number > 0, got {r!r}")
        if int(self.embedding_dim * r) < 1:
            raise ValueError(f"CCTConfig.mlp_ratio={r!r} gives a feed-forward width of 0 at "
                             f"embedding_dim={self.embedding_dim}")
        for name in ("dropout", "attention_dropout", "stochastic_depth"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, (int, float, np.number)) or not 0 <= p < 1:
                raise ValueError(f"CCTConfig.{name} must be a probability in [0, 1), got {p!r}")
        if self.pooling_padding * 2 > self.pooling_kernel_size:
            raise ValueError(f"CCTConfig.pooling_padding={self.pooling_padding} must be at most half of "
                             f"pooling_kernel_size={self.pooling_kernel_size} (as in torch's max-pool)")
        if self.positional_embedding not in ("learnable", "sine", "none"):
            raise ValueError(f"positional_embedding must be 'learnable', 'sine' or 'none', "
                             f"got {self.positional_embedding!r}")
        if self.embedding_dim % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide embedding_dim={self.embedding_dim}")
        if min(self.img_size, self.n_conv_layers, self.num_layers, self.num_classes, self.kernel_size) < 1:
            raise ValueError(f"sizes must be positive: {self}")
        if self.seq_len < 1:
            raise ValueError(f"img_size {self.img_size} is too small for {self.n_conv_layers} tokenizer stages")

    @property
    def conv_stride(self) -> int:
        return self.stride if self.stride is not None else max(1, self.kernel_size // 2 - 1)

    @property
    def conv_padding(self) -> int:
        return self.padding if self.padding is not None else max(1, self.kernel_size // 2)

    @property
    def channels(self) -> list:
        """Tokenizer channel list: [3] + [in_planes] * (n_conv_layers - 1) + [D]."""
        return [self.n_input_channels] + [self.in_planes] * (self.n_conv_layers - 1) + [self.embedding_dim]

    @property
    def grid_size(self) -> int:
        """Side of the token grid after the tokenizer."""
        s = self.img_size
        for _ in range(self.n_conv_layers):
            s = (s + 2 * self.conv_padding - self.kernel_size) // self.conv_stride + 1
            s = (s + 2 * self.pooling_padding - self.pooling_kernel_size) // self.pooling_stride + 1
        return s

    @property
    def seq_len(self) -> int:
        return self.grid_size ** 2

    @property
    def head_dim(self) -> int:
        return self.embedding_dim // self.num_heads

    @property
    def ff_dim(self) -> int:
        return int(self.embedding_dim * self.mlp_ratio)

    def drop_path_rates(self) -> list:
        """linspace(0, stochastic_depth, L): layer 0 never drops (reference, transformers.py)."""
        return [float(r) for r in np.linspace(0, self.stochastic_depth, self.num_layers)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CCTConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown CCTConfig fields {sorted(unknown)}")
        return cls(**d)


# ------------------------------------------------------------------------------------------------- variants

_BASES = {  # src/cct.py: cct_2 ... cct_14
    2: dict(num_layers=2, num_heads=2, mlp_ratio=1.0, embedding_dim=128),
    4: dict(num_layers=4, num_heads=2, mlp_ratio=1.0, embedding_dim=128),
    6: dict(num_layers=6, num_heads=4, mlp_ratio=2.0, embedding_dim=256),
    7: dict(num_layers=7, num_heads=4, mlp_ratio=2.0, embedding_dim=256),
    14: dict(num_layers=14, num_heads=6, mlp_ratio=3.0, embedding_dim=384),
}
_DEFAULT_CLASSES = {32: 10, 224: 102}   # src/cct.py defaults; cct_14_* default to 1000 (ImageNet)

#: The classroom model (this project's own variant, not in the reference): 4 encoders and 2 heads so that
#: progression along encoders and head specialisation can be seen; small enough to train on 2 CPU cores in
#: minutes. Tokenizer: 2 conv stages (3 -> 32 -> 64 channels) giving an 8 x 8 grid of 64 tokens.
#: Sine positional embedding (the reference's `_sine` option): with a learnable one the model learns the
#: embedded dataset's row/column layout far more slowly (compare lesson 02 with
#: `python -m minicct train --config-json '{"positional_embedding": "learnable"}' --optimizer sgd --lr 0.05
#: --weight-decay 5e-4 --epochs 10`). No dropout / drop-path: the run is too short to overfit.
CLASSROOM = dict(img_size=32, n_conv_layers=2, kernel_size=3, in_planes=32, embedding_dim=64, num_layers=4,
                 num_heads=2, mlp_ratio=2.0, num_classes=20, positional_embedding="sine",
                 attention_dropout=0.0, stochastic_depth=0.0)

VARIANTS = ["cct_2_3x2_32", "cct_4_3x2_32", "cct_6_3x1_32", "cct_6_3x2_32", "cct_7_3x1_32", "cct_7_3x2_32",
            "cct_7_7x2_224", "cct_14_7x2_224", "classroom"]


def get_config(name: str, num_classes: int | None = None, **overrides) -> CCTConfig:
    """Config of a named variant: `cct_{L}_{k}x{convs}_{img}[_sine][_c100|_fl]` as in src/cct.py, or 'classroom'.

    e.g. get_config("cct_7_3x1_32", num_classes=100). Extra keyword arguments override fields.
    """
    if name == "classroom":
        kw = dict(CLASSROOM)
    else:
        m = re.fullmatch(r"cct_(\d+)_(\d+)x(\d+)_(\d+)(_sine)?(_c100|_fl)?", name)
        if not m or int(m.group(1)) not in _BASES:
            raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)} "
                             f"(optionally with _sine and _c100/_fl suffixes)")
        L, k, convs, img = (int(m.group(i)) for i in range(1, 5))
        kw = dict(_BASES[L], kernel_size=k, n_conv_layers=convs, img_size=img,
                  num_classes=1000 if L == 14 else _DEFAULT_CLASSES.get(img, 10),
                  positional_embedding="sine" if m.group(5) else "learnable")
        if m.group(6) == "_c100":
            kw["num_classes"] = 100
        elif m.group(6) == "_fl":
            kw["num_classes"] = 102
    if num_classes is not None:
        kw["num_classes"] = num_classes
    kw.update(overrides)
    return CCTConfig(**kw)


# ------------------------------------------------------------------------------------------------- parameters

def param_shapes(cfg: CCTConfig) -> dict:
    """name -> shape, in the official state_dict order."""
    D, F, K, T = cfg.embedding_dim, cfg.ff_dim, cfg.num_classes, cfg.seq_len
    shapes = {}
    ch = cfg.channels
    for i in range(cfg.n_conv_layers):
        shapes[f"tokenizer.conv_layers.{i}.0.weight"] = (ch[i + 1], ch[i], cfg.kernel_size, cfg.kernel_size)
    if cfg.positional_embedding != "none":
        shapes["classifier.positional_emb"] = (1, T, D)
    shapes["classifier.attention_pool.weight"] = (1, D)
    shapes["classifier.attention_pool.bias"] = (1,)
    block = {"pre_norm.weight": (D,), "pre_norm.bias": (D,), "self_attn.qkv.weight": (3 * D, D),
             "self_attn.proj.weight": (D, D), "self_attn.proj.bias": (D,), "linear1.weight": (F, D),
             "linear1.bias": (F,), "norm1.weight": (D,), "norm1.bias": (D,), "linear2.weight": (D, F),
             "linear2.bias": (D,)}
    for layer in range(cfg.num_layers):
        for k in BLOCK_KEYS:
            shapes[f"classifier.blocks.{layer}.{k}"] = block[k]
    shapes["classifier.norm.weight"] = (D,)
    shapes["classifier.norm.bias"] = (D,)
    shapes["classifier.fc.weight"] = (K, D)
    shapes["classifier.fc.bias"] = (K,)
    return shapes


def count_params(cfg: CCTConfig) -> int:
    """Number of parameters as the reference counts them (sum of numel, the sine table included)."""
    return int(sum(math.prod(s) for s in param_shapes(cfg).values()))


def frozen_params(cfg: CCTConfig) -> tuple:
    """Names that are not trained: the sine positional embedding (requires_grad=False in the reference)."""
    return ("classifier.positional_emb",) if cfg.positional_embedding == "sine" else ()


def sine_embedding(T: int, D: int) -> np.ndarray:
    """Sinusoidal table (1, T, D): angle[p, i] = p / 10000^(2 floor(i/2) / D); sin on even i, cos on odd i.

    Positions are the 1-D token indices (reference transformers.py::sinusoidal_embedding).
    """
    p = np.arange(T, dtype=np.float64)[:, None]
    i = np.arange(D)[None, :]
    angle = (p / 10000 ** (2 * (i // 2) / D)).astype(np.float32)
    pe = np.where(i % 2 == 0, np.sin(angle), np.cos(angle))
    return pe[None].astype(np.float32)


def _trunc_normal(rng, shape, std, a=-2.0, b=2.0):
    """N(0, std^2) truncated to [a, b] (absolute bounds, as torch.nn.init.trunc_normal_), by resampling."""
    x = rng.standard_normal(shape) * std
    bad = (x < a) | (x > b)
    while bad.any():
        x[bad] = rng.standard_normal(int(bad.sum())) * std
        bad = (x < a) | (x > b)
    return x


def init_params(cfg: CCTConfig, seed=0, dtype=np.float32) -> dict:
    """Reference initialisation: conv kaiming_normal (fan_in, gain sqrt 2): std = sqrt(2 / (c_in k k));
    Linear weights trunc_normal(std .02), biases 0; LayerNorm (1, 0); learnable PE trunc_normal(std .2);
    sine PE the fixed table. `seed`: an int or a np.random.Generator.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(cfg).items():
        if name.startswith("tokenizer."):
            fan_in = shape[1] * shape[2] * shape[3]
            value = rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
        elif name == "classifier.positional_emb":
            value = (sine_embedding(cfg.seq_len, cfg.embedding_dim) if cfg.positional_embedding == "sine"
                     else _trunc_normal(rng, shape, 0.2))
        elif "norm" in name.split(".")[-2]:
            value = np.ones(shape) if name.endswith(".weight") else np.zeros(shape)
        elif name.endswith(".bias"):
            value = np.zeros(shape)
        else:
            value = _trunc_normal(rng, shape, 0.02)
        params[name] = np.ascontiguousarray(value, dtype=dtype)
    return params


def check_params(params: dict, cfg: CCTConfig):
    """Raise a ValueError listing missing, unexpected and mis-shaped parameters."""
    lines = mismatch_lines(param_shapes(cfg), params)
    if lines:
        raise ValueError("parameters do not fit the config "
                         f"(embedding_dim={cfg.embedding_dim}, num_layers={cfg.num_layers}, "
                         f"num_classes={cfg.num_classes}, seq_len={cfg.seq_len}):\n" + "\n".join(lines))


def mismatch_lines(expected: dict, found: dict, extra_problems=()) -> list:
    """The one shape-mismatch reporter: lines naming the missing, unexpected and mis-shaped names of `found`
    ({name: array}) against `expected` ({name: shape}); extra_problems: more "name: ..." mismatches (e.g. a
    dtype). [] when everything fits."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [f"{k}: expected shape {tuple(s)}, found {tuple(np.shape(found[k]))}"
             for k, s in expected.items() if k in found and tuple(np.shape(found[k])) != tuple(s)]
    wrong += list(extra_problems)
    lines = []
    if missing:
        lines.append(f"  missing keys ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
    if wrong:
        lines.append(f"  mismatches ({len(wrong)}):")
        lines += [f"    {w}" for w in wrong]
    return lines


# ------------------------------------------------------------------------------------------------- evaluation

def capture_sites(cfg: CCTConfig) -> list:
    """All capture names of a config, in forward order."""
    names = ["tokens"]
    for e in range(cfg.num_layers):
        names += [Site(e, part).name for part in SITES]        # mha_heads, mha_out, ff_hidden, out
    return names + ["pooled"]


def predict(params, x, cfg: CCTConfig, batch_size=256, capture=None, transform=None, start_encoder=None,
            out=None, run=None):
    """Evaluation-mode logits for many inputs, batch_size at a time: the one batched evaluation loop.

    x: float images [N, C, S, S]; or anything `transform` turns into them batch by batch (e.g. uint8 images
    [N, S, S, 3] with transform=lambda b: to_model_input(b, mean, std)); or, with start_encoder=e, the
    residual stream z [N, T, D] entering encoder e (forward_from).
    capture: optional collection of activation names; then returns (logits [N, K] float32,
    {name: float32 array [N, ...]}), the activations of all inputs stacked.
    out: optional {name: writable float32 array [N, ...]} (e.g. np.memmap files) that captured activations are
    written into batch by batch instead of new arrays (minicct.analysis.capture_to_disk).
    run: how the batches are run, run(fn, batch_slices) -> [fn(s) for s in batch_slices]; None: one after the
    other. minicct.parallel.predict passes threads: every batch is still computed whole by one worker, so the
    numbers are bit for bit the same.
    """
    if capture is not None:
        capture = list(capture)
        unknown = set(capture) - set(capture_sites(cfg))
        if unknown:
            raise ValueError(f"unknown activation names {sorted(unknown)}; known: {capture_sites(cfg)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    N = len(x)
    dtype = params["classifier.fc.weight"].dtype
    logits = np.empty((N, cfg.num_classes), dtype=np.float32)
    for name, arr in (out or {}).items():
        if name not in (capture or ()) or len(arr) != N or arr.dtype != np.float32:
            raise ValueError(f"out[{name!r}] must be a float32 array [N={N}, ...] for a captured name "
                             f"(capture={capture}), got {getattr(arr, 'dtype', None)} {getattr(arr, 'shape', None)}")
    acts = dict(out or {})
    lock = threading.Lock()                               # batches may run on threads (run=...)

    def one(sl):
        xb = x[sl]
        if transform is not None:
            xb = np.asarray(transform(xb)).astype(dtype, copy=False)
        if start_encoder is None:
            z, cache = forward(params, xb, cfg, train=False, capture=capture or False, need_grad=False)
        else:
            z, cache = forward_from(params, np.asarray(xb), cfg, start_encoder, capture=capture or False,
                                    need_grad=False)
        logits[sl] = z
        for name in capture or ():
            a = cache["acts"][name]
            with lock:
                if name not in acts:
                    acts[name] = np.empty((N,) + a.shape[1:], dtype=np.float32)
            acts[name][sl] = a

    batches = [slice(s, min(s + batch_size, N)) for s in range(0, N, batch_size)]
    if run is None:
        for sl in batches:
            one(sl)
    else:
        run(one, batches)
    if capture is None:
        return logits
    for name in capture:                                  # N = 0: empty arrays of the right rank
        acts.setdefault(name, np.zeros((0,), dtype=np.float32))
    return logits, acts
