"""Activations of any network in one file, and the SNP analysis run on them (`python -m minicct snp-arrays`).

The file (FEATURES.npz, written with np.savez or `write_features`):

    y_train        int [N_train]            labels of the training images (shared by every site)
    y_test         int [N_test]             labels of the test images
    train/<site>   float [N_train, T, D]    activations at <site> for the training images: T tokens (or spatial
                   or [N_train, D]          positions, or 1) x D nodes (channels / units); [N, D] means T = 1
    test/<site>    float [N_test, T, D]     the same site for the test images (same T and D)
                   or [N_test, D]
    class_names    str [K]                  optional; else K = num_classes, else max label + 1
    num_classes    int ()                   optional

<site> is any name without '/' (e.g. "tokens", "enc0.out", "block3", "fc1"); sites are analysed in file order.
minicct's own capture names ("tokens", "enc{e}.{mha_heads,mha_out,ff_hidden,out}") print as `snp` prints
them, so `snp-arrays` on minicct's activations gives exactly the numbers of `snp`. A convolutional feature map
[N, C, H, W] is stored as [N, H*W, C] (positions as tokens, channels as nodes): A.reshape(N, C, H*W).transpose(0, 2, 1).

    fs = read_features("features.npz")             # checks the layout, reads nothing big yet
    rep = analyse_features(fs, modes=("flat", "mean"), epochs=10)
    print(rep.format_table())
Shape legend: N images, T tokens, D nodes, K classes.
"""
from __future__ import annotations

import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["FeatureSet", "read_features", "write_features", "analyse_features", "head_analysis", "format_table",
           "FORMAT_HELP"]

FORMAT_HELP = (
    "FEATURES.npz holds y_train [N_train] and y_test [N_test] (integer labels), and per site <name>: "
    "train/<name> [N_train, T, D] and test/<name> [N_test, T, D] float activations (T tokens or positions, "
    "D nodes; [N, D] means T = 1; a conv map [N, C, H, W] goes in as [N, H*W, C]); optional class_names [K], "
    "num_classes. Write it with np.savez(path, **{'y_train': y, 'train/block1': A, ...}) or "
    "minicct.io.features.write_features.")


@dataclass
class FeatureSet:
    """A checked features file: site names (file order), labels, K, class names, and shapes; arrays are read
    per site by `arrays(name)`."""

    path: Path
    sites: list
    y_train: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list
    shapes: dict = field(default_factory=dict)      # site -> (T, D)

    def arrays(self, name):
        """(A_train [N_train, T, D], A_test [N_test, T, D]) of one site, float32 (a [N, D] site gets T = 1).
        Each member's declared size is checked before it is inflated; NaN or inf values raise, naming the array."""
        from .npz_read import open_npz, read_npy
        out = []
        with open_npz(self.path) as zf:
            for split in ("train", "test"):
                key = f"{split}/{name}"
                a = read_npy(zf, self.path, key)
                a = a[:, None, :] if a.ndim == 2 else a                       # [N, D] -> [N, 1, D]
                a = np.ascontiguousarray(a, dtype=np.float32)
                if not np.isfinite(a).all():
                    bad = int(a.size - np.count_nonzero(np.isfinite(a)))
                    raise _err(self.path, f"{key} holds {bad} NaN or inf values (of {a.size}); the network that "
                                          f"produced them diverged or overflowed float32; export finite activations")
                out.append(a)
        return tuple(out)


def _err(path, msg):
    return ValueError(f"{path}: {msg}\nExpected layout: {FORMAT_HELP}")


def read_features(path) -> FeatureSet:
    """Open and check a features file (layout in the module docstring). Labels are read; activations only
    their headers (shapes, dtypes). ValueError naming every problem's array otherwise."""
    from .npz_read import npy_header, open_npz, read_npy
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no features file at {path}")
    try:
        zf = open_npz(path)
    except ValueError as e:
        raise _err(path, str(e).split(": ", 1)[-1]) from e
    with zf:
        files = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        for k in ("y_train", "y_test"):
            if k not in files:
                raise _err(path, f"missing {k!r}; found {files[:12]}")
        y = {k: read_npy(zf, path, k) for k in ("y_train", "y_test")}
        for k, v in y.items():
            if v.ndim != 1 or not np.issubdtype(v.dtype, np.integer):
                raise _err(path, f"{k} must be integer labels [N], got {v.dtype} {v.shape}")
            if v.size == 0:
                raise _err(path, f"{k} is empty; the analysis needs labelled rows in both splits")
        sites = []
        for k in files:
            m = re.fullmatch(r"(train|test)/(.+)", k)
            if m and m.group(2) not in sites:
                sites.append(m.group(2))
        if not sites:
            raise _err(path, f"no activations: no 'train/<site>' / 'test/<site>' arrays among {files[:12]}")
        names = None
        if "class_names" in files:
            cn = read_npy(zf, path, "class_names")
            if cn.ndim != 1:
                raise _err(path, f"class_names must be a 1-d array of K names, got shape {cn.shape}")
            names = [str(c) for c in cn]
        if "num_classes" in files:
            nc = read_npy(zf, path, "num_classes")
            if nc.shape != () or not np.issubdtype(nc.dtype, np.integer):
                raise _err(path, f"num_classes must be one integer (np.savez(..., num_classes=10)), got "
                                 f"{nc.dtype} of shape {nc.shape}")
            K = int(nc)
        else:
            K = len(names) if names else int(max(y["y_train"].max(initial=-1), y["y_test"].max(initial=-1))) + 1
        if names is not None and len(names) != K:
            raise _err(path, f"class_names has {len(names)} names but num_classes is {K}")
        if K < 2:
            raise _err(path, f"{K} class(es): a read-out needs at least 2 classes (accuracy and SNR mean nothing "
                             f"with one); label the rows 0..K-1 with K >= 2")
        for k, v in y.items():
            if v.size and (v.min() < 0 or v.max() >= K):
                raise _err(path, f"{k} has labels {v.min()}..{v.max()}, expected 0..{K - 1}")
        shapes = {}
        for s in sites:
            got = {}
            for split in ("train", "test"):
                key = f"{split}/{s}"
                if key not in files:
                    raise _err(path, f"site {s!r} has no {key!r} array (every site needs train/ and test/)")
                shape, dtype, _, _ = npy_header(zf, path, key)
                n = len(y[f"y_{split}"])
                if len(shape) not in (2, 3) or shape[0] != n:
                    raise _err(path, f"{key} has shape {shape}; expected [{n}, T, D] or [{n}, D] "
                                     f"(one row per label in y_{split})")
                if not np.issubdtype(dtype, np.floating):
                    raise _err(path, f"{key} has dtype {dtype}; activations must be floating point")
                if 0 in shape[1:]:
                    raise _err(path, f"{key} has shape {shape}: no tokens or no nodes; every site needs T >= 1 "
                                     f"and D >= 1 (drop the site or export its activations)")
                got[split] = (1,) + tuple(shape[1:]) if len(shape) == 2 else tuple(shape[1:])
            if got["train"][-2:] != got["test"][-2:]:
                raise _err(path, f"site {s!r}: train is [N, {got['train'][-2]}, {got['train'][-1]}], test "
                                 f"[N, {got['test'][-2]}, {got['test'][-1]}]; T and D must match")
            shapes[s] = got["train"][-2:]
    return FeatureSet(path, sites, y["y_train"].astype(np.int64), y["y_test"].astype(np.int64), K,
                      names or [str(i) for i in range(K)], shapes)


def write_features(path, sites: dict, y_train, y_test, class_names=None) -> Path:
    """Write a features file atomically. sites: name -> (A_train [N_train, T, D] or [N_train, D], A_test)."""
    from .download import atomic_savez

    arrays = {"y_train": np.asarray(y_train, np.int64), "y_test": np.asarray(y_test, np.int64)}
    for name, (a_tr, a_te) in sites.items():
        if "/" in name or not name:
            raise ValueError(f"site names must be non-empty and without '/', got {name!r}")
        arrays[f"train/{name}"], arrays[f"test/{name}"] = np.asarray(a_tr), np.asarray(a_te)
    if class_names is not None:
        arrays["class_names"] = np.asarray([str(c) for c in class_names])
    return atomic_savez(path, **arrays)


def analyse_features(fs: FeatureSet, modes=("flat", "mean", "seqpool"), epochs=10, threshold=0.3, seed=0,
                     n_train=None, progress=print):
    """The SNP analysis (analysis.report.analyse_site: read-out, fields, clusters, noise, SNR, single-node
    predictions) of every site of a features file, for every read-out mode. Returns an SNPReport."""
    from ..analysis.report import SNPReport, analyse_site
    from ..sites import Site

    say = progress or (lambda *a, **k: None)
    t0 = time.time()
    results = []
    if n_train is not None and (not isinstance(n_train, (int, np.integer)) or n_train < 1
                                or n_train > len(fs.y_train)):
        raise ValueError(f"n_train must be an integer in 1..{len(fs.y_train)} (the training rows of {fs.path}), "
                         f"got {n_train!r}")
    y_tr, y_te = fs.y_train[:n_train], fs.y_test
    missing = np.flatnonzero(np.bincount(y_tr, minlength=fs.num_classes) == 0)
    if missing.size:
        names = [fs.class_names[i] for i in missing[:10]]
        raise ValueError(f"{fs.path}: {missing.size} of {fs.num_classes} classes have no training row"
                         f"{f' among the first {n_train}' if n_train else ''}: labels {missing[:10].tolist()} "
                         f"({', '.join(names)}){' ...' if missing.size > 10 else ''}; a read-out cannot learn a "
                         f"class it never sees: add rows of every class to y_train"
                         f"{' or raise --n-train' if n_train else ''}, or relabel to 0..K-1 without gaps")
    for i, name in enumerate(fs.sites):
        A_tr, A_te = fs.arrays(name)
        A_tr = A_tr[:n_train]
        site = Site.named(name, i)       # minicct capture names as `snp` shows them, others by file position
        for mode in modes:
            r = analyse_site(A_tr, y_tr, A_te, y_te, fs.num_classes, mode, epochs, threshold, seed, site)
            say(f"  {name:<16} {mode:>7} read-out: test acc {100 * r.accuracy:5.1f}%  "
                f"clusters/node {r.summary['mean_clusters_per_node']:.2f}  noise {r.summary['mean_noise']:.2f}  "
                f"SNR {r.summary['snr']:.2f}  ({r.seconds:.1f}s)", flush=True)
            results.append(r)
        del A_tr, A_te
    rep = SNPReport(results, list(fs.class_names))
    rep.seconds = time.time() - t0
    return rep


def _is_cct_name(name) -> bool:
    return name == "tokens" or re.fullmatch(r"enc\d+\.\w+", name) is not None


def format_table(rep) -> str:
    """The per-site table: as `snp` prints it when every site has a minicct capture name, else with the
    file's site names (in file order)."""
    if all(_is_cct_name(r.name) for r in rep.results):
        return rep.format_table()
    w = max(16, *(len(r.name) + 2 for r in rep.results))
    head = (f"{'site':<{w}}{'readout':>8}{'acc %':>7}{'clusters':>9}{'size':>6}{'labels':>7}"
            f"{'noise':>7}{'SNR':>7}{'1-node':>7}")
    lines = [head, "-" * len(head)]
    for r in rep.results:
        s = r.summary
        lines.append(f"{r.name:<{w}}{r.mode:>8}{100 * r.accuracy:7.1f}{s['mean_clusters_per_node']:9.2f}"
                     f"{s['mean_cluster_size']:6.2f}{s['mean_labels_in_clusters']:7.2f}"
                     f"{s['mean_noise']:7.2f}{s['snr']:7.2f}{100 * r.single['mean_accuracy']:7.1f}")
    return "\n".join(lines)


def head_analysis(rep, head_dim: int, n_shuffles=20, seed=0) -> list:
    """Head specialisation (analysis.heads) of every result whose D is a multiple of head_dim: one dict per
    (site, mode) with heads, counts c [h, K], SI, the shuffled-node control (mean, std) and labels per head."""
    from ..analysis.heads import head_label_counts, head_metrics, shuffled_control

    rows = []
    for r in rep.results:
        D = r.B.shape[0]
        if D % head_dim:
            continue
        c = head_label_counts(r.B, head_dim)
        m = head_metrics(c)
        ctrl = shuffled_control(r.B, head_dim, n_shuffles=n_shuffles, seed=seed)
        rows.append(dict(name=r.name, mode=r.mode, heads=D // head_dim, counts=c, si=m["si"], control=ctrl,
                         labels_per_head=m["labels_per_head"], mean_jaccard=m["mean_jaccard"]))
    return rows
