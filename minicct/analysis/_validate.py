"""Input checks of the analysis, written once. Every entry point of minicct.analysis calls these before it
computes anything, so bad input gets a clear error (what was expected, what came, what to do) instead of a
silent wrong result.

    check_activations  A [N, T, D] floating array or np.memmap, finite          (named in the message)
    check_labels       integer labels [N] in 0..K-1                             -> int64
    check_mode         read-out mode (and the seqpool pool)
    check_weight       read-out weight of the mode's shape, finite
    check_fields       node fields V [D, K, K], finite
    check_mask         a boolean or 0/1 array (optionally of given shapes)     -> bool
    check_finite       no NaN / inf (chunked, so memmaps are read piecewise)
Shape legend: N images, T tokens, D nodes, K classes.
"""
from __future__ import annotations

import numpy as np

MODES = ("flat", "mean", "seqpool")


def check_finite(X, name, chunk=256):
    """Raise ValueError naming `name` if X holds NaN or inf. X is read `chunk` rows at a time."""
    X = X if isinstance(X, np.ndarray) else np.asarray(X)
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.complexfloating)):
        return X
    rows = X.shape[0] if X.ndim else 1
    for s in range(0, rows, chunk):
        part = X[s:s + chunk] if X.ndim else X
        if not np.isfinite(part).all():
            bad = np.argwhere(~np.isfinite(part))[0]
            where = tuple(int(i) + (s if k == 0 else 0) for k, i in enumerate(bad)) if X.ndim else ()
            raise ValueError(f"{name} contains NaN or inf (first at index {where}); fix or drop those "
                             f"entries before the analysis")
    return X


def check_activations(A, name="A"):
    """A must be a finite floating [N, T, D] array (ndarray or memmap). Returns A unchanged."""
    if not isinstance(A, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array (or np.memmap) of shape [N, T, D], got {type(A).__name__}")
    if A.ndim != 3:
        raise ValueError(f"{name} must have shape [N, T, D] (images, tokens, nodes), got shape {A.shape}; "
                         f"for pooled features [N, D] use the pooled functions, for one image add A[None]")
    if not np.issubdtype(A.dtype, np.floating):
        raise ValueError(f"{name} must hold floating-point activations, got dtype {A.dtype}")
    check_finite(A, name)
    return A


def check_labels(y, n, num_classes, name="y"):
    """Integer labels [n] in 0..num_classes-1 -> int64 array; ValueError otherwise."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must be integer labels of shape [{n}] (one per image), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must be in 0..{num_classes - 1}, got values in {y.min()}..{y.max()}")
    return y.astype(np.int64, copy=False)


def check_mode(mode, pool=None, with_pool=True):
    """A read-out mode of MODES; for "seqpool" (with_pool) its pool = (w [1, D], b [1])."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not with_pool:
        return
    if mode == "seqpool":
        if pool is None or len(pool) != 2:
            raise ValueError("mode 'seqpool' needs pool=(w [1, D], b [1]), the trained attention-pool weights "
                             "(Readout.pool of a seqpool read-out)")
        for part, what in zip(pool, ("pool weight", "pool bias")):
            check_finite(np.asarray(part), what)
    elif pool is not None:
        raise ValueError(f"pool is only used by mode 'seqpool', got a pool with mode {mode!r}")


def readout_shape(mode, T, D, K):
    """Shape of the read-out weight: (K, T, D) for "flat" [CODE], (K, D) for "mean" / "seqpool" [INF]."""
    check_mode(mode, with_pool=False)
    return (K, T, D) if mode == "flat" else (K, D)


def check_weight(W, mode, T, D, K=None, name="read-out weight W"):
    """A finite read-out weight of the mode's shape (readout_shape)."""
    if not isinstance(W, np.ndarray) or W.ndim < 2:
        raise ValueError(f"{name} must be a NumPy array [K, T, D] or [K, D], got "
                         f"{getattr(W, 'shape', type(W).__name__)}")
    want = readout_shape(mode, T, D, W.shape[0] if K is None else K)
    if W.shape != want:
        raise ValueError(f"{name} for mode {mode!r} must have shape {want} (K, T, D for 'flat', K, D "
                         f"otherwise) to match activations with T={T}, D={D}; got {W.shape}")
    check_finite(W, name)
    return W


def check_fields(V, name="V"):
    """Node matrices V [D, K, K], numeric and finite."""
    V = np.asarray(V)
    if V.ndim != 3 or V.shape[1] != V.shape[2]:
        raise ValueError(f"{name} must be node matrices [D, K, K], got shape {V.shape}; for one node use V[None]")
    if not np.issubdtype(V.dtype, np.floating) and not np.issubdtype(V.dtype, np.integer):
        raise ValueError(f"{name} must be numeric, got dtype {V.dtype}")
    check_finite(V, name)
    return V


def check_mask(M, name="mask", ndim=None, shapes=None, hint=""):
    """A boolean or 0/1 array -> bool array. ndim / shapes (a list of allowed shapes) are checked if given."""
    M = np.asarray(M)
    if ndim is not None and M.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {M.shape}{hint}")
    if shapes is not None and M.shape not in [tuple(s) for s in shapes]:
        raise ValueError(f"{name} must have shape {' or '.join(str(tuple(s)) for s in shapes)}, got "
                         f"{M.shape}{hint}")
    if M.dtype != bool:
        if not (np.issubdtype(M.dtype, np.integer) or np.issubdtype(M.dtype, np.floating)) or \
                not np.isin(M, (0, 1)).all():
            raise ValueError(f"{name} must be boolean or hold only 0 and 1, got dtype {M.dtype}{hint}")
        M = M.astype(bool)
    return M


def take_rows(A, idx, out=None):
    """Rows idx of A as float32 (only these rows are read; float16/float64 caches are cast per batch)."""
    if out is not None and A.dtype == np.float32:
        idx = np.asarray(idx)
        if idx.size and (idx.min() < -A.shape[0] or idx.max() >= A.shape[0]):
            raise IndexError(f"row indices {idx.min()}..{idx.max()} outside the {A.shape[0]} rows of the array")
        # in range (checked above), so mode="clip" changes nothing; it spares np.take's buffered copy of out
        np.take(A, idx, axis=0, out=out[: len(idx)], mode="clip")
        return out[: len(idx)]
    return np.asarray(A[idx], dtype=np.float32)
