"""Statistics of an experiment: mean pass@1 with a 95% interval, paired differences, flips.

Input: per benchmark, a matrix `X[seed, problem]` of per-problem pass rates (c / n of one cell's
results.json; 0 or 1 with greedy decoding), seeds in the same order for every method and
problems in the same order for every method and seed.

Intervals come from a two-level bootstrap: each resample draws the seeds with replacement (once,
shared by every benchmark, because one seed is one trained model evaluated on all of them) and,
independently per benchmark, the problems with replacement; the statistic is the mean of the
resampled cells. A resample is represented by multiplicities (multinomial counts), so the mean
is `w_seed @ X @ w_problem / (S * P)` and 10,000 resamples of 1,000 problems cost a few
matrix products. The interval is the percentile interval of the resampled statistic.

The average over benchmarks is the mean of the per-benchmark means (each benchmark weighs the
same, as in the evaluate stage's `pass_at_1/avg`), computed inside every resample.

A difference `method - baseline` is PAIRED: the difference matrix `B - A` (same seed, same
problem) is resampled, never the two arms independently, so the problem-to-problem variation
that both methods share cancels. A problem *flips* fail->pass when its pass rate averaged over
the seeds is higher with the method than with the baseline (with one seed and greedy decoding:
the baseline fails it, the method solves it), and pass->fail the other way round.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

AVG = "avg"


@dataclass
class Estimate:
    """A mean with its bootstrap interval and what it rests on."""

    mean: float
    low: float
    high: float
    n_problems: int
    n_seeds: int
    confidence: float
    warnings: list[str] = field(default_factory=list)

    @property
    def spans_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Difference(Estimate):
    """`method - baseline`, paired, plus the problems that flip."""

    fail_to_pass: int = 0
    pass_to_fail: int = 0


def _check(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not scores:
        raise ValueError("no benchmark scores given")
    out: dict[str, np.ndarray] = {}
    n_seeds = None
    for name, x in scores.items():
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"benchmark {name!r}: expected a non-empty [seeds, problems] matrix, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"benchmark {name!r}: non-finite pass rate")
        if n_seeds is not None and x.shape[0] != n_seeds:
            raise ValueError(f"benchmark {name!r}: {x.shape[0]} seeds, the others have {n_seeds}")
        n_seeds = x.shape[0]
        out[name] = x
    return out


def _counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """[n_boot, n] multiplicities of a resample of n items with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def bootstrap_means(scores: dict[str, np.ndarray], n_boot: int = 10000, seed: int = 0) -> dict[str, np.ndarray]:
    """{benchmark: [n_boot] resampled means, "avg": [n_boot] their per-resample average}.

    Seeds are resampled jointly for all benchmarks, problems per benchmark (see the module doc).
    A fixed `seed` gives the same resamples for every call, so the intervals of different
    methods and differences use common random numbers."""
    scores = _check(scores)
    rng = np.random.default_rng(seed)
    n_seeds = next(iter(scores.values())).shape[0]
    w_seed = _counts(rng, n_seeds, n_boot)
    out: dict[str, np.ndarray] = {}
    for name in sorted(scores):  # a fixed order: the same resamples whatever the dict order
        x = scores[name]
        w_prob = _counts(rng, x.shape[1], n_boot)
        out[name] = np.einsum("bs,sp,bp->b", w_seed, x, w_prob) / (n_seeds * x.shape[1])
    out[AVG] = np.mean([out[n] for n in sorted(scores)], axis=0)
    return out


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def _point(scores: dict[str, np.ndarray]) -> dict[str, float]:
    means = {n: float(x.mean()) for n, x in scores.items()}
    means[AVG] = float(np.mean([means[n] for n in scores]))
    return means


def _sizes(scores: dict[str, np.ndarray]) -> dict[str, tuple[int, int]]:
    sizes = {n: (x.shape[1], x.shape[0]) for n, x in scores.items()}
    sizes[AVG] = (sum(p for p, _ in sizes.values()), next(iter(sizes.values()))[1])
    return sizes


def mean_intervals(scores: dict[str, np.ndarray], n_boot: int = 10000, seed: int = 0,
                   confidence: float = 0.95) -> dict[str, Estimate]:
    """Mean pass@1 over seeds and problems with its bootstrap interval, per benchmark and "avg"."""
    scores = _check(scores)
    boots = bootstrap_means(scores, n_boot, seed)
    point, sizes = _point(scores), _sizes(scores)
    out = {}
    for name in [*scores, AVG]:
        low, high = _interval(boots[name], confidence)
        n_p, n_s = sizes[name]
        est = Estimate(point[name], low, high, n_p, n_s, confidence)
        if n_s < 2:
            est.warnings.append("one seed: the interval covers problem sampling only, not training noise")
        out[name] = est
    return out


def flips(base: np.ndarray, other: np.ndarray) -> tuple[int, int]:
    """(fail->pass, pass->fail): problems whose seed-averaged pass rate rises / falls."""
    a, b = np.asarray(base, dtype=np.float64).mean(axis=0), np.asarray(other, dtype=np.float64).mean(axis=0)
    return int(np.sum(b > a)), int(np.sum(b < a))


def paired_differences(baseline: dict[str, np.ndarray], method: dict[str, np.ndarray], n_boot: int = 10000,
                       seed: int = 0, confidence: float = 0.95) -> dict[str, Difference]:
    """`method - baseline` per benchmark and on average, paired over seeds and problems.

    Both arms must hold the same benchmarks with the same [seeds, problems] shapes (the caller
    aligns seeds and problem ids). An interval that contains zero gets a warning: the data do
    not tell the two methods apart at this sample size."""
    baseline, method = _check(baseline), _check(method)
    if set(baseline) != set(method):
        raise ValueError(f"benchmarks differ: baseline {sorted(baseline)}, method {sorted(method)}")
    for n in baseline:
        if baseline[n].shape != method[n].shape:
            raise ValueError(f"benchmark {n!r}: baseline shape {baseline[n].shape} != method shape {method[n].shape}")
    diff = {n: method[n] - baseline[n] for n in baseline}
    boots = bootstrap_means(diff, n_boot, seed)
    point, sizes = _point(diff), _sizes(diff)
    flip = {n: flips(baseline[n], method[n]) for n in baseline}
    flip[AVG] = (sum(u for u, _ in flip.values()), sum(d for _, d in flip.values()))
    out = {}
    for name in [*diff, AVG]:
        low, high = _interval(boots[name], confidence)
        n_p, n_s = sizes[name]
        d = Difference(point[name], low, high, n_p, n_s, confidence, fail_to_pass=flip[name][0],
                       pass_to_fail=flip[name][1])
        if d.spans_zero:
            d.warnings.append(f"the {100 * confidence:.0f}% interval contains 0: no detectable difference "
                              f"on {n_p} problems x {n_s} seed(s)")
        if n_s < 2:
            d.warnings.append("one seed: the interval covers problem sampling only, not training noise")
        out[name] = d
    return out
