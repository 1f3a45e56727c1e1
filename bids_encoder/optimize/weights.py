"""Closed-form (ordinary or ridge) least squares for the weights of linear encoding models."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .._memory import resolve_memory_limit
from .._tensorflow import tf
from ..models.base import run_lengths
from ._inputs import as_tensor, check_data_and_paradigm, confound_basis

logger = logging.getLogger(__name__)

__all__ = ["WeightFitter"]


def _intercepts(segments, n_time):
    """One intercept column per run (a single column for one run)."""
    segments = segments or (n_time,)
    columns = np.zeros((n_time, len(segments)))
    start = 0
    for i, length in enumerate(segments):
        columns[start : start + length, i] = 1.0
        start += length
    return columns


class WeightFitter:
    """Least-squares weights of a linear model given fixed per-voxel parameters (``fit`` sets the Attributes).

    Parameters
    ----------
    model : LinearModelWithBaseline or LinearModelWithBaselineHRF
    parameters : DataFrame (voxels × parameters) or None
        Fixed parameters (for example per-voxel HRFs). When they hold a ``baseline``, it is subtracted from the
        data; otherwise the baseline is estimated together with the weights (one intercept per run, never
        penalised) and stored in ``self.parameters``.
    data : DataFrame, shape (time, voxels)
    paradigm : DataFrame, shape (time, regressors)
    memory_limit : int, optional
        Bytes of working memory beyond the data (the per-voxel designs of unique HRFs are tiled within it); default: a quarter of
        the memory this process can get, at most 2 GB (:func:`bids_encoder._memory.default_memory_limit`).
    confounds : array or DataFrame (time × k), optional
        Nuisance regressors fitted together with the weights (never convolved, never penalised): motion, drifts,
        spike regressors for scrubbed volumes (a spike column is exactly equivalent to deleting the volume).

    Attributes
    ----------
    weights : DataFrame (regressors × voxels)
    parameters : DataFrame (voxels × parameters), with the estimated baseline
    run_baselines : DataFrame (runs × voxels), the intercepts of each run
    r2 : Series, coefficient of determination per voxel (NaN for constant voxels). With confounds, the
        fraction of the variance left by the confounds and run means that the regressors explain (partial R²).
    """

    def __init__(self, model, parameters, data, paradigm, memory_limit=None, confounds=None):
        if not model.uses_weights:
            raise ValueError(f"WeightFitter needs a linear model, not {type(model).__name__}")
        self.model = model
        self.data, self.paradigm = check_data_and_paradigm(model, data, paradigm)
        self.memory_limit = resolve_memory_limit(memory_limit)
        self.confounds = confound_basis(confounds, self.data.shape[0])  # orthonormal, or None
        if parameters is None:
            self.parameters = None
        elif isinstance(parameters, pd.DataFrame):
            self.parameters = parameters.astype(np.float32).reindex(self.data.columns)
            if self.parameters.isna().any().any():
                raise ValueError("parameters must have one row for each data column (voxel)")
        else:
            labels = model.get_parameter_labels()
            array = np.asarray(parameters, dtype=np.float32)
            cols = labels if array.ndim == 2 and array.shape[1] == len(labels) else labels[: array.shape[-1]]
            self.parameters = pd.DataFrame(array, index=self.data.columns, columns=cols)
        if self.parameters is not None and len(self.parameters) != self.data.shape[1]:
            raise ValueError(
                f"parameters have {len(self.parameters)} voxels but the data have {self.data.shape[1]}"
            )

    def _full_parameters(self):
        """Parameters for the model's design: defaults where the user gave none."""
        defaults = self.model.get_default_parameters(self.data.shape[1], index=self.data.columns)
        if self.parameters is not None:
            for label in self.parameters.columns:
                if label in defaults.columns:
                    defaults[label] = self.parameters[label].to_numpy()
        return defaults

    def fit(self, alpha=0.0):
        """Solve for the weights.

        Parameters
        ----------
        alpha : float
            Ridge penalty on the weights (not on the intercepts); 0 gives ordinary least squares.

        Returns
        -------
        DataFrame, shape (regressors × voxels)
        """
        alpha = float(alpha)
        if not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a non-negative number, got {alpha}")
        n_time, n_voxels = self.data.shape
        segments = run_lengths(self.paradigm.index)
        fit_baseline = self.parameters is None or "baseline" not in self.parameters.columns
        # (voxels × time) is how pandas stores a float frame: no transposing copy on the way to TensorFlow
        y_t = self.data.to_numpy().T
        if not fit_baseline:
            y_t = y_t - self.parameters["baseline"].to_numpy()[:, np.newaxis]
        intercepts = _intercepts(segments, n_time) if fit_baseline else np.zeros((n_time, 0))
        nuisance = np.zeros((n_time, 0)) if self.confounds is None else self.confounds
        # the unpenalised columns after the regressors: [design | confounds | run intercepts]
        unpenalised = np.hstack([nuisance, intercepts])
        full = self._full_parameters()
        paradigm_tf = tf.constant(self.paradigm.to_numpy())
        if getattr(getattr(self.model, "hrf_model", None), "unique_hrfs", False):
            coefs, ssr, sst = self._fit_per_voxel(paradigm_tf, full, y_t, unpenalised, alpha, segments)
        else:
            design = self.model._design(paradigm_tf, None, segments=segments).numpy().astype(np.float64)
            coefs, ssr, sst = self._fit_shared(design, y_t, unpenalised, alpha, intercepts.shape[1])
        n_reg = self.paradigm.shape[1]
        n_nuisance = nuisance.shape[1]
        self.weights = pd.DataFrame(coefs[:n_reg], index=self.paradigm.columns, columns=self.data.columns)
        self.run_baselines = pd.DataFrame(coefs[n_reg + n_nuisance :], columns=self.data.columns)
        self._nuisance_coefs = coefs[n_reg : n_reg + n_nuisance]
        if fit_baseline:
            full["baseline"] = self.run_baselines.mean(axis=0).to_numpy()
        else:
            full["baseline"] = self.parameters["baseline"].to_numpy()
        self.parameters = full
        self._intercept_columns = intercepts
        self._nuisance = nuisance
        with np.errstate(invalid="ignore", divide="ignore"):
            r2 = np.where(sst > 0, 1 - np.maximum(ssr, 0) / sst, np.nan)
        self.r2 = pd.Series(r2.astype(np.float32), index=self.data.columns, name="r2")
        return self.weights

    @staticmethod
    def _penalty(n_reg, n_intercepts, alpha):
        return np.diag(np.r_[np.full(n_reg, alpha), np.zeros(n_intercepts)])

    def _fit_shared(self, design, y_t, unpenalised, alpha, n_runs):
        """One design for all voxels.

        The small (columns × columns) system is solved once in float64; the data meet it in one float32
        product, after centring each voxel when run intercepts are fitted (they absorb the mean, so weights are
        unchanged and the residual sum of squares follows from the normal equations without forming predictions).
        """
        x = np.hstack([design, unpenalised])
        cross = x.T @ x
        inverse = np.linalg.pinv(cross + self._penalty(design.shape[1], unpenalised.shape[1], alpha))
        centre = n_runs > 0
        nuisance_inverse = None
        if unpenalised.shape[1] > max(n_runs, 1):  # confounds or several runs: R² of the variance they leave
            # the nuisance-only fit from the same moments X'y: its inverse, padded with zeros over the regressors
            nuisance_inverse = np.zeros_like(inverse)
            nuisance_inverse[design.shape[1]:, design.shape[1]:] = np.linalg.pinv(cross[design.shape[1]:,
                                                                                        design.shape[1]:])
            nuisance_inverse = tf.constant(nuisance_inverse.astype(np.float32))
        coefs, ssr, sst, mean = _shared_solve(
            as_tensor(y_t), tf.constant(x.astype(np.float32)), tf.constant(inverse.astype(np.float32)),
            tf.constant(cross.astype(np.float32)), centre, nuisance_inverse,
        )
        coefs = coefs.numpy().T
        if centre:  # put the voxel means back into the run intercepts (last columns)
            coefs[coefs.shape[0] - n_runs :] += mean.numpy()[np.newaxis, :]
        return coefs, np.maximum(ssr.numpy().astype(np.float64), 0.0), np.maximum(sst.numpy().astype(np.float64), 0.0)

    def _fit_per_voxel(self, paradigm_tf, parameters, y_t, unpenalised, alpha, segments):
        """One design per voxel (unique HRFs): batched normal equations in float64, in chunks of voxels.

        Confounds and run intercepts are shared by all voxels, so they are taken out first (Frisch–Waugh–Lovell):
        data and each voxel's regressors are projected on the complement of their span, the small per-voxel
        systems involve the regressors only, and the nuisance coefficients follow from the residuals.
        """
        n_voxels, n_time = y_t.shape
        n_reg = self.paradigm.shape[1]
        n_cols = n_reg + unpenalised.shape[1]
        bytes_per_voxel = 8 * n_time * (n_reg + 2) * 4
        chunk = max(1, min(n_voxels, self.memory_limit // bytes_per_voxel))
        penalty = tf.constant(np.eye(n_reg) * alpha)
        basis = confound_basis(unpenalised, n_time) if unpenalised.shape[1] else None
        basis_tf = tf.constant(np.zeros((n_time, 0)) if basis is None else basis)
        nuisance_pinv_tf = tf.constant(np.linalg.pinv(unpenalised) if unpenalised.shape[1] else np.zeros((0, n_time)))
        coefs = np.empty((n_cols, n_voxels), dtype=np.float32)
        ssr = np.empty(n_voxels)
        sst = np.empty(n_voxels)
        lagged_form = hasattr(self.model, "_lagged") and hasattr(self.model, "hrf_model")
        if lagged_form:  # each regressor is L_r k_v: project the few lagged copies once, not every voxel's design
            shifted = self.model._lagged(paradigm_tf, self.model.hrf_model.get_kernel(), segments)
            shifted = tf.cast(shifted, tf.float64)  # (R, T, K)
            shifted_clean = shifted - tf.einsum("tk,rkj->rtj", basis_tf, tf.einsum("tk,rtj->rkj", basis_tf, shifted))
            blocks = tf.einsum("rtk,stj->rskj", shifted_clean, shifted_clean)  # L_r' P L_s
            wide = tf.reshape(tf.transpose(shifted, [1, 0, 2]), [n_time, -1])  # (T, R · K)
            wide_clean = tf.reshape(tf.transpose(shifted_clean, [1, 0, 2]), [n_time, -1])
            taps = int(shifted.shape[2])
            # per voxel: its series in float32 and float64, its projections on the confounds; the small systems
            bytes_per_voxel = 4 * n_time + 8 * n_time + 8 * (basis_tf.shape[1] + n_reg * taps * 3 + n_reg * n_reg * 4)
            chunk = max(1, min(n_voxels, self.memory_limit // bytes_per_voxel))
        hrf_labels = self.model.hrf_model.get_parameter_labels() if lagged_form else []
        for start in range(0, n_voxels, chunk):
            stop = min(start + chunk, n_voxels)
            if lagged_form:  # (voxels × time) as pandas stores it: no transposed copy
                kernels = tf.cast(tf.transpose(self.model.hrf_model.get_kernel(
                    tf.constant(parameters.iloc[start:stop][hrf_labels].to_numpy(), tf.float32))), tf.float64)
                y = tf.cast(as_tensor(np.ascontiguousarray(y_t[start:stop])), tf.float64)
                beta, residual_ssr, clean_sst, nuisance = _lagged_solve(wide, wide_clean, blocks, kernels, y,
                                                                        basis_tf, nuisance_pinv_tf, penalty)
                del y
            else:
                target = tf.constant(y_t[start:stop].T.astype(np.float64))  # (T, v)
                pars = tf.constant(parameters.iloc[start:stop].to_numpy())
                design = tf.cast(self.model._design(paradigm_tf, pars, segments=segments), tf.float64)  # (T, v, R)
                beta, residual_ssr, clean_sst, nuisance = _per_voxel_solve(design, target, basis_tf,
                                                                           nuisance_pinv_tf, penalty)
            coefs[:n_reg, start:stop] = beta.numpy().T
            coefs[n_reg:, start:stop] = nuisance.numpy()
            ssr[start:stop] = residual_ssr.numpy()
            sst[start:stop] = clean_sst.numpy()
        if unpenalised.shape[1] == 0:  # no intercept, no confound: R² still measures variance around the mean
            centred = y_t - y_t.mean(axis=1, keepdims=True)
            sst = np.sum(centred.astype(np.float64) ** 2, axis=1)
        return coefs, np.maximum(ssr, 0.0), sst

    @property
    def predictions(self):
        """Fitted time series (time × voxels): regressors, each run's intercept and the confounds."""
        if not hasattr(self, "weights"):
            raise AttributeError("predictions exist after fit()")
        prediction = self.model._predict(
            tf.constant(self.paradigm.to_numpy()),
            tf.constant(self.parameters.to_numpy()),
            tf.constant(self.weights.to_numpy()),
            segments=run_lengths(self.paradigm.index),
        ).numpy()
        if self._intercept_columns.shape[1]:
            offsets = self._intercept_columns @ self.run_baselines.to_numpy()
            prediction += (offsets - self.parameters["baseline"].to_numpy()).astype(np.float32)
        if self._nuisance.shape[1]:
            prediction += (self._nuisance @ self._nuisance_coefs).astype(np.float32)
        return pd.DataFrame(prediction, index=self.data.index, columns=self.data.columns)


@tf.function(reduce_retracing=True)
def _per_voxel_solve(design, target, basis, nuisance_pinv, penalty):
    """Regressor weights (v × R), SSR, nuisance-cleaned SST and nuisance coefficients (k × v) per voxel."""
    target_clean = target - tf.matmul(basis, tf.matmul(basis, target, transpose_a=True))
    projection = tf.einsum("tk,tvr->kvr", basis, design)
    design_clean = design - tf.einsum("tk,kvr->tvr", basis, projection)
    gram = tf.einsum("tvr,tvs->vrs", design_clean, design_clean) + penalty
    rhs = tf.einsum("tvr,tv->vr", design_clean, target_clean)[..., tf.newaxis]
    beta = tf.linalg.solve(gram, rhs)[..., 0]
    residual = target_clean - tf.einsum("tvr,vr->tv", design_clean, beta)
    ssr = tf.reduce_sum(tf.square(residual), axis=0)
    sst = tf.reduce_sum(tf.square(target_clean), axis=0)
    nuisance = tf.matmul(nuisance_pinv, target - tf.einsum("tvr,vr->tv", design, beta))
    return beta, ssr, sst, nuisance


@tf.function(reduce_retracing=True)
def _lagged_solve(shifted, shifted_clean, blocks, kernels, y, basis, nuisance_pinv, penalty):
    """:func:`_per_voxel_solve` for designs ``L_r k_v`` (lagged regressors times per-voxel kernels): the normal
    equations from the shared blocks ``L_r' P L_s`` (taps × taps) and ``L_r' P y``, so no (time × voxels ×
    regressors) design exists. ``y`` is (voxels × time), ``kernels`` (voxels × taps), ``shifted`` and
    ``shifted_clean`` (time × regressors · taps). Only ``y`` is (voxels × time): ``L' P y = (P L)' y``, the
    cleaned data's sum of squares is ‖y‖² − ‖B'y‖² (B orthonormal), and the nuisance coefficients of the
    fitted part come from ``pinv(U) L`` (small), so no other series of that size is formed."""
    n_reg = tf.shape(blocks)[0]
    n_taps = tf.shape(kernels)[1]
    moments = tf.reshape(tf.matmul(y, shifted_clean), [-1, n_reg, n_taps])  # L_r' P y: (v, R, K)
    rhs = tf.einsum("vrk,vk->vr", moments, kernels)
    gram = tf.einsum("vk,rskj,vj->vrs", kernels, blocks, kernels)
    beta = tf.linalg.solve(gram + penalty, rhs[..., tf.newaxis])[..., 0]
    sst = tf.reduce_sum(tf.square(y), axis=1) - tf.reduce_sum(tf.square(tf.matmul(y, basis)), axis=1)
    ssr = sst - 2.0 * tf.reduce_sum(beta * rhs, axis=1) + tf.einsum("vr,vrs,vs->v", beta, gram, beta)
    scaled = tf.reshape(beta[:, :, tf.newaxis] * kernels[:, tf.newaxis, :], [-1, n_reg * n_taps])  # β_r k_v
    nuisance = tf.matmul(nuisance_pinv, y, transpose_b=True) - tf.matmul(tf.matmul(nuisance_pinv, shifted), scaled,
                                                                         transpose_b=True)  # (k, v)
    return beta, ssr, tf.maximum(sst, 0.0), nuisance


@tf.function(reduce_retracing=True)
def _shared_solve(y_t, design, inverse, cross, centre, nuisance_inverse=None):
    """Weights (voxels × columns), SSR, SST and voxel means for one shared design.

    With intercepts in the design (``centre``), the data are centred first: the intercepts absorb the mean,
    and the residual sum of squares ``y'y - 2 b'X'y + b'X'X b`` then suffers no cancellation. With
    ``nuisance_inverse`` (the inverse over the nuisance columns only, zero elsewhere), SST is the residual sum
    of squares of the nuisance columns alone, from the same moments ``X'y``: one pass over the data.
    """
    mean = tf.reduce_mean(y_t, axis=1, keepdims=True)
    centred = y_t - mean
    sst = tf.reduce_sum(tf.square(centred), axis=1)
    target = centred if centre else y_t
    moments = tf.matmul(target, design)  # X'y for every voxel
    total = sst if centre else tf.reduce_sum(tf.square(y_t), axis=1)

    def residual_sum_of_squares(coefs):
        return (total - 2.0 * tf.reduce_sum(coefs * moments, axis=1)
                + tf.reduce_sum(tf.matmul(coefs, cross) * coefs, axis=1))

    coefs = tf.matmul(moments, inverse)
    if nuisance_inverse is not None:
        sst = residual_sum_of_squares(tf.matmul(moments, nuisance_inverse))
    return coefs, residual_sum_of_squares(coefs), sst, mean[:, 0]
