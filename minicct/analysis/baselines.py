"""Baselines for ANDC pruning: masks with exactly the ANDC mask's per-node degree. [INF]

ANDC keeps, for every node, the connections to its own labels (andc.andc_mask for the read-out, andc.ff_mask
for FF linear2). To call that selection *selective*, it must beat masks that keep the SAME NUMBER of
connections per node but choose them without the SNP:

    random     each node keeps deg_n connections at random, every target used about equally often
               (andc.random_mask_like, after the authors' Random_AFCC.py control)
    magnitude  each node keeps its deg_n connections of largest weight magnitude (the plain pruning baseline;
               for the flat read-out the magnitude of node n's weight to label j is ||W[j, :, n]||_2 over tokens)
    unpruned   the dense layer, trained / scored identically

Node = column of the read-out mask M [K, D] (node n -> labels j); for FF linear2 [D, F] (hidden a -> output b)
the node is the output b, a row (degree = kept inputs per output node), as in interventions.ff_pruning_experiment.
`readout_baselines` retrains all four read-outs identically (same start, epochs and seed).
Shape legend: N images, T tokens, D nodes, F FF hidden width, K classes.
"""
from __future__ import annotations

import numpy as np

from .andc import _check_mask, masked_retrain, random_mask_like
from .readout import readout_accuracy, train_readout

__all__ = ["magnitude_mask_like", "random_mask_like", "readout_scores", "ff_baseline_masks", "readout_baselines"]


def readout_scores(W):
    """Magnitude score [K, D] of a read-out: ||W[j, :, n]||_2 over tokens for W [K, T, D], |W[j, n]| for [K, D]."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim == 3:
        return np.sqrt((W * W).sum(axis=1))                   # [K, T, D] -> [K, D]
    if W.ndim == 2:
        return np.abs(W)
    raise ValueError(f"read-out weight must be [K, T, D] or [K, D], got shape {W.shape}")


def magnitude_mask_like(M, scores):
    """Mask [K, D] keeping, in every column n, the M[:, n].sum() entries of largest scores[:, n].

    Exactly the column degrees of M (ties broken by the lower row index, deterministic).
    Inputs: M [K, D] bool (e.g. the ANDC read-out mask), scores [K, D] (readout_scores(W), or |W2|^T).
    """
    M = _check_mask(M)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != M.shape:
        raise ValueError(f"scores must have the mask's shape {M.shape}, got {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    K, D = M.shape
    deg = M.sum(axis=0)                                       # [D]
    order = np.argsort(-scores, axis=0, kind="stable")        # [K, D] rows by decreasing score per column
    rank = np.empty_like(order)
    rank[order, np.arange(D)[None, :]] = np.arange(K)[:, None]
    return rank < deg[None, :]                                # [K, D]


def ff_baseline_masks(M_ff, W2, seed=0):
    """Random and magnitude masks [D, F] for FF linear2 with the ANDC mask's kept inputs per output node.

    M_ff [D, F] (andc.ff_mask: output b x hidden a), W2 [D, F] the linear2 weight. Returns (random, magnitude).
    """
    M_ff = _check_mask(M_ff, "M_ff")
    W2 = np.asarray(W2)
    if W2.shape != M_ff.shape:
        raise ValueError(f"W2 must have the mask's shape {M_ff.shape} (D outputs x F hidden), got {W2.shape}")
    rand = random_mask_like(M_ff.T, seed=seed).T              # degrees per output node b (rows of M_ff)
    mag = magnitude_mask_like(M_ff.T, np.abs(W2).T).T
    return rand, mag


def readout_baselines(A_train, y_train, A_test, y_test, num_classes, W, M, epochs=1, seed=0, mode="flat",
                      pool=None, **train_kw):
    """ANDC read-out against random, magnitude and unpruned read-outs, all retrained identically.

    From the trained dense read-out W, each of the masks M (ANDC), random_mask_like(M, seed) and
    magnitude_mask_like(M, readout_scores(W)) is applied and retrained `epochs` epochs with the mask
    re-applied after every step (andc.masked_retrain); the unpruned read-out gets the same epochs from W.
    All use the same seed (batch order). Returns a dict name -> {"acc": test accuracy after retraining,
    "acc_before": before retraining, "correct": bool [M] per test image after retraining, "mask": [K, D]}.
    """
    M = _check_mask(M)
    masks = {"andc": M, "random": random_mask_like(M, seed=seed),
             "magnitude": magnitude_mask_like(M, readout_scores(W)), "unpruned": np.ones_like(M)}
    out = {}
    for name, mask in masks.items():
        Wm = W * (mask[:, None, :] if np.ndim(W) == 3 else mask)
        before = readout_accuracy(A_test, y_test, Wm, mode=mode, pool=pool)
        if name == "unpruned":
            ro = train_readout(A_train, y_train, num_classes, epochs=epochs, seed=seed, mode=mode, W_init=W,
                               pool_init=pool, **train_kw)
        else:
            ro = masked_retrain(A_train, y_train, W, mask, epochs=epochs, seed=seed, mode=mode, pool=pool,
                                **train_kw)
        correct = ro.logits(A_test).argmax(axis=1) == np.asarray(y_test)
        out[name] = {"acc": float(correct.mean()), "acc_before": before, "correct": correct, "mask": mask}
    return out
