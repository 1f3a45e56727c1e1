"""The runs of one fit → aligned arrays: data, paradigm, confounds (per run, block-diagonal) and scrubbing.

Runs are fitted jointly but never blindly concatenated: the time index is a (run, volume) MultiIndex, so the HRF
never leaks across runs and every run gets its own intercept; each run's confounds fill their own columns, zero
elsewhere; every censored volume (nilearn's sample mask: scrubbing, non-steady-state volumes) gets a spike column,
which in least squares is exactly the same as deleting it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .confounds import load_run_confounds
from .derivatives import bids_label
from .events import (
    check_event_timing,
    convolved_design,
    occupancy_paradigm,
    read_events,
    read_stimulus_events,
)
from .images import load_bold_runs
from .layout import InputError
from .stimuli import run_apertures

logger = logging.getLogger(__name__)

__all__ = ["FitInputs", "assemble_inputs", "check_degrees_of_freedom", "nuisance_regressors"]


@dataclass
class FitInputs:
    """Everything one fit needs, aligned on a (run, volume) index."""

    runs: list
    data: pd.DataFrame  # (time, voxels) float32
    writer: object  # MapWriter
    tr: float
    paradigm: pd.DataFrame  # GLM regressors, or pRF apertures (time × pixels)
    confounds: pd.DataFrame  # (time × k), block-diagonal per run, plus spike columns
    grid: pd.DataFrame | None = None  # pRF pixel coordinates
    n_censored: int = 0
    confounds_per_run: list = field(default_factory=list)
    stimulus_files: list = field(default_factory=list)
    # GLM: the exact SPM-convolved design (16× oversampled events); the paradigm itself with the canonical HRF,
    # a second design beside the TR-occupancy paradigm with --hrf auto (which also fits the canonical model)
    convolved: pd.DataFrame | None = None
    # 1-D tuning models: the stimulus value (natural units) of each paradigm column
    stimulus_values: np.ndarray | None = None
    stimulus_column: str | None = None
    signal_mean: np.ndarray | None = None  # GLM: each voxel's mean BOLD before signal scaling (report background)
    # 1-D tuning models with --nuisance-trial-type: run label → (events of those trial types, volumes, TR, start
    # time), to convolve them again with another HRF (nuisance_regressors)
    nuisance_events: dict | None = None

    @property
    def n_volumes(self):
        return [int((self.data.index.get_level_values("run") == i + 1).sum()) for i in range(len(self.runs))]


def _common_tr(runs):
    trs = sorted({round(run.tr, 6) for run in runs})
    if len(trs) > 1:
        raise InputError(f"Runs of sub-{runs[0].subject} task-{runs[0].task} have different TRs {trs}; fit them "
                         "separately (--run or --bids-filter-file)", exit_code=65)
    return runs[0].tr


def _events_frame(run, n_volumes, condition_column="trial_type"):
    if run.events is None:
        raise InputError(f"No events.tsv for {run.label}", exit_code=66)
    return read_events(run.events, n_volumes, run.tr, condition_column=condition_column,
                       modulation_column="modulation", modulation_optional=True, start_time=run.start_time)


def _glm_paradigm(runs, n_volumes, hrf, condition_column="trial_type"):
    """Per run: exact convolved regressors (canonical HRF) or the occupancy paradigm (HRF fitted later)."""
    events = [_events_frame(run, n, condition_column) for run, n in zip(runs, n_volumes, strict=True)]
    conditions = sorted(set().union(*[set(e["condition"]) for e in events]))
    frames = []
    for run, n, run_events in zip(runs, n_volumes, events, strict=True):
        # slice-time correction: volume k is the brain at StartTime + k·TR
        if hrf == "canonical":
            frame = convolved_design(run_events, n, run.tr, start_time=run.start_time, conditions=conditions)
        else:
            frame = occupancy_paradigm(run_events, n, run.tr, start_time=run.start_time, conditions=conditions,
                                       name=run.events.name)
        frames.append(frame.to_numpy())
    return np.vstack(frames), conditions


def _design_paradigm(runs, n_volumes, hrf, design):
    """The regressors of a BIDS Stats Models run design (:class:`~bids_encoder.bids.stats_models.RunDesign`): its
    event regressors convolved here (``hrf`` as for events.tsv conditions), then the ones pybids sampled at the TR."""
    frames = []
    for run, n, events, dense in zip(runs, n_volumes, design.events, design.dense, strict=True):
        parts = []
        if design.event_columns:
            if len(events):
                check_event_timing(run.label, events["onset"], events["duration"], n, run.tr, run.start_time)
            build = convolved_design if hrf == "canonical" else occupancy_paradigm
            extra = {} if hrf == "canonical" else {"name": run.label}
            parts.append(build(events, n, run.tr, start_time=run.start_time, conditions=design.event_columns,
                               **extra).to_numpy())
        if design.dense_columns:
            parts.append(np.asarray(dense, float))
        frames.append(np.hstack(parts))
    return np.vstack(frames), [str(c) for c in design.columns]


def _prf_paradigm(runs, n_volumes, stimuli_dir):
    frames, grid, files = [], None, []
    for run, n in zip(runs, n_volumes, strict=True):
        if run.events is None:
            raise InputError(f"No events.tsv (with stim_file) for {run.label}", exit_code=66)
        apertures, run_grid, used = run_apertures(run.events, stimuli_dir, n, run.tr, start_time=run.start_time)
        files += [path for path in used if path not in files]
        if grid is not None and (run_grid.shape != grid.shape or not np.allclose(run_grid, grid)):
            raise InputError(f"The stimuli of {run.label} are on another pixel grid than the first run", exit_code=65)
        grid = run_grid
        frames.append(apertures.to_numpy())
    return np.vstack(frames), grid, files


def _tuning_paradigm(runs, n_volumes, stimulus_column, condition_column, nuisance_trial_types):
    """Per-value occupancy (time × distinct stimulus values, at TR resolution) and the nuisance regressors.

    Column k holds, for each volume, the time the events with the k-th distinct value of ``stimulus_column``
    were on during the TR centred on it; the tuning model weighs it by its tuning curve at that value and
    convolves. Events without a value whose ``condition_column`` is in ``nuisance_trial_types`` become one
    regressor per trial type (events convolved with the SPM HRF, exact timing), joined to the confounds; other
    events are ignored.
    """
    per_run = []
    for run, n in zip(runs, n_volumes, strict=True):
        if run.events is None:
            raise InputError(f"No events.tsv for {run.label}", exit_code=66)
        per_run.append(read_stimulus_events(run.events, n, run.tr, stimulus_column, condition_column,
                                            start_time=run.start_time))
    values = np.unique(np.concatenate([stimulus["value"].to_numpy() for stimulus, _ in per_run]))
    labels = [f"v{i:05d}" for i in range(values.size)]
    nuisance = [bids_label(name) for name in nuisance_trial_types]
    found = set().union(*[set(others["condition"]) for _, others in per_run])
    absent = [name for name in nuisance if name not in found]
    if absent:
        raise InputError(f"--nuisance-trial-type {', '.join(absent)}: no event without a {stimulus_column} value "
                         f"has that {condition_column} (found: {', '.join(sorted(found)) or 'none'})", exit_code=65)
    frames, nuisance_frames, nuisance_events = [], [], {}
    for number, (run, n, (stimulus, others)) in enumerate(zip(runs, n_volumes, per_run, strict=True), start=1):
        events = pd.DataFrame({"onset": stimulus["onset"], "duration": stimulus["duration"],
                               "condition": [labels[i] for i in np.searchsorted(values, stimulus["value"])],
                               "modulation": 1.0})
        frames.append(occupancy_paradigm(events, n, run.tr, start_time=run.start_time, conditions=labels,
                                         name=run.events.name).to_numpy())
        if nuisance:
            nuisance_frames.append(convolved_design(others, n, run.tr, start_time=run.start_time,
                                                    conditions=nuisance).to_numpy())
            nuisance_events[number] = (others[others["condition"].isin(nuisance)], n, run.tr, run.start_time)
    extra = None
    if nuisance:
        extra = pd.DataFrame(np.vstack(nuisance_frames), columns=[f"nuisance_{name}" for name in nuisance])
    return np.vstack(frames), values, extra, (nuisance_events or None)


#: finite-difference steps of the nuisance regressors' HRF derivatives: delay (s) and dispersion
DERIVATIVE_STEPS = {"a1": 0.5, "d1": 0.1}


def nuisance_regressors(inputs, hrf=None, derivatives=False):
    """The ``--nuisance-trial-type`` regressors of ``inputs`` (rows of ``inputs.data``), convolved with the SPM
    HRF of shape ``hrf`` (a dict of :func:`bids_encoder.hrf.spm_hrf` arguments; None: canonical).

    ``derivatives``: also each regressor's derivatives with respect to the HRF's delay (``…_ddelay``, per s) and
    dispersion (``…_ddispersion``), by central differences (steps :data:`DERIVATIVE_STEPS`): fitted with the
    confounds, they let each voxel's nuisance response shift and widen (a first-order expansion of a per-voxel
    HRF around ``hrf``). Returns None when the inputs have no nuisance regressors.
    """
    if not inputs.nuisance_events:
        return None
    shape = {"a1": 6.0, "d1": 1.0, "a2": 16.0, "d2": 1.0, "c": 0.167, **(hrf or {})}
    columns = [c for c in inputs.confounds.columns if str(c).startswith("nuisance_")]
    conditions = [c[len("nuisance_"):] for c in columns]
    variants = [("", shape)]
    if derivatives:
        for key, label in (("a1", "ddelay"), ("d1", "ddispersion")):
            step = DERIVATIVE_STEPS[key]
            variants.append((f"_{label}", ({**shape, key: shape[key] + step}, {**shape, key: shape[key] - step},
                                           2 * step)))
    runs = inputs.data.index.get_level_values("run").to_numpy()
    volumes = inputs.data.index.get_level_values("volume").to_numpy()
    out = {}
    for suffix, variant in variants:
        values = np.zeros((len(runs), len(conditions)))
        for run, (events, n, tr, start) in inputs.nuisance_events.items():
            rows = runs == run
            if not rows.any():
                continue
            if suffix:
                plus, minus, width = variant
                design = (convolved_design(events, n, tr, start_time=start, conditions=conditions, hrf=plus).to_numpy()
                          - convolved_design(events, n, tr, start_time=start, conditions=conditions,
                                             hrf=minus).to_numpy()) / width
            else:
                design = convolved_design(events, n, tr, start_time=start, conditions=conditions,
                                          hrf=variant).to_numpy()
            values[rows] = design[volumes[rows]]
        for k, column in enumerate(columns):
            out[f"{column}{suffix}"] = values[:, k]
    return pd.DataFrame(out, index=inputs.data.index)


def _confounds(runs, n_volumes, strategy, parameters):
    """Block-diagonal confounds with spike columns for censored volumes."""
    blocks, names, censored, per_run = [], [], 0, []
    total = sum(n_volumes)
    start = 0
    for index, (run, n) in enumerate(zip(runs, n_volumes, strict=True)):
        if strategy:
            if run.confounds is None:
                raise InputError(f"No fMRIPrep confounds file for {run.label} (needed by --confounds "
                                 f"{','.join(strategy)})", exit_code=66)
            frame, sample_mask = load_run_confounds(run.confounds, strategy, n, **parameters)
        else:
            frame, sample_mask = None, None
        if frame is not None and frame.shape[1]:
            block = np.zeros((total, frame.shape[1]))
            block[start : start + n] = frame.to_numpy()
            blocks.append(block)
            names += [f"{column}_run{index + 1}" for column in frame.columns]
        dropped = np.setdiff1d(np.arange(n), sample_mask) if sample_mask is not None else np.array([], int)
        for volume in dropped:
            spike = np.zeros((total, 1))
            spike[start + volume] = 1.0
            blocks.append(spike)
            names.append(f"censored_run{index + 1}_vol{int(volume):04d}")
        censored += len(dropped)
        per_run.append({"run": run.run, "confounds": 0 if frame is None else int(frame.shape[1]),
                        "censored": int(len(dropped))})
        start += n
    values = np.hstack(blocks) if blocks else np.zeros((total, 0))
    return pd.DataFrame(values, columns=names), censored, per_run


def _drop_voxels_without_signal(voxels_by_time, runs, n_volumes):
    """Make voxels that are constant in any run (no signal there: outside that run's coverage, or NaN samples
    zeroed on reading) constant in all runs, so that they are not fitted; a run constant everywhere is an error."""
    without = np.zeros(len(voxels_by_time), dtype=bool)
    low, high = None, None  # over all runs, from the per-run extremes: one pass over the data
    start = 0
    for run, n in zip(runs, n_volumes, strict=True):
        block = voxels_by_time[:, start : start + n]
        run_low, run_high = block.min(axis=1), block.max(axis=1)
        constant = run_low == run_high
        if constant.all():
            raise InputError(f"The BOLD of {run.label} is constant in every voxel or vertex (inside the mask): "
                             "nothing to fit", exit_code=65)
        without |= constant
        low = run_low if low is None else np.minimum(low, run_low)
        high = run_high if high is None else np.maximum(high, run_high)
        start += n
    partly = without & (low < high)
    if partly.any():
        logger.warning("%d voxel(s) or vertices without signal in some run(s) are not fitted", int(partly.sum()))
        voxels_by_time[partly] = 0.0


def check_degrees_of_freedom(n_volumes, n_regressors, n_confounds, n_runs):
    """A least-squares fit needs more volumes than columns: regressors, confounds (censored volumes' spikes
    included) and one intercept per run."""
    if n_volumes - n_regressors - n_confounds - n_runs < 1:
        raise InputError(f"{n_volumes} volumes cannot support {n_regressors} regressors, {n_confounds} confounds "
                         f"(censored volumes included) and {n_runs} run intercept(s)", exit_code=65)


def assemble_inputs(runs, model, hrf="canonical", strategy=(), confound_parameters=None, smoothing_fwhm=None,
                    stimuli_dir=None, kind="volume", condition_column="trial_type", stimulus_column=None,
                    nuisance_trial_types=(), design=None):
    """Load the BOLD of ``runs`` and build the paradigm and confounds of ``model``: 'glm', 'prf2d' (the stimulus
    apertures of any 2-D pRF model) or 'tuning' (1-D tuning models: per-value event occupancy from
    ``stimulus_column``, and ``nuisance_trial_types`` as nuisance regressors); ``condition_column``: the
    events.tsv column naming the GLM's conditions (and the nuisance trial types); ``design``: a BIDS Stats Models
    run design, whose regressors replace the events.tsv conditions of the GLM."""
    tr = _common_tr(runs)
    voxels_by_time, n_volumes, writer = load_bold_runs(runs, kind, smoothing_fwhm=smoothing_fwhm)
    _drop_voxels_without_signal(voxels_by_time, runs, n_volumes)
    index = pd.MultiIndex.from_arrays(
        [np.repeat(np.arange(1, len(runs) + 1), n_volumes), np.concatenate([np.arange(n) for n in n_volumes])],
        names=["run", "volume"])
    # no copy: the frame's single block is the (voxels × time) array
    data = pd.DataFrame(voxels_by_time.T, index=index, copy=False)
    grid, stimulus_files, stimulus_values, nuisance, nuisance_events = None, [], None, None, None
    if model == "glm" and design is not None:
        values, columns = _design_paradigm(runs, n_volumes, hrf, design)
    elif model == "glm":
        values, columns = _glm_paradigm(runs, n_volumes, hrf, condition_column)
    elif model == "prf2d":
        values, grid, stimulus_files = _prf_paradigm(runs, n_volumes, stimuli_dir)
        columns = None
    elif model == "tuning":
        if not stimulus_column:
            raise InputError("The 1-D tuning models need --stimulus-column (the events.tsv column with each "
                             "event's stimulus value)", exit_code=64)
        values, stimulus_values, nuisance, nuisance_events = _tuning_paradigm(
            runs, n_volumes, stimulus_column, condition_column, nuisance_trial_types)
        columns = [f"{stimulus_column}-{value:g}" for value in stimulus_values]
    else:
        raise InputError(f"Unknown model {model!r}", exit_code=64)
    paradigm = pd.DataFrame(values.astype(np.float32), index=index, columns=columns)
    convolved = None
    if model == "glm" and hrf == "canonical":
        convolved = paradigm
    elif model == "glm" and hrf == "auto":
        exact, _ = (_glm_paradigm(runs, n_volumes, "canonical", condition_column) if design is None else
                    _design_paradigm(runs, n_volumes, "canonical", design))
        convolved = pd.DataFrame(exact.astype(np.float32), index=index, columns=columns)
    confounds, censored, per_run = _confounds(runs, n_volumes, strategy, confound_parameters or {})
    if nuisance is not None:
        confounds = pd.concat([nuisance, confounds], axis=1)
    confounds.index = index
    if model == "glm":
        check_degrees_of_freedom(len(data), paradigm.shape[1], confounds.shape[1], len(runs))
    return FitInputs(runs=runs, data=data, writer=writer, tr=tr, paradigm=paradigm, confounds=confounds,
                     grid=grid, n_censored=censored, confounds_per_run=per_run, stimulus_files=stimulus_files,
                     convolved=convolved, stimulus_values=stimulus_values, stimulus_column=stimulus_column,
                     nuisance_events=nuisance_events)
