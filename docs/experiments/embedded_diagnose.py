"""Why does the SNP analysis behave differently on the embedded dataset than on real images? (issue 20, goal 3)

Diagnostics on one frozen checkpoint, one read-out seed, no model training. For the tokenizer output and every
encoder's output:

  * read-out accuracy, noise per node and mean cluster size of the flat / mean read-outs (report.analyse_site,
    the same call `python -m minicct replicate` makes);
  * which attribute is linearly readable there: a read-out trained on each ground-truth grouping's labels
    (embedded: shape 5-way, colour 2-way, layout 2-way), accuracy against that grouping's chance;
  * where the noise lies: the noise cells (ones of B outside a node's cluster blocks) counted by the relation of
    their label pair (i, j) -- same shape? same colour? same layout? -- as a rate per label pair of that kind
    (noise cells of that kind / (nodes with a cluster x pairs of that kind));
  * how much of the noise is a class-independent field: the share of noise cells lying in a column j that
    passes the threshold for >= 3/4 of the K true labels (the node sends to output j whatever the input);
  * the same at "tokens+pe", the tokenizer output plus the position embedding (the stream entering encoder 1),
    to separate what the first encoder block does from what adding the class-independent embedding does;
  * sizes: rms of the tokens, of their class-specific part and of the position embedding;
  * node class contrast: per node, (max_i - min_i) / max_i |Zbar[i, n]| of its token-averaged class means
    (median over nodes); a node whose class means are all alike passes many rows of its matrix.

usage (from the repository root):
  python docs/experiments/embedded_diagnose.py --checkpoint data/checkpoints/classroom.npz \
      [--dataset embedded | npz:PATH] [--n-train 5000] [--epochs 5] [--seed 0] [--out runs/diag.json]
A npz:PATH dataset written by embedded_variants.py carries its groups (arrays group_<name>); other npz files
get the relation breakdown only if they have such arrays.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from minicct.analysis.readout import pooled_features, train_readout  # noqa: E402
from minicct.analysis.report import analyse_site, capture  # noqa: E402
from minicct.analysis.snp import class_means  # noqa: E402
from minicct.datasets import load  # noqa: E402
from minicct.io.npz_checkpoint import load_checkpoint  # noqa: E402


def load_dataset(name):
    data = load(name)
    if name.startswith("npz:") and not data.groups:
        with np.load(name[4:], allow_pickle=False) as z:
            groups = {k[len("group_"):]: z[k].astype(np.int64) for k in z.files if k.startswith("group_")}
        data.groups = groups
    return data


def relation_keys(groups, K):
    """For every ordered label pair (i, j), i != j: a key like 'shape=,colour!=,layout=' (same / different)."""
    names = sorted(groups)
    key = np.empty((K, K), dtype=object)
    for i in range(K):
        for j in range(K):
            key[i, j] = ",".join(f"{g}{'=' if groups[g][i] == groups[g][j] else '!='}" for g in names)
    return key


def noise_breakdown(r, groups, K):
    """Noise cells of a SiteAnalysis by label-pair relation, and the class-independent-column share."""
    B = r.B                                                    # [D, K, K] bool
    st = r.stats
    has = st.has_cluster
    noise_cells = B & ~st.in_block() & has[:, None, None]      # [D, K, K]
    full_col = B.sum(axis=1) >= 0.75 * K                       # [D, K] column j passes for >= 3/4 of the rows
    out = {"noise_cells": int(noise_cells.sum()),
           "share_in_full_columns": float((noise_cells & full_col[:, None, :]).sum() / max(noise_cells.sum(), 1)),
           "nodes_with_cluster": int(has.sum())}
    if groups:
        key = relation_keys(groups, K)
        off = ~np.eye(K, dtype=bool)
        rates = {}
        cells = noise_cells.sum(axis=0)                        # [K, K] over nodes
        for k in sorted(set(key[off])):
            m = (key == k) & off
            rates[k] = {"pairs": int(m.sum()), "rate": float(cells[m].sum() / (max(has.sum(), 1) * m.sum()))}
        out["rate_by_relation"] = rates
    return out


def contrast(A_test, y_test, K):
    Z = pooled_features(A_test, "mean")                        # [N, D]
    Zbar, _ = class_means(Z, y_test, K)                        # [K, D]
    c = (Zbar.max(0) - Zbar.min(0)) / np.maximum(np.abs(Zbar).max(0), 1e-12)
    return float(np.median(c))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="data/checkpoints/classroom.npz")
    ap.add_argument("--dataset", default="embedded")
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default="flat,mean")
    ap.add_argument("--sites", default=None, help="only these positions (comma separated: tokens, tokens+pe, "
                    "enc0.out, ...; default all)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    t0 = time.time()
    params, cfg, meta, _ = load_checkpoint(args.checkpoint, with_opt=False)
    data = load_dataset(args.dataset)
    K = cfg.num_classes
    captured = ["tokens"] + [f"enc{e}.out" for e in range(cfg.num_layers)]
    x_tr, y_tr = data.x_train[:args.n_train], data.y_train[:args.n_train]
    A_tr = capture(params, cfg, x_tr, data.mean, data.std, captured)
    A_te = capture(params, cfg, data.x_test, data.mean, data.std, captured)
    names = list(captured)
    if "classifier.positional_emb" in params:       # the stream entering encoder 1: tokens + position embedding
        pe = params["classifier.positional_emb"]    # [1, T, D]
        A_tr["tokens+pe"], A_te["tokens+pe"] = A_tr["tokens"] + pe, A_te["tokens"] + pe
        names.insert(1, "tokens+pe")
    if args.sites:
        names = [n for n in names if n in args.sites.split(",")]
    # sizes (root mean square over test images, tokens and nodes): the tokens, their class-specific part (per-class
    # mean minus the mean over classes, per token and node) and the position embedding added to them
    Abar, _ = class_means(A_te["tokens"], data.y_test, K)                         # [K, T, D]
    scale = {"tokens_rms": float(np.sqrt(np.mean(A_te["tokens"].astype(np.float64) ** 2))),
             "tokens_class_specific_rms": float(np.sqrt(np.mean((Abar - Abar.mean(0)) ** 2))),
             "pe_rms": float(np.sqrt(np.mean(params["classifier.positional_emb"].astype(np.float64) ** 2)))
             if "classifier.positional_emb" in params else None}
    print("sizes (rms): " + ", ".join(f"{k} {v:.3f}" for k, v in scale.items() if v is not None), flush=True)
    print(f"{args.checkpoint} on {args.dataset}: captured {len(names)} sites for {len(y_tr)} + {len(data.y_test)} "
          f"images [{time.time() - t0:.0f} s]", flush=True)
    res = {"checkpoint": args.checkpoint, "dataset": args.dataset, "n_train": len(y_tr), "epochs": args.epochs,
           "seed": args.seed, "scale": scale, "sites": {}}
    for name in names:
        site = {"contrast": contrast(A_te[name], data.y_test, K)}
        for mode in args.modes.split(","):
            r = analyse_site(A_tr[name], y_tr, A_te[name], data.y_test, K, mode, args.epochs, seed=args.seed,
                             site="tokens" if name == "tokens+pe" else name)    # site only labels the result
            site[mode] = {"accuracy": r.accuracy, "noise": r.summary["mean_noise"],
                          "cluster_size": r.summary["mean_cluster_size"],
                          "labels_in_clusters": r.summary["mean_labels_in_clusters"],
                          **noise_breakdown(r, data.groups, K)}
        for g, gv in data.groups.items():
            kg = int(gv.max()) + 1
            ro = train_readout(A_tr[name], gv[y_tr], kg, epochs=args.epochs, seed=args.seed, A_test=A_te[name],
                               y_test=gv[data.y_test], mode="mean")
            rf = train_readout(A_tr[name], gv[y_tr], kg, epochs=args.epochs, seed=args.seed, A_test=A_te[name],
                               y_test=gv[data.y_test], mode="flat")
            site[f"group_{g}"] = {"mean": ro.final_test_acc, "flat": rf.final_test_acc, "chance": 1 / kg}
        res["sites"][name] = site
        line = f"{name:>9}: contrast {site['contrast']:.2f}"
        for mode in args.modes.split(","):
            s = site[mode]
            line += (f" | {mode} acc {100 * s['accuracy']:.1f} noise {s['noise']:.1f} size {s['cluster_size']:.2f} "
                     f"full-col {100 * s['share_in_full_columns']:.0f}%")
        line += "".join(f" | {g} {100 * site['group_' + g]['flat']:.0f}/{100 * site['group_' + g]['mean']:.0f}%"
                        for g in data.groups)
        print(line + f"  [{time.time() - t0:.0f} s]", flush=True)
    for mode in args.modes.split(","):
        if "rate_by_relation" not in res["sites"][names[0]][mode]:
            continue
        print(f"\nnoise rate per label pair, {mode} read-out (relation: {', '.join(sorted(data.groups))})")
        keys = sorted(res["sites"][names[0]][mode]["rate_by_relation"])
        print(f"{'relation':<42}" + "".join(f"{n:>10}" for n in names))
        for k in keys:
            pairs = res["sites"][names[0]][mode]["rate_by_relation"][k]["pairs"]
            print(f"{k + f' ({pairs})':<42}" + "".join(
                f"{res['sites'][n][mode]['rate_by_relation'].get(k, {}).get('rate', float('nan')):>10.3f}"
                for n in names))
    res["seconds"] = time.time() - t0
    print(f"\n{res['seconds']:.0f} s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
