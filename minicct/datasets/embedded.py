"""The embedded dataset: CIFAR-shaped images drawn procedurally from a seed, offline, with known latent structure.

Every image (uint8 32x32x3) holds two *main objects* of the same shape and the same colour family, at two
far-apart places over a cluttered background. The class is the triple (shape, colour family, layout):

* shape (the superclass): circle, square, triangle, cross or ring. A *local* attribute: one object, seen by one
  small patch, shows it.
* colour family: warm (red .. yellow) or cool (cyan .. blue), the same family for both objects. Also *local*,
  and shared ACROSS superclasses (every shape comes in both families).
* layout: the two objects lie on the same row (side by side) or in the same column (one above the other).
  A *long-range* relation, shared across superclasses: it is a property of the pair, not of either object.
  Object centres are at least `MIN_SEPARATION` = 15 px apart (3-4 tokens of a stride-4 convolutional
  tokenizer), so no small patch holds both objects; and every object's own position has the same
  distribution in both layouts (see "positions" below), so no patch, at any fixed place, tells the layout.
  A model has to relate two distant parts of the image, which is what attention across tokens adds over the
  convolutional tokenizer.

So a model that only pools local evidence (a bag of small patches, or a linear read-out of the tokenizer's
tokens) can reach the shape and the colour, i.e. at best about 50 % (layout at chance); only relating the two
objects lifts accuracy above that.

Classes (label = 4 * shape + 2 * colour + layout; `Dataset.groups` holds the three columns):

    label  class name            superclass  colour  layout
        0  circle/warm/row                0       0       0
        1  circle/warm/column             0       0       1
        2  circle/cool/row                0       1       0
        3  circle/cool/column             0       1       1
        4  square/warm/row                1       0       0
        5  square/warm/column             1       0       1
        6  square/cool/row                1       1       0
        7  square/cool/column             1       1       1
        8  triangle/warm/row              2       0       0
        9  triangle/warm/column           2       0       1
       10  triangle/cool/row              2       1       0
       11  triangle/cool/column           2       1       1
       12  cross/warm/row                 3       0       0
       13  cross/warm/column              3       0       1
       14  cross/cool/row                 3       1       0
       15  cross/cool/column              3       1       1
       16  ring/warm/row                  4       0       0
       17  ring/warm/column               4       0       1
       18  ring/cool/row                  4       1       0
       19  ring/cool/column               4       1       1

    groups["superclass"][k] = k // 4  names: circle, square, triangle, cross, ring   (local)
    groups["colour"][k]     = k // 2 % 2  names: warm, cool                          (local, across superclasses)
    groups["layout"][k]     = k % 2   names: row, column                             (long-range, across superclasses)

Positions [INF]. Pixel centres sit at integer coordinates 0..31. A *pair* of coordinates (u1, u2) is drawn as a
separation s ~ U(15, 22) and a midpoint uniform on the range that keeps both ends in [4.5, 26.5]. A third
coordinate v is one end of a second, independent pair. Layout "row" puts the objects at (y, x) = (v, u1) and
(v, u2); layout "column" at (u1, v) and (u2, v). Each of y and x of every object thus has the same marginal
law in both layouts, so the position of one object says nothing about the layout. All four coordinates then
get the same independent jitter U(-j, j), j = 0.25 + 1.25 * difficulty, so "the same row" means
|y1 - y2| <= 2j and |x1 - x2| >= 15 - 2j.

Nuisance, all growing monotonically with the single knob `difficulty` in [0, 1] (the same seed gives the same
scenes at every difficulty; only the nuisance amplitudes change):
object radius U(3.6 - 0.6 d, 4.5) px, rotation U(-40 d, 40 d) degrees, hue within +-(20 + 25 d) degrees of the
family centre (warm 25, cool 205; the families never overlap), saturation and brightness; background grey
level, tint, low-frequency colour texture and a faint stripe pattern; 6 slots of small distractor shapes
(any of the five shapes, any hue, radius <= 1.8 + 0.8 d < the smallest main object), each present with
probability 0.1 + 0.7 d; global gain and offset; Gaussian pixel noise of std (2 + 16 d) / 255. Names:
"easy" = 0.2, "medium" = 0.5, "hard" = 0.8; `DEFAULT_DIFFICULTY` is the one every lesson uses.

Generator options (`DEFAULT_OPTIONS`; keyword-only arguments of make_embedded / load_embedded / cache_path):
hue_halfwidth (overlapping colour families), object_scale (larger main objects), natural (1/f texture and
occluders). Their defaults give the images above byte for byte; docs/embedded_vs_real.md measures what each does
to the SNP analysis (none makes it behave like real photographs; the default stays).

Checked (logistic regressions, seed 0, every difficulty 0 .. 1): on a bag of random 5x5 patch features, shape
and colour are read well but layout stays at chance (50 %); adding products of those features along a row and
along a column (a pairwise, long-range interaction, as attention forms) lifts layout to 93-100 %.

Use:

    from minicct.datasets.embedded import load_embedded, make_embedded
    ds = load_embedded(seed=0)               # 20 classes x (500 train + 100 test), cached under data_dir()
    ds.x_train.shape, ds.groups["layout"]    # (10000, 32, 32, 3), int64 [20]
    ds, latents = make_embedded(seed=0, n_train_per_class=5, n_test_per_class=5, return_latents=True)
    latents["train"]["centers"]              # float32 [N, 2, 2]: (object, (y, x)) of the two main objects
"""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from statistics import NormalDist

import numpy as np

from .base import Dataset, channel_stats, data_dir

GENERATOR_VERSION = "embedded-v1"

IMG = 32
SHAPES = ("circle", "square", "triangle", "cross", "ring")
COLOURS = ("warm", "cool")
LAYOUTS = ("row", "column")
NUM_CLASSES = len(SHAPES) * len(COLOURS) * len(LAYOUTS)  # K = 20

DIFFICULTY_LEVELS = {"easy": 0.2, "medium": 0.5, "hard": 0.8}
DEFAULT_DIFFICULTY = 0.9  # chosen so that the classroom CCT of lesson 02 lands between 60 % and 95 %

# Geometry [INF], in pixels (pixel centres at integer coordinates 0..31).
POS_LO, POS_HI = 4.5, 26.5          # range of an object centre before jitter
MIN_SEPARATION = 15.0               # min distance of the two centres along the pair axis, before jitter
MAX_SEPARATION = POS_HI - POS_LO    # 22
R_MAX = 4.5                         # main objects: radius U(R_MIN(d), R_MAX)
N_DISTRACTORS = 6                   # distractor slots per image
WARM_HUE, COOL_HUE = 25.0, 205.0    # centres of the colour families, degrees

_MAIN_HALF = 8   # half-width of the window a main object is drawn in: 1.35 * R_MAX (triangle tip) + margin
_DIST_HALF = 5   # same for distractors (radius <= 2.6)
_PAD = 6         # canvas padding: windows reach 3 - 8 = -5 (main) and 1 - 5 = -4 (distractors) .. 36
_BATCH = 500    # images rendered at once

LATENT_STRUCTURE = (
    "20 classes = 5 shapes (superclass, local) x 2 colour families warm/cool (local, shared across "
    "superclasses) x 2 layouts row/column (long-range relation between the two main objects, shared across "
    "superclasses); label = 4*shape + 2*colour + layout. Two main objects of the class's shape and colour "
    f"family, centres >= {MIN_SEPARATION:g} px apart on one row or one column; each object's position has the "
    "same distribution in both layouts. Nuisance: size, rotation, exact hue, background texture and stripes, "
    "distractor shapes, gain, pixel noise, all scaled by `difficulty`.")


#: Generator options, each modelling one property of real photographs that the default images lack (issue 20,
#: docs/embedded_vs_real.md measures each). Their defaults give the default images byte for byte (same cache
#: file, same key); any other value adds its own draws after all default ones, so it never alters the default
#: stream, and it gets its own cache file.
#:   hue_halfwidth: half-width (degrees) of the hue range around the colour family's centre; None = 20 + 25 d.
#:       Above 90 the two families' ranges overlap, so one object's colour no longer tells its family for sure.
#:   object_scale: factor on the main objects' radius (1 = U(3.6 - 0.6 d, 4.5) px); CIFAR objects fill much of
#:       the frame, so class evidence reaches most tokens.
#:   natural in [0, 1]: strength of natural-image statistics: a coloured 1/f ("pink", amplitude ~ 1/f as in
#:       photographs) background texture of luminance std 0.12 natural (colour 0.05 natural), a multiplicative
#:       1/f luminance texture over the whole image (objects included) of std 0.2 natural, and 3 occluder slots,
#:       each present with probability 0.6 natural: a distractor-sized shape of any hue painted OVER the main
#:       objects, centred within +-1.2 radius of one of them.
DEFAULT_OPTIONS = {"hue_halfwidth": None, "object_scale": 1.0, "natural": 0.0}
N_OCCLUDERS = 3


def resolve_options(hue_halfwidth=None, object_scale=1.0, natural=0.0) -> dict:
    """Checked generator options (see DEFAULT_OPTIONS) as a dict of floats (hue_halfwidth may be None)."""
    def num(name, v, lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not lo <= v <= hi:
            raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {v!r}")
        return float(v)
    return {"hue_halfwidth": None if hue_halfwidth is None else num("hue_halfwidth", hue_halfwidth, 0.0, 180.0),
            "object_scale": num("object_scale", object_scale, 0.5, 2.0),
            "natural": num("natural", natural, 0.0, 1.0)}


def _options_tag(opts: dict) -> str:
    """'' for the default options, else a '-h..-s..-n..' suffix for cache names and keys (non-default ones)."""
    tag = ""
    if opts["hue_halfwidth"] is not None:
        tag += f"-h{opts['hue_halfwidth']:.6g}"
    if opts["object_scale"] != 1.0:
        tag += f"-s{opts['object_scale']:.6g}"
    if opts["natural"] != 0.0:
        tag += f"-n{opts['natural']:.6g}"
    return tag


def _main_half(object_scale: float) -> int:
    """Half-width of a main object's drawing window: _MAIN_HALF at scale 1, grown with the radius."""
    return _MAIN_HALF if object_scale <= 1.0 else int(np.ceil(_MAIN_HALF * object_scale))


def class_names() -> list:
    """The K = 20 names "shape/colour/layout", index = label."""
    return [f"{s}/{c}/{l}" for s in SHAPES for c in COLOURS for l in LAYOUTS]


def class_groups() -> tuple[dict, dict]:
    """Ground-truth groupings, like CIFAR-100's coarse labels.

    Returns (groups, group_names): groups[name] is int64 [K], the group index of every class; group_names[name]
    lists the names of that grouping's groups. Names: "superclass" (shape), "colour", "layout".
    """
    k = np.arange(NUM_CLASSES, dtype=np.int64)
    groups = {"superclass": k // 4, "colour": k // 2 % 2, "layout": k % 2}
    names = {"superclass": list(SHAPES), "colour": list(COLOURS), "layout": list(LAYOUTS)}
    return groups, names


# ----------------------------------------------------------------------------------------------------------
# argument checks

def resolve_difficulty(difficulty) -> float:
    """A float in [0, 1], or one of DIFFICULTY_LEVELS' names -> that float. Anything else: ValueError."""
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTY_LEVELS:
            raise ValueError(f"unknown difficulty {difficulty!r}: use a number in [0, 1] or one of "
                             f"{sorted(DIFFICULTY_LEVELS)}")
        return DIFFICULTY_LEVELS[difficulty]
    if isinstance(difficulty, bool) or not isinstance(difficulty, (int, float, np.integer, np.floating)):
        raise ValueError(f"difficulty must be a number in [0, 1] or one of {sorted(DIFFICULTY_LEVELS)}, "
                         f"got {difficulty!r}")
    d = float(difficulty)
    if not 0.0 <= d <= 1.0:  # also rejects nan
        raise ValueError(f"difficulty must lie in [0, 1] (0 = cleanest, 1 = hardest), got {difficulty!r}")
    return d


def _check_count(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


# ----------------------------------------------------------------------------------------------------------
# latent parameters

def _pair_coords(rng, n: int) -> np.ndarray:
    """float64 [n, 2]: two coordinates >= MIN_SEPARATION apart inside [POS_LO, POS_HI], in random order."""
    sep = rng.uniform(MIN_SEPARATION, MAX_SEPARATION, n)
    mid = rng.uniform(POS_LO + sep / 2, POS_HI - sep / 2)
    pair = np.stack([mid - sep / 2, mid + sep / 2], axis=1)
    swap = rng.random(n) < 0.5
    pair[swap] = pair[swap, ::-1]
    return pair


def draw_latents(rng: np.random.Generator, labels: np.ndarray, difficulty: float, hue_halfwidth=None,
                 object_scale: float = 1.0, natural: float = 0.0) -> dict:
    """Per-image scene parameters for the given labels (int64 [N]).

    Every random number is drawn independently of `difficulty` and only then scaled by it, so a seed gives
    the same scenes at every difficulty. Returns a dict of arrays (N = len(labels)):
        label, shape, colour, layout: int64 [N]
        centers: float32 [N, 2, 2]   (main object, (y, x)), pixel centres at integer coordinates
        radius, angle, hue, sat, val: float32 [N, 2]   (angle in radians, hue in degrees)
        d_active: bool [N, 6]; d_shape int64 [N, 6]; d_centers float32 [N, 6, 2]; d_radius, d_angle, d_hue,
        d_sat, d_val, d_alpha: float32 [N, 6]      (distractors)
        bg_lum, bg_hue, bg_sat, gain, offset: float32 [N]; stripe_amp, stripe_theta, stripe_period,
        stripe_phase: float32 [N]
    Generator options (DEFAULT_OPTIONS; the defaults give the default scenes): hue_halfwidth replaces
    20 + 25 d; object_scale multiplies the main radius; natural > 0 adds, after every default draw, the
    occluders: o_active bool [N, 3]; o_shape int64 [N, 3]; o_centers float32 [N, 3, 2]; o_radius, o_angle,
    o_hue, o_sat, o_val: float32 [N, 3].
    """
    d = difficulty
    n = labels.shape[0]
    shape, colour, layout = labels // 4, labels // 2 % 2, labels % 2

    def u(*size):  # U[0, 1) draws of the given size
        return rng.random(size)

    # positions: row -> (v, u1), (v, u2); column -> (u1, v), (u2, v); same marginal law for y and x
    along = _pair_coords(rng, n)                                   # [N, 2] coordinate along the pair axis
    shared = _pair_coords(rng, n)[:, 0]                            # [N]   the common coordinate
    centers = np.empty((n, 2, 2))
    row = layout == 0
    centers[:, :, 0] = np.where(row[:, None], shared[:, None], along)  # y
    centers[:, :, 1] = np.where(row[:, None], along, shared[:, None])  # x
    jitter = 0.25 + 1.25 * d
    centers += jitter * (2 * u(n, 2, 2) - 1)

    family = np.where(colour == 0, WARM_HUE, COOL_HUE)[:, None]
    lat = dict(
        label=labels, shape=shape, colour=colour, layout=layout, centers=centers,
        radius=(3.6 - 0.6 * d) + (R_MAX - 3.6 + 0.6 * d) * u(n, 2),
        angle=np.deg2rad(40.0 * d) * (2 * u(n, 2) - 1),
        hue=(family + (20.0 + 25.0 * d if hue_halfwidth is None else hue_halfwidth) * (2 * u(n, 2) - 1)) % 360.0,
        sat=1.0 - (0.15 + 0.35 * d) * u(n, 2),
        val=1.0 - 0.25 * u(n, 2),
        # distractors: any shape, any hue, smaller than every main object
        d_active=u(n, N_DISTRACTORS) < 0.1 + 0.7 * d,
        d_shape=rng.integers(0, len(SHAPES), (n, N_DISTRACTORS)),
        d_centers=1.0 + 29.0 * u(n, N_DISTRACTORS, 2),
        d_radius=1.3 + (0.5 + 0.8 * d) * u(n, N_DISTRACTORS),
        d_angle=np.pi * u(n, N_DISTRACTORS),
        d_hue=360.0 * u(n, N_DISTRACTORS),
        d_sat=0.2 + 0.8 * u(n, N_DISTRACTORS),
        d_val=0.3 + 0.7 * u(n, N_DISTRACTORS),
        d_alpha=0.5 + 0.5 * u(n, N_DISTRACTORS),
        # background
        bg_lum=0.25 + (0.3 + 0.2 * d) * u(n),
        bg_hue=360.0 * u(n),
        bg_sat=(0.05 + 0.35 * d) * u(n),
        stripe_amp=(0.12 * d) * u(n),
        stripe_theta=np.pi * u(n),
        stripe_period=3.0 + 6.0 * u(n),
        stripe_phase=2 * np.pi * u(n),
        gain=1.0 - 0.3 * d * u(n),
        offset=0.1 * d * (2 * u(n) - 1),
    )
    if object_scale != 1.0:
        lat["radius"] = lat["radius"] * object_scale
    if natural > 0.0:  # occluders: drawn after every default draw, so the default scenes stay the same
        m = N_OCCLUDERS
        which = rng.integers(0, 2, (n, m))                                         # the main object occluded
        near = centers[np.arange(n)[:, None], which]                               # [N, m, 2]
        reach = 1.2 * lat["radius"][np.arange(n)[:, None], which][..., None]       # [N, m, 1]
        lat.update(
            o_active=u(n, m) < 0.6 * natural,
            o_shape=rng.integers(0, len(SHAPES), (n, m)),
            o_centers=np.clip(near + reach * (2 * u(n, m, 2) - 1), 0.0, IMG - 1.0),
            o_radius=1.3 + (0.5 + 0.8 * d) * u(n, m),
            o_angle=np.pi * u(n, m),
            o_hue=360.0 * u(n, m),
            o_sat=0.2 + 0.8 * u(n, m),
            o_val=0.3 + 0.7 * u(n, m),
        )
    return {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in lat.items()}


# ----------------------------------------------------------------------------------------------------------
# rendering

def hsv_to_rgb(h, s, v) -> np.ndarray:
    """Hue (degrees), saturation, value in [0, 1], arrays of one shape [...] -> RGB [..., 3] in [0, 1].

    f(n) = v - v s clip(min(k, 4 - k), 0, 1), k = (n + h / 60) mod 6, for n = 5, 3, 1 (R, G, B).
    """
    h, s, v = (np.asarray(a, np.float32) for a in (h, s, v))
    k = (np.array([5, 3, 1], np.float32) + h[..., None] / 60.0) % 6.0  # [..., 3]
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _box(x, y, ax, ay):
    """Signed distance to an axis-aligned box of half-extents (ax, ay) centred at 0."""
    qx, qy = np.abs(x) - ax, np.abs(y) - ay
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


# Signed distance (pixels, < 0 inside) of each shape of "radius" r at local offsets (x right, y down):
# circle of radius r; square of half-side 0.85 r; equilateral triangle, apex up, inradius 0.675 r (tip at
# 1.35 r); cross of two 2r x 0.72r bars; ring of outer radius r and inner radius 0.4 r.
_SDF = (
    lambda x, y, r: np.hypot(x, y) - r,                                               # circle
    lambda x, y, r: _box(x, y, 0.85 * r, 0.85 * r),                                   # square
    lambda x, y, r: np.maximum(y, 0.8660254 * np.abs(x) - 0.5 * y) - 0.675 * r,       # triangle, apex up
    lambda x, y, r: np.minimum(_box(x, y, r, 0.36 * r), _box(x, y, 0.36 * r, r)),    # cross
    lambda x, y, r: np.abs(np.hypot(x, y) - 0.7 * r) - 0.3 * r,                       # ring
)


def shape_alpha(shape, dy, dx, radius, angle) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of rotated shapes: alpha = clip(0.5 - sdf, 0, 1).

    shape int [M]; dy, dx float32 [M, W, W] pixel offsets from each object's centre; radius, angle [M].
    Returns float32 [M, W, W]. A loop over the 5 shapes only; each evaluates its images at once.
    """
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    x, y = c * dx + s * dy, -s * dx + c * dy  # rotate the sampling grid by -angle = rotate the shape by angle
    sdf = np.empty(dx.shape, np.float32)
    for k, fn in enumerate(_SDF):
        m = shape == k
        if m.any():
            sdf[m] = fn(x[m], y[m], radius[m][:, None, None])
    return np.clip(0.5 - sdf, 0.0, 1.0)


def _paint(canvas, idx, centers, shape, radius, angle, rgb, opacity, half: int, pad: int = _PAD) -> None:
    """Alpha-blend one shape into each image canvas[idx], in place (canvas float32 [B, 3, 32 + 2 PAD, ..]).

    idx int [M] distinct image indices; centers float32 [M, 2] (y, x) in image pixels; shape, radius, angle,
    opacity [M]; rgb [M, 3]. The shape is drawn in a (2 half + 1)^2 window around its centre. Every image
    gets one window, so the fancy-index write repeats no index. pad: the canvas padding (pixels per side).
    """
    offs = np.arange(-half, half + 1)
    w = offs.size
    rows = np.rint(centers[:, 0]).astype(np.int64)[:, None] + offs + pad        # [M, w] canvas rows
    cols = np.rint(centers[:, 1]).astype(np.int64)[:, None] + offs + pad        # [M, w] canvas columns
    dy = np.repeat((rows - pad - centers[:, :1]).astype(np.float32)[:, :, None], w, 2)   # [M, w] -> [M, w, w]
    dx = np.repeat((cols - pad - centers[:, 1:]).astype(np.float32)[:, None, :], w, 1)   # [M, w] -> [M, w, w]
    a = shape_alpha(shape, dy, dx, radius, angle) * opacity[:, None, None]     # [M, w, w]
    bi, ri, ci = idx[:, None, None], rows[:, :, None], cols[:, None, :]
    win = canvas[bi, :, ri, ci]                                                  # [M, w, w, 3]
    canvas[bi, :, ri, ci] = win + a[..., None] * (rgb[:, None, None, :] - win)  # "over" compositing


# Pixel noise: N(0, 1) through a 256-level inverse-CDF table indexed by random bytes, ~10x faster than
# rng.standard_normal (quantiles at (k + 0.5) / 256; tails cut at +-2.9; std 0.997) [INF].
_NORMAL_TABLE = np.array([NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)], np.float32)


def _upsample_matrix(g: int, size: int = IMG) -> np.ndarray:
    """float32 [size, g]: bilinear interpolation from a g-point grid spanning the image to `size` pixels."""
    t = np.clip((np.arange(size) + 0.5) * g / size - 0.5, 0, g - 1)
    lo = np.minimum(np.floor(t).astype(np.int64), g - 2)
    w = (t - lo).astype(np.float32)
    m = np.zeros((size, g), np.float32)
    m[np.arange(size), lo] = 1 - w
    m[np.arange(size), lo + 1] = w
    return m


def _pink_noise(rng: np.random.Generator, shape) -> np.ndarray:
    """float32 [..., 32, 32] fields with a 1/f amplitude spectrum (natural-image statistics), each of zero mean
    and unit std: white noise from rng, filtered by 1 / max(|f|, 1/32) in the Fourier domain (periodic)."""
    white = rng.standard_normal(shape, np.float32)
    f = np.hypot(np.fft.fftfreq(IMG)[:, None], np.fft.rfftfreq(IMG)[None, :])      # [32, 17] cycles per pixel
    amp = 1.0 / np.maximum(f, 1.0 / IMG)
    amp[0, 0] = 0.0
    t = np.fft.irfft2(np.fft.rfft2(white) * amp, s=(IMG, IMG)).astype(np.float32)
    t -= t.mean(axis=(-2, -1), keepdims=True)
    t /= t.std(axis=(-2, -1), keepdims=True) + 1e-6
    return t


def _render_batch(lat: dict, sl: slice, difficulty: float, rng: np.random.Generator, out: np.ndarray,
                  natural: float = 0.0, main_half: int = _MAIN_HALF) -> None:
    """Render the scenes lat[...][sl] into out (uint8 [B, 32, 32, 3]). Draws texture and noise from rng.

    Works channel-first, [B, 3, H, W], so that per-channel and per-image constants broadcast over long rows.
    natural > 0 (an option, DEFAULT_OPTIONS) adds 1/f textures and paints the occluders o_* of lat; its draws
    come before the pixel noise. main_half: the main objects' window half-width (_main_half(object_scale)).
    """
    d = difficulty
    L = {k: v[sl] for k, v in lat.items()}
    b = L["label"].shape[0]
    pad = max(_PAD, main_half - 2)          # centres round to 3 .. 28: windows reach 3 - half .. 28 + half
    canvas = np.zeros((b, 3, IMG + 2 * pad, IMG + 2 * pad), np.float32)
    img = canvas[:, :, pad:pad + IMG, pad:pad + IMG]                               # view [B, 3, 32, 32]

    # background: tinted grey + low-frequency colour and luminance texture + faint stripes
    u4, u8 = _upsample_matrix(4), _upsample_matrix(8)
    np.multiply(u8 @ rng.standard_normal((b, 3, 8, 8), np.float32) @ u8.T,      # [B, 3, 8, 8] -> [B, 3, 32, 32]
                0.02 + 0.10 * d, out=img)
    lum = u4 @ rng.standard_normal((b, 1, 4, 4), np.float32) @ u4.T               # [B, 1, 4, 4] -> [B, 1, 32, 32]
    lum *= 0.04 + 0.10 * d
    yy, xx = np.meshgrid(np.arange(IMG, dtype=np.float32), np.arange(IMG, dtype=np.float32), indexing="ij")
    th = L["stripe_theta"][:, None, None, None]
    phase = (np.cos(th) * xx + np.sin(th) * yy) * (2 * np.pi / L["stripe_period"])[:, None, None, None]
    phase += L["stripe_phase"][:, None, None, None]
    lum += L["stripe_amp"][:, None, None, None] * np.sin(phase)                    # [B, 1, 32, 32]
    img += lum                                                                     # [B, 3, 32, 32]
    img += hsv_to_rgb(L["bg_hue"], L["bg_sat"], L["bg_lum"])[:, :, None, None]    # [B, 3, 1, 1] tint
    if natural > 0.0:                       # 1/f background texture: luminance + weaker colour
        tex = _pink_noise(rng, (b, 4, IMG, IMG))
        img += natural * (0.12 * tex[:, :1] + 0.05 * tex[:, 1:])

    # distractors first, then the two main objects on top
    for j in range(N_DISTRACTORS):
        on = np.flatnonzero(L["d_active"][:, j])
        if on.size:
            _paint(canvas, on, L["d_centers"][on, j], L["d_shape"][on, j], L["d_radius"][on, j],
                   L["d_angle"][on, j], hsv_to_rgb(L["d_hue"][on, j], L["d_sat"][on, j], L["d_val"][on, j]),
                   L["d_alpha"][on, j], _DIST_HALF, pad)
    everyone = np.arange(b)
    for j in range(2):
        _paint(canvas, everyone, L["centers"][:, j], L["shape"], L["radius"][:, j], L["angle"][:, j],
               hsv_to_rgb(L["hue"][:, j], L["sat"][:, j], L["val"][:, j]),
               np.ones(b, np.float32), main_half, pad)
    if natural > 0.0:                       # occluders over the main objects, then a 1/f texture over everything
        for j in range(N_OCCLUDERS):
            on = np.flatnonzero(L["o_active"][:, j])
            if on.size:
                _paint(canvas, on, L["o_centers"][on, j], L["o_shape"][on, j], L["o_radius"][on, j],
                       L["o_angle"][on, j], hsv_to_rgb(L["o_hue"][on, j], L["o_sat"][on, j], L["o_val"][on, j]),
                       np.ones(on.size, np.float32), _DIST_HALF, pad)
        img *= 1.0 + 0.2 * natural * _pink_noise(rng, (b, 1, IMG, IMG))

    # 255 (gain x + offset) + 0.5 + noise, clipped; the uint8 cast truncates, so this rounds
    img *= (255.0 * L["gain"])[:, None, None, None]
    img += (255.0 * L["offset"] + 0.5)[:, None, None, None]
    noise = _NORMAL_TABLE[np.frombuffer(rng.bytes(img.size), np.uint8)].reshape(img.shape)
    noise *= 2.0 + 16.0 * d                                                        # std in uint8 units
    img += noise
    np.clip(img, 0.0, 255.0, out=img)
    out[...] = img.transpose(0, 2, 3, 1)                                          # [B, 3, H, W] -> [B, H, W, 3]


# ----------------------------------------------------------------------------------------------------------
# public API

def _make_split(seq: np.random.SeedSequence, n_per_class: int, difficulty: float, opts: dict | None = None):
    """One split: a balanced, shuffled label list, its scenes and images (uint8 [N, 32, 32, 3]).
    opts: resolved generator options (resolve_options; None = the defaults)."""
    opts = DEFAULT_OPTIONS if opts is None else opts
    scene_seq, pixel_seq = seq.spawn(2)
    rng = np.random.default_rng(scene_seq)
    labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), n_per_class))  # exactly balanced
    lat = draw_latents(rng, labels, difficulty, **opts)
    pixel_rng = np.random.default_rng(pixel_seq)
    x = np.empty((labels.size, IMG, IMG, 3), np.uint8)
    for start in range(0, labels.size, _BATCH):  # fixed batch size: the same bytes for the same arguments
        sl = slice(start, start + _BATCH)
        _render_batch(lat, sl, difficulty, pixel_rng, x[sl], natural=opts["natural"],
                      main_half=_main_half(opts["object_scale"]))
    return x, labels, lat


def make_embedded(seed: int = 0, n_train_per_class: int = 500, n_test_per_class: int = 100,
                  difficulty=DEFAULT_DIFFICULTY, return_latents: bool = False, *, hue_halfwidth=None,
                  object_scale=1.0, natural=0.0):
    """Generate the embedded dataset (no cache, no network).

    Args:
        seed: non-negative int; train and test use two independent children of SeedSequence(seed).
        n_train_per_class, n_test_per_class: images per class (positive ints); the splits are exactly balanced.
        difficulty: float in [0, 1] or "easy" / "medium" / "hard" (0.2 / 0.5 / 0.8); see the module docstring.
        return_latents: also return the per-image scene parameters (see `draw_latents`).
        hue_halfwidth, object_scale, natural: generator options (DEFAULT_OPTIONS, whose defaults give the
            default images byte for byte); they are recorded in meta["options"].
    Returns:
        Dataset "embedded": x uint8 [K n, 32, 32, 3], y int64 [K n], K = 20, groups / group_names from
        `class_groups()`, mean / std = channel_stats(x_train); with return_latents, (dataset, {"train": dict,
        "test": dict}).
    """
    seed = _check_seed(seed)
    n_train = _check_count("n_train_per_class", n_train_per_class)
    n_test = _check_count("n_test_per_class", n_test_per_class)
    d = resolve_difficulty(difficulty)
    opts = resolve_options(hue_halfwidth, object_scale, natural)
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    x_train, y_train, lat_train = _make_split(train_seq, n_train, d, opts)
    x_test, y_test, lat_test = _make_split(test_seq, n_test, d, opts)
    ds = _assemble(x_train, y_train, x_test, y_test, seed, n_train, n_test, d, opts=opts)
    return (ds, {"train": lat_train, "test": lat_test}) if return_latents else ds


def _assemble(x_train, y_train, x_test, y_test, seed, n_train, n_test, d, cache_file=None, opts=None) -> Dataset:
    groups, group_names = class_groups()
    mean, std = channel_stats(x_train)
    meta = {"generator": GENERATOR_VERSION, "seed": seed, "difficulty": d, "n_train_per_class": n_train,
            "n_test_per_class": n_test, "latent_structure": LATENT_STRUCTURE,
            "attribute_kind": {"superclass": "local", "colour": "local", "layout": "long-range"},
            "min_center_distance": MIN_SEPARATION - 2 * (0.25 + 1.25 * d),
            "cache_file": None if cache_file is None else str(cache_file),
            "options": dict(DEFAULT_OPTIONS if opts is None else opts)}
    return Dataset(name="embedded", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   class_names=class_names(), mean=mean, std=std, groups=groups, group_names=group_names,
                   meta=meta)


def cache_path(seed: int = 0, n_train_per_class: int = 500, n_test_per_class: int = 100,
               difficulty=DEFAULT_DIFFICULTY, root=None, *, hue_halfwidth=None, object_scale=1.0,
               natural=0.0) -> Path:
    """Where `load_embedded` keeps these arguments' dataset: <root or data_dir()>/embedded-....npz
    (non-default generator options add a -h..-s..-n.. tag before .npz; the default name is unchanged)."""
    d = resolve_difficulty(difficulty)
    tag = _options_tag(resolve_options(hue_halfwidth, object_scale, natural))
    name = (f"{GENERATOR_VERSION}-seed{_check_seed(seed)}-k{NUM_CLASSES}"
            f"-train{_check_count('n_train_per_class', n_train_per_class)}"
            f"-test{_check_count('n_test_per_class', n_test_per_class)}-d{d:.6g}{tag}.npz")
    folder = data_dir() if root is None else Path(root).expanduser()
    return folder / name


def _cache_key(seed, n_train, n_test, d, opts=None) -> str:
    tag = "" if opts is None else _options_tag(opts)
    return f"{GENERATOR_VERSION} seed={seed} k={NUM_CLASSES} train={n_train} test={n_test} d={d!r}{tag}"


def _read_cache(path: Path, key: str, n_train: int, n_test: int):
    """The four arrays of a valid cache file, or None (with a warning if the file exists but is bad)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("key", "x_train", "y_train", "x_test", "y_test")}
        problem = None
        if str(arrays["key"]) != key:
            problem = f"it was made for {str(arrays['key'])!r}, expected {key!r}"
        for split, n in (("train", n_train), ("test", n_test)):
            x, y = arrays["x_" + split], arrays["y_" + split]
            if x.dtype != np.uint8 or x.shape != (NUM_CLASSES * n, IMG, IMG, 3):
                problem = f"x_{split} is {x.dtype} {x.shape}, expected uint8 {(NUM_CLASSES * n, IMG, IMG, 3)}"
            elif y.dtype != np.int64 or y.shape != (NUM_CLASSES * n,) or np.any(
                    np.bincount(y.clip(0, NUM_CLASSES), minlength=NUM_CLASSES + 1)[:NUM_CLASSES] != n):
                problem = f"y_{split} is not {n} int64 labels per class"
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        problem = f"it cannot be read ({type(exc).__name__}: {exc})"
    if problem is not None:
        warnings.warn(f"ignoring the embedded-dataset cache {path}: {problem}; generating it again",
                      RuntimeWarning, stacklevel=3)
        return None
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]


def _write_cache(path: Path, key: str, **arrays) -> bool:
    """np.savez to `path` atomically (minicct.io.atomic): readers never see half a file."""
    from ..io.atomic import atomic_write
    try:
        atomic_write(path, lambda f: np.savez(f, key=np.array(key), **arrays))
    except OSError as exc:
        warnings.warn(f"could not write the embedded-dataset cache {path} ({exc}); using it uncached",
                      RuntimeWarning, stacklevel=3)
        return False
    return True


def load_embedded(seed: int = 0, n_train_per_class: int = 500, n_test_per_class: int = 100,
                  difficulty=DEFAULT_DIFFICULTY, root=None, cache: bool = True, *, hue_halfwidth=None,
                  object_scale=1.0, natural=0.0) -> Dataset:
    """The embedded dataset, generated once and then read from an .npz cache.

    Same arguments as `make_embedded` (see there), plus:
        root: cache folder (default `base.data_dir()`: $MINICCT_DATA, else data/ of a checkout, else
            ~/.cache/minicct).
        cache: False generates without reading or writing any file.
    The cache file name holds the generator version, seed, sizes and difficulty (`cache_path`). A cache that
    cannot be read, or holds other arguments or wrong shapes, is regenerated with a RuntimeWarning.
    """
    seed = _check_seed(seed)
    n_train = _check_count("n_train_per_class", n_train_per_class)
    n_test = _check_count("n_test_per_class", n_test_per_class)
    d = resolve_difficulty(difficulty)
    opts = resolve_options(hue_halfwidth, object_scale, natural)
    if not cache:
        return make_embedded(seed, n_train, n_test, d, **opts)
    path = cache_path(seed, n_train, n_test, d, root, **opts)
    key = _cache_key(seed, n_train, n_test, d, opts)
    arrays = _read_cache(path, key, n_train, n_test)
    if arrays is None:
        ds = make_embedded(seed, n_train, n_test, d, **opts)
        arrays = ds.x_train, ds.y_train, ds.x_test, ds.y_test
        if not _write_cache(path, key, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test,
                            y_test=ds.y_test):
            return ds
    return _assemble(*arrays, seed, n_train, n_test, d, cache_file=path, opts=opts)
