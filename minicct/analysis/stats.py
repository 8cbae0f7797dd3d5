"""Uncertainty and verdicts over replicates (read-out seeds): summaries, intervals and the trend rule. [INF]

Every quantity of the SNP analysis (accuracy, clusters per node, cluster size, noise, SNR, single-node
accuracy, ...) is measured once per replicate r = 1..S (a fresh read-out trained with seed r on the same
frozen model and scored on the same test images). The replicates are independent given the model, so:

    mean  = (1/S) sum_r x_r,   sd = sqrt( sum_r (x_r - mean)^2 / (S - 1) )
    95 % interval of the mean = mean +- t_{S-1, 0.975} sd / sqrt(S)                        (`summarise`)

It covers the read-out's training noise (initialisation, batch order) on this model and this test set, not
the choice of the trained model or of the test images (`bootstrap_mean_interval` adds the latter for
per-image quantities such as accuracy). With one replicate there is no interval (nan) and no verdict.

Trend rule ("X rises along the encoders"), on paired differences within a replicate (`trend_verdict`):
    total_r  = x_r[last] - x_r[first]             interval at level 95 %
    step_r,e = x_r[e + 1] - x_r[e]                 intervals at level 1 - 0.05 / (number of steps) (Bonferroni)
    supported     the total interval lies strictly on the claimed side of 0 and no step interval lies
                  strictly on the opposite side;
    contradicted  the total interval lies strictly on the opposite side, or some step interval does
                  (a significant reversal contradicts "progressively");
    inconclusive  otherwise (including fewer than 2 replicates with finite values).
`compare_verdict` applies the same rule to one paired difference (e.g. ANDC minus a baseline), and
`no_loss_verdict` decides "without affecting the accuracy" against a stated tolerance.

Null rule (`null_check`, beside the verdict rules above, which it does not change): every claim is also
decided, by the same rule, on the label-permutation null (nulls.sweep_with_null: read-outs trained and fields
computed with shuffled labels). If the null meets the claim too, the claim does not show label information:
the row says "not label-driven: the null shows it too". If the real run meets it and the null does not (and, for
a trend, the excess -- real minus null, paired within a seed -- shows the trend too): "label-driven". Otherwise
nothing is claimed.
Shape legend: S replicates (seeds), E positions (tokenizer + encoders).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import stdtrit   # Student t quantile (what scipy.stats.t.ppf calls; scipy.stats takes
                                     # 0.4 s to import)

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
LABEL_DRIVEN, NOT_LABEL_DRIVEN = "label-driven", "not label-driven: the null shows it too"
NULL_RULE = ("judged on the label-permutation null by the same rule: 'not label-driven' if the null meets the claim "
             "too; 'label-driven' if the real run meets it, the null does not and (for a trend) the excess over the "
             "null, paired within a seed, shows the trend as well")


@dataclass
class Summary:
    """mean, sd (ddof 1), 95 % interval [lo, hi] of the mean, n finite replicates, and the raw values."""

    mean: float
    sd: float
    lo: float
    hi: float
    n: int
    values: list

    def to_dict(self):
        return asdict(self)

    def fmt(self, scale=1.0, digits=2):
        """'mean [lo, hi]' (scaled, e.g. 100 for percent)."""
        f = f"{{:.{digits}f}}"
        if not np.isfinite(self.lo):
            return f"{f.format(scale * self.mean)} [n={self.n}]"
        return f"{f.format(scale * self.mean)} [{f.format(scale * self.lo)}, {f.format(scale * self.hi)}]"


def _t_interval(x, level):
    """(mean, sd, lo, hi) of a 1-d array of finite values; t interval of the mean (nan when n < 2)."""
    n = x.size
    if n == 0:
        return (float("nan"),) * 4
    mean = float(x.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), float("nan")
    sd = float(x.std(ddof=1))
    half = float(stdtrit(n - 1, 0.5 + level / 2)) * sd / math.sqrt(n)      # t quantile x standard error
    return mean, sd, mean - half, mean + half


def summarise(values, level=0.95):
    """Summary of replicate values [S]: mean, sd, t interval of the mean at `level` (non-finite values dropped)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    fin = x[np.isfinite(x)]
    mean, sd, lo, hi = _t_interval(fin, level)
    return Summary(mean, sd, lo, hi, int(fin.size), [float(v) for v in x])


def summarise_columns(X, level=0.95):
    """One Summary per column of X [S, E] (e.g. a quantity per seed and per encoder)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be [replicates, positions], got shape {X.shape}")
    return [summarise(X[:, e], level) for e in range(X.shape[1])]


def _side(s, sign):
    """+1 if the interval of s lies strictly on `sign`'s side of 0, -1 if strictly opposite, 0 otherwise."""
    if s.n < 2 or not np.isfinite(s.lo):
        return 0
    lo, hi = sign * s.lo, sign * s.hi
    lo, hi = min(lo, hi), max(lo, hi)
    if lo > 0:
        return 1
    if hi < 0:
        return -1
    return 0


def compare_verdict(diff, direction="greater", level=0.95):
    """Verdict on one paired difference per replicate (claim: diff > 0 for 'greater', < 0 for 'less').

    supported: the interval of the mean difference is strictly on the claimed side; contradicted: strictly on
    the other side; inconclusive otherwise. Returns (verdict, Summary of diff).
    """
    sign = _sign(direction)
    s = summarise(diff, level)
    side = _side(s, sign)
    return (SUPPORTED if side > 0 else CONTRADICTED if side < 0 else INCONCLUSIVE), s


def _sign(direction):
    if direction in ("rise", "greater", "up"):
        return 1.0
    if direction in ("fall", "less", "down"):
        return -1.0
    raise ValueError(f"direction must be 'rise'/'greater' or 'fall'/'less', got {direction!r}")


def trend_verdict(X, direction="rise", level=0.95):
    """Does X [S, E] (replicates x positions along the encoders) rise (or fall) along the positions?

    The rule of the module docstring on paired differences within replicates. Returns a dict:
        verdict, total (Summary of last - first), steps (list of Summaries of x[e+1] - x[e], at the
        Bonferroni level), steps_with (number of steps whose interval is strictly on the claimed side),
        steps_against (strictly on the opposite side), per_position (Summary per column), rule (text).
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] < 2:
        raise ValueError(f"X must be [replicates, positions] with at least 2 positions, got shape {X.shape}")
    sign = _sign(direction)
    S, E = X.shape
    total = summarise(X[:, -1] - X[:, 0], level)
    step_level = 1 - (1 - level) / (E - 1)
    steps = [summarise(X[:, e + 1] - X[:, e], step_level) for e in range(E - 1)]
    sides = [_side(s, sign) for s in steps]
    t_side = _side(total, sign)
    if t_side < 0 or any(sd < 0 for sd in sides):
        verdict = CONTRADICTED
    elif t_side > 0:
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE
    word = "rises" if sign > 0 else "falls"
    return {"verdict": verdict, "total": total, "steps": steps, "steps_with": sum(s > 0 for s in sides),
            "steps_against": sum(s < 0 for s in sides), "per_position": summarise_columns(X, level),
            "rule": f"{word}: last-minus-first {int(100 * level)} % interval on the claimed side and no step "
                    f"interval ({100 * step_level:.1f} %, Bonferroni) against; contradicted if either is against"}


def no_loss_verdict(diff, tolerance, level=0.95):
    """'Without affecting the accuracy': diff = pruned - dense accuracy per replicate, tolerance >= 0.

    supported: the interval of the mean difference lies above -tolerance (any loss is smaller than the
    tolerance); contradicted: the interval lies below -tolerance (a loss larger than the tolerance);
    inconclusive otherwise. Returns (verdict, Summary).
    """
    s = summarise(diff, level)
    if s.n < 2 or not np.isfinite(s.lo):
        return INCONCLUSIVE, s
    if s.lo > -tolerance:
        return SUPPORTED, s
    if s.hi < -tolerance:
        return CONTRADICTED, s
    return INCONCLUSIVE, s


def bootstrap_mean_interval(correct, n_boot=1000, level=0.95, seed=0):
    """Percentile interval of a mean accuracy over test images and replicates: (mean, lo, hi). [INF]

    correct [S, N] bool/0-1 (replicate x test image); see bootstrap_summary for the resampling.
    """
    return _bootstrap(correct, n_boot, level, seed)[:3]


def bootstrap_summary(per_image, n_boot=2000, level=0.95, seed=0):
    """Summary of a mean over replicates and test images, with a two-stage bootstrap interval. [INF]

    per_image [S, N]: a per-image quantity for each replicate (e.g. 0/1 correctness, or the paired difference
    of two read-outs' correctness on the same images). Each draw resamples the N images (the same images for
    every replicate, so paired differences stay paired) and the S replicates, and takes the grand mean;
    the interval is the percentile interval, sd the bootstrap sd. Unlike `summarise` over seeds, it includes
    the sampling of the test images. Use with compare_verdict_from / no_loss_verdict_from.
    """
    mean, lo, hi, sd = _bootstrap(per_image, n_boot, level, seed)
    c = np.asarray(per_image, dtype=np.float64)
    return Summary(mean, sd, lo, hi, int(c.shape[0] if c.ndim == 2 else 1),
                   [float(v) for v in np.atleast_2d(c).mean(axis=1)])


def _bootstrap(correct, n_boot, level, seed):
    c = np.asarray(correct, dtype=np.float64)
    if c.ndim == 1:
        c = c[None]
    if c.ndim != 2 or c.size == 0:
        raise ValueError(f"per-image values must be [replicates, images], got shape {c.shape}")
    S, N = c.shape
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for b in range(n_boot):                                   # n_boot vector operations, no per-image loop
        means[b] = c[np.ix_(rng.integers(0, S, S), rng.integers(0, N, N))].mean()
    a = (1 - level) / 2
    return float(c.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a)), float(means.std(ddof=1))


def verdict_from(s, direction="greater", tolerance=None):
    """Verdict from a ready Summary: compare (direction) when tolerance is None, else 'no loss beyond tolerance'
    (the rules of compare_verdict and no_loss_verdict)."""
    if not np.isfinite(s.lo):
        return INCONCLUSIVE
    if tolerance is not None:
        return SUPPORTED if s.lo > -tolerance else CONTRADICTED if s.hi < -tolerance else INCONCLUSIVE
    side = _side(s, _sign(direction))
    return SUPPORTED if side > 0 else CONTRADICTED if side < 0 else INCONCLUSIVE


def null_check(verdict, null_verdict, excess_verdict=None):
    """The null rule of the module docstring: the words for a claim's real verdict beside its verdict under the
    label-permutation null (both from the same rule). null_verdict None: no null was run. excess_verdict: for a
    trend, the verdict of the same trend on the excess (real minus null, paired within a seed), if available.

        real and null supported                          -> NOT_LABEL_DRIVEN ("not label-driven: the null shows it too")
        null supported, real not                         -> "only the null shows it (real: <verdict>)"
        real supported, null not, excess supported/None  -> LABEL_DRIVEN
        real supported, null not, excess not supported   -> "the null does not show it, but the excess over the null
                                                            is <excess verdict>"  (not called label-driven)
        neither supported                                -> "neither shows it"
    """
    if null_verdict is None:
        return "no null run"
    if null_verdict == SUPPORTED:
        return NOT_LABEL_DRIVEN if verdict == SUPPORTED else f"only the null shows it (real: {verdict})"
    if verdict == SUPPORTED:
        if excess_verdict is None or excess_verdict == SUPPORTED:
            return LABEL_DRIVEN
        return f"the null does not show it, but the excess over the null is {excess_verdict}"
    return "neither shows it"
