"""Figures (matplotlib, Agg backend, saved as PNG). Every function returns the path it wrote."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .parallel import run_forked  # noqa: E402


def _save(fig, path):
    """Through the atomic writer: a kill or a full disk leaves the previous figure (or none), never a torn one."""
    from .io.atomic import atomic_write
    path = Path(path)
    try:
        atomic_write(path, lambda f: fig.savefig(f, format=path.suffix[1:].lower() or "png", dpi=110,
                                                 bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def _short(names, n=14):
    return [s if len(s) <= n else s[:n - 1] + "." for s in names]


def _encoder_axis(ax, depths):
    """x axis of a plot along the model: 'tokenizer', then 'enc 1' .. 'enc L' (the lessons' numbering)."""
    ax.set_xticks(depths)
    ax.set_xticklabels(["tokenizer" if d == 0 else f"enc {d}" for d in depths])
    ax.set_xlabel("position along the model")


def pick_node(result) -> int:
    """A telling node of a SiteAnalysis: most labels in multi-label clusters, then the highest signal."""
    st = result.stats
    multi = np.array([sum(s for s in sizes if s >= 2) for sizes in st.cluster_sizes])
    return int(np.lexsort((st.signal, multi))[-1])


def cluster_order(clusters, K):
    """Label order that puts the node's clusters first as diagonal blocks (largest first), then the rest."""
    order = [l for c in sorted(clusters, key=len, reverse=True) for l in c]
    return order + [l for l in range(K) if l not in order]


def plot_node_fields(V_n, class_names, path, title="node fields"):
    """Raw field matrix V_n [K, K] of one node: rows = true label, columns = output label."""
    K = V_n.shape[0]
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    lim = np.abs(V_n).max() or 1.0
    im = ax.imshow(V_n, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(K), _short(class_names), rotation=90, fontsize=6)
    ax.set_yticks(range(K), _short(class_names), fontsize=6)
    ax.set_xlabel("output label j")
    ax.set_ylabel("true label i")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8, label="mean field")
    return _save(fig, path)


def plot_node_clusters(B_n, clusters, class_names, path, title="thresholded, clusters first"):
    """Thresholded matrix B_n [K, K] with labels reordered so the node's clusters are diagonal blocks."""
    K = B_n.shape[0]
    order = cluster_order(clusters, K)
    Bo = np.asarray(B_n, dtype=float)[np.ix_(order, order)]
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.imshow(Bo, cmap="Greys", vmin=0, vmax=1)
    start = 0
    for c in sorted(clusters, key=len, reverse=True):
        ax.add_patch(plt.Rectangle((start - 0.5, start - 0.5), len(c), len(c), fill=False, ec="tab:red", lw=1.5))
        start += len(c)
    names = [class_names[i] for i in order]
    ax.set_xticks(range(K), _short(names), rotation=90, fontsize=6)
    ax.set_yticks(range(K), _short(names), fontsize=6)
    ax.set_xlabel("output label j")
    ax.set_ylabel("true label i")
    ax.set_title(title)
    return _save(fig, path)


def plot_along_encoders(report, path, site=None):
    """Read-out accuracy, noise per node and SNR along the encoders, one line per (site, read-out mode)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    keys = sorted({(None if r.site.is_tokens else r.part, r.mode) for r in report.results},
                  key=lambda k: (str(k[0]), k[1]))
    for site_k, mode in keys:
        if site_k is None or (site is not None and site_k != site):
            continue
        rs = [r for r in report.results if r.mode == mode and (r.part == site_k or r.site.is_tokens)]
        rs.sort(key=lambda r: r.depth)
        x = [r.depth for r in rs]
        label = f"{site_k} / {mode}"
        axes[0].plot(x, [100 * r.accuracy for r in rs], "o-", label=label)
        axes[1].plot(x, [r.summary["mean_noise"] for r in rs], "o-", label=label)
        axes[2].plot(x, [r.summary["snr"] for r in rs], "o-", label=label)
    for ax, t in zip(axes, ("read-out test accuracy (%)", "noise per node", "SNR = <S>/<noise>")):
        ax.set_title(t)
        _encoder_axis(ax, sorted({r.depth for r in report.results}))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def draw_null_band(ax, x, summaries, color, label=None, scale=1.0):
    """The label-permutation null of a curve: its mean dashed and its 95 % interval as a hatched band, in the
    curve's colour. summaries: one Summary (or its dict: mean, lo, hi) per x."""
    get = lambda s, k: (s.get(k) if isinstance(s, dict) else getattr(s, k))   # noqa: E731
    val = lambda k: np.array([np.nan if get(s, k) is None else get(s, k) for s in summaries], dtype=float) * scale
    x = np.asarray(x)
    m, lo, hi = val("mean"), val("lo"), val("hi")
    ax.plot(x, m, ls="--", lw=1, color=color, label=label)
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        ax.fill_between(x[ok], lo[ok], hi[ok], facecolor="none", edgecolor=color, hatch="///", lw=0, alpha=0.5)


ALONG = (("accuracy", "read-out test accuracy (%)", 100), ("noise", "noise per node", 1), ("snr", "SNR = <S>/<noise>", 1))


def plot_along_encoders_sweep(sweep, path, quantities=ALONG, title=None):
    """Quantities along the encoders from a nulls.NullSweep: for every (site, read-out mode) the mean over the
    read-out seeds with its 95 % interval (solid, shaded), and the label-permutation null (dashed, hatched band:
    mean and 95 % interval, nulls.compare_to_null) -- what the tables print. quantities: (quantity, title,
    scale) triples. Sites are grouped by their part (out, mha_heads, ...); the tokenizer starts every line."""
    from .sites import Site
    sites = [Site.named(n, i) for i, n in enumerate(sweep.names)]
    external = any(s.external for s in sites)            # another network's sites: one line, in file order
    parts = []
    for s in sites:
        if not external and not s.is_tokens and s.part not in parts:
            parts.append(s.part)
    fig, axes = plt.subplots(1, len(quantities), figsize=(4.4 * len(quantities), 3.8), squeeze=False)
    S = len(sweep.seeds)
    for part in parts or [None]:
        idx = [i for i, s in enumerate(sites) if part is None or s.is_tokens or s.part == part]
        x = np.array(idx if external else [sites[i].depth for i in idx])
        for mode in sweep.modes:
            for ax, (q, _, scale) in zip(axes[0], quantities):
                cmp = sweep.compare(mode, q)
                m = np.array([cmp[i]["value"].mean for i in idx]) * scale
                lo = np.array([cmp[i]["value"].lo for i in idx]) * scale
                hi = np.array([cmp[i]["value"].hi for i in idx]) * scale
                line, = ax.plot(x, m, "o-", label=f"{part} / {mode}" if part else mode)
                ok = np.isfinite(lo) & np.isfinite(hi)
                if ok.any():
                    ax.fill_between(x[ok], lo[ok], hi[ok], alpha=0.2, color=line.get_color())
                if sweep.draws:
                    draw_null_band(ax, x, [cmp[i]["null"] for i in idx], line.get_color(),
                                   f"{part + ' / ' if part else ''}{mode}, shuffled labels", scale)
    ticks = sorted({i if external else s.depth for i, s in enumerate(sites)})
    for ax, (_, t, _) in zip(axes[0], quantities):
        ax.set_title(t)
        if external:
            ax.set_xticks(ticks)
            ax.set_xlabel("site (file order)")
        else:
            _encoder_axis(ax, ticks)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(title or f"mean [95 % interval] over {S} read-out seed(s); dashed, hatched: label-permutation null "
                 f"({sweep.draws} draw(s) per seed)", fontsize=9)
    return _save(fig, path)


def plot_cluster_sizes(report, path, mode="flat"):
    """Cluster-size histograms, one bar group per site of the given read-out mode."""
    rs = [r for r in report.results if r.mode == mode]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / max(len(rs), 1)
    for k, r in enumerate(rs):
        h = np.asarray(r.summary["cluster_size_hist"], dtype=float)
        sizes = np.arange(len(h))
        keep = sizes >= 1
        lab = r.site.label(short=True)
        ax.bar(sizes[keep] + k * width, h[keep] / max(r.summary["n_nodes"], 1), width, label=lab)
    ax.set_xlabel("cluster size (labels)")
    ax.set_ylabel("clusters per node")
    ax.set_xlim(0.5, max(6, max((np.flatnonzero(r.summary['cluster_size_hist']).max(initial=1) for r in rs),
                                default=1) + 1.5))
    ax.legend(fontsize=7)
    ax.set_title(f"cluster sizes ({mode} read-out)")
    return _save(fig, path)


def snp_figures(report, out_dir, mode="flat", sweep=None):
    """The standard SNP figures of a report: one node's raw and clustered matrices (last encoder), the
    progression along the encoders, and the cluster-size histograms. Returns the paths.
    sweep: a nulls.NullSweep of the same sites; then the progression shows its mean over seeds with the 95 %
    interval and the label-permutation null (plot_along_encoders_sweep) instead of the report's one seed."""
    out_dir = Path(out_dir)
    last = [r for r in report.results if r.mode == mode]
    if not last:
        last = report.results
    r = max(last, key=lambda r: (r.depth, r.part == "out"))
    n = pick_node(r)
    where = r.site.label()
    figures = [
        lambda: plot_node_fields(r.V[n], report.class_names, out_dir / "node_fields.png",
                                 f"{where}, node {n}: mean field V[i, j]"),
        lambda: plot_node_clusters(r.B[n], r.stats.clusters[n], report.class_names, out_dir / "node_clusters.png",
                                   f"{where}, node {n}: V/max > threshold, clusters first"),
        (lambda: plot_along_encoders(report, out_dir / "along_encoders.png")) if sweep is None else
        (lambda: plot_along_encoders_sweep(sweep, out_dir / "along_encoders.png")),
        lambda: plot_cluster_sizes(report, out_dir / "cluster_sizes.png", mode),
    ]
    # independent figures, drawn side by side on forked processes; one after the other where fork is not
    # available (pyplot is not thread-safe)
    return run_forked(lambda draw: draw(), figures, fallback="serial")


def plot_history(history, path, title="training"):
    """Loss and accuracy per epoch of a train.loop.History."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(history.epoch, history.train_loss, "o-", label="train (smoothed CE)")
    a.plot(history.epoch, history.test_loss, "o-", label="test")
    a.set_xlabel("epoch")
    a.set_title("loss")
    a.legend()
    b.plot(history.epoch, 100 * np.array(history.train_acc), "o-", label="train")
    b.plot(history.epoch, 100 * np.array(history.test_acc), "o-", label="test")
    b.set_xlabel("epoch")
    b.set_title("accuracy (%)")
    b.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def plot_accuracy_vs_pruned(curves, path, dense_acc=None, chance=None, title="accuracy against pruned fraction",
                            dense_label="dense"):
    """Accuracy (%) against the pruned fraction of weights, one line per curve.

    curves: {label: (pruned fractions [P], accuracies [P] in 0..1)}; labels containing "random" are dashed
    (the controls); labels with the same text after the first ", " share a colour (e.g. "ANDC, retrained"
    and "random, retrained"). dense_acc: the unpruned accuracy (solid black line); chance: 1/K (dotted).
    """
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    colours = {}
    for label, (frac, acc) in curves.items():
        frac, acc = np.asarray(frac, dtype=float), np.asarray(acc, dtype=float)
        order = np.argsort(frac)
        colour = colours.setdefault(label.split(", ", 1)[-1], f"C{len(colours)}")
        ax.plot(100 * frac[order], 100 * acc[order], "s--" if "random" in label else "o-", color=colour,
                label=label)
    if dense_acc is not None:
        ax.axhline(100 * dense_acc, color="k", lw=1, label=dense_label)
    if chance is not None:
        ax.axhline(100 * chance, color="grey", lw=1, ls=":", label="chance")
    ax.set_xlabel("pruned fraction of the weights (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_head_label_sets(counts, class_names, path, designated=None, titles=None,
                         title="labels of each head's nodes"):
    """Heatmaps of head label counts, one panel per encoder: rows = heads, columns = labels.

    counts: list of [h, K] arrays c[h, j] = nodes of head h with label j (heads.head_label_counts); the colour
    is the head's share c[h, j] / sum_h c[h, j] of the label (0..1), the number in each cell is the count.
    designated: optional list of bool [h, K] (heads.designated_labels), framed in red. titles: panel titles.
    """
    n = len(counts)
    K = np.asarray(counts[0]).shape[1]
    fig, axes = plt.subplots(n, 1, figsize=(max(7.0, 0.42 * K + 1.5), 1.0 + 0.9 * sum(np.shape(c)[0] for c in counts)),
                             squeeze=False)
    im = None
    for k, (ax, c) in enumerate(zip(axes[:, 0], counts)):
        c = np.asarray(c, dtype=float)
        tot = c.sum(axis=0, keepdims=True)
        share = np.divide(c, tot, out=np.zeros_like(c), where=tot > 0)
        im = ax.imshow(share, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for (hh, j), v in np.ndenumerate(c):
            ax.text(j, hh, f"{int(v)}", ha="center", va="center", fontsize=6,
                    color="black" if share[hh, j] > 0.6 else "white")
        if designated is not None:
            for hh, j in zip(*np.nonzero(np.asarray(designated[k]))):
                ax.add_patch(plt.Rectangle((j - 0.4, hh - 0.4), 0.8, 0.8, fill=False, ec="tab:red", lw=1.6))
        ax.set_yticks(range(c.shape[0]), [f"head {hh}" for hh in range(c.shape[0])], fontsize=7)
        ax.set_xticks(range(K), _short(class_names) if k == n - 1 else [""] * K, rotation=90, fontsize=6)
        ax.set_title(titles[k] if titles else f"encoder {k + 1}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.8, label="head's share of the label's nodes")
    return _save(fig, path)
