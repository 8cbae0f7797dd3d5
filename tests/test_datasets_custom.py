"""--dataset npz:PATH and folder:PATH (datasets/custom.py): tiny arrays and PNG/JPEG folders built here."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from minicct.datasets import channel_stats, load

S = 8


def _arrays(seed=0, n=12, K=3):
    rng = np.random.default_rng(seed)
    x_tr = rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8)
    x_te = rng.integers(0, 256, (n // 2, S, S, 3), dtype=np.uint8)
    y_tr, y_te = np.arange(n) % K, np.arange(n // 2) % K
    return x_tr, y_tr, x_te, y_te


def _folder(tmp_path, x_tr, y_tr, x_te, y_te, names=("cat", "dog", "emu"), fmt="png"):
    root = tmp_path / "imgs"
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        for i, (img, lab) in enumerate(zip(x, y)):
            d = root / split / names[lab]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i:03d}.{fmt}", quality=95) if fmt == "jpg" else \
                Image.fromarray(img).save(d / f"{i:03d}.{fmt}")
    return root


@pytest.mark.parametrize("layout", ["hwc", "chw", "float", "grey"])
def test_npz_layouts_load_to_the_same_arrays(tmp_path, layout):
    x_tr, y_tr, x_te, y_te = _arrays()
    if layout == "grey":
        x_tr, x_te = np.repeat(x_tr[..., :1], 3, -1), np.repeat(x_te[..., :1], 3, -1)
    conv = {"hwc": lambda x: x, "chw": lambda x: x.transpose(0, 3, 1, 2),
            "float": lambda x: x.astype(np.float32) / 255, "grey": lambda x: x[..., 0]}[layout]
    np.savez(tmp_path / "d.npz", x_train=conv(x_tr), y_train=y_tr, x_test=conv(x_te), y_test=y_te,
             class_names=np.array(["a", "b", "c"]))
    d = load(f"npz:{tmp_path / 'd.npz'}")
    assert np.array_equal(d.x_train, x_tr) and np.array_equal(d.x_test, x_te)
    assert np.array_equal(d.y_train, y_tr) and d.class_names == ["a", "b", "c"] and d.img_size == S
    m, s = channel_stats(x_tr)
    assert np.array_equal(d.mean, m) and np.array_equal(d.std, s)      # statistics of the training split


def test_npz_given_statistics_are_used(tmp_path):
    x_tr, y_tr, x_te, y_te = _arrays()
    np.savez(tmp_path / "d.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
             mean=np.array([0.1, 0.2, 0.3]), std=np.array([1.0, 2.0, 3.0]))
    d = load(f"npz:{tmp_path / 'd.npz'}")
    assert np.allclose(d.mean, [0.1, 0.2, 0.3]) and np.allclose(d.std, [1, 2, 3]) and d.class_names == ["0", "1", "2"]


@pytest.mark.parametrize("change,match", [
    (dict(x_train=np.zeros((4, 8, 8, 5), np.uint8)), "neither axis 1 nor axis 3"),
    (dict(x_train=np.zeros((4, 8, 6, 3), np.uint8)), "square"),
    (dict(x_train=np.full((12, 8, 8, 3), 2.0, np.float32)), r"float images must be in \[0, 1\]"),
    (dict(y_train=np.arange(11) % 3), r"shape \(12,\)"),
    (dict(y_train=(np.arange(12) % 3).astype(np.float32)), "integer labels"),
    (dict(y_test=np.array([0, 1, 5, 0, 1, 2])), r"labels 0\.\.5, expected 0\.\.2"),
    (dict(y_test=np.array([0, 1, 0, 1, 0, 1])), r"no test images: labels \[2\] \(c\)"),
    (dict(x_test=np.zeros((6, 4, 4, 3), np.uint8)), "must match"),
])
def test_npz_bad_inputs_give_clear_errors(tmp_path, change, match):
    x_tr, y_tr, x_te, y_te = _arrays()
    arrays = dict(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, class_names=np.array(["a", "b", "c"]))
    arrays.update(change)
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        load(f"npz:{tmp_path / 'd.npz'}")


def test_npz_missing_arrays_and_file(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"missing arrays \['y_train', 'x_test', 'y_test'\]"):
        load(f"npz:{tmp_path / 'd.npz'}")
    with pytest.raises(FileNotFoundError):
        load(f"npz:{tmp_path / 'nope.npz'}")


def test_folder_png_loads_exactly_and_is_cached(tmp_path):
    x_tr, y_tr, x_te, y_te = _arrays()
    root = _folder(tmp_path, x_tr, y_tr, x_te, y_te)
    d = load(f"folder:{root}", root=tmp_path / "cache", img_size=S, progress=False)
    order_tr = np.argsort(y_tr, kind="stable")               # files are read class by class, then by name
    assert np.array_equal(d.x_train, x_tr[order_tr]) and np.array_equal(d.y_train, y_tr[order_tr])
    assert np.array_equal(d.x_test, x_te[np.argsort(y_te, kind="stable")])
    assert d.class_names == ["cat", "dog", "emu"]
    caches = list((tmp_path / "cache").glob("*.npz"))
    assert len(caches) == 1 and not list((tmp_path / "cache").glob("*.tmp"))
    Image.fromarray(x_tr[0]).save(root / "train" / "cat" / "000.png")        # same bytes: cache reused
    mtime = caches[0].stat().st_mtime_ns
    load(f"folder:{root}", root=tmp_path / "cache", img_size=S, progress=False)
    assert caches[0].stat().st_mtime_ns == mtime
    Image.fromarray(255 - x_tr[0]).save(root / "train" / "cat" / "000.png")  # content changed: new cache
    d2 = load(f"folder:{root}", root=tmp_path / "cache", img_size=S, progress=False)
    assert np.array_equal(d2.x_train[0], 255 - x_tr[0]) and len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_folder_jpeg_and_resize(tmp_path):
    x_tr, y_tr, x_te, y_te = _arrays()
    big = np.repeat(np.repeat(x_tr, 2, 1), 2, 2)             # 16 x 16, resized back to 8
    root = _folder(tmp_path, big, y_tr, np.repeat(np.repeat(x_te, 2, 1), 2, 2), y_te, fmt="jpg")
    d = load(f"folder:{root}", root=tmp_path / "c", img_size=S, progress=False)
    assert d.x_train.shape == (12, S, S, 3) and d.x_train.dtype == np.uint8
    assert np.abs(d.x_train.astype(int) - x_tr[np.argsort(y_tr, kind="stable")]).mean() < 40   # JPEG + resize


def test_folder_bad_inputs_give_clear_errors(tmp_path):
    x_tr, y_tr, x_te, y_te = _arrays()
    root = _folder(tmp_path, x_tr, y_tr, x_te, y_te)
    (root / "train" / "dog" / "005.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"cannot read image .*train/dog/005\.png"):
        load(f"folder:{root}", root=tmp_path / "c", img_size=S, progress=False)
    (root / "train" / "dog" / "005.png").unlink()
    for f in (root / "test" / "emu").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"\['emu'\] have images in train/ but none in test/"):
        load(f"folder:{root}", root=tmp_path / "c", img_size=S, progress=False)
    (root / "test" / "emu").rmdir()
    with pytest.raises(ValueError, match="none in test/"):
        load(f"folder:{root}", root=tmp_path / "c", img_size=S, progress=False)
    with pytest.raises(ValueError, match="no 'train' folder"):
        load(f"folder:{root / 'test'}", root=tmp_path / "c", img_size=S, progress=False)
