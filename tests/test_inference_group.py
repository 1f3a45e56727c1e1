"""Group-level GLM (bids_encoder.inference.group): REML between-participant variance, mixed-effects calibration,
equality with OLS where it must hold, and OLS against the numpy closed form."""

import numpy as np
import pytest
from scipy import stats

from bids_encoder.inference.group import group_glm, reml_tau2


def _simulate(rng, n_participants, n_voxels, tau2, mean=0.0, equal=False):
    s2 = np.full((n_participants, n_voxels), 1.0) if equal else rng.uniform(0.2, 3.0, (n_participants, n_voxels))
    effects = mean + rng.normal(size=(n_participants, n_voxels)) * np.sqrt(s2 + tau2)
    return effects, s2


def _dense_reml(y, s2, design):
    """Brute force: the REML log-likelihood on a fine grid of tau² (one voxel)."""
    grid = np.linspace(0, 5 * np.var(y), 20001)
    best, value = None, -np.inf
    for tau2 in grid:
        v = s2 + tau2
        x = design / v[:, None]
        gram = design.T @ x
        beta = np.linalg.solve(gram, x.T @ y)
        r = y - design @ beta
        ll = -0.5 * (np.log(v).sum() + np.linalg.slogdet(gram)[1] + (r**2 / v).sum())
        if ll > value:
            best, value = tau2, ll
    return best


def test_reml_is_unbiased_and_maximises_the_restricted_likelihood():
    """300 voxels (replicates), 25 participants with unequal first-level variances, tau² = 1: the mean REML
    estimate is within two standard errors of 1; single voxels match a brute-force grid maximisation."""
    rng = np.random.default_rng(0)
    effects, s2 = _simulate(rng, 25, 300, 1.0, mean=0.5)
    design = np.ones((25, 1))
    tau2 = reml_tau2(effects, s2, design)
    standard_error = tau2.std(ddof=1) / np.sqrt(tau2.size)
    assert abs(tau2.mean() - 1.0) < 2 * standard_error, (tau2.mean(), standard_error)
    for voxel in range(2):
        assert tau2[voxel] == pytest.approx(_dense_reml(effects[:, voxel], s2[:, voxel], design), abs=2e-3)


def test_mixed_effects_z_is_calibrated_under_the_null():
    """Mean 0, tau² = 0.5, unequal first-level variances, 20 participants, 3000 voxels: the fraction of p < 0.05
    is 0.05 within three binomial standard deviations (and of p < 0.01, 0.01 likewise)."""
    rng = np.random.default_rng(1)
    effects, s2 = _simulate(rng, 20, 3000, 0.5)
    result = group_glm(effects, np.ones((20, 1)), {"mean": [1.0]}, variances=s2, model="mixed")["mean"]
    for alpha in (0.05, 0.01):
        fraction = (result["p"] < alpha).mean()
        assert abs(fraction - alpha) < 3 * np.sqrt(alpha * (1 - alpha) / 3000), (alpha, fraction)
    assert np.all(result["dof"] == 19)


def test_mixed_equals_ols_with_equal_variances_and_positive_tau2():
    """Equal first-level variances and a clearly positive tau²: REML gives s² + tau² = the OLS residual variance,
    so effect, variance, t and z equal OLS to 1e-3, with a covariate too."""
    rng = np.random.default_rng(2)
    n = 16
    effects, s2 = _simulate(rng, n, 200, 4.0, mean=1.0, equal=True)
    age = rng.normal(size=n)
    design = np.column_stack([np.ones(n), age - age.mean()])
    contrasts = {"mean": [1.0, 0.0], "age": [0.0, 1.0]}
    mixed = group_glm(effects, design, contrasts, variances=s2, model="mixed")
    ols = group_glm(effects, design, contrasts, model="ols")
    interior = mixed["tau2"] > 0.1
    assert interior.mean() > 0.95
    for name in contrasts:
        for stat in ("effect", "variance", "t", "z"):
            np.testing.assert_allclose(mixed[name][stat][interior], ols[name][stat][interior], rtol=1e-3, atol=1e-6)


def test_ols_equals_numpy_closed_form_with_missing_values():
    rng = np.random.default_rng(3)
    n = 12
    effects = rng.normal(1.0, 1.0, (n, 50))
    effects[0, :10] = np.nan  # a participant without a value in ten voxels
    covariate = rng.normal(size=n)
    design = np.column_stack([np.ones(n), covariate - covariate.mean()])
    result = group_glm(effects, design, {"mean": [1.0, 0.0], "cov": [0.0, 1.0]}, model="ols")
    for voxel in (0, 20):
        rows = np.isfinite(effects[:, voxel])
        x, y = design[rows], effects[rows, voxel]
        beta = np.linalg.lstsq(x, y, rcond=None)[0]
        dof = rows.sum() - 2
        sigma2 = ((y - x @ beta) ** 2).sum() / dof
        covariance = sigma2 * np.linalg.inv(x.T @ x)
        for name, index in (("mean", 0), ("cov", 1)):
            assert result[name]["effect"][voxel] == pytest.approx(beta[index], rel=1e-10)
            assert result[name]["variance"][voxel] == pytest.approx(covariance[index, index], rel=1e-10)
            t = beta[index] / np.sqrt(covariance[index, index])
            assert result[name]["p"][voxel] == pytest.approx(stats.t.sf(t, dof), rel=1e-8)
            assert result[name]["dof"][voxel] == dof
    one_sample = group_glm(effects, np.ones((n, 1)), {"mean": [1.0]}, model="ols")["mean"]
    reference = stats.ttest_1samp(effects[:, 10:], 0.0, axis=0, alternative="greater")
    np.testing.assert_allclose(one_sample["t"][10:], reference.statistic, rtol=1e-10)
    np.testing.assert_allclose(one_sample["p"][10:], reference.pvalue, rtol=1e-8)


def test_sessions_combine_effects_as_a_mean_and_variances_as_its_variance():
    """A participant's sessions: effects averaged, sampling variances combined as the variance of that mean."""
    from bids_encoder.workflows.group.maps import _combine

    effects = [np.array([1.0, 2.0, np.nan]), np.array([3.0, np.nan, np.nan])]
    variances = [np.array([0.5, 0.2, np.nan]), np.array([1.5, np.nan, np.nan])]
    np.testing.assert_allclose(_combine(effects, None), [2.0, 2.0, np.nan])
    np.testing.assert_allclose(_combine(variances, None, variance=True), [0.5, 0.2, np.nan])
