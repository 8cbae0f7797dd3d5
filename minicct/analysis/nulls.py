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
This replaces the p-value that treated clusters as independent draws (group_agreement's old
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
from dataclasses import dataclass, field

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


# ------------------------------------------------------------------- label-permutation null of the SNP
# Every SNP quantity of a site (read-out and single-node accuracy, clusters, cluster size, labels in clusters,
# noise, signal, every SNR variant, top-label fraction) measured again with NO label information: the training
# labels and the test labels are each shuffled over the images (a uniformly random permutation of the label
# vector, so every class keeps its number of images), and the read-out is trained with the same seed, epochs
# and recipe (report.analyse_site). The activations are untouched; only which image carries which label
# changes. A quantity that comes out the same with shuffled labels does not measure label information.
#
# One null draw of read-out seed s: the permutations label_permutation(N_train, s, draw, 0) and
# label_permutation(N_test, s, draw, 1), from np.random.default_rng([NULL_SALT, s, draw, split]); draws
# 0 .. P-1 per seed (`null_draws` = P). A permutation that maps every label to itself (e.g. one that shuffles
# images only within their class) gives exactly the real run.
#
# Summaries over S seeds and P draws per seed (`compare_to_null`):
#   value   mean over seeds, t interval (stats.summarise), as everywhere else
#   null    the mean over seeds of the per-seed draw means (= the mean over all S x P draws when all are
#           finite), t interval over seeds (S >= 2); with one seed, mean and t interval over its P draws
#   excess  value - null, paired within a seed: x_s - mean_d null_{s,d}, t interval over seeds (S >= 2);
#           with one seed x - null_d over the draws (the real value taken as fixed)
#   beyond  "above" / "below" when the excess interval lies strictly on one side of 0, "within" otherwise
# Docs: docs/nulls.md (what a draw is, the variance measurement behind the default NULL_DRAWS).

#: Seed salt of the null permutations ("null" in ASCII): the null's generator never coincides with a read-out's.
NULL_SALT = 0x6E756C6C
#: Default label-permutation draws per read-out seed (docs/nulls.md: the measurement behind it).
NULL_DRAWS = 1


def label_permutation(n, seed, draw=0, split=0):
    """The permutation of n rows of null draw `draw` of read-out seed `seed` (split 0 = training labels, 1 = test
    labels): np.random.default_rng([NULL_SALT, seed, draw, split]).permutation(n). Labels y become y[perm]."""
    if min(int(seed), int(draw), int(split)) < 0:
        raise ValueError(f"seed, draw and split must be >= 0, got {seed}, {draw}, {split}")
    return np.random.default_rng([NULL_SALT, int(seed), int(draw), int(split)]).permutation(int(n))


def null_site(A_train, y_train, A_test, y_test, num_classes, mode="flat", epochs=10, threshold=0.3, seed=0, draw=0,
              site="enc0.out", perms=None):
    """One null draw of one site: report.analyse_site with the training and test labels permuted. [INF]

    perms: (perm_train [N_train], perm_test [N_test]) to use instead of label_permutation(..., seed, draw, 0/1)
    (e.g. the identity, or a within-class shuffle: then the result is exactly the real run's). Same seed, epochs
    and recipe as the real read-out. Returns the SiteAnalysis of the permuted run.
    """
    from .report import analyse_site
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if perms is None:
        perms = (label_permutation(len(y_train), seed, draw, 0), label_permutation(len(y_test), seed, draw, 1))
    pt, pe = (np.asarray(p) for p in perms)
    for p, y, what in ((pt, y_train, "perm_train"), (pe, y_test, "perm_test")):
        if p.shape != y.shape or not np.array_equal(np.sort(p), np.arange(y.size)):
            raise ValueError(f"{what} must be a permutation of 0..{y.size - 1}")
    return analyse_site(A_train, y_train[pt], A_test, y_test[pe], num_classes, mode, epochs, threshold, seed, site)


def _null_units(N):
    """Replicate units of a null [S, P]: the per-seed draw means [S] (S >= 2), else the P draws of the one seed."""
    N = np.asarray(N, dtype=np.float64)
    if N.shape[1] == 0:
        return np.full(N.shape[0], np.nan)
    if N.shape[0] >= 2:
        with np.errstate(invalid="ignore"):
            return N.mean(axis=1)                   # inf / nan draws make the seed's mean non-finite: dropped
    return N[0]


def compare_to_null(real, null, level=0.95):
    """Value, null and excess of one quantity at one position (module section above). real [S]; null [S, P].

    Returns a dict: value, null, excess (stats.Summary each), beyond ("above" / "below" / "within", "n/a"
    without draws), draws (P), null_sd (sd of the single draws: the spread of one no-information run).
    """
    from .stats import summarise
    real = np.asarray(real, dtype=np.float64).ravel()
    null = np.asarray(null, dtype=np.float64)
    if null.ndim != 2 or null.shape[0] != real.size:
        raise ValueError(f"null must be [S, P] with S = {real.size} seeds, got shape {null.shape}")
    value = summarise(real, level)
    P = null.shape[1]
    if P == 0:
        nan = summarise([], level)
        return {"value": value, "null": nan, "excess": nan, "beyond": "n/a", "draws": 0, "null_sd": float("nan")}
    units = _null_units(null)
    nul = summarise(units, level)                   # its mean = the mean over all draws when every draw is finite
    fin = null[np.isfinite(null)]
    if real.size >= 2:
        with np.errstate(invalid="ignore"):
            exc = summarise(real - units, level)
    else:
        exc = summarise(real[0] - null[0], level)
    beyond = "within"
    if np.isfinite(exc.lo):
        beyond = "above" if exc.lo > 0 else "below" if exc.hi < 0 else "within"
    return {"value": value, "null": nul, "excess": exc, "beyond": beyond, "draws": P,
            "null_sd": float(fin.std(ddof=1)) if fin.size > 1 else float("nan")}


def _fmt_summary(s, scale, digits):
    f = f"{{:.{digits}f}}"
    if not np.isfinite(s.mean):
        return "-"
    if not np.isfinite(s.lo):
        return f.format(scale * s.mean)
    return f"{f.format(scale * s.mean)} [{f.format(scale * s.lo)}, {f.format(scale * s.hi)}]"


@dataclass
class NullSweep:
    """Every SNP quantity of every site and read-out mode, for S read-out seeds, with its label-permutation null.

    names: the sites in order along the encoders (E); modes; seeds (S); draws (P null draws per seed).
    real[mode][quantity]: float [S, E] (replicate.QUANTITIES + "signal"), the true-label values;
    null[mode][quantity]: float [S, P, E], the same with permuted labels;
    kept[(seed, name, mode)]: the true-label SiteAnalyses asked for (keep=).
    """

    names: list
    modes: tuple
    seeds: list
    draws: int
    real: dict
    null: dict
    kept: dict = field(default_factory=dict)
    seconds: float = 0.0

    def compare(self, mode, quantity, level=0.95) -> list:
        """compare_to_null at every position: a list of E dicts (value, null, excess Summaries, beyond)."""
        R, N = self.real[mode][quantity], self.null[mode][quantity]
        return [compare_to_null(R[:, e], N[:, :, e], level) for e in range(len(self.names))]

    def null_means(self, mode, quantity):
        """[S, E] the per-seed mean over the null draws (nan without draws)."""
        N = self.null[mode][quantity]
        if N.shape[1] == 0:
            return np.full((N.shape[0], N.shape[2]), np.nan)
        with np.errstate(invalid="ignore"):
            return N.mean(axis=1)

    def trend(self, mode, quantity, direction="rise", start=0, scale=1.0) -> dict:
        """A trend along the positions start.. (stats.trend_verdict) for the real values, the same trend under the
        null, and the trend of the excess (real minus the seed's null mean), with the rule stats.null_check.

        Returns a dict: real, null, excess (trend_verdict dicts; null / excess None without draws), check (the
        words of stats.null_check: "label-driven", "not label-driven: the null shows it too", ...).
        """
        from .stats import null_check, trend_verdict
        R = self.real[mode][quantity][:, start:] * scale
        out = {"real": trend_verdict(R, direction), "null": None, "excess": None}
        if self.draws:
            N = self.null[mode][quantity][:, :, start:] * scale
            units = self.null_means(mode, quantity)[:, start:] * scale if N.shape[0] >= 2 else N[0]
            out["null"] = trend_verdict(units, direction)
            if N.shape[0] >= 2:
                out["excess"] = trend_verdict(R - units, direction)
        out["check"] = null_check(out["real"]["verdict"], out["null"]["verdict"] if out["null"] else None,
                                  out["excess"]["verdict"] if out["excess"] else None)
        return out

    def table(self, mode, quantities=None, level=0.95) -> str:
        """Per position: value, null and excess (mean [95 % interval]) of each quantity, as text."""
        from .report import LABELS
        E = len(self.names)
        lines = [f"{mode} read-out: value | label-permutation null ({self.draws} draw(s) per seed, {len(self.seeds)} "
                 f"seed(s)) | excess = value - null; '*' = excess interval beyond 0"]
        for e in range(E):
            lines.append(f"  {self.names[e]}")
            for q in quantities or self.real[mode]:
                label, scale, digits = LABELS.get(q, (q, 1, 2))
                c = compare_to_null(self.real[mode][q][:, e], self.null[mode][q][:, :, e], level)
                mark = "*" if c["beyond"] in ("above", "below") else " "
                lines.append(f"    {label:<26}{_fmt_summary(c['value'], scale, digits):>24} | "
                             f"{_fmt_summary(c['null'], scale, digits):>24} | "
                             f"{_fmt_summary(c['excess'], scale, digits):>24} {mark}")
        return "\n".join(lines)

    def to_dict(self, level=0.95) -> dict:
        """JSON-able: config, and per mode / quantity / position the value, null and excess (mean, lo, hi, values)
        and the raw null draws [S, P]."""
        out = {"names": list(self.names), "modes": list(self.modes), "seeds": list(self.seeds),
               "null_draws": self.draws, "null_seed_salt": NULL_SALT, "quantities": {}}
        for mode in self.modes:
            per = out["quantities"][mode] = {}
            for q in self.real[mode]:
                rows = []
                for e, c in enumerate(self.compare(mode, q, level)):
                    rows.append({"name": self.names[e], "value": c["value"].to_dict(), "null": c["null"].to_dict(),
                                 "excess": c["excess"].to_dict(), "beyond": c["beyond"], "null_sd": c["null_sd"],
                                 "null_draws": self.null[mode][q][:, :, e].tolist()})
                per[q] = rows
        return out

    @classmethod
    def concat(cls, parts):
        """One NullSweep of several along the positions (e.g. capture groups of one run)."""
        parts = list(parts)
        first = parts[0]
        cat = lambda d, ax: {m: {q: np.concatenate([getattr(p_, d)[m][q] for p_ in parts], axis=ax)   # noqa: E731
                                 for q in first.real[m]} for m in first.modes}
        kept = {}
        for p_ in parts:
            kept.update(p_.kept)
        return cls([n for p_ in parts for n in p_.names], first.modes, first.seeds, first.draws, cat("real", 1),
                   cat("null", 2), kept, sum(p_.seconds for p_ in parts))


def _site(name, index):
    """The Site of a capture name ("tokens", "enc2.out"), or of any other name at position `index` (snp-arrays)."""
    from ..sites import Site
    return Site.named(name, index)


def _values_with_signal(r):
    from .report import sweep_values
    v = sweep_values(r)
    v["signal"] = r.summary["mean_signal"]
    return v


def sweep_with_null(A_train, y_train, A_test, y_test, num_classes, names, modes=("flat",), seeds=(0, 1, 2),
                    epochs=10, threshold=0.3, null_draws=NULL_DRAWS, keep=(), workers=None, progress=None,
                    sites=None) -> NullSweep:
    """Every SNP quantity of the sites `names` (in order along the encoders), every read-out mode and seed, with
    true labels and with null_draws label-permutation draws per seed (null_site). [INF]

    A_train / A_test: {name: [N, T, D]}; y_train [N], y_test [M]. The true-label read-outs are those of
    replicate.seed_sweep (same calls, so the same numbers, digit for digit); all read-outs, real and null, run
    on `workers` forked processes (parallel.run_forked), each computed whole by one worker. keep: (name, mode)
    pairs whose true-label SiteAnalyses are returned in .kept. null_draws = 0: no null (null arrays [S, 0, E]).
    sites: the Site of each name (labels only; default Site.named(name, position)). Returns a NullSweep.
    """
    import time as _time
    from ..parallel import gil_switch_interval, run_forked
    from .report import SWEEP_QUANTITIES as QUANTITIES
    from .report import analyse_site
    t0 = _time.time()
    seeds = [int(s) for s in seeds]
    if not (isinstance(null_draws, (int, np.integer)) and null_draws >= 0):
        raise ValueError(f"null_draws must be an integer >= 0, got {null_draws!r}")
    qs = QUANTITIES + ("signal",)
    S, P, E = len(seeds), int(null_draws), len(names)
    real = {m: {q: np.full((S, E), np.nan) for q in qs} for m in modes}
    null = {m: {q: np.full((S, P, E), np.nan) for q in qs} for m in modes}
    keep = set(keep)
    jobs = [(si, seed, d, p, name, mode) for si, seed in enumerate(seeds) for d in range(-1, P)
            for p, name in enumerate(names) for mode in modes]             # d = -1: the true labels
    cost = {"flat": 0, "seqpool": 1, "mean": 2}                # longest read-outs first: the workers end together

    def run_job(i):
        si, seed, d, p, name, mode = jobs[i]
        site = _site(name, p) if sites is None else sites[p]
        if d < 0:
            r = analyse_site(A_train[name], y_train, A_test[name], y_test, num_classes, mode, epochs, threshold,
                             seed, site)
            return (r if (name, mode) in keep else None), _values_with_signal(r)
        r = null_site(A_train[name], y_train, A_test[name], y_test, num_classes, mode, epochs, threshold, seed, d,
                      site)
        return None, _values_with_signal(r)

    order = sorted(range(len(jobs)), key=lambda i: cost[jobs[i][5]])
    with gil_switch_interval(2e-4):
        done = dict(zip(order, run_forked(run_job, order, workers)))
    kept = {}
    for i, (si, seed, d, p, name, mode) in enumerate(jobs):
        r, v = done[i]
        for q in qs:
            if d < 0:
                real[mode][q][si, p] = v[q]
            else:
                null[mode][q][si, d, p] = v[q]
        if r is not None:
            kept[(seed, name, mode)] = r
    if progress:
        progress(f"  {S} seeds x {E} sites x {len(modes)} read-outs, {P} null draw(s) per seed: "
                 f"{len(jobs)} read-outs in {_time.time() - t0:.1f} s", flush=True)
    return NullSweep(list(names), tuple(modes), seeds, P, real, null, kept, _time.time() - t0)


def variance_components(null):
    """How the spread of a null [S, P] (S seeds x P draws, S >= 2, P >= 2) splits between read-out seeds and
    permutations, one-way random effects (method of moments):

        within  = mean_s var_d null[s, d]                 (ddof 1: the permutation's share, sigma_p^2)
        between = var_s mean_d null[s, d] - within / P    (the seed's share, sigma_s^2, floored at 0)
    Var(null mean over S seeds x P draws) = between / S + within / (S P): a second draw per seed helps only
    as much as `within` outweighs `between`. Returns a dict: within, between, var_mean_1 (the variance of the
    null mean with one draw per seed), var_mean_P (with P draws), S, P.
    """
    N = np.asarray(null, dtype=np.float64)
    if N.ndim != 2 or N.shape[0] < 2 or N.shape[1] < 2:
        raise ValueError(f"variance_components needs a null [S, P] with S >= 2 seeds and P >= 2 draws, got {N.shape}")
    N = N[np.isfinite(N).all(axis=1)]
    S, P = N.shape
    if S < 2:
        return {"within": float("nan"), "between": float("nan"), "var_mean_1": float("nan"),
                "var_mean_P": float("nan"), "S": S, "P": P}
    within = float(N.var(axis=1, ddof=1).mean())
    between = max(0.0, float(N.mean(axis=1).var(ddof=1)) - within / P)
    return {"within": within, "between": between, "var_mean_1": (between + within) / S,
            "var_mean_P": between / S + within / (S * P), "S": S, "P": P}


def variance_table(sweep, mode="flat", quantities=None, position=-1) -> str:
    """variance_components of every quantity at one position of a NullSweep (S >= 2 seeds, P >= 2 draws), beside
    the variance of the true-label values over seeds: the measurement behind NULL_DRAWS (docs/nulls.md)."""
    from .report import LABELS
    e = position % len(sweep.names)
    lines = [f"null variance at {sweep.names[e]} ({mode} read-out), {len(sweep.seeds)} seeds x {sweep.draws} draws: "
             f"sd of the real values over seeds; sd between seeds / within a seed (between permutations) of the "
             f"null; se of the null mean with 1 draw per seed / with {sweep.draws}",
             f"  {'quantity':<26}{'real sd':>10}{'null seed sd':>14}{'null perm sd':>14}{'se (1 draw)':>13}"
             f"{'se (' + str(sweep.draws) + ' draws)':>14}"]
    for q in quantities or sweep.real[mode]:
        label, scale, digits = LABELS.get(q, (q, 1, 2))
        vc = variance_components(sweep.null[mode][q][:, :, e])
        r = sweep.real[mode][q][:, e]
        r = r[np.isfinite(r)]
        rsd = float(r.std(ddof=1)) if r.size > 1 else float("nan")
        f = lambda v: f"{scale * v:.{digits + 1}f}"              # noqa: E731
        lines.append(f"  {label:<26}{f(rsd):>10}{f(math.sqrt(vc['between'])):>14}{f(math.sqrt(vc['within'])):>14}"
                     f"{f(math.sqrt(vc['var_mean_1'])):>13}{f(math.sqrt(vc['var_mean_P'])):>14}")
    return "\n".join(lines)


def run_snp_with_null(params, cfg, data, sites=("out",), modes=("flat", "mean", "seqpool"), include_tokens=True,
                      epochs=10, threshold=0.3, n_train=None, seeds=(0,), null_draws=NULL_DRAWS, batch_size=None,
                      max_capture_bytes=5e9, progress=print, workers=None):
    """report.run_snp over several read-out seeds and with the label-permutation null (`python -m minicct snp`).

    Captures the sites in as few forward passes as fit in max_capture_bytes (as run_snp), then per group of sites
    sweep_with_null. Returns (report, sweep): report = the SNPReport of the first seed (the numbers of
    run_snp with that seed, digit for digit), sweep = a NullSweep of every site (in run_snp's order).
    """
    import time as _time
    from .report import CAPTURE_BATCH, SNPReport, capture, capture_groups, site_names
    t0 = _time.time()
    say = progress or (lambda *a, **k: None)
    if data.num_classes != cfg.num_classes:
        raise ValueError(f"dataset {data.name} has {data.num_classes} classes, the model {cfg.num_classes}")
    seeds = [int(x) for x in seeds]
    names = site_names(cfg, sites, include_tokens)
    x_tr, y_tr, x_te, y_te = data.x_train[:n_train], data.y_train[:n_train], data.x_test, data.y_test
    groups = capture_groups(cfg, names, len(x_tr) + len(x_te), max_capture_bytes)
    parts, results = [], []
    for group in groups:
        say(f"capturing {', '.join(group)} for {len(x_tr)} training and {len(x_te)} test images ...", flush=True)
        A_tr = capture(params, cfg, x_tr, data.mean, data.std, group, batch_size or CAPTURE_BATCH)
        A_te = capture(params, cfg, x_te, data.mean, data.std, group, batch_size or CAPTURE_BATCH)
        sw = sweep_with_null(A_tr, y_tr, A_te, y_te, cfg.num_classes, group, modes, seeds, epochs, threshold,
                             null_draws, keep=[(n, m) for n in group for m in modes], workers=workers, progress=say)
        for name in group:
            for mode in modes:
                r = sw.kept[(seeds[0], name, mode)]
                c = {q: compare_to_null(sw.real[mode][q][:, group.index(name)],
                                        sw.null[mode][q][:, :, group.index(name)]) for q in ("accuracy", "snr")}
                nul = (f"  | null: acc {100 * c['accuracy']['null'].mean:5.1f}%  SNR {c['snr']['null'].mean:.2f}"
                       if sw.draws else "")
                say(f"  {name:<16} {mode:>7} read-out: test acc {100 * r.accuracy:5.1f}%  "
                    f"clusters/node {r.summary['mean_clusters_per_node']:.2f}  noise {r.summary['mean_noise']:.2f}  "
                    f"SNR {r.summary['snr']:.2f}  (seed {seeds[0]}){nul}", flush=True)
                results.append(r)
        # only the first seed's analyses are kept for the report (the sweep holds the numbers of every seed)
        sw.kept = {k: v for k, v in sw.kept.items() if k[0] == seeds[0]}
        parts.append(sw)
        del A_tr, A_te
    report = SNPReport(results, list(data.class_names), dict(data.groups), dict(data.group_names))
    report.seconds = _time.time() - t0
    return report, NullSweep.concat(parts)


def features_with_null(fs, modes=("flat", "mean", "seqpool"), epochs=10, threshold=0.3, seeds=(0,),
                       null_draws=NULL_DRAWS, n_train=None, keep_all=(), progress=print, workers=None):
    """io.features.analyse_features over several read-out seeds and with the label-permutation null
    (`python -m minicct snp-arrays`): one site of the file at a time, sweep_with_null on it.

    keep_all: sites whose SiteAnalyses are kept for every seed (head verdicts need them); of the others only the
    first seed's. Returns (report, sweep): report = the SNPReport of the first seed (analyse_features' numbers
    with that seed, digit for digit), sweep = a NullSweep of every site in file order.
    """
    from ..sites import Site
    from .report import SNPReport
    say = progress or (lambda *a, **k: None)
    seeds = [int(x) for x in seeds]
    y_tr, y_te = fs.y_train[:n_train], fs.y_test
    parts, results = [], []
    for i, name in enumerate(fs.sites):
        A_tr, A_te = fs.arrays(name)
        A_tr = A_tr[:n_train]
        sw = sweep_with_null({name: A_tr}, y_tr, {name: A_te}, y_te, fs.num_classes, [name], modes, seeds, epochs,
                             threshold, null_draws, keep=[(name, m) for m in modes], workers=workers,
                             sites=[Site.named(name, i)])
        for mode in modes:
            r = sw.kept[(seeds[0], name, mode)]
            c = compare_to_null(sw.real[mode]["snr"][:, 0], sw.null[mode]["snr"][:, :, 0])
            a = compare_to_null(sw.real[mode]["accuracy"][:, 0], sw.null[mode]["accuracy"][:, :, 0])
            say(f"  {name:<16} {mode:>7} read-out: test acc {100 * r.accuracy:5.1f}%  "
                f"clusters/node {r.summary['mean_clusters_per_node']:.2f}  noise {r.summary['mean_noise']:.2f}  "
                f"SNR {r.summary['snr']:.2f}  (seed {seeds[0]})" +
                (f"  | null: acc {100 * a['null'].mean:5.1f}%  SNR {c['null'].mean:.2f}" if sw.draws else ""),
                flush=True)
            results.append(r)
        if name not in keep_all:
            sw.kept = {k: v for k, v in sw.kept.items() if k[0] == seeds[0]}
        parts.append(sw)
        del A_tr, A_te
    return SNPReport(results, list(fs.class_names)), NullSweep.concat(parts)


def group_agreement(clusters, groups: dict, n_draws=10000, seed=0, permutation=True) -> dict:
    """How often multi-label clusters stay inside one ground-truth group, against a label-permutation null. [INF]

    clusters: iterable of label lists (e.g. every cluster of every node of a layer); groups: name -> [K] ints.
    For each grouping g returns {"n": number of clusters of size >= 2, "inside": fraction whose labels all
    share one group, "chance": the expected fraction for random label sets of the same sizes,
        chance = mean over clusters c of  p_c,  p_c = sum_groups C(n_group, |c|) / C(K, |c|)   (exact),
    "p_value": one-sided p of the count inside under the label-permutation null (nulls.group_permutation_test:
    the group vector permuted over the labels, clusters kept as they are, so clusters that repeat or share
    labels are not counted as independent evidence; exact enumeration when the distinct assignments are
    few, else (1 + hits) / (1 + n_draws)), "p_method", "p_min" (smallest attainable p)}.
    The earlier p-value that treated clusters as independent draws is retired: it is far too small when
    clusters repeat across nodes. permutation=False skips the permutation test (p_value nan, p_method
    "skipped") for callers that show only the fractions.
    """
    multi = [list(c) for c in clusters if len(c) >= 2]
    out = {}
    for gname, g in groups.items():
        g = np.asarray(g)
        K = len(g)
        if g.ndim != 1 or not np.issubdtype(g.dtype, np.integer) or (g.size and g.min() < 0):
            raise ValueError(f"group_agreement: groups[{gname!r}] must be one group index >= 0 per class, [K] "
                             f"ints, got {g.dtype} {g.shape}")
        top = max((max(c) for c in multi), default=-1)
        if top >= K or min((min(c) for c in multi), default=0) < 0:
            raise ValueError(f"group_agreement: a cluster holds label {top}, but groups[{gname!r}] covers labels "
                             f"0..{K - 1} only; give one group index per class of the model")
        sizes = np.bincount(g)
        if not multi:
            out[gname] = {"n": 0, "inside": float("nan"), "chance": float("nan"), "p_value": float("nan"),
                          "p_method": "none", "p_min": float("nan")}
            continue
        hits = sum(len(set(g[c])) == 1 for c in multi)
        pc = np.array([sum(math.comb(int(n), len(c)) for n in sizes) / math.comb(K, len(c)) for c in multi])
        perm = group_permutation_test(multi, g, n_draws=n_draws, seed=seed) if permutation else \
            {"p_value": float("nan"), "method": "skipped", "p_min": float("nan")}
        out[gname] = {"n": len(multi), "inside": hits / len(multi), "chance": float(pc.mean()),
                      "p_value": perm["p_value"], "p_method": perm["method"], "p_min": perm["p_min"]}
    return out
