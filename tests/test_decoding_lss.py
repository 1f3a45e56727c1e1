"""Least-squares-separate single-trial betas against a numpy loop over trials, and their recovery."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bids_encoder.decoding import lss_betas, trial_regressors
from bids_encoder.hrf import spm_hrf


def _lss_loop(x, y, confounds, types):
    """The reference: one least-squares GLM per trial (own regressor, the others summed per type, confounds,
    intercept)."""
    betas = []
    for j in range(x.shape[1]):
        others = [x[:, [k for k in range(x.shape[1]) if k != j and types[k] == t]].sum(axis=1)
                  for t in np.unique(types)]
        design = np.column_stack([x[:, j], *others, confounds, np.ones(len(x))])
        betas.append(np.linalg.lstsq(design, y, rcond=None)[0][0])
    return np.array(betas)


@pytest.mark.parametrize("typed", [False, True])
def test_lss_matches_a_loop_of_glms(rng, typed):
    """14 trials (3 types, one of them a single trial: an empty nuisance column), 3 confounds, 120 volumes,
    9 voxels: the batched betas equal the per-trial lstsq loop to 1e-4 (relative)."""
    onsets = np.sort(rng.uniform(0, 160, 14))
    frame_times = np.arange(120) * 1.5
    x = trial_regressors(onsets, 1.0, frame_times)
    assert x.shape == (120, 14) and np.all(x.to_numpy() >= -0.05)
    types = np.array(["a"] * 7 + ["b"] * 6 + ["c"])[rng.permutation(14)] if typed else np.array(["all"] * 14)
    confounds = rng.normal(size=(120, 3))
    y = x.to_numpy() @ rng.normal(1, 0.5, (14, 9)) + confounds @ rng.normal(size=(3, 9)) + 5.0 \
        + rng.normal(0, 0.1, (120, 9))
    betas = lss_betas(x, y, confounds=confounds, trial_types=types if typed else None)
    assert betas.shape == (14, 9) and list(betas.index) == list(x.columns)
    reference = _lss_loop(x.to_numpy(), y, confounds, types)
    np.testing.assert_allclose(betas.to_numpy(), reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())


def test_regressors_and_recovery(rng):
    """A 2 s event sampled every 0.5 s follows the SPM HRF convolved with its boxcar (numpy, to 1e-3 of the peak);
    with two runs (their own intercepts from the (run, time) index), 3 s events 9 s apart and noise SD 0.1
    (peak responses 0.3–1.1), LSS betas recover
    single-trial amplitudes (r > 0.9)."""
    frame_times = np.arange(80) * 0.5
    single = trial_regressors([4.0], 2.0, frame_times, oversampling=20).to_numpy()[:, 0]
    fine = np.arange(1600) * 0.025
    boxcar = np.zeros(1600)
    boxcar[160:240] = 1.0  # 4 s to 6 s
    expected = np.convolve(boxcar, spm_hrf(np.arange(1280) * 0.025) * 0.025)
    np.testing.assert_allclose(single, np.interp(frame_times, fine, expected[: len(fine)]), atol=1e-3 * single.max())

    tr, n_volumes = 2.0, 150
    runs = []
    for run in range(2):
        onsets = 8.0 + 9.0 * np.arange(30) + rng.uniform(-1, 1, 30)
        runs.append(trial_regressors(onsets, 3.0, np.arange(n_volumes) * tr,
                                     names=[f"run{run}_trial{k}" for k in range(30)]))
    x = pd.concat(runs, keys=[0, 1], names=["run", "time"]).fillna(0.0)
    amplitudes = rng.uniform(0.5, 2.0, (60, 5))
    y = x.to_numpy() @ amplitudes + np.repeat([[10.0], [-3.0]], n_volumes, axis=0) + rng.normal(0, 0.1, (300, 5))
    data = pd.DataFrame(y, index=x.index)
    betas = lss_betas(x, data)
    r = stats.pearsonr(betas.to_numpy().ravel(), amplitudes.ravel())[0]
    assert r > 0.9, r
