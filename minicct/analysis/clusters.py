"""Clusters, signal, noise and SNR of thresholded node matrices (docs/method.md sec. 6-7).

B_n [K, K] is node n's 0/1 matrix (rows = true label i, columns = output j). A cluster is a set of labels L
whose whole |L| x |L| block of B_n is 1 (both (a, b) and (b, a), and the diagonal). The authors find them
greedily in ascending label order (AFCC `return_squares`) [CODE]:

    candidates = labels j with B[j, j] = 1, ascending; remaining = candidates
    for lb in candidates, if lb is still remaining:
        cluster = [lb]; for lb2 in remaining after lb (ascending): add lb2 if cluster + [lb2] is an all-ones block
        remove the cluster from remaining
Every candidate ends in exactly one cluster (singletons are clusters of size 1), so the union of a node's
clusters is exactly its diagonal set {j : B[j, j] = 1}.

Per node [CODE]: number of clusters, labels in clusters sum_c |c|, noise = (ones of B) - sum_c |c|^2 (the
ones outside the cluster blocks; -1 for a node without clusters, and a with-zeros variant), column noise
(ones left in the cluster labels' columns after zeroing the blocks). Signal S = sum_c |c|^2 and the SNR
are this project's operationalisation [INF] (docs/method.md sec. 7.3).
Shape legend: D nodes, K classes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import check_mask
from .snp import AFCC_THRESHOLD, normalise_fields


def _check_binary(B, ndim, name="B"):
    want = "[K, K]" if ndim == 2 else "[D, K, K]"
    B = check_mask(B, name, hint=" (threshold the fields first: snp.normalise_threshold)")
    if B.ndim != ndim or B.shape[-1] != B.shape[-2]:
        raise ValueError(f"{name} must be a square 0/1 matrix {want}, got shape {B.shape}")
    return B


def greedy_clusters(B_n):
    """The authors' greedy clusters of one node matrix B_n [K, K] (0/1). [CODE: return_squares]

    Returns a list of clusters, each an ascending list of labels; clusters appear in the order of their
    smallest label. Adding lb2 to a cluster C keeps C + [lb2] an all-ones block iff B[lb2, c] = B[c, lb2] = 1
    for every c in C (C is already a block and B[lb2, lb2] = 1), so the block test is one AND over the
    "mutual" matrix B & B^T; the first remaining label that passes is the next one the greedy loop accepts.
    """
    B = _check_binary(B_n, 2, "B_n")
    mutual = B & B.T                                          # [K, K] both directions above threshold
    cand = np.flatnonzero(np.diagonal(B))                     # ascending labels with B[j, j] = 1
    remaining = np.zeros(B.shape[0], dtype=bool)
    remaining[cand] = True
    clusters = []
    for lb in cand:
        if not remaining[lb]:
            continue
        remaining[lb] = False
        cluster = [int(lb)]
        allowed = remaining & mutual[lb]                      # labels that may still join (all > lb)
        while True:
            nxt = np.flatnonzero(allowed)
            if nxt.size == 0:
                break
            lb2 = nxt[0]                                      # the smallest label that keeps the block
            cluster.append(int(lb2))
            remaining[lb2] = False
            allowed &= mutual[lb2]
            allowed[lb2] = False
        clusters.append(cluster)
    return clusters


def greedy_clusters_reference(B_n):
    """Naive twin of greedy_clusters: a line-by-line port of the AFCC code's return_squares / is_square, the
    all-ones block test written as the sum of the block. B_n [K, K] 0/1 -> clusters."""
    B = np.asarray(B_n).astype(int)
    K = B.shape[0]
    labels_one = [j for j in range(K) if B[j, j] == 1]
    temp = list(labels_one)
    clusters = []
    for lb in labels_one:
        if lb in temp:
            cluster = [lb]
            for lb2 in temp[1:]:
                idx = cluster + [lb2]
                if sum(B[i, j] for i in idx for j in idx) == len(idx) ** 2:
                    cluster.append(lb2)
            for c in cluster:
                temp.remove(c)
            clusters.append(cluster)
    return clusters


def node_noise_reference(B_n, clusters):
    """Naive twin of node_noise / node_signal for one node: its ones counted cell by cell, inside a cluster
    block (signal) or outside every block (noise; -1 for a node without clusters). Returns (signal, noise)."""
    B = np.asarray(B_n)
    K = B.shape[0]
    inside = outside = 0
    for i in range(K):
        for j in range(K):
            if not B[i, j]:
                continue
            if any(i in c and j in c for c in clusters):
                inside += 1
            else:
                outside += 1
    return inside, (outside if clusters else -1)


def _per_node(B, fn, clusters=None):
    """fn(B_n [K, K], clusters of n) for one node [K, K] (-> int) or every node of [D, K, K] (-> int64 [D]).
    clusters: the greedy clusters if already found (one list for [K, K], a list per node for [D, K, K])."""
    B = check_mask(B, "B", hint=" (threshold the fields first: snp.normalise_threshold)")
    if B.ndim == 2:
        B = _check_binary(B, 2)
        return int(fn(B, greedy_clusters(B) if clusters is None else clusters))
    B = _check_binary(B, 3)
    cl = [greedy_clusters(Bn) for Bn in B] if clusters is None else clusters
    return np.array([fn(B[n], cl[n]) for n in range(B.shape[0])], dtype=np.int64)


def node_signal(B, clusters=None):
    """Signal of a node, the ones inside its cluster blocks: S = sum_c |c|^2. [INF name, docs/method.md sec. 7.3]

    B [K, K] 0/1 (one node) -> int; B [D, K, K] (a layer) -> int64 [D]. Clusters from greedy_clusters
    (or `clusters`, if already found).
    """
    return _per_node(B, lambda Bn, cl: sum(len(c) ** 2 for c in cl), clusters)


def node_noise(B, clusters=None):
    """Noise of a node, the ones outside its cluster blocks. [CODE: AFCC `noise_filter`, docs/method.md sec. 7.1]

        noise = sum_{i,j} B[i, j] - sum_c |c|^2,     and -1 for a node without clusters (excluded from means)
    B [K, K] 0/1 (one node) -> int; B [D, K, K] (a layer) -> int64 [D]. Clusters from greedy_clusters.
    """
    return _per_node(B, lambda Bn, cl: int(Bn.sum()) - sum(len(c) ** 2 for c in cl) if cl else -1, clusters)


def snr(signal, noise):
    """Signal-to-noise ratio of a layer: SNR = <S_n> / <N_n> over the nodes with a cluster. [INF, docs/method.md sec. 7.3]

    signal [D] (node_signal), noise [D] (node_noise; -1 marks a node without clusters, left out).
    Returns a float: inf when the mean noise is 0 and the signal positive, nan when both are 0 or no node
    has a cluster.
    """
    S, N = np.asarray(signal, dtype=np.float64), np.asarray(noise, dtype=np.float64)
    if S.ndim != 1 or S.shape != N.shape:
        raise ValueError(f"signal and noise must be vectors [D] of the same length, got {S.shape} and {N.shape}")
    has = N >= 0
    if not has.any():
        return float("nan")
    return _ratio(S[has].mean(), N[has].mean())


@dataclass
class NodeStats:
    """Per-node cluster statistics of a layer (D nodes, K labels). [CODE unless noted]

    clusters:           list (per node) of clusters (lists of labels), from greedy_clusters
    cluster_sizes:      list (per node) of lists of cluster sizes
    cluster_id [D, K]:  index of the label's cluster within the node, -1 if in no cluster
    n_clusters [D]:     number of clusters (singletons included)
    labels_in_clusters [D]: sum_c |c|  (the code's `cluster_sizes[n]`); equals #{j : B[j, j] = 1}
    signal [D]:         S = sum_c |c|^2, ones inside the cluster blocks [INF name]
    total_ones [D]:     sum_{i,j} B[n, i, j]
    noise [D]:          total_ones - S, or -1 for a node without clusters (`noise_filter`)
    noise_with_zeros [D]: total_ones - S for every node (`noise_filter_with_zeros`)
    column_noise [D]:   ones in the cluster labels' columns outside the blocks (`noise_cluster`)
    """

    clusters: list
    cluster_sizes: list
    cluster_id: np.ndarray
    n_clusters: np.ndarray
    labels_in_clusters: np.ndarray
    signal: np.ndarray
    total_ones: np.ndarray
    noise: np.ndarray
    noise_with_zeros: np.ndarray
    column_noise: np.ndarray

    @property
    def has_cluster(self):
        """[D] bool: nodes with at least one cluster."""
        return self.n_clusters > 0

    @property
    def in_cluster(self):
        """[D, K] bool: labels in one of the node's clusters (= the diagonal set of the node)."""
        return self.cluster_id >= 0

    def in_block(self):
        """[D, K, K] bool: (i, j) lies inside one of the node's cluster blocks."""
        cid = self.cluster_id
        return (cid[:, :, None] == cid[:, None, :]) & (cid[:, :, None] >= 0)


def node_stats(B):
    """Clusters and per-node statistics of a layer's binary matrices B [D, K, K]. Returns NodeStats.

        S_n = sum_c |c|^2,  noise_n = sum_ij B_n[i, j] - S_n (-1 if no cluster),
        column_noise_n = sum_{c} sum_{j in c} sum_i B'_n[i, j]   (B' = B with the cluster blocks zeroed)
                       = sum_{j in clusters} colsum_j(B_n) - S_n     (each block column holds |c| ones)
    [CODE: Compute_Matrices_Clusters.py], SNR pieces [INF].
    """
    B = _check_binary(B, 3)
    D, K = B.shape[0], B.shape[1]
    clusters = [greedy_clusters(B[n]) for n in range(D)]
    sizes = [[len(c) for c in cl] for cl in clusters]
    cluster_id = np.full((D, K), -1, dtype=np.int64)
    for n, cl in enumerate(clusters):
        for ci, c in enumerate(cl):
            cluster_id[n, c] = ci
    n_clusters = np.array([len(s) for s in sizes], dtype=np.int64)
    labels_in = np.array([sum(s) for s in sizes], dtype=np.int64)
    signal = node_signal(B, clusters)                          # [D] sum_c |c|^2
    noise = node_noise(B, clusters)                            # [D] ones outside the blocks, -1 without clusters
    total = B.sum(axis=(1, 2)).astype(np.int64)
    noise0 = total - signal
    colsum = B.sum(axis=1)                                     # [D, K] ones per output column
    column_noise = (colsum * (cluster_id >= 0)).sum(axis=1) - signal
    return NodeStats(clusters=clusters, cluster_sizes=sizes, cluster_id=cluster_id, n_clusters=n_clusters,
                     labels_in_clusters=labels_in, signal=signal, total_ones=total, noise=noise,
                     noise_with_zeros=noise0, column_noise=column_noise)


def _mean(x):
    """Mean of x, nan when x is empty."""
    return float(np.mean(x)) if np.size(x) else float("nan")


def _ratio(a, b):
    """a / b with b = 0 -> inf (a > 0) or nan (a = 0)."""
    if b == 0:
        return float("inf") if a > 0 else float("nan")
    return float(a / b)


def layer_summary(stats, V=None, threshold=AFCC_THRESHOLD):
    """Layer averages of NodeStats, the SNR and its variants. Returns a dict of floats (and a histogram).

    [CODE] averages (Compute_Matrices_Clusters.py prints):
        mean_labels_in_clusters (all nodes) and _with_cluster (nodes with >= 1 cluster)
        mean_clusters_per_node (all) and _with_cluster;  mean_cluster_size over all clusters of the layer
        mean_noise (nodes with a cluster, the -1s excluded) and mean_noise_with_zeros (all nodes)
        cluster_size_hist: int array, hist[s] = number of clusters of size s (s = 0..K)
    [INF] signal-to-noise (docs/method.md sec. 7.3-7.4), over the nodes with a cluster:
        snr      = <S> / <N>                      (S = sum_c |c|^2, N = noise)
        snr_a    = <sum_c |c|> / <N>              (labels in clusters vs noise)
        snr_b    = median_n S_n / max(N_n, 1)
        snr_c    = mean(Vn in blocks) / mean(Vn outside blocks and above threshold)   (only with V; Vn = V / max)
        snr_d    = <S> / <column noise>
    A zero denominator gives inf (nan if the numerator is 0 too); no node with a cluster gives nan.
    V [D, K, K]: the fields the B of `stats` was thresholded from (checked), for snr_c.
    """
    if not isinstance(stats, NodeStats):
        raise ValueError(f"layer_summary expects the NodeStats of node_stats(B), got {type(stats).__name__}")
    D = stats.n_clusters.shape[0]
    K = stats.cluster_id.shape[1]
    has = stats.has_cluster
    flat_sizes = np.array([x for s in stats.cluster_sizes for x in s], dtype=np.int64)
    S, N, Nc = stats.signal[has], stats.noise[has], stats.column_noise[has]
    out = {
        "n_nodes": D,
        "n_nodes_with_cluster": int(has.sum()),
        "mean_labels_in_clusters": _mean(stats.labels_in_clusters),
        "mean_labels_in_clusters_with_cluster": _mean(stats.labels_in_clusters[has]),
        "mean_clusters_per_node": _mean(stats.n_clusters),
        "mean_clusters_per_node_with_cluster": _mean(stats.n_clusters[has]),
        "mean_cluster_size": _mean(flat_sizes),
        "cluster_size_hist": np.bincount(flat_sizes, minlength=K + 1),
        "mean_noise": _mean(N),
        "mean_noise_with_zeros": _mean(stats.noise_with_zeros),
        "mean_signal": _mean(S),
        "mean_column_noise": _mean(Nc),
    }
    out["snr"] = snr(stats.signal, stats.noise)               # the SNR of the lessons
    if has.any():
        out["snr_a"] = _ratio(stats.labels_in_clusters[has].mean(), N.mean())
        out["snr_b"] = float(np.median(S / np.maximum(N, 1)))
        out["snr_d"] = _ratio(S.mean(), Nc.mean())
    else:
        out["snr_a"] = out["snr_b"] = out["snr_d"] = float("nan")
    if V is not None:
        Vn, valid = normalise_fields(V)
        if Vn.shape != (D, K, K):
            raise ValueError(f"V has shape {Vn.shape} but the statistics are for {D} nodes and {K} labels")
        above = (Vn > threshold) & valid[:, None, None]
        if not np.array_equal(above.sum(axis=(1, 2)), stats.total_ones):
            raise ValueError("V thresholded at this threshold does not give the B of these statistics; pass the "
                             "V that B came from and the same threshold")
        block = stats.in_block() & has[:, None, None]
        outside = above & ~stats.in_block() & has[:, None, None]
        if not block.any():
            out["snr_c"] = float("nan")
        elif not outside.any():
            out["snr_c"] = float("inf")                         # no above-threshold field outside the blocks
        else:
            out["snr_c"] = float(Vn[block].mean() / Vn[outside].mean())
    return out


def node_labels(B, rule="diagonal", min_cluster_size=1):
    """Label set of every node as a bool matrix L [D, K]: L[n, j] = label j belongs to node n.

        rule "diagonal" [INF, ANDC]: L[n, j] = B[n, j, j]  (the diagonal set D_n)
        rule "clusters" [CODE, AFCC]: j lies in one of node n's greedy clusters of size >= min_cluster_size.
    With min_cluster_size = 1 both rules give the same sets (every diagonal label ends in exactly one
    cluster); min_cluster_size = 2 keeps only labels of multi-label clusters [INF option].
    """
    B = _check_binary(B, 3)
    if rule == "diagonal":
        if min_cluster_size != 1:
            raise ValueError("min_cluster_size only applies to rule='clusters'")
        return np.diagonal(B, axis1=1, axis2=2).copy()        # [D, K]
    if rule != "clusters":
        raise ValueError(f"rule must be 'diagonal' or 'clusters', got {rule!r}")
    if not (isinstance(min_cluster_size, (int, np.integer)) and min_cluster_size >= 1):
        raise ValueError(f"min_cluster_size must be an integer >= 1, got {min_cluster_size!r}")
    stats = node_stats(B)
    big = np.zeros(stats.cluster_id.shape, dtype=bool)        # [D, K]
    for n, sizes in enumerate(stats.cluster_sizes):
        keep = np.flatnonzero(np.asarray(sizes) >= min_cluster_size)   # kept cluster indices of node n
        big[n] = np.isin(stats.cluster_id[n], keep)
    return big
