"""One memory budget for every stage: the default from the machine (cgroup, SLURM, --mem), results that do not
depend on the tiling, and a working set that stays within the budget whatever the size of the data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bids_encoder import _memory


def _fake_files(monkeypatch, files):
    monkeypatch.setattr(_memory, "_read", lambda path: files.get(str(path)))


def test_the_default_budget_follows_the_least_memory_the_job_can_get(monkeypatch):
    for name in ("SLURM_MEM_PER_NODE", "SLURM_MEM_PER_CPU", "SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        monkeypatch.delenv(name, raising=False)
    gib = 2**30
    meminfo = f"MemTotal: {64 * gib // 1024} kB\nMemAvailable: {40 * gib // 1024} kB\n"
    files = {"/proc/meminfo": meminfo, "/proc/self/statm": "1000 25600 0 0 0 0 0",  # 100 MiB resident
             "/proc/self/cgroup": "0::/job.slice\n"}
    _fake_files(monkeypatch, files)
    assert _memory.available_memory() == 40 * gib
    assert _memory.default_memory_limit() == _memory.MAX_DEFAULT  # a quarter of 40 GiB, capped
    files["/sys/fs/cgroup/job.slice/memory.max"] = str(6 * gib)  # a container's (cgroup v2) limit
    files["/sys/fs/cgroup/job.slice/memory.current"] = str(2 * gib)
    assert _memory.available_memory() == 4 * gib
    assert _memory.default_memory_limit() == pytest.approx(gib, rel=1e-9)
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "2048")  # sbatch --mem=2G, 100 MiB of it used
    expected = 2048 * 2**20 - 25600 * os.sysconf("SC_PAGE_SIZE")
    assert _memory.available_memory() == expected
    assert _memory.default_memory_limit() == int(0.25 * expected)
    monkeypatch.delenv("SLURM_MEM_PER_NODE")
    monkeypatch.setenv("SLURM_MEM_PER_CPU", "300")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert _memory.available_memory() == 600 * 2**20 - 25600 * os.sysconf("SC_PAGE_SIZE")
    assert _memory.default_memory_limit() == _memory.MIN_DEFAULT  # never below the floor
    files["/sys/fs/cgroup/job.slice/memory.max"] = "max"  # no limit: ignored
    monkeypatch.delenv("SLURM_MEM_PER_CPU")
    assert _memory.available_memory(total=3 * gib) == 3 * gib - 25600 * os.sysconf("SC_PAGE_SIZE")  # --mem
    _fake_files(monkeypatch, {})
    assert _memory.available_memory() is None and _memory.default_memory_limit() == _memory.MAX_DEFAULT


def test_cli_memory_options(monkeypatch):
    from bids_encoder.cli.support import AppError, _memory_budget

    monkeypatch.setattr(_memory, "_rss", lambda: 100_000_000)  # the test process's own size does not matter
    monkeypatch.setattr(_memory, "_meminfo_available", lambda: 20_000_000_000)
    monkeypatch.setattr(_memory, "_cgroup_headroom", lambda: None)
    monkeypatch.setattr(_memory, "_slurm_headroom", lambda: None)
    assert _memory_budget("3GB") == 3_000_000_000
    assert _memory_budget("auto") == _memory.MAX_DEFAULT
    assert _memory_budget("auto", "4000") == int(0.25 * (4e9 - 1e8))  # --mem 4000 (MB, fMRIPrep's spelling)
    assert _memory_budget("auto", "4G") == int(0.25 * (4e9 - 1e8))
    with pytest.raises(AppError, match="--mem"):
        _memory_budget("auto", "lots")


@pytest.fixture(scope="module")
def subject():
    from bids_encoder.datasets.hcp_like import hcp_prf_subject

    return hcp_prf_subject(500, n_runs=2, n_frames=150, seed=3)


def test_grid_and_refinement_do_not_depend_on_the_budget(subject):
    """A budget of a few MB (tiles of a few voxels and points) and a large one give the same grid points, R² and
    closed-form baseline and amplitude."""
    from bids_encoder.models import GaussianPRF2DWithHRF, SPMHRFModel
    from bids_encoder.optimize import ParameterFitter
    from bids_encoder.optimize.grid import grid_plan
    from bids_encoder.optimize.recipes import default_prf_grid

    model = GaussianPRF2DWithHRF(subject.grid, hrf_model=SPMHRFModel(subject.tr))
    xs, ys, sds = default_prf_grid(model)
    results = []
    for limit in (6e6, 4e9):
        fitter = ParameterFitter(model, subject.data, subject.paradigm, memory_limit=limit)
        grid = fitter.fit_grid(xs, ys, sds, None, None, use_correlation_cost=True, progressbar=False)
        refined = fitter.refine_baseline_and_amplitude(grid)
        results.append((grid, fitter.grid_r2, refined))
    n_time, n_pixels = subject.paradigm.shape
    chunk, tile = grid_plan(model, n_time, n_pixels, len(xs) * len(ys) * len(sds), subject.data.shape[1], 6e6)
    assert chunk < len(xs) * len(ys) * len(sds) and tile < subject.data.shape[1]  # the small budget did tile
    (grid_small, r2_small, refined_small), (grid_large, r2_large, refined_large) = results
    np.testing.assert_array_equal(grid_small[["x", "y", "sd"]], grid_large[["x", "y", "sd"]])
    np.testing.assert_allclose(r2_small, r2_large, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grid_small[["baseline", "amplitude"]], grid_large[["baseline", "amplitude"]],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(refined_small, refined_large, rtol=1e-6, atol=1e-6)
    truth = subject.truth[subject.signal]
    assert np.corrcoef(grid_large["x"][subject.signal], truth["x"])[0, 1] > 0.95  # the grid found the pRFs


RSS_CHILD = """
import json, resource, sys
import numpy as np
from bids_encoder.datasets.hcp_like import hcp_prf_subject
from bids_encoder.models import GaussianPRF2DWithHRF, SPMHRFModel
from bids_encoder.optimize import ParameterFitter
from bids_encoder.optimize.recipes import default_prf_grid
limit = int(sys.argv[1])
subject = hcp_prf_subject(int(sys.argv[2]), n_runs=2, n_frames=150, seed=4)
model = GaussianPRF2DWithHRF(subject.grid, hrf_model=SPMHRFModel(subject.tr))
xs, ys, sds = default_prf_grid(model)
warm = ParameterFitter(model, subject.data.iloc[:, :50], subject.paradigm, memory_limit=limit)
warm.refine_baseline_and_amplitude(warm.fit_grid(xs, ys, sds, None, None, use_correlation_cost=True,
                                                 progressbar=False))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
fitter = ParameterFitter(model, subject.data, subject.paradigm, memory_limit=limit)
grid = fitter.fit_grid(xs, ys, sds, None, None, use_correlation_cost=True, progressbar=False)
fitter.refine_baseline_and_amplitude(grid)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"increase": after - before, "data": int(subject.data.to_numpy().nbytes)}))
"""


def test_grid_and_refinement_stay_within_the_budget():
    """30,000 voxels × 300 frames (36 MB of data) with a 20 MB budget, in a child process: the peak RSS grows by
    less than the budget plus a slack for TensorFlow's allocator (before the tiling, the grid held the data and
    their projection and refined all voxels at once in float64: about 10 times the data)."""
    limit = 20_000_000
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(limit), "30000"], capture_output=True, text=True,
                         env=env, timeout=600, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["data"] > limit
    assert result["increase"] <= limit + 40e6, result


def _fit_maps(result):
    return {(spec.stat, spec.desc, spec.contrast): np.asarray(spec.values, dtype=np.float64) for spec in result.maps}


def _assert_same_fit(small, large, parameters_tolerance, r2_tolerance=2e-4, fraction=1.0):
    """The same maps (NaN in the same places) and R², cvR², on at least ``fraction`` of the voxels. Not bit for
    bit: float32 products over tiles of other sizes round differently, an iterative solver stops within its
    tolerance (relative SSR change 1e-4) after a path that rounding can nudge, and a non-convex fit can then end
    in another optimum for a rare voxel (a fold's fit). A tiling error would change most voxels."""
    maps_small, maps_large = _fit_maps(small), _fit_maps(large)
    assert maps_small.keys() == maps_large.keys()
    agree = np.ones(len(large.r2), bool)
    for key, values in [*maps_large.items(), (("r2",), large.r2), (("cvr2",), large.cv["cvr2"])]:
        other = {("r2",): small.r2, ("cvr2",): small.cv["cvr2"]}.get(key, maps_small.get(key))
        other, values = np.asarray(other, dtype=np.float64), np.asarray(values, dtype=np.float64)
        np.testing.assert_array_equal(np.isnan(other), np.isnan(values), err_msg=str(key))
        tolerance = r2_tolerance if key in (("r2",), ("cvr2",)) else parameters_tolerance
        agree &= np.isnan(values) | np.isclose(other, values, rtol=tolerance, atol=tolerance)
    assert agree.mean() >= fraction, (key, np.flatnonzero(~agree))
    np.testing.assert_allclose(small.r2, large.r2, atol=0.05, equal_nan=True)  # and the others close


def test_whole_prf_fit_with_cross_validation_does_not_depend_on_the_budget(subject, monkeypatch):
    """The app's pRF fit (grid, refinement, gate, Levenberg–Marquardt, standard errors, split-half cvR²) under a
    budget of 5 MB (tiles of a few voxels at every stage) and of 4 GB (one tile): the same parameters, standard
    errors, iterated voxels, R² and cvR² (on 99 % of the voxels: one of 500 ended elsewhere in a fold)."""
    import pandas as pd

    from bids_encoder.bids.inputs import FitInputs
    from bids_encoder.optimize.parameters import ParameterFitter
    from bids_encoder.workflows.fits.crossval import fit_with_cv

    chunks, fit = [], ParameterFitter.fit

    def counting_fit(self, *args, **kwargs):
        out = fit(self, *args, **kwargs)
        chunks.append(len(self.chunk_devices))
        return out

    monkeypatch.setattr(ParameterFitter, "fit", counting_fit)
    inputs = FitInputs(runs=[None, None], data=subject.data.iloc[:, :200], writer=None, tr=subject.tr,
                       paradigm=subject.paradigm,
                       confounds=pd.DataFrame(index=subject.data.index), grid=subject.grid)
    results = []
    for limit in (5e6, 4e9):
        chunks.clear()
        results.append(fit_with_cv(inputs, "prf2d", cv="split-half", memory_limit=limit, progressbar=False))
        results[-1].chunks = max(chunks)
    small, large = results
    assert small.chunks > 4 and large.chunks == 1  # the small budget tiled Levenberg–Marquardt
    _assert_same_fit(small, large, 2e-3, fraction=0.99)


def test_whole_glm_fit_with_cross_validation_does_not_depend_on_the_budget():
    """The app's GLM fit with per-voxel HRFs (canonical weights, HRF search, refit) and leave-one-run-out cvR²
    under a budget of 100 kB and of 4 GB: the same weights, HRF parameters, R² and cvR²."""
    from test_crossval import simulate

    from bids_encoder.workflows.fits.crossval import fit_with_cv

    inputs, _ = simulate([(6.0, 1.0)] * 150 + [(4.5, 0.8)] * 150 + [None] * 100, noise=1.0, n_runs=2,
                         n_volumes=120, seed=4)
    small, large = (fit_with_cv(inputs, "glm", hrf="fit", cv="loro", memory_limit=limit, progressbar=False)
                    for limit in (1e5, 4e9))
    _assert_same_fit(small, large, 2e-3)
