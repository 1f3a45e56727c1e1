"""Fitting recipes that chain the fitters the way pRF mapping is usually done: grid → refine → iterative.

- :func:`fit_prf2d`: 2-D Gaussian pRF — grid over x, y, sd (and per-voxel HRF values) ranked by correlation →
  least-squares baseline and amplitude → Levenberg–Marquardt.
- :func:`fit_prf2d_staged`: the 2-D family (as prfpy does): the Gaussian fit above, then the extended model (CSS,
  difference of Gaussians, divisive normalisation) seeded per voxel from the Gaussian solution, with a small grid
  over its extra parameters (:func:`default_extra_grid`; the linear scale solved in closed form), then
  Levenberg–Marquardt over every parameter.
- :func:`fit_tuning1d`: 1-D tuning models (Gaussian, log-Gaussian, von Mises) — grid over preferred value × width
  (:func:`default_tuning_grid`) → least-squares baseline and amplitude → Levenberg–Marquardt.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._docstrings import add_parameters
from ._inputs import confound_basis
from ._problem import SOLVER_DEFAULTS
from ._recipe_docs import PRFFIT_PARAMETERS, RECIPE_PARAMETERS
from .parameters import ParameterFitter

logger = logging.getLogger(__name__)

__all__ = ["MIN_GRID_R2", "PRFFit", "SOLVER_DEFAULTS", "default_extra_grid", "default_hrf_grid", "default_prf_grid",
           "default_tuning_grid", "fit_prf2d", "fit_prf2d_staged", "fit_tuning1d"]


#: Default of the recipes' ``min_grid_r2``: voxels whose grid-stage R² (closed-form baseline and amplitude) is
#: below it keep their grid estimate and skip the iterative stage (prfpy's ``rsq_threshold``). Chosen by
#: measurement (README, "pRF fitting"): the held-out R² of responsive voxels is unchanged at it.
MIN_GRID_R2 = 0.1


@add_parameters(PRFFIT_PARAMETERS)
@dataclass
class PRFFit:
    """Result of a recipe (:func:`fit_prf2d`, :func:`fit_prf2d_staged`, :func:`fit_tuning1d`)."""

    parameters: pd.DataFrame
    r2: pd.Series
    grid_parameters: pd.DataFrame
    grid_r2: pd.Series
    n_iterations: int
    converged: bool
    timings: dict = field(default_factory=dict)
    fitter: ParameterFitter | None = None
    stages: dict = field(default_factory=dict)
    iterated: pd.Series | None = None
    standard_errors: pd.DataFrame | None = None
    min_grid_r2: float = 0.0


def default_prf_grid(model, n_x=27, n_y=19, n_sd=10):
    """The default grid of a 2-D pRF fit: x, y over the stimulus extent widened by half of it on each side; sd
    log-spaced from 3 pixels to 1.1 × half the larger extent (at least 4 pixels).

    Parameters
    ----------
    model : a 2-D pRF model (its ``grid_coordinates`` and ``pixel_area``)
    n_x, n_y, n_sd : int

    Returns
    -------
    xs, ys, sds : ndarray
    """
    grid = model.grid_coordinates.to_numpy()
    low, high = grid.min(axis=0), grid.max(axis=0)
    half = (high - low) / 2.0
    pixel = float(np.sqrt(model.pixel_area))
    xs = np.linspace(low[0] - half[0], high[0] + half[0], n_x)
    ys = np.linspace(low[1] - half[1], high[1] + half[1], n_y)
    sds = np.geomspace(3 * pixel, max(1.1 * float(half.max()), 4 * pixel), n_sd)
    return xs, ys, sds


def default_hrf_grid(hrf_model):
    """Grid values of per-voxel HRF parameters: the canonical delay and dispersion and a step either side
    (delay −1 s / +0.75 s, dispersion ×0.7 / ×1.4), inside the model's bounds; {} without per-voxel HRFs.

    Parameters
    ----------
    hrf_model : SPMHRFModel

    Returns
    -------
    dict of label → list of float
    """
    defaults = hrf_model.get_default_parameters()
    if not defaults:
        return {}
    delay, dispersion = defaults["hrf_delay"], defaults["hrf_dispersion"]

    def inside(values, low, high):
        margin = 0.02 * (high - low)  # strictly inside: the bounded transform maps the bounds to infinity
        return sorted({float(v) for v in values if low + margin <= v <= high - margin} | {float(values[1])})

    return {"hrf_delay": inside([delay - 1.0, delay, delay + 0.75], hrf_model.min_hrf_delay, hrf_model.max_hrf_delay),
            "hrf_dispersion": inside([0.7 * dispersion, dispersion, 1.4 * dispersion], hrf_model.min_dispersion,
                                     hrf_model.max_dispersion)}


def _solver_settings(optimizer, fit_kwargs):
    solver = "lm" if optimizer in ("lm", "levenberg-marquardt") else "adam"
    settings = dict(SOLVER_DEFAULTS[solver])
    settings.update(fit_kwargs)
    return solver, settings


def _gate(grid_r2, min_grid_r2):
    """The voxels that enter the iterative stage: grid R² at least ``min_grid_r2`` (every fitted voxel at 0)."""
    threshold = float(min_grid_r2)
    if not np.isfinite(threshold):
        raise ValueError(f"min_grid_r2 must be a finite number, got {min_grid_r2}")
    values = np.asarray(grid_r2, dtype=np.float64)
    return np.isfinite(values) & (values >= threshold) if threshold > 0 else np.isfinite(values)


def _refine_where_needed(fitter, grid_parameters, confounds, positive_amplitude):
    """Least-squares baseline and amplitude at the grid's points. The correlation grid already solved them in
    closed form (the same regression on the same nuisance basis), with the amplitude clipped at 0 where the best
    correlation is negative: only those voxels are refitted (a whole-brain refit held float64 copies of every
    voxel's prediction, the largest allocation of a whole-brain fit)."""
    amplitude = grid_parameters["amplitude"].to_numpy()
    redo = np.flatnonzero(np.isfinite(amplitude) & (amplitude <= 0)) if not positive_amplitude else np.array([], int)
    if not redo.size:
        return grid_parameters
    sub = ParameterFitter(fitter.model, fitter.data.iloc[:, redo], fitter.paradigm, memory_limit=fitter.memory_limit)
    init = grid_parameters.copy()
    init.iloc[redo] = sub.refine_baseline_and_amplitude(grid_parameters.iloc[redo], confounds=confounds,
                                                        positive_amplitude=False).to_numpy()
    return init


def _grid_refine_iterate(model, data, paradigm, values, what, optimizer, confounds, fixed_pars, memory_limit,
                         progressbar, fit_kwargs, min_grid_r2):
    """grid (correlation) → least-squares baseline and amplitude → iterative (voxels with grid R² ≥
    ``min_grid_r2``), for ``values`` (label → list)."""
    fitter = ParameterFitter(model, data, paradigm, memory_limit=memory_limit)
    labels = model.get_parameter_labels()
    missing = [label for label in labels if label not in values]
    if missing:
        raise ValueError(f"{what} has no grid for {type(model).__name__}'s parameter(s) {missing}")
    timings = {}
    start = time.perf_counter()
    grid_parameters = fitter.fit_grid(*[values[label] for label in labels], use_correlation_cost=True,
                                      confounds=confounds, progressbar=progressbar)
    grid_r2 = fitter.grid_r2
    timings["grid"] = time.perf_counter() - start
    start = time.perf_counter()
    init = _refine_where_needed(fitter, grid_parameters, confounds, getattr(model, "positive_amplitude", False))
    timings["refine"] = time.perf_counter() - start
    solver, settings = _solver_settings(optimizer, fit_kwargs)
    iterate = _gate(grid_r2, min_grid_r2)
    start = time.perf_counter()
    parameters = fitter.fit(init_pars=init.fillna(0.0), optimizer=optimizer, confounds=confounds,
                            fixed_pars=fixed_pars, progressbar=progressbar, iterate=iterate, **settings)
    timings["iterative"] = time.perf_counter() - start
    logger.info("%s: grid %.1f s, refine %.1f s, %s %.1f s on %d of %d voxels (grid R² ≥ %g; %d iterations), "
                "median R² %.3f", what, timings["grid"], timings["refine"], solver, timings["iterative"],
                int(iterate.sum()), int(np.isfinite(grid_r2).sum()), min_grid_r2, fitter.n_iterations,
                float(np.nanmedian(fitter.r2)))
    return PRFFit(parameters=parameters, r2=fitter.r2, grid_parameters=grid_parameters, grid_r2=grid_r2,
                  n_iterations=fitter.n_iterations, converged=fitter.converged, timings=timings, fitter=fitter,
                  iterated=fitter.iterated, standard_errors=fitter.standard_errors, min_grid_r2=float(min_grid_r2))


def _hrf_values(model, hrf_grid):
    if not hasattr(model, "hrf_model"):
        return {}
    return default_hrf_grid(model.hrf_model) if hrf_grid is None else dict(hrf_grid)


@add_parameters(RECIPE_PARAMETERS)
def fit_prf2d(model, data, paradigm, grid=None, optimizer="lm", confounds=None, fixed_pars=None,
              memory_limit=None, progressbar=True, hrf_grid=None, min_grid_r2=MIN_GRID_R2, **fit_kwargs):
    """Fit a 2-D Gaussian pRF model (with or without HRF): grid → refine baseline/amplitude → iterative.

    Other 2-D models (CSS, DoG, DN): :func:`fit_prf2d_staged`.

    Parameters
    ----------
    model : GaussianPRF2D or GaussianPRF2DWithHRF
    grid : (xs, ys, sds), optional
        Grid values; :func:`default_prf_grid` when None. The grid ranks points by positive correlation.

    Returns
    -------
    PRFFit
    """
    xs, ys, sds = default_prf_grid(model) if grid is None else grid
    values = {"x": xs, "y": ys, "sd": sds, "baseline": None, "amplitude": None, **_hrf_values(model, hrf_grid)}
    labels = model.get_parameter_labels()
    if [label for label in labels if label not in values]:
        raise ValueError(f"fit_prf2d fits Gaussian 2-D pRFs; {type(model).__name__} also has "
                         f"{[label for label in labels if label not in values]} (use fit_prf2d_staged)")
    return _grid_refine_iterate(model, data, paradigm, values, "pRF fit", optimizer, confounds, fixed_pars,
                                memory_limit, progressbar, fit_kwargs, min_grid_r2)


# ---------------------------------------------------------------------------------------------- 1-D tuning
def _tuning_kind(model):
    """'gaussian', 'loggaussian' or 'vonmises' from the model's class."""
    for klass in type(model).__mro__:
        name = klass.__name__
        if name in ("GaussianPRF", "LogGaussianPRF", "VonMisesPRF"):
            return name[: -len("PRF")].lower()
    raise ValueError(f"{type(model).__name__} is not a 1-D tuning model (GaussianPRF, LogGaussianPRF, VonMisesPRF)")


def _stimulus_values(model, paradigm):
    values = getattr(model, "stimulus_values", None)
    if values is None:
        values = np.asarray(paradigm)[:, 0] if not hasattr(paradigm, "iloc") else paradigm.iloc[:, 0].to_numpy()
    values = np.unique(np.asarray(values, dtype=np.float64))
    return values[np.isfinite(values)]


def default_tuning_grid(model, paradigm=None, n_mu=25, n_width=10):
    """Grid of a 1-D tuning model: preferred value × width.

    - Gaussian: ``mu`` evenly over the stimulus range; ``sd`` log-spaced from a quarter of the smallest step
      between stimulus values (at least 1 % of the range) to the whole range.
    - log-Gaussian: the same in log units (over the positive stimulus values).
    - von Mises: ``mu`` evenly around the circle; ``kappa`` log-spaced from 0.25 (broad) to 30 (narrow).

    Parameters
    ----------
    model : GaussianPRF, LogGaussianPRF, VonMisesPRF or their ``WithHRF`` variants
    paradigm : DataFrame or array, optional
        Without ``model.stimulus_values``, its first column holds the stimulus values (not read for von Mises).
    n_mu, n_width : int

    Returns
    -------
    dict of label → ndarray
        ``mu`` and ``sd`` (``kappa`` for von Mises).
    """
    kind = _tuning_kind(model)
    if kind == "vonmises":
        return {"mu": np.linspace(-np.pi, np.pi, n_mu, endpoint=False), "kappa": np.geomspace(0.25, 30.0, n_width)}
    values = _stimulus_values(model, paradigm)
    if kind == "loggaussian":
        values = np.log(values[values > 0])
    if values.size < 2:
        raise ValueError("A tuning grid needs at least two distinct stimulus values")
    span = float(values.max() - values.min())
    step = float(np.min(np.diff(values)))
    low = max(step / 4.0, 0.01 * span)
    return {"mu": np.linspace(values.min(), values.max(), n_mu), "sd": np.geomspace(low, span, n_width)}


@add_parameters(RECIPE_PARAMETERS)
def fit_tuning1d(model, data, paradigm, grid=None, optimizer="lm", confounds=None, fixed_pars=None,
                 memory_limit=None, progressbar=True, hrf_grid=None, min_grid_r2=MIN_GRID_R2, **fit_kwargs):
    """Fit a 1-D tuning model (``GaussianPRF``, ``LogGaussianPRF``, ``VonMisesPRF`` or their ``WithHRF``
    variants): grid over preferred value × width (ranked by positive correlation) → least-squares baseline and
    amplitude → Levenberg–Marquardt.

    Parameters
    ----------
    model : GaussianPRF, LogGaussianPRF, VonMisesPRF or their ``WithHRF`` variants
    grid : dict, optional
        ``{'mu': [...], 'sd': [...]}`` (``'kappa'`` for von Mises); :func:`default_tuning_grid` when None.

    Returns
    -------
    PRFFit
    """
    values = default_tuning_grid(model, paradigm) if grid is None else dict(grid)
    values.update({"baseline": None, "amplitude": None, **_hrf_values(model, hrf_grid)})
    return _grid_refine_iterate(model, data, paradigm, values, "tuning fit", optimizer, confounds, fixed_pars,
                                memory_limit, progressbar, fit_kwargs, min_grid_r2)


# ---------------------------------------------------------------------------------------------- staged 2-D
def _family(model):
    names = [klass.__name__ for klass in type(model).__mro__]
    for family in ("CSSPRF2D", "DifferenceOfGaussiansPRF2D", "DivisiveNormalizationGaussianPRF2D", "GaussianPRF2D"):
        if family in names:
            return family
    raise ValueError(f"{type(model).__name__} is not a 2-D pRF model")


def default_extra_grid(model):
    """The small per-voxel grid of a staged fit's extra parameters (tried around each voxel's Gaussian solution).

    - CSS: ``n`` ∈ {0.1, 0.2, 0.3, 0.45, 0.65, 1.0}.
    - DoG: ``srf_amplitude`` ∈ {0.05, 0.15, 0.3, 0.5, 0.7} × ``srf_size`` ∈ {1.5, 2, 3, 5} (relative to sd).
    - DN: ``srf_amplitude`` ∈ {0.1, 0.5, 1, 3} × ``srf_size`` ∈ {1.5, 2.5, 4} × ``neural_baseline`` (per unit
      ``rf_amplitude``) ∈ {0, 0.5, 2}, with ``surround_baseline`` 1.

    Parameters
    ----------
    model : a 2-D pRF model

    Returns
    -------
    dict of label → list of float
        {} for the Gaussian.
    """
    family = _family(model)
    if family == "CSSPRF2D":
        return {"n": [0.1, 0.2, 0.3, 0.45, 0.65, 1.0]}
    if family == "DifferenceOfGaussiansPRF2D":
        return {"srf_amplitude": [0.05, 0.15, 0.3, 0.5, 0.7], "srf_size": [1.5, 2.0, 3.0, 5.0]}
    if family == "DivisiveNormalizationGaussianPRF2D":
        return {"srf_amplitude": [0.1, 0.5, 1.0, 3.0], "srf_size": [1.5, 2.5, 4.0], "neural_baseline": [0.0, 0.5, 2.0],
                "surround_baseline": [1.0]}
    return {}


def gaussian_counterpart(model):
    """The 2-D Gaussian model with the same pixels, HRF model and amplitude sign as ``model``."""
    from ..models import GaussianPRF2D, GaussianPRF2DWithHRF

    kwargs = {"positive_amplitude": getattr(model, "positive_amplitude", False)}
    if hasattr(model, "hrf_model"):
        return GaussianPRF2DWithHRF(model.grid_coordinates, hrf_model=model.hrf_model, **kwargs)
    return GaussianPRF2D(model.grid_coordinates, **kwargs)


def _unit_predictions(model, paradigm, parameters, segments, memory_limit):
    """model._predict in chunks of voxels (time × voxels, float64)."""
    from .._tensorflow import tf

    n_time, n_features = paradigm.shape
    per_voxel = 4 * (model._floats_per_voxel(n_time, n_features) + 3 * n_time) + 1
    size = max(1, int(memory_limit // per_voxel))
    out = np.empty((n_time, parameters.shape[0]))
    x = tf.constant(paradigm, tf.float32)
    for start in range(0, parameters.shape[0], size):
        chunk = slice(start, start + size)
        out[:, chunk] = model._predict(x, tf.constant(parameters[chunk], tf.float32), None,
                                       segments=segments).numpy()
    return out


def _seeded_grid(model, fitter, seed, extra, confounds, memory_limit):
    """Per voxel, the best combination of ``extra`` values with the other parameters at ``seed``; the linear
    scale (amplitude; rf_amplitude and neural_baseline jointly for DN) solved in closed form, non-negative where
    the model keeps it so. Returns (parameters, R² of the best combination)."""
    labels = model.get_parameter_labels()
    divisive = _family(model) == "DivisiveNormalizationGaussianPRF2D"
    scale_labels = ["rf_amplitude", "neural_baseline"] if divisive else ["amplitude"]
    positive = divisive or getattr(model, "positive_amplitude", False)
    data = fitter.data.to_numpy(dtype=np.float64)
    paradigm = fitter.paradigm.to_numpy()
    n_time = data.shape[0]
    constant = np.ones((n_time, 1))
    nuisance = confound_basis(constant if confounds is None else np.hstack([np.asarray(confounds), constant]),
                              n_time, fitter.segments)
    y = data - nuisance @ (nuisance.T @ data)
    sst = np.sum(y**2, axis=0)
    best_score = np.full(data.shape[1], -np.inf)
    best = seed.to_numpy(dtype=np.float32).copy()
    names = list(extra)
    for combination in itertools.product(*[extra[name] for name in names]):
        trial = seed.to_numpy(dtype=np.float32).copy()
        for name, value in zip(names, combination, strict=True):
            trial[:, labels.index(name)] = value
        if divisive:  # unit rf_amplitude; neural_baseline per unit rf_amplitude
            trial[:, labels.index("rf_amplitude")] = 1.0
        else:
            trial[:, labels.index("amplitude")] = 1.0
            trial[:, labels.index("baseline")] = 0.0
        p = _unit_predictions(model, paradigm, trial, fitter.segments, memory_limit)
        p = p - nuisance @ (nuisance.T @ p)
        pp = np.sum(p**2, axis=0)
        py = np.sum(p * y, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(pp > 0, py / pp, 0.0)
        if positive:
            scale = np.maximum(scale, 0.0)
        score = 2 * scale * py - scale**2 * pp  # SST − SSE
        better = score > best_score
        for label in scale_labels:
            trial[:, labels.index(label)] *= scale.astype(np.float32)
        best[better] = trial[better]
        best_score = np.where(better, score, best_score)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(sst > 0, best_score / np.where(sst > 0, sst, 1.0), np.nan)
    return pd.DataFrame(best, index=seed.index, columns=labels), pd.Series(r2.astype(np.float32), index=seed.index)


def _staged_gate(gaussian_fit, voxels, min_grid_r2):
    """The voxels a staged fit iterates: those its Gaussian stage iterated (its ``iterated``, or its grid R²
    gated at ``min_grid_r2``; every voxel for a Gaussian fit that records neither)."""
    iterated = getattr(gaussian_fit, "iterated", None)
    if iterated is None and getattr(gaussian_fit, "fitter", None) is not None:
        iterated = getattr(gaussian_fit.fitter, "iterated", None)
    if iterated is not None:
        return iterated.reindex(voxels).fillna(False).to_numpy(dtype=bool)
    grid_r2 = getattr(gaussian_fit, "grid_r2", None)
    if grid_r2 is not None:
        return _gate(grid_r2.reindex(voxels), min_grid_r2)
    return np.ones(len(voxels), dtype=bool)


@add_parameters(RECIPE_PARAMETERS)
def fit_prf2d_staged(model, data, paradigm, gaussian_fit=None, grid=None, extra_grid=None, optimizer="lm",
                     confounds=None, fixed_pars=None, memory_limit=None, progressbar=True, hrf_grid=None,
                     min_grid_r2=MIN_GRID_R2, **fit_kwargs):
    """Staged fit of any 2-D pRF model: Gaussian grid → Gaussian LM → the model seeded from it → LM.

    1. The Gaussian with the same pixels and HRF (:func:`gaussian_counterpart`) by :func:`fit_prf2d` (without
       ``fixed_pars``), unless ``gaussian_fit`` is given.
    2. Per voxel, position, size and HRF parameters from the Gaussian solution; the extra parameters on a small
       grid, each combination's linear scale in closed form; the combination that explains most of the variance
       wins. CSS and DoG then get least-squares baseline and amplitude.
    3. Levenberg–Marquardt (or ``optimizer``) over every parameter, for the voxels the Gaussian stage iterated
       (its grid R² at least ``min_grid_r2``); the others keep the seeded grid's estimate.

    For a Gaussian model this is :func:`fit_prf2d`. For the divisive-normalisation model, whose unstimulated
    level is ``neural_baseline / surround_baseline``, a constant joins the confounds (the BOLD level is projected
    out, as run means are, so the ratio only shapes the response) and ``surround_baseline`` is fixed at 1 (the
    model is otherwise unchanged by scaling its numerator and denominator together); a ``surround_baseline``
    given in ``extra_grid`` sets the value it is fixed at.

    Parameters
    ----------
    model : any 2-D pRF model (with or without HRF)
    gaussian_fit : PRFFit, optional
        A :func:`fit_prf2d` fit of the Gaussian counterpart to seed from (on the same voxels).
    grid : (xs, ys, sds), optional
        The Gaussian stage's grid (:func:`default_prf_grid` when None).
    extra_grid : dict of label → values, optional
        The extra parameters' grid; :func:`default_extra_grid` when None.

    Returns
    -------
    PRFFit
        ``grid_parameters``/``grid_r2`` are the seeded grid's, ``stages['gaussian']`` the Gaussian fit, and
        ``timings`` has both stages.
    """
    family = _family(model)
    if family == "GaussianPRF2D":
        return fit_prf2d(model, data, paradigm, grid=grid, optimizer=optimizer, confounds=confounds,
                         fixed_pars=fixed_pars, memory_limit=memory_limit, progressbar=progressbar,
                         hrf_grid=hrf_grid, min_grid_r2=min_grid_r2, **fit_kwargs)
    if gaussian_fit is None:
        gaussian_fit = fit_prf2d(gaussian_counterpart(model), data, paradigm, grid=grid, optimizer=optimizer,
                                 confounds=confounds, memory_limit=memory_limit, progressbar=progressbar,
                                 hrf_grid=hrf_grid, min_grid_r2=min_grid_r2, **fit_kwargs)
    extra = default_extra_grid(model) if extra_grid is None else dict(extra_grid)
    labels = model.get_parameter_labels()
    fixed = list(fixed_pars or [])
    if family == "DivisiveNormalizationGaussianPRF2D":
        constant = np.ones((np.asarray(data).shape[0], 1))
        confounds = constant if confounds is None else np.hstack([np.asarray(confounds, dtype=np.float64), constant])
        extra.setdefault("surround_baseline", [1.0])
        if "surround_baseline" not in fixed:
            fixed.append("surround_baseline")
    fitter = ParameterFitter(model, data, paradigm, memory_limit=memory_limit)
    seed = pd.DataFrame(0.0, index=fitter.data.columns, columns=labels, dtype=np.float32)
    gaussian = gaussian_fit.parameters.reindex(fitter.data.columns)
    for label in labels:
        if label in gaussian.columns:
            seed[label] = gaussian[label].fillna(1.0 if label == "sd" else 0.0).to_numpy()
    missing = [label for label in labels if label not in gaussian.columns and label not in extra
               and label not in ("rf_amplitude",)]
    if missing:
        raise ValueError(f"extra_grid lacks {missing} for {type(model).__name__}")
    timings = {f"gaussian_{key}": value for key, value in gaussian_fit.timings.items()}
    start = time.perf_counter()
    grid_parameters, grid_r2 = _seeded_grid(model, fitter, seed, extra, confounds, fitter.memory_limit)
    grid_parameters[~np.isfinite(gaussian.to_numpy()).all(axis=1)] = np.nan
    timings["seeded_grid"] = time.perf_counter() - start
    start = time.perf_counter()
    init = grid_parameters
    if "baseline" in labels:
        init = fitter.refine_baseline_and_amplitude(grid_parameters, confounds=confounds,
                                                    positive_amplitude=getattr(model, "positive_amplitude", False))
    timings["refine"] = time.perf_counter() - start
    solver, settings = _solver_settings(optimizer, fit_kwargs)
    iterate = _staged_gate(gaussian_fit, fitter.data.columns, min_grid_r2) & np.isfinite(
        grid_parameters.to_numpy()).all(axis=1)
    start = time.perf_counter()
    parameters = fitter.fit(init_pars=init.fillna(0.0), optimizer=optimizer, confounds=confounds,
                            fixed_pars=fixed or None, progressbar=progressbar, iterate=iterate, **settings)
    timings["iterative"] = time.perf_counter() - start
    logger.info("staged %s fit: Gaussian %.1f s, seeded grid %.1f s, %s %.1f s (%d iterations), median R² %.3f "
                "(Gaussian %.3f)", family, sum(gaussian_fit.timings.values()), timings["seeded_grid"], solver,
                timings["iterative"], fitter.n_iterations, float(np.nanmedian(fitter.r2)),
                float(np.nanmedian(gaussian_fit.r2)))
    return PRFFit(parameters=parameters, r2=fitter.r2, grid_parameters=grid_parameters, grid_r2=grid_r2,
                  n_iterations=fitter.n_iterations, converged=fitter.converged, timings=timings, fitter=fitter,
                  stages={"gaussian": gaussian_fit}, iterated=fitter.iterated,
                  standard_errors=fitter.standard_errors, min_grid_r2=float(min_grid_r2))

