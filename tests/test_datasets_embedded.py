"""The embedded procedural dataset: shapes, determinism, balance, ground-truth groups, the latent attributes
each class claims, the cache, and argument checks. Small n per class keeps every test well under a second."""
import math
import warnings

import numpy as np
import pytest

from minicct.datasets import embedded as emb
from minicct.datasets.base import Dataset, channel_stats
from minicct.datasets.embedded import (DIFFICULTY_LEVELS, MIN_SEPARATION, NUM_CLASSES, cache_path, class_groups,
                                       class_names, draw_latents, hsv_to_rgb, load_embedded, make_embedded)

SMALL = dict(n_train_per_class=3, n_test_per_class=2)


def _same(a: Dataset, b: Dataset) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("x_train", "y_train", "x_test", "y_test"))


def test_shapes_dtypes_and_stats():
    ds = make_embedded(seed=0, **SMALL)
    assert ds.name == "embedded" and ds.num_classes == NUM_CLASSES == 20 and ds.img_size == 32
    assert ds.x_train.shape == (60, 32, 32, 3) and ds.x_test.shape == (40, 32, 32, 3)
    assert ds.x_train.dtype == ds.x_test.dtype == np.uint8
    assert ds.y_train.dtype == ds.y_test.dtype == np.int64
    mean, std = channel_stats(ds.x_train)
    np.testing.assert_array_equal(ds.mean, mean)
    np.testing.assert_array_equal(ds.std, std)
    assert ds.mean.shape == ds.std.shape == (3,) and np.all(ds.std > 0.05)  # images are not flat
    for key in ("generator", "seed", "difficulty", "latent_structure", "attribute_kind"):
        assert key in ds.meta
    assert ds.meta["generator"] == emb.GENERATOR_VERSION and ds.meta["difficulty"] == emb.DEFAULT_DIFFICULTY


def test_deterministic_for_a_seed_and_different_for_another():
    a, b, c = make_embedded(seed=7, **SMALL), make_embedded(seed=7, **SMALL), make_embedded(seed=8, **SMALL)
    assert _same(a, b)
    assert not np.array_equal(a.x_train, c.x_train) and not np.array_equal(a.x_test, c.x_test)
    assert not np.array_equal(a.x_train[:40], a.x_test)  # train and test come from different streams


def test_exact_class_balance_and_shuffled_order():
    ds = make_embedded(seed=1, n_train_per_class=4, n_test_per_class=3)
    np.testing.assert_array_equal(np.bincount(ds.y_train, minlength=20), np.full(20, 4))
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=20), np.full(20, 3))
    assert not np.all(np.diff(ds.y_train) >= 0)  # not sorted by class


def test_groups_agree_with_class_names():
    ds = make_embedded(seed=0, **SMALL)
    groups, group_names = class_groups()
    assert ds.class_names == class_names() and len(set(ds.class_names)) == 20
    assert set(ds.groups) == set(ds.group_names) == {"superclass", "colour", "layout"}
    for name, arr in ds.groups.items():
        assert arr.dtype == np.int64 and arr.shape == (20,)
        np.testing.assert_array_equal(arr, groups[name])
    for k, cname in enumerate(ds.class_names):
        shape, colour, layout = cname.split("/")
        assert ds.group_names["superclass"][ds.groups["superclass"][k]] == shape
        assert ds.group_names["colour"][ds.groups["colour"][k]] == colour
        assert ds.group_names["layout"][ds.groups["layout"][k]] == layout
    # every (shape, colour, layout) combination exactly once; 4 classes per superclass
    triples = {(ds.groups["superclass"][k], ds.groups["colour"][k], ds.groups["layout"][k]) for k in range(20)}
    assert len(triples) == 20
    np.testing.assert_array_equal(np.bincount(ds.groups["superclass"]), np.full(5, 4))
    assert group_names["superclass"] == ["circle", "square", "triangle", "cross", "ring"]


@pytest.mark.parametrize("difficulty", [0.0, 0.5, 1.0])
def test_layout_relation_holds_in_the_latents(difficulty):
    ds, lat = make_embedded(seed=3, n_train_per_class=10, n_test_per_class=2, difficulty=difficulty,
                            return_latents=True)
    jitter = 0.25 + 1.25 * difficulty
    for split, y in (("train", ds.y_train), ("test", ds.y_test)):
        L = lat[split]
        np.testing.assert_array_equal(L["label"], y)
        np.testing.assert_array_equal(L["layout"], ds.groups["layout"][y])
        np.testing.assert_array_equal(L["shape"], ds.groups["superclass"][y])
        dy = np.abs(L["centers"][:, 0, 0] - L["centers"][:, 1, 0])
        dx = np.abs(L["centers"][:, 0, 1] - L["centers"][:, 1, 1])
        row = L["layout"] == 0
        tol = 2 * jitter + 1e-4
        assert np.all(dy[row] <= tol) and np.all(dx[row] >= MIN_SEPARATION - tol)
        assert np.all(dx[~row] <= tol) and np.all(dy[~row] >= MIN_SEPARATION - tol)
        assert np.all((L["centers"] >= 0) & (L["centers"] <= 31))
        # the colour family: hue within +-(20 + 25 d) degrees of 25 (warm) or 205 (cool)
        centre = np.where(L["colour"] == 0, 25.0, 205.0)[:, None]
        off = (L["hue"] - centre + 180.0) % 360.0 - 180.0
        assert np.all(np.abs(off) <= 20 + 25 * difficulty + 1e-3)


def test_position_of_one_object_does_not_reveal_the_layout():
    """Every object's y and x have the same law in both layouts (no single-place shortcut)."""
    labels = np.repeat(np.arange(20), 300)
    lat = draw_latents(np.random.default_rng(0), labels, 0.5)
    row = lat["layout"] == 0
    grid = np.linspace(0, 31, 63)

    def cdf(v):
        return (np.sort(v)[None, :] <= grid[:, None]).mean(1)

    for axis in (0, 1):
        a, b = lat["centers"][row, :, axis].ravel(), lat["centers"][~row, :, axis].ravel()
        assert np.abs(cdf(a) - cdf(b)).max() < 0.05  # Kolmogorov-Smirnov distance, n = 6000 per side


def _hue(rgb):
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.degrees(np.arctan2(math.sqrt(3) * (g - b), 2 * r - g - b)) % 360.0


def test_rendered_objects_carry_their_class_colour_and_shape():
    """At difficulty 0 the centre pixel of a filled shape is its object colour; a ring's centre is its hole."""
    ds, lat = make_embedded(seed=5, n_train_per_class=6, n_test_per_class=1, difficulty=0.0, return_latents=True)
    L = lat["train"]
    yx = np.rint(L["centers"]).astype(int)                                  # [N, 2, 2]
    n = np.arange(len(ds.y_train))[:, None]
    pix = ds.x_train[n, yx[..., 0], yx[..., 1]].astype(np.float64)         # [N, 2, 3]
    want = 255 * hsv_to_rgb(L["hue"], L["sat"], L["val"])                  # [N, 2, 3]
    filled = L["shape"] != 4
    assert np.abs(pix[filled] - want[filled]).max() <= 12                 # noise std 2/255 at difficulty 0
    assert np.all(np.abs(pix[~filled] - want[~filled]).max(-1) > 40)      # ring: background shows in the hole
    hue = _hue(pix[filled] / 255)
    warm = (ds.groups["colour"][ds.y_train] == 0)[filled]
    assert np.all((hue[warm] < 50) | (hue[warm] > 355))
    assert np.all((hue[~warm] > 175) & (hue[~warm] < 235))


def test_difficulty_is_one_knob_same_scenes_more_nuisance():
    kw = dict(seed=2, n_train_per_class=4, n_test_per_class=1, return_latents=True)
    runs = [make_embedded(difficulty=d, **kw) for d in (0.0, 0.5, 1.0)]
    for ds, lat in runs[1:]:
        np.testing.assert_array_equal(ds.y_train, runs[0][0].y_train)        # same labels, same order
    # the high-frequency energy (noise, clutter) grows with difficulty
    energy = [np.abs(np.diff(ds.x_train.astype(np.float64), axis=2)).mean() for ds, _ in runs]
    assert energy[0] < energy[1] < energy[2]
    assert _same(make_embedded(seed=2, difficulty="hard", **SMALL),
                 make_embedded(seed=2, difficulty=DIFFICULTY_LEVELS["hard"], **SMALL))


@pytest.mark.parametrize("kwargs", [
    dict(n_train_per_class=0), dict(n_train_per_class=-1), dict(n_test_per_class=0), dict(n_train_per_class=2.5),
    dict(n_train_per_class=True), dict(difficulty="impossible"), dict(difficulty=1.5), dict(difficulty=-0.1),
    dict(difficulty=float("nan")), dict(difficulty=None), dict(seed=-1), dict(seed=1.5)])
def test_bad_arguments_raise_value_error(kwargs, tmp_path):
    args = {**SMALL, **kwargs}
    with pytest.raises(ValueError):
        make_embedded(**args)
    with pytest.raises(ValueError):
        load_embedded(root=tmp_path, **args)
    assert not list(tmp_path.iterdir())


def test_cache_is_written_once_then_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICCT_DATA", str(tmp_path))
    first = load_embedded(seed=4, **SMALL)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [cache_path(seed=4, **SMALL).name] and files[0].startswith("embedded-")
    assert cache_path(seed=4, **SMALL).parent == tmp_path
    assert first.meta["cache_file"] == str(tmp_path / files[0])
    assert _same(first, make_embedded(seed=4, **SMALL))
    mtime = (tmp_path / files[0]).stat().st_mtime_ns

    def no_generation(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(emb, "make_embedded", no_generation)
    second = load_embedded(seed=4, **SMALL)
    assert _same(first, second) and second.groups.keys() == first.groups.keys()
    np.testing.assert_array_equal(second.mean, first.mean)
    assert (tmp_path / files[0]).stat().st_mtime_ns == mtime
    # other arguments -> another file
    monkeypatch.undo()
    monkeypatch.setenv("MINICCT_DATA", str(tmp_path))
    load_embedded(seed=4, difficulty=0.25, **SMALL)
    assert len(list(tmp_path.iterdir())) == 2


def test_corrupted_or_foreign_cache_is_regenerated(tmp_path):
    path = cache_path(seed=6, root=tmp_path, **SMALL)
    fresh = make_embedded(seed=6, **SMALL)
    for bad in (b"not an npz file", None):
        if bad is None:  # a readable npz made by something else
            np.savez(path, key=np.array("embedded-v0 something else"), x_train=fresh.x_train,
                     y_train=fresh.y_train, x_test=fresh.x_test, y_test=fresh.y_test)
        else:
            path.write_bytes(bad)
        with pytest.warns(RuntimeWarning, match="generating it again"):
            ds = load_embedded(seed=6, root=tmp_path, **SMALL)
        assert _same(ds, fresh)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten cache is valid: read without any warning
        again = load_embedded(seed=6, root=tmp_path, **SMALL)
    assert _same(again, fresh)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary files left


def test_cache_false_writes_nothing(tmp_path):
    ds = load_embedded(seed=0, root=tmp_path / "sub", cache=False, **SMALL)
    assert ds.meta["cache_file"] is None and not (tmp_path / "sub").exists()


# ---------------------------------------------------------------------------------------- generator options
# md5 of x_train, y_train, x_test, y_test of make_embedded(seed, 3, 2, d), computed with the generator before the
# options existed (commit 151c6b0): the options' defaults must keep the default images byte for byte.
DEFAULT_MD5 = {(0, 0.9): "0daf1602d01fd97c724a04eee2ac8ffe", (3, 0.0): "478a73f67aacb6c9abf4aded4e377c81",
               (5, 1.0): "7433f1e221836fc5b860800e70b36568", (2, 0.5): "32cb46f5e4c63a55e4dd3667838b8600"}


def _md5(ds):
    import hashlib
    m = hashlib.md5()
    for k in ("x_train", "y_train", "x_test", "y_test"):
        m.update(getattr(ds, k).tobytes())
    return m.hexdigest()


@pytest.mark.parametrize("seed, d", sorted(DEFAULT_MD5))
def test_default_options_keep_the_default_images(seed, d):
    assert _md5(make_embedded(seed, 3, 2, d)) == DEFAULT_MD5[(seed, d)]
    explicit = make_embedded(seed, 3, 2, d, **emb.DEFAULT_OPTIONS)
    assert _md5(explicit) == DEFAULT_MD5[(seed, d)] and explicit.meta["options"] == emb.DEFAULT_OPTIONS


def test_default_cache_name_and_key_unchanged():
    assert cache_path(seed=0, root="/x").name == "embedded-v1-seed0-k20-train500-test100-d0.9.npz"
    assert cache_path(seed=0, root="/x", **emb.DEFAULT_OPTIONS) == cache_path(seed=0, root="/x")
    assert emb._cache_key(0, 500, 100, 0.9) == emb._cache_key(0, 500, 100, 0.9, emb.resolve_options())
    names = {cache_path(seed=0, root="/x", **o).name for o in
             ({}, {"hue_halfwidth": 135}, {"object_scale": 1.5}, {"natural": 1.0}, {"natural": 0.5})}
    assert len(names) == 5


OPTIONS = [{"hue_halfwidth": 135.0}, {"object_scale": 1.5}, {"natural": 1.0},
           {"natural": 1.0, "object_scale": 1.5, "hue_halfwidth": 135.0}]


@pytest.mark.parametrize("opts", OPTIONS)
def test_options_are_deterministic_keep_the_labels_and_change_the_images(opts):
    kw = dict(seed=1, n_train_per_class=4, n_test_per_class=2, return_latents=True)
    (a, la), (b, _), (base, lbase) = make_embedded(**kw, **opts), make_embedded(**kw, **opts), make_embedded(**kw)
    assert _same(a, b)
    assert not np.array_equal(a.x_train, base.x_train)
    np.testing.assert_array_equal(a.y_train, base.y_train)     # same scenes: options draw after the defaults
    np.testing.assert_array_equal(la["train"]["centers"], lbase["train"]["centers"])
    np.testing.assert_array_equal(la["train"]["d_centers"], lbase["train"]["d_centers"])
    assert a.meta["options"] == emb.resolve_options(**opts)
    assert a.x_train.dtype == np.uint8 and a.x_train.shape == base.x_train.shape and a.x_train.std() > 10


def test_hue_halfwidth_and_object_scale_act_on_their_latents():
    labels = np.repeat(np.arange(20), 200)
    base = draw_latents(np.random.default_rng(0), labels, 0.9)
    wide = draw_latents(np.random.default_rng(0), labels, 0.9, hue_halfwidth=135.0, object_scale=1.5)
    np.testing.assert_allclose(wide["radius"], 1.5 * base["radius"], rtol=1e-6)
    centre = np.where(wide["colour"] == 0, 25.0, 205.0)[:, None]
    off = (wide["hue"] - centre + 180.0) % 360.0 - 180.0
    assert np.abs(off).max() <= 135.0 + 1e-3 and np.abs(off).max() > 120.0
    # the families' hue ranges now overlap: some warm objects are nearer the cool centre than some cool ones
    dist_cool = np.abs((wide["hue"] - 205.0 + 180.0) % 360.0 - 180.0)
    warm = wide["colour"] == 0
    assert dist_cool[warm].min() < dist_cool[~warm].max()


def test_natural_adds_occluders_near_the_main_objects_and_texture():
    kw = dict(seed=2, n_train_per_class=6, n_test_per_class=1, difficulty=0.9, return_latents=True)
    ds, lat = make_embedded(natural=1.0, **kw)
    base, lb = make_embedded(**kw)
    L = lat["train"]
    assert not any(k.startswith("o_") for k in lb["train"])
    assert L["o_active"].shape == (120, emb.N_OCCLUDERS) and 0.4 < L["o_active"].mean() < 0.8
    d = np.linalg.norm(L["o_centers"][:, :, None, :] - L["centers"][:, None, :, :], axis=-1).min(-1)   # [N, 3]
    assert np.all(d <= 1.2 * np.sqrt(2) * L["radius"].max() + 1e-4)
    # 1/f texture: more low-frequency (neighbouring-pixel-correlated) variance than the default background
    var = lambda x: x.astype(np.float64).std()
    assert var(ds.x_train) > var(base.x_train)


@pytest.mark.parametrize("kwargs", [dict(hue_halfwidth=-1), dict(hue_halfwidth=200), dict(hue_halfwidth="wide"),
                                    dict(object_scale=0.1), dict(object_scale=3), dict(natural=1.5),
                                    dict(natural=-0.1), dict(natural=True), dict(object_scale=None)])
def test_bad_options_raise_value_error(kwargs, tmp_path):
    with pytest.raises(ValueError):
        make_embedded(**SMALL, **kwargs)
    with pytest.raises(ValueError):
        load_embedded(root=tmp_path, **SMALL, **kwargs)
    assert not list(tmp_path.iterdir())


def test_option_cache_round_trip(tmp_path):
    first = load_embedded(seed=4, root=tmp_path, natural=1.0, **SMALL)
    again = load_embedded(seed=4, root=tmp_path, natural=1.0, **SMALL)
    assert _same(first, again) and _same(first, make_embedded(seed=4, natural=1.0, **SMALL))
    assert first.meta["options"]["natural"] == 1.0 and first.meta["cache_file"].endswith("-n1.npz")
