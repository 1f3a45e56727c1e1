"""``--decode``: cross-validated decoding of the stimulus from single-trial responses, for the 1-D tuning models.

1. Single-trial betas (:func:`single_trial_betas`), per run: by default least squares all (LSA: every stimulus
   event its own SPM-convolved regressor in one GLM with the run's confounds — nuisance trial types and censored
   volumes included — and an intercept), or least-squares-separate GLMs (LSS,
   :func:`bids_encoder.decoding.lss_betas`: the event, the run's other stimulus events summed, the confounds).
   Neither uses the stimulus values; each run's betas depend on that run's BOLD only. LSA is the default because
   LSS's summed nuisance regressor absorbs part of the neighbouring trials' stimulus-dependent responses in fast
   designs (see the README's figures).
2. Leave one run out (:func:`decode_betas`): for every run, on the other runs' betas only,

   - choose the voxels: each voxel's cross-validated R² inside the training runs (leave one training run out;
     two contiguous halves of its trials when there is one training run), the tuning model (the
     :func:`~bids_encoder.optimize.recipes.fit_tuning1d` recipe, without HRF: betas are responses) fitted to all
     voxels on each inner training set; the ``n_voxels`` best with a cvR² > 0;
   - fit the tuning model to those voxels on all training runs, then the residual covariance Ω
     (:class:`~bids_encoder.decoding.ResidualFitter`, its W the tuning curves over the decoding grid) of their
     held-out residuals in the inner cross-validation (they carry the tuning fit's own error);
   - decode each held-out trial's beta pattern: the posterior over a grid spanning the stimulus values
     (:func:`~bids_encoder.decoding.stimulus_pdf`, log space; circular for von Mises) and its summaries.

3. Chance level: the same folds and voxels, the tuning model and Ω trained on the stimulus labels permuted
   within each run (fixed seed), scored against the true labels.

Stimulus values are in the events' natural units throughout (degrees for von Mises, period
``--stimulus-period``); the model's own units (radians) are used only inside the fits.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg

from ...bids.events import read_stimulus_events
from ...bids.layout import InputError
from ...decoding import ResidualFitter, lss_betas, posterior_summary, stimulus_pdf, trial_regressors
from ...decoding.metrics import accuracy
from ...optimize.recipes import default_tuning_grid, fit_tuning1d
from ..fits.kinds import MODEL_KINDS
from ..fits.results import lm_settings
from ..fits.tuning import TUNING_MODELS, model_values

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_VOXELS", "DecodingResult", "DecodingError", "decode_inputs", "decode_betas",
           "single_trial_betas", "decoding_grid"]

DEFAULT_VOXELS = 200  # --decode-voxels
GRID_POINTS = 100  # linear stimuli: points from the smallest to the largest value
CIRCULAR_GRID_POINTS = 120  # circular stimuli: points around the period
MIN_VOXELS = 5  # fewer voxels with cvR² > 0 than this: the best ones by cvR² anyway (with a warning)
MIN_TRIALS = 4  # per run
REACH = 0.01  # a trial whose regressor peaks below this fraction of the run's highest is outside the run
INTERVAL = 0.95
SHUFFLE_SEED = 0
_MODELS = {}  # (model name, positive amplitude) → the tuning model without HRF fitted to betas


class DecodingError(InputError):
    """Inputs that cannot be decoded (exit code 65)."""

    def __init__(self, message):
        super().__init__(message, exit_code=65)


@dataclass
class Trials:
    """The stimulus events, one row per trial: run number (1…), onset and duration (s), value (natural units)."""

    run: np.ndarray
    onset: np.ndarray
    duration: np.ndarray
    value: np.ndarray


@dataclass
class DecodingResult:
    """What :func:`decode_betas` returns (and the writers and report read)."""

    table: pd.DataFrame  # one row per trial: run, onset, true_value, posterior_*, interval_*, chance_posterior_mean
    posterior: np.ndarray  # (trials, grid) densities per natural unit
    grid: np.ndarray  # natural units
    folds: list  # per held-out run: voxels, inner cvR², Ω parameters
    circular: bool
    period: float | None
    units: str
    column: str
    settings: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)
    chance: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def decoding_grid(model_name, values, period=None):
    """The decoding grid in natural units: ``GRID_POINTS`` from the smallest to the largest stimulus value, or
    ``CIRCULAR_GRID_POINTS`` around the period for von Mises."""
    values = np.asarray(values, dtype=np.float64)
    if model_name == "vonmises1d":
        return np.arange(CIRCULAR_GRID_POINTS) * float(period) / CIRCULAR_GRID_POINTS
    return np.linspace(values.min(), values.max(), GRID_POINTS)


# ------------------------------------------------------------------------------------------ single-trial betas
def single_trial_betas(inputs, stimulus_column, condition_column="trial_type", method="lsa",
                       single_trial_stages=("hrf", "denoise", "ridge"), memory_limit=None):
    """Single-trial betas of every stimulus event of every run of ``inputs``; ``(betas, trials, voxels)``.

    ``method``: ``'lsa'`` (least squares all: every trial its own regressor in one GLM per run, with the
    confounds and an intercept; the same as :func:`~bids_encoder.decoding.lss_betas` with every trial its own
    nuisance group) or ``'lss'`` (least squares separate, :func:`~bids_encoder.decoding.lss_betas`: the run's
    other stimulus events summed into one nuisance regressor). Neither uses the stimulus values.
    ``'singletrial'``: GLMsingle's method over all runs at once
    (:func:`~bids_encoder.decoding.single_trial.estimator.fit_single_trials`, the stages in
    ``single_trial_stages``), *without* the stimulus values either: its choices (HRF, number of noise components,
    ridge fractions) use the held-out time series, never which trials repeat a value, so that no held-out label
    shapes the betas; each run's betas then depend on the other runs' BOLD through those choices (not on their
    labels).

    ``betas`` is (trials × usable voxels) float32, ``voxels`` the indices (into ``inputs.data``'s columns) of the
    voxels with signal (not constant). Trials whose response does not reach the run are left out.
    """
    data = inputs.data
    values = data.to_numpy()
    usable = np.flatnonzero(values.max(axis=0) > values.min(axis=0))
    if method == "singletrial":
        return _glmsingle_betas(inputs, values[:, usable], stimulus_column, condition_column, single_trial_stages,
                                memory_limit) + (usable,)
    run_of_row = data.index.get_level_values("run").to_numpy()
    blocks, parts = [], []
    for number, (run, n_volumes) in enumerate(zip(inputs.runs, inputs.n_volumes, strict=True), start=1):
        stimulus, _ = read_stimulus_events(run.events, n_volumes, run.tr, stimulus_column, condition_column,
                                           start_time=run.start_time)
        frame_times = run.start_time + np.arange(n_volumes) * inputs.tr
        regressors = trial_regressors(stimulus["onset"].to_numpy(), stimulus["duration"].to_numpy(), frame_times)
        peaks = regressors.to_numpy().max(axis=0)
        reach = peaks > REACH * peaks.max()
        if (~reach).any():
            logger.info("%s: %d stimulus event(s) whose response does not reach the run are not decoded",
                        run.label, int((~reach).sum()))
        if reach.sum() < MIN_TRIALS:
            raise DecodingError(f"--decode: {run.label} has {int(reach.sum())} stimulus event(s) inside the run; "
                                f"decoding needs at least {MIN_TRIALS} per run")
        rows = run_of_row == number
        confounds = inputs.confounds.to_numpy()[rows]
        confounds = confounds[:, np.any(confounds != 0, axis=0)]
        if method == "lsa":
            betas = _lsa_betas(regressors.loc[:, reach].to_numpy(), values[rows][:, usable], confounds)
        else:
            betas = lss_betas(regressors.loc[:, reach], values[rows][:, usable], confounds=confounds).to_numpy()
        blocks.append(betas.astype(np.float32))
        chosen = stimulus[reach]
        parts.append(Trials(np.full(len(chosen), number), chosen["onset"].to_numpy(float),
                            chosen["duration"].to_numpy(float), chosen["value"].to_numpy(float)))
    trials = Trials(*[np.concatenate([getattr(p, name) for p in parts]) for name in ("run", "onset", "duration",
                                                                                      "value")])
    return np.vstack(blocks), trials, usable


def _glmsingle_betas(inputs, values, stimulus_column, condition_column, stages, memory_limit):
    """``single_trial_betas(method='singletrial')``: all runs in one single-trial fit, without labels."""
    from ...decoding.single_trial.estimator import fit_single_trials

    frames, frame_times = [], []
    for number, (run, n_volumes) in enumerate(zip(inputs.runs, inputs.n_volumes, strict=True)):
        stimulus, _ = read_stimulus_events(run.events, n_volumes, run.tr, stimulus_column, condition_column,
                                           start_time=run.start_time)
        frames.append(stimulus.assign(run=number))
        frame_times.append(run.start_time + np.arange(n_volumes) * inputs.tr)
    events = pd.concat(frames, ignore_index=True)
    stages = set(stages)
    fit = fit_single_trials(values, frame_times, events[["run", "onset", "duration"]],
                            inputs.confounds.to_numpy(), hrf="library" if "hrf" in stages else "canonical",
                            denoise="denoise" in stages, ridge="ridge" in stages, memory_limit=memory_limit)
    estimated = fit.trials["estimated"].to_numpy()
    for number, run in enumerate(inputs.runs):
        inside = int(estimated[events["run"].to_numpy() == number].sum())
        if inside < MIN_TRIALS:
            raise DecodingError(f"--decode: {run.label} has {inside} stimulus event(s) inside the run; decoding "
                                f"needs at least {MIN_TRIALS} per run")
    if (~estimated).any():
        logger.info("%d stimulus event(s) whose response does not reach their run are not decoded",
                    int((~estimated).sum()))
    chosen = events[estimated]
    logger.info("--decode-betas singletrial: stages %s, %d noise component(s)", "+".join(fit.stages),
                fit.n_components)
    trials = Trials(chosen["run"].to_numpy() + 1, chosen["onset"].to_numpy(float), chosen["duration"].to_numpy(float),
                    chosen["value"].to_numpy(float))
    return np.nan_to_num(fit.betas[estimated]).astype(np.float32), trials


def _lsa_betas(regressors, data, confounds):
    """One GLM per run: trial regressors, confounds and an intercept (float64 least squares, rank-deficient
    confounds allowed); the trials' coefficients (trials × voxels)."""
    design = np.hstack([regressors, confounds, np.ones((len(regressors), 1))])
    coefficients = scipy.linalg.lstsq(design, data.astype(np.float64), lapack_driver="gelsy")[0]
    return coefficients[: regressors.shape[1]]


# ------------------------------------------------------------------------------------------ leave one run out
class _Fitter:
    """Tuning fits on betas: one model instance (its compiled solver reused), one grid, results cached by the
    training rows (an inner fit on the same trials serves every outer fold that needs it)."""

    def __init__(self, model_name, stimulus_values, period, positive_amplitude, max_iterations, memory_limit):
        self.model_name, self.period = model_name, period
        key = (model_name, bool(positive_amplitude))
        if key not in _MODELS:  # one instance per kind: the solver's compiled steps are kept per model instance
            _MODELS[key] = TUNING_MODELS[model_name][1](positive_amplitude=positive_amplitude)
        self.model = _MODELS[key]
        self.settings = lm_settings(max_iterations)
        self.memory_limit = memory_limit
        all_values = model_values(model_name, stimulus_values, period or 360.0)
        self.grid = default_tuning_grid(self.model, pd.DataFrame({"stimulus": np.unique(all_values)}))
        self.cache = {}
        self.n_fits = 0

    def paradigm(self, values):
        return pd.DataFrame({"stimulus": model_values(self.model_name, values, self.period or 360.0)
                             .astype(np.float32)})

    def fit(self, betas, values, voxels, key=None):
        """Parameters (voxels × labels; NaN for voxels not fitted) of the tuning model on these trials."""
        if key is not None and key in self.cache:
            return self.cache[key]
        data = pd.DataFrame(betas[:, voxels], columns=voxels)
        paradigm = self.paradigm(values)
        parameters = fit_tuning1d(self.model, data, paradigm, grid=self.grid, optimizer="lm",
                                  memory_limit=self.memory_limit, progressbar=False, **self.settings).parameters
        self.n_fits += 1
        if key is not None:
            self.cache[key] = parameters
        return parameters

    def predict(self, values, parameters):
        """(trials × voxels) predictions; NaN columns for voxels without finite parameters."""
        finite = np.isfinite(parameters.to_numpy()).all(axis=1)
        safe = parameters.where(np.repeat(finite[:, np.newaxis], parameters.shape[1], axis=1), 1.0)
        prediction = np.array(self.model.predict(self.paradigm(values), safe).to_numpy(np.float64))
        prediction[:, ~finite] = np.nan
        return prediction


def _inner_blocks(runs):
    """Held-out blocks (boolean masks over the training trials) of the inner cross-validation."""
    labels = list(dict.fromkeys(runs.tolist()))
    if len(labels) >= 2:
        return [runs == label for label in labels], "leave one training run out"
    position = np.arange(len(runs))
    return [position < len(runs) // 2, position >= len(runs) // 2], "two contiguous halves of the training run"


def _inner_cvr2(fitter, betas, values, runs, rows, voxels):
    """cvR² per voxel inside the training trials ``rows`` (indices into all trials), and the held-out residuals
    (training trials × voxels)."""
    blocks, scheme = _inner_blocks(runs[rows])
    sse, sst = np.zeros(len(voxels)), np.zeros(len(voxels))
    residuals = np.zeros((len(rows), len(voxels)))
    for test in blocks:
        train_rows, test_rows = rows[~test], rows[test]
        parameters = fitter.fit(betas[train_rows], values[train_rows], voxels, key=tuple(train_rows.tolist()))
        prediction = fitter.predict(values[test_rows], parameters)
        observed = betas[test_rows][:, voxels].astype(np.float64)
        residuals[test] = observed - prediction
        centred = observed - observed.mean(axis=0)  # the held-out block's own mean, from data and prediction
        error = centred - (prediction - prediction.mean(axis=0))
        sse += np.sum(error**2, axis=0)
        sst += np.sum(centred**2, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan), scheme, residuals


def _select(cvr2, n_voxels):
    """Indices (into cvr2) of the ``n_voxels`` best voxels with cvR² > 0 (at least MIN_VOXELS, by cvR²)."""
    finite = np.flatnonzero(np.isfinite(cvr2))
    order = finite[np.argsort(-cvr2[finite], kind="stable")]
    positive = order[cvr2[order] > 0]
    if positive.size >= min(MIN_VOXELS, n_voxels):
        return positive[:n_voxels], None
    chosen = order[:max(min(MIN_VOXELS, n_voxels), positive.size)]
    return chosen, (f"only {positive.size} voxel(s) with a cross-validated R² > 0 inside the training runs; "
                    f"decoding with the {chosen.size} best")


def _train_fold(fitter, betas, values, runs, rows, n_voxels, grid_model, voxels=None):
    """Voxel selection (unless ``voxels`` are given), tuning fit and Ω on the training trials ``rows``."""
    held_out = None
    if voxels is None:
        cvr2, scheme, held_out = _inner_cvr2(fitter, betas, values, runs, rows, np.arange(betas.shape[1]))
        chosen, warning = _select(cvr2, n_voxels)
        selection = {"cvr2": cvr2[chosen], "scheme": scheme, "warning": warning, "n_positive": int(np.sum(cvr2 > 0))}
    else:
        chosen, selection = np.asarray(voxels), {}
    if chosen.size < 2:
        raise DecodingError("--decode: fewer than two voxels could be fitted on the training runs")
    parameters = fitter.fit(betas[rows], values[rows], chosen)
    finite = np.isfinite(parameters.to_numpy()).all(axis=1)
    chosen, parameters = chosen[finite], parameters[finite]
    if "cvr2" in selection:
        selection["cvr2"] = selection["cvr2"][finite]
    paradigm = fitter.paradigm(values[rows])
    if held_out is None:
        train = betas[rows][:, chosen]
    else:  # Ω of the held-out residuals of the inner cross-validation: they carry the tuning fit's own error
        train = fitter.predict(values[rows], parameters) + held_out[:, chosen]
    train = pd.DataFrame(train.astype(np.float32), columns=parameters.index)
    residuals = ResidualFitter(fitter.model, train, paradigm, parameters=parameters, stimulus_range=grid_model)
    omega = residuals.fit(method="gauss")
    return {"voxels": chosen, **selection, "parameters": parameters, "omega": omega, "rho": float(residuals.rho),
            "sigma2": float(residuals.sigma2), "tau": residuals.tau.to_numpy(), "converged": bool(residuals.converged)}


def _posterior(fitter, fold, test_betas, grid_natural, grid_model, circular, period):
    """Log posterior densities per natural unit (trials × grid) and their summary, in natural units."""
    log_pdf = stimulus_pdf(fitter.model, test_betas[:, fold["voxels"]], grid_model, omega=fold["omega"],
                           parameters=fold["parameters"], log=True).to_numpy(np.float64)
    if circular:  # per radian → per degree
        log_pdf = log_pdf + np.log(2 * np.pi / period)
    frame = pd.DataFrame(log_pdf, columns=pd.Index(grid_natural, name="stimulus"))
    frame.attrs.update(circular=bool(circular), period=float(period or 2 * np.pi), log=True)
    return log_pdf, posterior_summary(frame, interval=INTERVAL)


def decode_betas(betas, trials, model_name, n_voxels=DEFAULT_VOXELS, period=None, positive_amplitude=False,
                 max_iterations=None, memory_limit=2_000_000_000, shuffle=False, seed=SHUFFLE_SEED,
                 stimulus_values=None, voxels=None):
    """Leave-one-run-out decoding of single-trial betas (see the module docstring).

    Parameters
    ----------
    betas : array, shape (trials, voxels)
    trials : Trials
        Run (1…), onset, duration and true value (natural units) of every row of ``betas``.
    model_name : 'gauss1d', 'loggauss1d' or 'vonmises1d'
    n_voxels : int
        Voxels used per fold (the best by their cvR² inside the training runs).
    period : float
        von Mises: the period of the stimulus values (degrees).
    shuffle : bool
        Train on labels permuted within each run (``seed``): the chance level.
    stimulus_values : array, optional
        Every stimulus value of the design (default: those of ``trials``); they set the grids.
    voxels : list of arrays, optional
        The voxels of each fold (in the order of the runs) instead of choosing them (the chance level reuses the
        selection made with the true training labels).

    Returns
    -------
    dict with ``folds`` (the trained models), ``log_pdf`` (trials × grid), ``summary`` (DataFrame), ``grid``,
    ``n_fits``.
    """
    if model_name not in TUNING_MODELS:
        raise ValueError(f"--decode decodes the 1-D tuning models ({', '.join(TUNING_MODELS)}), not {model_name!r}")
    runs = np.asarray(trials.run)
    labels = list(dict.fromkeys(runs.tolist()))
    if len(labels) < 2:
        raise DecodingError("--decode needs at least two runs (each is decoded by a model trained on the others), "
                            f"found {len(labels)}")
    values = np.asarray(trials.value, dtype=np.float64)
    if shuffle:
        rng = np.random.default_rng(seed)
        values = values.copy()
        for label in labels:
            rows = np.flatnonzero(runs == label)
            values[rows] = values[rng.permutation(rows)]
    design_values = np.unique(trials.value if stimulus_values is None else stimulus_values)
    if design_values.size < 2:
        raise DecodingError("--decode needs at least two distinct stimulus values")
    circular = model_name == "vonmises1d"
    grid_natural = decoding_grid(model_name, design_values, period)
    grid_model = model_values(model_name, grid_natural, period or 360.0)
    fitter = _Fitter(model_name, design_values, period, positive_amplitude, max_iterations, memory_limit)
    log_pdf = np.zeros((len(runs), grid_natural.size))
    summaries, folds = [None] * len(labels), []
    for index, label in enumerate(labels):
        test = runs == label
        fold = _train_fold(fitter, betas, values, runs, np.flatnonzero(~test), n_voxels, grid_model,
                           None if voxels is None else voxels[index])
        fold["held_out"] = label
        log_pdf[test], summary = _posterior(fitter, fold, betas[test], grid_natural, grid_model, circular, period)
        summaries[index] = summary.set_index(np.flatnonzero(test))
        folds.append(fold)
        logger.info("decoding fold %d/%d (run %s held out%s): %d voxels, rho %.3f, sigma2 %.3g", index + 1,
                    len(labels), label, ", shuffled labels" if shuffle else "", fold["voxels"].size, fold["rho"],
                    fold["sigma2"])
    summary = pd.concat(summaries).sort_index()
    return {"folds": folds, "log_pdf": log_pdf, "summary": summary, "grid": grid_natural, "n_fits": fitter.n_fits}


# ------------------------------------------------------------------------------------------ the participant step
def decode_inputs(inputs, model_name, n_voxels=DEFAULT_VOXELS, period=None, condition_column="trial_type",
                  positive_amplitude=False, max_iterations=None, memory_limit=2_000_000_000, seed=None,
                  betas="lsa", single_trial_stages=("hrf", "denoise", "ridge")):
    """``--decode`` on the inputs of one fit: betas, leave-one-run-out decoding and its chance level."""
    if MODEL_KINDS.get(model_name) != "tuning":
        raise InputError(f"--decode decodes the 1-D tuning models (gauss1d, loggauss1d, vonmises1d), not "
                         f"--model {model_name}", exit_code=64)
    if len(inputs.runs) < 2:
        raise DecodingError(f"--decode needs at least two runs (each is decoded by a model trained on the others); "
                            f"{inputs.runs[0].label} is the only one")
    timings = {}
    start = time.perf_counter()
    method = betas
    betas, trials, usable = single_trial_betas(inputs, inputs.stimulus_column, condition_column, method,
                                               single_trial_stages, memory_limit)
    timings["betas"] = time.perf_counter() - start
    options = {"n_voxels": n_voxels, "period": period, "positive_amplitude": positive_amplitude,
               "max_iterations": max_iterations, "memory_limit": memory_limit,
               "stimulus_values": inputs.stimulus_values}
    tensorflow_logger = logging.getLogger("tensorflow")
    level = tensorflow_logger.level
    tensorflow_logger.setLevel(logging.ERROR)  # its retracing notices: every fold has its own number of trials
    try:
        start = time.perf_counter()
        decoded = decode_betas(betas, trials, model_name, **options)
        timings["decode"] = time.perf_counter() - start
        start = time.perf_counter()
        chance = decode_betas(betas, trials, model_name, shuffle=True, seed=SHUFFLE_SEED if seed is None else seed,
                              voxels=[fold["voxels"] for fold in decoded["folds"]], **options)
        timings["chance"] = time.perf_counter() - start
    finally:
        tensorflow_logger.setLevel(level)
    circular = model_name == "vonmises1d"
    summary = decoded["summary"]
    run_labels = np.array([inputs.runs[r - 1].run for r in trials.run], dtype=object)
    table = pd.DataFrame({
        "run": [label if label is not None else "n/a" for label in run_labels], "onset": trials.onset,
        "true_value": trials.value, "posterior_mean": summary["mean"].to_numpy(),
        "posterior_mode": summary["mode"].to_numpy(), "posterior_sd": summary["sd"].to_numpy(),
        "interval_lower": summary["lower"].to_numpy(), "interval_upper": summary["upper"].to_numpy(),
        "chance_posterior_mean": chance["summary"]["mean"].to_numpy()})
    column = inputs.stimulus_column
    units = f"degrees ({column}, period {period:g})" if circular else f"units of the events' {column} column"
    folds = []
    for fold, shuffled in zip(decoded["folds"], chance["folds"], strict=True):
        label = inputs.runs[fold["held_out"] - 1].run
        folds.append({
            "HeldOutRun": label if label is not None else fold["held_out"],
            "TrainingTrials": int(np.sum(trials.run != fold["held_out"])),
            "HeldOutTrials": int(np.sum(trials.run == fold["held_out"])),
            "VoxelSelection": fold["scheme"], "VoxelsWithPositiveCVRSquared": fold["n_positive"],
            "NumberOfVoxels": int(fold["voxels"].size),
            "VoxelIndices": [int(v) for v in usable[fold["voxels"]]],
            "MedianCVRSquaredOfVoxels": float(np.median(fold["cvr2"])),
            "Omega": {"rho": fold["rho"], "sigma2": fold["sigma2"], "tau_median": float(np.median(fold["tau"])),
                      "tau_min": float(np.min(fold["tau"])), "tau_max": float(np.max(fold["tau"])),
                      "Converged": fold["converged"]},
            "ChanceOmega": {"rho": shuffled["rho"], "sigma2": shuffled["sigma2"]},
            **({"Warning": fold["warning"]} if fold["warning"] else {})})
        if fold["warning"]:
            logger.warning("--decode, run %s held out: %s", folds[-1]["HeldOutRun"], fold["warning"])
    result = DecodingResult(table=table, posterior=np.exp(decoded["log_pdf"]), grid=decoded["grid"], folds=folds,
                            circular=circular, period=period if circular else None, units=units, column=column,
                            timings=timings)
    result.accuracy = accuracy(table["true_value"], table["posterior_mean"], table["posterior_sd"],
                               table["interval_lower"], table["interval_upper"], circular, period)
    result.chance = accuracy(table["true_value"], table["chance_posterior_mean"], None, None, None, circular, period)
    result.settings = {"VoxelsRequested": int(n_voxels), "Fits": decoded["n_fits"] + chance["n_fits"],
                       "ShuffleSeed": SHUFFLE_SEED if seed is None else seed}
    logger.info("--decode %s: %d trials, r %.3f (chance %.3f), mean absolute error %.3g, coverage %.3f (%s)",
                model_name, len(table), result.accuracy["Correlation"], result.chance["Correlation"],
                result.accuracy["MeanAbsoluteError"], result.accuracy["Coverage"],
                ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return result
