"""One chunk of voxels set up for iterative fitting: variables, transforms, residuals, compiled loops."""

from __future__ import annotations

import logging

import numpy as np
from tqdm.auto import tqdm

from .._tensorflow import tf
from ..models._frames import distinct_rows
from ._inputs import projected_constant

logger = logging.getLogger(__name__)

STEPS_PER_CALL = 25  # compiled steps between two checks of the early-stopping rule

#: Settings the recipes pass to each solver. Levenberg–Marquardt reads only ``max_n_iterations`` (each voxel stops
#: on its own convergence rule; the other keys stay for the app's sidecars, which still quote them — to be
#: replaced by the per-voxel rule when the workflows are edited); Adam (and any Keras optimizer) reads all four
#: (they equal ``ParameterFitter.fit``'s defaults).
SOLVER_DEFAULTS = {
    "lm": {"max_n_iterations": 50, "min_n_iterations": 5, "lag": 5, "r2_atol": 1e-5},
    "adam": {"max_n_iterations": 1000, "min_n_iterations": 100, "lag": 100, "r2_atol": 1e-6},
}


class FitProblem:
    """Tensors and functions shared by the fitters for one chunk of (non-constant) voxels.

    Parameters live in an unconstrained space: ``free`` (voxels × free parameters) is the trainable variable,
    ``shared`` (1 × shared parameters) is broadcast to all voxels, fixed parameters are constants kept in
    their natural values (so they stay exactly as given). The model sees ``transform.forward`` of them.
    """

    def __init__(self, model, paradigm, data, init, segments, weights=None, basis=None, fixed=(), shared=(),
                 noise_model="ssq"):
        self.model = model
        self.labels = list(init.columns)
        transforms = model.transforms
        self.transforms = [transforms[label] for label in self.labels]
        self.free_idx = [i for i, label in enumerate(self.labels) if label not in fixed and label not in shared]
        self.shared_idx = [i for i, label in enumerate(self.labels) if label in shared]
        self.fixed_idx = [i for i, label in enumerate(self.labels) if label in fixed]
        self.segments = segments
        self.noise_model = noise_model
        self.paradigm = tf.constant(paradigm.to_numpy(), tf.float32)
        # the compiled LM steps compute a neural response once per distinct paradigm row (models/_frames.py)
        if getattr(model, "supports_frames", False):
            rows, frames = distinct_rows(paradigm.to_numpy())
            self.rows, self.frames = tf.constant(rows), tf.constant(frames)
        else:
            self.rows, self.frames = self.paradigm, tf.range(paradigm.shape[0], dtype=tf.int32)
        self.weights = None if weights is None else tf.constant(weights, tf.float32)
        y = data.to_numpy().astype(np.float64)
        if basis is not None and basis.shape[1]:
            y = y - basis @ (basis.T @ y)
            self.basis = tf.constant(basis, tf.float32)
        else:
            self.basis = None
        self.n_time, self.n_voxels = y.shape
        self.y = tf.constant(y, tf.float32)
        # R² is relative to the variance the confounds and a constant leave: regress the projected data on the
        # projected constant (the constant itself without confounds)
        constant = projected_constant(basis, y.shape[0])
        norm = float(constant @ constant)
        sst = np.sum(y**2, axis=0) - ((constant @ y) ** 2 / norm if norm > 1e-9 else 0.0)
        self.sst = tf.constant(np.maximum(sst, np.finfo(np.float32).tiny), tf.float32)
        natural = init.to_numpy().astype(np.float64)
        unconstrained = np.stack([t.backward(natural[:, i]) for i, t in enumerate(self.transforms)], axis=1)
        self.free = tf.Variable(unconstrained[:, self.free_idx].astype(np.float32), name="free_parameters")
        self.shared = tf.Variable(
            unconstrained[:, self.shared_idx].mean(axis=0, keepdims=True).astype(np.float32),
            name="shared_parameters",
        )
        self.fixed_values = tf.constant(natural[:, self.fixed_idx].astype(np.float32))
        self.variables = [v for v in (self.free, self.shared) if v.shape[1]]
        # residual degrees of freedom: volumes, less the confounds' rank (a spike column deletes a volume), less
        # the free parameters of each voxel (shared ones are spread over all voxels and not counted)
        rank = 0 if self.basis is None else int(self.basis.shape[1])
        self.dof = max(self.n_time - rank - len(self.free_idx), 1)
        if noise_model == "gaussian":
            ssr = self.ssr(self.natural_parameters()).numpy()
            self.log_sigma2 = tf.Variable(np.log(np.maximum(ssr / self.dof, 1e-30)).astype(np.float32))
            self.variables.append(self.log_sigma2)
        else:
            self.log_sigma2 = None

    # ------------------------------------------------------------------ model evaluation
    def natural_parameters(self, free=None, shared=None):
        """(voxels × parameters) tensor in natural units."""
        free = self.free if free is None else free
        shared = self.shared if shared is None else shared
        columns = [None] * len(self.labels)
        for j, i in enumerate(self.free_idx):
            columns[i] = self.transforms[i].forward(free[:, j])
        for j, i in enumerate(self.shared_idx):
            columns[i] = tf.fill([self.n_voxels], self.transforms[i].forward(shared[0, j]))
        for j, i in enumerate(self.fixed_idx):
            columns[i] = self.fixed_values[:, j]
        return tf.stack(columns, axis=1)

    def predict(self, parameters):
        return self.model._predict(self.paradigm, parameters, self.weights, segments=self.segments)

    def project(self, timeseries):
        if self.basis is None:
            return timeseries
        return timeseries - tf.matmul(self.basis, tf.matmul(self.basis, timeseries, transpose_a=True))

    def residuals(self, parameters):
        return self.y - self.project(self.predict(parameters))

    def ssr(self, parameters):
        return tf.reduce_sum(tf.square(self.residuals(parameters)), axis=0)

    def voxel_loss(self, ssr):
        """Each voxel's objective: SSR/SST (scale-free) or the Gaussian negative log-likelihood, with the residual
        degrees of freedom in place of the number of volumes (its σ² optimum is then SSR / dof, unbiased)."""
        if self.log_sigma2 is None:
            return ssr / self.sst
        return 0.5 * self.dof * self.log_sigma2 + 0.5 * ssr * tf.exp(-self.log_sigma2)

    def loss(self, ssr):
        """Scalar objective: the sum of the voxels' objectives."""
        return tf.reduce_sum(self.voxel_loss(ssr))

    def r2(self, ssr):
        return 1.0 - ssr / self.sst

    # ------------------------------------------------------------------ gradient descent
    def run_gradient_descent(self, optimizer, max_n_iterations, min_n_iterations, r2_atol, lag,
                             store_intermediate, progressbar, description="Adam", on_steps=None):
        """Fit in place; each voxel ends at the parameters of its lowest loss over all steps (with shared
        parameters, which couple the voxels: the step of the lowest total loss).

        ``on_steps(mean_r2, loss)`` is called with the values of every batch of steps (for TensorBoard).
        """
        optimizer.build(self.variables)
        best = _BestState(self)

        @tf.function
        def run_steps(n_steps):
            trace = tf.TensorArray(tf.float32, size=n_steps)
            losses = tf.TensorArray(tf.float32, size=n_steps)
            snapshots = tf.TensorArray(tf.float32, size=n_steps if store_intermediate else 0)
            for i in tf.range(n_steps):
                with tf.GradientTape() as tape:
                    parameters = self.natural_parameters()
                    ssr = self.ssr(parameters)
                    voxel_loss = self.voxel_loss(ssr)
                    loss = tf.reduce_sum(voxel_loss)
                gradients = tape.gradient(loss, self.variables)
                best.update(voxel_loss)  # the parameters before this step
                optimizer.apply_gradients(zip(gradients, self.variables, strict=True))
                trace = trace.write(i, tf.reduce_mean(self.r2(ssr)))
                losses = losses.write(i, loss)
                if store_intermediate:
                    snapshots = snapshots.write(i, parameters)
            return trace.stack(), losses.stack(), snapshots.stack() if store_intermediate else tf.zeros([0])

        history, snapshots = [], []
        converged = False
        with tqdm(total=max_n_iterations, desc=description, disable=not progressbar, leave=False) as bar:
            while len(history) < max_n_iterations:
                n_steps = min(STEPS_PER_CALL, max_n_iterations - len(history))
                trace, losses, snapshot = run_steps(tf.constant(n_steps))
                history.extend(trace.numpy().tolist())
                if store_intermediate:
                    snapshots.append(snapshot.numpy())
                if on_steps is not None:
                    on_steps(trace.numpy(), losses.numpy())
                bar.update(n_steps)
                bar.set_postfix(mean_r2=f"{history[-1]:.4f}")
                if self._stalled(history, min_n_iterations, r2_atol, lag):
                    converged = True
                    break
        best.update(self.voxel_loss(self.ssr(self.natural_parameters())))  # the parameters after the last step
        best.restore()
        logger.info("%s: %d iterations, mean R² %.4f (last step), best parameters per voxel kept", description,
                    len(history), history[-1])
        outcome = self.outcome(history, converged)
        if store_intermediate:
            outcome["intermediate"] = np.concatenate(snapshots, axis=0)
        return outcome

    @staticmethod
    def _stalled(history, min_n_iterations, r2_atol, lag):
        """The early-stopping rule: past min_n_iterations, mean R² gained < r2_atol over the last lag steps."""
        n = len(history)
        return n >= max(min_n_iterations, lag + 1) and history[-1] - history[-1 - lag] < r2_atol

    def outcome(self, history, converged, ssr=None):
        """Parameters, R², σ² and the history; ``ssr`` (numpy, per voxel) when the solver tracked it, else it is
        computed from one prediction."""
        parameters = self.natural_parameters()
        if ssr is None:
            ssr = self.ssr(parameters).numpy()
        return {
            "parameters": parameters.numpy(),
            "r2": (1.0 - ssr / self.sst.numpy()).astype(np.float32),
            "sigma2": None if self.log_sigma2 is None else ssr / self.dof,
            "history": np.asarray(history, dtype=np.float32),
            "n_iterations": len(history),
            "converged": converged,
        }


class _BestState:
    """Each voxel's variables at its lowest loss so far (all voxels together when parameters are shared)."""

    def __init__(self, problem):
        self.problem = problem
        self.loss = tf.Variable(tf.fill([problem.n_voxels], np.float32(np.inf)), name="best_loss")
        self.free = tf.Variable(problem.free, name="best_free")
        self.shared = tf.Variable(problem.shared, name="best_shared")
        self.log_sigma2 = None if problem.log_sigma2 is None else tf.Variable(problem.log_sigma2)

    def update(self, voxel_loss):
        if self.problem.shared_idx:  # coupled voxels: one step for all, the lowest total loss
            better = tf.fill(tf.shape(voxel_loss), tf.reduce_sum(voxel_loss) < tf.reduce_sum(self.loss))
        else:
            better = voxel_loss < self.loss
        better = better & tf.math.is_finite(voxel_loss)
        self.loss.assign(tf.where(better, voxel_loss, self.loss))
        self.free.assign(tf.where(better[:, tf.newaxis], self.problem.free, self.free))
        if self.problem.shared_idx:
            self.shared.assign(tf.where(tf.reduce_any(better), self.problem.shared, self.shared))
        if self.log_sigma2 is not None:
            self.log_sigma2.assign(tf.where(better, self.problem.log_sigma2, self.log_sigma2))

    def restore(self):
        self.problem.free.assign(self.free)
        self.problem.shared.assign(self.shared)
        if self.log_sigma2 is not None:
            self.problem.log_sigma2.assign(self.log_sigma2)
