"""Experiments ON the model (not only on read-outs): per-label accuracy, ANDC pruning of the read-out and of
the encoders' FF output weights, and head ablation (docs/method.md sec. 8 and 9.5).

ANDC on a read-out [INF, docs/method.md sec. 8.2]: node n keeps its weights to label j iff j is in its diagonal set
D_n = {j : B_n[j, j] = 1} (andc.andc_mask); the pruned read-out is scored as it is and after a short masked
retraining (mask re-applied after every SGD step, AFCC train_func [CODE]), against a random mask with the
same number of labels per node (andc.random_mask_like, after Random_AFCC.py [CODE]).  -> `andc_readout_sweep`

ANDC inside an encoder [INF, docs/method.md sec. 8.6, AFCC's between-layer rule]:
    linear2.weight [D, F] maps FF hidden unit a to encoder-output node b;  keep W2[b, a]  iff  L_a & L_b != {}
with L_a the label set of hidden node a (flat read-out SNP of site enc{e}.ff_hidden) and L_b that of output
node b (site enc{e}.out). The whole model's test accuracy before and after (no retraining), and a random mask
keeping every output node's number of inputs.                                     -> `ff_pruning_experiment`

Head ablation [INF, docs/method.md sec. 9.5]: zero the columns of encoder e's output projection that read head g
(`ablate_head`, a parameter edit like the FF pruning) and measure the per-label accuracy drop, on the head's
designated labels against the others.
                                                                                 -> `head_ablation`
Evaluation shortcut: an intervention in encoder e leaves everything before it unchanged, so the residual
stream entering encoder e (`encoder_input`) can be computed once and only encoders e..L-1 and the classifier
head re-run (model.forward_from, batched by model.predict(start_encoder=e)); the same logits as the full
forward (tested).
Shape legend: N images, T tokens, D embedding / nodes, F FF hidden width, h heads, K classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import model as M
from .. import parallel
from ..datasets.base import to_model_input
from ..sites import Site
from ._validate import check_finite, check_labels
from .andc import andc_mask, ff_mask, masked_retrain, pruned_fraction, random_mask_like
from .clusters import node_labels
from .readout import READOUT_EPOCHS, readout_accuracy
from .snp import AFCC_THRESHOLD, node_fields, normalise_threshold


# ------------------------------------------------------------------------------------------- metrics
def per_label_accuracy(logits, y, num_classes):
    """Per-label accuracy acc [K] (float64): acc[j] = mean_{k : y_k = j} [argmax_i logits[k, i] == j].

    Inputs: logits [N, K], y int [N] in 0..K-1. A label without images gets nan (not 0: it was not measured).
    Ties in argmax go to the smallest label (np.argmax).
    """
    logits = np.asarray(logits)
    if logits.ndim != 2 or isinstance(num_classes, (int, np.integer)) and logits.shape[1] != num_classes:
        raise ValueError(f"logits must be [N, K] with K = {num_classes}, got shape {logits.shape}")
    y = check_labels(y, logits.shape[0], num_classes)
    check_finite(logits, "logits")
    correct = (logits.argmax(axis=1) == y).astype(np.float64)                 # [N]
    n = np.bincount(y, minlength=num_classes)                                  # images per label
    hits = np.bincount(y, weights=correct, minlength=num_classes)              # correct per label
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hits / np.maximum(n, 1), np.nan)


def _label_set(labels, num_classes, name="designated_labels"):
    """bool [K] from a bool vector [K] or an iterable of integer label indices."""
    arr = np.array(sorted(labels)) if isinstance(labels, (set, frozenset)) else np.asarray(labels)
    if arr.dtype == bool:
        if arr.shape != (num_classes,):
            raise ValueError(f"{name} as a bool vector must have shape ({num_classes},), got {arr.shape}")
        return arr
    if arr.size == 0:
        arr = arr.astype(np.int64).ravel()
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a bool vector [K] or a list of integer labels, got {arr!r}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"{name} must be labels in 0..{num_classes - 1}, got {sorted(arr.tolist())}")
    out = np.zeros(num_classes, dtype=bool)
    out[arr] = True
    return out


def designated_drop(drop, designated, n_perm=0, seed=0, return_null=False):
    """Mean accuracy drop on a head's designated labels vs the other labels, with a permutation p-value. [INF]

        gap = mean_{j in S} drop[j] - mean_{j not in S} drop[j]          (labels with nan drop are ignored)
        p   = (1 + #{random S' with |S'| = |S| : gap(S') >= gap}) / (1 + n_perm)   (one-sided; nan if n_perm=0)
    Inputs: drop [K] (per-label accuracy full - ablated), designated bool [K] or label list; the random label
    sets are drawn with np.random.default_rng(seed). Returns (mean_in, mean_out, gap, p); mean_in / mean_out
    are nan when S (or its complement) holds no measured label. With return_null=True also returns the null
    gaps [n_perm] (their sd is the scale of the minimum detectable effect, nulls.min_detectable_effect).
    """
    drop = np.asarray(drop, dtype=np.float64)
    if drop.ndim != 1:
        raise ValueError(f"drop must be a vector [K], got shape {drop.shape}")
    S = _label_set(designated, drop.shape[0])
    ok = np.isfinite(drop)
    d, S = drop[ok], S[ok]
    mean_in = float(d[S].mean()) if S.any() else float("nan")
    mean_out = float(d[~S].mean()) if (~S).any() else float("nan")
    gap = mean_in - mean_out
    if not (isinstance(n_perm, (int, np.integer)) and n_perm >= 0):
        raise ValueError(f"n_perm must be an integer >= 0, got {n_perm!r}")
    if n_perm == 0 or not np.isfinite(gap):
        return (mean_in, mean_out, gap, float("nan")) + ((np.zeros(0),) if return_null else ())
    rng = np.random.default_rng(seed)
    k, m = int(S.sum()), d.size
    perm = np.argsort(rng.random((n_perm, m)), axis=1)[:, :k]                 # [P, |S|] random label sets
    inside = np.zeros((n_perm, m), dtype=bool)
    inside[np.arange(n_perm)[:, None], perm] = True
    sum_in = (inside * d).sum(axis=1)
    gaps = sum_in / k - (d.sum() - sum_in) / (m - k)                           # [P]
    p = (1 + np.count_nonzero(gaps >= gap - 1e-12)) / (1 + n_perm)
    return (mean_in, mean_out, gap, float(p)) + ((gaps,) if return_null else ())


# --------------------------------------------------------------------------------- model evaluation
def _check_encoder(cfg, encoder, name="encoder"):
    if isinstance(encoder, bool) or not isinstance(encoder, (int, np.integer)) or not 0 <= encoder < cfg.num_layers:
        raise ValueError(f"{name} must be an encoder index in 0..{cfg.num_layers - 1} (counted from 0), "
                         f"got {encoder!r}")
    return int(encoder)


def model_logits(params, cfg, x_uint8, mean, std, batch_size=250):
    """Evaluation-mode logits [N, K] (float32) of uint8 images [N, S, S, 3] (model.predict, batch_size at a time)."""
    return parallel.predict(params, x_uint8, cfg, batch_size, transform=lambda b: to_model_input(b, mean, std))


def encoder_input(params, cfg, acts, encoder):
    """The residual stream [N, T, D] entering encoder `encoder`, from captured activations (eval mode).

        encoder 0: acts["tokens"] + positional embedding (embedding dropout is off in eval mode)
        encoder e > 0: acts[f"enc{e-1}.out"]
    acts: dict of captured activations (report.capture / model.predict(capture=...)). Feed the result to
    model.forward_from / model.predict(start_encoder=encoder) to run only the model's tail.
    """
    e = _check_encoder(cfg, encoder)
    key = Site.tokens().name if e == 0 else Site(e - 1, "out").name
    if key not in acts:
        raise ValueError(f"encoder_input({e}) needs the captured activation {key!r}; got {sorted(acts)}")
    z = acts[key]
    if e == 0 and cfg.positional_embedding != "none":
        z = z + params["classifier.positional_emb"]                            # [N, T, D] + [1, T, D]
    return z


def _eval_logits(params, cfg, data, start, z_test, batch_size=250):
    """Test-set logits: the tail from z_test (stream entering `start`) when given, else the full forward."""
    if z_test is not None:
        if len(z_test) != len(data.y_test):
            raise ValueError(f"z_test has {len(z_test)} images, the test set {len(data.y_test)}")
        return parallel.predict(params, z_test, cfg, batch_size, start_encoder=start)
    return model_logits(params, cfg, data.x_test, data.mean, data.std, batch_size)


# --------------------------------------------------------------------------------------- parameter edits
def ablate_head(params, encoder, head, num_heads):
    """A new params dict in which head `head` of encoder `encoder` (both from 0) is silenced. [INF]

        proj.weight[:, g*d:(g+1)*d] = 0       (classifier.blocks.{encoder}.self_attn.proj.weight [D, D])
    The output projection y = heads Wproj^T + b reads head g only through columns g*d..(g+1)*d, so zeroing
    them removes exactly head g's P v from the block (the bias stays). num_heads: h (d = D / h), cfg.num_heads:
    the parameters alone do not say how D is split into heads. Other entries are the same
    array objects (a shallow copy); the input is not modified.
    """
    key = f"classifier.blocks.{encoder}.self_attn.proj.weight"
    if isinstance(encoder, bool) or not isinstance(encoder, (int, np.integer)) or key not in params:
        n = sum(k.endswith(".self_attn.proj.weight") for k in params)
        raise ValueError(f"encoder must be an index in 0..{n - 1} (the params have {n} encoders), got {encoder!r}")
    W = params[key]                                                            # [D, D] (out, in)
    D = W.shape[1]
    if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)) or num_heads < 1 or D % num_heads:
        raise ValueError(f"num_heads must be a positive divisor of D = {D} (pass cfg.num_heads), got {num_heads!r}")
    if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or not 0 <= head < num_heads:
        raise ValueError(f"head must be in 0..{num_heads - 1}, got {head!r}")
    d = D // num_heads
    out = dict(params)
    out[key] = W.copy()
    out[key][:, head * d:(head + 1) * d] = 0                                   # head g's input columns
    return out


# --------------------------------------------------------------------------- ANDC on a read-out
@dataclass
class ReadoutPruning:
    """One ANDC read-out pruning at one threshold (see andc_readout_sweep). Accuracies are test accuracies.

    mask [K, D] bool (ANDC), random_mask [K, D] bool (same labels per node); pruned_fraction of both;
    acc_pruned / acc_random: W * mask with no retraining; acc_retrained / acc_random_retrained: after
    retrain_epochs of masked retraining (pruned weights stay exactly 0).
    """

    threshold: float
    rule: str
    mask: np.ndarray
    random_mask: np.ndarray
    pruned_fraction: float
    acc_pruned: float
    acc_random: float
    acc_retrained: float
    acc_random_retrained: float
    labels_per_node: float


def andc_readout_sweep(A_train, y_train, A_test, y_test, num_classes, W, thresholds=(AFCC_THRESHOLD,), retrain_epochs=1,
                       seed=0, rule="diagonal", min_cluster_size=1, fields_on="test", V=None, **train_kw):
    """ANDC pruning of a trained flat read-out W at several thresholds, with the random control. [INF + CODE]

    For each threshold th:  B = normalise_threshold(V, th)  (V = node fields of W, docs/method.md sec. 4.1)
        M[j, n] = B[n, j, j] (rule "diagonal", ANDC) or j in a cluster of n of size >= min_cluster_size
                  (rule "clusters", AFCC)                                            andc.andc_mask
        R = random mask with R.sum(0) == M.sum(0), labels spread evenly, seed       andc.random_mask_like
        scored: W * M, W * R with no retraining; then retrain_epochs of masked retraining from each
                (andc.masked_retrain, the AFCC read-out recipe; seed for the batch order).
    Inputs: A_train [N, T, D], y_train [N], A_test [M, T, D], y_test [M], W [K, T, D] the dense read-out;
    fields_on "test" computes V on the test images as the authors' Compute_Matrices_Clusters.py [CODE];
    "train" uses the training images so that the mask is not chosen with the images it is scored on [INF].
    V: precomputed node fields [D, K, K] (skips that step; must be of W on the fields_on images).
    train_kw: other train_readout arguments for the retraining (lr, momentum, weight_decay, ...).
    Returns a list of ReadoutPruning, one per threshold.
    """
    if fields_on not in ("test", "train"):
        raise ValueError(f"fields_on must be 'test' (authors) or 'train', got {fields_on!r}")
    W = np.asarray(W)
    if W.ndim != 3:
        raise ValueError(f"andc_readout_sweep needs a flat read-out W [K, T, D], got shape {W.shape}")
    if V is None:
        A_f, y_f = (A_test, y_test) if fields_on == "test" else (A_train, y_train)
        V = node_fields(A_f, y_f, W, num_classes)                              # [D, K, K]
    out = []
    for th in thresholds:
        B = normalise_threshold(V, th)                                         # [D, K, K] bool
        Mk = andc_mask(B, rule=rule, min_cluster_size=min_cluster_size)        # [K, D]
        R = random_mask_like(Mk, seed=seed)                                    # [K, D], same column sums
        acc = {}
        for name, mask in (("andc", Mk), ("random", R)):
            acc[name] = readout_accuracy(A_test, y_test, W * mask[:, None, :])
            ro = masked_retrain(A_train, y_train, W, mask, epochs=retrain_epochs, seed=seed, **train_kw)
            acc[name + "_retrained"] = ro.accuracy(A_test, y_test)
        out.append(ReadoutPruning(float(th), rule, Mk, R, pruned_fraction(Mk), acc["andc"], acc["random"],
                                  acc["andc_retrained"], acc["random_retrained"], float(Mk.sum(0).mean())))
    return out


# ------------------------------------------------------------------------ ANDC inside the encoders
def prune_linear2(params, encoder, M_keep):
    """A new params dict whose encoder's FF output weight is multiplied by a keep-mask. [INF]

        W2' = W2 * M,   W2 = params["classifier.blocks.{encoder}.linear2.weight"]  [D, F],  M [D, F] 0/1
    (andc.ff_mask gives M). The bias linear2.bias [D] is kept. The input dict and its arrays are not modified;
    every other entry of the new dict is the same array object (a shallow copy).
    """
    key = f"classifier.blocks.{encoder}.linear2.weight"
    if isinstance(encoder, bool) or not isinstance(encoder, (int, np.integer)) or key not in params:
        n = sum(k.endswith(".linear2.weight") for k in params)
        raise ValueError(f"encoder must be an index in 0..{n - 1} (the params have {n} encoders), got {encoder!r}")
    W2 = params[key]
    Mk = np.asarray(M_keep)
    if Mk.shape != W2.shape:
        raise ValueError(f"mask must have the shape of {key} {W2.shape} (D outputs x F hidden; andc.ff_mask), "
                         f"got {Mk.shape}")
    if Mk.dtype != bool and not np.isin(Mk, (0, 1)).all():
        raise ValueError("mask must be boolean or hold only 0 and 1")
    out = dict(params)
    out[key] = (W2 * Mk.astype(bool)).astype(W2.dtype)                         # [D, F] * [D, F]
    return out


@dataclass
class FFPruning:
    """Result of ff_pruning_experiment for one encoder (test accuracies of the whole model, no retraining).

    labels_hidden [F, K], labels_out [D, K]: node label sets; mask [D, F] (keep W2[b, a] iff L_a & L_b);
    random_mask [D, F] with the same number of kept inputs per output node b; pruned_fraction of both;
    acc_dense, acc_pruned, acc_random; readout_acc: test accuracy of the flat read-outs that gave the label
    sets ({} when B_hidden / B_out were passed in).
    """

    encoder: int
    labels_hidden: np.ndarray
    labels_out: np.ndarray
    mask: np.ndarray
    random_mask: np.ndarray
    pruned_fraction: float
    acc_dense: float
    acc_pruned: float
    acc_random: float
    readout_acc: dict = field(default_factory=dict)


def ff_pruning_experiment(params, cfg, data, encoder, epochs=READOUT_EPOCHS, threshold=AFCC_THRESHOLD, n_train=None, seed=0,
                          rule="diagonal", min_cluster_size=1, B_hidden=None, B_out=None, z_test=None,
                          acc_dense=None, batch_size=250):
    """ANDC pruning of encoder `encoder`'s FF output weights, scored on the whole model. [INF]

    1. label sets: flat read-out SNP (report.analyse_site: read-out of `epochs` epochs on the first n_train
       training images, fields on the test set, threshold) of sites enc{e}.ff_hidden -> B_hidden [F, K, K]
       and enc{e}.out -> B_out [D, K, K]; L = clusters.node_labels(B, rule, min_cluster_size).
       Skipped when B_hidden and B_out are given.
    2. M[b, a] = |L_hidden[a] & L_out[b]| > 0 (andc.ff_mask), pruned_fraction(M);
       random control: random_mask_like(M.T, seed).T keeps every output node's number of inputs.
    3. whole-model test accuracy with linear2 * M and * R (prune_linear2), against the dense model.
    z_test: optional residual stream entering the encoder for data.x_test (encoder_input); then only encoders
    e..L-1 are re-run. acc_dense: the dense model's test accuracy if already known.
    Returns an FFPruning.
    """
    e = _check_encoder(cfg, encoder)
    if data.num_classes != cfg.num_classes:
        raise ValueError(f"dataset {data.name} has {data.num_classes} classes, the model {cfg.num_classes}")
    K = cfg.num_classes
    readout_acc = {}
    if (B_hidden is None) != (B_out is None):
        raise ValueError("give both B_hidden and B_out (node matrices of ff_hidden and out), or neither")
    if B_hidden is None:
        from .report import analyse_site, capture                              # report imports the model
        names = [f"enc{e}.ff_hidden", f"enc{e}.out"]
        x_tr, y_tr = data.x_train[:n_train], data.y_train[:n_train]
        A_tr = capture(params, cfg, x_tr, data.mean, data.std, names, batch_size)
        A_te = capture(params, cfg, data.x_test, data.mean, data.std, names, batch_size)
        Bs = {}
        for name in names:
            r = analyse_site(A_tr[name], y_tr, A_te[name], data.y_test, K, "flat", epochs, threshold, seed,
                             name)
            Bs[name], readout_acc[name.split(".", 1)[1]] = r.B, r.accuracy
        B_hidden, B_out = Bs[names[0]], Bs[names[1]]
        del A_tr, A_te
    F, D = cfg.ff_dim, cfg.embedding_dim
    if np.shape(B_hidden) != (F, K, K) or np.shape(B_out) != (D, K, K):
        raise ValueError(f"B_hidden must be [F, K, K] = {(F, K, K)} and B_out [D, K, K] = {(D, K, K)}, "
                         f"got {np.shape(B_hidden)} and {np.shape(B_out)}")
    Lh = node_labels(B_hidden, rule, min_cluster_size)                         # [F, K]
    Lo = node_labels(B_out, rule, min_cluster_size)                            # [D, K]
    Mk = ff_mask(Lh, Lo)                                                       # [D, F]
    R = random_mask_like(Mk.T, seed=seed).T                                    # [F, D] degrees per b -> [D, F]
    y = data.y_test
    if acc_dense is None:
        acc_dense = float((_eval_logits(params, cfg, data, e, z_test, batch_size).argmax(1) == y).mean())
    acc = {}
    for name, mask in (("andc", Mk), ("random", R)):
        logits = _eval_logits(prune_linear2(params, e, mask), cfg, data, e, z_test, batch_size)
        acc[name] = float((logits.argmax(1) == y).mean())
    return FFPruning(e, Lh, Lo, Mk, R, pruned_fraction(Mk), float(acc_dense), acc["andc"], acc["random"],
                     readout_acc)


# ---------------------------------------------------------------------------------------- heads
@dataclass
class HeadAblation:
    """Result of head_ablation: per-label test accuracy [K] of the full and the ablated model, drop = full -
    ablated, the designated labels [K] bool, mean drops on them and on the others, gap = in - out, the
    permutation p-value of the gap (nan if not computed), and the overall accuracies."""

    encoder: int
    head: int
    per_label_full: np.ndarray
    per_label_ablated: np.ndarray
    drop: np.ndarray
    designated: np.ndarray
    mean_drop_designated: float
    mean_drop_others: float
    gap: float
    p_value: float
    acc_full: float
    acc_ablated: float


def head_ablation(params, cfg, data, encoder, head, designated_labels, full_logits=None, z_test=None,
                  n_perm=0, seed=0, batch_size=250):
    """Causal test of a head's expertise: silence head `head` of encoder `encoder`. [INF, docs/method.md sec. 9.5]

        params' = ablate_head(params, encoder, head)   (zeroes the proj.weight columns that read head g)
        drop[j] = acc_full[j] - acc_ablated[j]      (per_label_accuracy on the test set)
        mean drop on the designated labels S vs the others, gap and permutation p (designated_drop).
    designated_labels: bool [K] or label indices (e.g. heads.designated_labels(c)[head]).
    full_logits: the unablated model's test logits [N, K] if already computed; z_test: the residual stream
    entering `encoder` for data.x_test (encoder_input), so only encoders e..L-1 re-run.
    Returns a HeadAblation.
    """
    e = _check_encoder(cfg, encoder)
    if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or not 0 <= head < cfg.num_heads:
        raise ValueError(f"head must be in 0..{cfg.num_heads - 1}, got {head!r}")
    K = cfg.num_classes
    S = _label_set(designated_labels, K)
    y = data.y_test
    if full_logits is None:
        full_logits = _eval_logits(params, cfg, data, e, z_test, batch_size)
    full_logits = np.asarray(full_logits)
    if full_logits.shape != (len(y), K):
        raise ValueError(f"full_logits must be [N_test, K] = {(len(y), K)}, got {full_logits.shape}")
    abl = _eval_logits(ablate_head(params, e, head, cfg.num_heads), cfg, data, e, z_test, batch_size)
    full_acc, abl_acc = per_label_accuracy(full_logits, y, K), per_label_accuracy(abl, y, K)
    drop = full_acc - abl_acc
    mean_in, mean_out, gap, p = designated_drop(drop, S, n_perm, seed)
    return HeadAblation(e, int(head), full_acc, abl_acc, drop, S, mean_in, mean_out, gap, p,
                        float((full_logits.argmax(1) == y).mean()), float((abl.argmax(1) == y).mean()))
