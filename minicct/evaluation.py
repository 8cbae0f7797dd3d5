"""Test-set metrics of a classifier from its logits: loss, top-1, top-5, per-class accuracy, confusion matrix,
and the confusion-matrix figure (`python -m minicct evaluate` prints and writes these).

    m = metrics(logits, y, K)       # dict: loss, top1, top5, per_class [K], support [K], confusion [K, K]
    print(format_metrics(m, class_names))
    plot_confusion(m["confusion"], class_names, "confusion.png")
Shape legend: N images, K classes. confusion[i, j] = images of true class i predicted as j (rows sum to support).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["metrics", "format_metrics", "plot_confusion", "unique_labels"]


def metrics(logits, y, num_classes: int) -> dict:
    """Loss (mean cross-entropy), top-1, top-k (k = min(5, K)), per-class accuracy, support and confusion."""
    logits = np.asarray(logits, np.float64)
    y = np.asarray(y, np.int64)
    K = int(num_classes)
    if logits.ndim != 2 or logits.shape != (len(y), K):
        raise ValueError(f"logits must be [N, K] = [{len(y)}, {K}], got {logits.shape}")
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    n = max(len(y), 1)
    pred = logits.argmax(1)
    k = min(5, K)
    topk = np.argpartition(-logits, k - 1, axis=1)[:, :k] if len(y) else np.zeros((0, k), np.int64)
    conf = np.bincount(np.asarray(y, np.int64) * K + pred, minlength=K * K).reshape(K, K)   # [true, predicted]
    support = conf.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(conf) / np.maximum(support, 1), np.nan)
    return {"n": int(len(y)), "loss": float(-logp[np.arange(len(y)), y].sum() / n),
            "top1": float((pred == y).sum() / n), "k": k, "topk": float((topk == y[:, None]).any(1).sum() / n),
            "per_class": per_class, "support": support, "confusion": conf}


def unique_labels(names, width: int = 14) -> list:
    """Class names shortened to `width` characters, kept distinct: a name whose cut form collides with
    another's keeps its end ("aquarium_fi…h_2") so that no two ticks read the same."""
    names = [str(n) for n in names]
    cut = [n if len(n) <= width else n[:width - 1] + "…" for n in names]
    if len(set(cut)) == len(cut):
        return cut
    out = []
    for n, c in zip(names, cut):
        if cut.count(c) > 1 and len(n) > width:
            tail = max(3, width // 2 - 1)
            c = n[:width - tail - 1] + "…" + n[-tail:]
        out.append(c)
    seen = {}
    for i, c in enumerate(out):                     # still equal (same start and end): number them
        if out.count(c) > 1:
            seen[c] = seen.get(c, 0) + 1
            out[i] = f"{c}#{seen[c]}"
    return out


def format_metrics(m: dict, class_names, max_rows: int = 20) -> str:
    """Top-1 / top-k lines and per-class accuracy (all classes up to `max_rows`, else the 5 lowest and highest)."""
    lines = [f"top-1 accuracy {100 * m['top1']:.2f}%, top-{m['k']} accuracy {100 * m['topk']:.2f}%, "
             f"loss {m['loss']:.4f} ({m['n']} images)"]
    acc, sup = m["per_class"], m["support"]
    order = [i for i in np.argsort(np.nan_to_num(acc, nan=2.0), kind="stable")]
    w = max(8, *(len(str(c)) for c in class_names)) if class_names else 8
    w = min(w, 28)

    def row(i):
        a = "   n/a" if np.isnan(acc[i]) else f"{100 * acc[i]:6.1f}"
        return f"  {str(class_names[i])[:w]:<{w}} {a}%  of {int(sup[i])}"

    if len(acc) <= max_rows:
        lines.append("per-class accuracy (lowest first):")
        lines += [row(i) for i in order]
    else:
        lines.append(f"per-class accuracy, the 5 lowest and 5 highest of {len(acc)} classes (all in the JSON):")
        lines += [row(i) for i in order[:5]] + ["  ..."] + [row(i) for i in order[-5:]]
    return "\n".join(lines)


def plot_confusion(conf, class_names, path, title="confusion matrix (rows: true class, columns: predicted)"):
    """The confusion matrix, rows normalised to fractions of each true class, as a PNG; returns the path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(conf, np.float64)
    K = conf.shape[0]
    frac = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    size = min(4 + 0.28 * K, 24)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    if K <= 40:
        labels = unique_labels(class_names)
        ax.set_xticks(range(K), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(K), labels, fontsize=7)
        if K <= 12:
            for i in range(K):
                for j in range(K):
                    if conf[i, j]:
                        ax.text(j, i, int(conf[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
