"""The whole single-nodal-performance (SNP) analysis in one call, for a trained CCT and a dataset.

    run_snp(params, cfg, data)  ->  SNPReport

For every requested site (the tokenizer output and `mha_heads`, `mha_out`, `ff_hidden`, `out` of every
encoder; model.py documents the names) and read-out mode:
    1. capture the frozen activations of the training and test images (model.predict(capture=...))
    2. train a fresh bias-free read-out on them (readout.train_readout) -> per-encoder accuracy   [CODE]
    3. node fields V [D, K, K] on the test set (snp.node_fields)                               [CODE]
    4. normalise by each node's max, threshold -> B (snp.normalise_threshold)                    [CODE]
    5. greedy clusters, noise, signal, SNR (clusters.node_stats, clusters.layer_summary)       [CODE]/[INF]
    6. single-node predictions (snp.single_node_predictions)                                   [INF]
`analyse_site` does steps 2-6 on plain arrays, for activations of any network.
`group_agreement` compares the clusters found with ground-truth label groups (e.g. CIFAR-100 superclasses,
the embedded dataset's shape / colour / layout): the fraction of multi-label clusters whose labels all lie in
one group, against the fraction expected for random label sets, with a label-permutation p-value [INF].
Shape legend: N images, T tokens, D nodes, K classes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import model as M
from .. import parallel
from ..datasets.base import to_model_input
from ..sites import SITES, Site
from ..tables import format_table
from ..sites import site_names as _site_names
from .clusters import layer_summary, node_stats
from .readout import READOUT_EPOCHS, train_readout
from .snp import AFCC_THRESHOLD, node_fields, normalise_threshold, single_node_predictions, single_node_summary

#: Images per forward pass of `capture` (and run_snp): speed and memory only. The linear layers and attention
#: compute image by image, so an image's activations do not depend on its batch as long as the tokenizer's
#: convolutions (one matrix product per block of images) round the same for any block; they do for the
#: classroom model (tests/test_eval_forward.py; lesson 03's output is unchanged). At 100 a batch's arrays stay
#: closer to the cache than at 250 (lesson 03's capture is a little faster; its last line prints the time).
CAPTURE_BATCH = 100


#: The SNP quantities of one site and read-out: name -> how it is read off a SiteAnalysis (the one place a
#: quantity's name meets its number; replicate's seed sweep, the report's table and the lessons' tables use it).
QUANTITIES = {
    "accuracy": lambda r: r.accuracy,
    "clusters_per_node": lambda r: r.summary["mean_clusters_per_node"],
    "cluster_size": lambda r: r.summary["mean_cluster_size"],
    "labels_in_clusters": lambda r: r.summary["mean_labels_in_clusters"],
    "noise": lambda r: r.summary["mean_noise"],
    "noise_with_zeros": lambda r: r.summary["mean_noise_with_zeros"],
    "snr": lambda r: r.summary["snr"],
    "snr_a": lambda r: r.summary["snr_a"],
    "snr_b": lambda r: r.summary["snr_b"],
    "snr_c": lambda r: r.summary.get("snr_c", float("nan")),
    "snr_d": lambda r: r.summary["snr_d"],
    "single_node_accuracy": lambda r: r.single["mean_accuracy"],
    "single_node_top_fraction": lambda r: r.single["mean_top_fraction"],
}

#: The quantities a seed sweep records per site and read-out, in table order (replicate.seed_sweep).
SWEEP_QUANTITIES = ("accuracy", "clusters_per_node", "cluster_size", "labels_in_clusters", "noise", "snr", "snr_a",
                    "snr_b", "snr_c", "snr_d", "single_node_accuracy", "single_node_top_fraction")

#: How tables print a quantity: name -> (label, scale, digits).
LABELS = {"accuracy": ("read-out accuracy %", 100, 1), "clusters_per_node": ("clusters per node", 1, 2),
          "cluster_size": ("cluster size", 1, 2), "labels_in_clusters": ("labels in clusters", 1, 2),
          "noise": ("noise per node", 1, 2), "snr": ("SNR <S>/<noise>", 1, 2), "snr_a": ("SNR (a) labels/noise", 1, 2),
          "snr_b": ("SNR (b) median S/noise", 1, 2), "snr_c": ("SNR (c) field ratio", 1, 2),
          "snr_d": ("SNR (d) S/column noise", 1, 2), "single_node_accuracy": ("single-node accuracy %", 100, 1),
          "signal": ("signal <S>", 1, 2),
          "single_node_top_fraction": ("top-label fraction %", 100, 1)}


def sweep_values(r) -> dict:
    """The SWEEP_QUANTITIES of one SiteAnalysis, read through QUANTITIES."""
    return r.values(SWEEP_QUANTITIES)


@dataclass
class SiteAnalysis:
    """Everything the SNP analysis computes for one site and one read-out mode.

    site: the Site (encoder counted from 0, None for the tokenizer; `site.label()` for display);
    mode: read-out mode. readout: the trained Readout; V [D, K, K] fields; B [D, K, K] thresholded;
    stats: NodeStats; summary: layer_summary dict; single: single_node_summary dict.
    """

    site: Site
    mode: str
    readout: object
    V: np.ndarray
    B: np.ndarray
    stats: object
    summary: dict
    single: dict
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.readout.final_test_acc

    @property
    def name(self) -> str:
        """Capture name: "tokens", "enc2.out", ..."""
        return self.site.name

    @property
    def part(self) -> str:
        """"tokens" or one of SITES."""
        return self.site.part

    @property
    def depth(self) -> int:
        """0 for the tokenizer, e + 1 for encoder e (Site.depth)."""
        return self.site.depth

    def values(self, names=tuple(QUANTITIES)) -> dict:
        """{quantity: number} of this analysis for the quantity names (QUANTITIES)."""
        return {q: QUANTITIES[q](self) for q in names}


def analyse_site(A_train, y_train, A_test, y_test, num_classes, mode="flat", epochs=READOUT_EPOCHS,
                 threshold=AFCC_THRESHOLD, seed=0, site=Site(0, "out"), progress=None, **readout_kw) -> SiteAnalysis:
    """Steps 2-6 of the SNP analysis on plain arrays A [N, T, D] (float32) with labels y [N].

    site: the Site (or its capture name) the activations come from; it only labels the result.
    """
    t0 = time.time()
    site = Site.parse(site)
    ro = train_readout(A_train, y_train, num_classes, epochs=epochs, seed=seed, A_test=A_test, y_test=y_test,
                       mode=mode, progress=progress, **readout_kw)
    V = node_fields(A_test, y_test, ro.W, num_classes, mode=mode, pool=ro.pool)     # [D, K, K]
    B = normalise_threshold(V, threshold)                                           # [D, K, K] bool
    stats = node_stats(B)
    summary = layer_summary(stats, V, threshold)
    single = single_node_summary(single_node_predictions(A_test, ro.W, mode=mode, pool=ro.pool), y_test,
                                 num_classes)
    return SiteAnalysis(site, mode, ro, V, B, stats, summary, single, time.time() - t0)


def capture(params, cfg, x_uint8, mean, std, names, batch_size=CAPTURE_BATCH):
    """Activations of uint8 images [N, S, S, 3] at the capture `names`, as float32 arrays {name: [N, ...]}."""
    _, acts = parallel.predict(params, x_uint8, cfg, batch_size, capture=names,
                               transform=lambda b: to_model_input(b, mean, std))
    return acts


def site_names(cfg, sites=("out",), include_tokens=True) -> list:
    """Capture names to analyse, in forward order: ["tokens", "enc0.out", "enc1.out", ...]."""
    return _site_names(cfg.num_layers, sites, include_tokens)


@dataclass
class SNPReport:
    """Result of run_snp: one SiteAnalysis per (site, mode), a table of arrays, and the figures written."""

    results: list
    class_names: list
    groups: dict = field(default_factory=dict)
    group_names: dict = field(default_factory=dict)
    figures: list = field(default_factory=list)
    model_accuracy: float | None = None
    seconds: float = 0.0
    vals: dict | None = None      # with a seed sweep (run_snp(..., seeds=, sweep=)): vals[mode][quantity] [S, E]
    kept: dict | None = None      # and kept[(seed, name, mode)]: every SiteAnalysis of the sweep

    def get(self, name, mode="flat") -> SiteAnalysis:
        for r in self.results:
            if r.name == name and r.mode == mode:
                return r
        raise KeyError(f"no result for site {name!r} with mode {mode!r}")

    def table(self) -> dict:
        """Columns as arrays: name, depth (0 = tokenizer, e + 1 = encoder e), site, mode, accuracy, clusters_per_node, mean_cluster_size,
        labels_in_clusters, noise, noise_with_zeros, snr, single_node_accuracy, single_node_top_fraction."""
        quantities = {"accuracy": "accuracy", "clusters_per_node": "clusters_per_node",
                      "mean_cluster_size": "cluster_size", "labels_in_clusters": "labels_in_clusters",
                      "noise": "noise", "noise_with_zeros": "noise_with_zeros", "snr": "snr",
                      "single_node_accuracy": "single_node_accuracy",
                      "single_node_top_fraction": "single_node_top_fraction"}    # column -> quantity
        cols = {k: [] for k in ("name", "depth", "site", "mode", *quantities)}
        for r in self.results:
            for k, v in (("name", r.name), ("depth", r.depth), ("site", r.part), ("mode", r.mode)):
                cols[k].append(v)
            for k, q in quantities.items():
                cols[k].append(QUANTITIES[q](r))
        return {k: np.array(v) for k, v in cols.items()}

    def format_table(self, mode=None) -> str:
        """The per-encoder table as text (encoders shown counted from 1, Site.label)."""
        rows = [(r.site.label(short=True), r.mode, 100 * r.accuracy, r.summary["mean_clusters_per_node"],
                 r.summary["mean_cluster_size"], r.summary["mean_labels_in_clusters"], r.summary["mean_noise"],
                 r.summary["snr"], 100 * r.single["mean_accuracy"])
                for r in self.results if mode is None or r.mode == mode]
        return format_table([("site", "<16"), ("readout", ">8"), ("acc %", "7.1f"), ("clusters", "9.2f"),
                             ("size", "6.2f"), ("labels", "7.2f"), ("noise", "7.2f"), ("SNR", "7.2f"),
                             ("1-node", "7.1f")], rows)


def capture_groups(cfg, names, n_images, max_capture_bytes) -> list:
    """Capture names packed greedily into forward passes whose float32 activations of n_images images fit in
    max_capture_bytes (a site that alone exceeds it gets a pass of its own)."""
    per_name = {n: n_images * cfg.seq_len * (cfg.ff_dim if n.endswith("ff_hidden") else cfg.embedding_dim) * 4
                for n in names}
    groups, cur, size = [], [], 0.0
    for n in names:
        if cur and size + per_name[n] > max_capture_bytes:
            groups.append(cur)
            cur, size = [], 0.0
        cur.append(n)
        size += per_name[n]
    return groups + [cur] if cur else groups


def run_snp(params, cfg, data, sites=("out",), modes=("flat", "mean", "seqpool"), include_tokens=True,
            epochs=READOUT_EPOCHS, threshold=AFCC_THRESHOLD, n_train=None, seed=0, out_dir=None, progress=print,
            batch_size=CAPTURE_BATCH, max_capture_bytes=5e9, acts=None, seeds=None, sweep=None,
            workers=None) -> SNPReport:
    """The SNP analysis of a trained CCT on a dataset, over encoders and sites, with progress output.

    params, cfg: a trained model (e.g. from train.checkpoint.load_checkpoint); data: a Dataset.
    sites: which encoder sites (SITES); modes: read-out modes ("flat" is the authors'); epochs of each read-out;
    n_train: use the first n training images for the read-outs (all by default); out_dir: write figures there.
    Activations are captured in as few forward passes as fit in max_capture_bytes (float32): each pass runs the
    whole model over all images, so passes dominate the time (all 17 sites of the classroom model are 4.1 GB,
    one pass with the default 5 GB; lower it on a small machine, at the price of more passes).
    acts: (A_train, A_test), dicts {name: [N, T, D]} already captured (`capture` of data.x_train[:n_train] and
    data.x_test) holding every site asked for; then no forward pass is run.
    seeds, sweep: read-outs for several seeds at once: sweep(A_train, y_train, A_test, y_test, K, names, modes,
    seeds, epochs, threshold, keep=..., workers=workers) -> (vals, kept), e.g. replicate.seed_sweep (forked
    workers); the report then holds the first seed's SiteAnalyses and, in .vals / .kept, the whole sweep.
    Returns an SNPReport.
    """
    t0 = time.time()
    say = progress or (lambda *a, **k: None)
    if data.num_classes != cfg.num_classes:
        raise ValueError(f"dataset {data.name} has {data.num_classes} classes, the model {cfg.num_classes}")
    names = site_names(cfg, sites, include_tokens)
    x_tr, y_tr = data.x_train[:n_train], data.y_train[:n_train]
    x_te, y_te = data.x_test, data.y_test
    if acts is not None:                              # already captured: one group, no forward pass
        missing = [n for n in names if n not in acts[0] or n not in acts[1]]
        if missing:
            raise ValueError(f"acts lacks the activations of {missing}; capture them or drop those sites")
        groups_of_names = [list(names)]
    else:
        groups_of_names = capture_groups(cfg, names, len(x_tr) + len(x_te), max_capture_bytes)
    results, sweeps = [], []
    for group in groups_of_names:
        if acts is None:
            say(f"capturing {', '.join(group)} for {len(x_tr)} training and {len(x_te)} test images ...", flush=True)
            A_tr = capture(params, cfg, x_tr, data.mean, data.std, group, batch_size)
            A_te = capture(params, cfg, x_te, data.mean, data.std, group, batch_size)
        else:
            A_tr, A_te = acts
        if sweep is not None:                         # every seed's read-outs at once (the sweep's workers)
            vals, kept = sweep(A_tr, y_tr, A_te, y_te, cfg.num_classes, group, modes, seeds, epochs, threshold,
                               keep=[(n, m) for n in group for m in modes], workers=workers)
            sweeps.append((vals, kept))
            results += [kept[(seeds[0], n, m)] for n in group for m in modes]
            continue
        for name in group:
            for mode in modes:
                r = analyse_site(A_tr[name], y_tr, A_te[name], y_te, cfg.num_classes, mode, epochs, threshold,
                                 seed, Site.parse(name))
                say(f"  {name:<16} {mode:>7} read-out: test acc {100 * r.accuracy:5.1f}%  "
                    f"clusters/node {r.summary['mean_clusters_per_node']:.2f}  noise {r.summary['mean_noise']:.2f}  "
                    f"SNR {r.summary['snr']:.2f}  ({r.seconds:.1f}s)", flush=True)
                results.append(r)
        del A_tr, A_te
    report = SNPReport(results, list(data.class_names), dict(data.groups), dict(data.group_names))
    if sweeps:
        report.vals = {m: {q: np.concatenate([v[m][q] for v, _ in sweeps], axis=1) for q in sweeps[0][0][m]}
                       for m in modes}
        report.kept = {k: r for _, kept in sweeps for k, r in kept.items()}
    if out_dir is not None:
        from .. import plots
        report.figures = plots.snp_figures(report, out_dir)
    report.seconds = time.time() - t0
    return report
