"""What the SNP analysis costs on this machine: measured per-image rates, and the projection to a full run.

One measurement serves both the benchmark at the paper's scale (`python -m minicct.bench --snp-scale paper`)
and lesson 07's run-time estimate, so the two cannot disagree about how fast this machine is:

    rates = measure_snp_rates(cfg, names, modes)        random weights and images (the time does not depend
                                                        on the values), a few seconds of real work
    seconds = project_snp_seconds(rates, cfg, names, modes, n_train, n_test, epochs, passes)

Measured, per image (each a real call of the library function that the analysis runs):
    capture     model.predict(capture=names) of n_capture images, into memory or to float32 .npy files
                (capture_disk.capture_to_disk) when `directory` is given
    train       one epoch of readout.train_readout on n_readout rows of one site, per training image
    test        one readout.readout_accuracy pass, per test image (run after every read-out epoch)
    fields      snp.node_fields + snp.single_node_predictions, per test image (once per read-out)
for each read-out mode and each distinct site shape [T, width] (width D, or F for ff_hidden).
The projection is linear in the number of images: capture passes x (n_train + n_test) x capture
+ per site and mode (epochs x (n_train x train + n_test x test) + n_test x fields).
Shape legend: N images, T tokens, D nodes, F feed-forward width, K classes.
"""
from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .. import model as M
from ..parallel import predict, resolve_workers
from .capture_disk import capture_to_disk, site_shape
from .readout import readout_accuracy, train_readout
from .snp import node_fields, single_node_predictions


def _shape_key(mode, shape) -> str:
    """'flat/256x256': the key of one read-out mode on one site shape [T, width]."""
    return f"{mode}/{'x'.join(map(str, shape))}"


def measure_snp_rates(cfg, names, modes=("flat",), n_capture=64, n_readout=500, n_test=200, batch_size=32,
                      workers=None, to_disk=False, directory=None, seed=0) -> dict:
    """Seconds per image of each stage of the SNP analysis of `cfg` at the capture `names`, measured here.

    cfg: a CCTConfig (random weights of that shape are used); names: capture names ("enc0.out", ...);
    modes: read-out modes to time. n_capture images are captured (batch_size, workers as model.predict);
    to_disk=True: the capture goes to float32 .npy files and the read-outs read memory-mapped files, as at the
    paper's scale (files in a temporary folder inside `directory`, default the system's); else all in memory. Each read-out is timed on n_readout random training rows
    (one epoch) and n_test random test rows.
    Returns {"capture_s_per_image", "capture_s", "n_capture", "readout": {"MODE/TxW": {"train_s_per_image",
    "test_s_per_image", "fields_s_per_image", "epoch_s"}}, "n_readout", "n_test", "workers", "to_disk"}.
    """
    names = list(names)
    for n, v in (("n_capture", n_capture), ("n_readout", n_readout), ("n_test", n_test)):
        if not (isinstance(v, (int, np.integer)) and v >= 1):
            raise ValueError(f"{n} must be a positive integer, got {v!r}")
    shapes = {name: site_shape(cfg, name) for name in names}        # validates the names
    workers = resolve_workers(workers)
    params = M.init_params(cfg, seed)
    rng = np.random.default_rng(seed)
    K = cfg.num_classes
    out = {"n_capture": n_capture, "n_readout": n_readout, "n_test": n_test, "to_disk": bool(to_disk),
           "workers": workers,
           "readout": {}}
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        x = rng.standard_normal((n_capture, cfg.n_input_channels, cfg.img_size, cfg.img_size), dtype=np.float32)
        t0 = time.perf_counter()
        if to_disk:
            capture_to_disk(params, x, cfg, names, Path(tmp) / "capture", batch_size=batch_size, workers=workers)
        else:
            predict(params, x, cfg, batch_size, capture=names, workers=workers)
        out["capture_s"] = time.perf_counter() - t0
        out["capture_s_per_image"] = out["capture_s"] / n_capture
        del x
        for shape in dict.fromkeys(s for s in shapes.values() if len(s) == 2):   # distinct [T, width]
            A = _random_rows(rng, (n_readout,) + shape, Path(tmp) / "train.npy" if to_disk else None)
            y = rng.permutation(np.arange(n_readout) % K)            # every label present when n >= K
            A_te = _random_rows(rng, (n_test,) + shape, Path(tmp) / "test.npy" if to_disk else None)
            y_te = rng.permutation(np.arange(n_test) % K)
            for mode in modes:
                t0 = time.perf_counter()
                ro = train_readout(A, y, K, epochs=1, seed=seed, mode=mode)
                t_epoch = time.perf_counter() - t0
                t0 = time.perf_counter()
                readout_accuracy(A_te, y_te, ro.W, mode=mode, pool=ro.pool)
                t_test = time.perf_counter() - t0
                t0 = time.perf_counter()
                with warnings.catch_warnings():                     # n_test < K leaves labels without images
                    warnings.simplefilter("ignore", UserWarning)
                    node_fields(A_te, y_te, ro.W, K, mode=mode, pool=ro.pool)
                single_node_predictions(A_te, ro.W, mode=mode, pool=ro.pool)
                t_fields = time.perf_counter() - t0
                out["readout"][_shape_key(mode, shape)] = {
                    "epoch_s": t_epoch, "train_s_per_image": t_epoch / n_readout,
                    "test_s_per_image": t_test / n_test, "fields_s_per_image": t_fields / n_test}
            del A, A_te
    return out


def _random_rows(rng, shape, path=None):
    """Random float32 rows [N, ...], in memory or written to a .npy file and opened memory-mapped."""
    if path is None:
        return rng.standard_normal(shape, dtype=np.float32)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    for s in range(0, shape[0], 500):                               # 500 rows at a time: bounded memory
        mm[s:s + 500] = rng.standard_normal((min(500, shape[0] - s),) + shape[1:], dtype=np.float32)
    mm.flush()
    del mm
    return np.load(path, mmap_mode="r")


def project_snp_seconds(rates, cfg, names, modes, n_train, n_test, epochs, passes=1) -> dict:
    """Projected seconds of the SNP analysis from `measure_snp_rates` (linear in images; module docstring).

    passes: capture passes over all n_train + n_test images (run_snp packs sites into passes by memory).
    Returns {"capture": s, "readouts": s, "total": s, "per_site_mode": {"NAME/MODE": s}}.
    """
    capture = passes * (n_train + n_test) * rates["capture_s_per_image"]
    per = {}
    for name in names:
        shape = site_shape(cfg, name)
        for mode in modes:
            key = _shape_key(mode, shape)
            if key not in rates["readout"]:
                raise ValueError(f"no read-out rate for {key!r} (site {name}); measured: {sorted(rates['readout'])}")
            r = rates["readout"][key]
            per[f"{name}/{mode}"] = (epochs * (n_train * r["train_s_per_image"] + n_test * r["test_s_per_image"])
                                     + n_test * r["fields_s_per_image"])
    readouts = float(sum(per.values()))
    return {"capture": capture, "readouts": readouts, "total": capture + readouts, "per_site_mode": per}
