"""Activations at the paper's scale: captured to float32 .npy files batch by batch, read back memory-mapped.

At the scale of Koresh et al. (cct_7_3x1_32, CIFAR-100: 50,000 training + 10,000 test images, T = 256 tokens,
D = 256 nodes) one site holds 60,000 x 256 x 256 float32 = 15.7 GB: more than a laptop's memory. So the
activations go to disk: `capture_to_disk` runs model.predict (batch-parallel workers) over chunks of the
images and writes each chunk of each site into its file through a short-lived memory map (closed after the
chunk, so resident memory stays ~ one chunk), as `NAME.npy.part`, renamed to `NAME.npy` when complete (an
interrupted capture never leaves a file that looks complete). The result opens with
np.load(path, mmap_mode="r") and feeds analysis.readout.train_readout directly, which reads one mini-batch of
rows at a time (readout._rows: positioned reads for memory maps, so the file's pages do not pile up in the
process's resident memory).
Shape legend: N images, T tokens, D nodes, F feed-forward width.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import model as M
from .. import parallel
from ..io.atomic import commit


def site_shape(cfg, name) -> tuple:
    """Per-image shape of a capture site: [T, D] (tokens, enc{e}.mha_heads / mha_out / out), [T, F] (ff_hidden),
    [D] (pooled)."""
    if name not in M.capture_sites(cfg):
        raise ValueError(f"unknown activation name {name!r}; known: {M.capture_sites(cfg)}")
    if name == "pooled":
        return (cfg.embedding_dim,)
    return (cfg.seq_len, cfg.ff_dim if name.endswith("ff_hidden") else cfg.embedding_dim)


def capture_to_disk(params, x, cfg, sites, directory, batch_size=256, transform=None, workers=None,
                    chunk=None, progress=None) -> dict:
    """Capture `sites` for all inputs into DIRECTORY/NAME.npy (float32 [N, ...]); returns {name: read-only memmap}.

    x: images [N, C, S, S] (or what `transform` turns into them, e.g. uint8 [N, S, S, 3]), read chunk by chunk.
    chunk: images per chunk (default 8 batches); batch_size, workers: as model.predict (bit for bit the same
    activations as model.predict(capture=sites)). progress: optional callable(done, N).
    """
    sites = list(sites)
    for name in sites:
        site_shape(cfg, name)                                       # validate early
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    N = len(x)
    chunk = int(chunk or 8 * batch_size)
    parts = {name: directory / f"{name}.npy.part" for name in sites}
    try:
        layout = {}
        for name in sites:                                              # header + preallocated file
            mm = np.lib.format.open_memmap(parts[name], mode="w+", dtype=np.float32,
                                           shape=(N,) + site_shape(cfg, name))
            layout[name] = (mm.offset, int(np.prod(site_shape(cfg, name))) * 4)
            del mm
        for s in range(0, N, chunk):
            e = min(s + chunk, N)
            maps = {name: np.memmap(parts[name], dtype=np.float32, mode="r+",
                                    offset=layout[name][0] + s * layout[name][1],
                                    shape=(e - s,) + site_shape(cfg, name)) for name in sites}
            parallel.predict(params, x[s:e], cfg, batch_size, capture=sites, transform=transform, workers=workers,
                             out=maps)
            for mm in maps.values():
                mm.flush()
            del maps                                                    # unmapped: resident memory stays one chunk
            if progress is not None:
                progress(e, N)
    except BaseException:                                           # no half-written .part left behind
        for p in parts.values():
            p.unlink(missing_ok=True)
        raise
    out = {}
    for name in sites:
        final = directory / f"{name}.npy"
        commit(parts[name], final)                                 # minicct.io.atomic: fsync, rename, fsync folder
        out[name] = np.load(final, mmap_mode="r")
    return out
