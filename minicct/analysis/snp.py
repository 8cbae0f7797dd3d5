"""Single-nodal performance (SNP): node fields, their max-normalised thresholded matrices, single-node argmax.

Phase 3 of the method (docs/method.md sec. 4, AFCC `Compute_Matrices_Clusters.py`). With a trained bias-free
read-out W and all other nodes silenced, node n sends to output j, for image k, the field

    flat [CODE]:            h_n(k, j) = sum_t W[j, t, n] * A_k[t, n]
    mean / seqpool [INF]:   h_n(k, j) = W[j, n] * Z_k[n]     (Z = token-pooled features, readout.pooled_features)

Summed over nodes these are the read-out logits: sum_n h_n(k, j) = z_k(j). The node's matrix is the
per-class mean of its fields (rows = true label i, columns = output j):

    V[n, i, j] = mean_{k : y_k = i} h_n(k, j)

The AFCC code sums over the images of a class (then divides by a constant); on a balanced test set that is
proportional to the mean. The mean is used here so unbalanced test sets (Flowers-102) work [INF].
Because h is linear in A, V[n, i, j] = sum_t W[j, t, n] * Abar[i, t, n] with Abar the per-class mean
activation: the code averages the activations per class first (one pass over A) and contracts once; the
per-image fields are only built for `single_node_predictions`.

Then each node's matrix is divided by its global max and thresholded at AFCC_THRESHOLD = 0.3 [CODE] (`normalise_threshold`).
Shape legend: N images, T tokens, D nodes, K classes.
"""
from __future__ import annotations

import warnings

import numpy as np

from ._validate import check_activations, check_fields, check_finite, check_labels, check_mode, check_weight
from ._validate import take_rows as _rows
from .readout import pooled_features

#: The threshold on V / max V of the authors' code (AFCC `Compute_Matrices_Clusters.py`) [CODE]; the one place
#: the number is written.
AFCC_THRESHOLD = 0.3


# ------------------------------------------------------------------------------------ per-class means
def class_means(X, y, num_classes, chunk=256):
    """Per-class mean of the rows of X: M[i] = mean_{k : y_k = i} X[k]. [INF helper]

    Inputs: X [N, ...] float array or np.memmap (e.g. A [N, T, D] or Z [N, D]), y int [N].
    Returns (M [K, ...] float64, counts int64 [K]). A class without images gets a zero row (and a warning).
    One pass over X: images are visited in label order, chunk at a time, and each chunk's class sums are
    one small GEMM, onehot [P, B] @ X_chunk [B, F] over the P labels present (float32 sums, float64 total).
    """
    if not isinstance(X, np.ndarray) or X.ndim < 2 or not np.issubdtype(X.dtype, np.floating):
        raise ValueError(f"class_means: X must be a floating array [N, ...], got "
                         f"{getattr(X, 'shape', type(X).__name__)} {getattr(X, 'dtype', '')}")
    N = X.shape[0]
    y = check_labels(y, N, num_classes)
    check_finite(X, "X")
    feat = X.shape[1:]
    F = int(np.prod(feat))
    order = np.argsort(y, kind="stable")                       # label order: few labels per chunk
    acc = np.zeros((num_classes, F), dtype=np.float64)
    buf = np.empty((min(chunk, max(N, 1)),) + feat, dtype=np.float32)   # reused chunk buffer
    for s in range(0, N, chunk):
        idx = np.sort(order[s:s + chunk])                      # same set of rows, read in ascending order
        Xc = _rows(X, idx, buf).reshape(idx.size, F)           # [B, ...] -> [B, F] float32
        labs, inv = np.unique(y[idx], return_inverse=True)     # P labels present in this chunk
        onehot = np.zeros((labs.size, idx.size), dtype=np.float32)
        onehot[inv, np.arange(idx.size)] = 1.0                 # [P, B]
        acc[labs] += onehot @ Xc                               # [P, B] @ [B, F] -> [P, F]
    counts = np.bincount(y, minlength=num_classes)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)
        warnings.warn(f"class_means: classes {missing[:10].tolist()}{'...' if missing.size > 10 else ''} have "
                      f"no images; their rows are set to 0", stacklevel=2)
    acc /= np.maximum(counts, 1)[:, None]
    return acc.reshape((num_classes,) + feat), counts


# ------------------------------------------------------------------------------------------ node fields
def node_fields(A, y, W, num_classes, chunk=256, mode="flat", pool=None):
    """Node fields V [D, K, K] (float64): V[n, i, j] = mean_{k : y_k = i} h_n(k, j).

        flat [CODE]:           h_n(k, j) = sum_t W[j, t, n] A_k[t, n]  =>  V[n] = Abar[:, :, n] @ W[:, :, n]^T
        mean / seqpool [INF]:  h_n(k, j) = W[j, n] Z_k[n]             =>  V[n, i, j] = Zbar[i, n] W[j, n]
    (per-class MEAN [INF]; the AFCC code uses the per-class sum, proportional on a balanced test set.)
    Invariant: V.sum(axis=0)[i, j] = mean over images of class i of the read-out logit j.

    Inputs: A [N, T, D] (float array or memmap, read chunk images at a time), y int [N], W [K, T, D] (flat)
    or [K, D] (mean / seqpool), num_classes K, pool = (w [1, D], b [1]) for seqpool.
    Returns V [D, K, K]: node n, true label i (rows), output j (columns).
    """
    check_activations(A)
    check_mode(mode, pool)
    N, T, D = A.shape
    check_weight(W, mode, T, D, num_classes)
    if mode != "flat":
        return pooled_node_fields(pooled_features(A, mode, pool, batch_size=chunk), y, W, num_classes)
    Abar, _ = class_means(A, y, num_classes, chunk)            # [K, T, D]
    V = np.empty((D, num_classes, num_classes), dtype=np.float64)
    step = 32                                                  # nodes per batched matmul (bounded memory)
    for s in range(0, D, step):
        a = np.ascontiguousarray(Abar[:, :, s:s + step].transpose(2, 0, 1))                  # [d, K, T]
        w = np.ascontiguousarray(W[:, :, s:s + step].transpose(2, 1, 0), dtype=np.float64)   # [d, T, K]
        V[s:s + step] = a @ w                                  # [d, K, T] @ [d, T, K] -> [d, K, K]
    return V


def node_fields_reference(A, y, W, num_classes, mode="flat", pool=None):
    """Naive twin of node_fields: every image's field h_n(k, j) from its definition (per_image_fields' sum
    written as a loop over images), then the mean over the images of each class. Returns V [D, K, K] float64."""
    A, W = np.asarray(A, dtype=np.float64), np.asarray(W, dtype=np.float64)
    X = A if mode == "flat" else pooled_features(A.astype(np.float32), mode, pool).astype(np.float64)[:, None, :]
    Wt = W if mode == "flat" else W[:, None, :]                # [K, T, D] (a pooled read-out: T = 1)
    D = A.shape[2]
    sums = np.zeros((D, num_classes, num_classes))
    counts = np.zeros(num_classes)
    for k in range(A.shape[0]):
        h = np.einsum("jtn,tn->nj", Wt, X[k])                  # h_n(k, j) = sum_t W[j, t, n] A_k[t, n]  [D, K]
        sums[:, y[k], :] += h
        counts[y[k]] += 1
    return sums / np.maximum(counts, 1)[None, :, None]


def pooled_node_fields(Z, y, W, num_classes):
    """Node fields of a pooled read-out [INF]: V[n, i, j] = W[j, n] * mean_{k : y_k = i} Z_k[n].

    Inputs: Z [N, D] pooled features (readout.pooled_features, or any [N, D] features with a bias-free
    Linear(D, K) read-out W [K, D]), y int [N]. Returns V [D, K, K] float64.
    Each node's matrix is rank one (row i = Zbar[i, n] * W[:, n]), docs/method.md sec. 3.3.
    """
    Z = np.asarray(Z)
    if Z.ndim != 2 or not np.issubdtype(Z.dtype, np.floating):
        raise ValueError(f"pooled_node_fields: Z must be floating features [N, D], got shape {Z.shape}, {Z.dtype}")
    if not isinstance(W, np.ndarray) or W.shape != (num_classes, Z.shape[1]):
        raise ValueError(f"pooled_node_fields: W must be [K, D] = {(num_classes, Z.shape[1])}, "
                         f"got {getattr(W, 'shape', type(W).__name__)}")
    check_finite(Z, "Z")
    check_finite(W, "W")
    Zbar, _ = class_means(Z, y, num_classes)                   # [K, D]
    return Zbar.T[:, :, None] * W.T.astype(np.float64)[:, None, :]   # [D, K, 1] * [D, 1, K] -> [D, K, K]


def per_image_fields(A, W, mode="flat", pool=None):
    """Fields of every node for every image, h [D, N, K] float32 (memory D*N*K: pass a chunk of images).

        flat [CODE]:          h[n, k, j] = sum_t W[j, t, n] A_k[t, n]   (einsum 'ktn,jtn->nkj' as a batched matmul)
        mean / seqpool [INF]: h[n, k, j] = W[j, n] Z_k[n]
    """
    check_activations(A)
    check_mode(mode, pool)
    N, T, D = A.shape
    check_weight(W, mode, T, D)
    Ab = np.asarray(A, dtype=np.float32)
    if mode == "flat":
        a = np.ascontiguousarray(Ab.transpose(2, 0, 1))                          # [D, N, T]
        w = np.ascontiguousarray(W.transpose(2, 1, 0), dtype=np.float32)         # [D, T, K]
        return a @ w                                                             # [D, N, K]
    Z = pooled_features(Ab, mode, pool)                                          # [N, D]
    return Z.T[:, :, None] * W.T.astype(np.float32)[:, None, :]                  # [D, N, K]


def single_node_predictions(A, W, chunk=256, mode="flat", pool=None):
    """Each node's own prediction per image, P [D, N] int32: P[n, k] = argmax_j h_n(k, j). [INF]

    With all other nodes silenced, node n "picks one label" for image k (ties -> the smallest label): this
    project's operationalisation of the P-M abstract ("each filter essentially selects a single output
    label independent of the input label"); the AFCC code has no such step.
    Inputs as `per_image_fields`; A is processed chunk images at a time.
    """
    check_activations(A)
    N, T, D = A.shape
    check_weight(W, mode, T, D)
    P = np.empty((D, N), dtype=np.int32)
    for s in range(0, N, chunk):
        P[:, s:s + chunk] = per_image_fields(A[s:s + chunk], W, mode, pool).argmax(axis=2)   # [D, B]
    return P


def single_node_summary(P, y, num_classes):
    """Summary of single-node predictions P [D, N] against labels y [N]. [INF]

    Returns a dict:
        accuracy [D]       mean_k [P[n, k] == y_k]               (expected about chance, 1/K)
        top_label [D]      the node's most frequent prediction
        top_fraction [D]   fraction of images on top_label       (expected near 1: one label per node)
        label_counts [D, K] how often each node predicts each label
        mean_accuracy, mean_top_fraction, chance (= 1/K): floats.
    """
    P = np.asarray(P)
    if P.ndim != 2 or not np.issubdtype(P.dtype, np.integer):
        raise ValueError(f"P must be integer predictions [D, N], got shape {P.shape}, dtype {P.dtype}")
    D, N = P.shape
    y = check_labels(y, N, num_classes)
    if N == 0 or D == 0:
        raise ValueError(f"single_node_summary: need at least one node and one image, got P of shape {P.shape}")
    if P.min() < 0 or P.max() >= num_classes:
        raise ValueError(f"predictions must be in 0..{num_classes - 1}, got {P.min()}..{P.max()}")
    offset = np.arange(D, dtype=np.int64)[:, None] * num_classes
    counts = np.bincount((P + offset).ravel(), minlength=D * num_classes).reshape(D, num_classes)
    acc = (P == y[None, :]).mean(axis=1)
    top = counts.argmax(axis=1)
    top_frac = counts.max(axis=1) / N
    return {"accuracy": acc, "top_label": top, "top_fraction": top_frac, "label_counts": counts,
            "mean_accuracy": float(acc.mean()), "mean_top_fraction": float(top_frac.mean()),
            "chance": 1.0 / num_classes}


# --------------------------------------------------------------------------- normalisation, threshold
def normalise_fields(V):
    """Divide each node's matrix by its global max: Vn[n] = V[n] / max_{i,j} V[n, i, j]. [CODE]

    The max is over the whole K x K matrix (not per row or column). A node whose max is not positive
    is marked invalid and gets Vn[n] = 0 [INF caveat, docs/method.md sec. 5.3: a negative max would flip signs and
    let every entry pass the threshold; a zero max is left undivided by the code, so nothing passes].
    Returns (Vn [D, K, K] float64, valid [D] bool).
    """
    V = check_fields(V).astype(np.float64, copy=False)
    vmax = V.reshape(V.shape[0], -1).max(axis=1) if V.size else np.zeros(V.shape[0])  # [D]
    valid = vmax > 0
    # a true division, as the code (V / max): multiplying by 1/max rounds differently and let a field at
    # exactly t * max pass the strict threshold (e.g. 3 * (1/10) = 0.30000000000000004 > 0.3)
    Vn = V / np.where(valid, vmax, 1.0)[:, None, None]
    Vn[~valid] = 0.0
    return Vn, valid


def normalise_threshold(V, threshold=AFCC_THRESHOLD):
    """Binary node matrices B [D, K, K] bool: B[n, i, j] = V[n, i, j] / max V[n] > threshold. [CODE]

    threshold 0.3 is the AFCC default; strict '>' as in the code, after a true division by the max (as the
    code), so a field exactly at threshold x max does NOT pass: integer fields [[10, 3], [0, 0]] give
    [[1, 0], [0, 0]]. Nodes with a non-positive max give an all-zero matrix [INF] (see `normalise_fields`).
    Raising the threshold never adds ones.
    """
    threshold = float(threshold)
    if not (np.isfinite(threshold) and threshold < 1):   # V / max V <= 1: a threshold >= 1 passes nothing
        raise ValueError(f"threshold must be a finite fraction of each node's largest field below 1 (e.g. 0.3), "
                         f"got {threshold}: at 1 or more no field passes and every matrix is all zeros")
    Vn, valid = normalise_fields(V)
    return (Vn > threshold) & valid[:, None, None]
