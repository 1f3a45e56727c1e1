"""First-level GLM inference, batched over voxels: OLS or AR(1) prewhitened least squares, contrasts, t/F/z/p.

The model of every voxel is ``y = X b + e`` over all runs fitted jointly (run intercepts, confounds and spike
columns of censored volumes are columns of X). With ``noise_model="ar1"`` the errors of each run follow an AR(1)
process whose coefficient is estimated per voxel and per run from the OLS residuals (lag-one autocorrelation, pairs
within a run only); the model is then refitted by exact generalised least squares with each voxel's own
Prais–Winsten whitening ``W``: no binning of coefficients, no autocorrelation across run boundaries. A spike column
makes the whitened fit exactly equal to removing the volume from the AR(1) likelihood (the profile over a free
value is the marginal of the others).

For a shared design the per-voxel normal equations are assembled from a few per-run moment matrices of the design,
``X'W'WX = Σ_runs S0 + ρ² S1 − ρ L`` (S0 the run's cross-products, S1 those of its interior volumes, L the lag-one
cross-products), so the whitened design is never formed: the operations on the data (time × voxels) are float32,
the small per-voxel systems are solved by batched Cholesky in float64. A single run needs no per-voxel
factorisation at all: :mod:`.one_run` diagonalises its lag-one cross-products once and inverts every voxel's system
exactly by Woodbury's identity (a diagonal minus a rank-two term).
Per-voxel regressors (fitted HRFs, ``L_r k_v``: shared lagged copies times each voxel's kernel) are handled the
same way in :mod:`.voxel_designs`: shared moments of the lagged copies and nuisance columns, contracted with each
voxel's kernel and AR(1) coefficients; no per-voxel design is formed.

Degrees of freedom are ``volumes − rank(X)`` (censored volumes remove one each through their spike columns).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .._memory import resolve_memory_limit
from .._tensorflow import aligned_empty, shared_tensor, tf
from ._design import _contrast_coordinates, _f_coordinates, _reduced_basis
from .gls import RunMoments, contrasts, gram, lag_one
from .one_run import _OneRunAR1
from .run_blocks import _RunBlocks
from .statistics import f_to_z_p, t_to_z_p
from .voxel_blocks import voxel_solver
from .voxel_designs import _VoxelDesigns

logger = logging.getLogger(__name__)

__all__ = ["FirstLevelResult", "first_level", "percent_signal_change", "NOISE_MODELS"]

NOISE_MODELS = ("ar1", "ols")
DTYPE = tf.float64


@dataclass
class FirstLevelResult:
    """The outcome of :func:`first_level`: maps of every contrast, degrees of freedom, AR(1) coefficients.

    Parameters
    ----------
    df : float
        Residual degrees of freedom: volumes − rank of the design.
    contrasts : dict
        Contrast name → {stat: (voxels,) array}: ``effect``, ``variance``, ``t``, ``z``, ``p`` for t contrasts;
        ``F``, ``z``, ``p`` for F contrasts (see :func:`first_level`).
    rho : array, shape (runs, voxels), optional
        AR(1) coefficient of every run's residuals; None with ``noise_model='ols'``.
    sigma2 : array, shape (voxels,), optional
        Residual variance (of the whitened residuals with AR(1)).
    f_rows : dict
        F contrast name → its numerator degrees of freedom (its rows; 0 when the contrast is not estimable).
    """

    df: float
    contrasts: dict = field(default_factory=dict)
    rho: np.ndarray | None = None  # (runs × voxels)
    sigma2: np.ndarray | None = None  # residual variance (whitened with AR(1))
    f_rows: dict = field(default_factory=dict)  # F contrast → estimable rows (its numerator degrees of freedom)


def percent_signal_change(data, runs, keep=None):
    """Each voxel's data of each run as percent of its mean over the run: ``100 · (y / mean − 1)``.

    As nilearn's ``signal_scaling=0``; a zero mean is replaced by 1. Computed in float64 on blocks of voxels in
    parallel threads.

    Parameters
    ----------
    data : array, shape (time, voxels)
        The BOLD data (any real dtype; read as float32).
    runs : array, shape (time,)
        Run label of every volume (the runs need not be contiguous).
    keep : array of bool, shape (time,), optional
        The volumes the means are taken over (censored volumes left out); every volume if None. All volumes are
        scaled.

    Returns
    -------
    scaled : ndarray, float32, shape (time, voxels)
        Voxel-major (Fortran order, as a pandas frame of a (voxels × time) array keeps it).
    means : ndarray, float64, shape (runs, voxels)
        Each run's mean (1 where it was 0), runs in sorted label order.
    """
    data = np.asarray(data, dtype=np.float32)
    runs = np.asarray(runs)
    keep = np.ones(len(runs), bool) if keep is None else np.asarray(keep, bool)
    voxels = data.T  # contiguous rows when the data are voxel-major
    scaled = aligned_empty(voxels.shape, np.float32)  # shared with TensorFlow, not copied
    labels = np.unique(runs)
    means = np.empty((labels.size, voxels.shape[0]))
    columns = [_columns(runs == run) for run in labels]
    kept = [_columns((runs == run) & keep) for run in labels]

    def scale(start):
        block = slice(start, min(start + PSC_BLOCK, voxels.shape[0]))
        for i, (own, counted) in enumerate(zip(columns, kept, strict=True)):
            mean = voxels[block, counted].astype(np.float64).mean(axis=1)
            mean[mean == 0] = 1.0
            scaled[block, own] = 100.0 * (voxels[block, own] / mean[:, None] - 1.0)
            means[i, block] = mean

    starts = range(0, voxels.shape[0], PSC_BLOCK)
    try:
        threads = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        threads = os.cpu_count() or 1
    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(scale, starts))
    else:
        for start in starts:
            scale(start)
    return scaled.T, means


#: voxels scaled at once by percent_signal_change (float64 temporaries of a few tens of MB)
PSC_BLOCK = 4096


def _columns(selected):
    """Indices of the True entries, as a slice when they are contiguous (a basic slice is a view)."""
    indices = np.flatnonzero(selected)
    if indices.size and indices[-1] - indices[0] + 1 == indices.size:
        return slice(int(indices[0]), int(indices[-1]) + 1)
    return indices


class _Runs:
    """Time structure: run index per volume, first volume of each run, lag pairs within runs."""

    def __init__(self, runs, censored):
        runs = np.asarray(runs)
        labels, self.index = np.unique(runs, return_inverse=True)
        self.n_runs = labels.size
        first = np.r_[True, self.index[1:] != self.index[:-1]]
        last = np.r_[self.index[1:] != self.index[:-1], True]
        self.first, self.last = first, last
        self.pair = ~first  # t and t-1 in the same run
        self.index_tf = tf.constant(self.index.astype(np.int32))
        self.pair_tf = tf.constant(self.pair[:, None].astype(np.float32))
        censored = np.asarray(censored, bool)
        self.kept_tf = tf.constant((~censored)[:, None].astype(np.float32)) if censored.any() else None
        starts = np.flatnonzero(first)
        #: contiguous blocks of volumes (start, stop, run index); the whitening restarts at each block
        self.segments = [(int(a), int(b), int(self.index[a]))
                         for a, b in zip(starts, np.r_[starts[1:], len(self.index)], strict=True)]

    def indicators(self):
        return (self.index[:, None] == np.arange(self.n_runs)[None, :]).astype(float)

    def rho(self, residuals):
        """Lag-one autocorrelation of the residuals (time × voxels) per run, censored volumes left out:
        (runs × voxels), clipped to ±0.99."""
        return lag_one(residuals, self.segments, self.n_runs, self.kept_tf)

    def moments(self, z):
        """Per run, (S0, S1, L) of a shared (time × p) matrix: all, interior and lag-one cross-products (summed over
        the run's contiguous blocks of volumes, as the whitening treats each block's first volume as a start)."""
        p = z.shape[1]
        s0, s1, lag = (np.zeros((self.n_runs, p, p)) for _ in range(3))
        for a, b, run in self.segments:
            rows = z[a:b]
            s0[run] += rows.T @ rows
            s1[run] += rows[1:-1].T @ rows[1:-1]
            cross = rows[1:].T @ rows[:-1]
            lag[run] += cross + cross.T
        return [tf.constant(m) for m in (s0, s1, lag)]


def first_level(data, design, runs, t_contrasts=None, f_contrasts=None, noise_model="ar1", censored=None,
                voxel_regressors=None, memory_limit=None):
    """Fit the GLM of every voxel and evaluate contrasts.

    Parameters
    ----------
    data : array (time × voxels)
        Voxels with constant data should be left out by the caller (their maps would be NaN or meaningless).
    design : array (time × columns)
        The full design: regressors, confounds, spike columns, run intercepts.
    runs : array (time,)
        Run label of every volume: the AR(1) coefficient is per run and never spans a boundary.
    t_contrasts : dict name → (columns,) weights
    f_contrasts : dict name → (rows × columns) weights
    noise_model : 'ar1' or 'ols'
    censored : array (time,) of bool, optional
        Censored volumes (they must have spike columns in the design); left out of the AR(1) estimate.
    voxel_regressors : LaggedRegressors, optional
        Per-voxel replacements of the first R columns of ``design`` (HRFs fitted per voxel): regressor r of voxel v
        is ``lagged[r] @ kernels[v]``; contrasts must then be zero on the other columns.
    memory_limit : int, optional
        Bytes of working memory beyond the data (voxels are processed in tiles within it); default: a quarter of
        the memory this process can get, at most 2 GB (:func:`bids_encoder._memory.default_memory_limit`).

    Returns
    -------
    FirstLevelResult
        For t contrasts the stats ``effect`` (c b), ``variance`` (c (X'V⁻¹X)⁻¹ c' σ²), ``t``, ``z`` and ``p``
        (one-sided, upper tail); for F contrasts ``F``, ``z`` and ``p``.
    """
    if noise_model not in NOISE_MODELS:
        raise ValueError(f"Unknown noise model {noise_model!r}; choose from {', '.join(NOISE_MODELS)}")
    data = np.asarray(data, dtype=np.float32)
    design = np.asarray(design, dtype=np.float64)
    n_time, n_voxels = data.shape
    t_contrasts, f_contrasts = dict(t_contrasts or {}), dict(f_contrasts or {})
    censored = np.zeros(n_time, bool) if censored is None else np.asarray(censored, bool)
    structure = _Runs(runs, censored)
    if voxel_regressors is None:
        solver = _SharedDesign(design, structure, t_contrasts, f_contrasts)
        if noise_model == "ar1" and structure.n_runs == 1:
            solver = _OneRunAR1(solver)
        elif noise_model == "ar1":
            solver = _RunBlocks.make(solver, design, _weighed_columns(design.shape[1], t_contrasts,
                                                                      f_contrasts)) or solver
    else:
        solver = voxel_solver(_VoxelDesigns(design, structure, t_contrasts, f_contrasts, voxel_regressors), design,
                              noise_model)
    df = float(n_time - solver.rank)
    if df < 1:
        raise ValueError(f"{n_time} volumes leave no degrees of freedom for a design of rank {solver.rank}")
    per_voxel = solver.bytes_per_voxel(n_time)
    chunk = max(1, min(n_voxels, int(resolve_memory_limit(memory_limit) // per_voxel)))
    outputs = {name: {"effect": [], "variance": []} for name in t_contrasts}
    outputs.update({name: {"F": []} for name in f_contrasts})
    rhos, sigma2s = [], []
    for start in range(0, n_voxels, chunk):
        stop = min(start + chunk, n_voxels)
        y = _tensor(data[:, start:stop])  # float32; the per-voxel systems are float64
        effects, variances, fs, rho, sigma2 = solver.solve(y, noise_model, df, start, stop)
        for j, name in enumerate(t_contrasts):
            outputs[name]["effect"].append(effects[j])
            outputs[name]["variance"].append(variances[j])
        for name, values in zip(f_contrasts, fs, strict=True):
            outputs[name]["F"].append(values)
        rhos.append(rho)
        sigma2s.append(sigma2)
    result = FirstLevelResult(df=df, sigma2=np.concatenate(sigma2s),
                              rho=None if noise_model == "ols" else np.concatenate(rhos, axis=1))
    if t_contrasts:  # (contrasts × voxels), converted to z and p at once
        effect = np.vstack([np.concatenate(outputs[name]["effect"]) for name in t_contrasts])
        variance = np.vstack([np.concatenate(outputs[name]["variance"]) for name in t_contrasts])
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(variance > 0, effect / np.sqrt(variance), np.nan)
        z, p = t_to_z_p(t, df)
        for i, name in enumerate(t_contrasts):
            result.contrasts[name] = {"effect": effect[i], "variance": variance[i], "t": t[i], "z": z[i], "p": p[i]}
    for name, rows in zip(f_contrasts, solver.f_coordinates, strict=True):
        f = np.concatenate(outputs[name]["F"])
        f[~(result.sigma2 > 0)] = np.nan  # a voxel fitted exactly (constant data): no F, as no t
        z, p = f_to_z_p(f, rows.shape[0], df)
        result.contrasts[name] = {"F": f, "z": z, "p": p}
        result.f_rows[name] = 0 if np.isnan(rows).any() else rows.shape[0]
    logger.info("First level (%s): %d voxels, %d contrasts, %g degrees of freedom", noise_model, n_voxels,
                len(result.contrasts), df)
    return result


def _weighed_columns(n_columns, t_contrasts, f_contrasts):
    """The design columns some t or F contrast weighs."""
    weighed = np.zeros(n_columns, bool)
    for weights in [*t_contrasts.values(), *f_contrasts.values()]:
        weighed |= np.any(np.atleast_2d(np.asarray(weights, float)) != 0, axis=0)
    return weighed


def _tensor(block):
    """A (time × voxels) float32 block as a tensor; a column-major block (a pandas frame's values) is shared with
    TensorFlow as its contiguous transpose (no copy) and transposed by TensorFlow, several times faster than numpy's
    strided copy."""
    if block.flags.f_contiguous and not block.flags.c_contiguous:
        return tf.transpose(shared_tensor(block.T))
    return shared_tensor(block)


def _centre(structure, design):
    """Subtract each run's mean when the run intercepts are in the design's span (they absorb it exactly)."""
    indicators = structure.indicators()
    coefficients = np.linalg.lstsq(design, indicators, rcond=None)[0]
    return bool(np.abs(design @ coefficients - indicators).max() < 1e-8)


def _run_means(y, structure):
    """Each run's mean (runs × voxels)."""
    sums = tf.math.unsorted_segment_sum(y, structure.index_tf, structure.n_runs)
    counts = np.bincount(structure.index, minlength=structure.n_runs)[:, None].astype(y.dtype.as_numpy_dtype)
    return sums / counts


def _mean_coordinates(z, structure):
    """Coefficients of each run's indicator in the orthogonal basis Z (columns × runs): centring the data by its
    run means removes ``coordinates @ means`` from the coefficients, exactly (OLS and GLS are linear, the indicators
    lie in the design's span), and adding it back restores contrasts that weigh the intercepts."""
    return (z.T @ structure.indicators()) / np.sum(z**2, axis=0)[:, None]


class _SharedDesign:
    """One design for all voxels, in its reduced (full-rank, equilibrated) coordinates."""

    def __init__(self, design, structure, t_contrasts, f_contrasts):
        self.structure = structure
        self.z, basis, norms, self.rank = _reduced_basis(design)
        self.centre = _centre(structure, design)
        self.t_coordinates = (np.vstack([_contrast_coordinates(w, basis, norms, n) for n, w in t_contrasts.items()])
                              if t_contrasts else np.zeros((0, self.rank)))
        self.f_coordinates = [_f_coordinates(w, basis, norms, n) for n, w in f_contrasts.items()]
        self.z_tf = tf.constant(self.z.astype(np.float32))
        self.gram_diag = np.sum(self.z**2, axis=0)  # Z'Z is diagonal (U S)
        self.moments = structure.moments(self.z)
        self.run_moments = RunMoments(self.z, structure)
        self.mean_coordinates = tf.constant(_mean_coordinates(self.z, structure))

    def bytes_per_voxel(self, n_time):
        return 8 * (8 * n_time + 4 * self.rank * self.rank + 2 * self.rank * (len(self.t_coordinates) + 4))

    def solve(self, y, noise_model, df, start, stop):
        structure = self.structure
        means = None
        if self.centre:
            means = _run_means(y, structure)
            y = y - tf.gather(means, structure.index_tf)
        z = self.z_tf
        gamma = tf.matmul(z, y, transpose_a=True) / self.gram_diag[:, None].astype(np.float32)  # OLS (Z'Z diagonal)
        residuals = y - tf.matmul(z, gamma)
        k_t = tf.constant(self.t_coordinates.T)  # (r, n_t)
        if noise_model == "ols":
            sigma2 = tf.cast(tf.reduce_sum(tf.square(residuals), axis=0), DTYPE) / df
            gamma = tf.cast(gamma, DTYPE)
            if means is not None:
                gamma += tf.matmul(self.mean_coordinates, tf.cast(means, DTYPE))
            inverse = 1.0 / self.gram_diag
            effects = tf.matmul(k_t, gamma, transpose_a=True)  # (n_t, v)
            unit = np.sum(self.t_coordinates**2 * inverse[None, :], axis=1)  # k' G⁻¹ k
            variances = unit[:, None] * sigma2[None, :]
            fs = []
            for k in self.f_coordinates:
                if np.isnan(k).any():  # not estimable
                    fs.append(np.full(gamma.shape[1], np.nan))
                    continue
                estimate = k @ gamma.numpy()  # (q, v)
                middle = np.linalg.inv((k * inverse[None, :]) @ k.T)
                fs.append(np.sum(estimate * (middle @ estimate), axis=0) / (k.shape[0] * sigma2.numpy()))
            return (effects.numpy(), variances.numpy(), fs, None, sigma2.numpy())
        rhs, eqe, rho = self.run_moments.rhs(residuals)  # Z'Qe (k × v), e'Qe, ρ (runs × v)
        del residuals, y
        gram_matrices = gram(self.moments, tf.cast(rho, DTYPE))
        chol = tf.linalg.cholesky(gram_matrices)
        delta = tf.linalg.cholesky_solve(chol, tf.transpose(rhs)[:, :, None])[:, :, 0]  # (v, k): GLS of e
        sigma2 = tf.maximum(eqe - tf.reduce_sum(delta * tf.transpose(rhs), axis=1), 0.0) / df
        gamma = tf.transpose(tf.cast(gamma, DTYPE)) + delta
        if means is not None:
            gamma += tf.transpose(tf.matmul(self.mean_coordinates, tf.cast(means, DTYPE)))
        return contrasts(chol, gamma, sigma2, self.t_coordinates, self.f_coordinates, gram_matrices) + (
            rho.numpy(), sigma2.numpy())
