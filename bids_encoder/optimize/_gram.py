"""Levenberg–Marquardt for per-voxel HRFs of a linear model with fixed weights, in the space of the kernels.

With the weights fixed, each voxel's prediction is linear in its HRF kernel k (taps): ``D_v k + b_v`` with
``D_v = Σ_r w_rv L_r``, ``L_r`` the lagged copies (time × taps) of regressor r. With the confound projection P,
the residual sum of squares is a quadratic form of the kernel,

    SSR(k) = ‖y‖² − 2 cᵀk + kᵀ G k,   c = D_vᵀ y,   G = Σ_rs w_rv w_sv L_rᵀ P L_s,

where y is the voxel's projected data less its (fixed) baseline. The taps × taps matrices ``L_rᵀ P L_s`` are
shared by all voxels, so after one pass over the data (c and ‖y‖²) every LM step costs a few taps² operations per
voxel, whatever the number of volumes and confounds: the Jacobian of the kernel with respect to the HRF
parameters (forward mode through the kernel alone) gives ``J'J = dkᵀ G dk`` and ``J'r = dkᵀ (c − G k)``. The
candidate's SSR is computed as a difference, ``(k' − k)ᵀ (G (k' + k) − 2c)``, which keeps float32 accurate
however well the voxel is fitted.
"""

from __future__ import annotations

import numpy as np

from .._tensorflow import tf
from ..models.hrf import lagged
from ._steps import StepKernel


def gram_applicable(model, labels, free_labels, has_weights):
    """Whether the kernel-space solver applies: a linear model with per-voxel kernels and fixed weights whose free
    parameters are all HRF parameters (the baseline fixed)."""
    from ..models.linear import LinearModelWithBaselineHRF

    if not (isinstance(model, LinearModelWithBaselineHRF) and model.hrf_model.unique_hrfs and has_weights):
        return False
    hrf_labels = set(model.hrf_model.get_parameter_labels())
    return bool(free_labels) and set(free_labels) <= hrf_labels and "baseline" in labels


class GramKernel(StepKernel):
    """LM steps on per-voxel sufficient statistics (c, ‖y‖², G); see the module docstring."""

    def __init__(self, problem, store_intermediate):
        self.hrf_model = problem.model.hrf_model
        self.n_taps = len(self.hrf_model.times)
        self.labels = list(problem.labels)
        self.hrf_columns = [self.labels.index(label) for label in self.hrf_model.get_parameter_labels()]
        spec = tf.TensorSpec
        k = self.n_taps
        voxel_specs = [spec([None, k], tf.float32),  # c
                       spec([None], tf.float32),  # ‖y‖²
                       spec([None, k, k], tf.float32),  # G
                       spec([None], tf.float32),  # sst
                       spec([None, len(problem.fixed_idx)], tf.float32)]  # fixed values
        super().__init__(problem, store_intermediate, voxel_specs, [])

    # ------------------------------------------------------------------ set-up (once per chunk)
    def voxel_inputs(self, problem):
        paradigm = problem.paradigm
        n_time = paradigm.shape[0]
        shifted = lagged(paradigm, self.n_taps, problem.segments).numpy().astype(np.float64)  # (R, T, K)
        basis = None if problem.basis is None else problem.basis.numpy().astype(np.float64)
        projected = shifted if basis is None else shifted - np.einsum("tk,rkj->rtj", basis,
                                                                      np.einsum("tk,rtj->rkj", basis, shifted))
        blocks = np.einsum("rtk,stj->rskj", shifted, projected)  # L_r' P L_s: (R, R, K, K)
        weights = problem.weights.numpy().astype(np.float64)  # (R, V)
        gram = np.einsum("rv,sv,rskj->vkj", weights, weights, blocks, optimize=True)
        baseline = problem.fixed_values.numpy()[:, problem.fixed_idx.index(self.labels.index("baseline"))]
        constant = np.ones(n_time) if basis is None else np.ones(n_time) - basis @ (basis.T @ np.ones(n_time))
        y = problem.y - tf.constant(constant[:, np.newaxis].astype(np.float32)) * baseline[np.newaxis, :]
        # c = Σ_r w_r L_r' y (y is already in the complement of the confounds, so L_r' P y = L_r' y)
        per_regressor = tf.einsum("rtk,tv->rvk", tf.constant(shifted.astype(np.float32)), y)
        c = tf.einsum("rv,rvk->vk", tf.constant(weights.astype(np.float32)), per_regressor)
        yy = tf.reduce_sum(tf.square(y), axis=0)
        fixed = problem.fixed_values if problem.fixed_idx else tf.zeros([problem.n_voxels, 0])
        return [(c, 0), (yy, 0), (tf.constant(gram.astype(np.float32)), 0), (problem.sst, 0), (fixed, 0)]

    @staticmethod
    def shared_inputs(problem):
        return []

    def sst_of(self, inputs):
        return inputs[3]

    def fixed_of(self, inputs):
        return inputs[4]

    # ------------------------------------------------------------------ compiled parts
    def kernels(self, free, fixed):
        """Each voxel's kernel (voxels, taps) and its derivatives with respect to the free values (voxels, taps,
        free)."""
        n_free = len(self.free_idx)
        derivatives = []
        for j in range(n_free):
            tangent = tf.one_hot(tf.fill([tf.shape(free)[0]], j), n_free, dtype=tf.float32)
            with tf.autodiff.ForwardAccumulator(free, tangent) as accumulator:
                parameters = self.natural(free, fixed)
                kernel = self.hrf_model.get_kernel(tf.gather(parameters, self.hrf_columns, axis=1))  # (K, V)
            derivatives.append(tf.transpose(accumulator.jvp(kernel, unconnected_gradients="zero")))
        return tf.transpose(kernel), tf.stack(derivatives, axis=-1)

    def linearise(self, free, inputs):
        c, yy, gram, _, fixed = inputs
        kernel, d_kernel = self.kernels(free, fixed)
        g_kernel = tf.einsum("vij,vj->vi", gram, kernel)
        ssr = tf.maximum(yy - 2.0 * tf.reduce_sum(c * kernel, axis=1) + tf.reduce_sum(kernel * g_kernel, axis=1),
                         0.0)
        g_d = tf.einsum("vij,vjp->vip", gram, d_kernel)
        normal = tf.einsum("vip,viq->vpq", d_kernel, g_d)
        gradient = tf.einsum("vip,vi->vp", d_kernel, c - g_kernel)
        return ssr, normal, gradient, (kernel,)

    def candidate_ssr(self, candidate, free, ssr, state, inputs):
        c, _, gram, _, fixed = inputs
        (kernel,) = state
        parameters = self.natural(candidate, fixed)
        new_kernel = tf.transpose(self.hrf_model.get_kernel(tf.gather(parameters, self.hrf_columns, axis=1)))
        change = new_kernel - kernel
        delta = tf.reduce_sum(change * (tf.einsum("vij,vj->vi", gram, new_kernel + kernel) - 2.0 * c), axis=1)
        return ssr + delta
