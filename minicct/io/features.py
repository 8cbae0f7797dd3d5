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

    layout         str ()                   how the 3-D arrays are laid out: "NTD" ([N, T, D], tokens x nodes) or
                                            "NCT" ([N, C, T], channels first, as out.flatten(2) of a conv map);
                   or layout/<site> str ()  the same for one site. Required when a site is 3-D (write_features
                                            records it; else pass layout= / --layout), because [N, C, H*W] read as
                                            [N, T, D] would silently take positions for nodes.
    a 4-D site [N, C, H, W] (what a forward hook on a conv layer returns; layout "NCHW", the default for 4-D,
    or "NHWC" channels last) is read as [N, T = H*W, D = C]: positions as tokens, channels as nodes.

<site> is any name without '/' (e.g. "tokens", "enc0.out", "block3", "fc1"); sites are analysed in file order.
minicct's own capture names ("tokens", "enc{e}.{mha_heads,mha_out,ff_hidden,out}") print as `snp` prints
them, so `snp-arrays` on minicct's activations gives exactly the numbers of `snp`. From PyTorch, the module
minicct.capture_torch writes this file from a model and module names (hooks, batching, channel order, class tokens).

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
           "FORMAT_HELP", "LAYOUTS", "to_ntd"]

FORMAT_HELP = (
    "FEATURES.npz holds y_train [N_train] and y_test [N_test] (integer labels), and per site <name>: "
    "train/<name> [N_train, T, D] and test/<name> [N_test, T, D] float activations (T tokens or positions, "
    "D nodes; [N, D] means T = 1; a conv map [N, C, H, W] is read as [N, H*W, C]); the layout of 3-D arrays "
    "must be stated: an array 'layout' = 'NTD' or 'NCT' (channels first, e.g. out.flatten(2)) in the file, or "
    "--layout; optional class_names [K], num_classes. Write it with minicct.io.features.write_features (records "
    "the layout), minicct.capture_torch.capture_features (from a PyTorch model) or np.savez(path, layout='NTD', "
    "**{'y_train': y, 'train/block1': A, ...}).")

LAYOUTS = {"NTD": 3, "NCT": 3, "NCHW": 4, "NHWC": 4}


def to_ntd(a, layout: str):
    """An activation array in `layout` (ND for 2-D, NTD, NCT, NCHW, NHWC) as [N, T, D] (2-D: [N, 1, D])."""
    a = np.asarray(a)
    if a.ndim == 2:
        return a[:, None, :]
    if layout == "NTD":
        return a
    if layout == "NCT":
        return a.transpose(0, 2, 1)
    if layout == "NCHW":
        return a.reshape(a.shape[0], a.shape[1], -1).transpose(0, 2, 1)
    if layout == "NHWC":
        return a.reshape(a.shape[0], -1, a.shape[-1])
    raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


def _td(shape, layout):
    """(T, D) of an array of `shape` in `layout`."""
    if len(shape) == 2:
        return (1, int(shape[1]))
    if layout in ("NTD", "NHWC"):
        return (int(np.prod(shape[1:-1])), int(shape[-1]))
    return (int(np.prod(shape[2:])), int(shape[1]))


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
    layouts: dict = field(default_factory=dict)     # site -> layout as stored ("ND", "NTD", "NCT", "NCHW", "NHWC")

    def arrays(self, name):
        """(A_train [N_train, T, D], A_test [N_test, T, D]) of one site, float32 (a [N, D] site gets T = 1;
        NCT, NCHW and NHWC sites are transposed to [N, T, D])."""
        from .npz_read import open_npz, read_npy
        out = []
        with open_npz(self.path) as zf:                  # each member's declared size checked before inflating
            for split in ("train", "test"):
                key = f"{split}/{name}"
                a = np.ascontiguousarray(to_ntd(read_npy(zf, self.path, key), self.layouts.get(name, "NTD")),
                                         dtype=np.float32)
                if not np.isfinite(a).all():
                    bad = int(a.size - np.count_nonzero(np.isfinite(a)))
                    raise _err(self.path, f"{key} holds {bad} NaN or inf values (of {a.size}); the network that "
                                          f"produced them diverged or overflowed float32; export finite activations")
                out.append(a)
        return tuple(out)


def _err(path, msg):
    return ValueError(f"{path}: {msg}\nExpected layout: {FORMAT_HELP}")




def _layout_entry(zf, key, path):
    from .npz_read import read_npy
    v = np.asarray(read_npy(zf, path, key))
    if v.dtype.kind != "U" or v.ndim != 0 or str(v) not in LAYOUTS:
        raise _err(path, f"{key!r} must be one string, one of {', '.join(LAYOUTS)}; got {v!r}")
    return str(v)


def read_features(path, layout: str | None = None) -> FeatureSet:
    """Open and check a features file (layout in the module docstring). Labels are read; activations only
    their headers (shapes, dtypes). ValueError naming every problem's array otherwise.

    layout: the layout of the sites whose file does not record one ("NTD" or "NCT" for 3-D arrays, "NCHW" or
    "NHWC" for 4-D); a recorded layout that differs is an error. A 3-D site with no layout anywhere is refused."""
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
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
            m = re.fullmatch(r"(train|test)/([^/]+)", k)
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
        file_layout = _layout_entry(zf, "layout", path) if "layout" in files else None
        shapes, layouts = {}, {}
        for s in sites:
            got = {}
            for split in ("train", "test"):
                key = f"{split}/{s}"
                if key not in files:
                    raise _err(path, f"site {s!r} has no {key!r} array (every site needs train/ and test/)")
                shape, dtype, _, _ = npy_header(zf, path, key)
                n = len(y[f"y_{split}"])
                if len(shape) not in (2, 3, 4) or shape[0] != n:
                    raise _err(path, f"{key} has shape {shape}; expected [{n}, T, D], [{n}, D] or a conv map "
                                     f"[{n}, C, H, W] (one row per label in y_{split})")
                if not np.issubdtype(dtype, np.floating):
                    raise _err(path, f"{key} has dtype {dtype}; activations must be floating point")
                if 0 in tuple(shape)[1:]:
                    raise _err(path, f"{key} has shape {tuple(shape)}: no tokens or no nodes; every site needs "
                                     f"T >= 1 and D >= 1 (drop the site or export its activations)")
                got[split] = tuple(shape)
            nd = len(got["train"])
            if len(got["test"]) != nd:
                raise _err(path, f"site {s!r}: train is {got['train']}, test {got['test']}; same rank needed")
            recorded = _layout_entry(zf, f"layout/{s}", path) if f"layout/{s}" in files else (
                file_layout if file_layout is not None and LAYOUTS[file_layout] == nd else None)
            if recorded is not None and layout is not None and LAYOUTS[layout] == nd and layout != recorded:
                raise _err(path, f"site {s!r} is recorded as {recorded} in the file, but layout {layout} was given")
            lay = "ND" if nd == 2 else recorded or (layout if layout is not None and LAYOUTS[layout] == nd
                                                      else ("NCHW" if nd == 4 else None))
            if lay is None:
                raise ValueError(
                    f"{path}: site {s!r} (train/{s}) is 3-D {got['train']} and the file does not say its layout: [N, T, D] "
                    f"(tokens x nodes, e.g. a transformer block's output) or [N, C, T] (channels first, e.g. a "
                    f"conv map flattened with out.flatten(2))? Read as the wrong one, positions become nodes "
                    f"silently. State it: --layout NTD or --layout NCT (python -m minicct snp-arrays), "
                    f"read_features(path, layout='NTD'), or store it in the file: np.savez(..., layout='NTD') "
                    f"(write_features and minicct.capture_torch record it)")
            td = {sp: _td(got[sp], lay) for sp in ("train", "test")}
            if td["train"] != td["test"]:
                raise _err(path, f"site {s!r}: train is [N, {td['train'][0]}, {td['train'][1]}], test "
                                 f"[N, {td['test'][0]}, {td['test'][1]}] as [N, T, D] ({lay}); T and D must match")
            shapes[s], layouts[s] = td["train"], lay
    return FeatureSet(path, sites, y["y_train"].astype(np.int64), y["y_test"].astype(np.int64), K,
                      names or [str(i) for i in range(K)], shapes, layouts)


def write_features(path, sites: dict, y_train, y_test, class_names=None, layout="NTD") -> Path:
    """Write a features file atomically, every site as [N, T, D] (or [N, D]), with layout 'NTD' recorded.

    sites: name -> (A_train, A_test), each [N, D], [N, T, D], or a conv map [N, C, H, W] (converted to
    [N, H*W, C]). layout: how the given 3-D arrays are laid out, "NTD" (default) or "NCT" (channels first,
    transposed here); a dict name -> layout sets it per site; 4-D arrays are "NCHW" unless "NHWC" is given."""
    from .download import atomic_savez

    arrays = {"y_train": np.asarray(y_train, np.int64), "y_test": np.asarray(y_test, np.int64),
              "layout": np.array("NTD")}
    for name, (a_tr, a_te) in sites.items():
        if "/" in name or not name:
            raise ValueError(f"site names must be non-empty and without '/', got {name!r}")
        lay = layout.get(name, "NTD") if isinstance(layout, dict) else layout
        if lay not in LAYOUTS:
            raise ValueError(f"site {name!r}: layout must be one of {', '.join(LAYOUTS)}, got {lay!r}")
        conv = []
        for a in (a_tr, a_te):
            a = np.asarray(a)
            if a.ndim not in (2, 3, 4):
                raise ValueError(f"site {name!r}: activations must be [N, D], [N, T, D] or [N, C, H, W], got "
                                 f"shape {a.shape}")
            use = lay if LAYOUTS[lay] == a.ndim else ("NCHW" if a.ndim == 4 else "NTD")
            conv.append(to_ntd(a, use) if a.ndim > 2 else a)
        arrays[f"train/{name}"], arrays[f"test/{name}"] = conv
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
