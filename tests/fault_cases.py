"""Fault-injection cases for minicct (issue 14), shared by tests/test_faults.py and the census below.

Every case is a function `case(tmp: Path) -> verdict` run against whichever `minicct` is importable. It builds
its hostile input itself (pickles, .pth and .npz files, a local HTTP server on 127.0.0.1, subprocesses killed
with SIGKILL) and either raises (then `classify` decides: a documented error type with a message is a clear
error, anything else a traceback) or returns one of
    "ok"        the right result for an input that should work
    "clear"     a CLI command refused the input with exit code != 0 and an `error:` / usage line
    "wrong"     finished as if all was well, with a wrong result (silently wrong)
    "lost"      work or a file the user had was destroyed
    "leftover"  a temporary file was left behind
    "refused"   a good input was rejected
    "accepted"  a bad CLI value was accepted but gave a correct result (see HARMLESS_IF_ACCEPTED)
Census (each case in its own process, address space capped at 3 GB, 120 s; peak RSS measured):
    python tests/fault_cases.py                       # this checkout
    python tests/fault_cases.py --repo ../other-checkout  # another checkout (e.g. the baseline)
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import json
import math
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import tarfile
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CASES: dict = {}
MEMORY_BLOWUP_BYTES = 300 << 20   # peak RSS above this for a few-MB input counts as a memory blow-up


def case(defect, group="lib"):
    def deco(fn):
        CASES[fn.__name__.removeprefix("case_")] = (defect, group, fn)
        return fn
    return deco


def clear_types():
    from minicct.io.download import DownloadError
    return (ValueError, OSError, DownloadError, pickle.UnpicklingError)


def classify(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, clear_types()) and str(exc) and not isinstance(exc, (KeyError, UnicodeError)):
        return "clear"
    return "traceback"


def run_case(name: str, tmp: Path) -> str:
    _, _, fn = CASES[name]
    try:
        return fn(Path(tmp))
    except Exception as exc:  # noqa: BLE001 - the point is to classify whatever comes
        return classify(exc)


# ------------------------------------------------------------------------------------------------ builders

def _pkl_str(s: str) -> bytes:
    b = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(b)) + b


def _pkl_int(n: int) -> bytes:
    return pickle.BININT + struct.pack("<i", n) if n < 2**31 else pickle.LONG1 + bytes([8]) + n.to_bytes(8, "little")


def _pkl_tuple(items) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _tensor(storage_cls: str, key: str, numel: int, offset: int, size, stride) -> bytes:
    """_rebuild_tensor_v2(('storage', torch.<cls>, key, 'cpu', numel), offset, size, stride, False, OrderedDict())"""
    pid = _pkl_tuple([_pkl_str("storage"), b"ctorch\n" + storage_cls.encode() + b"\n", _pkl_str(key),
                      _pkl_str("cpu"), _pkl_int(numel)]) + pickle.BINPERSID
    args = [pid, _pkl_int(offset), _pkl_tuple(_pkl_int(n) for n in size), _pkl_tuple(_pkl_int(s) for s in stride),
            pickle.NEWFALSE, b"ccollections\nOrderedDict\n" + pickle.EMPTY_TUPLE + pickle.REDUCE]
    return b"ctorch._utils\n_rebuild_tensor_v2\n" + _pkl_tuple(args) + pickle.REDUCE


def _state_dict_pickle(entries) -> bytes:
    """entries: (name, tensor opcodes) -> an OrderedDict pickle."""
    body = b"".join(_pkl_str(k) + v for k, v in entries)
    return (pickle.PROTO + b"\x02" + b"ccollections\nOrderedDict\n" + pickle.EMPTY_TUPLE + pickle.REDUCE
            + pickle.MARK + body + pickle.SETITEMS + pickle.STOP)


def write_pth(path: Path, pkl: bytes, storages: dict, compress=None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", b"little")
        for key, raw in storages.items():
            zf.writestr(zipfile.ZipInfo(f"archive/data/{key}"), raw, compress_type=compress or zipfile.ZIP_STORED)
        zf.writestr("archive/version", b"3\n")
    return path


def nested_key_pickle(depth=200_000) -> bytes:
    """{((((None,),),),...): None} nested `depth` deep: hashing the key recurses in C (CPython crashes)."""
    return (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.NONE + pickle.TUPLE1 * depth + pickle.NONE
            + pickle.SETITEM + pickle.STOP)


def tiny_cfg():
    from minicct import model as M
    return M.CCTConfig(img_size=16, n_conv_layers=1, kernel_size=3, embedding_dim=16, num_layers=1, num_heads=2,
                       mlp_ratio=1.0, num_classes=3, positional_embedding="learnable")


def _cli(argv, env=None) -> tuple:
    """Run `python -m minicct argv` in this process: (exit code, stdout, stderr). An exception main() lets
    through is what the user would see as a traceback: it is written to stderr as one."""
    from minicct.__main__ import main
    out, err = io.StringIO(), io.StringIO()
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:  # argparse: usage error, exit 2
                rc = e.code if isinstance(e.code, int) else 1
            except Exception as e:  # noqa: BLE001 - main() let it through: the user sees a traceback
                rc = 1
                err.write(f"Traceback (most recent call last):\n  ...\n{type(e).__name__}: {e}\n")
    finally:
        os.environ.clear()
        os.environ.update(old)
    return rc, out.getvalue(), err.getvalue()


def _cli_verdict(argv) -> str:
    rc, out, err = _cli(argv)
    if rc == 0:
        return "wrong"
    if "Traceback" in err:
        return "traceback"
    last = err.strip().splitlines()[-1] if err.strip() else ""
    return "clear" if ("error:" in last or "error" in last) else "traceback"


CKPT = str(Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "classroom.npz")


# -------------------------------------------------------------------------------- defect 2: memory bounds

@case(2)
def case_pth_stride0_total(tmp):
    """40 broadcast (stride-0) tensors of 2**27 float64 each from one 8-byte storage: a 1 KB file, 40 GiB."""
    entries = [(f"t{i}", _tensor("DoubleStorage", "0", 1, 0, (2**27,), (0,))) for i in range(40)]
    path = write_pth(tmp / "stride0.pth", _state_dict_pickle(entries), {"0": b"\0" * 8})
    from minicct.io.torch_io import load_state_dict
    load_state_dict(path)
    return "wrong"


@case(2)
def case_pth_transposed_views(tmp):
    """120 transposed views of one 4 MB storage: each view copied -> 480 MB from a 4 MB file."""
    entries = [(f"t{i}", _tensor("FloatStorage", "0", 1 << 20, 0, (1024, 1024), (1, 1024))) for i in range(120)]
    path = write_pth(tmp / "views.pth", _state_dict_pickle(entries), {"0": b"\0" * (4 << 20)})
    from minicct.io.torch_io import load_state_dict
    load_state_dict(path)
    return "wrong"


@case(2)
def case_pth_deflate_bomb(tmp):
    """A storage member deflated 1000:1 (256 MiB of zeros in a ~0.3 MB file)."""
    n = 256 << 20
    path = tmp / "bomb.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _state_dict_pickle(
            [("w", _tensor("FloatStorage", "0", n // 4, 0, (n // 4,), (1,)))]))
        zf.writestr("archive/byteorder", b"little")
        info = zipfile.ZipInfo("archive/data/0")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as f:
            zero = bytes(8 << 20)
            for _ in range(n // len(zero)):
                f.write(zero)
        zf.writestr("archive/version", b"3\n")
    from minicct.io.torch_io import load_state_dict
    load_state_dict(path)
    return "wrong"


@case(2)
def case_npz_unused_big_entry(tmp):
    """A valid checkpoint plus an unused 320 MiB entry (deflated to ~0.3 MB): load must not inflate it."""
    from minicct import model as M
    from minicct.io.npz_checkpoint import load_checkpoint, save_checkpoint
    cfg = tiny_cfg()
    path = save_checkpoint(tmp / "big.npz", M.init_params(cfg, np.random.default_rng(0)), cfg)
    n = 320 << 20
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (n // 4,)})
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo("junk.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as f:
            f.write(header.getvalue())
            zero = bytes(8 << 20)
            for _ in range(n // len(zero)):
                f.write(zero)
    params, cfg2, _, _ = load_checkpoint(path)
    return "ok" if cfg2 == cfg and set(params) == set(M.param_shapes(cfg)) else "wrong"


@case(2)
def case_npz_param_header_lies(tmp):
    """A parameter entry whose .npy header claims (2**20, 2**20) float32 (4 TiB) in a few bytes."""
    from minicct import model as M
    from minicct.io.npz_checkpoint import load_checkpoint, save_checkpoint
    cfg = tiny_cfg()
    path = save_checkpoint(tmp / "lie.npz", M.init_params(cfg, np.random.default_rng(0)), cfg)
    name = "param/classifier.fc.bias.npy"
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**20, 2**20)})
    members[name] = header.getvalue() + b"\0" * 64
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    load_checkpoint(path)
    return "wrong"


# ------------------------------------------------------------------------------ defect 5 (checkpoint part)

@case(5)
def case_npz_nan_parameters(tmp):
    """A checkpoint whose parameters are all NaN: evaluate must refuse it, naming a parameter."""
    from minicct import model as M
    from minicct.io.npz_checkpoint import save_checkpoint
    cfg = M.get_config("classroom", num_classes=20)
    params = {k: np.full(s, np.nan, np.float32) for k, s in M.param_shapes(cfg).items()}
    path = save_checkpoint(tmp / "nan.npz", params, cfg)
    return _cli_verdict(["evaluate", "--checkpoint", str(path), "--limit", "50"])


# ------------------------------------------------------------------------------- defect 9: crashes

@case(9)
def case_cifar_pickle_nested_key(tmp):
    from minicct.io.safe_pickle import restricted_load
    restricted_load(nested_key_pickle())
    return "wrong"


@case(9)
def case_pth_pickle_nested_key(tmp):
    pkl = nested_key_pickle()
    path = write_pth(tmp / "nested.pth", pkl, {})
    from minicct.io.torch_io import load_state_dict
    load_state_dict(path)
    return "wrong"


@case(9)
def case_cifar_pickle_topdown_chain(tmp):
    """A chain of lists built top-down through the memo (each new list appended to the previous one): no
    single opcode nests deeply, the result is 100 000 deep (repr/comparison recursion)."""
    ops = [pickle.PROTO + b"\x02", pickle.EMPTY_LIST, pickle.BINPUT + b"\x00"]   # root stays on the stack
    for _ in range(100_000):  # push the current innermost list, make a new one, memoize it, append it, pop
        ops += [pickle.BINGET + b"\x00", pickle.EMPTY_LIST, pickle.BINPUT + b"\x00", pickle.APPEND, pickle.POP]
    ops += [pickle.STOP]
    from minicct.io.safe_pickle import restricted_load
    obj = restricted_load(b"".join(ops))
    repr(obj)
    return "wrong"


@case(9)
def case_flowers_decompression_bomb(tmp):
    """A JPEG whose header claims 60000 x 60000 pixels, inside the Flowers archive."""
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    i = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, 60000, 60000)
    tar_path = tmp / "102flowers.tgz"
    with tarfile.open(tar_path, "w:gz") as tar:
        info = tarfile.TarInfo("jpg/image_00001.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(bytes(data)))
    from minicct.datasets.flowers import read_flowers_images
    try:
        read_flowers_images(tar_path, [1], 32)
    except ValueError as e:
        return "clear" if "image_00001" in str(e) else "traceback"
    return "wrong"


# ------------------------------------------------------------------------------- defect 7: downloads

PAYLOAD = np.random.default_rng(1).integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
GZ_FILE = gzip.compress(PAYLOAD, mtime=0)       # a .gz file as served by a server that labels it gzip-encoded


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _head(self, status=200, length=None, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def do_GET(self):
        p = self.path
        try:
            if p == "/file":
                self._head(length=len(PAYLOAD))
                self.wfile.write(PAYLOAD)
            elif p == "/gz":
                self._head(length=len(GZ_FILE), extra=[("Content-Encoding", "gzip")])
                self.wfile.write(GZ_FILE)
            elif p == "/redirect":
                self._head(302, length=0, extra=[("Location", "/file")])
            elif p == "/truncated":
                self._head(length=len(PAYLOAD))
                self.wfile.write(PAYLOAD[:1000])
            elif p == "/announces-less":
                self._head(length=1000)
                self.wfile.write(PAYLOAD)
            elif p == "/stall":
                self._head(length=len(PAYLOAD))
                self.wfile.write(PAYLOAD[:100])
                self.wfile.flush()
                time.sleep(3)
            elif p == "/endless":  # no Content-Length; stops by itself after 64 MiB or 10 s
                self._head()
                chunk, t0 = bytes(1 << 20), time.monotonic()
                for _ in range(64):
                    if time.monotonic() - t0 > 10:
                        break
                    self.wfile.write(chunk)
            else:
                self._head(404, length=0)
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


@contextlib.contextmanager
def local_server():
    """HTTP server on 127.0.0.1 (a free port), stopped on exit."""
    srv = _Server(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def _md5(b):
    return hashlib.md5(b).hexdigest()


@case(7)
def case_download_gzip_encoded(tmp):
    from minicct.io.download import DownloadError, download
    with local_server() as url:
        try:
            path = download(url + "/gz", tmp / "f.gz", _md5(GZ_FILE), len(GZ_FILE), progress=False)
        except DownloadError:
            return "refused"
    return "ok" if path.read_bytes() == GZ_FILE else "wrong"


@case(7)
def case_download_redirect(tmp):
    from minicct.io.download import download
    with local_server() as url:
        path = download(url + "/redirect", tmp / "f", _md5(PAYLOAD), len(PAYLOAD), progress=False)
    return "ok" if path.read_bytes() == PAYLOAD else "wrong"


@case(7)
def case_download_truncated(tmp):
    from minicct.io.download import download
    with local_server() as url:
        download(url + "/truncated", tmp / "f", _md5(PAYLOAD), len(PAYLOAD), progress=False, retries=1)
    return "wrong"


@case(7)
def case_download_announces_less(tmp):
    from minicct.io.download import download
    with local_server() as url:
        download(url + "/announces-less", tmp / "f", _md5(PAYLOAD), len(PAYLOAD), progress=False)
    return "wrong"


@case(7)
def case_download_stall(tmp):
    from minicct.io.download import download
    with local_server() as url:
        download(url + "/stall", tmp / "f", _md5(PAYLOAD), len(PAYLOAD), progress=False, timeout=(2, 0.5),
                 retries=0)
    return "wrong"


@case(7)
def case_download_endless_no_md5(tmp):
    """No Content-Length, no md5, no size: the body must stop at the cap (set to 4 MiB here), not at 64 MiB."""
    from minicct.io import download as dl
    dl.MAX_UNKNOWN_BYTES = 4 << 20
    with local_server() as url:
        path = dl.download(url + "/endless", tmp / "f", None, progress=False)
    return "wrong" if path.stat().st_size > 4 << 20 else "ok"


@case(7)
def case_download_target_is_directory(tmp):
    from minicct.io.download import download
    target = tmp / "f"
    target.mkdir()
    try:
        with local_server() as url:
            download(url + "/file", target, _md5(PAYLOAD), len(PAYLOAD), progress=False)
    except Exception as exc:  # noqa: BLE001
        if (tmp / "f.part").exists():
            return "leftover"
        raise exc
    return "wrong"


@case(7)
def case_download_handwritten_stamp(tmp):
    """A wrong file with a hand-written .md5ok stamp (expected md5, its size and mtime) must be hashed."""
    from minicct.io.download import RemoteFile, fetch
    path = tmp / "f"
    path.write_bytes(b"x" * len(PAYLOAD))
    st = path.stat()
    (tmp / "f.md5ok").write_text(json.dumps({"md5": _md5(PAYLOAD), "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    got = fetch(RemoteFile("http://127.0.0.1:9/f", "f", _md5(PAYLOAD), len(PAYLOAD)), tmp, allow_download=False)
    return "wrong" if got.read_bytes() != PAYLOAD else "ok"


@case(7)
def case_cifar_cache_cut_short(tmp):
    """cifar10.npz with the right source string but 100 of the 50 000 training images."""
    from minicct.datasets import cifar
    from minicct.io.download import atomic_savez
    rng = np.random.default_rng(0)
    atomic_savez(tmp / "cifar10.npz", source=np.array(cifar.CIFAR10.md5),
                 x_train=rng.integers(0, 255, (100, 32, 32, 3), dtype=np.uint8), y_train=np.arange(100) % 10,
                 x_test=rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8), y_test=np.arange(10),
                 class_names=np.array([f"c{i}" for i in range(10)]))
    ds = cifar.load_cifar10(tmp, download=False, progress=False)
    return "wrong" if len(ds.y_train) != 50000 else "ok"


# ------------------------------------------------------------------------------ defect 8: leftovers

_SAVER = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from minicct.io.npz_checkpoint import save_checkpoint
from minicct import model as M
cfg = M.get_config("cct_2_3x2_32")
p = M.init_params(cfg, np.random.default_rng(0))
print("ready", flush=True)
while True:
    save_checkpoint(sys.argv[2], p, cfg, {"pad": [0.0] * 300000})
"""


@case(8)
def case_kill9_during_saves(tmp):
    """SIGKILL a process that saves a checkpoint in a loop, at 4 random moments; then one normal save.
    The checkpoint must stay loadable every time, and no temporary may remain after the normal save."""
    from minicct import model as M
    from minicct.io.npz_checkpoint import load_checkpoint, save_checkpoint
    repo = str(Path(sys.modules["minicct"].__file__).resolve().parents[1])
    target = tmp / "run" / "model.npz"
    target.parent.mkdir()
    rng = np.random.default_rng(14)
    for delay in rng.uniform(0.3, 1.2, size=4):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, repo, str(target)], stdout=subprocess.PIPE)
        try:
            proc.stdout.readline()
            time.sleep(float(delay))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc.stdout.close()
        if target.exists():
            load_checkpoint(target)          # raises if a broken file sits under the final name
    cfg = M.get_config("cct_2_3x2_32")
    save_checkpoint(target, M.init_params(cfg, np.random.default_rng(1)), cfg)
    left = [p.name for p in target.parent.iterdir() if p.name != "model.npz"]
    return "leftover" if left else "ok"


# ------------------------------------------------------------------------- defect 6: output paths, overwrite

def _tiny_train_args(out, extra=()):
    return ["train", "--max-train", "64", "--batch-size", "64", "--epochs", "1", "--out", str(out), *extra]


@case(6, "cli")
def case_train_out_existing_model(tmp):
    out = tmp / "trained.npz"
    out.write_bytes(b"a trained model")
    v = _cli_verdict(_tiny_train_args(out))
    if out.read_bytes() != b"a trained model":
        return "lost"
    return v


@case(6, "cli")
def case_train_out_under_a_file(tmp):
    (tmp / "afile").write_text("x")
    return _cli_verdict(_tiny_train_args(tmp / "afile" / "m.npz"))


@case(6, "cli")
def case_train_out_is_directory(tmp):
    return _cli_verdict(_tiny_train_args(tmp))


@case(6, "cli")
def case_snp_out_under_a_file(tmp):
    (tmp / "afile").write_text("x")
    rc, out, err = _cli(["snp", "--checkpoint", CKPT, "--n-train", "400", "--epochs", "1", "--modes", "flat",
                         "--out", str(tmp / "afile" / "snp")])
    if rc == 0:
        return "wrong"
    table_shown = re.search(r"^\s*site\s+readout", out, re.M) or "results:" in out
    if "capturing" in out and not table_shown:
        return "lost"              # the whole analysis ran and its numbers were never shown
    return "traceback" if "Traceback" in err else "clear"


# ---------------------------------------------------------------------------- defects 4/10: bad CLI values

BAD_CLI = {
    "evaluate_batch_size_-1": ["evaluate", "--checkpoint", CKPT, "--batch-size", "-1", "--limit", "100"],
    "evaluate_batch_size_0": ["evaluate", "--checkpoint", CKPT, "--batch-size", "0", "--limit", "100"],
    "evaluate_limit_0": ["evaluate", "--checkpoint", CKPT, "--limit", "0"],
    "evaluate_limit_-1": ["evaluate", "--checkpoint", CKPT, "--limit", "-1"],
    "evaluate_limit_too_many": ["evaluate", "--checkpoint", CKPT, "--limit", "100000"],
    "evaluate_checkpoint_is_dir": ["evaluate", "--checkpoint", "."],
    "train_max_train_0": ["train", "--max-train", "0", "--epochs", "1", "--batch-size", "512"],
    "train_max_train_-64": ["train", "--max-train", "-9900", "--epochs", "1", "--batch-size", "64"],
    "train_epochs_0": ["train", "--epochs", "0", "--max-train", "64", "--batch-size", "64"],
    "train_batch_size_0": ["train", "--batch-size", "0", "--max-train", "64", "--epochs", "1"],
    "train_mixup_-1": ["train", "--mixup", "-1", "--max-train", "64", "--batch-size", "64", "--epochs", "1"],
    "train_cutmix_-1": ["train", "--cutmix", "-1", "--max-train", "64", "--batch-size", "64", "--epochs", "1"],
    "train_warmup_-1": ["train", "--warmup", "-1", "--max-train", "64", "--batch-size", "64", "--epochs", "1"],
    "train_smoothing_1.5": ["train", "--smoothing", "1.5", "--max-train", "64", "--batch-size", "64",
                            "--epochs", "1"],
    "train_lr_nan": ["train", "--lr", "nan", "--max-train", "64", "--batch-size", "64", "--epochs", "1"],
    "train_lr_inf": ["train", "--lr", "inf", "--max-train", "64", "--batch-size", "64", "--epochs", "1"],
    "train_lr_-1": ["train", "--lr", "-1", "--max-train", "64", "--batch-size", "64", "--epochs", "1"],
    "train_weight_decay_nan": ["train", "--weight-decay", "nan", "--max-train", "64", "--batch-size", "64",
                               "--epochs", "1"],
    "train_seed_-1": ["train", "--seed", "-1", "--max-train", "64", "--batch-size", "64", "--epochs", "1"],
    "train_num_heads_0": ["train", "--config-json", '{"num_heads": 0}', "--max-train", "64", "--batch-size", "64",
                          "--epochs", "1"],
    "train_stride_0": ["train", "--config-json", '{"stride": 0}', "--max-train", "64", "--batch-size", "64",
                       "--epochs", "1"],
    "train_pooling_stride_0": ["train", "--config-json", '{"pooling_stride": 0}', "--max-train", "64",
                               "--batch-size", "64", "--epochs", "1"],
    "train_config_json_list": ["train", "--config-json", "[1, 2]", "--max-train", "64", "--batch-size", "64",
                               "--epochs", "1"],
    "train_config_json_bad_type": ["train", "--config-json", '{"num_layers": "2"}', "--max-train", "64",
                                   "--batch-size", "64", "--epochs", "1"],
    "train_resume_missing": ["train", "--resume", "no-such.npz", "--max-train", "64", "--batch-size", "64",
                             "--epochs", "1"],
    "snp_n_train_0": ["snp", "--checkpoint", CKPT, "--n-train", "0", "--epochs", "1", "--modes", "flat"],
    "snp_n_train_-5": ["snp", "--checkpoint", CKPT, "--n-train", "-9800", "--epochs", "1", "--modes", "flat"],
    "snp_epochs_0": ["snp", "--checkpoint", CKPT, "--n-train", "400", "--epochs", "0", "--modes", "flat"],
    "snp_threshold_2": ["snp", "--checkpoint", CKPT, "--n-train", "400", "--epochs", "1", "--modes", "flat",
                        "--threshold", "2"],
    "snp_threshold_-1": ["snp", "--checkpoint", CKPT, "--n-train", "400", "--epochs", "1", "--modes", "flat",
                         "--threshold", "-1"],
    "snp_modes_bad": ["snp", "--checkpoint", CKPT, "--n-train", "400", "--epochs", "1", "--modes", "flat,foo"],
    "snp_memory_gb_0": ["snp", "--checkpoint", CKPT, "--n-train", "400", "--epochs", "1", "--modes", "flat",
                        "--memory-gb", "0"],
    "snp_n_train_few_classes": ["snp", "--checkpoint", CKPT, "--n-train", "20", "--epochs", "1", "--modes",
                                "flat"],
}


# accepted by a CLI that does not check them, these give a correct (if slow or re-counted) result: not "wrong"
HARMLESS_IF_ACCEPTED = {"evaluate_limit_too_many", "snp_memory_gb_0"}


def _bad_cli_case(argv, name):
    def fn(tmp):
        a = list(argv)
        if a[0] == "train":
            a += ["--out", str(tmp / "m.npz")]
        if a[0] == "snp":
            a += ["--out", str(tmp / "snp")]
        v = _cli_verdict(a)
        return "accepted" if v == "wrong" and name in HARMLESS_IF_ACCEPTED else v
    return fn


for _name, _argv in BAD_CLI.items():
    _defect = 4 if "config" not in _name and "dir" not in _name else 10
    CASES["cli_" + _name] = (_defect, "cli", _bad_cli_case(_argv, _name))


# =============================================================================== issue 24: the new surfaces
# Training checkpoints, image folders, features files, export, replicate, forked workers. Cases that could
# blow up memory, hang or leave processes run their hostile part in a child process (`_isolated`): peak RSS
# above MEMORY_BLOWUP_BYTES is "memory", more than ISOLATED_TIMEOUT seconds is "hang". Errors that must name
# what was wrong are checked by `_names`: a message without the file/array/parameter is "misleading".

INNER_PEAK = [0]            # largest peak RSS of an isolated case's child (the census reports it)
ISOLATED_TIMEOUT = 150.0   # generous: a loaded 2-core machine; the fixed code needs < 15 s of CPU
PROBES: dict = {}


def _repo() -> str:
    import minicct
    return str(Path(minicct.__file__).resolve().parents[1])


def _isolated(defect, group="lib", timeout=None):
    """Register a case whose body runs in its own process (memory measured, time bounded)."""
    def deco(fn):
        name = fn.__name__.removeprefix("case_")
        PROBES[name] = fn

        def run(tmp):
            import minicct
            repo = str(Path(minicct.__file__).resolve().parents[1])
            env = dict(os.environ, PYTHONPATH=repo, OPENBLAS_NUM_THREADS="1")
            t = timeout or ISOLATED_TIMEOUT
            p = subprocess.Popen([sys.executable, __file__, "--probe", name, str(tmp), repo], env=env, cwd=tmp,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            try:
                out, err = p.communicate(timeout=t)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
                return "hang"
            line = [x for x in out.splitlines() if x.startswith("VERDICT ")]
            if not line:
                return "memory" if "MemoryError" in err or p.returncode < 0 else "traceback"
            r = json.loads(line[-1][8:])
            INNER_PEAK[0] = max(INNER_PEAK[0], r["peak_bytes"])
            if r["peak_bytes"] > MEMORY_BLOWUP_BYTES:
                return "memory"
            return r["verdict"]
        CASES[name] = (defect, group, run)
        return fn
    return deco


def _probe_main(name, tmp, repo):
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    sys.path.insert(0, repo)
    try:
        verdict = PROBES[name](Path(tmp))
    except Exception as exc:  # noqa: BLE001
        verdict = classify(exc)
        if verdict == "clear" and getattr(PROBES[name], "must_name", None):
            verdict = _names(exc, *PROBES[name].must_name)
    print("VERDICT " + json.dumps({"verdict": verdict, "peak_bytes": _own_peak()}), flush=True)


def _own_peak() -> int:
    """Peak RSS of this process's own memory: VmHWM (Linux; ru_maxrss would include the RSS of the parent it
    was forked from, e.g. a big pytest process), else ru_maxrss."""
    import resource
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _names(exc_or_text, *words) -> str:
    """'clear' if the error text names every one of `words` (case-insensitive), else 'misleading'."""
    text = str(exc_or_text).lower()
    return "clear" if all(w.lower() in text for w in words) else "misleading"


def _expect_error(fn, *words):
    """Run fn(): returning is 'wrong'; an error is judged by classify and, if clear, must name `words`."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        v = classify(exc)
        return _names(exc, *words) if v == "clear" else v
    return "wrong"


def _cli_error(argv, *words) -> str:
    """A CLI run that must fail with an error line naming `words`."""
    rc, out, err = _cli(argv)
    if rc == 0:
        return "wrong"
    if "Traceback" in err or "unexpected" in err:
        return "traceback"
    return _names(err, *words)


def _classroom():
    from minicct.io.npz_checkpoint import load_checkpoint
    params, cfg, _, _ = load_checkpoint(CKPT)
    return params, cfg


def _write_pth_of(path, params, poison=None):
    """params as a .pth (torch's zip layout); `poison` = (name, value) written into that tensor's first element
    after the file is made (so the writer's own checks do not see it)."""
    from minicct.io.torch_io import from_params, save_state_dict
    save_state_dict(from_params(params), path)
    if poison is None:
        return path
    name, value = poison
    idx = list(params).index(name)
    with zipfile.ZipFile(path) as zf:
        members = [(i, zf.read(i.filename)) for i in zf.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for info, data in members:
            if info.filename == f"archive/data/{idx}":
                data = np.float32(value).tobytes() + data[4:]
            zf.writestr(info, data)
    return path


def _toy_data(seed=0, n=64, size=16, name="toy", black=False):
    from minicct.datasets.base import Dataset
    rng = np.random.default_rng(seed)
    x = np.zeros((n, size, size, 3), np.uint8) if black else rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    y = np.arange(n) % 3
    return Dataset(name, x, y, x[:30], y[:30], ["a", "b", "c"], np.full(3, 0.5, np.float32),
                   np.full(3, 0.25, np.float32))


def _features(path, y_train, y_test, sites=None, **extra):
    rng = np.random.default_rng(0)
    arrays = {"y_train": np.asarray(y_train), "y_test": np.asarray(y_test)}
    for s, (T, D) in (sites or {"block": (2, 8)}).items():
        arrays[f"train/{s}"] = rng.standard_normal((len(y_train), T, D)).astype(np.float32)
        arrays[f"test/{s}"] = rng.standard_normal((len(y_test), T, D)).astype(np.float32)
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


def _deflated_member(zf, name, header_shape, dtype="<f4", nbytes=None):
    """Append a .npy member of zeros whose header says `header_shape`, deflated (~1000:1)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": header_shape})
    n = nbytes if nbytes is not None else math.prod(header_shape) * np.dtype(dtype).itemsize
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as f:
        f.write(header.getvalue())
        zero = bytes(8 << 20)
        for _ in range(n // len(zero)):
            f.write(zero)
        f.write(bytes(n % len(zero)))


# ------------------------------------------------------------------------------------- 24: data lost

@case("24-lost", "cli")
def case_export_out_existing_file(tmp):
    out = tmp / "model.pth"
    out.write_bytes(b"somebody's weights")
    v = _cli_verdict(["export", "--checkpoint", CKPT, "--out", str(out)])
    return "lost" if out.read_bytes() != b"somebody's weights" else v


@case("24-lost", "cli")
def case_export_out_is_the_input(tmp):
    src = tmp / "c.npz"
    src.write_bytes(Path(CKPT).read_bytes())
    before = src.read_bytes()
    v = _cli_verdict(["export", "--checkpoint", str(src), "--out", str(src)])
    return "lost" if src.read_bytes() != before else v


@case("24-lost", "cli")
def case_export_overwrite_allowed(tmp):
    """--overwrite replaces the file (good input: must work)."""
    out = tmp / "m.npz"
    out.write_bytes(b"old")
    rc, o, e = _cli(["export", "--checkpoint", CKPT, "--out", str(out), "--overwrite"])
    if rc != 0:
        return "refused"
    from minicct.io.npz_checkpoint import load_checkpoint
    load_checkpoint(out)
    return "ok"


_REPLICATE_FAST = ["--n-train", "400", "--epochs", "1", "--seeds", "2", "--draws", "10", "--n-perm", "50",
                   "--modes", "flat"]


@case("24-lost", "cli")
def case_replicate_out_is_a_file(tmp):
    (tmp / "afile").write_text("x")
    rc, out, err = _cli(["replicate", "--checkpoint", CKPT, *_REPLICATE_FAST, "--out", str(tmp / "afile")])
    if rc == 0:
        return "wrong"
    if "==" in out:                                   # the analysis ran, then its output could not be written
        return "lost"
    return "traceback" if "Traceback" in err else "clear"


@case("24-lost", "cli")
def case_replicate_out_unwritable(tmp):
    ro = tmp / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):            # root ignores permissions: nothing to test
            return "ok"
        rc, out, err = _cli(["replicate", "--checkpoint", CKPT, *_REPLICATE_FAST, "--out", str(ro / "sub")])
    finally:
        os.chmod(ro, 0o700)
    if rc == 0:
        return "wrong"
    return "lost" if "==" in out else ("traceback" if "Traceback" in err else "clear")


@case("24-lost", "cli")
def case_replicate_same_file_names(tmp):
    """Two checkpoints both called model.npz: each run's outputs must survive (analysis stubbed for speed)."""
    import minicct.analysis.replicate as R
    for d in ("a", "b"):
        (tmp / d).mkdir()
        (tmp / d / "model.npz").write_bytes(Path(CKPT).read_bytes())
    saved = {k: getattr(R, k) for k in ("replicate", "write_outputs", "format_claims_table",
                                          "format_positions_table")}
    seen = []

    def fake_replicate(params, cfg, data, **kw):
        seen.append(float(params["classifier.fc.bias"][0]))
        return {"positions": {}, "rows": [], "tag": len(seen)}

    def fake_write(res, out, title):
        from minicct.io.atomic import atomic_write_text
        out = Path(out)
        atomic_write_text(out / "claims.json", json.dumps({"tag": res["tag"]}))
        return {"json": str(out / "claims.json"), "md": "-", "png": "-"}
    R.replicate, R.write_outputs = fake_replicate, fake_write
    R.format_claims_table = lambda *a, **k: "table"
    R.format_positions_table = lambda *a, **k: "positions"
    try:
        rc, out, err = _cli(["replicate", "--checkpoint", str(tmp / "a" / "model.npz"), str(tmp / "b" / "model.npz"),
                             *_REPLICATE_FAST, "--out", str(tmp / "rep")])
    finally:
        for k, v in saved.items():
            setattr(R, k, v)
    if rc != 0:
        return "refused"
    tags = sorted(json.loads(p.read_text())["tag"] for p in (tmp / "rep").rglob("claims.json"))
    return "ok" if tags == [1, 2] else "lost"


_FIG_WRITER = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from minicct import plots
print("ready", flush=True)
while True:
    fig, ax = plots.plt.subplots(figsize=(12, 9))
    ax.imshow(np.random.default_rng(0).random((400, 400)))
    plots._save(fig, sys.argv[2])
"""


@case("24-lost")
def case_figure_kill9_while_writing(tmp):
    """SIGKILL a process that writes a figure in a loop, at 4 moments: the PNG under the final name is always
    whole (Pillow verifies it), never a 0-byte or cut file."""
    from PIL import Image
    repo = _repo()
    target = tmp / "figs" / "fig.png"
    target.parent.mkdir()
    for delay in np.random.default_rng(24).uniform(0.2, 1.5, size=4):
        p = subprocess.Popen([sys.executable, "-c", _FIG_WRITER, repo, str(target)], stdout=subprocess.PIPE)
        try:
            p.stdout.readline()
            time.sleep(float(delay))
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
            p.stdout.close()
        if target.exists():
            try:
                with Image.open(target) as im:
                    im.verify()
            except Exception:  # noqa: BLE001
                return "lost"
    return "ok"


_DISK_FULL = """
import json, resource, signal, sys
sys.path.insert(0, sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # a write past the limit fails with EFBIG instead
what, out = sys.argv[2], sys.argv[3]
import numpy as np
from minicct import plots
import minicct.analysis.replicate as R
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
try:
    if what == "figure":
        fig, ax = plots.plt.subplots(figsize=(12, 9))
        ax.imshow(np.random.default_rng(0).random((300, 300)))
        plots._save(fig, out + "/fig.png")
    elif what == "json":
        R.write_outputs({"big": list(range(5000))}, out, "t")
    elif what == "md":
        R.format_claims_table = lambda *a, **k: "x" * 20000
        R.write_outputs({"small": 1}, out, "t")
    elif what == "png":
        R.format_claims_table = lambda *a, **k: "table"
        def fig_only(result, path, title=""):
            fig, ax = plots.plt.subplots(figsize=(12, 9))
            ax.imshow(np.random.default_rng(0).random((300, 300)))
            return plots._save(fig, path)
        R.plot_claims_summary = fig_only
        R.write_outputs({"small": 1}, out, "t")
    print("no error")
except OSError as e:
    print("OSError", e)
"""


def _disk_full(tmp, what, name):
    repo = _repo()
    out = tmp / "out"
    out.mkdir()
    old = {n: f"previous {n}".encode() for n in ("fig.png", "claims.json", "claims.md", "claims.png")}
    for n, b in old.items():
        (out / n).write_bytes(b)
    p = subprocess.run([sys.executable, "-c", _DISK_FULL, repo, what, str(out)], capture_output=True, text=True,
                       timeout=120)
    if "no error" in p.stdout:
        return "wrong"
    if (out / name).read_bytes() != old[name]:
        return "lost"
    if [q.name for q in out.iterdir() if q.name.endswith(".tmp")]:
        return "leftover"
    return "clear" if "OSError" in p.stdout else "traceback"


@case("24-lost")
def case_disk_full_figure(tmp):
    return _disk_full(tmp, "figure", "fig.png")


@case("24-lost")
def case_disk_full_claims_json(tmp):
    return _disk_full(tmp, "json", "claims.json")


@case("24-lost")
def case_disk_full_claims_md(tmp):
    return _disk_full(tmp, "md", "claims.md")


@case("24-lost")
def case_disk_full_claims_png(tmp):
    return _disk_full(tmp, "png", "claims.png")


# -------------------------------------------------------------------------------- 24: silently wrong

@case("24-wrong", "cli")
def case_pth_nan_weight_evaluate(tmp):
    params, cfg = _classroom()
    path = _write_pth_of(tmp / "nan.pth", params, ("classifier.blocks.1.linear1.weight", np.nan))
    return _cli_error(["evaluate", "--checkpoint", str(path), "--model", "classroom", "--limit", "50"],
                      "classifier.blocks.1.linear1.weight")


@case("24-wrong", "cli")
def case_pth_inf_weight_export(tmp):
    params, cfg = _classroom()
    path = _write_pth_of(tmp / "inf.pth", params, ("classifier.fc.weight", np.inf))
    v = _cli_error(["export", "--checkpoint", str(path), "--model", "classroom", "--out", str(tmp / "o.pth")],
                   "classifier.fc.weight")
    return "wrong" if (tmp / "o.pth").exists() else v


@case("24-wrong")
def case_export_writer_refuses_nan(tmp):
    from minicct.io.torch_io import save_state_dict
    return _expect_error(lambda: save_state_dict({"w": np.array([1.0, np.nan], np.float32)}, tmp / "w.pth"), "'w'")


@case("24-wrong")
def case_pth_tied_storages_untied_on_load(tmp):
    """Two parameters of the same shape that view one storage (tied), and two that overlap: after loading they
    must be independent arrays (else a fine-tune updates both through one)."""
    from minicct.io.checkpoints import load_any_checkpoint
    params, cfg = _classroom()
    names = list(params)
    entries = []
    storages = {}
    for i, k in enumerate(names):
        a = np.ascontiguousarray(params[k], "<f4")
        storages[str(i)] = a.tobytes()
        entries.append((k, _tensor("FloatStorage", str(i), a.size, 0, a.shape,
                                   tuple(int(s) // 4 for s in a.strides) if a.ndim else ())))
    i_w, i_b = names.index("classifier.norm.weight"), names.index("classifier.norm.bias")
    n = params["classifier.norm.weight"].size
    entries[i_b] = ("classifier.norm.bias", _tensor("FloatStorage", str(i_w), n, 0, (n,), (1,)))      # tied
    i_1, i_2 = names.index("classifier.blocks.0.norm1.weight"), names.index("classifier.blocks.0.norm1.bias")
    storages[str(i_1)] = np.arange(n + 1, dtype="<f4").tobytes()
    entries[i_1] = ("classifier.blocks.0.norm1.weight", _tensor("FloatStorage", str(i_1), n + 1, 0, (n,), (1,)))
    entries[i_2] = ("classifier.blocks.0.norm1.bias", _tensor("FloatStorage", str(i_1), n + 1, 1, (n,), (1,)))
    path = write_pth(tmp / "tied.pth", _state_dict_pickle(entries), storages)
    p, _, _ = load_any_checkpoint(path, model="classroom")
    shared = [(a, b) for a in p for b in p if a < b and np.shares_memory(p[a], p[b])]
    return "wrong" if shared else "ok"


@case("24-wrong")
def case_pth_duplicate_storage_member(tmp):
    params, cfg = _classroom()
    path = _write_pth_of(tmp / "dup.pth.tar", params)
    idx = list(params).index("classifier.fc.bias")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")               # zipfile: "Duplicate name"
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr(f"archive/data/{idx}", np.full(params["classifier.fc.bias"].shape, 7, "<f4").tobytes())
    from minicct.io.checkpoints import load_any_checkpoint
    return _expect_error(lambda: load_any_checkpoint(path, model="classroom"), "more than once")


@case("24-wrong")
def case_npz_dataset_ambiguous_layout(tmp):
    from minicct.datasets.custom import load_npz_dataset
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (12, 3, 3, 3), dtype=np.uint8)
    np.savez(tmp / "d.npz", x_train=x, y_train=np.arange(12) % 3, x_test=x, y_test=np.arange(12) % 3)
    return _expect_error(lambda: load_npz_dataset(tmp / "d.npz"), "layout")


@case("24-wrong")
def case_npz_dataset_layout_given(tmp):
    """The same 3x3x3 images with layout='NCHW': read as CHW (good input)."""
    from minicct.datasets.custom import load_npz_dataset
    x = np.random.default_rng(0).integers(0, 255, (12, 3, 3, 3), dtype=np.uint8)
    np.savez(tmp / "d.npz", x_train=x, y_train=np.arange(12) % 3, x_test=x, y_test=np.arange(12) % 3,
             layout="NCHW")
    try:
        d = load_npz_dataset(tmp / "d.npz")
    except ValueError:
        return "refused"
    return "ok" if np.array_equal(d.x_train, x.transpose(0, 2, 3, 1)) else "wrong"


@case("24-wrong")
def case_npz_dataset_std_inf(tmp):
    from minicct.datasets.custom import load_npz_dataset
    x = np.random.default_rng(0).integers(0, 255, (12, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp / "d.npz", x_train=x, y_train=np.arange(12) % 3, x_test=x, y_test=np.arange(12) % 3,
             mean=np.full(3, 0.5), std=np.array([0.2, np.inf, 0.2]))
    return _expect_error(lambda: load_npz_dataset(tmp / "d.npz"), "std")


@case("24-wrong")
def case_folder_png_16bit(tmp):
    """A 16-bit grey PNG (value 40000 of 65535): read as ~156 of 255, not clipped to 255."""
    from PIL import Image

    from minicct.datasets.custom import load_folder_dataset
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp / "f" / split / c).mkdir(parents=True)
            Image.fromarray(np.full((20, 20), 40000 if c == "a" else 10000, np.uint16)).save(
                tmp / "f" / split / c / "x.png")
    d = load_folder_dataset(tmp / "f", 8, root=tmp / "cache", progress=False)
    v = int(d.x_train[d.y_train == 0][0, 4, 4, 0])
    return "ok" if abs(v - 156) <= 1 else "wrong"


@case("24-wrong", "cli")
def case_snp_arrays_one_class(tmp):
    path = _features(tmp / "f.npz", np.zeros(40, int), np.zeros(20, int))
    return _cli_error(["snp-arrays", str(path), "--epochs", "1", "--modes", "flat"], "class")


@case("24-wrong", "cli")
def case_snp_arrays_class_missing_in_training(tmp):
    path = _features(tmp / "f.npz", np.arange(40) % 2, np.arange(21) % 3)
    return _cli_error(["snp-arrays", str(path), "--epochs", "1", "--modes", "flat"], "2", "train")


@case("24-wrong")
def case_train_resume_other_data(tmp):
    import minicct.train.loop as loop
    cfg = tiny_cfg()
    tc = loop.TrainConfig(epochs=1, batch_size=32, lr=1e-2, warmup_epochs=0.0, seed=0)
    ck = tmp / "ck.npz"
    loop.train(cfg, _toy_data(0), tc, checkpoint=ck, quiet=True)
    return _expect_error(lambda: loop.train(cfg, _toy_data(1), tc, checkpoint=tmp / "ck2.npz", resume=ck,
                                            quiet=True), "--data-seed")


@case("24-wrong")
def case_lib_normalise_threshold_2(tmp):
    from minicct.analysis.snp import normalise_threshold
    V = np.random.default_rng(0).random((4, 3, 3))
    return _expect_error(lambda: normalise_threshold(V, 2), "threshold")


@case("24-wrong")
def case_lib_train_readout_lr_nan(tmp):
    from minicct.analysis.readout import train_readout
    rng = np.random.default_rng(0)
    A, y = rng.standard_normal((30, 2, 4)).astype(np.float32), np.arange(30) % 3
    return _expect_error(lambda: train_readout(A, y, 3, epochs=1, lr=float("nan")), "lr")


@case("24-wrong")
def case_lib_forward_nan_parameters(tmp):
    from minicct import model as M
    cfg = tiny_cfg()
    p = M.init_params(cfg, np.random.default_rng(0))
    p["classifier.blocks.0.linear2.weight"][0, 0] = np.nan
    x = np.zeros((2, 3, 16, 16), np.float32)
    return _expect_error(lambda: M.forward(p, x, cfg), "classifier.blocks.0.linear2.weight")


@case("24-wrong")
def case_lib_to_model_input_float(tmp):
    from minicct.datasets.base import to_model_input
    x = np.full((2, 8, 8, 3), 0.5, np.float32)
    return _expect_error(lambda: to_model_input(x, np.zeros(3), np.ones(3)), "uint8")


@case("24-wrong")
def case_lib_evaluate_empty(tmp):
    from minicct import model as M
    from minicct.train.loop import evaluate
    cfg = tiny_cfg()
    p = M.init_params(cfg, np.random.default_rng(0))
    return _expect_error(lambda: evaluate(p, cfg, np.zeros((0, 16, 16, 3), np.uint8), np.zeros(0, int),
                                          np.zeros(3), np.ones(3)), "image")


# ------------------------------------------------------------------------------ 24: hangs, blow-ups

def _shared_refs_pickle(inner: bytes, fan=1000, levels=3) -> bytes:
    """{'state_dict': <inner>, 'optimizer': L} where L nests `levels` lists, each holding the one list below
    `fan` times: a few KB, fan**levels paths (10**9 for the default)."""
    body = inner[2:-1]                                      # drop PROTO 2 and STOP
    ops = [pickle.EMPTY_LIST, pickle.LONG_BINPUT + struct.pack("<I", 900000), pickle.POP]
    for lvl in range(1, levels + 1):
        ops += [pickle.EMPTY_LIST, pickle.MARK]
        ops += [pickle.LONG_BINGET + struct.pack("<I", 900000 + lvl - 1)] * fan
        ops += [pickle.APPENDS, pickle.LONG_BINPUT + struct.pack("<I", 900000 + lvl), pickle.POP]
    ops += [pickle.LONG_BINGET + struct.pack("<I", 900000 + levels)]
    return (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK + _pkl_str("state_dict") + body
            + _pkl_str("optimizer") + b"".join(ops) + pickle.SETITEMS + pickle.STOP)


@_isolated("24-blowup")
def case_pth_training_checkpoint_shared_refs(tmp):
    params, cfg = _classroom()
    plain = _write_pth_of(tmp / "plain.pth", params)
    with zipfile.ZipFile(plain) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["archive/data.pkl"] = _shared_refs_pickle(members["archive/data.pkl"])
    path = tmp / "ckpt.pth.tar"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    from minicct.io.checkpoints import load_any_checkpoint
    p, c, meta = load_any_checkpoint(path, model="classroom")
    return "ok" if c == cfg and all(np.array_equal(p[k], params[k]) for k in params) else "wrong"


def _npz_dataset(path, n=30, size=8):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    np.savez(path, x_train=x, y_train=np.arange(n) % 3, x_test=x, y_test=np.arange(n) % 3)
    return path


@_isolated("24-blowup")
def case_npz_dataset_unused_bomb(tmp):
    """A valid npz: dataset plus an unused member deflated 1000:1 (320 MiB): it must not be inflated."""
    from minicct.datasets.custom import load_npz_dataset
    path = _npz_dataset(tmp / "d.npz")
    with zipfile.ZipFile(path, "a") as zf:
        _deflated_member(zf, "junk.npy", ((320 << 20) // 4,))
    d = load_npz_dataset(path)
    return "ok" if len(d.y_train) == 30 else "wrong"


@_isolated("24-blowup")
def case_npz_dataset_header_lies(tmp):
    """x_train's .npy header claims 2**24 images of 32x32x3 (51 GB) in a few bytes."""
    from minicct.datasets.custom import load_npz_dataset
    path = _npz_dataset(tmp / "d.npz")
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    h = io.BytesIO()
    np.lib.format.write_array_header_1_0(h, {"descr": "|u1", "fortran_order": False, "shape": (2**24, 32, 32, 3)})
    members["x_train.npy"] = h.getvalue() + bytes(64)
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    load_npz_dataset(path)
    return "wrong"


case_npz_dataset_header_lies.must_name = ("x_train",)


@_isolated("24-blowup")
def case_folder_sparse_huge_file(tmp):
    """A 320 MiB sparse file named like an image in a folder dataset: hashing must not read it into memory."""
    from minicct.datasets.custom import load_folder_dataset
    from PIL import Image
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp / "f" / split / c).mkdir(parents=True)
            Image.new("RGB", (10, 10), (10, 200, 30)).save(tmp / "f" / split / c / "x.png")
    with open(tmp / "f" / "train" / "a" / "huge.png", "wb") as f:
        f.truncate(320 << 20)
    load_folder_dataset(tmp / "f", 8, root=tmp / "cache", progress=False)
    return "wrong"


case_folder_sparse_huge_file.must_name = ("huge.png",)


@_isolated("24-blowup")
def case_features_zip_bomb(tmp):
    """A features file whose site member deflates ~1000:1 to 400 MiB."""
    from minicct.io.features import analyse_features, read_features
    n = 100
    D = (200 << 20) // (4 * n)
    path = tmp / "f.npz"
    np.savez(path, y_train=np.arange(n) % 3, y_test=np.arange(n) % 3)
    with zipfile.ZipFile(path, "a") as zf:
        for split in ("train", "test"):
            _deflated_member(zf, f"{split}/s.npy", (n, 1, D))
    analyse_features(read_features(path), modes=("flat",), epochs=1, progress=None)
    return "wrong"


@_isolated("24-blowup")
def case_features_header_lies(tmp):
    """A site whose header claims [N, 2**20, 2**20] float32 in a few bytes."""
    from minicct.io.features import analyse_features, read_features
    path = _features(tmp / "f.npz", np.arange(40) % 3, np.arange(20) % 3)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    h = io.BytesIO()
    np.lib.format.write_array_header_1_0(h, {"descr": "<f4", "fortran_order": False, "shape": (40, 2**20, 2**20)})
    members["train/block.npy"] = h.getvalue() + bytes(64)
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    analyse_features(read_features(path), modes=("flat",), epochs=1, progress=None)
    return "wrong"


case_features_header_lies.must_name = ("train/block",)


# -------------------------------------------------------------------------------------- 24: orphans

def _children(pid) -> list:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _kill9_with_workers(tmp, argv, out_dir, moments=(0.0, 1.5)):
    """Start `python -m minicct argv`; at each moment after its forked workers appear, SIGKILL it (a new run
    per moment); the workers must be gone within 3 s, and no figure under out_dir may be torn."""
    from PIL import Image
    if not sys.platform.startswith("linux"):
        return "ok"
    repo = _repo()
    env = dict(os.environ, PYTHONPATH=repo, OPENBLAS_NUM_THREADS="1")
    verdict, tested = "ok", 0
    for delay in moments:
        p = subprocess.Popen([sys.executable, "-m", "minicct", *argv], env=env, cwd=tmp,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kids, t0 = [], time.time()
        while not kids and p.poll() is None and time.time() - t0 < 90:
            time.sleep(0.05)
            kids = _children(p.pid)
        if p.poll() is not None:
            continue                                      # finished before forking: nothing to test this time
        time.sleep(delay)
        kids = _children(p.pid) or kids
        p.send_signal(signal.SIGKILL)
        tested += 1
        p.wait(10)
        t1 = time.time()
        while any(_alive(k) for k in kids) and time.time() - t1 < 3:
            time.sleep(0.05)
        left = [k for k in kids if _alive(k)]
        for k in left:                                    # clean up what the code under test left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(k, signal.SIGKILL)
        if left:
            verdict = "orphan"
        for png in Path(out_dir).rglob("*.png"):
            try:
                with Image.open(png) as im:
                    im.verify()
            except Exception:  # noqa: BLE001
                return "lost"
    return verdict if tested else "untested"


_FORKED_SLEEPERS = """
import sys, time
sys.path.insert(0, sys.argv[1])
from minicct.parallel import run_forked
run_forked(lambda i: time.sleep(120), range(2), workers=2)
"""


@case("24-orphan")
def case_run_forked_kill9_workers_die(tmp):
    """kill -9 of a process whose run_forked workers are busy: the workers must die with it."""
    if not sys.platform.startswith("linux"):
        return "ok"
    p = subprocess.Popen([sys.executable, "-c", _FORKED_SLEEPERS, _repo()], env=dict(os.environ,
                         OPENBLAS_NUM_THREADS="1"))
    kids, t0 = [], time.time()
    while len(kids) < 2 and p.poll() is None and time.time() - t0 < 60:
        time.sleep(0.05)
        kids = _children(p.pid)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    t1 = time.time()
    while any(_alive(k) for k in kids) and time.time() - t1 < 3:
        time.sleep(0.05)
    left = [k for k in kids if _alive(k)]
    for k in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(k, signal.SIGKILL)
    return "untested" if not kids else ("orphan" if left else "ok")


@case("24-orphan", "cli")
def case_snp_kill9_leaves_no_workers(tmp):
    return _kill9_with_workers(tmp, ["snp", "--checkpoint", CKPT, "--n-train", "400", "--epochs", "1", "--modes",
                                     "flat", "--out", str(tmp / "snp")], tmp / "snp", moments=(0.3,))


@case("24-orphan", "cli")
def case_replicate_kill9_leaves_no_workers(tmp):
    return _kill9_with_workers(tmp, ["replicate", "--checkpoint", CKPT, *_REPLICATE_FAST, "--out",
                                     str(tmp / "rep")], tmp / "rep", moments=(0.5,))


@case("24-orphan")
def case_export_kill9_never_torn(tmp):
    """SIGKILL `export` at 4 moments: the output is absent or a whole checkpoint, never a torn file."""
    from minicct.io.torch_io import load_state_dict
    repo = _repo()
    env = dict(os.environ, PYTHONPATH=repo, OPENBLAS_NUM_THREADS="1")
    for i, delay in enumerate(np.random.default_rng(7).uniform(0.3, 1.5, size=4)):
        out = tmp / f"o{i}.pth"
        p = subprocess.Popen([sys.executable, "-m", "minicct", "export", "--checkpoint", CKPT, "--out", str(out)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(delay))
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        if out.exists():
            try:
                load_state_dict(out)
            except Exception:  # noqa: BLE001
                return "lost"
    return "ok"


# ---------------------------------------------------------------------------- 24: misleading errors

@case("24-error")
def case_pth_overflowing_dims(tmp):
    entries = [("w", _tensor("FloatStorage", "0", 4, 0, (0, 2**62, 2**62), (1, 1, 1)))]
    path = write_pth(tmp / "over.pth", _state_dict_pickle(entries), {"0": bytes(16)})
    from minicct.io.torch_io import load_state_dict
    return _expect_error(lambda: load_state_dict(path), "over.pth")


@case("24-error")
def case_cifar_pickle_wrong_arguments(tmp):
    """An allowed global called with wrong arguments (TypeError inside the unpickler)."""
    from minicct.io.safe_pickle import restricted_load
    data = (pickle.PROTO + b"\x02" + b"cnumpy.core.multiarray\n_reconstruct\n" + pickle.EMPTY_TUPLE
            + pickle.REDUCE + pickle.STOP)
    return _expect_error(lambda: restricted_load(data), "pickle")


@case("24-error")
def case_cifar_pickle_huge_array(tmp):
    """_reconstruct then BUILD with a state that declares 2**40 float32 backed by 0 bytes."""
    from minicct.io.safe_pickle import restricted_load
    data = (pickle.PROTO + b"\x02" + b"cnumpy.core.multiarray\n_reconstruct\n"
            + _pkl_tuple([b"cnumpy\nndarray\n", _pkl_tuple([_pkl_int(0)]), pickle.SHORT_BINBYTES + b"\x01b"])
            + pickle.REDUCE
            + _pkl_tuple([_pkl_int(1), _pkl_tuple([_pkl_int(2**40)]),
                          b"cnumpy\ndtype\n" + _pkl_tuple([_pkl_str("f4"), pickle.NEWFALSE, pickle.NEWTRUE])
                          + pickle.REDUCE, pickle.NEWFALSE, pickle.SHORT_BINBYTES + b"\x00"])
            + pickle.BUILD + pickle.STOP)
    return _expect_error(lambda: restricted_load(data), "pickle")


@case("24-error")
def case_lib_group_agreement_bad_groups(tmp):
    from minicct.analysis.nulls import group_agreement
    return _expect_error(lambda: group_agreement([[0, 5], [1, 2]], {"g": np.array([0, 0, 1])}, n_draws=10),
                         "groups")


@case("24-error")
def case_lib_forward_missing_parameter(tmp):
    from minicct import model as M
    cfg = tiny_cfg()
    p = M.init_params(cfg, np.random.default_rng(0))
    del p["classifier.blocks.0.linear1.bias"]
    return _expect_error(lambda: M.forward(p, np.zeros((1, 3, 16, 16), np.float32), cfg),
                         "classifier.blocks.0.linear1.bias")


@case("24-error")
def case_lib_train_empty_dataset(tmp):
    import minicct.train.loop as loop
    from minicct.datasets.base import Dataset
    e = np.zeros((0, 16, 16, 3), np.uint8)
    x = np.zeros((4, 16, 16, 3), np.uint8)
    data = Dataset("empty", e, np.zeros(0, np.int64), x, np.arange(4) % 3, ["a", "b", "c"], np.zeros(3),
                   np.ones(3))
    tc = loop.TrainConfig(epochs=1, batch_size=8)
    return _expect_error(lambda: loop.train(tiny_cfg(), data, tc, quiet=True), "training")


@case("24-error")
def case_folder_png_decompression_bomb(tmp):
    """A PNG whose header claims 60000 x 60000 pixels in an image folder."""
    from PIL import Image

    from minicct.datasets.custom import load_folder_dataset
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp / "f" / split / c).mkdir(parents=True)
            Image.new("RGB", (10, 10), (10, 200, 30)).save(tmp / "f" / split / c / "x.png")
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    struct.pack_into(">II", data, 16, 60000, 60000)                 # IHDR width, height
    struct.pack_into(">I", data, 29, zlib_crc(bytes(data[12:29])))
    (tmp / "f" / "train" / "a" / "bomb.png").write_bytes(bytes(data))
    return _expect_error(lambda: load_folder_dataset(tmp / "f", 8, root=tmp / "cache", progress=False),
                         "bomb.png")


def zlib_crc(b: bytes) -> int:
    import zlib
    return zlib.crc32(b) & 0xFFFFFFFF


@case("24-error", "cli")
def case_train_all_black_images(tmp):
    x = np.zeros((64, 16, 16, 3), np.uint8)
    np.savez(tmp / "black.npz", x_train=x, y_train=np.arange(64) % 3, x_test=x[:30], y_test=np.arange(30) % 3)
    return _cli_error(["train", "--dataset", f"npz:{tmp / 'black.npz'}", "--max-train", "64", "--batch-size", "64",
                       "--epochs", "1", "--out", str(tmp / "m.npz")], "same value")


@case("24-error", "cli")
def case_snp_arrays_num_classes_array(tmp):
    path = _features(tmp / "f.npz", np.arange(40) % 3, np.arange(21) % 3, num_classes=np.array([3, 3]))
    return _cli_error(["snp-arrays", str(path), "--epochs", "1", "--modes", "flat"], "num_classes")


@case("24-error", "cli")
def case_snp_arrays_site_without_tokens(tmp):
    path = _features(tmp / "f.npz", np.arange(40) % 3, np.arange(21) % 3, sites={"empty": (0, 8)})
    return _cli_error(["snp-arrays", str(path), "--epochs", "1", "--modes", "flat"], "train/empty")


@case("24-error")
def case_pth_heads_do_not_divide_width(tmp):
    params, cfg = _classroom()
    path = _write_pth_of(tmp / "c.pth", params)
    from minicct.io.checkpoints import load_any_checkpoint
    return _expect_error(lambda: load_any_checkpoint(path, heads=3), "--heads 3")


@case("24-error", "cli")
def case_train_init_from_nan_weights(tmp):
    params, cfg = _classroom()
    path = _write_pth_of(tmp / "nan.pth", params, ("classifier.blocks.0.linear1.weight", np.nan))
    return _cli_error(["train", "--init", str(path), "--model", "classroom", "--max-train", "64", "--batch-size",
                       "64", "--epochs", "1", "--out", str(tmp / "m.npz")], "classifier.blocks.0.linear1.weight")


# ---------------------------------------------------------------------------------------------- census

COLUMNS = ("ok", "clear", "traceback", "wrong", "lost", "leftover", "refused", "memory", "accepted", "hang", "orphan",
           "misleading", "untested")


def _child(name, tmp, repo):
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    sys.path.insert(0, repo)
    os.chdir(tmp)
    verdict = run_case(name, Path(tmp))
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, INNER_PEAK[0])
    if peak > MEMORY_BLOWUP_BYTES and name.startswith(("pth_", "npz_")):
        verdict = "memory"
    print("VERDICT " + json.dumps({"verdict": verdict, "peak_bytes": peak}), flush=True)


def census(repo: str, only=None, timeout=120.0) -> dict:
    import tempfile
    data = Path(tempfile.mkdtemp(prefix="fault-census-data-"))
    emb = Path(__file__).resolve().parents[1] / "data"
    for f in emb.glob("embedded-*.npz"):
        (data / f.name).write_bytes(f.read_bytes())
    rows = {}
    for name in CASES:
        if only and not any(o in name or str(CASES[name][0]).startswith(o) for o in only.split(",")):
            continue
        tmp = tempfile.mkdtemp(prefix="fault-case-")
        env = dict(os.environ, MINICCT_DATA=str(data), PYTHONPATH=repo,
                   OPENBLAS_NUM_THREADS="1")
        t0 = time.time()
        try:
            p = subprocess.run([sys.executable, __file__, "--child", name, tmp, repo], env=env, cwd=tmp,
                               capture_output=True, text=True, timeout=timeout)
            line = [x for x in p.stdout.splitlines() if x.startswith("VERDICT ")]
            if line:
                r = json.loads(line[-1][8:])
            elif p.returncode < 0:
                r = {"verdict": "memory", "peak_bytes": None, "signal": -p.returncode}  # crash (segfault/kill)
            else:
                r = {"verdict": "memory" if "MemoryError" in p.stderr else "traceback", "peak_bytes": None}
        except subprocess.TimeoutExpired:
            r = {"verdict": "wrong", "peak_bytes": None, "timeout": True}
        r["seconds"] = round(time.time() - t0, 1)
        rows[name] = r
        print(f"{name:<40} {r['verdict']:<10} peak {((r.get('peak_bytes') or 0) / 2**20):7.0f} MiB "
              f"{r['seconds']:6.1f}s{'  signal ' + str(r['signal']) if 'signal' in r else ''}", flush=True)
    counts = {c: sum(r["verdict"] == c for r in rows.values()) for c in COLUMNS}
    print("\ncases tried", len(rows), " ".join(f"{c} {n}" for c, n in counts.items()))
    return rows


if __name__ == "__main__":
    import argparse
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        _probe_main(sys.argv[2], sys.argv[3], sys.argv[4])
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4])
        sys.exit(0)
    ap = argparse.ArgumentParser(description="fault census: every case in its own capped process")
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--only", default=None, help="run the cases whose name contains this, or whose defect starts "
                    "with it (comma-separated, e.g. --only 24- for issue 24's cases)")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    ap.add_argument("--summarise", nargs="+", default=None, help="print the table of these --json files")
    a = ap.parse_args()
    if a.summarise:
        rows = {}
        for f in a.summarise:
            rows.update(json.loads(Path(f).read_text()))
        counts = {c: sum(r["verdict"] == c for r in rows.values()) for c in COLUMNS}
        print("cases tried", len(rows), " ".join(f"{c} {n}" for c, n in counts.items()))
        big = max((r.get("peak_bytes") or 0 for k, r in rows.items() if k.startswith("pth_")), default=0)
        print(f"largest peak RSS of a hostile .pth case: {big / 2**20:.0f} MiB")
        sys.exit(0)
    rows = census(str(Path(a.repo).resolve()), a.only, a.timeout)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
