"""Head specialisation of multi-head attention from node matrices (docs/method.md sec. 9) [INF throughout].

The MHA nodes are the D = h * d coordinates of the concatenated per-head outputs attn @ v (before proj);
node n belongs to head n // d. From the thresholded node matrices B [D, K, K]:

    c_h(j) = #{ n in head h : B_n[j, j] = 1 }                     (head_label_counts)
    L_h    = { j : c_h(j) >= tau }  or  { j : c_h(j) = max_h' c_h'(j) >= tau }   (designated_labels)
    SI     = mean over labels j with sum_h c_h(j) > 0 of  max_h c_h(j) / sum_h c_h(j)
SI is 1 when every label is seen by one head only and 1/h when all heads count every label alike; the
shuffled-node control (nodes reassigned to heads at random, head sizes kept) gives the SI expected
without head structure. Single-head performance (SHP, P-L): silencing all read-out weights except a head's
nodes gives the field sum_{n in h} h_n, so the head's matrix is the sum of its nodes' V (head_fields), to be
normalised / thresholded / clustered like a node's.
Shape legend: D nodes, h heads, d head dim (D = h * d), K classes.
"""
from __future__ import annotations

import numpy as np

from .clusters import node_labels


def _num_heads(D, head_dim):
    if not (isinstance(head_dim, (int, np.integer)) and head_dim >= 1) or D % head_dim:
        raise ValueError(f"head_dim must be a positive divisor of the number of nodes D={D}, got {head_dim!r}")
    return D // head_dim


def head_label_counts(B_mha, head_dim, rule="diagonal", min_cluster_size=1):
    """c [h, K] int: c[h, j] = number of nodes of head h (n // head_dim == h) whose label set holds j. [INF]

    Label set of a node: its diagonal set (rule "diagonal") or the labels of its clusters (rule "clusters",
    identical for min_cluster_size 1; see clusters.node_labels). Input B_mha [D, K, K] of the MHA-heads site.
    """
    L = node_labels(B_mha, rule, min_cluster_size)            # [D, K]
    D, K = L.shape
    h = _num_heads(D, head_dim)
    return L.reshape(h, head_dim, K).sum(axis=1)               # [h, d, K] -> [h, K]


def _check_counts(c):
    c = np.asarray(c)
    if c.ndim != 2 or c.shape[0] < 1:
        raise ValueError(f"counts must be [h, K] (heads x labels), got shape {c.shape}")
    if c.dtype == bool:
        return c.astype(np.int64)
    if not np.issubdtype(c.dtype, np.number) or (c < 0).any() or not np.isfinite(c).all():
        raise ValueError("counts must be non-negative finite numbers (or a bool designation matrix)")
    return c


def designated_labels(c, rule="max", tau=1):
    """Designated labels L [h, K] bool of every head. [INF, docs/method.md sec. 9.2]

        rule "threshold": L[h, j] = c[h, j] >= tau
        rule "max":       L[h, j] = c[h, j] == max_h' c[h', j] and c[h, j] >= tau   (ties: every head at the max)
    """
    c = _check_counts(c)
    if rule == "threshold":
        return c >= tau
    if rule == "max":
        return (c == c.max(axis=0, keepdims=True)) & (c >= tau)
    raise ValueError(f"rule must be 'max' or 'threshold', got {rule!r}")


def head_fields(V, head_dim):
    """Single-head fields [h, K, K]: V_head[h] = sum_{n in head h} V[n] (all other nodes silenced). [INF, SHP]

    Input V [D, K, K] node fields of the MHA-heads site (snp.node_fields). Since V is linear in the read-out
    weights, keeping only head h's weights gives exactly this sum. Normalise / threshold with
    snp.normalise_threshold and cluster with clusters.node_stats like nodes (SHP, P-L).
    """
    V = np.asarray(V)
    if V.ndim != 3 or V.shape[1] != V.shape[2]:
        raise ValueError(f"V must be node fields [D, K, K], got shape {V.shape}")
    D, K = V.shape[0], V.shape[1]
    h = _num_heads(D, head_dim)
    return V.reshape(h, head_dim, K, K).sum(axis=1)            # [h, d, K, K] -> [h, K, K]


def head_matrix(V, head_dim, h):
    """Single-head field matrix [K, K] of head h: sum_{n = h d}^{(h+1) d - 1} V[n]. [INF, SHP of P-L]"""
    Vh = head_fields(V, head_dim)
    if not (isinstance(h, (int, np.integer)) and 0 <= h < Vh.shape[0]):
        raise ValueError(f"head index must be in 0..{Vh.shape[0] - 1}, got {h!r}")
    return Vh[h]


def specialisation_index(c):
    """SI = mean over labels j with sum_h c[h, j] > 0 of max_h c[h, j] / sum_h c[h, j] (nan if no label). [INF]

    1: each label counted by one head only; 1/h: all heads count every label equally.
    """
    c = _check_counts(c).astype(np.float64)
    tot = c.sum(axis=0)                                       # [K]
    seen = tot > 0
    if not seen.any():
        return float("nan")
    return float((c.max(axis=0)[seen] / tot[seen]).mean())


def head_metrics(c, designated=None):
    """Symmetry-breaking metrics of heads from counts c [h, K] (or a bool designation [h, K]). [INF]

    designated: bool [h, K] label sets L_h (default: c > 0, i.e. rule 'threshold' with tau 1).
    Returns a dict:
        jaccard [h, h]         |L_h & L_h'| / |L_h | L_h'| (nan if both empty); mean_jaccard over pairs h < h'
        coverage               |union_h L_h| / K
        heads_per_label [K]    #{h : j in L_h};  mean_heads_per_label over covered labels
        labels_per_head [h]    |L_h|
        entropy [K]            -sum_h p_h log p_h, p_h = c[h, j] / sum_h c[h, j] (nats; nan for unseen labels)
        mean_entropy, mean_entropy_normalised (divided by log h; nan for h = 1)
        si                     specialisation_index(c)
    """
    c = _check_counts(c)
    h, K = c.shape
    L = c > 0 if designated is None else np.asarray(designated)
    if L.shape != (h, K) or L.dtype != bool:
        raise ValueError(f"designated must be a bool matrix of shape {(h, K)}, got {L.shape}, {L.dtype}")
    Li = L.astype(np.int64)
    inter = Li @ Li.T                                         # [h, h]
    sizes = Li.sum(axis=1)                                    # [h]
    union = sizes[:, None] + sizes[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        jac = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    pairs = jac[np.triu_indices(h, k=1)]
    pairs = pairs[np.isfinite(pairs)]
    heads_per_label = Li.sum(axis=0)                          # [K]
    covered = heads_per_label > 0
    cf = c.astype(np.float64)
    tot = cf.sum(axis=0)
    p = np.divide(cf, tot, out=np.zeros_like(cf), where=tot > 0)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    ent = np.where(tot > 0, -plogp.sum(axis=0), np.nan)       # [K]
    seen = np.isfinite(ent)
    mean_ent = float(ent[seen].mean()) if seen.any() else float("nan")
    return {
        "jaccard": jac,
        "mean_jaccard": float(pairs.mean()) if pairs.size else float("nan"),
        "coverage": float(covered.mean()),
        "heads_per_label": heads_per_label,
        "mean_heads_per_label": float(heads_per_label[covered].mean()) if covered.any() else float("nan"),
        "labels_per_head": sizes,
        "entropy": ent,
        "mean_entropy": mean_ent,
        "mean_entropy_normalised": mean_ent / np.log(h) if h > 1 else float("nan"),
        "si": specialisation_index(c),
    }


def shuffled_control(B_mha, head_dim, n_shuffles=20, seed=0, rule="diagonal", min_cluster_size=1):
    """SI of the shuffled-node control: (mean, std) over n_shuffles random node-to-head assignments. [INF]

    Each shuffle permutes the D nodes (np.random.default_rng(seed)) and cuts them into heads of head_dim
    nodes (head sizes kept), then recomputes c and SI. A real SI clearly above the mean indicates head
    specialisation beyond chance.
    """
    L = node_labels(B_mha, rule, min_cluster_size)            # [D, K]
    D, K = L.shape
    h = _num_heads(D, head_dim)
    if not (isinstance(n_shuffles, (int, np.integer)) and n_shuffles >= 1):
        raise ValueError(f"n_shuffles must be a positive integer, got {n_shuffles!r}")
    rng = np.random.default_rng(seed)
    si = np.array([specialisation_index(L[rng.permutation(D)].reshape(h, head_dim, K).sum(axis=1))
                   for _ in range(n_shuffles)])
    return float(si.mean()), float(si.std())


# ------------------------------------------------------------------ statistics of any node partition
def partition_counts(L, groups):
    """c [h, K] int: c[g, j] = number of nodes of group g whose label set holds j. [INF]

    L [D, K] bool node label sets (clusters.node_labels); groups int [h, d] a partition of the D nodes
    (the real heads: np.arange(D).reshape(h, d); random ones: nulls.random_partitions).
    """
    L = np.asarray(L)
    groups = np.asarray(groups)
    if L.ndim != 2 or groups.ndim != 2:
        raise ValueError(f"L must be [D, K] and groups [h, d], got {L.shape} and {groups.shape}")
    return L[groups].sum(axis=1)                               # [h, d, K] -> [h, K]


def partition_si(L, groups):
    """Specialisation index of the node groups `groups` [h, d] from node label sets L [D, K]. [INF]"""
    return specialisation_index(partition_counts(L, groups))


def shp_label_sets(V, groups, threshold=0.3):
    """Single-head diagonal sets [h, K] bool of node groups: the SHP matrix of group g is the sum of its nodes'
    fields, sum_{n in g} V[n] (head_fields for the real heads), max-normalised and thresholded; its diagonal
    is the set of labels the group recognises. [INF, SHP of P-L]

    V [D, K, K] node fields; groups int [h, d] (any partition of the nodes, e.g. random ones for a null).
    """
    from .snp import normalise_threshold
    V = np.asarray(V)
    if V.ndim != 3 or V.shape[1] != V.shape[2]:
        raise ValueError(f"V must be node fields [D, K, K], got shape {V.shape}")
    Vg = V[np.asarray(groups)].sum(axis=1)                     # [h, d, K, K] -> [h, K, K]
    return np.diagonal(normalise_threshold(Vg, threshold), axis1=1, axis2=2).copy()


def heads_per_label(sets):
    """Mean number of groups recognising a label, over the labels recognised by at least one (nan if none).

    sets [h, K] bool (e.g. shp_label_sets). P-L: "each label being explicitly recognized by a few heads".
    """
    sets = np.asarray(sets, dtype=bool)
    m = sets.sum(axis=0)
    return float(m[m > 0].mean()) if (m > 0).any() else float("nan")
