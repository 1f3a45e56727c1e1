"""Exhaustive grid search, and closed-form baseline and amplitude, for encoding models."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._memory import resolve_memory_limit
from .._tensorflow import tf
from ..models._frames import distinct_rows
from ..models.hrf import convolve
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


def _tiles(n, size):
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _columns(data, voxels, tile):
    """The data of one tile of voxels (time × tile, float32): a view for contiguous voxels, else a copy."""
    chosen = voxels[tile]
    if len(chosen) and chosen[-1] - chosen[0] == len(chosen) - 1:
        return np.ascontiguousarray(data[:, chosen[0]:chosen[-1] + 1], dtype=np.float32)
    return np.ascontiguousarray(data[:, chosen], dtype=np.float32)


#: the widest tile of voxels the grid scores at once (wider tiles save nothing once products are this large)
MAX_VOXEL_TILE = 16384
#: float32 (points × voxels) arrays alive while one tile is scored (cross-products, correlations, scores, masks)
_SCORE_ARRAYS = 6


def grid_plan(model, n_time, n_features, n_points, n_voxels, memory_limit, n_basis=1, n_rows=None, n_groups=1):
    """(points per chunk, voxels per tile) whose working set stays within ``memory_limit`` bytes, beyond the data.

    A chunk of points holds its predictions and their projection (and the model's intermediates: a 2-D pRF's
    fields over all pixels); a tile of voxels its data and their projection; the pair, a few (points × voxels)
    score arrays. When even one point and one voxel do not fit, the smallest plan is returned with a warning that
    names the budget that would hold it. With ``n_rows`` (the search on the distinct frames, ``n_groups`` HRFs):
    the points hold their neural responses on the frames, the tiles the data's products with the frames.
    """
    fixed = 4 * (model._fixed_floats(n_time, n_features) + 2 * n_time * n_basis)
    per_point = 4 * (3 * n_time + model._floats_per_voxel(n_time, n_features))
    per_voxel = 4 * (3 * n_time + 8)
    if n_rows is not None:
        fixed = 4 * (model._fixed_floats(n_rows, n_features) + 2 * n_time * n_basis
                     + n_groups * (2 * n_time * n_rows + n_rows * n_rows))
        per_point = 4 * (3 * n_rows + model._floats_per_voxel(n_rows, n_features))
        per_voxel = 4 * (2 * n_time + n_rows + 8)
    per_pair = 4 * _SCORE_ARRAYS
    budget = memory_limit - fixed
    smallest = per_point + per_voxel + per_pair
    if budget < smallest:
        logger.warning("memory_limit %.3g bytes cannot hold the grid search's smallest tile (one grid point and one "
                       "voxel: %.3g bytes with the paradigm); it runs one point and one voxel at a time, slowly. "
                       "A memory_limit of %.3g bytes or more would hold a tile.", memory_limit, fixed + smallest,
                       fixed + 256 * (per_point + per_voxel) + 256 * 256 * per_pair)
        return 1, 1
    tile = min(n_voxels, MAX_VOXEL_TILE)
    while True:
        points = (budget - tile * per_voxel) // (per_point + tile * per_pair)
        if points >= min(n_points, 256) or tile == 1:
            break
        tile = max(1, tile // 2)
    return int(max(1, min(n_points, points))), int(max(1, tile))


def grid_search(model, paradigm, data, segments, values, basis=None, use_correlation_cost=False,
                positive_amplitude=True, memory_limit=None, progressbar=True, devices=None, voxels=None):
    """Best grid point per voxel.

    Parameters
    ----------
    model : EncodingModel
    paradigm : ndarray, shape (time, features)
    data : ndarray, shape (time, voxels)
        Read tile by tile (columns ``voxels``): never copied whole.
    segments : tuple of int or None
        Run lengths (the HRF never crosses a run boundary).
    values : list, one entry per parameter label
        The values to try; ``None`` for ``baseline`` and ``amplitude`` solves them in closed form per voxel
        (always the case with ``use_correlation_cost``).
    basis : array (time × k), optional
        Orthonormal confound basis, projected out of data and predictions (an intercept is always removed).
    use_correlation_cost, positive_amplitude : bool
        Rank points by correlation (baseline and amplitude in closed form); only positive amplitudes.
    memory_limit : int
        Bytes of working memory beyond the data: points and voxels are tiled to stay within it
        (:func:`grid_plan`); the result does not depend on it.
    progressbar : bool
    devices : list of str, optional
        Devices the chunks of grid points are split over (see :mod:`bids_encoder.optimize.devices`).
    voxels : array of int, optional
        The columns of ``data`` to search (default: all).

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
    memory_limit = resolve_memory_limit(memory_limit)
    voxels = np.arange(data.shape[1]) if voxels is None else np.asarray(voxels)
    n_time, n_voxels = data.shape[0], len(voxels)
    centred = _with_constant(basis, n_time)  # correlations: centred, confound-free
    basis_tf = tf.constant(centred, tf.float32)
    if getattr(model, "supports_frames", False):
        rows, frames = distinct_rows(paradigm)
        if len(rows) < n_time:  # a stimulus that repeats: score on its distinct frames (exact)
            best_score, best_index, best_cross, best_norm2 = _factorised_search(
                model, labels, grid, rows, frames, segments, data, voxels, centred, closed_form, positive_amplitude,
                memory_limit, progressbar, devices)
            return _finish(model, labels, grid, paradigm, data, segments, basis, voxels, memory_limit, closed_form,
                           positive_amplitude, best_score, best_index, best_cross, best_norm2)
    # each device holds one chunk at a time within the budget (a GPU's own memory)
    chunk, tile = grid_plan(model, n_time, paradigm.shape[1], len(grid), n_voxels, memory_limit, centred.shape[1])
    paradigm_tf = tf.constant(paradigm, tf.float32)
    peak_chunk, prepare_chunk, score_tile = _compiled(model, labels, segments, paradigm.shape, closed_form,
                                                      positive_amplitude)
    starts = list(range(0, len(grid), chunk))
    peaks = np.zeros(len(grid), dtype=np.float32)

    def keep_peaks(i, result):
        peaks[starts[i]:starts[i] + len(result)] = result

    run_chunks(lambda start: peak_chunk(tf.constant(grid[start : start + chunk]), paradigm_tf).numpy(), starts,
               devices, reduce=keep_peaks)
    # points that barely see the stimulus would fit noise through a scaled-up leak: leave them out
    visible_points = peaks >= MIN_RELATIVE_RESPONSE * peaks.max(initial=0.0)

    tiles = _tiles(n_voxels, tile)
    best = _Best(n_voxels, tiles)
    with tqdm(total=len(grid), desc="grid", disable=not progressbar, leave=False) as bar:

        def score(start):
            points = grid[start : start + chunk]
            visible = tf.constant(visible_points[start : start + chunk])
            prediction, p_norm2 = prepare_chunk(tf.constant(points), paradigm_tf, basis_tf)
            result = [tuple(t.numpy() for t in score_tile(prediction, p_norm2, visible, basis_tf,
                                                          tf.constant(_columns(data, voxels, part))))
                      for part in tiles]
            bar.update(len(points))
            return result

        run_chunks(score, starts, devices, reduce=lambda i, result: best.keep(starts[i] + np.arange(chunk), result))
    return _finish(model, labels, grid, paradigm, data, segments, basis, voxels, memory_limit, closed_form,
                   positive_amplitude, *best.state())


class _Best:
    """Every voxel's best grid point so far, folded in tile by tile as the chunks of points finish; ties go to the
    earlier point of the grid, whatever the chunks, groups and tiles."""

    def __init__(self, n_voxels, tiles):
        self.tiles = tiles
        self.score = np.full(n_voxels, -np.inf, dtype=np.float32)
        self.index = np.zeros(n_voxels, dtype=np.int64)
        self.cross = np.zeros(n_voxels, dtype=np.float32)
        self.norm2 = np.ones(n_voxels, dtype=np.float32)

    def keep(self, points, result):
        """Fold in a chunk's (score, index within ``points``, cross-product, norm²) of every tile."""
        for part, (value, index, cross, norm2) in zip(self.tiles, result, strict=True):
            point = np.asarray(points)[index]
            better = (value > self.score[part]) | ((value == self.score[part]) & (point < self.index[part]))
            self.score[part] = np.where(better, value, self.score[part])
            self.index[part] = np.where(better, point, self.index[part])
            self.cross[part] = np.where(better, cross, self.cross[part])
            self.norm2[part] = np.where(better, norm2, self.norm2[part])

    def state(self):
        return self.score, self.index, self.cross, self.norm2


def _finish(model, labels, grid, paradigm, data, segments, basis, voxels, memory_limit, closed_form,
            positive_amplitude, best_score, best_index, best_cross, best_norm2):
    """The best points' parameters (closed-form amplitude and baseline) and their R²."""
    parameters = grid[best_index].copy()
    if closed_form:
        amplitude = best_cross / np.maximum(best_norm2, 1e-30)
        if positive_amplitude:
            amplitude = np.maximum(amplitude, 0.0)
        parameters[:, labels.index("amplitude")] = amplitude
        parameters = refine_baseline(model, paradigm, data, segments, parameters, basis, voxels=voxels,
                                     memory_limit=memory_limit)
    return parameters, np.where(np.isfinite(best_score), np.abs(best_score), np.nan)


def _group_kernels(model, labels, grid):
    """Groups of grid points that share an HRF: (group of every point, HRF kernel of each group or None)."""
    hrf_model = getattr(model, "hrf_model", None)
    if hrf_model is None:
        return np.zeros(len(grid), dtype=np.int64), [None]
    if not hrf_model.unique_hrfs:
        return np.zeros(len(grid), dtype=np.int64), [hrf_model.get_kernel()]
    columns = [labels.index(label) for label in hrf_model.get_parameter_labels()]
    keys, group = np.unique(grid[:, columns], axis=0, return_inverse=True)
    return group.ravel(), [hrf_model.get_kernel(tf.constant(key[np.newaxis, :], tf.float32))[:, 0] for key in keys]


def _factorised_search(model, labels, grid, rows, frames, segments, data, voxels, centred, closed_form,
                       positive_amplitude, memory_limit, progressbar, devices):
    """The grid search on the distinct frames of the paradigm.

    With ``E`` (time × distinct frames) the frame each time point shows, ``C`` the HRF's convolution (per run),
    ``Q`` the projection off the confounds and the constant, and ``N`` (frames × points) the neural responses, the
    projected predictions are ``P = M N`` with ``M = Q C E`` (time × frames), so every voxel's cross-products
    with them are ``Pᵀy = Nᵀ (Mᵀy)`` and their norms ``diag(Nᵀ MᵀM N)``: per tile of voxels one (frames × time)
    product of the data instead of a (points × time) one. The same scores as the direct search, in the order of
    the grid's points (ties go to the earlier point).
    """
    n_time, n_rows = len(frames), len(rows)
    n_voxels = len(voxels)
    group_of, kernels = _group_kernels(model, labels, grid)
    selection = tf.one_hot(frames, n_rows, dtype=tf.float32)  # E: (time, frames)
    mixing, grams, convolved = [], [], []
    for kernel in kernels:
        ce = selection if kernel is None else convolve(selection, kernel, segments=segments)
        ce = ce.numpy().astype(np.float64)
        m = ce - centred @ (centred.T @ ce)
        convolved.append(tf.constant(ce, tf.float32))
        mixing.append(tf.constant(m, tf.float32))
        grams.append(tf.constant(m.T @ m, tf.float32))
    chunk, tile = grid_plan(model, n_time, rows.shape[1], len(grid), n_voxels, memory_limit, centred.shape[1],
                            n_rows=n_rows, n_groups=len(kernels))
    items = [(g, members[start:start + chunk]) for g in range(len(kernels))
             for members in [np.flatnonzero(group_of == g)] for start in range(0, len(members), chunk)]
    rows_tf, basis_tf = tf.constant(rows, tf.float32), tf.constant(centred, tf.float32)
    neural_of, peak_of, score_tile = _compiled_factorised(model, labels, rows.shape, n_time, closed_form,
                                                          positive_amplitude)
    peaks = np.zeros(len(grid), dtype=np.float32)

    def keep_peaks(i, result):
        peaks[items[i][1]] = result

    run_chunks(lambda item: peak_of(tf.constant(grid[item[1]]), rows_tf, convolved[item[0]]).numpy(), items,
               devices, reduce=keep_peaks)
    visible_points = peaks >= MIN_RELATIVE_RESPONSE * peaks.max(initial=0.0)
    tiles = _tiles(n_voxels, tile)
    best = _Best(n_voxels, tiles)
    with tqdm(total=len(grid), desc="grid", disable=not progressbar, leave=False) as bar:

        def score(item):
            g, members = item
            neural, p_norm2 = neural_of(tf.constant(grid[members]), rows_tf, grams[g])
            visible = tf.constant(visible_points[members])
            result = [tuple(t.numpy() for t in score_tile(neural, p_norm2, visible, mixing[g], basis_tf,
                                                          tf.constant(_columns(data, voxels, part))))
                      for part in tiles]
            bar.update(len(members))
            return result

        run_chunks(score, items, devices, reduce=lambda i, result: best.keep(items[i][1], result))
    return best.state()


def _compiled_factorised(model, labels, rows_shape, n_time, closed_form, positive_amplitude):
    """The factorised search's compiled functions for ``model``'s family and a set-up (see ``_compiled``)."""
    key = ("factorised", model_key(model), tuple(labels), tuple(rows_shape), n_time, closed_form, positive_amplitude)
    if key in _COMPILED:
        return _COMPILED[key]
    n_rows, n_features = rows_shape
    spec = tf.TensorSpec
    points_spec = spec([None, len(labels)], tf.float32)
    rows_spec = spec([n_rows, n_features], tf.float32)

    @tf.function(input_signature=[points_spec, rows_spec, spec([n_time, n_rows], tf.float32)])
    def peak_of(points, rows, convolved):
        """Largest absolute stimulus-driven response of each point; 0 outside the model's feasible set."""
        peaks = tf.reduce_max(tf.abs(tf.matmul(convolved, model._predict_neural(rows, points, None))), axis=0)
        feasible = model._feasible(rows, points)
        return peaks if feasible is None else tf.where(feasible, peaks, 0.0)

    @tf.function(input_signature=[points_spec, rows_spec, spec([n_rows, n_rows], tf.float32)])
    def neural_of(points, rows, gram):
        """The points' neural responses on the distinct frames, and the squared norms of their projections."""
        neural = model._predict_neural(rows, points, None)
        return neural, tf.reduce_sum(neural * tf.matmul(gram, neural), axis=0)

    @tf.function(input_signature=[spec([n_rows, None], tf.float32), spec([None], tf.float32), spec([None], tf.bool),
                                  spec([n_time, n_rows], tf.float32), spec([n_time, None], tf.float32),
                                  spec([n_time, None], tf.float32)])
    def score_tile(neural, p_norm2, visible, mixing, basis, data):
        y = _project(basis, data)
        y_norm2 = tf.reduce_sum(tf.square(y), axis=0)
        cross = tf.matmul(neural, tf.matmul(mixing, data, transpose_a=True), transpose_a=True)  # Nᵀ (Mᵀ y)
        return _best(cross, p_norm2[:, tf.newaxis], y_norm2, visible, closed_form, positive_amplitude)

    _COMPILED[key] = neural_of, peak_of, score_tile
    return _COMPILED[key]


def _best(cross, p_norm2, y_norm2, visible, closed_form, positive_amplitude):
    """Every voxel's best point: (score, its index, cross-product, norm²) from (points × voxels) cross-products.

    Closed form: a voxel's R² of point p is r² with r = cross / sqrt(‖p‖² ‖y‖²), ranked as sign(r)·r² (positive
    amplitudes) or r²; both orders are those of cross / ‖p‖ (or its absolute value), ‖y‖ being the voxel's own, so
    the (points × voxels) array takes one product and one mask, and r is computed for the best point only.
    """
    if closed_form:
        weight = tf.where(p_norm2 > 0, tf.math.rsqrt(tf.maximum(p_norm2, 1e-30)), 0.0)
        bias = tf.where((p_norm2 > 0) & visible[:, tf.newaxis], 0.0, -np.inf)
        ranked = (cross if positive_amplitude else tf.abs(cross)) * weight + bias
    else:  # R² with the grid's own baseline and amplitude
        ranked = 1.0 - (y_norm2[tf.newaxis, :] - 2.0 * cross + p_norm2) / y_norm2[tf.newaxis, :]
        ranked = tf.where(tf.math.is_finite(ranked) & visible[:, tf.newaxis], ranked, -np.inf)
    best = tf.argmax(ranked, axis=0, output_type=tf.int32)
    voxel = tf.range(tf.shape(best)[0])
    index = tf.stack([best, voxel], axis=1)
    best_cross, best_norm2 = tf.gather_nd(cross, index), tf.gather(p_norm2[:, 0], best)
    if closed_form:
        r = best_cross / tf.sqrt(tf.maximum(best_norm2, 1e-30) * y_norm2)
        score = tf.where(r > 0, tf.square(r), -tf.square(r)) if positive_amplitude else tf.square(r)
        usable = tf.math.is_finite(tf.gather_nd(ranked, index)) & (best_norm2 > 0) & tf.math.is_finite(score)
        score = tf.where(usable, score, -np.inf)
    else:
        score = tf.gather_nd(ranked, index)
    return score, best, best_cross, best_norm2


_COMPILED = {}  # (model_key, set-up) → (peak_chunk, prepare_chunk, score_tile)


def _compiled(model, labels, segments, paradigm_shape, closed_form, positive_amplitude):
    """The grid's compiled functions for ``model``'s family and a set-up, traced once whatever the numbers of
    points, voxels and confounds (so chunks, tiles, folds, repeated searches and equal models reuse them)."""
    key = (model_key(model), tuple(labels), tuple(segments or ()), tuple(paradigm_shape), closed_form,
           positive_amplitude)
    cache = _COMPILED
    if key in cache:
        return cache[key]
    n_time, n_features = paradigm_shape
    spec = tf.TensorSpec
    points_spec = spec([None, len(labels)], tf.float32)
    paradigm_spec = spec([n_time, n_features], tf.float32)
    basis_spec = spec([n_time, None], tf.float32)

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

    @tf.function(input_signature=[points_spec, paradigm_spec, basis_spec])
    def prepare_chunk(points, paradigm, basis):
        """The points' predictions with the confounds and the intercept projected out, and their squared norms."""
        prediction = _project(basis, model._predict(paradigm, points, None, segments=segments))
        return prediction, tf.reduce_sum(tf.square(prediction), axis=0)

    @tf.function(input_signature=[spec([n_time, None], tf.float32), spec([None], tf.float32), spec([None], tf.bool),
                                  basis_spec, spec([n_time, None], tf.float32)])
    def score_tile(prediction, p_norm2, visible, basis, data):
        """Best point of the chunk for every voxel of a tile: (score, index in the chunk, cross-product, norm²)."""
        y = _project(basis, data)
        y_norm2 = tf.reduce_sum(tf.square(y), axis=0)
        cross = tf.matmul(prediction, y, transpose_a=True)  # (points, voxels)
        return _best(cross, p_norm2[:, tf.newaxis], y_norm2, visible, closed_form, positive_amplitude)

    cache[key] = peak_chunk, prepare_chunk, score_tile
    return cache[key]


def _prediction_inputs(model, paradigm):
    """(paradigm tensor, keyword arguments of ``model._predict``): the distinct frames and the frame of every time
    point for models that support them (the same predictions, computed once per frame), else the paradigm."""
    if getattr(model, "supports_frames", False):
        rows, frames = distinct_rows(paradigm)
        if len(rows) < len(frames):
            return tf.constant(rows), {"frames": tf.constant(frames)}
    return tf.constant(paradigm, tf.float32), {}


def _refine_plan(model, n_time, n_features, n_voxels, memory_limit):
    """Voxels per tile of the closed-form refinements: each voxel's prediction (float32, with the model's
    intermediates) and five float64 series (data, prediction, their projections, the residual)."""
    per_voxel = 4 * (n_time + model._floats_per_voxel(n_time, n_features)) + 8 * 5 * n_time
    fixed = 4 * model._fixed_floats(n_time, n_features)
    if memory_limit - fixed < per_voxel:
        logger.warning("memory_limit %.3g bytes cannot hold the baseline/amplitude refinement of one voxel (%.3g "
                       "bytes): one voxel at a time, slowly; %.3g bytes would hold 256", memory_limit,
                       fixed + per_voxel, fixed + 256 * per_voxel)
        return 1
    return int(max(1, min(n_voxels, (memory_limit - fixed) // per_voxel)))


def refine_baseline(model, paradigm, data, segments, parameters, basis=None, voxels=None, memory_limit=None):
    """Baseline per voxel given all other parameters: the least-squares coefficient of a constant fitted together
    with the confounds (Frisch–Waugh–Lovell: the projected residual regressed on the projected constant).

    ``data`` (time × voxels) is read in tiles of the columns ``voxels`` (default: all), one row of ``parameters``
    per voxel, within ``memory_limit`` bytes beyond the data."""
    labels = model.get_parameter_labels()
    memory_limit = resolve_memory_limit(memory_limit)
    parameters = np.array(parameters, dtype=np.float32)
    parameters[:, labels.index("baseline")] = 0.0
    voxels = np.arange(data.shape[1]) if voxels is None else np.asarray(voxels)
    constant = projected_constant(basis, data.shape[0])
    norm = float(constant @ constant)
    paradigm_tf, frames = _prediction_inputs(model, paradigm)
    size = _refine_plan(model, data.shape[0], paradigm.shape[1], len(voxels), memory_limit)
    for part in _tiles(len(voxels), size):
        prediction = model._predict(paradigm_tf, tf.constant(parameters[part]), None, segments=segments, **frames)
        residual = _columns(data, voxels, part).astype(np.float64) - prediction.numpy()
        if basis is not None and basis.shape[1]:
            residual -= basis @ (basis.T @ residual)
        # a constant inside the confounds' span cannot be estimated: fall back to the mean residual
        parameters[part, labels.index("baseline")] = (constant @ residual) / norm if norm > 1e-6 * len(constant) \
            else residual.mean(axis=0)
    return parameters


def refine_baseline_and_amplitude(model, paradigm, data, segments, parameters, basis=None,
                                  positive_amplitude=False, voxels=None, memory_limit=None):
    """Least-squares baseline and amplitude per voxel, all other parameters fixed.

    The prediction with amplitude 1 and baseline 0 is regressed on the data with an intercept (and the
    confounds). ``data`` is read in tiles of the columns ``voxels`` within ``memory_limit`` bytes beyond it.
    """
    labels = model.get_parameter_labels()
    if not all(label in labels for label in LINEAR_LABELS):
        raise ValueError(f"{type(model).__name__} has no baseline and amplitude to refine")
    parameters = np.array(parameters, dtype=np.float32)
    unit = parameters.copy()
    unit[:, labels.index("amplitude")] = 1.0
    unit[:, labels.index("baseline")] = 0.0
    memory_limit = resolve_memory_limit(memory_limit)
    voxels = np.arange(data.shape[1]) if voxels is None else np.asarray(voxels)
    nuisance = _with_constant(basis, data.shape[0])  # the baseline is fitted with the confounds
    paradigm_tf, frames = _prediction_inputs(model, paradigm)
    size = _refine_plan(model, data.shape[0], paradigm.shape[1], len(voxels), memory_limit)
    for part in _tiles(len(voxels), size):
        p = model._predict(paradigm_tf, tf.constant(unit[part]), None, segments=segments,
                           **frames).numpy().astype(np.float64)
        p -= nuisance @ (nuisance.T @ p)
        y = _columns(data, voxels, part).astype(np.float64)
        y -= nuisance @ (nuisance.T @ y)
        norm2 = (p ** 2).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            amplitude = np.where(norm2 > 0, (p * y).sum(0) / norm2, 0.0)
        if positive_amplitude:
            amplitude = np.maximum(amplitude, 0.0)
        parameters[part, labels.index("amplitude")] = amplitude
    return refine_baseline(model, paradigm, data, segments, parameters, basis, voxels=voxels,
                           memory_limit=memory_limit)


def as_frame(parameters, labels, index):
    frame = pd.DataFrame(parameters, index=index, columns=labels)
    frame.columns.name = "parameter"
    return frame
