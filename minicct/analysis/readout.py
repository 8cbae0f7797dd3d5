"""Per-encoder read-out: a fresh linear classifier trained on frozen activations (phase 2 of the SNP method).

A read-out maps the activations A [N, T, D] of one site (an encoder's output, its MHA heads, its FF hidden
layer, ...) to K logits. Three forms are offered (`mode`):

    "flat"     [CODE]  logits = A.reshape(N, T*D) @ W.reshape(K, T*D)^T,   W [K, T, D], no bias.
                       The AFCC `FC_Net` (nn.Linear(T*D, K, bias=False)) on the flattened tokens: every token
                       of every node has its own weight to every label (docs/method.md sec. 3.1).
    "mean"     [INF]   logits = mean_t(A) @ W^T,   W [K, D], no bias (token-averaged read-out).
    "seqpool"  [INF]   logits = seqpool(A) @ W^T,  W [K, D], no bias; seqpool = softmax over tokens of a fresh
                       Linear(D, 1), as the CCT's own pooling (layers/pooling.py), trained jointly with W.
The project's design input found that the flattened-token read-out hardly rises along the encoders while
the token-averaged one does; so all three are here, and "flat" stays the default because it is the authors'.

Training recipe of the AFCC code (Train_Network.py, Cut_VGG.py) [CODE]: init uniform(+-1/sqrt(fan_in)) like
torch.nn.Linear; SGD with Nesterov momentum 0.975, weight decay 1e-3 on every weight, mini-batch 100, plain
cross-entropy; the learning rate is multiplied by 0.975 at the START of every epoch (the code does
`lr *= 0.975` before each epoch, the first included), so epoch e (from 0) uses lr * 0.975**(e+1).
The authors train 200 epochs with augmented images; here the activations are cached, so there is no
augmentation [INF], and a few epochs are the default.

Memory: A may be a large float32/float16 array or an np.memmap; it is read one shuffled mini-batch at a time
(rows gathered in ascending order for memmap locality) and never converted whole.
Shape legend: N images, T tokens, D nodes, K classes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..layers.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from ..layers.pooling import seqpool_backward, seqpool_forward
from ..train.optim import SGD
from ._validate import MODES, check_activations, check_labels, check_mask, check_mode, check_weight, readout_shape
from ._validate import take_rows as _rows

#: Read-out epochs used by the lessons and run_snp (the authors train 200; a few suffice on cached features).
READOUT_EPOCHS = 10


# ---------------------------------------------------------------------------------------------- forward
def pooled_features(A, mode, pool=None, batch_size=1000):
    """Token-pooled features Z [N, D] (float32) of a "mean" or "seqpool" read-out.

        mean:    Z[k, n] = (1/T) sum_t A_k[t, n]                                   [INF]
        seqpool: Z[k, n] = sum_t a_k[t] A_k[t, n],  a_k = softmax_t(A_k w^T + b)   [INF] (CCT pooling)
    Inputs: A [N, T, D], pool = (w [1, D], b [1]) for seqpool. Processed batch_size images at a time.
    """
    check_activations(A)
    check_mode(mode, pool)
    if mode == "flat":
        raise ValueError("pooled_features needs mode 'mean' or 'seqpool'; the flat read-out has no pooled feature")
    return _pooled(A, mode, pool, batch_size)


def _pooled(A, mode, pool=None, batch_size=1000):
    """pooled_features on checked inputs (no validation). A [N, T, D] -> Z [N, D] float32."""
    N, T, D = A.shape
    Z = np.empty((N, D), dtype=np.float32)
    for s in range(0, N, batch_size):
        Ab = np.asarray(A[s:s + batch_size], dtype=np.float32)  # [B, T, D]
        Z[s:s + batch_size] = Ab.mean(axis=1) if mode == "mean" else seqpool_forward(Ab, *pool)[0]
    return Z


def readout_logits(A, W, batch_size=1000, mode="flat", pool=None):
    """Logits [N, K] (float32) of a bias-free read-out, computed batch_size images at a time.

        flat:            z_k = A_k.reshape(T*D) @ W.reshape(K, T*D)^T   [CODE]
        mean / seqpool:  z_k = Z_k @ W^T with Z from `pooled_features`  [INF]
    Inputs: A [N, T, D]; W [K, T, D] (flat) or [K, D]; pool (seqpool only) = (w [1, D], b [1]).
    """
    check_activations(A)
    check_mode(mode, pool)
    N, T, D = A.shape
    check_weight(W, mode, T, D)
    return _logits(A, W.reshape(W.shape[0], -1).astype(np.float32, copy=False), batch_size, mode, pool)


def _logits(A, Wf, batch_size, mode, pool):
    """readout_logits on checked inputs (no validation): A [N, T, D], or for mode "mean" also the pooled
    features Z [N, D] (the token average, computed once); Wf [K, T*D] or [K, D] float32. Returns [N, K]."""
    N, K = A.shape[0], Wf.shape[0]
    out = np.empty((N, K), dtype=np.float32)
    for s in range(0, N, batch_size):
        Ab = np.asarray(A[s:s + batch_size], dtype=np.float32)  # [B, T, D] (or [B, D] pooled)
        if mode == "flat":
            X = Ab.reshape(Ab.shape[0], -1)                     # [B, T*D]
        elif mode == "mean":
            X = Ab if Ab.ndim == 2 else Ab.mean(axis=1)         # [B, D]
        else:
            X = seqpool_forward(Ab, *pool)[0]                   # [B, D]
        out[s:s + batch_size] = X @ Wf.T                        # [B, K]
    return out


def readout_accuracy(A, y, W, batch_size=1000, mode="flat", pool=None):
    """Accuracy of a read-out, mean_k [argmax_j z_k(j) == y_k] (AFCC test_func) [CODE]. A [N, T, D], y int [N]."""
    check_activations(A)
    y = check_labels(y, A.shape[0], W.shape[0])
    if A.shape[0] == 0:
        raise ValueError("readout_accuracy: no images (A has N = 0)")
    check_mode(mode, pool)
    check_weight(W, mode, A.shape[1], A.shape[2])
    return _accuracy(A, y, W.reshape(W.shape[0], -1).astype(np.float32, copy=False), batch_size, mode, pool)


def _accuracy(A, y, Wf, batch_size, mode, pool):
    """readout_accuracy on checked inputs (no validation; A may be pooled features for "mean", as `_logits`)."""
    return float((_logits(A, Wf, batch_size, mode, pool).argmax(axis=1) == y).mean())


# ---------------------------------------------------------------------------------------------- training
@dataclass
class Readout:
    """A trained read-out and its learning curve.

    W:          [K, T, D] (flat) or [K, D] (mean / seqpool), float32, bias-free.
    mode:       "flat" | "mean" | "seqpool".
    pool_w, pool_b: the seqpool attention weights [1, D], [1] (None otherwise).
    train_loss, train_acc: [epochs], running mean over the epoch's mini-batches (computed before each step).
    test_acc:   [epochs] test accuracy after each epoch (empty when no test set was given).
    lr:         [epochs] learning rate used in each epoch.
    mask:       the weight mask re-applied after every step (None for a dense read-out).
    """

    W: np.ndarray
    mode: str
    train_loss: np.ndarray
    train_acc: np.ndarray
    test_acc: np.ndarray
    lr: np.ndarray
    pool_w: np.ndarray | None = None
    pool_b: np.ndarray | None = None
    mask: np.ndarray | None = None

    @property
    def pool(self):
        """(pool_w, pool_b) for a seqpool read-out, else None (pass as `pool=` to the other functions)."""
        return None if self.pool_w is None else (self.pool_w, self.pool_b)

    @property
    def final_test_acc(self):
        """Test accuracy after the last epoch, or None."""
        return float(self.test_acc[-1]) if len(self.test_acc) else None

    def logits(self, A, batch_size=1000):
        """readout_logits with this read-out's W, mode and pool: A [N, T, D] -> [N, K]."""
        return readout_logits(A, self.W, batch_size, self.mode, self.pool)

    def accuracy(self, A, y, batch_size=1000):
        """readout_accuracy with this read-out's W, mode and pool."""
        return readout_accuracy(A, y, self.W, batch_size, self.mode, self.pool)


def _expand_mask_to(mask, W_shape, mode):
    """A {0,1} mask broadcastable onto W: [K, D] -> [K, 1, D] for flat; full shapes pass through."""
    m = check_mask(mask, "mask")
    K, D = W_shape[0], W_shape[-1]
    if m.shape == W_shape:
        return m
    if mode == "flat" and m.shape == (K, D):
        return m[:, None, :]                                   # same keep/prune for every token
    raise ValueError(f"mask must have shape {(K, D)} (label x node) or the weight's shape {W_shape}, "
                     f"got {m.shape}")


def init_readout(mode, T, D, K, rng, mask=None):
    """Fresh read-out weights, uniform(+-1/sqrt(fan_in)) as torch.nn.Linear [CODE].

    With a mask, row j uses the masked fan-in, bound 1/sqrt(#kept inputs of row j), and pruned entries are 0
    (Random_AFCC.py `initialize_weights_AFCC`) [CODE]. For seqpool also returns the attention pool
    (w [1, D], b [1]) ~ uniform(+-1/sqrt(D)) [INF]. Returns (W, pool_w, pool_b).
    """
    shape = readout_shape(mode, T, D, K)
    fan_in = T * D if mode == "flat" else D
    W = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    if mask is None:
        W *= np.float32(1.0 / np.sqrt(fan_in))
    else:
        m = np.broadcast_to(_expand_mask_to(mask, shape, mode), shape)
        kept = m.reshape(K, -1).sum(axis=1)                    # masked fan-in per output row
        bound = np.where(kept > 0, 1.0 / np.sqrt(np.maximum(kept, 1)), 0.0).astype(np.float32)
        W *= bound.reshape((K,) + (1,) * (len(shape) - 1))
        W *= m
    pool_w = pool_b = None
    if mode == "seqpool":
        b = np.float32(1.0 / np.sqrt(D))
        pool_w = rng.uniform(-b, b, size=(1, D)).astype(np.float32)
        pool_b = rng.uniform(-b, b, size=(1,)).astype(np.float32)
    return W, pool_w, pool_b


def _step_grads(Xb, yb, params, mode):
    """One mini-batch: forward, plain cross-entropy, backward. Returns (loss, logits [B, K], grads).

    Xb: A rows [B, T, D]; for mode "mean" the token averages Z [B, D] (train_readout pools them once: the
    average does not depend on the parameters). params["W^T"]: the read-out weight stored transposed,
    [T*D, K] (flat) or [D, K]: X @ W^T and X^T @ dlogits are the fast layouts of these skinny products
    (K = 10-100 outputs against T*D = 4096 inputs). The same products as with W [K, T*D]; BLAS may round
    them differently in the last bit (here: the flat read-out's bits are the same, the pooled ones' are not).
    """
    B = Xb.shape[0]
    Wt = params["W^T"]                                        # [T*D, K] or [D, K]
    if mode == "flat":
        X = Xb.reshape(B, -1)                                 # [B, T, D] -> [B, T*D]
    elif mode == "mean":
        X = Xb                                                # [B, D] = mean_t A[:, t, :]
    else:
        X, pcache = seqpool_forward(Xb, params["pool.weight"], params["pool.bias"])  # [B, D]
    logits = X @ Wt                                           # [B, K] = X W^T
    loss, cache = softmax_cross_entropy_forward(logits, yb)
    dlogits = softmax_cross_entropy_backward(1.0, cache)      # [B, K]
    grads = {"W^T": X.T @ dlogits}                            # [T*D or D, K] = (dlogits^T X)^T
    if mode == "seqpool":
        dZ = dlogits @ Wt.T                                   # [B, D] = dlogits W
        _, grads["pool.weight"], grads["pool.bias"] = seqpool_backward(dZ, pcache, need_dx=False)  # A is frozen
    return loss, logits, grads


def train_readout(A_train, y_train, num_classes, epochs=READOUT_EPOCHS, lr=0.01, momentum=0.975, nesterov=True,
                  weight_decay=1e-3, lr_decay=0.975, batch_size=100, seed=0, A_test=None, y_test=None,
                  progress=None, pooled=False, mode="flat", mask=None, W_init=None, pool_init=None):
    """Train a bias-free read-out on frozen activations with the AFCC recipe; returns a `Readout`.

        logits = read-out(A) (see `mode`),  loss = -(1/B) sum_k log softmax(logits_k)[y_k]
        SGD (torch.optim.SGD): g += wd w ; b = mu b + g ; w -= lr_e (g + mu b)   (Nesterov)
        lr_e = lr * lr_decay**(e + 1) for epoch e = 0, 1, ...                    [CODE]

    Inputs:
        A_train [N, T, D] float array or np.memmap (read one shuffled mini-batch at a time), y_train int [N].
        num_classes K. epochs (the authors use 200; a few suffice on cached features, report the number).
        lr, momentum, nesterov, weight_decay, lr_decay, batch_size: defaults = AFCC read-out recipe [CODE].
        seed: initialisation and shuffling (np.random.default_rng(seed)); same seed -> same result.
        A_test [M, T, D], y_test [M]: if given, test accuracy after every epoch.
        progress: None, True (print one line per epoch) or a callable(record dict) called per epoch with
            keys epoch, lr, train_loss, train_acc, test_acc (None without a test set).
        mode: "flat" [CODE] | "mean" [INF] | "seqpool" [INF] (module docstring). pooled=True is shorthand
            for mode="seqpool".
        mask: optional keep-mask [K, D] (label x node, applied to every token) or W's shape; re-applied
            after every optimiser step so pruned weights stay exactly 0 (AFCC train_func) [CODE].
        W_init: optional starting weights (copied, not modified), e.g. a trained read-out for masked
            retraining; pool_init = (w, b) likewise for seqpool. Without W_init and with a mask the init
            uses the masked fan-in (Random_AFCC) [CODE].
    Returns: Readout(W, mode, train_loss [E], train_acc [E], test_acc [E or 0], lr [E], pool_w, pool_b, mask).
    """
    mode = _resolve_mode(mode, pooled)
    _check_recipe(lr=lr, momentum=momentum, weight_decay=weight_decay, lr_decay=lr_decay)
    y_train, y_test = _check_training(A_train, y_train, num_classes, A_test, y_test, epochs, batch_size, lr_decay,
                                      progress)
    N, T, D = A_train.shape
    K, shape = num_classes, readout_shape(mode, T, D, num_classes)
    rng = np.random.default_rng(seed)
    start = _start(mode, T, D, K, rng, mask, W_init, pool_init)
    params = {"W^T": np.ascontiguousarray(start.W.reshape(K, -1).T)}   # [T*D or D, K]: W transposed (_step_grads)
    if mode == "seqpool":
        params["pool.weight"], params["pool.bias"] = start.pool_w, start.pool_b
    opt = SGD(lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, decay_all=True)
    if mode == "mean":                                       # the token average does not depend on the
        A_train = _pooled(A_train, mode)                     # parameters: Z [N, D], pooled once, and the steps
        A_test = None if A_test is None else _pooled(A_test, mode)   # read rows of Z (same numbers per row)
    buf = np.empty((min(batch_size, N),) + A_train.shape[1:], dtype=np.float32)  # reused batch buffer
    hist = {"train_loss": [], "train_acc": [], "test_acc": [], "lr": []}
    pool = (start.pool_w, start.pool_b) if mode == "seqpool" else None  # the arrays the optimiser updates in place

    with RowReader(A_train) as reader:
        for epoch in range(epochs):
            lr_e = lr * lr_decay ** (epoch + 1)                  # AFCC: lr *= 0.975 before every epoch
            perm = rng.permutation(N)
            loss_sum = correct = 0.0
            for s in range(0, N, batch_size):
                idx = np.sort(perm[s:s + batch_size])            # ascending rows: memmap-friendly, same batch
                Xb = reader.take(idx, buf)                        # [B, T, D] float32 ([B, D] for "mean")
                yb = y_train[idx]
                loss, logits, grads = _step_grads(Xb, yb, params, mode)
                opt.step(params, grads, lr=lr_e)
                if start.mask_t is not None:
                    np.multiply(params["W^T"], start.mask_t, out=params["W^T"])   # pruned weights back to exactly 0
                loss_sum += loss * len(idx)
                correct += float((logits.argmax(axis=1) == yb).sum())
            rec = {"epoch": epoch, "lr": lr_e, "train_loss": loss_sum / N, "train_acc": correct / N, "test_acc": None}
            if A_test is not None:
                rec["test_acc"] = _accuracy(A_test, y_test, params["W^T"].T, 1000, mode, pool)   # inputs checked once
            _record(rec, hist, progress, mode, epochs)
    W = np.ascontiguousarray(params["W^T"].T).reshape(shape)  # [K, T, D] or [K, D]
    return Readout(W=W, mode=mode, train_loss=np.asarray(hist["train_loss"]),
                   train_acc=np.asarray(hist["train_acc"]), test_acc=np.asarray(hist["test_acc"]),
                   lr=np.asarray(hist["lr"]), pool_w=start.pool_w, pool_b=start.pool_b,
                   mask=None if mask is None else np.asarray(mask).astype(bool))


@dataclass
class _Start:
    """Where a read-out's training starts: W [K, T, D] or [K, D] float32 (a fresh init, or a copy of W_init with
    pruned entries 0), the seqpool pool (or None), and the keep-mask in the transposed layout of W^T (or None)."""

    W: np.ndarray
    pool_w: np.ndarray | None
    pool_b: np.ndarray | None
    mask_t: np.ndarray | None


def _start(mode, T, D, K, rng, mask, W_init, pool_init) -> _Start:
    """The starting weights of train_readout (its docstring: mask, W_init, pool_init)."""
    shape = readout_shape(mode, T, D, K)
    m = None if mask is None else _expand_mask_to(mask, shape, mode)
    W, pool_w, pool_b = init_readout(mode, T, D, K, rng, mask)
    if W_init is not None:
        check_weight(np.asarray(W_init), mode, T, D, K)
        W = np.array(W_init, dtype=np.float32)              # a copy: the caller's array is not modified
        if m is not None:
            W *= m
    if pool_init is not None:
        if mode != "seqpool":
            raise ValueError("pool_init is only used with mode 'seqpool'")
        pool_w, pool_b = (np.array(p, dtype=np.float32) for p in pool_init)
        if pool_w.shape != (1, D) or pool_b.shape != (1,):
            raise ValueError(f"pool_init must be (w (1, {D}), b (1,)), got {pool_w.shape}, {pool_b.shape}")
    mt = None if m is None else np.ascontiguousarray(np.broadcast_to(m, W.shape).reshape(K, -1).T)  # as W^T
    return _Start(W, pool_w, pool_b, mt)


def _resolve_mode(mode, pooled):
    if pooled:
        if mode not in ("flat", "seqpool"):
            raise ValueError(f"pooled=True means mode='seqpool' but mode={mode!r} was given; pass only one")
        mode = "seqpool"
    check_mode(mode, with_pool=False)
    return mode


def _check_recipe(**recipe):
    """lr > 0, momentum, weight_decay and lr_decay >= 0: finite numbers (a NaN rate would train NaN weights)."""
    for name, v in recipe.items():
        if not (isinstance(v, (int, float, np.integer, np.floating)) and np.isfinite(v) and v >= 0) \
                or (name == "lr" and v == 0):
            raise ValueError(f"{name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}, got {v!r}")


def _check_training(A_train, y_train, num_classes, A_test, y_test, epochs, batch_size, lr_decay, progress):
    """train_readout's input checks; returns the checked (y_train, y_test)."""
    check_activations(A_train, "A_train")
    N, T, D = A_train.shape
    if N == 0:
        raise ValueError("train_readout: A_train has no images (N = 0)")
    y_train = check_labels(y_train, N, num_classes, "y_train")
    if (A_test is None) != (y_test is None):
        raise ValueError("give both A_test and y_test, or neither")
    if A_test is not None:
        check_activations(A_test, "A_test")
        if A_test.shape[1:] != (T, D):
            raise ValueError(f"A_test has tokens x nodes {A_test.shape[1:]}, A_train has {(T, D)}")
        y_test = check_labels(y_test, A_test.shape[0], num_classes, "y_test")
    if not (isinstance(epochs, (int, np.integer)) and epochs >= 0):
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not lr_decay > 0:
        raise ValueError(f"lr_decay must be > 0, got {lr_decay}")
    if progress is not None and progress is not True and not callable(progress):
        raise ValueError("progress must be None, True (print) or a callable taking one dict per epoch")
    return y_train, y_test


def _record(rec, hist, progress, mode, epochs):
    """One epoch's record into the history, and to `progress` (True: one printed line)."""
    if rec["test_acc"] is not None:
        hist["test_acc"].append(rec["test_acc"])
    for k in ("train_loss", "train_acc", "lr"):
        hist[k].append(rec[k])
    if progress is True:
        test = "" if rec["test_acc"] is None else f"  test acc {rec['test_acc']:.4f}"
        print(f"read-out [{mode}] epoch {rec['epoch'] + 1}/{epochs}  lr {rec['lr']:.5f}  "
              f"loss {rec['train_loss']:.4f}  train acc {rec['train_acc']:.4f}{test}", flush=True)
    elif progress is not None:
        progress(rec)


# ---------------------------------------------------------------------------------------------- reading rows
class RowReader:
    """Mini-batches of rows of A as float32. For a float32 np.memmap backed by a file (e.g. analysis.capture_disk),
    positioned reads (os.preadv, one per run of consecutive rows) into the reused buffer, so the file's pages stay
    in the page cache and do not pile up in the process's resident memory; other arrays: readout's _rows."""

    def __init__(self, A):
        self.A, self.fd = A, None
        if (isinstance(A, np.memmap) and A.dtype == np.float32 and A.flags.c_contiguous
                and getattr(A, "filename", None) and hasattr(os, "preadv")):
            self.fd = os.open(A.filename, os.O_RDONLY)
            self.row_bytes = int(np.prod(A.shape[1:])) * 4

    def take(self, idx, buf):
        if self.fd is None:
            return _rows(self.A, idx, buf)
        out = buf[: len(idx)]
        flat = out.reshape(len(idx), -1)
        starts = np.flatnonzero(np.diff(idx, prepend=-2) != 1)     # runs of consecutive rows (idx ascending)
        ends = np.append(starts[1:], len(idx))
        for a, b in zip(starts.tolist(), ends.tolist()):
            want = (b - a) * self.row_bytes
            got = os.preadv(self.fd, [memoryview(flat[a:b]).cast("B")], self.A.offset + int(idx[a]) * self.row_bytes)
            if got != want:
                raise OSError(f"short read from {self.A.filename}: {got} of {want} bytes (file truncated?)")
        return out

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
