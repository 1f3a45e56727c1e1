"""Per-run designs of the single-trial GLM: nuisance bases, trial regressors for every HRF, small eigen-systems.

Every run has its own nuisance columns (intercept, Legendre polynomial drifts, the run's confounds), its trials
and, once denoising has chosen them, its own noise components, and no regressor crosses a run boundary: the
single-trial GLM of all runs is block-diagonal by run. Each run is therefore solved on its own, by the
Frisch–Waugh–Lovell theorem on the trial regressors residualised against the run's nuisance basis: the betas of
voxel v are ``G⁺ X̃ᵀ y`` with ``G = X̃ᵀX̃`` (trials × trials, float64 eigen-decomposition shared by every voxel with
the same HRF), and only ``X̃ᵀ y`` touches the data (float32 matrix products over chunks of voxels).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["RunDesign", "Block", "TrialSystem", "orthonormal_basis", "legendre_drifts", "auto_poly_degree",
           "build_runs", "build_blocks", "one_blas_thread", "StackedSystems", "trial_system"]

_CONTROLLER = []


def one_blas_thread():
    """A context with the BLAS pools at one thread: the many small products and decompositions of the designs
    (30–100 columns) run several times faster than with threads that wait on each other (measured: a 30 × 30
    eigh took 3.7 ms with 2 OpenBLAS threads beside TensorFlow, 0.2 ms with one)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


REACH = 0.01  # a trial whose regressors peak below this fraction of the run's highest is outside the run
RCOND = 1e-10  # relative cut-off on eigenvalues of X̃ᵀX̃ (directions below it get no weight)


def auto_poly_degree(duration):
    """GLMdenoise's rule (Kay et al., 2013): polynomials of degree 0 to round(L / 2), L the run's length in
    minutes."""
    return int(round(duration / 120.0))


def legendre_drifts(n_time, degree):
    """Legendre polynomials of degree 0…``degree`` over the run (n_time × degree + 1)."""
    x = np.linspace(-1.0, 1.0, n_time)
    return np.polynomial.legendre.legvander(x, int(degree))


def orthonormal_basis(matrix, rcond=1e-8):
    """An orthonormal basis (columns) of the span of ``matrix``'s columns (rank-revealing SVD)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape[1] == 0:
        return np.zeros((matrix.shape[0], 0))
    u, s, _ = np.linalg.svd(matrix, full_matrices=False)
    keep = s > rcond * max(float(s.max(initial=0.0)), 1e-300)
    return u[:, keep]


def _nuisance(n_time, duration, confounds, poly_degree):
    degree = auto_poly_degree(duration) if poly_degree == "auto" else int(poly_degree)
    parts = [legendre_drifts(n_time, max(degree, 0))]
    if confounds is not None and confounds.shape[1]:
        used = np.any(confounds != 0, axis=0) & (np.ptp(confounds, axis=0) > 0)
        parts.append(confounds[:, used])
    return orthonormal_basis(np.hstack(parts)), degree


@dataclass
class RunDesign:
    """One run: its rows of the data, nuisance basis Q (orthonormal), estimable trials and their regressors with
    every HRF of the library residualised against Q (``regressors``: HRFs × time × trials), and the on/off
    regressor (all trials summed) of every HRF, residualised (time × HRFs)."""

    number: int
    start: int
    stop: int
    basis: np.ndarray
    trials: np.ndarray  # indices into the trial table
    regressors: np.ndarray
    on_off: np.ndarray
    poly_degree: int
    components: np.ndarray | None = None  # noise components (time × K_max), orthonormal and orthogonal to Q

    @property
    def n_time(self):
        return self.stop - self.start


@dataclass
class Block:
    """A block of the cross-validation of the on/off model: a run, or a half of the only run. ``basis``: its
    nuisance basis; ``on_off``: the on/off regressor of every HRF restricted to the block and residualised;
    ``components``: the noise components restricted to the block, orthonormalised against the basis and each other
    in order (so that ``basis`` + the first K of them span the block's nuisance with K components)."""

    run: int
    start: int
    stop: int
    basis: np.ndarray
    on_off: np.ndarray
    components: np.ndarray | None = None


def build_runs(frame_times, trials, confounds, library, poly_degree="auto", oversampling=16,
               reference_duration=None):
    """The :class:`RunDesign` of every run, and the mask of estimable trials (their response reaches the run).

    ``frame_times``: one array per run; ``trials``: DataFrame with integer ``run`` (position in ``frame_times``),
    ``onset`` and ``duration``; ``confounds``: (time × k) array of all runs (each run uses its own rows) or None.
    """
    runs, start = [], 0
    estimable = np.zeros(len(trials), dtype=bool)
    for number, times in enumerate(frame_times):
        n_time = len(times)
        rows = np.flatnonzero(trials["run"].to_numpy() == number)
        tr = float(np.median(np.diff(times)))
        local = None if confounds is None else confounds[start:start + n_time]
        basis, degree = _nuisance(n_time, n_time * tr, local, poly_degree)
        if rows.size:
            raw = library.regressors(trials["onset"].to_numpy()[rows], trials["duration"].to_numpy()[rows], times,
                                     oversampling=oversampling, reference_duration=reference_duration)
            peaks = np.abs(raw).max(axis=(0, 1))
            reach = peaks > REACH * peaks.max()
            if (~reach).any():
                logger.info("run %d: %d trial(s) whose response does not reach the run are not estimated", number,
                            int((~reach).sum()))
            rows, raw = rows[reach], raw[:, :, reach]
        else:
            raw = np.zeros((len(library), n_time, 0))
        estimable[rows] = True
        residual = raw - np.einsum("tq,hqm->htm", basis, np.einsum("tq,htm->hqm", basis, raw))
        on_off = raw.sum(axis=2).T  # (time, HRFs)
        on_off = on_off - basis @ (basis.T @ on_off)
        runs.append(RunDesign(number, start, start + n_time, basis, rows, residual, on_off, degree))
        start += n_time
    return runs, estimable


def build_blocks(runs, frame_times, trials, confounds, library, poly_degree="auto", oversampling=16,
                 reference_duration=None, halves=False):
    """Blocks of an on/off cross-validation: the runs themselves, or (``halves``) the two halves of every run, each
    with its own nuisance (its polynomials, the confounds' rows)."""
    if not halves:
        return [Block(r.number, r.start, r.stop, r.basis, r.on_off) for r in runs]
    blocks = []
    for run in runs:
        times = np.asarray(frame_times[run.number], dtype=np.float64)
        half = run.n_time // 2
        rows = run.trials
        raw = library.regressors(trials["onset"].to_numpy()[rows], trials["duration"].to_numpy()[rows], times,
                                 oversampling=oversampling, reference_duration=reference_duration).sum(axis=2).T
        tr = float(np.median(np.diff(times)))
        for a, b in ((0, half), (half, run.n_time)):
            local = None if confounds is None else confounds[run.start + a:run.start + b]
            basis, _ = _nuisance(b - a, (b - a) * tr, local, poly_degree)
            on_off = raw[a:b] - basis @ (basis.T @ raw[a:b])
            blocks.append(Block(run.number, run.start + a, run.start + b, basis, on_off))
    return blocks


def block_components(block, run):
    """The run's noise components restricted to the block, orthonormalised in order against the block's basis."""
    if run.components is None:
        return None
    local = run.components[block.start - run.start:block.stop - run.start]
    if block.start == run.start and block.stop == run.stop:
        return local
    q, r = np.linalg.qr(np.hstack([block.basis, local]))
    out = q[:, block.basis.shape[1]:] * np.sign(np.diag(r)[block.basis.shape[1]:])
    return out


class TrialSystem:
    """The trial GLM of one run with one HRF (and K noise components): X̃ᵀ (trials × time) for the products with
    the data, and the eigen-decomposition of G = X̃ᵀX̃ (float64): eigenvalues (0 on the directions below the
    cut-off), eigenvectors (trials × trials), and the inverse eigenvalues (0 there too: minimum-norm least
    squares). Tensors are made once, on first use."""

    def __init__(self, design):
        gram = design.T @ design
        values, vectors = np.linalg.eigh(gram)
        keep = values > RCOND * max(float(values.max(initial=0.0)), 1e-300)
        self.eigenvalues = np.where(keep, values, 0.0)
        self.eigenvectors = vectors
        self.keep = keep
        self.inverse = np.where(keep, 1.0 / np.where(keep, values, 1.0), 0.0)
        self.design_t = np.ascontiguousarray(design.T, dtype=np.float32)
        self._tensors = {}

    def design_tensor(self):
        if "design" not in self._tensors:
            from ..._tensorflow import tf

            self._tensors["design"] = tf.constant(self.design_t)
        return self._tensors["design"]

    def eigenvectors_tensor(self, dtype=None):
        from ..._tensorflow import tf

        dtype = dtype or tf.float64
        key = ("vectors", dtype.name)
        if key not in self._tensors:
            self._tensors[key] = tf.constant(self.eigenvectors.astype(dtype.as_numpy_dtype))
        return self._tensors[key]


def trial_system(run, hrf, n_components=0):
    """:class:`TrialSystem` of ``run`` with HRF ``hrf`` and its first ``n_components`` noise components projected
    out of the trial regressors."""
    design = run.regressors[hrf]
    if n_components and run.components is not None:
        p = run.components[:, :n_components]
        design = design - p @ (p.T @ design)
    return TrialSystem(design)


class StackedSystems:
    """The TrialSystems of a run with one HRF and each number of components in ``counts``, stacked for batched
    products: ``design`` (B · trials × time) float32, ``vectors`` (B × trials × trials) and ``inverse`` (B × trials)
    float64, ``eigenvalues`` (B × trials)."""

    def __init__(self, run, hrf, counts):
        from ..._tensorflow import tf

        systems = [trial_system(run, hrf, k) for k in counts]
        self.eigenvalues = np.stack([s.eigenvalues for s in systems])
        self.inverse = np.stack([s.inverse for s in systems])
        self.design = tf.constant(np.vstack([s.design_t for s in systems]))
        self.vectors = tf.constant(np.stack([s.eigenvectors for s in systems]))
