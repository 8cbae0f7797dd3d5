"""Flowers-102 loader on a tiny fake dataset in the official formats (JPEGs in a .tgz, imagelabels.mat and
setid.mat with [1, n] 1-based arrays) served from a local HTTP server; optionally the real label files."""
import functools
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from minicct.datasets import flowers
from minicct.io.download import RemoteFile

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "flowers102_official_labels"

N_IMAGES = 12
# 1-based labels of images 1..12, and unsorted 1-based id splits, as in the official files
LABELS = np.array([77, 1, 102, 5, 5, 40, 77, 1, 102, 3, 60, 2])
SPLITS = {"trnid": [7, 2, 11, 4], "valid": [1, 12, 9, 5], "tstid": [3, 10, 8, 6]}


def colour(i):
    """A distinct flat colour for image id i."""
    return (20 * i % 256, 255 - 15 * i, 40 + 10 * i)


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def image_bytes(i):
    """Image id i: flat colour, size varying with i; image 6 is 3 squares wide: red | its colour | blue."""
    if i == 6:
        img = Image.new("RGB", (96, 32), colour(6))
        img.paste((255, 0, 0), (0, 0, 32, 32))
        img.paste((0, 0, 255), (64, 0, 96, 32))
        return jpeg(img)
    w, h = (20 + 3 * i, 40 - i) if i % 2 else (40 - i, 20 + 3 * i)
    return jpeg(Image.new("RGB", (w, h), colour(i)))


def make_flowers_files(folder: Path, labels=LABELS, splits=SPLITS, skip_image=None):
    """Write 102flowers.tgz, imagelabels.mat, setid.mat into `folder` (official names, keys and shapes)."""
    with tarfile.open(folder / "102flowers.tgz", "w:gz") as tar:
        info = tarfile.TarInfo("jpg")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for i in range(1, N_IMAGES + 1):
            if i == skip_image:
                continue
            data = image_bytes(i)
            info = tarfile.TarInfo(f"jpg/image_{i:05d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": np.asarray(labels, np.float64)[None]})
    scipy.io.savemat(folder / "setid.mat", {k: np.asarray(v, np.float64)[None] for k, v in splits.items()})


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


def serve_all(monkeypatch, www: Path, base: str):
    for attr in ("FLOWERS_IMAGES", "FLOWERS_LABELS", "FLOWERS_SPLITS"):
        remote = getattr(flowers, attr)
        data = (www / remote.filename).read_bytes()
        monkeypatch.setattr(flowers, attr, RemoteFile(base + remote.filename, remote.filename,
                                                      hashlib.md5(data).hexdigest(), len(data)))


def test_flowers_download_splits_labels_resize_and_cache(served, tmp_path, monkeypatch):
    www, base = served
    make_flowers_files(www)
    serve_all(monkeypatch, www, base)
    root = tmp_path / "cache"

    ds = flowers.load_flowers102(root=root, img_size=16, progress=False)
    splits = [(ds.x_train, ds.y_train, "trnid"), (ds.x_val, ds.y_val, "valid"), (ds.x_test, ds.y_test, "tstid")]
    for x, y, key in splits:
        ids = np.array(SPLITS[key])
        assert x.shape == (4, 16, 16, 3) and x.dtype == np.uint8 and y.dtype == np.int64
        np.testing.assert_array_equal(y, LABELS[ids - 1] - 1)  # official order, zero-based classes
        for img, i in zip(x, ids):
            if i != 6:  # flat images: colour survives JPEG + resize, and lands in the row of its id
                np.testing.assert_allclose(img.reshape(-1, 3).mean(0), colour(i), atol=4)
    assert ds.class_names[76] == "passion flower" and ds.num_classes == 102 and ds.groups == {}
    np.testing.assert_allclose(ds.mean, [0.4353, 0.3773, 0.2872], atol=1e-7)

    # image 6 (96 x 32: red | colour | blue): the centre square crop keeps only the middle third
    six = ds.x_test[SPLITS["tstid"].index(6)]
    np.testing.assert_allclose(six[2:-2, 2:-2].reshape(-1, 3).mean(0), colour(6), atol=6)

    # cached per img_size: the same size needs no files, another size does
    for name in ("102flowers.tgz", "imagelabels.mat", "setid.mat"):
        (root / name).unlink()
    again = flowers.load_flowers102(root=root, download=False, img_size=16)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    np.testing.assert_array_equal(again.y_val, ds.y_val)
    with pytest.raises(FileNotFoundError, match="imagelabels.mat"):
        flowers.load_flowers102(root=root, download=False, img_size=24)


def test_square_resize_shapes():
    for w, h in [(50, 30), (30, 50), (7, 7), (300, 200)]:
        out = flowers.square_resize(Image.new("RGB", (w, h), (1, 2, 3)), 13)
        assert out.shape == (13, 13, 3) and out.dtype == np.uint8
        assert out.reshape(-1, 3).tolist() == [[1, 2, 3]] * 169
    grey = flowers.square_resize(Image.new("L", (20, 10), 77), 5)
    assert grey.shape == (5, 5, 3) and (grey == 77).all()


@pytest.mark.parametrize("bad", [0, -3, 2.5, "64", True, 5000])
def test_bad_img_size(tmp_path, bad):
    with pytest.raises(ValueError, match="img_size"):
        flowers.load_flowers102(root=tmp_path, download=False, img_size=bad)


def test_overlapping_splits_rejected(tmp_path):
    make_flowers_files(tmp_path, splits={"trnid": [1, 2], "valid": [2, 3], "tstid": [4]})
    with pytest.raises(ValueError, match="disjoint"):
        flowers.read_flowers_splits(tmp_path / "setid.mat", N_IMAGES)
    make_flowers_files(tmp_path, splits={"trnid": [1, 2], "valid": [13], "tstid": [4]})
    with pytest.raises(ValueError, match=r"1\.\.12"):
        flowers.read_flowers_splits(tmp_path / "setid.mat", N_IMAGES)


def test_labels_out_of_range_and_missing_key(tmp_path):
    make_flowers_files(tmp_path, labels=np.r_[0, LABELS[1:]])
    with pytest.raises(ValueError, match=r"1\.\.102"):
        flowers.read_flowers_labels(tmp_path / "imagelabels.mat")
    scipy.io.savemat(tmp_path / "x.mat", {"lbl": np.ones((1, 3))})
    with pytest.raises(ValueError, match=r"'labels' missing.*\['lbl'\]"):
        flowers.read_flowers_labels(tmp_path / "x.mat")


def test_missing_image_in_archive(tmp_path):
    make_flowers_files(tmp_path, skip_image=10)
    with pytest.raises(ValueError, match="image_00010.jpg"):
        flowers.read_flowers_images(tmp_path / "102flowers.tgz", [3, 10, 8], 8)


def test_real_official_label_files():
    """Optional: the real imagelabels.mat / setid.mat (shared/data, not part of the repository)."""
    if not (SHARED / "setid.mat").is_file():
        pytest.skip("shared/data/flowers102_official_labels not present")
    labels = flowers.read_flowers_labels(SHARED / "imagelabels.mat")
    splits = flowers.read_flowers_splits(SHARED / "setid.mat", labels.size)
    assert labels.shape == (8189,) and labels[0] == 77 - 1 and labels[-1] == 62 - 1
    assert [splits[s].size for s in ("train", "val", "test")] == [1020, 1020, 6149]
    assert splits["train"][:5].tolist() == [6765, 6755, 6768, 6736, 6744]
    np.testing.assert_array_equal(np.sort(np.concatenate(list(splits.values()))), np.arange(1, 8190))
    for s, low in [("train", 10), ("val", 10), ("test", 20)]:
        counts = np.bincount(labels[splits[s] - 1], minlength=102)
        assert counts.min() == low and (s == "test" or counts.max() == 10)
