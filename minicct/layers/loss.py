"""Softmax cross-entropy with label smoothing and soft targets (for mixup / cutmix).

Targets q [N, K] are built from integer labels as timm does: off = eps/K, on = 1 - eps + eps/K; soft
targets (rows summing to 1) are smoothed the same way, q <- (1 - eps) q + eps/K (smoothing and mixing commute).
    loss = -(1/N) sum_n sum_k q[n, k] log softmax(z)[n, k]
    dloss/dz = (softmax(z) - q) / N
Shape legend: N batch, K classes.
"""
import numpy as np

from .activations import log_softmax


def smooth_targets(y, num_classes, smoothing=0.0, dtype=np.float32):
    """Integer labels [N] or soft targets [N, K] -> smoothed soft targets q [N, K]."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    y = np.asarray(y)
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"integer labels expected for 1-D targets, got dtype {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"labels must be in 0..{num_classes - 1}, got values in {y.min()}..{y.max()}")
        q = np.full((y.shape[0], num_classes), smoothing / num_classes, dtype=dtype)
        q[np.arange(y.shape[0]), y] += 1.0 - smoothing
        return q
    if y.ndim == 2 and y.shape[1] == num_classes:
        if not np.allclose(y.sum(axis=1), 1.0, atol=1e-4) or (y < -1e-6).any():
            raise ValueError("soft targets must be probability rows (entries >= 0) that sum to 1")
        return ((1.0 - smoothing) * y + smoothing / num_classes).astype(dtype, copy=False)
    raise ValueError(f"targets must be labels [N] or soft targets [N, {num_classes}], got shape {y.shape}")


def softmax_cross_entropy_forward(logits, targets, smoothing=0.0):
    """Inputs: logits [N, K], targets int [N] or float [N, K]. Returns (scalar loss, cache (p, q))."""
    if logits.ndim != 2:
        raise ValueError(f"cross-entropy: logits must be [N, K], got shape {logits.shape}")
    N, K = logits.shape
    if np.shape(targets)[0] != N:
        raise ValueError(f"cross-entropy: {N} logits rows but {np.shape(targets)[0]} targets")
    q = smooth_targets(targets, K, smoothing, dtype=logits.dtype)
    logp = log_softmax(logits, axis=1)
    loss = -(q * logp).sum() / N
    return float(loss), (np.exp(logp), q)


def softmax_cross_entropy_backward(dloss, cache):
    """Returns dlogits [N, K] = dloss * (p - q) / N."""
    p, q = cache
    return (p - q) * (dloss / p.shape[0])
