"""Group statistics against scipy (t, z, circular mean and SD) and against numpy (median, missing values)."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bids_encoder.inference import summaries as stats


def test_one_sample_t_and_z_match_scipy_with_missing_values(rng):
    values = rng.normal(0.3, 1.0, (6, 500))
    values[0, :50] = np.nan  # some voxels have 5 participants
    values[1:, 490:] = np.nan  # the last 10 have one: no test
    t, z, df = stats.one_sample_t(values)
    reference = scipy_stats.ttest_1samp(values[:, :490], 0.0, axis=0, nan_policy="omit")
    np.testing.assert_allclose(t[:490], reference.statistic, rtol=1e-10)
    greater = scipy_stats.ttest_1samp(values[:, :490], 0.0, axis=0, nan_policy="omit", alternative="greater")
    np.testing.assert_allclose(z[:490], scipy_stats.norm.isf(greater.pvalue), rtol=1e-8, atol=1e-10)
    assert np.all(df[:50] == 4) and np.all(df[50:490] == 5)
    assert np.all(np.isnan(t[490:])) and np.all(np.isnan(z[490:]))


def test_z_stays_finite_and_exact_for_large_t():
    # t = 60 with 3 degrees of freedom: p ≈ 5e-6; t = 1e4: p ≈ 1e-12 — both well inside float64
    values = np.array([[1.0, 1.0], [1.01, 1.0001], [0.99, 0.9999], [1.0, 1.0]])
    t, z, _ = stats.one_sample_t(values)
    p = scipy_stats.t.sf(t, 3)
    np.testing.assert_allclose(z, scipy_stats.norm.isf(p), rtol=1e-9)
    _, z_negative, _ = stats.one_sample_t(-values)
    np.testing.assert_allclose(z_negative, -z, rtol=1e-12)


def test_linear_summary_matches_numpy(rng):
    values = rng.normal(2.0, 1.0, (7, 300))
    summary = stats.linear_summary(values)
    np.testing.assert_allclose(summary["mean"], values.mean(axis=0))
    np.testing.assert_allclose(summary["median"], np.median(values, axis=0))
    np.testing.assert_allclose(summary["sd"], values.std(axis=0, ddof=1))
    values[:, 0] = np.nan
    values[1:, 1] = np.nan
    summary = stats.linear_summary(values)
    assert np.isnan(summary["mean"][0]) and summary["mean"][1] == values[0, 1] and np.isnan(summary["sd"][1])


def test_circular_statistics_match_scipy_and_wrap(rng):
    radians = rng.vonmises(3.0, 4.0, (9, 400))  # around ±172°: the linear mean would be near 0
    degrees = np.degrees(radians)
    mean = stats.circular_mean(degrees)
    np.testing.assert_allclose(mean, np.degrees(scipy_stats.circmean(radians, high=np.pi, low=-np.pi, axis=0)),
                               atol=1e-9)
    np.testing.assert_allclose(stats.circular_sd(degrees), np.degrees(scipy_stats.circstd(radians, axis=0)),
                               atol=1e-9)
    assert np.all(np.abs(mean) > 120)


@pytest.mark.parametrize("n", [5, 6])
def test_circular_median_is_the_median_on_an_arc_and_rotation_equivariant(rng, n):
    angles = rng.uniform(-60.0, 60.0, (n, 200))
    np.testing.assert_allclose(stats.circular_median(angles), np.median(angles, axis=0), atol=1e-9)
    rotated = (angles + 180.0 + 180.0) % 360.0 - 180.0  # across the ±180° seam
    expected = (np.median(angles, axis=0) + 360.0) % 360.0 - 180.0
    difference = (stats.circular_median(rotated) - expected + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(difference, 0.0, atol=1e-9)
