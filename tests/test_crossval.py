"""Cross-validated R² and the HRF choice on simulated GLM inputs with known truth (no BIDS, no files)."""

import numpy as np
import pandas as pd
import pytest

from bids_encoder.bids.events import convolved_design, occupancy_paradigm
from bids_encoder.bids.inputs import FitInputs
from bids_encoder.workflows.fits.crossval import fit_with_cv, make_folds, training_inputs
from bids_encoder.workflows.fits.dispatch import fit_model

TR = 2.0


def _events(rng, n_volumes):
    onsets = np.cumsum(rng.uniform(4.0, 9.0, size=n_volumes))
    onsets = onsets[onsets < n_volumes * TR - 20]
    return pd.DataFrame({"onset": onsets, "duration": 1.0, "condition": rng.choice(["a", "b"], onsets.size),
                         "modulation": 1.0})


def simulate(hrfs, noise, n_runs=2, n_volumes=160, seed=0):
    """GLM inputs whose voxel v responds with the SPM HRF ``hrfs[v]`` (None: no response) plus white noise.

    Returns the inputs (occupancy paradigm, the exact canonical design beside it) and the noiseless signal.
    """
    rng = np.random.default_rng(seed)
    n_voxels = len(hrfs)
    weights = rng.normal(8.0, 2.0, (2, n_voxels))  # unit-sum HRF: a 1-s event peaks near 0.1 per unit weight
    data, occupancy, exact, signals = [], [], [], []
    for _ in range(n_runs):
        events = _events(rng, n_volumes)
        occupancy.append(occupancy_paradigm(events, n_volumes, TR, conditions=["a", "b"]).to_numpy())
        exact.append(convolved_design(events, n_volumes, TR, conditions=["a", "b"]).to_numpy())
        signal = np.zeros((n_volumes, n_voxels))
        for kind in {h for h in hrfs if h is not None}:
            voxels = [i for i, h in enumerate(hrfs) if h == kind]
            design = convolved_design(events, n_volumes, TR, conditions=["a", "b"],
                                      hrf={"a1": kind[0], "d1": kind[1]}).to_numpy()
            signal[:, voxels] = design @ weights[:, voxels]
        signals.append(signal)
        data.append(100.0 + signal + rng.normal(0, noise, signal.shape))
    index = pd.MultiIndex.from_arrays([np.repeat(np.arange(1, n_runs + 1), n_volumes),
                                       np.tile(np.arange(n_volumes), n_runs)], names=["run", "volume"])
    frame = pd.DataFrame(np.vstack(data).astype(np.float32), index=index)
    inputs = FitInputs(runs=[None] * n_runs, data=frame, writer=None, tr=TR,
                       paradigm=pd.DataFrame(np.vstack(occupancy).astype(np.float32), index=index, columns=["a", "b"]),
                       confounds=pd.DataFrame(index=index),
                       convolved=pd.DataFrame(np.vstack(exact).astype(np.float32), index=index, columns=["a", "b"]))
    return inputs, np.vstack(signals)


def test_split_half_folds_are_contiguous_halves_of_every_run():
    index = pd.MultiIndex.from_arrays([np.repeat([1, 2], [10, 11]), np.r_[np.arange(10), np.arange(11)]],
                                      names=["run", "volume"])
    scheme, folds = make_folds(index, "split-half")
    assert scheme == "split-half" and len(folds) == 2
    assert np.flatnonzero(folds[0].test).tolist() == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]
    assert (folds[0].test ^ folds[1].test).all()
    assert make_folds(index, "auto")[0] == "loro"
    with pytest.raises(ValueError, match="at least two runs"):
        make_folds(index[:10], "loro")


def test_split_half_cvr2_estimates_the_population_r2_and_does_not_leak():
    """One run: the held-out half is censored, so cvR² estimates the true out-of-sample R² (known here), noise
    voxels score ≤ 0, and in-sample R² is optimistic."""
    canonical = (6.0, 1.0)
    inputs, signal = simulate([canonical] * 150 + [None] * 150, noise=1.0, n_runs=1, n_volumes=200, seed=1)
    result = fit_with_cv(inputs, "glm", hrf="canonical", cv="auto")
    assert result.cv["Scheme"] == "split-half"
    cvr2, r2 = result.cv["cvr2"], result.r2
    centred = signal[:, :150] - signal[:, :150].mean(axis=0)
    population = (centred**2).mean(axis=0) / ((centred**2).mean(axis=0) + 1.0)
    assert np.median(cvr2[:150]) == pytest.approx(np.median(population), abs=0.06)
    assert np.median(cvr2[150:]) < 0.0 < np.median(r2[150:])  # no leak: noise predicts nothing out of sample
    assert np.median(r2[:150] - cvr2[:150]) > 0.0


def test_training_fold_never_sees_the_held_out_data():
    """Changing the held-out run's data changes nothing in the training fit's parameters."""
    inputs, _ = simulate([(6.0, 1.0)] * 20, noise=1.0, seed=2)
    _, folds = make_folds(inputs.data.index, "loro")
    changed = inputs.data.copy()
    changed[folds[0].test] += np.random.default_rng(0).normal(0, 5, changed[folds[0].test].shape).astype(np.float32)
    for data in (inputs.data, changed):
        train = training_inputs(FitInputs(**{**inputs.__dict__, "data": data}), folds[0], "loro")
        fit = fit_model(train, "glm", hrf="shared")
        values = [spec.values for spec in fit.maps]
        if data is inputs.data:
            first = values, fit.hrf["Shared"]
        else:
            np.testing.assert_array_equal(values, first[0])
            assert fit.hrf["Shared"] == first[1]


@pytest.mark.parametrize("case", ["canonical", "voxel-specific"])
def test_hrf_auto_chooses_per_voxel_hrfs_only_when_voxels_differ(case):
    if case == "canonical":  # canonical responses plus pure-noise voxels: per-voxel HRFs only fit noise
        hrfs, noise = [(6.0, 1.0)] * 100 + [None] * 100, 1.0
    else:  # two very different HRFs, strong responses: one shared HRF cannot fit both
        hrfs, noise = [(4.0, 0.6)] * 100 + [(6.8, 1.6)] * 100, 0.6
    inputs, _ = simulate(hrfs, noise=noise, seed=3)
    result = fit_with_cv(inputs, "glm", hrf="auto", cv="auto")
    auto = result.hrf["Auto"]
    assert set(auto["MedianCVRSquared"]) == {"canonical", "shared", "fit"}
    assert auto["Chosen"] == result.hrf["Choice"]
    if case == "canonical":
        assert auto["Chosen"] != "fit"
        assert auto["MedianCVRSquared"]["fit"] < max(auto["MedianCVRSquared"].values())
    else:
        assert auto["Chosen"] == "fit"
    assert np.isfinite(result.cv["cvr2"]).all()


def test_shared_hrf_recovers_a_common_delay():
    inputs, _ = simulate([(4.5, 1.0)] * 150 + [None] * 50, noise=0.5, seed=4)
    result = fit_model(inputs, "glm", hrf="shared")
    shared = result.hrf["Shared"]
    assert shared["Estimated"] and shared["VoxelsUsed"] == 50  # 10 % of 200 voxels, at least 50
    assert shared["Delay"] == pytest.approx(4.5, abs=0.15)
    assert shared["Dispersion"] == pytest.approx(1.0, abs=0.15)
    assert shared["MeanUnexplainedFraction"] < shared["MeanUnexplainedFractionCanonical"]


def test_prf_split_half_cvr2_estimates_the_population_r2():
    """pRF (grid → LM) on bar apertures, one run, noise SD = signal SD: the split-half cvR² recovers the true
    out-of-sample R² (measured: 0.462 for 0.471 with 200 voxels)."""
    from bids_encoder.datasets.synthetic import bar_apertures
    from bids_encoder.models import GaussianPRF2DWithHRF, SPMHRFModel

    rng = np.random.default_rng(0)
    paradigm, grid = bar_apertures(n_side=16, n_steps=16, blank=4)
    paradigm = pd.concat([paradigm, paradigm.iloc[::-1]], ignore_index=True)  # each half sweeps every direction
    n = 100
    truth = pd.DataFrame({"x": rng.uniform(-3, 3, n), "y": rng.uniform(-3, 3, n), "sd": rng.uniform(0.8, 2, n),
                          "baseline": 0.0, "amplitude": rng.uniform(0.5, 1.5, n)})
    signal = GaussianPRF2DWithHRF(grid, hrf_model=SPMHRFModel(1.5)).predict(paradigm, truth).to_numpy()
    noise = signal.std(axis=0).mean()
    index = pd.MultiIndex.from_arrays([np.ones(len(paradigm), int), np.arange(len(paradigm))], names=["run", "volume"])
    data = pd.DataFrame((signal + rng.normal(0, noise, signal.shape)).astype(np.float32), index=index)
    inputs = FitInputs(runs=[None], data=data, writer=None, tr=1.5, paradigm=paradigm.astype(np.float32).set_axis(index),
                       confounds=pd.DataFrame(index=index), grid=grid)
    result = fit_with_cv(inputs, "prf2d", hrf="canonical", cv="auto", progressbar=False)
    centred = signal - signal.mean(axis=0)
    population = (centred**2).mean(axis=0) / ((centred**2).mean(axis=0) + noise**2)
    assert result.cv["Scheme"] == "split-half"
    assert np.median(result.cv["cvr2"]) == pytest.approx(np.median(population), abs=0.04)
