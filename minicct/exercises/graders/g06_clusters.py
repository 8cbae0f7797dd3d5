"""Grader of exercise 06 clusters and noise (python -m minicct.exercises check 06 ...).

Seeded cases, minicct's answer, and the known wrong answers (graders/__init__.py).
"""
from __future__ import annotations

import numpy as np

from ...analysis.clusters import greedy_clusters as ref_greedy_clusters
from ...analysis.clusters import node_stats as ref_node_stats
from ..checker import CaseFailed, compare_exact


def _greedy_variant(B, mistake):
    """Greedy clusters with one typical mistake (the reference loop of the docstring otherwise)."""
    K = B.shape[0]
    mutual = B if mistake == "one_direction" else (B & B.T)
    cand = list(range(K)) if mistake == "no_diagonal" else [j for j in range(K) if B[j, j]]
    remaining = set(cand)
    out = []
    for lb in cand:
        if lb not in remaining:
            continue
        remaining.discard(lb)
        cluster = [lb]
        for lb2 in sorted(remaining):
            members = cluster[:1] if mistake == "first_only" else cluster
            if all(mutual[lb2, c] and (mistake == "one_direction" or mutual[c, lb2]) for c in members):
                cluster.append(lb2)
                remaining.discard(lb2)
        out.append(cluster)
    return out


_CLUSTER_HINTS = {
    "first_only": "a new label must form ones with EVERY label already in the cluster, not only the first",
    "one_direction": "both directions must be 1: B[lb2, c] AND B[c, lb2] (use B & B.T)",
    "no_diagonal": "only labels with B[j, j] = 1 are candidates; a label with a zero diagonal is in no cluster",
}


def _cluster_inputs():
    """Hand-made node matrices [K, K] bool, each with what it tests."""
    def sym(K, pairs, diag):
        B = np.zeros((K, K), dtype=bool)
        B[list(diag), list(diag)] = True
        for a, b in pairs:
            B[a, b] = B[b, a] = True
        return B

    block = sym(5, [(0, 2), (0, 3), (2, 3)], [0, 2, 3, 4])
    block[1, 0] = block[4, 1] = block[1, 3] = True                  # noise; label 1 has no diagonal one
    one_way = sym(3, [], [0, 1, 2])
    one_way[0, 1] = True                                            # B[0, 1] = 1 but B[1, 0] = 0
    one_way[2, 0] = one_way[0, 2] = True
    empty = np.zeros((4, 4), dtype=bool)
    empty[0, 1] = empty[1, 0] = empty[2, 3] = True                  # ones, but no diagonal one
    off_diag = sym(4, [(0, 1), (0, 2), (1, 2)], [0, 2, 3])          # label 1 pairs with all, but B[1, 1] = 0
    return [
        ("a 3-label block, a singleton and noise", block),
        ("ties: the greedy order decides ([0, 1] first, not the larger [0, 2, 3])",
         sym(4, [(0, 1), (0, 2), (0, 3), (2, 3)], range(4))),
        ("a label joins only if it fits every member", sym(4, [(0, 1), (0, 2), (1, 3), (2, 3)], range(4))),
        ("one direction is not enough", one_way),
        ("a label with a zero diagonal", off_diag),
        ("an empty node: no diagonal one", empty),
        ("all ones", np.ones((4, 4), dtype=bool)),
        ("K = 1", np.ones((1, 1), dtype=bool)),
    ]


def _random_clusters_inputs(s):
    out = []
    for key, (K, p) in enumerate([(8, 0.35), (8, 0.6), (10, 0.5)]):
        rng = s.rng(6, key)
        U = rng.random((K, K)) < p
        B = U | (U.T & (rng.random((K, K)) < 0.7))                   # mostly symmetric, some one-way ones
        out.append((f"random K = {K}, density ~{p}", B))
    return out


def _normalise_clusters(obj):
    if isinstance(obj, np.ndarray) and obj.ndim == 2:
        obj = obj.tolist()
    if not isinstance(obj, (list, tuple)):
        raise CaseFailed([f"`greedy_clusters` must return a list of clusters, received a {type(obj).__name__}",
                          "hint: e.g. [[0, 2, 3], [4]]; [] when the node has no cluster"])
    out = []
    for c in obj:
        try:
            labels = [int(v) for v in (c.tolist() if isinstance(c, np.ndarray) else c)]
        except (TypeError, ValueError):
            raise CaseFailed([f"`greedy_clusters`: every cluster must be a list of int labels, received {c!r}",
                              "hint: e.g. [[0, 2, 3], [4]]"]) from None
        out.append(labels)
    return out


def grade_clusters(s):
    """greedy_clusters(B) -> list of lists; node_noise(B) -> int, against minicct.analysis.clusters."""
    inputs = _cluster_inputs() + _random_clusters_inputs(s)

    def cl_case(label, B):
        def run():
            expected = ref_greedy_clusters(B)
            got = s.call("greedy_clusters", B, error_hint="B is a bool [K, K] array; return lists of ints")
            norm = _normalise_clusters(got)
            hints = [(_greedy_variant(B, m), msg) for m, msg in _CLUSTER_HINTS.items()]
            if sorted(sorted(c) for c in norm) == sorted(expected) and norm != expected:
                hints.append((norm, "right clusters, wrong order: labels ascending inside a cluster, clusters "
                                    "in the order found (by smallest label)"))
            compare_exact("clusters", expected, norm, hints=hints,
                          hint="follow the greedy loop: candidates ascending, each cluster grows with the "
                               "smallest remaining label that fits every member")
            return None
        return (label, run)

    def noise_case(label, B):
        def run():
            st = ref_node_stats(B[None])
            expected = int(st.noise[0])
            got = s.call("node_noise", B, error_hint="B is a bool [K, K] array; return an int")
            try:
                val = int(got) if float(got) == int(got) else float(got)
            except (TypeError, ValueError, OverflowError):
                raise CaseFailed([f"`node_noise` must return an int, received {got!r}"]) from None
            total = int(B.sum())
            sizes = st.cluster_sizes[0]
            hints = []
            try:                                                   # noise of the student's own clusters
                own = _normalise_clusters(getattr(s.module, "greedy_clusters")(B.copy()))
                if own != ref_greedy_clusters(B):
                    hints.append((total - sum(len(c) ** 2 for c in own) if own else -1,
                                  f"your greedy_clusters gives {own} here, not {ref_greedy_clusters(B)}: "
                                  f"fix it first, the noise follows from the clusters"))
            except Exception:  # noqa: BLE001 - no usable clusters of the student: no such hint
                pass
            hints += [
                (total, "a node without clusters has noise -1 (the authors' code marks it)"
                 if not sizes else "subtract the ones inside the cluster blocks (|c|^2 per cluster)"),
                (total - sum(sizes), "a cluster block holds |c|^2 ones (the whole |c| x |c| block), not |c|"),
            ]
            compare_exact("noise", expected, val, hints=hints,
                          hint="noise = ones of B - sum over clusters of |c|^2, or -1 when there is no cluster")
            return None
        return (label, run)

    s.part("greedy_clusters", [cl_case(lb, B) for lb, B in inputs])
    s.part("node_noise", [noise_case(lb, B) for lb, B in inputs])
