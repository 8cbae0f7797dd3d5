"""The official pretrained CCT weights: a registry, a verified download, and loading into minicct parameters.

    params, cfg, meta = load_pretrained("cct_7_3x1_32_c100")      # downloads once, then uses the cache
    logits = model.predict(params, to_model_input(x_uint8, data.mean, data.std), cfg)

The registry holds the eight checkpoints the reference code lists (SHI-Labs/Compact-Transformers @ cd11f09,
src/cct.py `model_urls`), each with its file name, its addresses (the current one at shi-labs.com first, then
the older mirror at ix.cs.uoregon.edu the code used until PR #33), the model config (`model.get_config(name)`),
the dataset it was trained on and the published top-1 accuracy (the official CCT README tables).

HTTPS only. Weights are downloaded over HTTPS only: the old mirror is plain HTTP, so anyone on the path could
substitute a file with the right shapes, which the checks below would then accept and pin. Plain-HTTP
addresses are skipped (and the skip is printed) unless `allow_http=True` (CLI `--allow-http`) is given
explicitly; a download that was redirected to a non-HTTPS address is deleted and refused; a cached file
whose record says it came over plain HTTP is refused unless allow_http is given.

Verification. No checksum of these files is published anywhere we know, so a file is accepted when
    (a) structure: it parses as a PyTorch state_dict (torch_io.load_state_dict, restricted unpickler) and every
        key and shape equals model.param_shapes(cfg) exactly (torch_io.to_params, which reports all
        differences at once), and
    (b) identity: its sha256 is recorded beside it on first use (`<file>.sha256.json`, trust on first use)
        and every later load must match that record. The hash is printed so that it can be compared with a
        copy from elsewhere; `load_pretrained(..., sha256=...)` pins a known hash instead.
A downloaded file that fails (a) or (b) is deleted; a file put in place by hand is left for the user to check.

Sine positional embedding. The `_sine` checkpoints were trained with the fixed sinusoidal table, which the
reference HEAD no longer builds (its `_cct` factory drops the argument and then replaces the stored table with a
random learnable one, as in the official code). Here the table stored in the checkpoint is used as it is; its largest
difference from the formula (model.sine_embedding) is reported in meta.

Cost. A NumPy forward pass of CCT-7/3x1 costs about 1.18 GMAC per image (the official cost table), i.e. minutes for
the 10,000 CIFAR test images on a CPU; `estimate_eval_seconds` measures the speed on this machine first.

Files live in `data_dir()/pretrained/` (`$MINICCT_DATA/pretrained/` when that is set). `MINICCT_OFFLINE=1`
forbids downloads (datasets/download.py); the error then says which URLs to fetch and where to put the file.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import model as M
from . import download as dl
from ..datasets.base import data_dir
from .torch_io import CheckpointError, UnsafeCheckpointError, load_state_dict, to_params

__all__ = [
    "OFFICIAL_BASE", "MIRROR_BASE", "REGISTRY", "PretrainedWeights", "PretrainedError",
    "list_pretrained", "get_entry", "weights_path", "load_pretrained", "file_sha256", "manual_instructions",
    "forward_macs", "measure_forward_speed", "estimate_eval_seconds", "format_seconds",
]

OFFICIAL_BASE = "https://shi-labs.com/projects/cct/checkpoints"                  # src/cct.py @ cd11f09
MIRROR_BASE = "http://ix.cs.uoregon.edu/~alih/compact-transformers/checkpoints"   # src/cct.py before PR #33
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class PretrainedError(ValueError):
    """A weights file is not the expected one: its sha256 differs from the pinned or recorded value, or it
    does not parse as a state_dict of the model. The message names the file and what to do."""


@dataclass(frozen=True)
class PretrainedWeights:
    """One official checkpoint.

    name: registry name, also the model variant (`model.get_config(variant or name)`); filename: the file's
    name on the server and in the cache; urls: addresses tried in order; dataset: 'cifar10' | 'cifar100' |
    'flowers102' | 'imagenet'; published_top1: top-1 % the authors report for these weights;
    description: one line for people; variant / overrides: config used instead of get_config(name) (tests).
    """

    name: str
    filename: str
    urls: tuple
    dataset: str
    published_top1: float | None
    description: str
    variant: str | None = None
    overrides: tuple = ()

    def config(self) -> M.CCTConfig:
        return M.get_config(self.variant or self.name, **dict(self.overrides))


def _official(name, filename, dataset, top1, description, folder="pretrained"):
    urls = (f"{OFFICIAL_BASE}/{folder}/{filename}", f"{MIRROR_BASE}/{folder}/{filename}")
    return PretrainedWeights(name, filename, urls, dataset, top1, description)


#: name -> PretrainedWeights. Accuracies: README of the reference at cd11f09.
REGISTRY = {e.name: e for e in (
    _official("cct_7_3x1_32", "cct_7_3x1_32_cifar10_300epochs.pth", "cifar10", 96.53,
              "CCT-7/3x1, CIFAR-10, learnable PE, 300 epochs"),
    _official("cct_7_3x1_32_sine", "cct_7_3x1_32_sine_cifar10_5000epochs.pth", "cifar10", 98.00,
              "CCT-7/3x1, CIFAR-10, sine PE, 5000 epochs"),
    _official("cct_7_3x1_32_c100", "cct_7_3x1_32_cifar100_300epochs.pth", "cifar100", 80.92,
              "CCT-7/3x1, CIFAR-100, learnable PE, 300 epochs"),
    _official("cct_7_3x1_32_sine_c100", "cct_7_3x1_32_sine_cifar100_5000epochs.pth", "cifar100", 82.87,
              "CCT-7/3x1, CIFAR-100, sine PE, 5000 epochs"),
    _official("cct_7_7x2_224_sine", "cct_7_7x2_224_flowers102.pth", "flowers102", 97.19,
              "CCT-7/7x2, Flowers-102 from scratch at 224 px, sine PE, 300 epochs (accuracy on the Kaggle "
              "split, not the official one: issue #65)"),
    _official("cct_14_7x2_224", "cct_14_7x2_224_imagenet.pth", "imagenet", 80.67,
              "CCT-14/7x2, ImageNet-1k at 224 px, learnable PE, 310 epochs"),
    _official("cct_14_7x2_384", "cct_14_7x2_384_imagenet.pth", "imagenet", 82.71,
              "CCT-14/7x2, ImageNet-1k fine-tuned at 384 px (310 + 30 epochs)", folder="finetuned"),
    _official("cct_14_7x2_384_fl", "cct_14_7x2_384_flowers102.pth", "flowers102", 99.76,
              "CCT-14/7x2, ImageNet-1k weights fine-tuned on Flowers-102 at 384 px", folder="finetuned"),
)}


def get_entry(name: str) -> PretrainedWeights:
    """The registry entry of `name`; ValueError listing the known names otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"no official weights named {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def weights_path(name: str, root=None) -> Path:
    """Where the file of `name` lives: `root/<filename>`, default root `data_dir()/pretrained`."""
    entry = get_entry(name)
    folder = Path(root) if root is not None else data_dir() / "pretrained"
    return folder / entry.filename


def list_pretrained(root=None) -> list:
    """One dict per registered checkpoint: name, description, dataset, published_top1, file, cached."""
    rows = []
    for name, e in REGISTRY.items():
        path = weights_path(name, root)
        rows.append(dict(name=name, description=e.description, dataset=e.dataset,
                         published_top1=e.published_top1, file=str(path), cached=path.is_file()))
    return rows


def file_sha256(path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(dl.CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def manual_instructions(entry: PretrainedWeights, path) -> str:
    """How to put the file in place by hand: the URLs, the exact path, a command, and how it is checked."""
    path = Path(path).resolve()
    urls = "\n".join(f"    {u}" for u in entry.urls)
    return (f"To use the weights without downloading, fetch one of\n{urls}\nby other means (browser, wget, curl) "
            f"and put it at\n    {path}\nfor example:\n    mkdir -p '{path.parent}' && curl -fL -o '{path}' "
            f"'{entry.urls[0]}'\nNo checksum of this file is published: it is checked by parsing it (every tensor "
            f"name and shape must match {entry.name}), and its sha256 is recorded in\n    {_record_path(path)}\n"
            f"on first use; every later load must match that record.")


def _is_https(url) -> bool:
    return isinstance(url, str) and url.lower().startswith("https://")


def _final_url(path: Path, url: str) -> str:
    """The address the bytes finally came from (after redirects), as datasets.download recorded it."""
    try:
        return json.loads(path.with_name(path.name + ".md5ok").read_text()).get("url") or url
    except (OSError, ValueError, AttributeError):
        return url


def _download(entry: PretrainedWeights, path: Path, progress: bool, allow_http: bool = False) -> str:
    """Fetch the file from the first HTTPS address that answers (plain-HTTP ones too with allow_http); returns
    the URL the bytes came from. DownloadError naming every address tried or skipped, and the manual steps
    otherwise."""
    failures = []
    for url in entry.urls:
        if not _is_https(url) and not allow_http:
            failures.append(f"  {url}\n    -> skipped: plain HTTP is not authenticated (a substituted file with the "
                            f"right shapes would be accepted); pass --allow-http / allow_http=True to try it")
            if progress:
                sys.stderr.write(f"skipping {url} (plain HTTP, unauthenticated; --allow-http to try it)\n")
            continue
        if not _is_https(url) and progress:
            sys.stderr.write(f"warning: trying {url} over plain HTTP (allowed by --allow-http): the file is "
                             f"checked only by its tensors and its sha256 record\n")
        try:
            dl.download(url, path, None, progress=progress)
        except dl.DownloadError as exc:
            failures.append(f"  {url}\n    -> {exc.reason}")
            continue
        final = _final_url(path, url)
        if not _is_https(final) and not allow_http:
            _discard(path)
            failures.append(f"  {url}\n    -> refused: redirected to {final}, which is not HTTPS; the file was "
                            f"deleted")
            continue
        return final
    reason = f"could not download the weights {entry.name} ({entry.description}):\n" + "\n".join(failures)
    raise dl.DownloadError(reason + "\n" + manual_instructions(entry, path), reason=reason)


def _discard(path: Path) -> None:
    """Delete a rejected download and its md5 stamp, so that it is not picked up again."""
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".md5ok").unlink(missing_ok=True)


def _read_record(path: Path) -> dict | None:
    try:
        rec = json.loads(_record_path(path).read_text())
        return rec if isinstance(rec, dict) and _SHA256_RE.match(str(rec.get("sha256", ""))) else None
    except (OSError, ValueError):
        return None


def _write_record(path: Path, digest: str, source: str) -> None:
    """`<file>.sha256.json`, atomically (temp file + os.replace)."""
    rec = {"sha256": digest, "size": path.stat().st_size, "file": path.name, "source": source,
           "recorded_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    from .atomic import atomic_write_text
    atomic_write_text(_record_path(path), json.dumps(rec, indent=1) + "\n")


def _check_identity(path: Path, digest: str, sha256: str | None, record: dict | None, fresh: bool) -> str:
    """Compare the file's sha256 with the pinned value, else with the record. Returns a status text."""
    fate = ("It was just downloaded and has been deleted." if fresh else
            "It was left in place.")
    if sha256 is not None:
        if digest != sha256:
            if fresh:
                _discard(path)
            raise PretrainedError(
                f"{path} has sha256 {digest}, but sha256={sha256} was requested. {fate} Fetch the file again "
                f"from a source you trust, or check the hash you passed.")
        return "matches the pinned sha256"
    if record is None:
        return "recorded now (first use): compare it with a trusted copy; later loads must match it"
    if digest != record["sha256"]:
        if fresh:
            _discard(path)
        raise PretrainedError(
            f"{path} has sha256 {digest}, but on first use ({record.get('recorded_utc', '?')}, from "
            f"{record.get('source', '?')}) it had sha256 {record['sha256']} (recorded in {_record_path(path)}). "
            f"{fate} The file changed: corrupted, replaced, or the server now serves a different file. If you "
            f"trust the new file, delete {_record_path(path)} and load again; otherwise put the original back.")
    return f"matches the record of {record.get('recorded_utc', '?')}"


def _read_params(path: Path, cfg: M.CCTConfig, entry: PretrainedWeights, fresh: bool) -> dict:
    """Structural check: parse the state_dict and match every key and shape to the model (float32 out)."""
    try:
        state = load_state_dict(path, expected_shapes=M.param_shapes(cfg))  # refuses other shapes first
        return to_params(state, M.param_shapes(cfg))
    except (CheckpointError, UnsafeCheckpointError, ValueError) as exc:
        if fresh:
            _discard(path)
        fate = "It was just downloaded and has been deleted." if fresh else \
            "Delete it (or replace it with the right file) and load again."
        raise PretrainedError(f"{path} is not usable as the weights {entry.name} ({entry.description}). "
                              f"{fate}\n{exc}") from exc


def load_pretrained(name: str, download: bool = True, root=None, sha256: str | None = None,
                    progress: bool = True, allow_http: bool = False):
    """Official CCT weights as minicct parameters, downloaded once and verified on every load.

    Args:
        name: a registry name (REGISTRY; e.g. "cct_7_3x1_32_c100"); it is also the model variant.
        download: fetch the file when it is not in the cache; False raises FileNotFoundError with the steps
            to put it there by hand.
        root: folder holding the .pth files (default data_dir()/pretrained, i.e. $MINICCT_DATA/pretrained).
        sha256: optional known hash (64 hex digits); the file must match it (the record is then updated).
        progress: download progress and the sha256 line on stderr.
        allow_http: also try plain-HTTP addresses and accept a cached file recorded as coming from one
            (default False: HTTPS only; what is skipped is printed).
    Returns:
        params (dict official key -> float32 array, model order), cfg (CCTConfig),
        meta = dict(name, url, dataset, published_top1, sha256, file, description, sha256_status,
                    positional_embedding[, sine_table_max_abs_diff]).
    Raises:
        ValueError (unknown name, malformed sha256), PretrainedError (a ValueError: hash mismatch, or the file is
        not a state_dict of this model; the to_params report lists every key/shape difference),
        datasets.download.DownloadError (a RuntimeError: no address answered, or MINICCT_OFFLINE is set;
        the message lists the URLs, the path where to put the file by hand and a command), FileNotFoundError.
    """
    entry = get_entry(name)
    if sha256 is not None:
        sha256 = str(sha256).strip().lower()
        if not _SHA256_RE.match(sha256):
            raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    cfg = entry.config()
    path = weights_path(name, root)
    fresh, url = False, None
    if not path.is_file():
        if not download:
            raise FileNotFoundError(f"the weights {name} are not at {path.resolve()} and download=False.\n"
                                    + manual_instructions(entry, path))
        url, fresh = _download(entry, path, progress, allow_http), True
    digest = file_sha256(path)                         # identity first: nothing is unpickled from a changed file
    record = _read_record(path)
    source = str((record or {}).get("source", ""))
    if not fresh and source.lower().startswith("http://") and not allow_http:
        raise PretrainedError(
            f"{path} was downloaded over plain HTTP ({source}), which is not authenticated; it is not used. "
            f"Delete it and {_record_path(path).name} and load again (HTTPS), or pass --allow-http / "
            f"allow_http=True to accept it.")
    status = _check_identity(path, digest, sha256, record, fresh)
    params = _read_params(path, cfg, entry, fresh)
    if record is None or record["sha256"] != digest:
        _write_record(path, digest, url or f"found at {path.resolve()}")
    elif url is None and str(record.get("source", "")).startswith(("http://", "https://")):
        url = record["source"]                         # where this very file came from
    url = url or entry.urls[0]
    meta = dict(name=name, url=url, dataset=entry.dataset, published_top1=entry.published_top1, sha256=digest,
                file=str(path), description=entry.description, sha256_status=status,
                positional_embedding=cfg.positional_embedding)
    if cfg.positional_embedding == "sine":
        # [CODE] the stored table is what the network was trained with; it is used as it is
        table = M.sine_embedding(cfg.seq_len, cfg.embedding_dim)          # [1, T, D]
        diff = float(np.abs(params["classifier.positional_emb"] - table).max())
        meta["sine_table_max_abs_diff"] = diff
        if diff > 1e-4 and progress:
            sys.stderr.write(f"note: the sine table stored in {path.name} differs from the formula by up to "
                             f"{diff:.2g}; the stored table is used.\n")
    if progress:
        sys.stderr.write(f"{name}: {path}\n  sha256 {digest} ({status})\n")
    return params, cfg, meta


# ----------------------------------------------------------------------------------------------- run time

def forward_macs(cfg: M.CCTConfig) -> int:
    """Multiply-accumulates of one image's forward pass, as the official cost table counts them ("+ attn matmuls"):

        convs  sum_i c_in c_out k^2 H_i W_i        (H_i, W_i: conv output size of stage i)
        blocks L * (T (3 D^2 + D^2 + 2 D F)  +  2 T^2 D)     qkv, proj, the two MLP layers; QK^T and AV
        head   T D (sequence-pooling weights) + D K (fc)
    e.g. cct_7_3x1_32: 1.1816 G. Element-wise work (softmax, GELU, LayerNorm) is not counted.
    """
    macs, s, ch = 0, cfg.img_size, cfg.channels
    for i in range(cfg.n_conv_layers):
        s = (s + 2 * cfg.conv_padding - cfg.kernel_size) // cfg.conv_stride + 1
        macs += ch[i] * ch[i + 1] * cfg.kernel_size ** 2 * s * s
        s = (s + 2 * cfg.pooling_padding - cfg.pooling_kernel_size) // cfg.pooling_stride + 1
    T, D, F = cfg.seq_len, cfg.embedding_dim, cfg.ff_dim
    macs += cfg.num_layers * (T * (4 * D * D + 2 * D * F) + 2 * T * T * D)
    return int(macs + T * D + D * cfg.num_classes)


def measure_forward_speed(cfg: M.CCTConfig, batch_size: int = 50, probe_seconds: float = 1.0, seed: int = 0):
    """Images per second of the evaluation forward pass on this machine, measured with random weights.

    Measured on model.predict, the loop evaluation runs (train=False, its default workers): one image first
    (a first timing), then as many images as take about `probe_seconds` (at least 1, at most batch_size per
    worker) twice, timing the second pass (the first one's fresh buffers fault in pages that later batches
    reuse). Per-image cost depends on the batch size and on what else runs on the machine, so this is an
    estimate; measure with the batch size you will use.
    """
    from ..parallel import predict, resolve_workers
    params = M.init_params(cfg, seed)
    rng = np.random.default_rng(seed)
    shape = (cfg.n_input_channels, cfg.img_size, cfg.img_size)
    t0 = time.perf_counter()
    predict(params, rng.standard_normal((1, *shape), dtype=np.float32), cfg, batch_size)
    t_one = max(time.perf_counter() - t0, 1e-6)
    workers = resolve_workers(None)
    n = int(np.clip(workers * probe_seconds / t_one, 1, max(1, batch_size) * workers))
    x = rng.standard_normal((n, *shape), dtype=np.float32)
    predict(params, x, cfg, -(-n // workers))          # warm-up: one batch per worker
    t0 = time.perf_counter()
    predict(params, x, cfg, -(-n // workers))
    return n / max(time.perf_counter() - t0, 1e-6)


def estimate_eval_seconds(cfg: M.CCTConfig, n_images: int, batch_size: int = 50, probe_seconds: float = 1.0,
                          seed: int = 0) -> float:
    """Seconds to evaluate `n_images` images: n_images / measure_forward_speed(cfg, ...). Takes about twice
    probe_seconds plus one single-image forward to measure."""
    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    return n_images / measure_forward_speed(cfg, batch_size, probe_seconds, seed)


def format_seconds(seconds: float) -> str:
    """'45 s', '12 min', '2.3 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
