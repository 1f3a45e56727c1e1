"""The trials of a single-trial fit, read from each run's events.tsv.

A trial is an event with a value in ``--condition-column`` (``trial_type`` by default; ``n/a`` rows, such as rest
periods, are not trials), or — with ``--single-trial-types`` — an event of one of those types; the other events
with a condition become nuisance regressors: one per condition, convolved with the SPM HRF and its derivatives
with respect to delay and dispersion (so that each voxel's own HRF can shape them: a first-order expansion,
fitted with the confounds). What repeats is the value of ``--repeat-column`` (default: the condition column).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ...bids.derivatives import bids_label
from ...bids.events import convolved_design, event_times
from ...bids.inputs import DERIVATIVE_STEPS
from ...bids.layout import InputError

logger = logging.getLogger(__name__)

__all__ = ["read_trials"]


def _read(path):
    try:
        return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=True)
    except pd.errors.EmptyDataError as error:
        raise InputError(f"{path.name} is empty", exit_code=65) from error


def read_trials(inputs, condition_column="trial_type", single_trial_types=(), repeat_column=None):
    """The trials of ``inputs`` (one fit's runs, read by :func:`~bids_encoder.bids.inputs.assemble_inputs`).

    Returns
    -------
    table : DataFrame
        One row per trial, in run order then the events' order: the run's label (``run``) and every column of the
        events file as written there.
    trials : DataFrame
        The same trials for the estimator: ``run`` (position, 0…), ``onset``, ``duration`` (n/a: 0) and
        ``repeat`` (the value of ``repeat_column``; NaN: nothing).
    frame_times : list of arrays
        Each run's volume times ``StartTime + k · TR``.
    nuisance : DataFrame or None
        (time × regressors) of the events that are not trials, on the rows of ``inputs.data``.
    """
    repeat_column = repeat_column or condition_column
    wanted = {bids_label(t) for t in single_trial_types}
    rows, tables, nuisance_parts, frame_times, found = [], [], [], [], set()
    for number, (run, n_volumes) in enumerate(zip(inputs.runs, inputs.n_volumes, strict=True)):
        events = _read(run.events)
        name = run.events.name
        if repeat_column not in events.columns:
            raise InputError(f"{name} has no {repeat_column!r} column (--repeat-column; its columns: "
                             f"{', '.join(map(str, events.columns))})", exit_code=65)
        events = events[events[condition_column].notna()].reset_index(drop=True)
        onset, duration = event_times(name, events)
        labels = np.array([bids_label(c) for c in events[condition_column].astype(str)])
        found |= set(labels)
        is_trial = np.isin(labels, list(wanted)) if wanted else np.ones(len(events), bool)
        times = run.start_time + np.arange(n_volumes) * inputs.tr
        frame_times.append(times)
        table = events[is_trial].drop(columns=[c for c in ("run",) if c in events.columns]).copy()
        table.insert(0, "run", run.run if run.run is not None else "n/a")
        tables.append(table)
        rows.append(pd.DataFrame({"run": number, "onset": onset[is_trial], "duration": duration[is_trial],
                                  "repeat": events.loc[is_trial, repeat_column].to_numpy()}))
        others = events[~is_trial]
        if len(others):
            nuisance_parts.append((number, pd.DataFrame({"onset": onset[~is_trial], "duration": duration[~is_trial],
                                                         "condition": labels[~is_trial], "modulation": 1.0}),
                                   n_volumes, run))
    missing = sorted(wanted - found)
    if missing:
        raise InputError(f"--single-trial-types {', '.join(missing)}: no event has that {condition_column} (found: "
                         f"{', '.join(sorted(found)) or 'none'})", exit_code=65)
    trials = pd.concat(rows, ignore_index=True)
    if trials.empty:
        raise InputError("No trials: no event of the selected types in any run", exit_code=65)
    return pd.concat(tables, ignore_index=True), trials, frame_times, _nuisance(inputs, nuisance_parts)


def _nuisance(inputs, parts):
    """The non-trial events' regressors (canonical, delay and dispersion derivatives), one set per condition."""
    if not parts:
        return None
    conditions = sorted(set().union(*[set(frame["condition"]) for _, frame, _, _ in parts]))
    canonical = {"a1": 6.0, "d1": 1.0, "a2": 16.0, "d2": 1.0, "c": 0.167}
    variants = [("", canonical, None)]
    for key, label in (("a1", "ddelay"), ("d1", "ddispersion")):
        step = DERIVATIVE_STEPS[key]
        variants.append((f"_{label}", {**canonical, key: canonical[key] + step},
                         ({**canonical, key: canonical[key] - step}, 2 * step)))
    runs = inputs.data.index.get_level_values("run").to_numpy()
    out = {}
    for suffix, shape, minus in variants:
        values = np.zeros((len(runs), len(conditions)))
        for number, frame, n_volumes, run in parts:
            design = convolved_design(frame, n_volumes, run.tr, start_time=run.start_time, conditions=conditions,
                                      hrf=shape).to_numpy()
            if minus is not None:
                lower = convolved_design(frame, n_volumes, run.tr, start_time=run.start_time,
                                         conditions=conditions, hrf=minus[0]).to_numpy()
                design = (design - lower) / minus[1]
            values[runs == number + 1] = design
        for k, condition in enumerate(conditions):
            out[f"nuisance_{condition}{suffix}"] = values[:, k]
    frame = pd.DataFrame(out, index=inputs.data.index)
    logger.info("Single trials: %d non-trial condition(s) (%s) as nuisance regressors with their HRF derivatives",
                len(conditions), ", ".join(conditions))
    return frame
