"""CIFAR loaders on small fake archives in the official format (Python-2 style protocol-2 pickles of dicts with
bytes keys, inside a .tar.gz), served from a local HTTP server; plus the restricted unpickler."""
import functools
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from minicct.datasets import cifar
from minicct.io.download import RemoteFile
from minicct.io.safe_pickle import restricted_load

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# Official table (datasets.md A1): superclass of fine classes 0..99.
FINE_TO_COARSE = np.array(
    "4 1 14 8 0 6 7 7 18 3 3 14 9 18 7 11 3 9 7 11 6 11 5 10 7 6 13 15 3 15 0 11 1 10 12 14 16 9 11 5 5 19 8 8 "
    "15 13 14 17 18 10 16 4 17 4 2 0 17 4 18 17 10 3 2 12 12 16 12 1 9 19 2 10 0 1 16 12 9 13 15 13 16 19 2 4 6 "
    "19 5 5 8 19 18 1 2 15 6 0 17 8 14 13".split(), dtype=np.int64)
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _Py2Pickler(pickle._Pickler):
    """Writes bytes and str the way Python 2 cPickle wrote its `str` (SHORT_BINSTRING / BINSTRING), so the
    result has the opcodes and globals of the official files and no `_codecs.encode`."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        n = len(raw)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + raw if n < 256 else
                   pickle.BINSTRING + struct.pack("<i", n) + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def py2_pickle(obj, numpy_module=b"numpy.core.multiarray") -> bytes:
    f = io.BytesIO()
    _Py2Pickler(f, protocol=2).dump(obj)
    # NumPy 2 names its reconstructor numpy._core.multiarray; the official files (NumPy 1.x) say numpy.core.
    return f.getvalue().replace(b"cnumpy._core.multiarray\n_reconstruct\n",
                                b"c" + numpy_module + b"\n_reconstruct\n")


def write_tgz(path: Path, folder: str, members: dict, extra=()):
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(folder)
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name, data in [*members.items(), *extra]:
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def rows_from_hwc(images):
    """uint8 [N, 32, 32, 3] -> official rows [N, 3072] (R plane, G plane, B plane)."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def cifar10_batches(rng, n=4):
    """Five train batches + test batch (n images each); image 0 of batch 1 hand-made."""
    batches = {}
    for i, name in enumerate([*cifar.CIFAR10_TRAIN, "test_batch"]):
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        batches[name] = (x, labels)
    x0 = batches["data_batch_1"][0][0]
    x0[:] = (10, 20, 30)
    x0[1, 2] = (200, 100, 50)  # row 1, column 2
    return batches


def make_cifar10_archive(path, batches):
    members = {name: py2_pickle({b"batch_label": name.encode(), b"labels": labels, b"data": rows_from_hwc(x),
                                 b"filenames": [b"img_%d.png" % k for k in range(len(x))]})
               for name, (x, labels) in batches.items()}
    members["batches.meta"] = py2_pickle({b"label_names": [s.encode() for s in CIFAR10_NAMES],
                                          b"num_cases_per_batch": 10000, b"num_vis": 3072})
    return write_tgz(path, "cifar-10-batches-py", members, extra=[("readme.html", b"<html></html>")])


def cifar100_content(rng):
    """Train: every fine class twice; test: once each. Coarse labels from the official table."""
    fine_train = rng.permutation(np.repeat(np.arange(100), 2))
    fine_test = rng.permutation(100)
    x_train = rng.integers(0, 256, size=(200, 32, 32, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(100, 32, 32, 3), dtype=np.uint8)
    fine_names = [f"fine_{k}" for k in range(100)]
    coarse_names = [f"coarse_{k}" for k in range(20)]
    return x_train, fine_train, x_test, fine_test, fine_names, coarse_names


def make_cifar100_archive(path, x_train, fine_train, x_test, fine_test, fine_names, coarse_names,
                          coarse_train=None):
    coarse_train = FINE_TO_COARSE[fine_train] if coarse_train is None else coarse_train

    def split(x, fine, coarse, label):
        return py2_pickle({b"filenames": [b"f%d.png" % k for k in range(len(x))], b"batch_label": label,
                           b"fine_labels": fine.tolist(), b"coarse_labels": np.asarray(coarse).tolist(),
                           b"data": rows_from_hwc(x)})

    members = {"train": split(x_train, fine_train, coarse_train, b"training batch 1 of 1"),
               "test": split(x_test, fine_test, FINE_TO_COARSE[fine_test], b"testing batch 1 of 1"),
               "meta": py2_pickle({b"fine_label_names": [s.encode() for s in fine_names],
                                   b"coarse_label_names": [s.encode() for s in coarse_names]})}
    return write_tgz(path, "cifar-100-python", members, extra=[("file.txt~", b"")])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """(folder served over HTTP, its base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(www)))
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield www, f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


def serve_as(monkeypatch, attr, archive: Path, base_url: str):
    """Point cifar.<attr> at the local server's copy of `archive` with its real md5 and size."""
    data = archive.read_bytes()
    remote = getattr(cifar, attr)
    monkeypatch.setattr(cifar, attr, RemoteFile(base_url + archive.name, remote.filename,
                                                hashlib.md5(data).hexdigest(), len(data)))


def test_cifar10_download_parse_and_cache(served, tmp_path, monkeypatch):
    www, base = served
    batches = cifar10_batches(np.random.default_rng(1))
    archive = make_cifar10_archive(www / "cifar-10-python.tar.gz", batches)
    serve_as(monkeypatch, "CIFAR10", archive, base)
    root = tmp_path / "cache"

    ds = cifar.load_cifar10(root=root, download=True, progress=False)
    assert ds.name == "cifar10" and ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (4, 32, 32, 3)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train, np.concatenate([batches[n][0] for n in cifar.CIFAR10_TRAIN]))
    np.testing.assert_array_equal(ds.y_train, np.concatenate([batches[n][1] for n in cifar.CIFAR10_TRAIN]))
    np.testing.assert_array_equal(ds.x_test, batches["test_batch"][0])
    # hand-made image: planes R=10, G=20, B=30 except pixel (row 1, col 2)
    assert ds.x_train[0, 0, 0].tolist() == [10, 20, 30] and ds.x_train[0, 1, 2].tolist() == [200, 100, 50]
    assert ds.x_train[0, 2, 1].tolist() == [10, 20, 30]
    assert ds.class_names == CIFAR10_NAMES and ds.groups == {}
    np.testing.assert_allclose(ds.mean, [0.4914, 0.4822, 0.4465], atol=1e-7)
    np.testing.assert_allclose(ds.std, [0.2470, 0.2435, 0.2616], atol=1e-7)
    assert (root / "cifar-10-python.tar.gz").is_file() and (root / "cifar10.npz").is_file()

    # second load: from the .npz cache alone, no archive and no download needed
    (root / "cifar-10-python.tar.gz").unlink()
    again = cifar.load_cifar10(root=root, download=False)
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    assert again.class_names == ds.class_names


def test_row_layout_is_rgb_planes():
    row = np.arange(3072, dtype=np.int64)
    img = cifar.cifar_rows_to_images((row % 251).astype(np.uint8)[None])[0]
    ch, r, c = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    expected = ((ch * 1024 + r * 32 + c) % 251).transpose(1, 2, 0)  # [3, 32, 32] -> [32, 32, 3]
    np.testing.assert_array_equal(img, expected)
    with pytest.raises(ValueError, match="3072"):
        cifar.cifar_rows_to_images(np.zeros((2, 3000), np.uint8))


def test_cifar100_download_parse_groups(served, tmp_path, monkeypatch):
    www, base = served
    content = cifar100_content(np.random.default_rng(2))
    archive = make_cifar100_archive(www / "cifar-100-python.tar.gz", *content)
    serve_as(monkeypatch, "CIFAR100", archive, base)
    x_train, fine_train, x_test, fine_test, fine_names, coarse_names = content

    ds = cifar.load_cifar100(root=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(ds.x_train, x_train)
    np.testing.assert_array_equal(ds.y_train, fine_train)
    np.testing.assert_array_equal(ds.x_test, x_test)
    np.testing.assert_array_equal(ds.y_test, fine_test)
    assert ds.class_names == fine_names and ds.num_classes == 100
    assert ds.groups["coarse"].dtype == np.int64
    np.testing.assert_array_equal(ds.groups["coarse"], FINE_TO_COARSE)
    assert ds.group_names == {"coarse": coarse_names}
    np.testing.assert_allclose(ds.mean, [0.5071, 0.4867, 0.4408], atol=1e-7)

    again = cifar.load_cifar100(root=tmp_path / "cache", download=False)  # from cache
    np.testing.assert_array_equal(again.groups["coarse"], FINE_TO_COARSE)
    assert again.group_names == ds.group_names


def test_cifar100_inconsistent_coarse_labels_rejected(tmp_path):
    content = cifar100_content(np.random.default_rng(3))
    coarse = FINE_TO_COARSE[content[1]].copy()
    coarse[0] = (coarse[0] + 1) % 20  # one training image of fine class content[1][0] now in another superclass
    archive = make_cifar100_archive(tmp_path / "c100.tar.gz", *content, coarse_train=coarse)
    with pytest.raises(ValueError, match="exactly one coarse class") as err:
        cifar.read_cifar100_archive(archive)
    assert f"[{content[1][0]}]" in str(err.value)


def test_fine_to_coarse_map_missing_class():
    with pytest.raises(ValueError, match=r"absent: \[2\]"):
        cifar.fine_to_coarse_map([0, 1, 1], [5, 6, 6], num_fine=3, num_coarse=7)
    np.testing.assert_array_equal(cifar.fine_to_coarse_map([2, 0, 1, 0], [1, 3, 0, 3], 3, 4), [3, 0, 1])


def test_missing_member_and_not_a_tar(tmp_path):
    archive = write_tgz(tmp_path / "a.tar.gz", "cifar-10-batches-py", {"data_batch_1": py2_pickle({})})
    with pytest.raises(ValueError, match="members missing"):
        cifar.read_cifar10_archive(archive)
    (tmp_path / "b.tar.gz").write_bytes(b"no tar here")
    with pytest.raises(ValueError, match="not a readable tar"):
        cifar.read_cifar10_archive(tmp_path / "b.tar.gz")


def test_missing_key_reported(tmp_path):
    batches = cifar10_batches(np.random.default_rng(4))
    archive = make_cifar10_archive(tmp_path / "a.tar.gz", batches)
    with tarfile.open(archive) as tar:
        members = {Path(m.name).name: tar.extractfile(m).read() for m in tar if m.isfile()}
    members["test_batch"] = py2_pickle({b"data": rows_from_hwc(batches["test_batch"][0])})
    archive = write_tgz(tmp_path / "b.tar.gz", "cifar-10-batches-py", members)
    with pytest.raises(ValueError, match=r"test_batch: key b'labels' missing"):
        cifar.read_cifar10_archive(archive)


def test_download_false_without_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-100-python.tar.gz"):
        cifar.load_cifar100(root=tmp_path, download=False)


EVIL_MARK = "minicct_pickle_was_executed"


@pytest.mark.parametrize("module, name", [("os", "system"), ("posix", "system"), ("builtins", "eval"),
                                          ("_codecs", "encode"), ("numpy", "load")])
def test_restricted_unpickler_refuses_other_globals(tmp_path, module, name):
    marker = tmp_path / EVIL_MARK
    evil = f"c{module}\n{name}\n(S'touch {marker}'\ntR.".encode()
    with pytest.raises(pickle.UnpicklingError, match=rf"{module}\.{name}"):
        restricted_load(evil)
    assert not marker.exists()


def test_evil_member_in_archive_refused_not_executed(tmp_path):
    marker = tmp_path / EVIL_MARK
    batches = cifar10_batches(np.random.default_rng(5))
    archive = make_cifar10_archive(tmp_path / "good.tar.gz", batches)
    with tarfile.open(archive) as tar:
        members = {Path(m.name).name: tar.extractfile(m).read() for m in tar if m.isfile()}
    members["data_batch_3"] = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    evil = write_tgz(tmp_path / "evil.tar.gz", "cifar-10-batches-py", members)
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        cifar.read_cifar10_archive(evil)
    assert not marker.exists()


@pytest.mark.parametrize("numpy_module", [b"numpy.core.multiarray", b"numpy._core.multiarray"])
def test_restricted_unpickler_loads_numpy_arrays(numpy_module):
    a = np.arange(24, dtype=np.uint8).reshape(2, 12)
    got = restricted_load(py2_pickle({b"data": a, b"labels": [1, 2], b"name": b"x"}, numpy_module))
    assert got[b"labels"] == [1, 2] and got[b"name"] == b"x"
    assert got[b"data"].dtype == np.uint8
    np.testing.assert_array_equal(got[b"data"], a)


def test_real_cifar100_rows_match_official_images():
    """Optional: real official rows (first 100 CIFAR-100 train images) vs the same images stored HWC."""
    folder = SHARED / "cifar100_neuralnetvis_preview"
    if not (folder / "cifar100_preview.npz").is_file():
        pytest.skip("shared/data/cifar100_neuralnetvis_preview not present")
    with np.load(folder / "cifar100_preview.npz") as z:
        rows, fine, f2c = z["x_train"], z["y_train_fine"], z["fine_to_coarse"]
    with np.load(folder / "original" / "x_train_preview.npz") as z:
        hwc = z["arr_0"]
    assert rows[0, :3].tolist() == [255, 255, 255] and rows[0, -3:].tolist() == [10, 59, 79]
    np.testing.assert_array_equal(cifar.cifar_rows_to_images(rows), hwc)
    np.testing.assert_array_equal(f2c, FINE_TO_COARSE)
    assert fine[:4].tolist() == [19, 29, 0, 11] and FINE_TO_COARSE[fine[:3]].tolist() == [11, 15, 4]
