"""Exercise 07 - the ANDC pruning mask of a read-out.                         (about 20 minutes)

ANDC ("applied nodal diagonal connection", Koresh et al., arXiv 2501.12900; minicct/analysis/andc.py::andc_mask, prune_readout):
after exercises 05 and 06, every node n of a layer has a 0/1 matrix B[n] [K, K] (rows = true label,
columns = output). Node n keeps its read-out weights to label j, at every token, only if B[n, j, j] = 1,
the diagonal of ITS OWN matrix; all its other read-out weights are set to 0:

    M[j, n] = B[n, j, j]                       B [D, K, K] -> M [K, D]   (labels x nodes, like the read-out)
    W_pruned[j, t, n] = M[j, n] * W[j, t, n]   W [K, T, D] -> W_pruned [K, T, D]

What to write
    andc_mask(B) -> M [K, D] bool
    prune_readout(W, M) -> W_pruned [K, T, D], a new array (W itself stays unchanged)
No Python loops needed: both are one or two NumPy lines.

Hints (a teacher may delete this block for a harder version)
    - np.diagonal takes the diagonal over axis1=0 and axis2=1 unless told otherwise. Which two axes of
      B [D, K, K] hold the K x K matrix of a node?
    - M [K, D] has to line up with W [K, T, D]: give it the token axis with M[:, None, :].

Check your work:
    python -m minicct.exercises check 07          (or: python lessons/exercises/check.py 07)
"""
import numpy as np


def andc_mask(B):
    """B [D, K, K] bool node matrices -> keep-mask M [K, D] bool, M[j, n] = B[n, j, j]."""
    raise NotImplementedError("exercise 07: write andc_mask")


def prune_readout(W, M):
    """W [K, T, D] read-out, M [K, D] keep-mask -> pruned copy W * M at every token [K, T, D]."""
    raise NotImplementedError("exercise 07: write prune_readout")
