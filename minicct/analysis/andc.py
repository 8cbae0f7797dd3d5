"""ANDC pruning of a read-out (applied nodal diagonal connection, docs/method.md sec. 8) and its random control.

Rule [INF, the abstract's ANDC]: node n keeps its read-out weights to label j, at every token, iff
B_n[j, j] = 1 (j is in the node's diagonal set D_n); every other weight is set to 0:

    M[j, n] = B[n, j, j],     W_pruned[j, t, n] = M[j, n] * W[j, t, n]
    pruned fraction = 1 - sum_n |D_n| / (K * D)

The AFCC rule [CODE, AFCC_Pruning.py] keeps the labels of the node's clusters; with the authors' greedy
clusters their union is the diagonal set, so both rules give the same read-out mask (rule="clusters",
min_cluster_size=2 keeps only multi-label clusters, an [INF] variant). After pruning, the read-out is
briefly retrained with the mask re-applied after every step (AFCC `train_func`) [CODE].
The control (Random_AFCC.py) [CODE]: every node keeps as many labels as in M, chosen at random with every
label used (nearly) equally often.
Shape legend: N images, T tokens, D nodes, F FF hidden width, K classes.
"""
from __future__ import annotations

import numpy as np

from ._validate import check_mask
from .clusters import node_labels
from .readout import train_readout


def _check_mask(M, name="M"):
    return check_mask(M, name, ndim=2, hint=" (a label x node mask [K, D])")


def andc_mask(B, num_tokens=None, rule="diagonal", min_cluster_size=1):
    """Read-out keep-mask M [K, D] bool (or [K, T, D] when num_tokens=T is given).

        rule "diagonal" [INF, ANDC]:  M[j, n] = B[n, j, j]
        rule "clusters" [CODE, AFCC]: M[j, n] = j in a cluster of node n (of size >= min_cluster_size)
    Input: B [D, K, K] thresholded node matrices (snp.normalise_threshold).
    """
    M = node_labels(B, rule, min_cluster_size).T              # [D, K] -> [K, D]
    return M if num_tokens is None else expand_mask(M, num_tokens)


def expand_mask(M, T):
    """Node mask [K, D] -> token mask [K, T, D]: MT[j, t, n] = M[j, n] for every token t. [CODE]

    As AFCC_Pruning.py, mask[j, n*S^2:(n+1)*S^2] = 1: a node keeps or loses a label at all positions at once.
    """
    M = _check_mask(M)
    if not (isinstance(T, (int, np.integer)) and T >= 1):
        raise ValueError(f"T (number of tokens) must be a positive integer, got {T!r}")
    return np.repeat(M[:, None, :], T, axis=1)                # [K, 1, D] -> [K, T, D]


def pruned_fraction(M):
    """Fraction of read-out weights removed: 1 - sum(M) / M.size. [INF, docs/method.md sec. 8.2]

    For M [K, D] this is 1 - sum_n |D_n| / (K D); the token-expanded mask [K, T, D] gives the same number.
    """
    M = check_mask(M, "pruned_fraction: the mask")
    if M.size == 0:
        raise ValueError("pruned_fraction: empty mask")
    return 1.0 - float(np.count_nonzero(M)) / M.size


def prune_readout(W, M):
    """Pruned copy of a read-out, W_pruned = W * M (the ANDC read-out before retraining). [CODE: param * mask]

        W_pruned[j, t, n] = M[j, n] * W[j, t, n]
    W [K, T, D] with M [K, D] (applied at every token) or [K, T, D]; W [K, D] with M [K, D]. W is not modified.
    """
    W = np.asarray(W)
    M = check_mask(M, "M")
    if M.shape == W.shape:
        return W * M
    if W.ndim == 3 and M.shape == (W.shape[0], W.shape[2]):
        return W * M[:, None, :]
    raise ValueError(f"mask shape {M.shape} does not fit read-out weight {W.shape}: expected "
                     f"{(W.shape[0], W.shape[-1])} or {W.shape}")


def random_mask_like(M, seed=0):
    """Random control mask [K, D] with exactly the column degrees of M (labels kept per node).

    [INF, after Random_AFCC.py]: the authors give every filter 5 random labels with every label used equally
    often; here each node gets |D_n| distinct random labels (its ANDC degree, docs/method.md sec. 8.4) and all
    labels are used as evenly as possible. Nodes are visited in random order; each takes the |D_n| labels
    used least so far (random tie-break), which keeps every label's count within one of sum_n |D_n| / K.
    """
    M = _check_mask(M)
    K, D = M.shape
    deg = M.sum(axis=0)                                       # [D] labels per node
    rng = np.random.default_rng(seed)
    used = np.zeros(K, dtype=np.int64)                        # how often each label was given out
    R = np.zeros((K, D), dtype=bool)
    for n in rng.permutation(D):
        order = np.lexsort((rng.random(K), used))             # least used first, ties at random
        chosen = order[:deg[n]]
        R[chosen, n] = True
        used[chosen] += 1
    return R


def masked_retrain(A, y, W, M, epochs=5, mode="flat", pool=None, **train_kw):
    """Short retraining of a pruned read-out; pruned weights stay exactly 0. [CODE: AFCC train_func]

    Starts from W * M and runs readout.train_readout with the mask re-applied after every SGD step.
    Inputs: A [N, T, D], y int [N], W [K, T, D] (flat) or [K, D], M [K, D] (or W's shape), epochs;
    mode / pool as in readout; train_kw: any other train_readout argument (lr, momentum, weight_decay,
    lr_decay, batch_size, seed, A_test, y_test, progress). Returns a readout.Readout (with .mask).
    """
    W = np.asarray(W)
    return train_readout(A, y, W.shape[0], epochs=epochs, mode=mode, mask=M, W_init=W, pool_init=pool,
                         **train_kw)


def _label_matrix(L, num_classes, name):
    """bool [R, K] from a bool/0-1 matrix or a list of label sets."""
    if isinstance(L, np.ndarray):
        if L.ndim != 2:
            raise ValueError(f"{name} must be a bool matrix [nodes, K] or a list of label sets, "
                             f"got shape {L.shape}")
        L = check_mask(L, name)
        if num_classes is not None and L.shape[1] != num_classes:
            raise ValueError(f"{name} has {L.shape[1]} labels, expected {num_classes}")
        return L
    if num_classes is None:
        raise ValueError("give num_classes when both label arguments are lists of sets")
    out = np.zeros((len(L), num_classes), dtype=bool)
    for r, labels in enumerate(L):
        idx = np.fromiter(labels, dtype=np.int64) if len(labels) else np.zeros(0, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= num_classes):
            raise ValueError(f"{name}[{r}] has labels outside 0..{num_classes - 1}: {sorted(labels)}")
        out[r, idx] = True
    return out


def ff_mask(labels_hidden, labels_out, num_classes=None):
    """Keep-mask [D, F] for an FF linear2 weight (hidden a -> output b): keep iff the label sets intersect.

        M[b, a] = |L_hidden[a] & L_out[b]| > 0      [INF, docs/method.md sec. 8.6; AFCC's
                                                      between-layer rule, shared labels]
    Inputs: labels_hidden bool [F, K] (e.g. node_labels of the ff_hidden site) or a list of F label sets,
    labels_out bool [D, K] or a list of D sets; num_classes K is needed only when both are lists.
    Returns M [D, F] bool, the layout of linear2.weight (out, in).
    """
    if num_classes is None:
        for L in (labels_hidden, labels_out):
            if isinstance(L, np.ndarray) and L.ndim == 2:
                num_classes = L.shape[1]
                break
    Lh = _label_matrix(labels_hidden, num_classes, "labels_hidden")        # [F, K]
    Lo = _label_matrix(labels_out, num_classes, "labels_out")              # [D, K]
    return (Lo.astype(np.int64) @ Lh.T.astype(np.int64)) > 0              # [D, K] @ [K, F] -> [D, F]
