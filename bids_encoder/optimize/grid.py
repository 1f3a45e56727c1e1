"""Exhaustive grid search, and closed-form baseline and amplitude, for encoding models."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._tensorflow import tf
from ._graphs import model_key
from ._inputs import projected_constant
from .devices import run_chunks

logger = logging.getLogger(__name__)

LINEAR_LABELS = ("baseline", "amplitude")
MIN_RELATIVE_RESPONSE = 0.01  # grid points whose peak response is below this share of the best one are skipped


def _project(basis, timeseries):
    """Remove the span of ``basis`` (orthonormal, time × k) from every column."""
    return timeseries - tf.matmul(basis, tf.matmul(basis, timeseries, transpose_a=True))


def _with_constant(basis, n_time):
    """Orthonormal basis of the confounds and a constant: what a model with a free baseline cannot tell apart."""
    columns = np.ones((n_time, 1))
    if basis is not None and basis.shape[1]:
        columns = np.hstack([basis, columns])
    u, singular, _ = np.linalg.svd(columns, full_matrices=False)
    return u[:, singular > singular.max() * max(columns.shape) * np.finfo(float).eps]


def grid_search(model, paradigm, data, segments, values, basis=None, use_correlation_cost=False,
                positive_amplitude=True, memory_limit=666666666, progressbar=True, devices=None):
    """Best grid point per voxel.

    Parameters
    ----------
    values : list, one entry per parameter label
        The values to try; ``None`` for ``baseline`` and ``amplitude`` solves them in closed form per voxel
        (always the case with ``use_correlation_cost``).
    basis : array (time × k), optional
        Orthonormal confound basis, projected out of data and predictions (an intercept is always removed).
    devices : list of str, optional
        Devices the chunks of grid points are split over (see :mod:`bids_encoder.optimize.devices`).

    Grid points whose peak response is below 1 % of the largest peak over the whole grid are skipped: a field
    that barely sees the stimulus would otherwise fit noise through a scaled-up leak. So are points outside the
    model's feasible set (2-D pRFs: fields the stimulus does not see, ``GaussianPRF2D.min_visibility``). The peaks
    are computed in a first pass (predictions only, no data), so the result does not depend on ``memory_limit``.

    Returns
    -------
    parameters : ndarray (voxels × labels), score : ndarray (voxels,) — R² of the best grid point.
    """
    labels = model.get_parameter_labels()
    closed_form = bool(use_correlation_cost) or any(
        label in labels and values[labels.index(label)] is None for label in LINEAR_LABELS)
    if closed_form and not all(label in labels for label in LINEAR_LABELS):
        raise ValueError(f"{type(model).__name__} has no baseline and amplitude to solve in closed form")
    searched = []
    for label, candidates in zip(labels, values, strict=True):
        if closed_form and label in LINEAR_LABELS:
            searched.append([1.0 if label == "amplitude" else 0.0])
            continue
        candidates = np.atleast_1d(np.asarray(candidates, dtype=np.float32))
        if candidates.size == 0 or not np.all(np.isfinite(candidates)):
            raise ValueError(f"The grid for {label!r} must be a non-empty list of finite values")
        searched.append(candidates)
    grid = np.array(list(itertools.product(*searched)), dtype=np.float32)
    n_time, n_voxels = data.shape
    basis_tf = tf.constant(_with_constant(basis, data.shape[0]), tf.float32)  # correlations: centred, confound-free
    y = _project(basis_tf, tf.constant(data, tf.float32))
    y_norm2 = tf.reduce_sum(tf.square(y), axis=0)
    # per point: its prediction and projection, the model's own intermediates (for 2-D pRFs its field over all
    # pixels), a few (points × voxels) scores; once: the data and their projection, the paradigm
    bytes_per_point = 4 * (3 * n_time + 6 * n_voxels + model._floats_per_voxel(n_time, paradigm.shape[1]))
    fixed = 4 * (2 * n_time * n_voxels + model._fixed_floats(n_time, paradigm.shape[1]))
    if memory_limit - fixed < bytes_per_point:
        logger.warning("memory_limit (%d bytes) is below what one grid point needs (%d fixed + %d per point): "
                       "one point at a time", memory_limit, fixed, bytes_per_point)
    chunk = int(max(1, min(len(grid), (memory_limit - fixed) // bytes_per_point)))
    paradigm_tf = tf.constant(paradigm, tf.float32)

    peak_chunk, score_chunk = _compiled(model, labels, segments, paradigm.shape, closed_form, positive_amplitude)
    starts = list(range(0, len(grid), chunk))
    peaks, _ = run_chunks(lambda start: peak_chunk(tf.constant(grid[start : start + chunk]), paradigm_tf).numpy(),
                          starts, devices)
    peaks = np.concatenate(peaks)
    # points that barely see the stimulus would fit noise through a scaled-up leak: leave them out
    visible_points = peaks >= MIN_RELATIVE_RESPONSE * peaks.max(initial=0.0)

    best_score = np.full(n_voxels, -np.inf, dtype=np.float32)
    best_index = np.zeros(n_voxels, dtype=np.int64)
    best_cross = np.zeros(n_voxels, dtype=np.float32)
    best_norm2 = np.ones(n_voxels, dtype=np.float32)
    with tqdm(total=len(grid), desc="grid", disable=not progressbar, leave=False) as bar:

        def score(start):
            points = grid[start : start + chunk]
            visible = tf.constant(visible_points[start : start + chunk])
            result = tuple(t.numpy() for t in score_chunk(tf.constant(points), visible, paradigm_tf, basis_tf, y,
                                                          y_norm2))
            bar.update(len(points))
            return result

        scored, _ = run_chunks(score, starts, devices)
        for start, (score, index, cross, norm2) in zip(starts, scored, strict=True):  # in order: ties as before
            better = score > best_score
            best_score[better] = score[better]
            best_index[better] = index[better] + start
            best_cross[better] = cross[better]
            best_norm2[better] = norm2[better]
    parameters = grid[best_index].copy()
    if closed_form:
        amplitude = best_cross / np.maximum(best_norm2, 1e-30)
        if positive_amplitude:
            amplitude = np.maximum(amplitude, 0.0)
        parameters[:, labels.index("amplitude")] = amplitude
        parameters = refine_baseline(model, paradigm, data, segments, parameters, basis)
    return parameters, np.where(np.isfinite(best_score), np.abs(best_score), np.nan)


_COMPILED = {}  # (model_key, set-up) → (peak_chunk, score_chunk)


def _compiled(model, labels, segments, paradigm_shape, closed_form, positive_amplitude):
    """The grid's two compiled functions for ``model`` and a set-up, traced once whatever the numbers of points,
    voxels and confounds (so chunks, folds and repeated searches reuse them)."""
    key = (model_key(model), tuple(labels), tuple(segments or ()), tuple(paradigm_shape), closed_form,
           positive_amplitude)
    cache = _COMPILED
    if key in cache:
        return cache[key]
    n_time, n_features = paradigm_shape
    spec = tf.TensorSpec
    points_spec = spec([None, len(labels)], tf.float32)
    paradigm_spec = spec([n_time, n_features], tf.float32)

    @tf.function(input_signature=[points_spec, paradigm_spec])
    def peak_chunk(points, paradigm):
        """Largest absolute stimulus-driven response of each point (its baseline removed); 0 for points outside
        the model's feasible set (``EncodingModel._feasible``), which are then skipped."""
        raw = model._predict(paradigm, points, None, segments=segments)
        if "baseline" in labels:
            raw = raw - points[:, labels.index("baseline")][tf.newaxis, :]
        peaks = tf.reduce_max(tf.abs(raw), axis=0)
        feasible = model._feasible(paradigm, points)
        return peaks if feasible is None else tf.where(feasible, peaks, 0.0)

    @tf.function(input_signature=[points_spec, spec([None], tf.bool), paradigm_spec, spec([n_time, None], tf.float32),
                                  spec([n_time, None], tf.float32), spec([None], tf.float32)])
    def score_chunk(points, visible, paradigm, basis, y, y_norm2):
        raw = model._predict(paradigm, points, None, segments=segments)
        prediction = _project(basis, raw)
        cross = tf.matmul(prediction, y, transpose_a=True)  # (points, voxels)
        p_norm2 = tf.reduce_sum(tf.square(prediction), axis=0)[:, tf.newaxis]
        if closed_form:  # R² of the best (positive) amplitude: corr² · sign
            r = cross / tf.sqrt(tf.maximum(p_norm2, 1e-30) * y_norm2[tf.newaxis, :])
            score = tf.where(r > 0, tf.square(r), -tf.square(r)) if positive_amplitude else tf.square(r)
            score = tf.where(p_norm2 > 0, score, -np.inf)
        else:  # R² with the grid's own baseline and amplitude
            score = 1.0 - (y_norm2[tf.newaxis, :] - 2.0 * cross + p_norm2) / y_norm2[tf.newaxis, :]
        score = tf.where(tf.math.is_finite(score) & visible[:, tf.newaxis], score, -np.inf)
        best = tf.argmax(score, axis=0, output_type=tf.int32)
        voxel = tf.range(tf.shape(best)[0])
        index = tf.stack([best, voxel], axis=1)
        return (tf.gather_nd(score, index), best, tf.gather_nd(cross, index),
                tf.gather(p_norm2[:, 0], best))

    cache[key] = peak_chunk, score_chunk
    return cache[key]


def refine_baseline(model, paradigm, data, segments, parameters, basis=None):
    """Baseline per voxel given all other parameters: the least-squares coefficient of a constant fitted together
    with the confounds (Frisch–Waugh–Lovell: the projected residual regressed on the projected constant)."""
    labels = model.get_parameter_labels()
    parameters = np.array(parameters, dtype=np.float32)
    parameters[:, labels.index("baseline")] = 0.0
    prediction = model._predict(tf.constant(paradigm, tf.float32), tf.constant(parameters), None, segments=segments)
    residual = np.asarray(data, dtype=np.float64) - prediction.numpy()
    if basis is not None and basis.shape[1]:
        residual = residual - basis @ (basis.T @ residual)
    constant = projected_constant(basis, residual.shape[0])
    norm = float(constant @ constant)
    # a constant inside the confounds' span cannot be estimated: fall back to the mean residual
    parameters[:, labels.index("baseline")] = (constant @ residual) / norm if norm > 1e-6 * len(constant) \
        else residual.mean(axis=0)
    return parameters


def refine_baseline_and_amplitude(model, paradigm, data, segments, parameters, basis=None,
                                  positive_amplitude=False):
    """Least-squares baseline and amplitude per voxel, all other parameters fixed.

    The prediction with amplitude 1 and baseline 0 is regressed on the data with an intercept.
    """
    labels = model.get_parameter_labels()
    if not all(label in labels for label in LINEAR_LABELS):
        raise ValueError(f"{type(model).__name__} has no baseline and amplitude to refine")
    parameters = np.array(parameters, dtype=np.float32)
    unit = parameters.copy()
    unit[:, labels.index("amplitude")] = 1.0
    unit[:, labels.index("baseline")] = 0.0
    p = model._predict(tf.constant(paradigm, tf.float32), tf.constant(unit), None, segments=segments).numpy()
    y = np.asarray(data, dtype=np.float64)
    p = p.astype(np.float64)
    nuisance = _with_constant(basis, y.shape[0])  # the baseline is fitted with the confounds
    p_c = p - nuisance @ (nuisance.T @ p)
    y_c = y - nuisance @ (nuisance.T @ y)
    with np.errstate(invalid="ignore", divide="ignore"):
        amplitude = np.where((p_c**2).sum(0) > 0, (p_c * y_c).sum(0) / (p_c**2).sum(0), 0.0)
    if positive_amplitude:
        amplitude = np.maximum(amplitude, 0.0)
    parameters[:, labels.index("amplitude")] = amplitude
    return refine_baseline(model, paradigm, data, segments, parameters, basis)


def as_frame(parameters, labels, index):
    frame = pd.DataFrame(parameters, index=index, columns=labels)
    frame.columns.name = "parameter"
    return frame
