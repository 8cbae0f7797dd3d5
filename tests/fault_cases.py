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
Census (each case in its own process, address space capped at 3 GB, 120 s; peak RSS measured):
    python tests/fault_cases.py                       # this checkout
    python tests/fault_cases.py --repo /work/wt/base  # another checkout (e.g. the baseline)
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tarfile
import threading
import time
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
    from minicct.datasets.download import DownloadError
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
    from minicct.torch_io import load_state_dict
    load_state_dict(path)
    return "wrong"


@case(2)
def case_pth_transposed_views(tmp):
    """120 transposed views of one 4 MB storage: each view copied -> 480 MB from a 4 MB file."""
    entries = [(f"t{i}", _tensor("FloatStorage", "0", 1 << 20, 0, (1024, 1024), (1, 1024))) for i in range(120)]
    path = write_pth(tmp / "views.pth", _state_dict_pickle(entries), {"0": b"\0" * (4 << 20)})
    from minicct.torch_io import load_state_dict
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
    from minicct.torch_io import load_state_dict
    load_state_dict(path)
    return "wrong"


@case(2)
def case_npz_unused_big_entry(tmp):
    """A valid checkpoint plus an unused 320 MiB entry (deflated to ~0.3 MB): load must not inflate it."""
    from minicct import model as M
    from minicct.train.checkpoint import load_checkpoint, save_checkpoint
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
    from minicct.train.checkpoint import load_checkpoint, save_checkpoint
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
    from minicct.train.checkpoint import save_checkpoint
    cfg = M.get_config("classroom", num_classes=20)
    params = {k: np.full(s, np.nan, np.float32) for k, s in M.param_shapes(cfg).items()}
    path = save_checkpoint(tmp / "nan.npz", params, cfg)
    return _cli_verdict(["evaluate", "--checkpoint", str(path), "--limit", "50"])


# ------------------------------------------------------------------------------- defect 9: crashes

@case(9)
def case_cifar_pickle_nested_key(tmp):
    from minicct.datasets.safe_pickle import restricted_load
    restricted_load(nested_key_pickle())
    return "wrong"


@case(9)
def case_pth_pickle_nested_key(tmp):
    pkl = nested_key_pickle()
    path = write_pth(tmp / "nested.pth", pkl, {})
    from minicct.torch_io import load_state_dict
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
    from minicct.datasets.safe_pickle import restricted_load
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
    from minicct.datasets.download import DownloadError, download
    with local_server() as url:
        try:
            path = download(url + "/gz", tmp / "f.gz", _md5(GZ_FILE), len(GZ_FILE), progress=False)
        except DownloadError:
            return "refused"
    return "ok" if path.read_bytes() == GZ_FILE else "wrong"


@case(7)
def case_download_redirect(tmp):
    from minicct.datasets.download import download
    with local_server() as url:
        path = download(url + "/redirect", tmp / "f", _md5(PAYLOAD), len(PAYLOAD), progress=False)
    return "ok" if path.read_bytes() == PAYLOAD else "wrong"


@case(7)
def case_download_truncated(tmp):
    from minicct.datasets.download import download
    with local_server() as url:
        download(url + "/truncated", tmp / "f", _md5(PAYLOAD), len(PAYLOAD), progress=False, retries=1)
    return "wrong"


@case(7)
def case_download_announces_less(tmp):
    from minicct.datasets.download import download
    with local_server() as url:
        download(url + "/announces-less", tmp / "f", _md5(PAYLOAD), len(PAYLOAD), progress=False)
    return "wrong"


@case(7)
def case_download_stall(tmp):
    from minicct.datasets.download import download
    with local_server() as url:
        download(url + "/stall", tmp / "f", _md5(PAYLOAD), len(PAYLOAD), progress=False, timeout=(2, 0.5),
                 retries=0)
    return "wrong"


@case(7)
def case_download_endless_no_md5(tmp):
    """No Content-Length, no md5, no size: the body must stop at the cap (set to 4 MiB here), not at 64 MiB."""
    from minicct.datasets import download as dl
    dl.MAX_UNKNOWN_BYTES = 4 << 20
    with local_server() as url:
        path = dl.download(url + "/endless", tmp / "f", None, progress=False)
    return "wrong" if path.stat().st_size > 4 << 20 else "ok"


@case(7)
def case_download_target_is_directory(tmp):
    from minicct.datasets.download import download
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
    from minicct.datasets.download import RemoteFile, fetch
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
    from minicct.datasets.download import atomic_savez
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
from minicct.train.checkpoint import save_checkpoint
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
    from minicct.train.checkpoint import load_checkpoint, save_checkpoint
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
    if "capturing" in out and "SNR" not in out:
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


def _bad_cli_case(argv):
    def fn(tmp):
        a = list(argv)
        if a[0] == "train":
            a += ["--out", str(tmp / "m.npz")]
        if a[0] == "snp":
            a += ["--out", str(tmp / "snp")]
        return _cli_verdict(a)
    return fn


for _name, _argv in BAD_CLI.items():
    CASES["cli_" + _name] = (4 if "config" not in _name and "dir" not in _name else 10, "cli", _bad_cli_case(_argv))


# ---------------------------------------------------------------------------------------------- census

COLUMNS = ("ok", "clear", "traceback", "wrong", "lost", "leftover", "refused", "memory")


def _child(name, tmp, repo):
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    sys.path.insert(0, repo)
    os.chdir(tmp)
    verdict = run_case(name, Path(tmp))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
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
        if only and only not in name:
            continue
        tmp = tempfile.mkdtemp(prefix="fault-case-")
        env = dict(os.environ, MINICCT_DATA=str(data), MINICCT_OFFLINE="1", PYTHONPATH=repo,
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
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4])
        sys.exit(0)
    ap = argparse.ArgumentParser(description="fault census: every case in its own capped process")
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--only", default=None, help="run the cases whose name contains this")
    ap.add_argument("--json", default=None, help="write the rows here")
    a = ap.parse_args()
    rows = census(str(Path(a.repo).resolve()), a.only)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
