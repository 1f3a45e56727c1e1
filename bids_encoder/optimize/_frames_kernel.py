"""Levenberg–Marquardt on the distinct frames of a stimulus that repeats, for models with one HRF for all voxels.

A pRF or tuning model's neural response depends only on the frame a time point shows, so with ``E`` (time ×
distinct frames) the frame of each time point, ``C`` the shared HRF's convolution (per run) and the baseline as a
constant column, the predictions are ``A c`` with ``A = [C E, 1]`` and ``c`` (frames + 1 per voxel) the neural
responses on the frames and the baseline. With the confound projection P and ``M = P A``,

    SSR(c) = ‖y‖² − 2 cᵀz + cᵀ G c,   z = Mᵀy,   G = MᵀM,

so after one pass over the data (z and ‖y‖², per voxel) every step costs products over the frames, not the time
points: ``J'J = Dᵀ G D`` and ``J'r = Dᵀ (z − G c)`` with ``D`` the Jacobian of ``c`` (the neural derivatives on
the frames, closed form). A candidate's SSR is computed as a difference, ``(c' − c)ᵀ (G (c' + c) − 2z)``, and
the data's regression on the (projected) constant is taken off them and off the baseline first, so that ‖y‖² is
not dominated by a mean: float32 stays accurate. On 1,800 frames of a 150-frame movie (HCP 7T retinotopy) a step costs about a tenth of the time-domain
kernel's (:class:`._steps.Kernel`), with the same solution within LM's tolerance.
"""

from __future__ import annotations

import numpy as np

from .._tensorflow import tf
from ..models import _jacobians
from ._inputs import projected_constant
from ._steps import StepKernel

#: the frames kernel is used when the distinct frames (plus the constant) are at most this share of the time points
MAX_FRAME_SHARE = 0.5


def frames_applicable(problem):
    """Whether :class:`FramesKernel` applies to ``problem``: a model with frames support, a closed-form neural
    Jacobian, one HRF for all voxels (or none), no weights, every free parameter a neural one or the baseline, and
    a stimulus that repeats enough (:data:`MAX_FRAME_SHARE`)."""
    model = problem.model
    if not getattr(model, "supports_frames", False) or problem.weights is not None:
        return False
    predict_neural = type(model)._predict_neural
    if _jacobians.NEURAL_JACOBIANS.get(getattr(predict_neural, "__func__", predict_neural)) is None:
        return False
    hrf_model = getattr(model, "hrf_model", None)
    if hrf_model is not None and hrf_model.unique_hrfs:
        return False
    hrf_labels = set(hrf_model.get_parameter_labels()) if hrf_model is not None else set()
    if hrf_labels & {problem.labels[i] for i in problem.free_idx}:
        return False
    return problem.rows.shape[0] + 1 <= MAX_FRAME_SHARE * problem.n_time


class FramesKernel(StepKernel):
    """LM steps on per-voxel sufficient statistics over the distinct frames (z, ‖y‖², G); see the module
    docstring."""

    def __init__(self, problem, store_intermediate):
        self.neural_jacobian = _jacobians.NEURAL_JACOBIANS[
            getattr(type(problem.model)._predict_neural, "__func__", type(problem.model)._predict_neural)]
        self.labels = list(problem.labels)
        self.baseline = self.labels.index("baseline") if "baseline" in self.labels else None
        n_rows, n_features = problem.rows.shape
        spec = tf.TensorSpec
        voxel_specs = [spec([n_rows + 1, None], tf.float32),  # z = Mᵀy
                       spec([None], tf.float32),  # ‖y‖² (centred)
                       spec([None], tf.float32),  # sst
                       spec([None, len(problem.fixed_idx)], tf.float32),  # fixed values
                       spec([None], tf.float32)]  # the data's regression on the projected constant, taken off
        shared_specs = [spec([n_rows, n_features], tf.float32),  # distinct rows
                        spec([n_rows + 1, n_rows + 1], tf.float32)]  # G
        super().__init__(problem, store_intermediate, voxel_specs, shared_specs)

    # ------------------------------------------------------------------ set-up (once per problem)
    @staticmethod
    def _mixing(problem):
        """M = P [C E, 1] (time × frames + 1), float64; computed once per problem (z and G both need it)."""
        cached = getattr(problem, "_frames_mixing", None)
        if cached is not None:
            return cached
        selection = tf.one_hot(problem.frames, problem.rows.shape[0], dtype=tf.float32)
        hrf_model = getattr(problem.model, "hrf_model", None)
        convolved = selection if hrf_model is None else hrf_model.convolve(selection, None,
                                                                           segments=problem.segments)
        mixing = np.hstack([convolved.numpy().astype(np.float64), np.ones((problem.n_time, 1))])
        if problem.basis is not None:
            basis = problem.basis.numpy().astype(np.float64)
            mixing = mixing - basis @ (basis.T @ mixing)
        problem._frames_mixing = mixing
        return mixing

    def voxel_inputs(self, problem):
        y = problem.y.numpy().astype(np.float64)
        # the data less their regression on the (projected) constant, the baseline less the same: SSR unchanged,
        # ‖y‖² no longer dominated by the mean (the first run's, when later runs' indicators are the confounds)
        constant = projected_constant(None if problem.basis is None else problem.basis.numpy().astype(np.float64),
                                      problem.n_time)
        norm = float(constant @ constant)
        mean = (constant @ y) / norm if norm > 1e-9 else np.zeros(y.shape[1])
        centred = tf.constant((y - np.outer(constant, mean)).astype(np.float32))
        z = tf.matmul(tf.constant(self._mixing(problem), tf.float32), centred, transpose_a=True)
        fixed = problem.fixed_values if problem.fixed_idx else tf.zeros([problem.n_voxels, 0])
        return [(z, 1), (tf.reduce_sum(tf.square(centred), axis=0), 0), (problem.sst, 0), (fixed, 0),
                (tf.constant(np.asarray(mean, np.float32)), 0)]

    def shared_inputs(self, problem):
        mixing = self._mixing(problem)
        return [problem.rows, tf.constant(mixing.T @ mixing, tf.float32)]

    def sst_of(self, inputs):
        return inputs[2]

    def fixed_of(self, inputs):
        return inputs[3]

    # ------------------------------------------------------------------ the steps
    def _coefficients(self, neural, parameters, mean):
        """c: the neural responses on the frames and the baseline less the mean taken off the data."""
        baseline = parameters[:, self.baseline] if self.baseline is not None else tf.zeros_like(mean)
        return tf.concat([neural, (baseline - mean)[tf.newaxis, :]], axis=0)

    def linearise(self, free, inputs):
        z, yy, _, fixed, mean, rows, gram = inputs
        with tf.autodiff.ForwardAccumulator(free, tf.ones_like(free)) as accumulator:
            parameters = self.natural(free, fixed)
        slopes = accumulator.jvp(parameters, unconnected_gradients="zero")  # (voxels, labels)
        neural, derivatives = self.neural_jacobian(self.model, rows, parameters)
        c = self._coefficients(neural, parameters, mean)
        n_coefficients = tf.shape(c)[0]
        zeros = tf.zeros_like(c)
        columns = []
        for i in self.free_idx:
            label = self.labels[i]
            if i == self.baseline:
                column = tf.concat([tf.zeros_like(neural), tf.ones_like(mean)[tf.newaxis, :]], axis=0)
            elif label in derivatives:
                column = tf.concat([derivatives[label], tf.zeros_like(mean)[tf.newaxis, :]], axis=0)
            else:
                column = zeros
            columns.append(column * slopes[:, i][tf.newaxis, :])
        d = tf.stack(columns, axis=-1)  # (frames + 1, voxels, free)
        gc = tf.matmul(gram, c)
        gd = tf.reshape(tf.matmul(gram, tf.reshape(d, [n_coefficients, -1])), tf.shape(d))
        ssr = tf.maximum(yy - 2.0 * tf.reduce_sum(c * z, axis=0) + tf.reduce_sum(c * gc, axis=0), 0.0)
        normal = tf.einsum("fvp,fvq->vpq", d, gd)
        gradient = tf.einsum("fvp,fv->vp", d, z - gc)
        return ssr, normal, gradient, (c, gc)

    def candidate_ssr(self, candidate, free, ssr, state, inputs):
        z, _, _, fixed, mean, rows, gram = inputs
        c, gc = state
        parameters = self.natural(candidate, fixed)
        new = self._coefficients(self.model._predict_neural(rows, parameters, None), parameters, mean)
        change = new - c
        return ssr + tf.reduce_sum(change * (tf.matmul(gram, new) + gc - 2.0 * z), axis=0)

    def candidate_feasible(self, candidate, inputs, margin=1.0):
        if not getattr(self.model, "constrained", False):
            return None
        fixed, rows = inputs[3], inputs[5]
        return self.model._feasible(rows, self.natural(candidate, fixed), margin=margin)
