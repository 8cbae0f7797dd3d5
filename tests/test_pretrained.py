"""pretrained.py: registry, offline errors, download + verification against a local HTTP server (127.0.0.1, no
internet; plain HTTP, so these tests pass allow_http=True, and the HTTPS-only tests check that nothing is
accepted without it) serving tiny fake checkpoints written by torch_io, trust-on-first-use sha256, the CLI `evaluate
--pretrained` path, the run-time helpers, and lesson 07 (offline exit 2, and a tiny end-to-end run).

No network: offline behaviour is forced with MINICCT_OFFLINE=1, which datasets/download.py honours.
"""
import dataclasses
import hashlib
import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

import minicct.datasets as datasets_pkg
from minicct import __main__ as cli
from minicct import model as M
from minicct.io import pretrained as P
from minicct.io import download as dl
from minicct.datasets.base import Dataset, to_model_input
from minicct.io.torch_io import from_params, save_state_dict

REPO = Path(__file__).resolve().parents[1]
TINY = (("embedding_dim", 16), ("num_heads", 2), ("num_layers", 1), ("img_size", 16), ("in_planes", 8),
        ("num_classes", 5))
# parameter counts (sum of numel, the sine table included) and published top-1 % of the official CCT release
PARAM_COUNTS = {"cct_7_3x1_32": 3_760_139, "cct_7_3x1_32_sine": 3_760_139, "cct_7_3x1_32_c100": 3_783_269,
                "cct_7_3x1_32_sine_c100": 3_783_269, "cct_7_7x2_224_sine": 4_573_735,
                "cct_14_7x2_224": 22_367_273, "cct_14_7x2_384": 22_513_193, "cct_14_7x2_384_fl": None}
TOP1 = {"cct_7_3x1_32": 96.53, "cct_7_3x1_32_sine": 98.00, "cct_7_3x1_32_c100": 80.92,
        "cct_7_3x1_32_sine_c100": 82.87, "cct_7_7x2_224_sine": 97.19, "cct_14_7x2_224": 80.67,
        "cct_14_7x2_384": 82.71, "cct_14_7x2_384_fl": 99.76}


# ------------------------------------------------------------------------------------------------ fixtures

class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves server.files: path -> (status, body bytes, content type)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.log.append(self.path)
        status, body, ctype = self.server.files.get(self.path, (404, b"not found", "text/plain"))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.log = {}, []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Every test: caches in its own folder, downloads allowed only where a test asks for the local server."""
    monkeypatch.setenv("MINICCT_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("MINICCT_OFFLINE", raising=False)


def _tiny_entry(urls, name="cct_7_3x1_32_c100", pe="learnable", top1=50.0, **over):
    return P.PretrainedWeights(name=name, filename="tiny_cct.pth", urls=tuple(urls), dataset="cifar100",
                               published_top1=top1, description="tiny test model", variant="cct_2_3x2_32",
                               overrides=TINY + (("positional_embedding", pe),) + tuple(over.items()))


def _checkpoint_bytes(tmp_path, cfg, seed=0, params=None):
    params = M.init_params(cfg, seed) if params is None else params
    f = tmp_path / f"written_{seed}.pth"
    save_state_dict(from_params(params), f)
    return params, f.read_bytes()


def _serve_tiny(server, monkeypatch, tmp_path, routes=("/w.pth",), seed=0, **entry_kw):
    """Register a tiny entry under the name cct_7_3x1_32_c100 whose URLs point at the local server."""
    entry = _tiny_entry([server.url + r for r in routes], **entry_kw)
    params, body = _checkpoint_bytes(tmp_path, entry.config(), seed)
    monkeypatch.setitem(P.REGISTRY, entry.name, entry)
    return entry, params, body


# ------------------------------------------------------------------------------------------------ registry

def test_registry_files_urls_datasets_and_accuracies():
    assert list(P.REGISTRY) == list(PARAM_COUNTS)
    names = [e.filename for e in P.REGISTRY.values()]
    assert len(set(names)) == len(names)
    for name, e in P.REGISTRY.items():
        assert e.name == name and e.filename.endswith(".pth") and "/" not in e.filename
        folder = "finetuned" if "384" in name else "pretrained"
        assert e.urls == (f"https://shi-labs.com/projects/cct/checkpoints/{folder}/{e.filename}",
                          f"http://ix.cs.uoregon.edu/~alih/compact-transformers/checkpoints/{folder}/{e.filename}")
        for u in e.urls:
            parts = urlparse(u)
            assert parts.scheme in ("http", "https") and parts.netloc and " " not in u
        assert e.published_top1 == TOP1[name]
        expected_ds = ("cifar100" if "c100" in name else "cifar10" if "_32" in name else
                       "flowers102" if name.endswith(("_fl", "224_sine")) else "imagenet")
        assert e.dataset == expected_ds
    assert P.REGISTRY["cct_7_3x1_32_c100"].filename == "cct_7_3x1_32_cifar100_300epochs.pth"


@pytest.mark.parametrize("name", list(PARAM_COUNTS))
def test_registry_configs_match_the_anchor_table(name):
    cfg = P.get_entry(name).config()
    if PARAM_COUNTS[name] is not None:
        assert M.count_params(cfg) == PARAM_COUNTS[name]
    assert cfg.positional_embedding == ("sine" if "_sine" in name else "learnable")
    classes = {"cifar10": 10, "cifar100": 100, "flowers102": 102, "imagenet": 1000}[P.REGISTRY[name].dataset]
    assert cfg.num_classes == classes


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as err:
        P.load_pretrained("cct_7_3x1_32_c10")
    assert "cct_7_3x1_32_c100" in str(err.value) and "cct_14_7x2_384_fl" in str(err.value)
    with pytest.raises(ValueError, match="64 hex"):
        P.load_pretrained("cct_7_3x1_32_c100", sha256="abc")


def test_list_pretrained_reports_cache_state(tmp_path):
    rows = P.list_pretrained(root=tmp_path)
    assert [r["name"] for r in rows] == list(P.REGISTRY) and not any(r["cached"] for r in rows)
    (tmp_path / "cct_7_3x1_32_cifar100_300epochs.pth").write_bytes(b"x")
    assert [r["name"] for r in P.list_pretrained(root=tmp_path) if r["cached"]] == ["cct_7_3x1_32_c100"]


# ------------------------------------------------------------------------------------------------ offline

def test_offline_error_names_every_url_and_the_exact_path(monkeypatch, tmp_path):
    monkeypatch.setenv("MINICCT_OFFLINE", "1")
    entry = P.REGISTRY["cct_7_3x1_32_c100"]
    with pytest.raises(dl.DownloadError) as err:
        P.load_pretrained("cct_7_3x1_32_c100")
    msg = str(err.value)
    path = (tmp_path / "data" / "pretrained" / entry.filename).resolve()
    assert all(u in msg for u in entry.urls) and str(path) in msg and "MINICCT_OFFLINE" in msg
    assert "curl -fL -o" in msg and str(path) + ".sha256.json" in msg
    assert not path.exists() and not path.with_name(path.name + ".part").exists()


def test_no_download_raises_file_not_found_with_the_steps(tmp_path):
    entry = P.REGISTRY["cct_7_3x1_32_sine_c100"]
    with pytest.raises(FileNotFoundError) as err:
        P.load_pretrained(entry.name, download=False, root=tmp_path / "w")
    assert all(u in str(err.value) for u in entry.urls)
    assert str((tmp_path / "w" / entry.filename).resolve()) in str(err.value)


def test_unreachable_addresses_each_reported_then_manual_steps(server, monkeypatch, tmp_path):
    server.files["/html"] = (200, b"<html>please log in</html>", "text/html")
    entry = _tiny_entry([server.url + "/missing", server.url + "/html"])
    monkeypatch.setitem(P.REGISTRY, entry.name, entry)
    with pytest.raises(dl.DownloadError) as err:
        P.load_pretrained(entry.name, allow_http=True, root=tmp_path, progress=False)
    msg = str(err.value)
    assert "404" in msg and "HTML" in msg and msg.count("To use the weights without downloading") == 1
    assert str((tmp_path / "tiny_cct.pth").resolve()) in msg and not (tmp_path / "tiny_cct.pth").exists()


# ------------------------------------------------------------------------------------------------ success

def test_download_parity_record_and_cached_reload(server, monkeypatch, tmp_path, capsys):
    entry, params, body = _serve_tiny(server, monkeypatch, tmp_path)
    server.files["/w.pth"] = (200, body, "application/octet-stream")
    got, cfg, meta = P.load_pretrained(entry.name, allow_http=True, root=tmp_path / "w")
    assert cfg == entry.config() and list(got) == list(M.param_shapes(cfg))
    for k, v in params.items():
        assert got[k].dtype == np.float32 and np.array_equal(got[k], v), k
    digest = hashlib.sha256(body).hexdigest()
    path = tmp_path / "w" / "tiny_cct.pth"
    assert meta["sha256"] == digest and meta["file"] == str(path) and meta["url"] == server.url + "/w.pth"
    assert (meta["name"], meta["dataset"], meta["published_top1"]) == (entry.name, "cifar100", 50.0)
    assert meta["sha256_status"].startswith("recorded now")
    assert digest in capsys.readouterr().err
    record = json.loads(path.with_name("tiny_cct.pth.sha256.json").read_text())
    assert record["sha256"] == digest and record["source"] == server.url + "/w.pth"
    server.files.clear()                                        # the cache must be used: no request now
    got2, _, meta2 = P.load_pretrained(entry.name, allow_http=True, root=tmp_path / "w", progress=False)
    assert len(server.log) == 1 and meta2["sha256_status"].startswith("matches the record")
    assert meta2["url"] == server.url + "/w.pth" and all(np.array_equal(got2[k], got[k]) for k in got)


def test_mirror_used_when_the_first_address_fails(server, monkeypatch, tmp_path):
    entry, params, body = _serve_tiny(server, monkeypatch, tmp_path, routes=("/gone.pth", "/mirror.pth"))
    server.files["/mirror.pth"] = (200, body, "application/octet-stream")
    got, _, meta = P.load_pretrained(entry.name, allow_http=True, root=tmp_path, progress=False)
    assert meta["url"] == server.url + "/mirror.pth" and server.log == ["/gone.pth", "/mirror.pth"]
    assert np.array_equal(got["classifier.fc.weight"], params["classifier.fc.weight"])


def test_file_put_by_hand_is_used_and_recorded(monkeypatch, tmp_path):
    monkeypatch.setenv("MINICCT_OFFLINE", "1")
    entry = _tiny_entry(["http://127.0.0.1:1/w.pth"])
    monkeypatch.setitem(P.REGISTRY, entry.name, entry)
    params, body = _checkpoint_bytes(tmp_path, entry.config(), seed=3)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "tiny_cct.pth").write_bytes(body)
    got, _, meta = P.load_pretrained(entry.name, allow_http=True, root=tmp_path / "w", progress=False)
    assert np.array_equal(got["classifier.positional_emb"], params["classifier.positional_emb"])
    assert "found at" in json.loads((tmp_path / "w" / "tiny_cct.pth.sha256.json").read_text())["source"]


def test_sine_checkpoint_keeps_its_stored_table(server, monkeypatch, tmp_path):
    entry = _tiny_entry([server.url + "/s.pth"], pe="sine")
    cfg = entry.config()
    params = M.init_params(cfg, 1)
    stored = params["classifier.positional_emb"] + np.float32(0.01) * np.random.default_rng(1).standard_normal(
        params["classifier.positional_emb"].shape, dtype=np.float32)
    params["classifier.positional_emb"] = stored                # not the formula: must survive as it is
    _, body = _checkpoint_bytes(tmp_path, cfg, params=params)
    server.files["/s.pth"] = (200, body, "application/octet-stream")
    monkeypatch.setitem(P.REGISTRY, entry.name, entry)
    got, cfg2, meta = P.load_pretrained(entry.name, allow_http=True, root=tmp_path, progress=False)
    assert cfg2.positional_embedding == "sine"
    assert np.array_equal(got["classifier.positional_emb"], stored)
    expected = float(np.abs(stored - M.sine_embedding(cfg.seq_len, cfg.embedding_dim)).max())
    assert meta["sine_table_max_abs_diff"] == pytest.approx(expected) and expected > 1e-3


# ------------------------------------------------------------------------------------------------ rejection

def test_changed_file_rejected_by_trust_on_first_use(server, monkeypatch, tmp_path):
    entry, _, body = _serve_tiny(server, monkeypatch, tmp_path)
    server.files["/w.pth"] = (200, body, "application/octet-stream")
    P.load_pretrained(entry.name, allow_http=True, root=tmp_path, progress=False)
    path = tmp_path / "tiny_cct.pth"
    _, other = _checkpoint_bytes(tmp_path, entry.config(), seed=7)      # a valid checkpoint, other weights
    path.write_bytes(other)
    with pytest.raises(P.PretrainedError) as err:
        P.load_pretrained(entry.name, allow_http=True, root=tmp_path, progress=False)
    msg = str(err.value)
    new, old = hashlib.sha256(other).hexdigest(), hashlib.sha256(body).hexdigest()
    assert new in msg and old in msg and "tiny_cct.pth.sha256.json" in msg and "left in place" in msg
    assert path.read_bytes() == other                                   # a file of the user's is not deleted
    got, _, meta = P.load_pretrained(entry.name, allow_http=True, root=tmp_path, sha256=new.upper(), progress=False)
    assert meta["sha256_status"] == "matches the pinned sha256"         # a pin overrides and updates the record
    assert P.load_pretrained(entry.name, allow_http=True, root=tmp_path, progress=False)[2]["sha256"] == new


def test_redownload_differing_from_the_record_is_rejected_and_deleted(server, monkeypatch, tmp_path):
    entry, _, body = _serve_tiny(server, monkeypatch, tmp_path)
    server.files["/w.pth"] = (200, body, "application/octet-stream")
    P.load_pretrained(entry.name, allow_http=True, root=tmp_path, progress=False)
    (tmp_path / "tiny_cct.pth").unlink()
    server.files["/w.pth"] = (200, _checkpoint_bytes(tmp_path, entry.config(), seed=9)[1], "application/x")
    with pytest.raises(P.PretrainedError, match="the server now serves a different file"):
        P.load_pretrained(entry.name, allow_http=True, root=tmp_path, progress=False)
    assert not (tmp_path / "tiny_cct.pth").exists()


def test_pinned_sha256_mismatch_deletes_the_download(server, monkeypatch, tmp_path):
    entry, _, body = _serve_tiny(server, monkeypatch, tmp_path)
    server.files["/w.pth"] = (200, body, "application/octet-stream")
    with pytest.raises(P.PretrainedError, match="0{64} was requested"):
        P.load_pretrained(entry.name, allow_http=True, root=tmp_path, sha256="0" * 64, progress=False)
    assert not (tmp_path / "tiny_cct.pth").exists() and not (tmp_path / "tiny_cct.pth.sha256.json").exists()


def test_shape_mismatch_rejected_with_the_to_params_report(server, monkeypatch, tmp_path):
    entry = _tiny_entry([server.url + "/w.pth"])
    wrong_cfg = M.get_config("cct_2_3x2_32", **dict(TINY, num_classes=7))
    _, body = _checkpoint_bytes(tmp_path, wrong_cfg)
    server.files["/w.pth"] = (200, body, "application/octet-stream")
    monkeypatch.setitem(P.REGISTRY, entry.name, entry)
    with pytest.raises(P.PretrainedError) as err:
        P.load_pretrained(entry.name, allow_http=True, root=tmp_path, progress=False)
    msg = str(err.value)
    assert "classifier.fc.weight: expected shape (5, 16), found (7, 16)" in msg
    assert "classifier.fc.bias: expected shape (5,), found (7,)" in msg and "has been deleted" in msg
    assert not (tmp_path / "tiny_cct.pth").exists() and not (tmp_path / "tiny_cct.pth.sha256.json").exists()


def test_non_checkpoint_bytes_rejected(server, monkeypatch, tmp_path):
    entry = _tiny_entry([server.url + "/junk"])
    server.files["/junk"] = (200, np.random.default_rng(0).bytes(5000), "application/octet-stream")
    monkeypatch.setitem(P.REGISTRY, entry.name, entry)
    with pytest.raises(P.PretrainedError, match="not usable as the weights"):
        P.load_pretrained(entry.name, allow_http=True, root=tmp_path, progress=False)
    assert not (tmp_path / "tiny_cct.pth").exists()


# ------------------------------------------------------------------------------------------------ download layer

def test_download_without_md5_is_atomic_and_offline_is_honoured(server, monkeypatch, tmp_path):
    server.files["/f"] = (200, b"\x00payload" * 100, "application/octet-stream")
    path = dl.download(server.url + "/f", tmp_path / "f.bin", None, progress=False)
    assert path.read_bytes() == b"\x00payload" * 100 and not (tmp_path / "f.bin.part").exists()
    assert json.loads((tmp_path / "f.bin.md5ok").read_text())["md5"] == hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setenv("MINICCT_OFFLINE", "1")
    with pytest.raises(dl.DownloadError) as err:
        dl.download(server.url + "/f", tmp_path / "g.bin", None, progress=False)
    assert "MINICCT_OFFLINE" in err.value.reason and "no published md5" in str(err.value)
    assert len(server.log) == 1 and not (tmp_path / "g.bin").exists()


# ------------------------------------------------------------------------------------------------ CLI

def _fake_cifar(cfg, n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, cfg.img_size, cfg.img_size, 3), dtype=np.uint8)
    y = rng.integers(0, cfg.num_classes, n)
    return Dataset(name="cifar100", x_train=x, y_train=y, x_test=x[::-1].copy(), y_test=y[::-1].copy(),
                   class_names=[f"c{i}" for i in range(cfg.num_classes)],
                   mean=np.array([0.5071, 0.4867, 0.4408], np.float32),
                   std=np.array([0.2675, 0.2565, 0.2761], np.float32),
                   groups={"coarse": np.arange(cfg.num_classes) // 2},
                   group_names={"coarse": [f"g{i}" for i in range(cfg.num_classes // 2 + 1)]})


def test_cli_evaluate_pretrained_end_to_end(server, monkeypatch, tmp_path, capsys):
    entry, params, body = _serve_tiny(server, monkeypatch, tmp_path)
    server.files["/w.pth"] = (200, body, "application/octet-stream")
    cfg = entry.config()
    data = _fake_cifar(cfg)
    monkeypatch.setattr(datasets_pkg, "load", lambda name, **kw: data)
    rc = cli.main(["evaluate", "--pretrained", "cct_7_3x1_32_c100", "--dataset", "cifar100", "--allow-http"])
    out = capsys.readouterr().out
    logits = M.predict(params, to_model_input(data.x_test, data.mean, data.std), cfg)
    acc = float((logits.argmax(1) == data.y_test).mean())
    assert rc == 0 and f"top-1 accuracy {100 * acc:.2f}%" in out and "40 images" in out


def test_cli_evaluate_pretrained_offline_is_a_clean_error(monkeypatch, capsys):
    monkeypatch.setenv("MINICCT_OFFLINE", "1")
    rc = cli.main(["evaluate", "--pretrained", "cct_7_3x1_32_c100", "--dataset", "cifar100"])
    err = capsys.readouterr().err
    assert rc == 1 and "\nerror: could not download the weights cct_7_3x1_32_c100" in err
    assert err.startswith("skipping http://ix.cs.uoregon.edu/")          # HTTPS only: the mirror is skipped
    assert P.REGISTRY["cct_7_3x1_32_c100"].urls[0] in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ run time

def test_forward_macs_match_the_anchor_table():
    # the official release's cost table, "+ attn matmuls" column
    for name, gmac in (("cct_2_3x2_32", 0.0353), ("cct_7_3x1_32", 1.1816), ("cct_7_3x2_32", 0.2891),
                       ("cct_14_7x2_224", 5.5218), ("cct_14_7x2_384", 18.5801)):
        assert P.forward_macs(M.get_config(name)) / 1e9 == pytest.approx(gmac, abs=6e-4), name


def test_estimate_eval_seconds_is_measured_and_linear():
    cfg = M.get_config("cct_2_3x2_32", **dict(TINY))
    speed = P.measure_forward_speed(cfg, batch_size=8, probe_seconds=0.05)
    assert np.isfinite(speed) and speed > 0
    assert P.estimate_eval_seconds(cfg, 0, probe_seconds=0.01) == 0
    assert 0 < P.estimate_eval_seconds(cfg, 1000, batch_size=8, probe_seconds=0.05) < 1e4
    with pytest.raises(ValueError):
        P.estimate_eval_seconds(cfg, -1)
    assert [P.format_seconds(s) for s in (5, 600, 9000)] == ["5 s", "10 min", "2.5 h"]


# ------------------------------------------------------------------------------------------------ lesson 07

def _lesson():
    spec = importlib.util.spec_from_file_location("lesson07", REPO / "lessons" / "07_pretrained_snp.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lesson_offline_exits_2_with_the_manual_steps(tmp_path):
    """Run as a user would, in a subprocess: empty MINICCT_DATA, MINICCT_OFFLINE=1 (no socket is opened)."""
    env = dict(os.environ, MINICCT_DATA=str(tmp_path / "empty"), MINICCT_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(REPO / "lessons" / "07_pretrained_snp.py"), "--probe-images", "4"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "estimate" in proc.stdout and "images/s measured" in proc.stdout   # the estimate comes first
    weights = (tmp_path / "empty" / "pretrained" / "cct_7_3x1_32_cifar100_300epochs.pth").resolve()
    for text in (*P.REGISTRY["cct_7_3x1_32_c100"].urls, str(weights),
                 "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 str((tmp_path / "empty" / "cifar-100-python.tar.gz").resolve()), "Manual steps", "run again"):
        assert text in proc.stderr, text
    assert "Traceback" not in proc.stderr


def test_lesson_runs_end_to_end_on_a_tiny_model(server, monkeypatch, tmp_path, capsys):
    """The whole lesson with a tiny registered model and a fake CIFAR: estimate, load, accuracy check, SNP."""
    lesson = _lesson()
    entry, params, body = _serve_tiny(server, monkeypatch, tmp_path)
    server.files["/w.pth"] = (200, body, "application/octet-stream")
    cfg = entry.config()
    data = _fake_cifar(cfg, n=30)
    acc = float((M.predict(params, to_model_input(data.x_test[:20], data.mean, data.std), cfg).argmax(1)
                 == data.y_test[:20]).mean())
    monkeypatch.setitem(P.REGISTRY, entry.name, dataclasses.replace(entry, published_top1=100 * acc))
    monkeypatch.setattr(lesson, "load", lambda name, **kw: data)
    rc = lesson.main(["--allow-http", "--n-train", "30", "--n-test", "20", "--epochs", "1", "--probe-images", "4",
                      "--out", str(tmp_path / "figs")])
    out = capsys.readouterr().out
    assert rc == 0 and f"top-1 {100 * acc:.2f}%" in out and "PASS" in out
    assert "enc 1 out" in out and "coarse:" in out and (tmp_path / "figs" / "along_encoders.png").is_file()


# ------------------------------------------------------------------------------------------------ HTTPS only

def test_registry_mirror_is_plain_http_and_official_is_https():
    for e in P.REGISTRY.values():
        assert e.urls[0].startswith("https://shi-labs.com/") and e.urls[1].startswith("http://"), e.name


def test_substituted_file_over_plain_http_is_never_accepted(server, monkeypatch, tmp_path, capsys):
    """A valid-looking file (right keys and shapes) served over plain HTTP: not requested, not written, not
    accepted, and the skip is printed; the error says how to opt in."""
    entry, params, body = _serve_tiny(server, monkeypatch, tmp_path, routes=("/w.pth",))
    entry = dataclasses.replace(entry, urls=("https://127.0.0.1:1/w.pth", server.url + "/w.pth"))
    monkeypatch.setitem(P.REGISTRY, entry.name, entry)
    server.files["/w.pth"] = (200, body, "application/octet-stream")
    with pytest.raises(dl.DownloadError) as err:
        P.load_pretrained(entry.name, root=tmp_path / "w")
    assert server.log == [] and not (tmp_path / "w" / "tiny_cct.pth").exists()
    assert "skipped: plain HTTP" in str(err.value) and "--allow-http" in str(err.value)
    assert f"skipping {server.url}/w.pth (plain HTTP" in capsys.readouterr().err
    got, _, meta = P.load_pretrained(entry.name, root=tmp_path / "w", allow_http=True)   # the explicit opt-in
    assert meta["url"] == server.url + "/w.pth" and "over plain HTTP" in capsys.readouterr().err
    # the file, now cached with a plain-HTTP record, is refused later without the opt-in
    with pytest.raises(P.PretrainedError, match="downloaded over plain HTTP"):
        P.load_pretrained(entry.name, root=tmp_path / "w", progress=False)


def test_https_download_redirected_to_http_is_refused_and_deleted(monkeypatch, tmp_path):
    """dl.download follows redirects; when the bytes finally came from a non-HTTPS address they are refused."""
    cfg_entry = _tiny_entry(["https://example.invalid/w.pth"])
    monkeypatch.setitem(P.REGISTRY, cfg_entry.name, cfg_entry)
    _, body = _checkpoint_bytes(tmp_path, cfg_entry.config())

    def fake_download(url, path, md5, size=None, progress=True, **kw):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        path.with_name(path.name + ".md5ok").write_text(json.dumps({"md5": "x", "url": "http://evil.invalid/w"}))
        return path

    monkeypatch.setattr(dl, "download", fake_download)
    with pytest.raises(dl.DownloadError, match="redirected to http://evil.invalid/w, which is not HTTPS"):
        P.load_pretrained(cfg_entry.name, root=tmp_path / "w", progress=False)
    assert not (tmp_path / "w" / "tiny_cct.pth").exists()
