"""First-level inference (bids_encoder.inference): agreement with nilearn's FirstLevelModel on the same design,
exact AR(1) generalised least squares against a dense numpy closed form, contrast parsing, z/p conversions."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from bids_encoder.inference.contrasts import ContrastError, check_syntax, parse_expression, parse_f_expression
from bids_encoder.inference.glm import first_level, percent_signal_change
from bids_encoder.inference.statistics import f_to_z_p, t_to_z_p
from bids_encoder.inference.voxel_designs import LaggedRegressors

SHAPE = (8, 8, 4)  # 256 voxels


def _ar1_noise(rng, n_time, n_voxels, rho):
    noise = np.zeros((n_time, n_voxels))
    noise[0] = rng.normal(size=n_voxels) / np.sqrt(1 - rho**2)
    for t in range(1, n_time):
        noise[t] = rho * noise[t - 1] + rng.normal(size=n_voxels)
    return noise


@pytest.fixture(scope="module")
def simulated():
    """One run, 240 volumes, SPM-convolved events of 3 conditions, a cosine drift and two motion-like confounds;
    effects on half of the voxels, AR(1) noise with coefficients 0.1-0.5 across voxels."""
    from nilearn.glm.first_level import make_first_level_design_matrix

    rng = np.random.default_rng(11)
    n_time, tr = 240, 2.0
    frame_times = np.arange(n_time) * tr
    onsets = np.sort(rng.choice(np.arange(0, n_time * tr - 20, 6.0), 60, replace=False))
    events = pd.DataFrame({"onset": onsets, "duration": 2.0,
                           "trial_type": rng.choice(["faces", "houses", "scenes"], onsets.size)})
    confounds = pd.DataFrame(rng.normal(size=(n_time, 2)), columns=["trans_x", "rot_y"])
    design = make_first_level_design_matrix(frame_times, events, hrf_model="spm", drift_model="cosine",
                                            high_pass=0.01, add_regs=confounds)
    n_voxels = int(np.prod(SHAPE))
    betas = np.zeros((design.shape[1], n_voxels))
    betas[:3, : n_voxels // 2] = rng.uniform(1.0, 3.0, (3, n_voxels // 2))
    betas[list(design.columns).index("constant")] = 100.0
    rho = rng.uniform(0.1, 0.5, n_voxels)
    noise = np.hstack([_ar1_noise(rng, n_time, 1, r) for r in rho])
    data = design.to_numpy() @ betas + noise
    image = nib.Nifti1Image(data.T.reshape(*SHAPE, n_time).astype(np.float32), np.eye(4))
    return design, data.astype(np.float32), image


def _nilearn(design, image, noise_model):
    from nilearn.glm.first_level import FirstLevelModel

    mask = nib.Nifti1Image(np.ones(SHAPE, np.int8), np.eye(4))
    model = FirstLevelModel(t_r=2.0, noise_model=noise_model, signal_scaling=False, mask_img=mask,
                            minimize_memory=False)
    return model.fit(image, design_matrices=design), mask


def _ours(design, data, noise_model):
    columns = list(design.columns)
    t = {"faces": np.eye(len(columns))[0], "facesVsHouses": np.eye(len(columns))[0] - np.eye(len(columns))[1]}
    f = {"effectsOfInterest": np.eye(len(columns))[:3]}
    return first_level(data, design.to_numpy(), np.ones(len(design)), t, f, noise_model=noise_model), t, f


def _theirs(model, mask, vector, stat_type="t"):
    from nilearn.maskers import NiftiMasker

    masker = NiftiMasker(mask).fit()
    maps = model.compute_contrast(vector, stat_type=stat_type, output_type="all")
    return {key: np.ravel(masker.transform(image)) for key, image in maps.items()}


def test_ols_equals_nilearn(simulated):
    """noise_model='ols', same design matrix: effect, variance, t and z to 1e-4 relative, p alike; F too."""
    design, data, image = simulated
    model, mask = _nilearn(design, image, "ols")
    ours, t, f = _ours(design, data, "ols")
    assert ours.df == len(design) - design.shape[1]
    for name, vector in t.items():
        theirs = _theirs(model, mask, vector)
        mine = ours.contrasts[name]
        for stat, key in (("effect", "effect_size"), ("variance", "effect_variance"), ("t", "stat"),
                          ("z", "z_score")):
            np.testing.assert_allclose(mine[stat], theirs[key], rtol=1e-4, atol=1e-6 * np.abs(theirs[key]).max())
        np.testing.assert_allclose(mine["p"], theirs["p_value"], rtol=1e-3, atol=1e-9)
    theirs = _theirs(model, mask, f["effectsOfInterest"], "F")
    mine = ours.contrasts["effectsOfInterest"]
    np.testing.assert_allclose(mine["F"], theirs["stat"], rtol=1e-4)
    np.testing.assert_allclose(mine["z"], theirs["z_score"], rtol=1e-4, atol=1e-4)
    half = data.shape[1] // 2
    assert (mine["z"][:half] > 2).mean() > 0.7  # the effects are found (the null half: see the AR(1) test)


def test_ar1_close_to_nilearn(simulated):
    """noise_model='ar1': nilearn bins the AR coefficients to 0.01 (truncating) and leaves the first volume
    unscaled, we whiten each voxel exactly (Prais-Winsten): z maps correlate >= 0.999 and the 99th percentile of
    |dz| is <= 0.05; effects within 5 % of their SD."""
    design, data, image = simulated
    model, mask = _nilearn(design, image, "ar1")
    ours, t, f = _ours(design, data, "ar1")
    assert 0.1 < np.median(ours.rho) < 0.4  # OLS-residual estimates, biased low like nilearn's
    for name, vector in t.items():
        theirs = _theirs(model, mask, vector)
        mine = ours.contrasts[name]
        assert np.corrcoef(mine["z"], theirs["z_score"])[0, 1] >= 0.999
        assert np.percentile(np.abs(mine["z"] - theirs["z_score"]), 99) <= 0.05
        assert np.percentile(np.abs(mine["effect"] - theirs["effect_size"]) / np.sqrt(theirs["effect_variance"]),
                             99) <= 0.05
    theirs = _theirs(model, mask, f["effectsOfInterest"], "F")
    mine = ours.contrasts["effectsOfInterest"]
    half = data.shape[1] // 2  # without effects: OLS is anticonservative under autocorrelated noise, AR(1) is not
    ols = first_level(data, design.to_numpy(), np.ones(len(design)), {}, f, noise_model="ols")
    # (both: F's z > 2 should be 2.3 %; the AR(1) estimate from OLS residuals is biased low, as nilearn's)
    assert (ols.contrasts["effectsOfInterest"]["z"][half:] > 2).mean() > 2 * (mine["z"][half:] > 2).mean()
    assert np.corrcoef(mine["z"], theirs["z_score"])[0, 1] >= 0.999
    assert np.percentile(np.abs(mine["z"] - theirs["z_score"]), 99) <= 0.05


def _dense_gls(design, y, runs, rho):
    """Prais-Winsten GLS in float64 with the run coefficients ``rho`` (in the order of the sorted run labels)."""
    whitening = np.zeros((len(y), len(y)))
    for i, run in enumerate(np.unique(runs)):
        rows = np.where(runs == run)[0]
        whitening[rows[0], rows[0]] = np.sqrt(1 - rho[i] ** 2)
        for t, s in zip(rows[1:], rows[:-1], strict=True):
            whitening[t, t], whitening[t, s] = 1.0, -rho[i]
    x, target = whitening @ design, whitening @ y
    beta = np.linalg.lstsq(x, target, rcond=None)[0]
    residual = target - x @ beta
    return beta, np.linalg.pinv(x.T @ x), residual @ residual


def test_ar1_two_runs_censored_equals_dense_gls():
    """Two runs, per-run AR coefficients, censored volumes (spike columns): each voxel's effect and variance equal
    a dense Prais-Winsten GLS in numpy with the same coefficients, which equal the lag-one autocorrelation of the
    OLS residuals within each run; per-voxel designs give the shared-design results."""
    rng = np.random.default_rng(5)
    n_time, n_voxels = 160, 40
    runs = np.repeat([1, 2], 80)
    censored = np.zeros(n_time, bool)
    censored[[7, 80, 121]] = True
    regressors = rng.normal(size=(n_time, 2))
    design = np.hstack([regressors, (runs == 1)[:, None], (runs == 2)[:, None],
                        np.eye(n_time)[:, censored]]).astype(float)
    data = (regressors @ rng.normal(size=(2, n_voxels)) + 50
            + np.vstack([_ar1_noise(rng, 80, n_voxels, 0.6), _ar1_noise(rng, 80, n_voxels, 0.2)]))
    data[censored] += 30.0  # outliers: censored, they must not matter
    t = {"a": np.r_[1.0, -0.5, np.zeros(design.shape[1] - 2)]}
    f = {"both": np.eye(design.shape[1])[:2]}
    shared = first_level(data.astype(np.float32), design, runs, t, f, noise_model="ar1", censored=censored)
    assert shared.df == n_time - design.shape[1]
    for voxel in range(0, n_voxels, 7):
        ols = data[:, voxel] - design @ np.linalg.lstsq(design, data[:, voxel], rcond=None)[0]
        for i, run in enumerate((1, 2)):
            e = ols[runs == run]
            assert shared.rho[i, voxel] == pytest.approx((e[1:] * e[:-1]).sum() / (e**2).sum(), abs=1e-5)
        beta, inverse, ssr = _dense_gls(design, data[:, voxel], runs, shared.rho[:, voxel])
        sigma2 = ssr / shared.df
        c = t["a"]
        assert shared.contrasts["a"]["effect"][voxel] == pytest.approx(c @ beta, rel=1e-5)
        assert shared.contrasts["a"]["variance"][voxel] == pytest.approx(c @ inverse @ c * sigma2, rel=1e-5)
        k = f["both"]
        estimate = k @ beta
        expected_f = estimate @ np.linalg.inv(k @ inverse @ k.T) @ estimate / (2 * sigma2)
        assert shared.contrasts["both"]["F"][voxel] == pytest.approx(expected_f, rel=1e-5)
    assert 0.4 < np.median(shared.rho[0]) < 0.7 and 0.0 < np.median(shared.rho[1]) < 0.35
    for noise_model in ("ar1", "ols"):
        reference = shared if noise_model == "ar1" else first_level(data.astype(np.float32), design, runs, t, f,
                                                                    noise_model="ols", censored=censored)
        per_voxel = first_level(data.astype(np.float32), design, runs, t, f, noise_model=noise_model,
                                censored=censored, memory_limit=200_000,
                                voxel_regressors=LaggedRegressors(regressors.T[:, :, None], np.ones((n_voxels, 1))))
        for name, maps in reference.contrasts.items():
            for stat, values in maps.items():
                np.testing.assert_allclose(per_voxel.contrasts[name][stat], values, rtol=2e-5, atol=1e-9,
                                           err_msg=stat)


def test_per_voxel_hrfs_equal_dense_gls_loop():
    """Different HRF kernels per voxel, two runs with their own AR(1) coefficients, a censored volume: effects,
    variances, t, F, sigma² and the coefficients equal a dense per-voxel numpy loop (OLS, lag-one autocorrelation
    of its residuals per run, Prais-Winsten GLS); OLS equals the dense least squares."""
    from bids_encoder.hrf import lagged

    rng = np.random.default_rng(11)
    n_time, n_voxels, n_taps = 120, 30, 6
    runs = np.repeat([1, 2], 60)
    censored = np.zeros(n_time, bool)
    censored[70] = True
    events = (rng.random((n_time, 3)) < 0.2).astype(np.float32)
    shifted = lagged(events, n_taps, [60, 60]).numpy().astype(float)  # (3, T, K)
    kernels = rng.gamma(2.0, 1.0, size=(n_voxels, n_taps)) * np.linspace(1.5, 0.2, n_taps)
    kernels /= kernels.sum(axis=1, keepdims=True)
    confounds = rng.normal(size=(n_time, 3))
    nuisance = np.hstack([confounds, np.eye(n_time)[:, censored], (runs == 1)[:, None], (runs == 2)[:, None]])
    design = np.hstack([np.zeros((n_time, 3)), nuisance])
    signal = np.einsum("rtk,vk,rv->tv", shifted, kernels, rng.normal(2.0, 1.0, size=(3, n_voxels)))
    data = (signal + confounds @ rng.normal(size=(3, n_voxels)) + 50
            + np.vstack([_ar1_noise(rng, 60, n_voxels, 0.5), _ar1_noise(rng, 60, n_voxels, 0.15)]))
    data[censored] += 20.0
    data = data.astype(np.float32)
    weights = np.zeros(design.shape[1])
    weights[:3] = [1.0, -0.5, 0.25]
    t, f = {"a": weights}, {"two": np.eye(design.shape[1])[:2]}
    regressors = LaggedRegressors(shifted, kernels)
    results = {model: first_level(data, design, runs, t, f, noise_model=model, censored=censored,
                                  voxel_regressors=regressors, memory_limit=3_000_000) for model in ("ar1", "ols")}
    gls = results["ar1"]
    assert gls.df == n_time - design.shape[1]
    for voxel in range(0, n_voxels, 4):
        x = np.hstack([np.einsum("rtk,k->tr", shifted, kernels[voxel]), nuisance])
        y = data[:, voxel].astype(float)
        ols = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
        ols[censored] = 0.0
        rho = [(e[1:] * e[:-1]).sum() / (e**2).sum() for e in (ols[runs == 1], ols[runs == 2])]
        np.testing.assert_allclose(gls.rho[:, voxel], rho, rtol=1e-5, atol=1e-7)
        for model, result in results.items():
            beta, inverse, ssr = _dense_gls(x, y, runs, rho if model == "ar1" else [0.0, 0.0])
            sigma2 = ssr / result.df
            effect, variance = weights @ beta, weights @ inverse @ weights * sigma2
            estimate = f["two"] @ beta
            expected_f = estimate @ np.linalg.inv(f["two"] @ inverse @ f["two"].T) @ estimate / (2 * sigma2)
            maps = result.contrasts["a"]
            for stat, expected in (("effect", effect), ("variance", variance), ("t", effect / np.sqrt(variance))):
                assert maps[stat][voxel] == pytest.approx(expected, rel=1e-5), (model, stat)
            assert result.contrasts["two"]["F"][voxel] == pytest.approx(expected_f, rel=1e-5), model
            assert result.sigma2[voxel] == pytest.approx(sigma2, rel=1e-5), model


def test_ols_closed_form_and_calibration():
    """OLS under the null: t equals the numpy closed form; the fraction of p < 0.05 is 0.05 within 3 binomial SDs."""
    rng = np.random.default_rng(2)
    n_time, n_voxels = 100, 4000
    design = np.column_stack([rng.normal(size=n_time), np.ones(n_time)])
    data = rng.normal(size=(n_time, n_voxels)).astype(np.float32)
    result = first_level(data, design, np.ones(n_time), {"x": np.r_[1.0, 0.0]}, noise_model="ols")
    beta = np.linalg.lstsq(design, data.astype(float), rcond=None)[0]
    sigma2 = ((data - design @ beta) ** 2).sum(0) / (n_time - 2)
    t = beta[0] / np.sqrt(sigma2 * np.linalg.inv(design.T @ design)[0, 0])
    np.testing.assert_allclose(result.contrasts["x"]["t"], t, rtol=1e-5, atol=1e-5)  # float32 data
    fraction = (result.contrasts["x"]["p"] < 0.05).mean()
    assert abs(fraction - 0.05) < 3 * np.sqrt(0.05 * 0.95 / n_voxels)


def test_z_and_p_conversions():
    """t and F to z and p against scipy where scipy is exact, and finite for extreme statistics."""
    t = np.array([-40.0, -3.0, -0.5, 0.0, 0.5, 3.0, 40.0, np.nan])
    z, p = t_to_z_p(t, 50)
    np.testing.assert_allclose(p[:7], stats.t.sf(t[:7], 50), rtol=1e-10)
    np.testing.assert_allclose(z[1:6], stats.norm.isf(stats.t.sf(t[1:6], 50)), rtol=1e-8, atol=1e-12)
    assert np.isfinite(z[:7]).all() and z[6] > 10 and z[0] < -10 and np.isnan(z[7]) and np.isnan(p[7])
    f = np.array([0.01, 1.0, 5.0, 1e4])
    z, p = f_to_z_p(f, 3, 100)
    np.testing.assert_allclose(p, stats.f.sf(f, 3, 100), rtol=1e-10)
    np.testing.assert_allclose(z[:3], stats.norm.isf(p[:3]), rtol=1e-8)
    assert np.isfinite(z[3]) and z[3] > 20 and z[0] < 0
    f = np.array([1e-6, 0.3, 2.0, 1e6])  # the lower tail far from 0, the upper tail underflowing
    z, p = f_to_z_p(f, 20, 579)
    exact = -special.ndtri_exp(stats.f.logsf(f, 20, 579))
    np.testing.assert_allclose(z[1:3], exact[1:3], rtol=1e-8)
    np.testing.assert_allclose(z[0], special.ndtri_exp(stats.f.logcdf(f[0], 20, 579)), rtol=1e-8)
    assert p[3] < 1e-300 and np.isfinite(z[3]) and z[3] > 50
    # beyond scipy's range (its log tail is -inf there), from the series of the incomplete beta function
    z, _ = f_to_z_p(np.array([1e5, 1e6]), 20, 579)
    assert 40 < z[0] < z[1] < 200
    z, p = t_to_z_p(np.array([-1e3, 200.0, 1e3]), 579)
    assert np.isfinite(z).all() and z[0] == pytest.approx(-z[2]) and 30 < z[1] < z[2] < 200 and p[0] == 1.0
    # the series equals scipy where both are finite
    from bids_encoder.inference.statistics import _log_beta_tail

    np.testing.assert_allclose(_log_beta_tail(289.5, 10.0, 0.3), np.log(special.betainc(289.5, 10.0, 0.3)),
                               rtol=1e-12)


def test_percent_signal_change():
    data = np.array([[100.0, 0.0], [110.0, 0.0], [200.0, 5.0], [220.0, 5.0]], np.float32)
    scaled, means = percent_signal_change(data, np.array([1, 1, 2, 2]))
    np.testing.assert_allclose(means, [[105.0, 1.0], [210.0, 5.0]])
    np.testing.assert_allclose(scaled[:, 0], [100 * (100 / 105 - 1), 100 * (110 / 105 - 1), 100 * (200 / 210 - 1),
                                              100 * (220 / 210 - 1)], rtol=1e-6)
    assert np.all(scaled[:2, 1] == -100.0) and np.all(scaled[2:, 1] == 0.0)  # zero mean → divided by 1


@pytest.mark.parametrize("order", ["C", "F"])
def test_percent_signal_change_in_blocks(order):
    """Blocks of voxels in threads, runs in an interleaved order, censored volumes: equal to the per-run formula in
    float64 to float32 rounding."""
    rng = np.random.default_rng(0)
    n_voxels = 2 * 4096 + 123  # several blocks and a partial one
    runs = np.r_[np.full(30, 2), np.full(25, 1), np.full(20, 2)]
    keep = rng.random(runs.size) > 0.1
    data = np.asarray(rng.normal(100.0, 5.0, (runs.size, n_voxels)).astype(np.float32), order=order)
    scaled, means = percent_signal_change(data, runs, keep=keep)
    for i, run in enumerate((1, 2)):
        mean = data[(runs == run) & keep].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(means[i], mean, rtol=1e-12)
        expected = (100.0 * (data[runs == run] / mean - 1.0)).astype(np.float32)
        np.testing.assert_allclose(scaled[runs == run], expected, rtol=0, atol=2e-6)


CONDITIONS = {"faces": "faces", "houses": "houses", "scenesOutdoor": "scenes_outdoor", "2back": "2-back"}


@pytest.mark.parametrize(("expression", "expected"), [
    ("faces - houses", [1, -1, 0, 0]),
    ("(faces + houses + scenesOutdoor) / 3", [1 / 3, 1 / 3, 1 / 3, 0]),
    ("2*faces - 'scenes_outdoor' - \"2-back\"", [2, 0, -1, -1]),
    ("-(faces - 0.5 * houses) * 2", [-2, 1, 0, 0]),
    ("2back - faces", [-1, 0, 0, 1]),
])
def test_contrast_expressions(expression, expected):
    np.testing.assert_allclose(parse_expression(expression, CONDITIONS), expected)
    check_syntax(expression)


@pytest.mark.parametrize(("expression", "message"), [
    ("faces - cars", "names 'cars', which is no condition"),
    ("faces * houses", "not linear"),
    ("faces / houses", "cannot divide"),
    ("faces - 1", "constant term"),
    ("faces - faces", "all weights are zero"),
    ("(faces - houses", r"missing '\)'"),
    ("faces -", "unexpected end"),
    ("faces; import os", "Cannot read"),
    ("'scenes outdoor'", "which is no condition"),
])
def test_bad_contrast_expressions(expression, message):
    with pytest.raises(ContrastError, match=message):
        parse_expression(expression, CONDITIONS)


def test_f_contrast_rows():
    np.testing.assert_allclose(parse_f_expression("faces, houses - faces", CONDITIONS), [[1, 0, 0, 0], [-1, 1, 0, 0]])
    np.testing.assert_allclose(parse_f_expression("(faces + houses) / 2, scenesOutdoor", CONDITIONS),
                               [[0.5, 0.5, 0, 0], [0, 0, 1, 0]])
    with pytest.raises(ContrastError, match="linearly dependent"):
        parse_f_expression("faces, 2 * faces", CONDITIONS)
    with pytest.raises(ContrastError, match="empty row"):
        parse_f_expression("faces, ", CONDITIONS)


def test_contrast_of_a_condition_without_events_is_nan(caplog):
    """A regressor that is zero everywhere (a condition absent from the runs fitted) makes its contrasts NaN with a
    warning; the other contrasts are unaffected, and F contrasts leave its row out."""
    rng = np.random.default_rng(4)
    design = np.column_stack([rng.normal(size=60), np.zeros(60), np.ones(60)])
    data = rng.normal(size=(60, 20)).astype(np.float32)
    t = {"a": np.r_[1.0, 0, 0], "b": np.r_[0, 1.0, 0]}
    f = {"both": np.eye(3)[:2], "onlyB": np.eye(3)[1:2]}
    for noise_model in ("ar1", "ols"):
        result = first_level(data, design, np.ones(60), t, f, noise_model=noise_model)
        assert np.isnan(result.contrasts["b"]["t"]).all() and np.isnan(result.contrasts["onlyB"]["F"]).all()
        assert np.isfinite(result.contrasts["a"]["t"]).all()
        # an F with a row that is not estimable tests the others: here F = t² of 'a'
        np.testing.assert_allclose(result.contrasts["both"]["F"], result.contrasts["a"]["t"] ** 2, rtol=1e-6)
        assert result.f_rows == {"both": 1, "onlyB": 0}
    assert "Contrast b is not estimable" in caplog.text


def test_ar1_one_run_equals_dense_gls():
    """One run (the eigenbasis and Woodbury solver of inference.one_run): censored volumes at both ends and
    inside, confounds, uncentred data; effects, variances, sigma², t contrasts and F contrasts of every size (one
    and two rows, all but one or two columns, every column) equal a dense Prais-Winsten GLS in numpy with the same
    coefficients, which equal the lag-one autocorrelation of the OLS residuals."""
    rng = np.random.default_rng(3)
    n_time, n_voxels = 150, 30
    censored = np.zeros(n_time, bool)
    censored[[0, 40, 149]] = True
    regressors = rng.normal(size=(n_time, 4))
    design = np.hstack([regressors, rng.normal(size=(n_time, 2)), np.ones((n_time, 1)), np.eye(n_time)[:, censored]])
    rho = rng.uniform(-0.3, 0.8, n_voxels)
    data = (regressors @ rng.normal(size=(4, n_voxels)) + 100
            + np.hstack([_ar1_noise(rng, n_time, 1, r) for r in rho])).astype(np.float32)
    data[censored] += 25.0
    columns = design.shape[1]
    t = {"a": np.r_[1.0, -1.0, 0.0, 0.5, np.zeros(columns - 4)], "intercept": np.eye(columns)[6]}
    f = {"one": np.eye(columns)[:1], "two": np.eye(columns)[:2] + np.eye(columns)[2:4], "most": np.eye(columns)[:-1],
         "allButTwo": np.eye(columns)[:-2], "every": np.eye(columns)}
    result = first_level(data, design, np.ones(n_time), t, f, censored=censored)
    assert result.df == n_time - columns
    y64 = data.astype(np.float64)
    for voxel in range(n_voxels):
        ols = y64[:, voxel] - design @ np.linalg.lstsq(design, y64[:, voxel], rcond=None)[0]
        assert result.rho[0, voxel] == pytest.approx((ols[1:] * ols[:-1]).sum() / (ols**2).sum(), abs=1e-5)
        beta, inverse, ssr = _dense_gls(design, y64[:, voxel], np.ones(n_time), result.rho[:, voxel])
        sigma2 = ssr / result.df
        assert result.sigma2[voxel] == pytest.approx(sigma2, rel=1e-5)
        for name, c in t.items():
            assert result.contrasts[name]["effect"][voxel] == pytest.approx(c @ beta, rel=1e-5)
            assert result.contrasts[name]["variance"][voxel] == pytest.approx(c @ inverse @ c * sigma2, rel=1e-5)
        for name, k in f.items():
            estimate = k @ beta
            expected = estimate @ np.linalg.solve(k @ inverse @ k.T, estimate) / (k.shape[0] * sigma2)
            assert result.contrasts[name]["F"][voxel] == pytest.approx(expected, rel=2e-5), name


@pytest.mark.parametrize("noise_model", ["ar1", "ols"])
@pytest.mark.parametrize("n_runs", [1, 2])
def test_contrast_of_the_intercepts(noise_model, n_runs):
    """A contrast that weighs the run intercepts gives the run means (the data are centred for float32 accuracy;
    the means' coefficients are put back): regression test, it was about 0 instead of 100."""
    rng = np.random.default_rng(3)
    n_time = 100
    runs = np.repeat(np.arange(1, n_runs + 1), n_time // n_runs)
    x = rng.normal(size=n_time)
    design = np.column_stack([x] + [(runs == r).astype(float) for r in np.unique(runs)])
    data = (x[:, None] + 100.0 + rng.normal(size=(n_time, 5))).astype(np.float32)
    weights = np.r_[0.0, np.ones(n_runs) / n_runs]
    result = first_level(data, design, runs, {"mean": weights}, noise_model=noise_model)
    expected = weights @ np.linalg.lstsq(design, data.astype(float), rcond=None)[0]
    np.testing.assert_allclose(result.contrasts["mean"]["effect"], expected, rtol=0.002)  # GLS against OLS


def test_t_to_z_hill_region():
    """With >= 100 degrees of freedom and |t| <= 8, z comes from Hill's expansion: equal to scipy's exact
    conversion to 5e-11 (z) and 5e-10 (relative p); just outside it, exact."""
    t = np.r_[np.linspace(-8.0, 8.0, 20001), -8.5, 8.5, -30.0, 30.0]
    for df in (100, 150, 579, 10_000):
        exact = np.where(t >= 0, -special.ndtri_exp(stats.t.logsf(t, df)), special.ndtri_exp(stats.t.logcdf(t, df)))
        z, p = t_to_z_p(t, df)
        assert np.abs(z - exact).max() <= 5e-11, df
        np.testing.assert_allclose(p, stats.t.sf(t, df), rtol=5e-10)
    z, p = t_to_z_p(t, np.full(t.shape, 150.0))  # degrees of freedom per value
    np.testing.assert_allclose(z, t_to_z_p(t, 150)[0], rtol=0, atol=1e-15)
    z, p = t_to_z_p(t, np.inf)  # the normal distribution
    np.testing.assert_allclose(z, t)
    np.testing.assert_allclose(p, stats.norm.sf(t))


def test_ar1_two_runs_large_f_contrasts_equal_dense_gls():
    """Several runs (per-voxel Cholesky): F contrasts with a small null space (all columns but one or two, every
    column: the restricted-fit form) and a t contrast repeated as an F row (one triangular solve for both) equal
    the dense Prais-Winsten GLS."""
    rng = np.random.default_rng(8)
    n_time, n_voxels = 120, 20
    runs = np.repeat([1, 2, 3], 40)
    regressors = rng.normal(size=(n_time, 3))
    design = np.hstack([regressors, rng.normal(size=(n_time, 1))] + [(runs == r)[:, None] for r in (1, 2, 3)])
    data = (regressors @ rng.normal(size=(3, n_voxels)) + 10
            + np.vstack([_ar1_noise(rng, 40, n_voxels, r) for r in (0.5, 0.1, 0.3)])).astype(np.float32)
    columns = design.shape[1]
    t = {"first": np.eye(columns)[0], "second": np.eye(columns)[1]}
    f = {"firstTwo": np.eye(columns)[:2], "most": np.eye(columns)[:-1], "allButTwo": np.eye(columns)[:-2],
         "every": np.eye(columns)}
    result = first_level(data, design, runs, t, f)
    for voxel in range(n_voxels):
        beta, inverse, ssr = _dense_gls(design, data[:, voxel].astype(float), runs, result.rho[:, voxel])
        sigma2 = ssr / result.df
        for name, c in t.items():
            assert result.contrasts[name]["variance"][voxel] == pytest.approx(c @ inverse @ c * sigma2, rel=1e-5)
        for name, k in f.items():
            estimate = k @ beta
            expected = estimate @ np.linalg.solve(k @ inverse @ k.T, estimate) / (k.shape[0] * sigma2)
            assert result.contrasts[name]["F"][voxel] == pytest.approx(expected, rel=1e-5), name


@pytest.mark.parametrize("n_runs", [1, 2])
def test_f_contrast_with_dependent_rows(n_runs, caplog):
    """F rows that are linearly dependent (a row the sum of two others, a row repeated) are tested over their span
    with its rank as numerator degrees of freedom, with a warning: regression test (F was NaN or off by rank/q)."""
    rng = np.random.default_rng(2)
    n_time = 80
    runs = np.repeat(np.arange(1, n_runs + 1), n_time // n_runs)
    regressors = rng.normal(size=(n_time, 6))
    design = np.column_stack([regressors] + [(runs == r).astype(float) for r in np.unique(runs)])
    data = (regressors @ rng.normal(size=(6, 8)) + 100
            + np.vstack([_ar1_noise(rng, n_time // n_runs, 8, 0.4) for _ in range(n_runs)])).astype(np.float32)
    eye = np.eye(design.shape[1])
    f = {"dep": np.vstack([eye[0], eye[1], eye[0] + eye[1]]), "dup": np.vstack([eye[0], eye[0]]),
         "firstTwo": eye[:2], "first": eye[:1]}
    for noise_model in ("ar1", "ols"):
        result = first_level(data, design, runs, {}, f, noise_model=noise_model)
        np.testing.assert_allclose(result.contrasts["dep"]["F"], result.contrasts["firstTwo"]["F"], rtol=1e-6)
        np.testing.assert_allclose(result.contrasts["dep"]["z"], result.contrasts["firstTwo"]["z"], rtol=1e-6)
        np.testing.assert_allclose(result.contrasts["dup"]["F"], result.contrasts["first"]["F"], rtol=1e-6)
        assert result.f_rows == {"dep": 2, "dup": 1, "firstTwo": 2, "first": 1}
    assert "its 3 rows span 2 dimensions" in caplog.text


def test_ar1_precision_with_strong_autocorrelation():
    """A large unmodelled drift (residual AR coefficient 0.98): sigma² and an F over every column within 1e-4 of a
    dense float64 GLS of the same float32 data: regression test (the moments of e cancelled, F was off by 4e-3)."""
    rng = np.random.default_rng(4)
    n_time = 200
    x = np.convolve(rng.normal(size=n_time), np.exp(-np.arange(20) / 4), "same")
    design = np.column_stack([x, np.ones(n_time)])
    data = (2 * x[:, None] + 100 + 1000 * np.sin(2 * np.pi * np.arange(n_time) / n_time)[:, None]
            + rng.normal(size=(n_time, 4))).astype(np.float32)
    result = first_level(data, design, np.ones(n_time), {"x": np.r_[1.0, 0.0]}, {"all": np.eye(2)})
    assert (result.rho > 0.95).all()
    for voxel in range(4):
        beta, inverse, ssr = _dense_gls(design, data[:, voxel].astype(float), np.ones(n_time), result.rho[:, voxel])
        sigma2 = ssr / result.df
        assert result.sigma2[voxel] == pytest.approx(sigma2, rel=1e-4)
        assert result.contrasts["all"]["F"][voxel] == pytest.approx(
            beta @ np.linalg.solve(inverse, beta) / (2 * sigma2), rel=1e-4)


def test_constant_voxel_has_no_statistics():
    """A voxel fitted exactly (constant data) has NaN t and F (σ² = 0), and leaves the other voxels alone."""
    rng = np.random.default_rng(1)
    design = np.column_stack([rng.normal(size=60), np.ones(60)])
    data = rng.normal(size=(60, 3)).astype(np.float32)
    data[:, 1] = 1e4
    for runs in (np.ones(60), np.repeat([1, 2], 30)):
        x = design if runs.max() == 1 else np.column_stack([design[:, 0], runs == 1, runs == 2])
        result = first_level(data, x, runs, {"x": np.eye(x.shape[1])[0]}, {"all": np.eye(x.shape[1])})
        assert np.isnan(result.contrasts["all"]["F"][1]) and np.isnan(result.contrasts["x"]["t"][1])
        assert np.isfinite(result.contrasts["all"]["F"][[0, 2]]).all()


def test_statistics_without_tensorflow():
    """The contrast parser and the z/p conversions import and run without loading TensorFlow (the command line uses
    them before TensorFlow starts quietly): regression test, Hill's expansion had imported it; numpy's expansion
    equals scipy's exact z."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; from scipy import special, stats; "
            "from bids_encoder.inference import check_syntax, t_to_z_p; "
            "t = np.linspace(-8, 8, 2001); z, p = t_to_z_p(t, 300.0); "
            "exact = np.where(t >= 0, -special.ndtri_exp(stats.t.logsf(t, 300.0)), "
            "special.ndtri_exp(stats.t.logcdf(t, 300.0))); "
            "print('tensorflow' in sys.modules, float(np.abs(z - exact).max()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    loaded, error = done.stdout.split()
    assert loaded == "False" and float(error) < 1e-12
