"""events.tsv → regressors at the frame times of a run.

Two products:
- :func:`convolved_design`: each condition's boxcar (× modulation) built on a fine grid (TR / oversampling),
  convolved there with the SPM HRF, and sampled at the frame times: exact for any onset and duration (the same
  construction as nilearn's ``compute_regressor``).
- :func:`occupancy_paradigm`: the un-convolved neural paradigm at TR resolution, each volume holding the time
  the condition was on during the TR centred on it (for models that convolve themselves, such as per-voxel HRF
  fits); timing is then exact to within half a TR.

Events need not fit the scan: real events files hold events that start before the first volume or start or end
after the last one (a response still being recorded, a trigger logged after the scanner stopped). They are
modelled as they happened — whatever part of their response falls inside the run counts — and
:func:`check_event_timing` logs how many there are. Only a file none of whose events reaches the run is an error.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..models.hrf import spm_hrf
from .derivatives import bids_label
from .layout import InputError

logger = logging.getLogger(__name__)

__all__ = ["OVERSAMPLING", "HRF_LENGTH", "read_events", "check_event_timing", "convolved_design",
           "occupancy_paradigm", "read_stimulus_events"]

OVERSAMPLING = 16  # fine time bins per TR in which events are sampled before convolution or averaging
HRF_LENGTH = 32.0  # seconds: the support of the SPM kernel; an event that ended longer ago reaches no volume

REQUIRED = ("onset", "duration")



def event_times(name, events):
    """Onsets and durations (n/a duration: 0) of an events table, or InputError 65 for missing onsets or negative
    durations."""
    onset = events["onset"].to_numpy(float)
    duration = events["duration"].fillna(0.0).to_numpy(float)
    if not np.all(np.isfinite(onset)):
        raise InputError(f"{name} has missing onsets", exit_code=65)
    if np.any(duration < 0):
        raise InputError(f"{name} has negative durations", exit_code=65)
    return onset, duration

def read_events(path, n_volumes, tr, condition_column="trial_type", modulation_column=None,
                modulation_optional=False, start_time=0.0):
    """Read and check an events.tsv; returns onset, duration, condition (the ``condition_column`` value as written,
    surrounding spaces removed; :func:`~bids_encoder.bids.derivatives.condition_labels` labels them) and
    modulation.

    With ``modulation_optional``, a missing ``modulation_column`` means unit modulation instead of an error.
    Events outside the run are kept (see :func:`check_event_timing`).
    """
    try:
        events = pd.read_csv(path, sep="\t", na_values=["n/a"])
    except pd.errors.EmptyDataError as error:
        raise InputError(f"{path.name if hasattr(path, 'name') else path} is empty", exit_code=65) from error
    name = getattr(path, "name", str(path))
    missing = [column for column in REQUIRED if column not in events.columns]
    if not missing and condition_column not in events.columns:
        raise InputError(f"{name} has no {condition_column!r} column naming the conditions (its columns: "
                         f"{', '.join(map(str, events.columns))}); name the one that does with --condition-column",
                         exit_code=65)
    if missing:
        raise InputError(f"{name} lacks the column(s) {missing}", exit_code=65)
    if events.empty:
        raise InputError(f"{name} has no events", exit_code=65)
    if modulation_column is not None and modulation_column not in events.columns and modulation_optional:
        modulation_column = None
    if modulation_column is not None and modulation_column not in events.columns:
        raise InputError(f"{name} has no modulation column {modulation_column!r}", exit_code=65)
    events = events.dropna(subset=[condition_column])
    onset, duration = event_times(name, events)
    if not len(onset):
        raise InputError(f"{name} has no event with a {condition_column} (every row is n/a)", exit_code=65)
    check_event_timing(name, onset, duration, n_volumes, tr, start_time)
    modulation = np.ones(len(events)) if modulation_column is None else events[modulation_column].fillna(0.0).to_numpy(float)
    return pd.DataFrame({"onset": onset, "duration": duration,
                         "condition": events[condition_column].astype(str).str.strip().to_numpy(),
                         "modulation": modulation})


def check_event_timing(name, onset, duration, n_volumes, tr, start_time=0.0):
    """Log, with counts, the events that start before the run or start or end after it; raise InputError (65)
    when no event's response reaches a volume of the run.

    The run lasts from 0 to ``n_volumes · tr`` seconds; volume k samples the brain at ``start_time + k·tr``. An
    event reaches the run when it starts before the last volume's time and ends less than :data:`HRF_LENGTH`
    seconds before the first one.
    """
    onset, stop = np.asarray(onset, float), np.asarray(onset, float) + np.maximum(np.asarray(duration, float), 0)
    first, last, end = start_time, start_time + (n_volumes - 1) * tr, n_volumes * tr
    reaching = (onset < last) & (stop > first - HRF_LENGTH)
    if not reaching.any():
        raise InputError(f"{name}: no event reaches the run (onsets {onset.min():g} to {onset.max():g} s, the run "
                         f"lasts 0 to {end:g} s: {n_volumes} volumes × {tr:g} s); is it the events file of this "
                         "run?", exit_code=65)
    counts = [(int(np.sum(onset < 0)), "start before 0 s"),
              (int(np.sum(onset >= end)), f"start after the end of the run ({end:g} s)"),
              (int(np.sum((onset < end) & (stop > end))), "end after it")]
    outside = [f"{count} {what}" for count, what in counts if count]
    if outside:
        unused = int(np.sum(~reaching))
        logger.warning("%s: %s of %d event(s); modelled as they happened (the part of their response inside the "
                       "run counts)%s", name, ", ".join(outside), len(onset),
                       f"; {unused} do not reach any volume" if unused else "")
    return reaching


def _fine_boxcars(events, conditions, frame_times, oversampling, tr):
    """Boxcars on bins [g_i, g_i + dt): each bin holds the fraction of it an event covers (× modulation).

    The grid starts 32 s before the first frame, passes exactly through every frame time and ends a TR after the
    last one (so that the last frame's TR is whole for :func:`occupancy_paradigm`).
    """
    dt = tr / oversampling
    n_before = int(np.ceil(HRF_LENGTH / dt))
    grid = frame_times[0] + dt * np.arange(-n_before, len(frame_times) * oversampling + 1)
    boxcars = np.zeros((len(grid), len(conditions)))
    for column, condition in enumerate(conditions):
        chosen = events[events["condition"] == condition]
        for onset, duration, value in chosen[["onset", "duration", "modulation"]].to_numpy():
            stop = onset + max(duration, dt)  # an impulse (duration 0) lasts one fine step, as in nilearn
            first = max(int(np.floor((onset - grid[0]) / dt)), 0)
            last = max(min(int(np.ceil((stop - grid[0]) / dt)), len(grid)), first)  # empty before or after
            edges = grid[first:last]
            coverage = np.clip(np.minimum(edges + dt, stop) - np.maximum(edges, onset), 0.0, None) / dt
            boxcars[first:last, column] += value * coverage
    return grid, boxcars


def convolved_design(events, n_volumes, tr, start_time=0.0, oversampling=OVERSAMPLING, conditions=None, hrf=None):
    """HRF-convolved regressors (time × conditions) sampled at the frame times ``start_time + k·tr``.

    Exact for piecewise-constant inputs: the kernel is the HRF integrated over each fine bin (Simpson's rule).

    Parameters
    ----------
    events : DataFrame from :func:`read_events`
    hrf : dict of :func:`spm_hrf` arguments (a1, d1, a2, d2, c), optional
    """
    conditions = sorted(events["condition"].unique()) if conditions is None else list(conditions)
    frame_times = start_time + np.arange(n_volumes) * tr
    grid, boxcars = _fine_boxcars(events, conditions, frame_times, oversampling, tr)
    dt = tr / oversampling
    edges = np.arange(0.0, 32.0 + dt, dt)
    shape = {"c": 0.167, **(hrf or {})}
    kernel = dt / 6 * (spm_hrf(edges[:-1], **shape) + 4 * spm_hrf(edges[:-1] + dt / 2, **shape)
                       + spm_hrf(edges[1:], **shape))  # ∫ h over each bin; the HRF has unit area → unit gain
    frames = np.searchsorted(grid, frame_times - dt / 2)  # grid indices of the frame times
    values = np.zeros((n_volumes, len(conditions)))
    for i in range(len(conditions)):
        full = np.convolve(boxcars[:, i], kernel)
        values[:, i] = full[frames - 1]  # response at g_i comes from bins before it
    return pd.DataFrame(values, columns=conditions, index=pd.Index(frame_times, name="time"))


def occupancy_paradigm(events, n_volumes, tr, start_time=0.0, oversampling=OVERSAMPLING, conditions=None,
                       name="events.tsv"):
    """Neural regressors at TR resolution: the time-averaged boxcar over the TR centred on each frame.

    The model convolves this paradigm within the run, so stimulation before the first volume's TR cannot be
    represented: it is left out, with a warning (the convolved design keeps its response).
    """
    conditions = sorted(events["condition"].unique()) if conditions is None else list(conditions)
    frame_times = start_time + np.arange(n_volumes) * tr
    grid, boxcars = _fine_boxcars(events, conditions, frame_times, oversampling, tr)
    bins = np.clip(np.floor((grid - frame_times[0]) / tr + 0.5).astype(int), -1, n_volumes)
    before = boxcars[bins < 0].sum() * tr / oversampling
    if before > 0:
        logger.warning("%s: %.3g s of stimulation before the first volume is left out of the TR-resolution "
                       "paradigm (it is convolved within the run: use the canonical HRF to model its response)",
                       name, before)
    values = np.zeros((n_volumes, len(conditions)))
    inside = (bins >= 0) & (bins < n_volumes)
    np.add.at(values, bins[inside], boxcars[inside])
    return pd.DataFrame(values / oversampling, columns=conditions, index=pd.Index(frame_times, name="time"))


def read_stimulus_events(path, n_volumes, tr, stimulus_column, condition_column="trial_type", start_time=0.0):
    """The events of a 1-D tuning model: ``(stimulus, others)``.

    ``stimulus`` holds the events with a value in ``stimulus_column`` (onset, duration, value); ``others`` the
    remaining events (onset, duration, condition — the BIDS label of their ``condition_column``, empty when the
    file has no such column), for nuisance regressors. A non-numeric value is an error (65), as is a file
    without the column or without any event with a value.
    """
    name = getattr(path, "name", str(path))
    try:
        events = pd.read_csv(path, sep="\t", na_values=["n/a"])
    except pd.errors.EmptyDataError as error:
        raise InputError(f"{name} is empty", exit_code=65) from error
    missing = [column for column in REQUIRED if column not in events.columns]
    if missing:
        raise InputError(f"{name} lacks the column(s) {missing}", exit_code=65)
    if stimulus_column not in events.columns:
        raise InputError(f"{name} has no {stimulus_column!r} column with the stimulus value of each event (its "
                         f"columns: {', '.join(map(str, events.columns))}); name the one that does with "
                         "--stimulus-column", exit_code=65)
    values = pd.to_numeric(events[stimulus_column], errors="coerce")
    bad = values.isna() & events[stimulus_column].notna()
    if bad.any():
        raise InputError(f"{name}: the {stimulus_column} column has non-numeric values "
                         f"({', '.join(map(str, events[stimulus_column][bad].unique()[:3]))}); stimulus values are "
                         "numbers (n/a for events that are not stimuli)", exit_code=65)
    onset, duration = event_times(name, events)
    chosen = values.notna().to_numpy()
    if not chosen.any():
        raise InputError(f"{name} has no event with a value in its {stimulus_column} column", exit_code=65)
    check_event_timing(name, onset[chosen], duration[chosen], n_volumes, tr, start_time)
    stimulus = pd.DataFrame({"onset": onset[chosen], "duration": duration[chosen],
                             "value": values.to_numpy(float)[chosen]})
    conditions = (events[condition_column] if condition_column in events.columns
                  else pd.Series([np.nan] * len(events)))
    rest = ~chosen & conditions.notna().to_numpy()
    others = pd.DataFrame({"onset": onset[rest], "duration": duration[rest],
                           "condition": [bids_label(c) for c in conditions[rest].astype(str)],
                           "modulation": np.ones(int(rest.sum()))})
    return stimulus, others
