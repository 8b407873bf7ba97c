"""The experiment statistics against hand-worked cases and scipy.stats.bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from codeblock.experiment.stats import AVG, bootstrap_means, flips, mean_intervals, paired_differences


def test_flip_only_gains_binomial_interval_excludes_zero():
    # 20 problems, one seed. The baseline solves problems 0-4, the method solves 0-4 AND 5-14:
    # the paired difference is 1 on the 10 flipped problems and 0 elsewhere, mean 10/20 = 0.5.
    # A resample of 20 problems holds K flipped ones with K ~ Binomial(20, 0.5), and its mean
    # difference is K / 20. Binomial(20, .5): P(K <= 5) = .0207 < .025 <= P(K <= 6) = .0577 and
    # P(K <= 13) = .9423 < .975 <= P(K <= 14) = .9793, so the 95% percentile interval is
    # [6/20, 14/20] = [0.30, 0.70]: it excludes zero.
    base = np.zeros((1, 20))
    base[0, :5] = 1
    meth = base.copy()
    meth[0, 5:15] = 1
    d = paired_differences({"he": base}, {"he": meth}, n_boot=20000, seed=1)["he"]
    assert d.mean == pytest.approx(0.5)
    assert (d.low, d.high) == pytest.approx((0.30, 0.70))
    assert not d.spans_zero
    assert (d.fail_to_pass, d.pass_to_fail) == (10, 0)
    assert not any("contains 0" in w for w in d.warnings)
    assert any("one seed" in w for w in d.warnings)


def test_symmetric_flips_interval_contains_zero_and_warns():
    # 4 problems flip up and 4 flip down out of 20: the mean difference is 0 and by symmetry the
    # bootstrap distribution of (K_up - K_down) / 20 is centred on 0, so the interval holds 0.
    base = np.zeros((1, 20))
    meth = np.zeros((1, 20))
    base[0, :4] = 1
    meth[0, 4:8] = 1
    d = paired_differences({"he": base}, {"he": meth}, n_boot=5000, seed=0)["he"]
    assert d.mean == 0.0
    assert d.low < 0 < d.high
    assert (d.fail_to_pass, d.pass_to_fail) == (4, 4)
    assert any("contains 0" in w for w in d.warnings)


def test_seed_resampling_one_problem_two_seeds():
    # One problem, seed 0 passes, seed 1 fails. Seed multiplicities (2,0), (1,1), (0,2) have
    # probabilities 1/4, 1/2, 1/4 and give means 1, 0.5, 0: the 95% interval is [0, 1].
    est = mean_intervals({"he": np.array([[1.0], [0.0]])}, n_boot=4000, seed=3)["he"]
    assert est.mean == 0.5
    assert (est.low, est.high) == (0.0, 1.0)
    assert (est.n_problems, est.n_seeds) == (1, 2)
    assert est.warnings == []
    boots = bootstrap_means({"he": np.array([[1.0], [0.0]])}, n_boot=4000, seed=3)["he"]
    assert set(np.unique(boots)) == {0.0, 0.5, 1.0}
    assert np.mean(boots == 0.5) == pytest.approx(0.5, abs=0.03)


def test_average_weighs_benchmarks_equally():
    # Benchmark a: 2 problems, all solved (mean 1); benchmark b: 4 problems, none solved (mean 0).
    # The average is (1 + 0) / 2 = 0.5, not the pooled 2/6; with no variation inside either
    # benchmark every resample gives 0.5, so the interval is the point [0.5, 0.5].
    res = mean_intervals({"a": np.ones((2, 2)), "b": np.zeros((2, 4))}, n_boot=500)
    assert res[AVG].mean == 0.5
    assert (res[AVG].low, res[AVG].high) == (0.5, 0.5)
    assert res[AVG].n_problems == 6
    assert (res["a"].mean, res["b"].mean) == (1.0, 0.0)


def test_one_seed_mean_interval_matches_scipy_percentile_bootstrap():
    rng = np.random.default_rng(7)
    x = (rng.random(60) < 0.35).astype(float)
    ours = mean_intervals({"mbpp": x[None, :]}, n_boot=20000, seed=11)["mbpp"]
    ref = sps.bootstrap((x,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                        random_state=np.random.default_rng(12)).confidence_interval
    assert ours.mean == pytest.approx(x.mean())
    assert ours.low == pytest.approx(ref.low, abs=0.02)
    assert ours.high == pytest.approx(ref.high, abs=0.02)


def test_one_seed_paired_difference_matches_scipy_paired_bootstrap():
    rng = np.random.default_rng(5)
    a = (rng.random(80) < 0.4).astype(float)
    b = np.where(rng.random(80) < 0.25, 1 - a, a)  # the method flips about a quarter of the problems
    ours = paired_differences({"he": a[None]}, {"he": b[None]}, n_boot=20000, seed=2)["he"]
    ref = sps.bootstrap((a, b), lambda u, v, axis=-1: np.mean(v - u, axis=axis), paired=True, vectorized=True,
                        n_resamples=20000, method="percentile", random_state=np.random.default_rng(3))
    assert ours.mean == pytest.approx(np.mean(b - a))
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.02)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.02)


def test_pairing_narrows_the_interval():
    # The method solves exactly the baseline's problems plus one: paired, every resample's
    # difference is K/40 with K ~ Binomial(40, 1/40) (about Poisson(1)): P(K = 0) = .364 > .025 and
    # P(K <= 2) = .920 < .975 <= P(K <= 3) = .981, so the interval is [0, 3/40]. Unpaired (two
    # independently resampled means of ~20/40 passes each) it would be about +-0.22 wide.
    rng = np.random.default_rng(0)
    base = (rng.random((1, 40)) < 0.5).astype(float)
    meth = base.copy()
    meth[0, np.flatnonzero(base[0] == 0)[0]] = 1
    d = paired_differences({"he": base}, {"he": meth}, n_boot=4000)["he"]
    assert (d.low, d.high) == pytest.approx((0.0, 0.075))
    assert (d.fail_to_pass, d.pass_to_fail) == (1, 0)


def test_flips_use_seed_averaged_rates():
    base = np.array([[1, 0, 1], [0, 0, 1]], dtype=float)  # rates 0.5, 0, 1
    meth = np.array([[1, 1, 0], [1, 0, 1]], dtype=float)  # rates 1, 0.5, 0.5
    assert flips(base, meth) == (2, 1)


def test_fixed_seed_is_reproducible_and_order_free():
    s = {"b": np.eye(3)[:2], "a": np.ones((2, 5)) * 0.5}
    r1 = bootstrap_means(s, n_boot=300, seed=9)
    r2 = bootstrap_means(dict(reversed(list(s.items()))), n_boot=300, seed=9)
    for k in r1:
        np.testing.assert_array_equal(r1[k], r2[k])


@pytest.mark.parametrize("bad, msg", [
    ({"he": np.zeros(3)}, "seeds, problems"),
    ({"he": np.zeros((2, 3)), "mbpp": np.zeros((3, 3))}, "3 seeds"),
    ({"he": np.array([[np.nan]])}, "non-finite"),
    ({}, "no benchmark"),
])
def test_bad_input_is_named(bad, msg):
    with pytest.raises(ValueError, match=msg):
        mean_intervals(bad)


def test_mismatched_arms_are_refused():
    with pytest.raises(ValueError, match="shape"):
        paired_differences({"he": np.zeros((1, 3))}, {"he": np.zeros((1, 4))})
    with pytest.raises(ValueError, match="benchmarks differ"):
        paired_differences({"he": np.zeros((1, 3))}, {"mbpp": np.zeros((1, 3))})
