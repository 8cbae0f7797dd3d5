"""Null distributions for the SNP claims: label-permutation tests, random node partitions, Holm, MDE. [INF]

Cluster / ground-truth group agreement (`group_permutation_test`). Statistic: the number of multi-label
clusters whose labels all share one group. Null: the group assignment carries no information about the
clusters, i.e. the assignment of groups to labels is exchangeable. Permuting the group vector g over the K
labels keeps every group's size and every cluster (and the dependence between clusters: nodes share labels,
clusters repeat) as observed. The distinct assignments number K! / prod_g n_g!; when that is at most
`exact_max` they are all enumerated and
    p = #{assignments with statistic >= observed} / #{assignments}                        (exact)
otherwise `n_draws` random permutations give
    p = (1 + #{draws with statistic >= observed}) / (1 + n_draws)                        (Monte Carlo)
This replaces the p-value that treated clusters as independent draws (report.group_agreement's old
"p_value", which counted 91 distinct clusters of 100 as 100 independent trials).

Heads (`partition_null`): a statistic of the real heads (specialisation index from node label counts, or a
property of the single-head fields) against random partitions of the same D nodes into groups of head_dim
(the shuffled-node control): p = (1 + #{partitions with statistic >= observed}) / (1 + n_draws).
Several tests (heads, encoders) are corrected with Holm's step-down method (`holm`); `min_detectable_effect`
gives the smallest effect a one-sided test at the corrected level detects with 80 % power.
Shape legend: D nodes, d head_dim, K labels.
"""
from __future__ import annotations

import collections
import functools
import itertools
import math

import numpy as np
from scipy.special import ndtri     # standard normal quantile (what scipy.stats.norm.ppf calls)


# ------------------------------------------------------------------------- cluster / group agreement
def _multi_clusters(clusters, K):
    multi = [np.asarray(sorted(c), dtype=np.int64) for c in clusters if len(c) >= 2]
    for c in multi:
        if c.min() < 0 or c.max() >= K:
            raise ValueError(f"cluster {c.tolist()} has labels outside 0..{K - 1}")
    return multi


def clusters_inside(clusters, groups):
    """Number of clusters (of >= 2 labels) whose labels all lie in one group. groups: [K] int (or [P, K]).

    Kernel (naive twin `_clusters_inside_naive`): each assignment's groups as label bit masks, member[v, p] =
    sum_{k : G[p, k] = v} 2^k, and each distinct cluster c as cm = sum_{k in c} 2^k; c lies inside a group of
    assignment p iff member[v, p] & cm == cm for some v. Identical clusters are counted once, times their
    multiplicity. Integer logic throughout, so the counts are exactly the twin's. Needs K <= 62 (else the twin).
    """
    g = np.asarray(groups)
    K = g.shape[-1]
    multi = _multi_clusters(clusters, K)
    if K > 62:
        return _clusters_inside_naive(multi, g)
    hits = _inside_from_masks(multi, _group_masks(g.reshape(-1, K)))
    return hits if g.ndim > 1 else int(hits[0])


def _group_masks(G, values=None):
    """Assignments G [P, K] -> member [V, P], member[v, p] = sum_{k : G[p, k] = values[v]} 2^k (K <= 62);
    values: the group ids (default: those occurring in G)."""
    bit = np.left_shift(np.int64(1), np.arange(G.shape[1], dtype=np.int64))   # [K] 2^k
    values = np.unique(G) if values is None else values
    return np.stack([(G == v) @ bit for v in values])         # [V, P] group bit masks


def _inside_from_masks(multi, member):
    """clusters_inside on the group bit masks member [V, P] of P assignments: hits [P]."""
    bit = np.left_shift(np.int64(1), np.arange(62, dtype=np.int64))
    hits = np.zeros(member.shape[1], dtype=np.int64)
    for c, m in collections.Counter(tuple(c.tolist()) for c in multi).items():   # identical clusters once, x m
        cm = np.bitwise_or.reduce(bit[list(c)])               # the cluster's bit mask (a repeated label once)
        hits += m * ((member & cm) == cm).any(axis=0)         # [P]: inside one group
    return hits


def _clusters_inside_naive(clusters, groups):
    """Naive twin of `clusters_inside`: every cluster, the group ids of its labels compared per assignment."""
    g = np.asarray(groups)
    K = g.shape[-1]
    multi = _multi_clusters(clusters, K)
    G = g.reshape(-1, K)                                      # [P, K] assignments
    hits = np.zeros(G.shape[0], dtype=np.int64)
    for c in multi:                                           # loop over clusters, vectorised over assignments
        gc = G[:, c]                                          # [P, |c|]
        hits += (gc == gc[:, :1]).all(axis=1)
    return hits if g.ndim > 1 else int(hits[0])


def n_assignments(groups):
    """Number of distinct label -> group assignments with the same group sizes: K! / prod_g n_g!."""
    counts = np.bincount(np.asarray(groups))
    n = math.factorial(int(counts.sum()))
    for c in counts:
        n //= math.factorial(int(c))
    return n


def _all_assignments_naive(groups):
    """Naive twin of `all_assignments` (the test compares them): one row at a time, Python loops."""
    g = np.asarray(groups)
    K = g.size
    vals, counts = np.unique(g, return_counts=True)
    rows = [np.full(K, -1, dtype=np.int64)]
    free = [np.arange(K)]
    for v, n in zip(vals[:-1], counts[:-1]):                  # place each group's labels among the free slots
        new_rows, new_free = [], []
        for row, fr in zip(rows, free):
            for pos in itertools.combinations(range(fr.size), int(n)):
                r = row.copy()
                r[fr[list(pos)]] = v
                new_rows.append(r)
                new_free.append(np.delete(fr, pos))
        rows, free = new_rows, new_free
    out = np.stack(rows)
    out[out < 0] = vals[-1]                                   # the last group takes the remaining slots
    return out


@functools.lru_cache(maxsize=4)
def _assignments_cached(sizes):
    """(A [P, K], member [V, P] or None for K > 62) of the group sizes `sizes` (n_0, n_1, ...): the distinct
    permutations of a group vector depend only on how many labels each group has (groups 0, 1, ... in that
    order), so e.g. every 10/10 split of 20 labels shares one enumeration. Read-only (shared between calls)."""
    A = all_assignments(np.repeat(np.arange(len(sizes)), sizes))
    member = _group_masks(A, range(len(sizes))) if A.shape[1] <= 62 else None
    for a in (A, member):
        if a is not None:
            a.setflags(write=False)
    return A, member


def all_assignments(groups):
    """Every distinct permutation of the group vector, as int64 [P, K] (P = n_assignments), by recursion on
    groups: group v's n_v labels are placed on every n_v-subset of the slots still free, for all rows at once.

    Every row at one level has the same number F of free slots, so the C(F, n_v) subsets are one index array
    [C, n_v] (and its complement [C, F - n_v]) applied to the [P, F] free-slot table of all rows; rows come out
    in the order of the naive twin `_all_assignments_naive` (row-major over (row, subset)).
    """
    g = np.asarray(groups)
    K = g.size
    vals, counts = np.unique(g, return_counts=True)
    rows = np.full((1, K), -1, dtype=np.int64)               # [P, K] partial assignments
    free = np.arange(K, dtype=np.int64)[None]                 # [P, F] free slots of each row, ascending
    for v, n in zip(vals[:-1], counts[:-1]):
        F = free.shape[1]
        pick = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(F), int(n))),
                           dtype=np.int64, count=math.comb(F, int(n)) * int(n)).reshape(-1, int(n))   # [C, n]
        P, C = rows.shape[0], pick.shape[0]
        keep = np.ones((C, F), dtype=bool)
        keep[np.arange(C)[:, None], pick] = False
        rest = np.nonzero(keep)[1].reshape(C, F - int(n))      # [C, F - n] the complements, ascending
        rows = np.repeat(rows, C, axis=0)                     # [P*C, K], row r's copies at r*C .. r*C + C-1
        slots = free[:, pick].reshape(P * C, int(n))          # [P*C, n] the slots group v takes
        rows[np.arange(P * C)[:, None], slots] = v
        free = free[:, rest].reshape(P * C, F - int(n))       # [P*C, F - n]
    rows[rows < 0] = vals[-1]                                 # the last group takes the remaining slots
    return rows


def group_permutation_test(clusters, groups, n_draws=10000, seed=0, exact_max=200000, chunk=20000):
    """Label-permutation test of cluster / ground-truth group agreement (module docstring).

    clusters: iterable of label lists (e.g. every cluster of every node of a layer); groups: [K] ints.
    Returns a dict: n (clusters of >= 2 labels), inside (observed count), fraction (inside / n),
    null_mean (mean count under the null, as a fraction of n: 'chance'), p_value, method ("exact" or
    "monte carlo"), n_null (assignments enumerated or draws), se (Monte Carlo standard error of p, 0 if exact),
    p_min (smallest attainable p: 1 / #assignments exact, 1 / (1 + n_draws) Monte Carlo).
    """
    g = np.asarray(groups)
    if g.ndim != 1 or not np.issubdtype(g.dtype, np.integer) or g.size == 0 or g.min() < 0:
        raise ValueError(f"groups must be non-negative integer group ids [K], got {g!r}")
    K = g.size
    multi = _multi_clusters(clusters, K)
    n = len(multi)
    if n == 0:
        return {"n": 0, "inside": 0, "fraction": float("nan"), "null_mean": float("nan"), "p_value": float("nan"),
                "method": "none", "n_null": 0, "se": float("nan"), "p_min": float("nan")}
    obs = clusters_inside(multi, g)
    total = n_assignments(g)
    if total <= exact_max:
        sizes = np.unique(g, return_counts=True)[1]            # labels per group, in group-id order
        A, member = _assignments_cached(tuple(sizes.tolist()))   # [P, K], [V, P]: once per group sizes
        null = np.concatenate([clusters_inside(multi, A[s:s + chunk]) if member is None else
                               _inside_from_masks(multi, member[:, s:s + chunk]) for s in range(0, len(A), chunk)])
        p = float(np.count_nonzero(null >= obs) / null.size)
        method, se, p_min = "exact", 0.0, 1.0 / total
    else:
        if not (isinstance(n_draws, (int, np.integer)) and n_draws >= 1):
            raise ValueError(f"n_draws must be a positive integer, got {n_draws!r}")
        rng = np.random.default_rng(seed)
        null = []
        for s in range(0, n_draws, chunk):
            m = min(chunk, n_draws - s)
            perm = np.argsort(rng.random((m, K)), axis=1)      # [m, K] random permutations
            null.append(clusters_inside(multi, g[perm]))
        null = np.concatenate(null)
        hits = int(np.count_nonzero(null >= obs))
        p = (1 + hits) / (1 + n_draws)
        method, se, p_min = "monte carlo", math.sqrt(p * (1 - p) / n_draws), 1.0 / (1 + n_draws)
    return {"n": n, "inside": int(obs), "fraction": obs / n, "null_mean": float(null.mean()) / n,
            "p_value": float(p), "method": method, "n_null": int(null.size), "se": float(se), "p_min": p_min}


# ----------------------------------------------------------------------------------- node partitions
def random_partitions(D, head_dim, n_draws, seed=0):
    """n_draws random partitions of D nodes into D / head_dim groups of head_dim: int [n_draws, h, d]."""
    if not (isinstance(head_dim, (int, np.integer)) and head_dim >= 1) or D % head_dim:
        raise ValueError(f"head_dim must be a positive divisor of D={D}, got {head_dim!r}")
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(D).reshape(D // head_dim, head_dim) for _ in range(n_draws)])


def partition_null(stat, D, head_dim, n_draws=200, seed=0, alternative="greater"):
    """A statistic of the real heads against random partitions of the nodes into groups of head_dim. [INF]

    stat: callable(groups int [h, d]) -> float, evaluated on the real heads (node n in head n // head_dim)
    and on n_draws random partitions. alternative "greater" (real above chance) or "less".
    Returns a dict: observed, null_mean, null_sd, null (array), p_value = (1 + #{null >= observed}) /
    (1 + n_draws) (or <= for "less"), z = (observed - null_mean) / null_sd.
    """
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    real = np.arange(D).reshape(D // head_dim, head_dim) if D % head_dim == 0 else None
    parts = random_partitions(D, head_dim, n_draws, seed)
    obs = float(stat(real))
    null = np.array([float(stat(p)) for p in parts])
    fin = null[np.isfinite(null)]
    if alternative == "greater":
        hits = int(np.count_nonzero(fin >= obs - 1e-12))
    else:
        hits = int(np.count_nonzero(fin <= obs + 1e-12))
    sd = float(fin.std(ddof=1)) if fin.size > 1 else float("nan")
    mean = float(fin.mean()) if fin.size else float("nan")
    return {"observed": obs, "null_mean": mean, "null_sd": sd, "null": null,
            "p_value": (1 + hits) / (1 + fin.size),
            "z": (obs - mean) / sd if sd and np.isfinite(sd) and sd > 0 else float("nan")}


# ------------------------------------------------------------------------- multiple comparisons, power
def holm(p_values, alpha=0.05):
    """Holm's step-down correction. Returns (adjusted p [m], reject [m] bool at alpha), in the input order.

        sort p ascending: p_(1) <= ... <= p_(m);  adj_(i) = max_{k <= i} min(1, (m - k + 1) p_(k))
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be a vector, got shape {p.shape}")
    m = p.size
    if m == 0:
        return p.copy(), np.zeros(0, dtype=bool)
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p_values must be in [0, 1] (no nan)")
    order = np.argsort(p, kind="stable")
    adj_sorted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    adj = np.empty(m)
    adj[order] = adj_sorted
    return adj, adj <= alpha


def min_detectable_effect(null_sd, alpha, power=0.8):
    """Smallest true effect a one-sided test at level alpha detects with `power`, for a statistic whose null
    spread is null_sd (normal approximation): MDE = (z_{1 - alpha} + z_{power}) * null_sd."""
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha}, {power}")
    return float((ndtri(1 - alpha) + ndtri(power)) * null_sd)
