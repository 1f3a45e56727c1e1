"""The compiled Levenberg–Marquardt steps: the loop over steps (:class:`StepKernel`), and the kernel for any model
(:class:`Kernel`: predictions and Jacobians over all volumes). :mod:`._gram` adds the kernel-space one for
per-voxel HRFs of linear models; :mod:`.levenberg_marquardt` chooses between them and runs the iterations."""

from __future__ import annotations

from .._tensorflow import tf

STEPS_PER_CALL = 5
LAMBDA_INIT, LAMBDA_MIN, LAMBDA_MAX = 1e-2, 1e-4, 1e7  # relative to each parameter's curvature
LAMBDA_DOWN, LAMBDA_UP = 0.3, 10.0
TINY = 1e-30  # a Jacobian column whose squared norm is below this counts as zero
# a voxel whose accepted step lowers its SSR by less than this fraction has converged and stops moving (1e-6 sat
# near float32 rounding of the SSR: on the Szinte data 1,746 of 2,308 voxels converged in 50 steps; 1e-4: 2,294 in
# 40, the same median R² to 1e-4 and agreement with the reference fits r(x) 0.897 → 0.898)
RELATIVE_TOLERANCE = 1e-4
#: standard errors are NaN for voxels closer than this factor to a model constraint (``EncodingModel._feasible``):
#: there the optimum is the constraint's, not a stationary point of the least squares
FEASIBLE_MARGIN = 1.25


class StepKernel:
    """The Levenberg–Marquardt loop over steps; subclasses say how to linearise the problem around ``free``.

    ``voxel_inputs(problem)`` gives the per-voxel tensors (with the axis that indexes voxels), ``shared_inputs``
    the others; the compiled function takes the solver state, then those, then the number of steps.
    """

    def __init__(self, problem, store_intermediate, voxel_specs, shared_specs):
        self.model = problem.model
        self.transforms = list(problem.transforms)
        self.free_idx, self.fixed_idx = list(problem.free_idx), list(problem.fixed_idx)
        self.n_labels = len(problem.labels)
        self.segments = problem.segments
        self.store_intermediate = bool(store_intermediate)
        self.n_traces = 0
        n_free = len(self.free_idx)
        spec = tf.TensorSpec
        state = [spec([None, n_free], tf.float32), spec([None], tf.float32), spec([None], tf.bool),
                 spec([None], tf.bool)]  # free, damping, converged, stalled
        self.steps = tf.function(self._steps, input_signature=[*state, *voxel_specs, *shared_specs,
                                                                spec([], tf.int32)])
        self.curvature = tf.function(self._curvature, input_signature=[state[0], *voxel_specs, *shared_specs])

    def natural(self, free, fixed):
        n_voxels = tf.shape(free)[0]
        columns = [None] * self.n_labels
        for j, i in enumerate(self.free_idx):
            columns[i] = self.transforms[i].forward(free[:, j])
        for j, i in enumerate(self.fixed_idx):
            columns[i] = fixed[:, j]
        columns = [tf.zeros([n_voxels]) if column is None else column for column in columns]
        return tf.stack(columns, axis=1)

    def linearise(self, free, inputs):
        """(ssr, normal equations J'J (voxels, P, P), gradient J'r (voxels, P), state for ``candidate_ssr``)."""
        raise NotImplementedError

    def candidate_ssr(self, candidate, free, ssr, state, inputs):
        raise NotImplementedError

    def candidate_feasible(self, candidate, inputs, margin=1.0):
        """(voxels,) bool: candidates inside the model's feasible set (``EncodingModel._feasible``); None when
        the model has no constraint beyond its bounds."""
        return None

    def fixed_of(self, inputs):
        raise NotImplementedError

    def _curvature(self, free, *inputs):
        """What the standard errors need at ``free``: SSR, the Gauss–Newton matrix J'J (confounds projected out)
        with respect to the free values, the slopes of the transforms (voxels, free) and whether each voxel is
        well inside the feasible set (:data:`FEASIBLE_MARGIN`)."""
        ssr, normal, _, _ = self.linearise(free, inputs)
        with tf.autodiff.ForwardAccumulator(free, tf.ones_like(free)) as accumulator:
            natural = self.natural(free, self.fixed_of(inputs))
        slopes = tf.gather(accumulator.jvp(natural, unconnected_gradients="zero"), self.free_idx, axis=1)
        inside = self.candidate_feasible(free, inputs, margin=FEASIBLE_MARGIN)
        if inside is None:
            inside = tf.ones_like(ssr, tf.bool)
        return ssr, normal, slopes, inside

    def _steps(self, free, damping, converged, stalled, *rest):
        self.n_traces += 1  # Python side effect: counts traces, not calls
        *inputs, n_steps = rest
        r2_sums = tf.TensorArray(tf.float32, size=n_steps)
        loss_sums = tf.TensorArray(tf.float32, size=n_steps)
        snapshots = tf.TensorArray(tf.float32, size=n_steps if self.store_intermediate else 0,
                                   element_shape=tf.TensorShape([None, self.n_labels]) if self.store_intermediate
                                   else None)
        sst = self.sst_of(inputs)
        ssr_now = tf.zeros_like(sst)
        for i in tf.range(n_steps):
            ssr, normal, gradient, state = self.linearise(free, inputs)
            r2_sums = r2_sums.write(i, tf.reduce_sum(1.0 - ssr / sst))
            loss_sums = loss_sums.write(i, tf.reduce_sum(ssr / sst))
            if self.store_intermediate:
                snapshots = snapshots.write(i, self.natural(free, self.fixed_of(inputs)))
            # Marquardt's damping, relative to each parameter's own curvature: the steps do not depend on the
            # scale of the data or on the units of the parameters (damping >= LAMBDA_MIN keeps the system
            # positive definite); a parameter without influence (zero column) gets a unit scale and no step
            # Solved in Jacobi-scaled form, (C + λI) u = D^-½ g with C = D^-½ N D^-½ (unit diagonal) and the step
            # D^-½ u — the same step as (N + λD) s = g, but with eigenvalues in [λ, P + λ]: never singular in
            # float32 (an unscaled near-singular system made MatrixSolve fail on 2,448 tuning voxels)
            diagonal = tf.linalg.diag_part(normal)
            scale = tf.where(diagonal > TINY, diagonal, tf.ones_like(diagonal))
            inv_sqrt = tf.math.rsqrt(scale)
            scaled = normal * inv_sqrt[:, :, tf.newaxis] * inv_sqrt[:, tf.newaxis, :]
            scaled = tf.where(tf.math.is_finite(scaled), scaled, 0.0)
            system = scaled + damping[:, tf.newaxis, tf.newaxis] * tf.eye(tf.shape(normal)[1])
            step = inv_sqrt * tf.linalg.solve(system, (gradient * inv_sqrt)[..., tf.newaxis])[..., 0]
            step = tf.where(tf.math.is_finite(step), step, 0.0)
            candidate = free + step
            new_ssr = self.candidate_ssr(candidate, free, ssr, state, inputs)
            moving = ~(converged | stalled)
            accept = tf.math.is_finite(new_ssr) & (new_ssr < ssr) & moving
            feasible = self.candidate_feasible(candidate, inputs)
            if feasible is not None:  # a step out of the model's feasible set is rejected like one that fits worse
                accept = accept & feasible
            free = tf.where(accept[:, tf.newaxis], candidate, free)
            ssr_now = tf.where(accept, new_ssr, ssr)
            small = (ssr - new_ssr) <= RELATIVE_TOLERANCE * ssr
            converged = converged | (accept & small)
            stalled = stalled | (moving & ~accept & (damping >= LAMBDA_MAX))
            damping = tf.clip_by_value(tf.where(accept, damping * LAMBDA_DOWN, damping * LAMBDA_UP),
                                       LAMBDA_MIN, LAMBDA_MAX)
        intermediate = snapshots.stack() if self.store_intermediate else tf.zeros([0, 0, self.n_labels])
        return (free, damping, converged, stalled, ssr_now, r2_sums.stack(), loss_sums.stack(), intermediate)


class Kernel(StepKernel):
    """Any model: predictions and Jacobians over all volumes (closed form where the model has one)."""

    def __init__(self, problem, store_intermediate):
        self.has_basis, self.has_weights = problem.basis is not None, problem.weights is not None
        self.fast = getattr(problem.model, "_prediction_and_jacobian", None)
        self.use_frames = bool(getattr(problem.model, "supports_frames", False))
        n_time, n_features = problem.paradigm.shape  # static: the models' convolutions need the run lengths
        n_rows = problem.rows.shape[0]  # the distinct paradigm rows (all of them for other models)
        spec = tf.TensorSpec
        voxel_specs = [spec([n_time, None], tf.float32),  # y (time, voxels), confounds projected out
                       spec([None], tf.float32),  # sst
                       spec([None, len(problem.fixed_idx)], tf.float32),  # fixed values
                       spec([None, None], tf.float32)]  # weights (features, voxels) or (0, voxels)
        shared_specs = [spec([n_rows, n_features], tf.float32),  # the paradigm's distinct rows (or all of it)
                        spec([n_time, None], tf.float32),  # basis (time, k) or (time, 0)
                        spec([n_time], tf.int32)]  # the row each time point shows
        super().__init__(problem, store_intermediate, voxel_specs, shared_specs)

    @staticmethod
    def voxel_inputs(problem):
        n_voxels = problem.n_voxels
        fixed = problem.fixed_values if problem.fixed_idx else tf.zeros([n_voxels, 0])
        weights = problem.weights if problem.weights is not None else tf.zeros([0, n_voxels])
        return [(problem.y, 1), (problem.sst, 0), (fixed, 0), (weights, 1)]

    @staticmethod
    def shared_inputs(problem):
        basis = problem.basis if problem.basis is not None else tf.zeros([problem.n_time, 0])
        return [problem.rows, basis, problem.frames]

    def sst_of(self, inputs):
        return inputs[1]

    def fixed_of(self, inputs):
        return inputs[2]

    def predict(self, paradigm, parameters, weights, frames):
        if self.use_frames:
            return self.model._predict(paradigm, parameters, weights if self.has_weights else None,
                                       segments=self.segments, frames=frames)
        return self.model._predict(paradigm, parameters, weights if self.has_weights else None,
                                   segments=self.segments)

    def project(self, basis, timeseries):
        if not self.has_basis:
            return timeseries
        return timeseries - tf.matmul(basis, tf.matmul(basis, timeseries, transpose_a=True))

    def jacobian(self, paradigm, free, fixed, weights, frames):
        """Predictions and their Jacobian (time, voxels, free), both before the confound projection."""
        weights = weights if self.has_weights else None
        if self.fast is not None:  # models that know a cheaper route than differentiating the whole prediction
            extra = {"frames": frames} if self.use_frames else {}
            result = self.fast(paradigm, lambda f: self.natural(f, fixed), free, weights, self.segments,
                               free_index=self.free_idx, **extra)
            if result is not None:
                return result
        n_free = len(self.free_idx)
        columns = []
        for j in range(n_free):
            tangent = tf.one_hot(tf.fill([tf.shape(free)[0]], j), n_free, dtype=tf.float32)
            with tf.autodiff.ForwardAccumulator(free, tangent) as accumulator:
                prediction = self.predict(paradigm, self.natural(free, fixed), weights, frames)
            columns.append(accumulator.jvp(prediction, unconnected_gradients="zero"))
        return prediction, tf.stack(columns, axis=-1)

    def linearise(self, free, inputs):
        y, _, fixed, weights, paradigm, basis, frames = inputs
        prediction, jac = self.jacobian(paradigm, free, fixed, weights, frames)
        residual = y - self.project(basis, prediction)
        ssr = tf.reduce_sum(tf.square(residual), axis=0)
        # with the projection P = I - BB': (PJ)'(PJ) = J'J - (B'J)'(B'J) and (PJ)'r = J'r (r = Pr), so the
        # Jacobian itself is never projected
        normal = tf.einsum("tvp,tvq->vpq", jac, jac)
        if self.has_basis:
            loadings = tf.einsum("tk,tvp->kvp", basis, jac)
            normal = normal - tf.einsum("kvp,kvq->vpq", loadings, loadings)
        gradient = tf.einsum("tvp,tv->vp", jac, residual)
        return ssr, normal, gradient, ()

    def candidate_ssr(self, candidate, free, ssr, state, inputs):
        y, _, fixed, weights, paradigm, basis, frames = inputs
        residual = y - self.project(basis, self.predict(paradigm, self.natural(candidate, fixed), weights, frames))
        return tf.reduce_sum(tf.square(residual), axis=0)

    def candidate_feasible(self, candidate, inputs, margin=1.0):
        if not getattr(self.model, "constrained", False):
            return None
        fixed, paradigm = inputs[2], inputs[4]
        return self.model._feasible(paradigm, self.natural(candidate, fixed), margin=margin)
