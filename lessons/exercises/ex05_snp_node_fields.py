"""Exercise 05 - single-nodal performance: a read-out, and the field matrix V of every node.   (about 45 minutes)

The SNP analysis (Koresh et al., arXiv 2501.12900; minicct/analysis/snp.py) asks what ONE node of a
trained network says about the labels when every other node is silenced. A node n of an encoder output
has one activation per token: A_k[t, n] for image k, token t. A bias-free linear read-out W [K, T, D] maps
the flattened activations of an image to K label scores (logits):

    z_k(j) = sum_t sum_n W[j, t, n] * A_k[t, n]                 A [N, T, D], W [K, T, D] -> z [N, K]

Silence all nodes but n and node n alone sends to output j the field

    h_n(k, j) = sum_t W[j, t, n] * A_k[t, n]                    (so z_k(j) = sum_n h_n(k, j))

and its K x K matrix averages the field over the images of each true label i:

    V[n, i, j] = mean_{k : y_k = i} h_n(k, j)                   rows i = true label, columns j = output

What to write
    readout_logits(A, W) -> z [N, K]
    node_fields(A, y, W, num_classes) -> V [D, K, K]
        A [N, T, D] float activations, y [N] integer labels in 0..K-1, W [K, T, D], num_classes K.
        A label with no images gets a row of zeros in every V[n] (not nan).
    Return float64 arrays; do not modify the inputs. No Python loop over images or tokens; a loop over
    the K labels is fine.

Hints (a teacher may delete this block for a harder version)
    - readout_logits is one matrix product once A and W are flattened to [N, T*D] and [K, T*D].
    - np.einsum('ktn,jtn->nkj', A, W) gives h [D, N, K]: all fields of all images at once. Then average
      the rows of each label. (Or average A per label first: V is linear in A.)
    - Self-check: V.sum(axis=0)[i] must equal the mean of readout_logits over the images of label i.

Check your work:
    python -m minicct.exercises check 05          (or: python lessons/exercises/check.py 05)
"""
import numpy as np


def readout_logits(A, W):
    """A [N, T, D], W [K, T, D] -> logits z [N, K], z[k, j] = sum_{t, n} W[j, t, n] A[k, t, n]."""
    raise NotImplementedError("exercise 05: write readout_logits")


def node_fields(A, y, W, num_classes):
    """A [N, T, D], y [N], W [K, T, D] -> V [D, K, K], V[n, i, j] = mean over images of label i of h_n(k, j)."""
    raise NotImplementedError("exercise 05: write node_fields")
