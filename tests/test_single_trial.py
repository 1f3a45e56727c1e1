"""Single-trial betas by GLMsingle's method (bids_encoder.decoding.single_trial): equivalence with least squares
and with a closed-form fractional ridge (numpy), chunking, and, on simulations with known single-trial responses,
what every stage gains where it should and costs where it should not."""

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from bids_encoder.datasets.single_trial_sim import simulate_single_trials
from bids_encoder.decoding import lss_betas, trial_regressors  # noqa: F401  (the package keeps these names)
from bids_encoder.decoding.single_trial.estimator import fit_single_trials
from bids_encoder.decoding.single_trial.hrf_library import HRFLibrary


def _small(seed=3, n_voxels=24):
    """3 runs × 110 volumes (TR 2 s), 14 trials per run at a 5–8 s spacing, 3 confounds; raw BOLD around 1000."""
    rng = np.random.default_rng(seed)
    frame_times = [np.arange(110) * 2.0 + 0.5 * r for r in range(3)]  # different slice-timing offsets
    rows = []
    for run in range(3):
        onsets = 6.0 + np.cumsum(rng.uniform(5.0, 8.0, 14))
        rows.append(pd.DataFrame({"run": run, "onset": onsets, "duration": rng.choice([1.0, 2.0], 14),
                                  "condition": rng.choice(list("abcdefg"), 14)}))
    trials = pd.concat(rows, ignore_index=True)
    data = (1000.0 + rng.normal(0, 5.0, (330, n_voxels))).astype(np.float32)
    confounds = rng.normal(size=(330, 3))
    for run in range(3):  # each run's confounds are its own columns (zero elsewhere), as the app builds them
        confounds[run * 110:(run + 1) * 110, run] *= 3.0
    return data, frame_times, trials, confounds


def _reference_design(frame_times, trials, confounds, data):
    """Per run: PSC data and the full design [trial regressors (SPM, peak of a median-duration trial = 1),
    Legendre drifts of degree round(minutes / 2), the run's confounds]; independent of the package's design code."""
    fine = trial_regressors([0.0], np.median(trials["duration"]), np.arange(0, 40, 0.002)).to_numpy()
    peak = fine.max()
    blocks, start = [], 0
    for run, times in enumerate(frame_times):
        n = len(times)
        rows = trials["run"].to_numpy() == run
        x = trial_regressors(trials["onset"][rows], trials["duration"][rows], times).to_numpy() / peak
        degree = int(round(n * 2.0 / 120))
        drifts = np.polynomial.legendre.legvander(np.linspace(-1, 1, n), degree)
        y = data[start:start + n].astype(np.float64)
        psc = 100 * (y / y.mean(axis=0) - 1)
        blocks.append((x, np.hstack([drifts, confounds[start:start + n]]), psc))
        start += n
    return blocks


def _residualised(blocks):
    """Trial regressors and data of every run with its nuisance projected out (FWL), as one block design."""
    xs, ys = [], []
    for x, nuisance, y in blocks:
        q, _ = np.linalg.qr(nuisance)
        xs.append(x - q @ (q.T @ x))
        ys.append(y - q @ (q.T @ y))
    n_trials = sum(x.shape[1] for x in xs)
    design = np.zeros((sum(len(x) for x in xs), n_trials))
    r = c = 0
    for x in xs:
        design[r:r + len(x), c:c + x.shape[1]] = x
        r, c = r + len(x), c + x.shape[1]
    return design, np.vstack(ys)


def test_stages_off_equal_least_squares_per_trial():
    """Canonical HRF, no noise components, no ridge: the betas equal numpy's least squares of one GLM over all
    runs (every trial its regressor, per run an intercept, drifts and its confounds; data in percent signal change)
    to 1e-4; the sidecar-facing choices say so."""
    data, frame_times, trials, confounds = _small()
    result = fit_single_trials(data, frame_times, trials, confounds, hrf="canonical", denoise=False, ridge=False)
    blocks = _reference_design(frame_times, trials, confounds, data)
    reference = []
    for x, nuisance, y in blocks:
        reference.append(np.linalg.lstsq(np.hstack([x, nuisance]), y, rcond=None)[0][:x.shape[1]])
    reference = np.vstack(reference)
    assert result.betas.shape == (len(trials), data.shape[1]) and result.trials["estimated"].all()
    np.testing.assert_allclose(result.betas, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    assert result.stages == ["canonical"] and result.n_components == 0 and np.all(np.isnan(result.fraction))
    assert np.all(result.hrf_index == result.library.canonical_index)
    assert result.choices["HRF"]["Stage"] == "off" and result.choices["Ridge"] is None


@pytest.mark.parametrize("fraction", [0.3, 0.8])
def test_ridge_equals_closed_form_fractional_ridge(fraction):
    """One fraction for every voxel, no rescaling: the betas equal ridge regression with the λ at which the norm
    is that fraction of the least-squares norm (numpy SVD of the residualised block design, λ by brentq) to 1e-4;
    with rescaling they are the least-squares affine map of those onto the least-squares betas."""
    data, frame_times, trials, confounds = _small(seed=5, n_voxels=12)
    kwargs = dict(hrf="canonical", denoise=False, fractions=[fraction])
    result = fit_single_trials(data, frame_times, trials, confounds, rescale=False, **kwargs)
    design, y = _residualised(_reference_design(frame_times, trials, confounds, data))
    u, s, vt = np.linalg.svd(design, full_matrices=False)
    z = u.T @ y
    ols = vt.T @ (z / s[:, None])
    reference = np.empty_like(ols)
    for v in range(y.shape[1]):
        def excess(lam, v=v):
            return np.linalg.norm(s * z[:, v] / (s**2 + lam)) - fraction * np.linalg.norm(ols[:, v])
        lam = optimize.brentq(excess, 0.0, 1e6 * s.max() ** 2, xtol=1e-14, rtol=1e-14)
        reference[:, v] = vt.T @ (s * z[:, v] / (s**2 + lam))
    np.testing.assert_allclose(result.betas, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    np.testing.assert_allclose(result.fraction, fraction)
    own = fit_single_trials(data, frame_times, trials, confounds, hrf="canonical", denoise=False, ridge=False)
    ratio = np.linalg.norm(result.betas, axis=0) / np.linalg.norm(own.betas, axis=0)
    np.testing.assert_allclose(ratio, fraction, rtol=1e-5)
    scaled = fit_single_trials(data, frame_times, trials, confounds, rescale=True, **kwargs)
    for v in range(y.shape[1]):
        slope, intercept = np.polyfit(reference[:, v], ols[:, v], 1)
        np.testing.assert_allclose(scaled.betas[:, v], slope * reference[:, v] + intercept, rtol=1e-3,
                                   atol=1e-4 * np.abs(ols[:, v]).max())
        assert scaled.scale[v] == pytest.approx(slope, rel=1e-3)


def test_chunks_do_not_change_the_result():
    """Every stage on, voxels in chunks of a few (a tiny memory limit) or all at once: the same betas and maps."""
    sim = simulate_single_trials(n_voxels=300, n_runs=3, n_volumes=150, n_conditions=20, seed=4)
    whole = fit_single_trials(sim.data, sim.frame_times, sim.trials, memory_limit=10**10)
    small = fit_single_trials(sim.data, sim.frame_times, sim.trials, memory_limit=2 * 10**6)
    assert whole.n_components == small.n_components
    np.testing.assert_allclose(small.betas, whole.betas, rtol=1e-5, atol=1e-5 * np.nanmax(np.abs(whole.betas)))
    for name in ("hrf_index", "fraction", "r2", "cvr2", "reliability"):
        np.testing.assert_allclose(getattr(small, name), getattr(whole, name), rtol=1e-5, atol=1e-6)


def _median_correlation(betas, truth, voxels):
    return float(np.median([np.corrcoef(betas[:, v], truth[:, v])[0, 1] for v in np.flatnonzero(voxels)]))


@pytest.fixture(scope="module")
def two_hrfs():
    """1500 voxels (60 % responsive), half with the canonical HRF and half peaking 2.25 s later, no shared
    noise: 4 runs × 200 volumes, 40 conditions × 3 repeats at a 4 s spacing."""
    sim = simulate_single_trials(n_voxels=1500, n_runs=4, n_volumes=200, seed=1, structured_sd=0.0,
                                 hrf_shapes=[(5.0, 1.0), (7.25, 1.0)], responsive_fraction=0.6)
    return sim, fit_single_trials(sim.data, sim.frame_times, sim.trials, return_stages=True)


@pytest.fixture(scope="module")
def shared_noise():
    """As ``two_hrfs`` with 4 noise time courses per run shared by all voxels (loadings 0 to 2 × the voxels' own
    noise SD)."""
    sim = simulate_single_trials(n_voxels=1500, n_runs=4, n_volumes=200, seed=0, structured_sd=1.0,
                                 hrf_shapes=[(5.0, 1.0), (7.25, 1.0)], responsive_fraction=0.6)
    return sim, fit_single_trials(sim.data, sim.frame_times, sim.trials, return_stages=True)


def test_hrf_stage_helps_late_voxels_only(two_hrfs):
    """Against least squares with the canonical HRF (median correlation of the betas with the true single-trial
    responses): voxels whose HRF peaks late gain > 0.04 and most get a late library HRF; canonical voxels keep
    the canonical HRF (> 90 %) and lose < 0.01."""
    sim, result = two_hrfs
    late = sim.responsive & (sim.hrf_peak > 6)
    canonical = sim.responsive & ~late
    stages = result.stage_betas
    gain_late = _median_correlation(stages["hrf"], sim.betas, late) - \
        _median_correlation(stages["canonical"], sim.betas, late)
    change_canonical = _median_correlation(stages["hrf"], sim.betas, canonical) - \
        _median_correlation(stages["canonical"], sim.betas, canonical)
    peaks = result.library.parameters["time_to_peak"].to_numpy()
    assert gain_late > 0.04, gain_late
    assert change_canonical > -0.01, change_canonical
    assert np.mean(peaks[result.hrf_index[late]] > 6) > 0.5
    assert np.mean(result.hrf_index[canonical] == result.library.canonical_index) > 0.9


def test_denoising_chooses_no_components_without_shared_noise(two_hrfs):
    """No shared noise: no component helps, none is chosen, and the denoise stage's betas are the HRF stage's."""
    sim, result = two_hrfs
    assert result.n_components == 0 and result.choices["Denoise"]["Components"] == 0
    np.testing.assert_array_equal(result.stage_betas["denoise"], result.stage_betas["hrf"])


def test_denoising_removes_shared_noise(shared_noise):
    """Four shared noise time courses per run: 3 to 6 components chosen, by the repeated trials' cross-validated
    R²; voxels loaded with the shared noise gain > 0.15 in correlation with the truth, voxels almost free of it
    lose at most 0.02."""
    sim, result = shared_noise
    assert 3 <= result.n_components <= 6, result.choices["Denoise"]
    assert "repeated trials" in result.choices["Denoise"]["Selection"]
    loaded = sim.responsive & (sim.noise_loading > 1.2)
    free = sim.responsive & (sim.noise_loading < 0.3)
    stages = result.stage_betas
    before, after = stages["hrf"], stages["denoise"]
    assert _median_correlation(after, sim.betas, loaded) - _median_correlation(before, sim.betas, loaded) > 0.15
    assert _median_correlation(after, sim.betas, free) - _median_correlation(before, sim.betas, free) > -0.02


@pytest.mark.parametrize("case", ["two_hrfs", "shared_noise"])
def test_ridge_helps_weak_voxels_and_spares_strong_ones(case, request):
    """Fractional ridge at a 4 s spacing: weak voxels (amplitude < 0.9 of the noise SD) gain > 0.02 in correlation
    with the truth, strong ones (> 1.5) lose nothing (> −0.005) and keep larger fractions on average; the split-
    half reliability rises stage by stage, ridge last, above least squares with the canonical HRF by > 0.05."""
    sim, result = request.getfixturevalue(case)
    weak = sim.responsive & (sim.amplitude < 0.9)
    strong = sim.responsive & (sim.amplitude > 1.5)
    stages = result.stage_betas
    for voxels, bound in ((weak, 0.02), (strong, -0.005)):
        change = _median_correlation(stages["ridge"], sim.betas, voxels) - \
            _median_correlation(stages["denoise"], sim.betas, voxels)
        assert change > bound, (case, change, bound)
    assert np.nanmean(result.fraction[strong]) > np.nanmean(result.fraction[weak])
    table = result.stage_table()["median_reliability"]
    assert list(table.index) == ["canonical", "hrf", "denoise", "ridge"]
    assert table["hrf"] >= table["canonical"] - 0.005 and table["denoise"] >= table["hrf"] - 1e-6
    assert table["ridge"] > table["denoise"] and table["ridge"] > table["canonical"] + 0.05, table


def test_without_repeats_one_run_chooses_by_held_out_time_series():
    """One run, every condition shown once: the number of components comes from the on/off model's cvR² between
    the run's halves (4 shared noise time courses: 3 to 6 chosen), the ridge fractions from GCV; denoising and
    ridge each raise the correlation with the true responses (> 0.1 and > 0.03), ridge keeps larger fractions in
    strong voxels."""
    sim = simulate_single_trials(n_voxels=1000, n_runs=1, n_volumes=600, seed=0, structured_sd=1.0,
                                 n_conditions=120, n_repeats=1, responsive_fraction=0.6)
    result = fit_single_trials(sim.data, sim.frame_times, sim.trials.drop(columns="condition"), return_stages=True)
    assert "halves" in result.choices["Denoise"]["Selection"] and 3 <= result.n_components <= 6
    assert result.choices["Ridge"]["Selection"].startswith("generalised cross-validation")
    assert result.stage_reliability == {} and np.all(np.isnan(result.reliability))
    stages, responsive = result.stage_betas, sim.responsive
    correlation = {name: _median_correlation(b, sim.betas, responsive) for name, b in stages.items()}
    assert correlation["denoise"] > correlation["hrf"] + 0.1, correlation
    assert correlation["ridge"] > correlation["denoise"] + 0.03, correlation
    strong, weak = responsive & (sim.amplitude > 1.5), responsive & (sim.amplitude < 0.9)
    assert np.nanmean(result.fraction[strong]) > np.nanmean(result.fraction[weak])
    assert np.nanmedian(result.cvr2[responsive]) > 0 > np.nanmedian(result.cvr2[~responsive]) - 0.01


@pytest.mark.parametrize("change, message", [
    (lambda a: {**a, "data": a["data"][:-1]}, "add up to"),
    (lambda a: {**a, "trials": a["trials"].assign(run=7)}, "run number"),
    (lambda a: {**a, "trials": a["trials"].drop(columns="onset")}, "lack the column"),
    (lambda a: {**a, "hrf": "fit"}, "hrf must be"),
    (lambda a: {**a, "fractions": [0.0, 0.5]}, "fractions must be in"),
    (lambda a: {**a, "n_components": -1}, "n_components"),
    (lambda a: {**a, "confounds": np.zeros((3, 2))}, "confounds must be"),
    (lambda a: {**a, "library": HRFLibrary(peaks=[4.0])}, "canonical HRF"),
])
def test_bad_inputs_are_clear_errors(change, message):
    data, frame_times, trials, confounds = _small(n_voxels=4)
    arguments = change(dict(data=data, frame_times=frame_times, trials=trials, confounds=confounds, hrf="library"))
    with pytest.raises(ValueError, match=message):
        fit_single_trials(**arguments)
