"""Draw the README's figure: one node's field matrix and its label clusters (docs/snp_node.png).

    python docs/make_figure.py [--checkpoint data/checkpoints/cifar10_classroom.npz] [--dataset cifar10_sample]
                               [--epochs 10] [--seed 0] [--threshold 0.3] [--out docs/snp_node.png]

Offline, on the classroom CCT trained on real CIFAR-10 and the committed real-image sample by default. The steps are those of
lesson 03 for one site, the output of the last encoder, with the authors' read-out on the flattened tokens
(docs/method.md sections 1-4):
  1. freeze the model and record the activations A [N, T, D] of the last encoder      (analysis.report.capture)
  2. train a new bias-free linear read-out W [K, T, D] on them                        (analysis.readout.train_readout)
  3. node fields V [D, K, K]: per true label i, the mean field node n sends to output j  (analysis.snp.node_fields)
  4. divide each node's matrix by its maximum and keep what is above 0.3 -> B [D, K, K] (analysis.snp.normalise_threshold)
  5. the authors' greedy clusters of one node                                          (analysis.clusters.greedy_clusters)
The node shown is the one lesson 03 shows (plots.pick_node's rule: most labels in multi-label clusters, then
the largest signal). Left: V_n / max V_n; right: the thresholded matrix B_n; both with the labels reordered so
that the node's clusters come first, outlined in red.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))                     # run from a checkout without installing

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from minicct.analysis.clusters import greedy_clusters, node_signal  # noqa: E402
from minicct.analysis.readout import train_readout  # noqa: E402
from minicct.analysis.report import capture  # noqa: E402
from minicct.analysis.snp import node_fields, normalise_threshold  # noqa: E402
from minicct.datasets import load  # noqa: E402
from minicct.io.checkpoints import load_any_checkpoint  # noqa: E402


def pick(B, clusters):
    """Node with the most labels in multi-label clusters, then the largest signal (the rule of plots.pick_node)."""
    multi = np.array([sum(len(c) for c in cl if len(c) >= 2) for cl in clusters])
    signal = node_signal(B, clusters)
    return int(np.lexsort((signal, multi))[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "data" / "checkpoints" / "cifar10_classroom.npz"))
    ap.add_argument("--dataset", default="cifar10_sample")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--out", default=str(ROOT / "docs" / "snp_node.png"))
    args = ap.parse_args(argv)

    params, cfg, _ = load_any_checkpoint(args.checkpoint)
    data = load(args.dataset)
    K, names = data.num_classes, data.class_names
    site = f"enc{cfg.num_layers - 1}.out"                                      # the last encoder's output
    A_tr = capture(params, cfg, data.x_train, data.mean, data.std, [site])[site]   # [N, T, D]
    A_te = capture(params, cfg, data.x_test, data.mean, data.std, [site])[site]
    ro = train_readout(A_tr, data.y_train, K, epochs=args.epochs, seed=args.seed)  # W [K, T, D]
    V = node_fields(A_te, data.y_test, ro.W, K)                                # [D, K, K]
    B = normalise_threshold(V, args.threshold)                                 # [D, K, K] bool
    clusters = [greedy_clusters(B[n]) for n in range(B.shape[0])]
    n = pick(B, clusters)
    cl = sorted(clusters[n], key=len, reverse=True)
    order = [l for c in cl for l in c] + [l for l in range(K) if not any(l in c for c in cl)]
    Vn = (V[n] / V[n].max())[np.ix_(order, order)]
    Bn = B[n][np.ix_(order, order)].astype(float)
    short = [names[i] if len(names[i]) <= 16 else names[i][:15] + "." for i in order]

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    lim = np.abs(Vn).max()
    panels = ((Vn, "RdBu_r", -lim, lim, f"field V_n / max V_n (node {n})"),
              (Bn, "Greys", 0, 1, f"V_n / max V_n > {args.threshold:g}, clusters in red"))
    for ax, (M, cmap, lo, hi, title) in zip(axes, panels):
        im = ax.imshow(M, cmap=cmap, vmin=lo, vmax=hi)
        start = 0
        for c in cl:                                                           # clusters = diagonal blocks
            ax.add_patch(plt.Rectangle((start - 0.5, start - 0.5), len(c), len(c), fill=False, ec="tab:red", lw=1.6))
            start += len(c)
        ax.set_xticks(range(K), short, rotation=90, fontsize=6)
        ax.set_yticks(range(K), short, fontsize=6)
        ax.set_xlabel("output label j")
        ax.set_ylabel("true label i (mean over its test images)")
        ax.set_title(title, fontsize=9)
    fig.colorbar(axes[0].images[0], ax=axes[0], shrink=0.7)
    fig.suptitle(f"One node of encoder {cfg.num_layers} (last), flat read-out, {args.epochs} epochs: "
                 f"{len(cl)} clusters, noise {int(B[n].sum()) - sum(len(c) ** 2 for c in cl)} "
                 f"(ones outside the blocks)", fontsize=10)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"node {n}: clusters {[[names[i] for i in c] for c in cl]}; wrote {args.out}")


if __name__ == "__main__":
    main()
