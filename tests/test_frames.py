"""Repeated stimulus frames computed once: the grid search, the closed-form refinement and Levenberg–Marquardt on
the distinct paradigm rows give the fits of the direct computation (a stimulus shown twice, blank frames)."""

import numpy as np
import pytest

from bids_encoder.models import GaussianPRF2DWithHRF, SPMHRFModel
from bids_encoder.models._frames import distinct_rows


def test_distinct_rows_rebuild_the_paradigm(rng):
    paradigm = rng.integers(0, 2, (12, 5)).astype(np.float32)[rng.integers(0, 12, 40)]
    rows, index = distinct_rows(paradigm)
    assert len(rows) < len(paradigm) and index.dtype == np.int32
    np.testing.assert_array_equal(rows[index], paradigm)
    assert len(np.unique(rows, axis=0)) == len(rows)


@pytest.fixture(scope="module")
def repeated():
    """Two runs of a 60-frame bar movie shown 2.5 times each (with blanks), 400 voxels, 30 % of them pRFs."""
    from bids_encoder.datasets.hcp_like import hcp_prf_subject
    from bids_encoder.datasets.synthetic import bar_apertures

    movie, grid = bar_apertures(n_side=14, extent=6.0, n_steps=8, blank=2)
    subject = hcp_prf_subject(400, n_runs=2, n_frames=150, apertures=movie.to_numpy(np.float32), grid=grid, seed=5)
    assert len(distinct_rows(subject.paradigm.to_numpy())[0]) <= 61
    return subject


def _fits(subject, monkeypatch, unique_hrfs):
    from bids_encoder.optimize.recipes import fit_prf2d

    results = {}
    for frames in (False, True):
        monkeypatch.setattr(GaussianPRF2DWithHRF, "supports_frames", frames)
        model = GaussianPRF2DWithHRF(subject.grid, hrf_model=SPMHRFModel(subject.tr, unique_hrfs=unique_hrfs))
        results[frames] = fit_prf2d(model, subject.data, subject.paradigm, progressbar=False, min_grid_r2=0.0)
    return results[False], results[True]


@pytest.mark.parametrize("unique_hrfs", [False, True])
def test_the_fit_on_distinct_frames_is_the_direct_fit(repeated, monkeypatch, unique_hrfs):
    direct, framed = _fits(repeated, monkeypatch, unique_hrfs)
    labels = ["x", "y", "sd"]
    same = (direct.grid_parameters[labels].to_numpy() == framed.grid_parameters[labels].to_numpy()).all(axis=1)
    assert same.mean() >= 0.995  # the same grid points (a near-tie may flip in the last float32 digit)
    np.testing.assert_allclose(framed.grid_r2[same], direct.grid_r2[same], rtol=1e-4, atol=1e-5)
    both = same & np.isfinite(direct.r2.to_numpy())
    signal = repeated.signal & both
    np.testing.assert_allclose(framed.r2[signal], direct.r2[signal], atol=2e-4)
    # noise voxels may end in another of their flat optima, but not on the whole
    assert np.median(np.abs(framed.r2[both] - direct.r2[both])) < 1e-5
    for label in labels:
        np.testing.assert_allclose(framed.parameters[label][signal], direct.parameters[label][signal], rtol=5e-3,
                                   atol=0.02)  # LM stops at a relative SSR change of 1e-4
    x = framed.parameters["x"].to_numpy()[repeated.signal]
    assert np.corrcoef(x, repeated.truth["x"].to_numpy()[repeated.signal])[0, 1] > 0.9


def test_levenberg_marquardt_on_the_frames_linearises_as_the_time_domain(repeated):
    """The frames kernel (sufficient statistics over the distinct frames) is chosen for a repeating stimulus with
    one HRF, and its SSR, J'J and J'r equal the time-domain kernel's and a float64 reference computed over the
    time points (with the later run's indicator as confound, as the fitter sets up two runs)."""
    from bids_encoder.optimize._frames_kernel import FramesKernel, frames_applicable
    from bids_encoder.optimize._inputs import confound_basis
    from bids_encoder.optimize._problem import FitProblem
    from bids_encoder.optimize._steps import Kernel

    model = GaussianPRF2DWithHRF(repeated.grid, hrf_model=SPMHRFModel(repeated.tr))
    labels = model.get_parameter_labels()
    truth = repeated.truth.fillna({"x": 1.0, "y": -1.0, "sd": 1.5, "baseline": 0.0, "amplitude": 0.5})
    init = (truth[labels] * 1.1 + 0.05).astype(np.float32)  # off the optimum: a gradient to compare
    segments = [150, 150]
    basis = confound_basis(None, 300, segments)
    problem = FitProblem(model, repeated.paradigm, repeated.data, init, segments, basis=basis)
    assert frames_applicable(problem)
    assert not frames_applicable(FitProblem(GaussianPRF2DWithHRF(repeated.grid, hrf_model=SPMHRFModel(
        repeated.tr, unique_hrfs=True)), repeated.paradigm, repeated.data, init, segments, basis=basis))
    found = {}
    for kernel_class in (Kernel, FramesKernel):
        kernel = kernel_class(problem, False)
        inputs = [t for t, _ in kernel.voxel_inputs(problem)] + list(kernel.shared_inputs(problem))
        found[kernel_class] = [t.numpy().astype(np.float64) for t in kernel.linearise(problem.free, inputs)[:3]]
    (ssr_t, normal_t, gradient_t), (ssr_f, normal_f, gradient_f) = found[Kernel], found[FramesKernel]
    np.testing.assert_allclose(ssr_f, ssr_t, rtol=2e-5)
    np.testing.assert_allclose(normal_f, normal_t, rtol=1e-3, atol=1e-4 * np.abs(normal_t).max())
    # float64 reference of J'r over the time points: the frames kernel is at least as accurate as the other
    kernel = Kernel(problem, False)
    y, _, fixed, weights, rows, _, frames = [t for t, _ in kernel.voxel_inputs(problem)] + kernel.shared_inputs(problem)
    prediction, jacobian = kernel.jacobian(rows, problem.free, fixed, weights, frames)
    projection = np.eye(300) - basis @ basis.T
    residual = projection @ (repeated.data.to_numpy(np.float64) - prediction.numpy().astype(np.float64))
    reference = np.einsum("tvp,tv->vp", jacobian.numpy().astype(np.float64), residual)
    scale = np.abs(reference).max()
    assert np.abs(gradient_f - reference).max() <= max(np.abs(gradient_t - reference).max(), 1e-5 * scale)
