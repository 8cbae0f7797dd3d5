"""Exercise 06 - the authors' greedy label clusters of a node, and the node's noise.   (about 45 minutes)

After exercise 05, every node n has a K x K field matrix V[n]. Divided by its maximum and thresholded
(V[n] / max V[n] > 0.3) it becomes a 0/1 matrix B [K, K]: rows i = true label, columns j = output label
(minicct/analysis/snp.py::normalise_threshold). This exercise works on ONE such matrix.

A cluster is a set of labels L whose whole |L| x |L| block of B is ones: B[a, b] = 1 for every a, b in L
(both directions, and the diagonal). The authors find clusters greedily, in ascending label order
(AFCC code, `return_squares`; minicct/analysis/clusters.py::greedy_clusters):

    candidates = the labels j with B[j, j] = 1, ascending;  remaining = all candidates
    for lb in candidates:
        if lb was already put in a cluster: skip it
        cluster = [lb];  lb leaves remaining
        for lb2 in remaining, ascending:
            if B[lb2, c] = 1 and B[c, lb2] = 1 for EVERY label c already in the cluster:
                append lb2 to the cluster;  lb2 leaves remaining
        the cluster is finished
Singletons count as clusters (size 1). The order matters: the greedy result is not always the largest
possible block, and you must reproduce the greedy result exactly.

The noise of the node (AFCC `noise_filter`): the ones of B outside the cluster blocks,

    noise = (number of ones in B) - sum over clusters c of |c|^2,     and noise = -1 when B has no cluster
    (no diagonal one at all), as the authors' code does (minicct/analysis/clusters.py::node_noise; the
    library's node_noise also takes a whole layer [D, K, K]).

What to write
    greedy_clusters(B) -> list of clusters, each a list of int labels in ascending order, the clusters in
                          the order they were found (that is, by their smallest label). [] if none.
    node_noise(B)      -> int
        B [K, K] bool (True = 1). Do not modify B.

Hints (a teacher may delete this block for a harder version)
    - M = B & B.T is 1 exactly where both directions are 1. The test "lb2 fits every c in the cluster" is
      then np.all(M[lb2, cluster]).
    - Try B = np.ones((3, 3), bool) (one cluster [0, 1, 2], noise 0) and an all-zero diagonal ([] and -1).

Check your work:
    python -m minicct.exercises check 06          (or: python lessons/exercises/check.py 06)
"""
import numpy as np


def greedy_clusters(B):
    """B [K, K] bool -> list of clusters (lists of int labels), found greedily in ascending label order."""
    raise NotImplementedError("exercise 06: write greedy_clusters")


def node_noise(B):
    """B [K, K] bool -> ones outside the greedy cluster blocks (int), -1 when there is no cluster."""
    raise NotImplementedError("exercise 06: write node_noise")
