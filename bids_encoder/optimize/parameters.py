"""Iterative (gradient-based) fitting of per-voxel encoding-model parameters."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .._memory import resolve_memory_limit
from .._tensorflow import tf
from ..models.base import run_lengths
from ._gram import gram_applicable
from ._inputs import check_data_and_paradigm, confound_basis, iterate_mask, meaningful_voxels
from ._problem import FitProblem
from ._records import stack_intermediate, tensorboard_log
from ._uncertainty import unreliable_labels
from .devices import compute_devices, run_chunks
from .grid import as_frame, grid_search, refine_baseline_and_amplitude
from .levenberg_marquardt import problem_standard_errors, run_levenberg_marquardt

logger = logging.getLogger(__name__)

__all__ = ["ParameterFitter"]

NOISE_MODELS = ("ssq", "gaussian")
#: how many times a solver holds the model's own per-voxel intermediates (see ``EncodingModel._floats_per_voxel``)
MODEL_COPIES = {"adam": 4, "lm": 7}


class ParameterFitter:
    """Fit per-voxel parameters of an encoding model to data.

    Parameters
    ----------
    model : EncodingModel
        Linear models use their stored ``weights`` (fixed while the parameters are fitted).
    data : DataFrame, shape (time, voxels)
    paradigm : DataFrame, shape (time, features)
    memory_limit : int, optional
        Bytes of working memory beyond the data (every stage tiles its voxels within it); default: a quarter of
        the memory this process can get, at most 2 GB (:func:`bids_encoder._memory.default_memory_limit`).
    log_dir : str, path, None or False
        Write TensorBoard scalars there: every ``fit`` writes one run, a new sub-folder ``fit-001``,
        ``fit-002``, …, with ``loss`` and ``mean_r2`` per step (steps continue across chunks of voxels; each
        chunk's mean R² is over its own voxels), for every solver. None or False: nothing is written.
    devices : list of str, optional
        Logical devices to split the chunks of voxels over (``'/device:GPU:0'``, …); every visible GPU by
        default, else the CPU (see :mod:`bids_encoder.optimize.devices`). ``self.chunk_devices`` records where
        each chunk ran.
    """

    def __init__(self, model, data, paradigm, memory_limit=None, log_dir=False, devices=None):
        self.model = model
        self.devices = devices
        self._predictions, self._predicted = None, None
        self.data, self.paradigm = check_data_and_paradigm(model, data, paradigm)
        self.memory_limit = resolve_memory_limit(memory_limit)
        self.log_dir = log_dir
        self.segments = run_lengths(self.paradigm.index)

    # ------------------------------------------------------------------ helpers
    def _weights(self):
        if not self.model.uses_weights:
            return None
        if self.model.weights is None:
            raise ValueError(
                f"{type(self.model).__name__} needs weights to fit its parameters: "
                "fit them first with WeightFitter and pass them to the model"
            )
        weights = self.model._check_weights(self.model.weights, self.paradigm)
        voxels = self.data.columns
        if not weights.columns.equals(voxels):
            same_number = weights.shape[1] == len(voxels)
            if same_number and weights.columns.is_unique and set(weights.columns) == set(voxels):
                weights = weights.reindex(columns=voxels)  # the same labels in another order
            elif same_number and weights.columns.equals(pd.RangeIndex(len(voxels))):
                pass  # no voxel labels (numpy weights): aligned by position
            else:
                raise ValueError(
                    f"The model's weights have {weights.shape[1]} columns that do not match the data's "
                    f"{len(voxels)} voxels: give them the data's column labels, or no labels (numpy) in the "
                    "data's order")
        weights = weights.to_numpy()
        if not np.all(np.isfinite(weights)):
            raise ValueError("The model's weights contain NaN or infinite values")
        return weights

    def _initial_parameters(self, init_pars):
        labels = self.model.get_parameter_labels()
        n_voxels = self.data.shape[1]
        if init_pars is None:
            init_pars = self.model.parameters
        if init_pars is None and self.model.uses_weights:
            init_pars = self.model.get_default_parameters(n_voxels, index=self.data.columns)
            if "baseline" in labels:
                init_pars["baseline"] = self.data.mean(axis=0).to_numpy()
        if init_pars is None:
            raise ValueError(
                f"init_pars are needed for {type(self.model).__name__}: start from fit_grid's result"
            )
        if isinstance(init_pars, pd.DataFrame):
            missing = [label for label in labels if label not in init_pars.columns]
            if missing:
                raise ValueError(f"init_pars lack column(s) {missing}")
            init_pars = init_pars[labels]
            if len(init_pars) == n_voxels and not init_pars.index.equals(self.data.columns):
                if set(init_pars.index) == set(self.data.columns):
                    init_pars = init_pars.reindex(self.data.columns)
        array = np.asarray(init_pars, dtype=np.float32)
        if array.ndim == 1 and array.shape[0] == len(labels):
            array = np.tile(array, (n_voxels, 1))
        if array.shape != (n_voxels, len(labels)):
            raise ValueError(f"init_pars must have shape ({n_voxels}, {len(labels)}), got {array.shape}")
        frame = pd.DataFrame(array, index=self.data.columns, columns=labels)
        frame.columns.name = "parameter"
        return frame

    def _check_finite_init(self, init, mask):
        bad = ~np.all(np.isfinite(init.to_numpy()[mask]), axis=1)
        if bad.any():
            names = list(init.index[mask][bad][:5])
            raise ValueError(f"init_pars have NaN or infinite values for {bad.sum()} non-constant voxel(s), e.g. {names}")

    def _check_names(self, names, what):
        labels = self.model.get_parameter_labels()
        names = [] if names is None else ([names] if isinstance(names, str) else list(names))
        unknown = [name for name in names if name not in labels]
        if unknown:
            raise ValueError(f"Unknown parameter(s) in {what}: {unknown}; the model has {labels}")
        return names

    def _chunks(self, voxel_indices, n_parameters, n_free, use_lm, basis, gram=False):
        """Chunks of voxels whose working set stays under ``memory_limit``.

        Per voxel: a dozen (time)-long series, the parameters and their optimiser state, the model's own
        intermediates (2-D pRFs: fields over all pixels) as many times as the solver keeps them (Adam's tape and
        gradients; LM's primals, tangents and candidate step: measured on 100 × 100 and 80 × 80 apertures, 8 and
        20 pixel-long vectors per voxel) and, for LM, the Jacobian and its normal equations. Once: the paradigm
        and its copies, the confound basis."""
        n_time, n_features = self.paradigm.shape
        model_floats = self.model._floats_per_voxel(n_time, n_features)
        if use_lm and gram:  # kernel-space LM: the voxel's series, its statistics (taps², float64 while built)
            taps = len(self.model.hrf_model.times)
            per_voxel = 4 * (12 * n_time + 16 * n_parameters + 2 * n_features * n_time) + 24 * taps * taps
        else:
            per_voxel = 4 * (12 * n_time + 16 * n_parameters
                             + MODEL_COPIES["lm" if use_lm else "adam"] * model_floats)
        if use_lm and not gram:
            per_voxel += 4 * (2 * n_time * (n_free + 2) + 4 * n_free * n_free)
        fixed = 4 * self.model._fixed_floats(n_time, n_features) + (0 if basis is None else 12 * basis.size)
        # each device holds one chunk at a time, within the budget (a GPU's own memory): the chunks, and so the
        # results, do not depend on the number of devices
        budget = self.memory_limit - fixed
        if budget < per_voxel:
            logger.warning("memory_limit (%d bytes) is below what one voxel needs (%d fixed + %d per voxel): "
                           "fitting one voxel at a time; a memory_limit of %d bytes would fit 256 at once",
                           self.memory_limit, fixed, per_voxel, fixed + 256 * per_voxel)
        size = int(max(1, budget // per_voxel))
        return [voxel_indices[i : i + size] for i in range(0, len(voxel_indices), size)] or [voxel_indices]

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        max_n_iterations=1000,
        min_n_iterations=100,
        init_pars=None,
        confounds=None,
        optimizer=None,
        fixed_pars=None,
        shared_pars=None,
        noise_model="ssq",
        store_intermediate_parameters=False,
        r2_atol=1e-06,
        lag=100,
        learning_rate=0.01,
        progressbar=True,
        **kwargs,
    ):
        """Fit the parameters iteratively: Levenberg–Marquardt by default, or gradient descent.

        The signature is braincoder's: ``max_n_iterations`` caps both solvers; ``min_n_iterations``, ``r2_atol``,
        ``lag``, ``learning_rate`` and Adam's keywords are read by gradient descent only.

        With LM each voxel stops on its own rule: it has converged once an accepted step lowers its residual sum
        of squares by less than a relative 1e-4, or stalled once its damping reached its maximum without an
        accepted step; the fit ends when every voxel has stopped (typically in 10–50 steps), or at the cap.

        Parameters
        ----------
        max_n_iterations : int
            The largest number of steps.
        min_n_iterations : int
            Gradient descent: steps before the early-stopping rule is checked.
        init_pars : DataFrame (voxels × parameters), optional
            Starting values (for example from ``fit_grid``); the stored parameters otherwise.
        confounds : array or DataFrame, shape (time, k), optional
            Nuisance regressors: their span is projected out of both the data and the predictions, so that
            parameters explain only what the confounds cannot. With several runs, the indicators of runs 2..n
            always join them: every run has its own mean, ``baseline`` is the first run's level, and R² is
            relative to the variance that the run means and confounds leave (as in ``WeightFitter``).
        optimizer : keras optimizer, 'lm', 'adam' or None
            ``'lm'`` runs the batched Levenberg–Marquardt solver (second order, compiled once per model family
            and shrinking to the voxels that still move; no ``shared_pars``). ``'adam'`` is
            ``Adam(learning_rate, **kwargs)``; any Keras optimizer instance is used as given. None (the default)
            picks the best that applies: LM, unless ``shared_pars`` or Adam arguments in ``kwargs`` ask for
            gradient descent (Adam, as braincoder does).
        fixed_pars : list of str
            Parameters kept exactly at their initial values.
        shared_pars : list of str
            Parameters tied across voxels (one value for all, initialised at the mean).
        noise_model : {'ssq', 'gaussian'}
            'ssq' minimises the residual sum of squares; 'gaussian' the Gaussian negative log-likelihood with
            a free variance per voxel. ``self.estimated_sigma2`` is then SSR / dof per voxel, with the residual
            degrees of freedom dof = volumes − rank of the confounds (spike columns and run indicators
            included) − free parameters per voxel (fixed and shared ones not counted).
        store_intermediate_parameters : bool
            Keep the parameters of every step in ``self.intermediate_parameters`` (indexed by step).
        r2_atol : float
            Gradient descent: the smallest gain in mean R² over ``lag`` steps that keeps the fit going.
        lag : int
            Gradient descent: the window of the stopping rule, in steps.
        learning_rate : float
            Step size of ``optimizer='adam'``.
        progressbar : bool
            Show step and mean R² with tqdm.
        **kwargs
            ``iterate``: boolean per voxel (array or Series on the data's columns), the voxels to fit; the others
            keep ``init_pars`` (their R² is computed there, their standard errors are NaN) — the recipes' gate
            on the grid R². Any other keyword goes to Adam.

        Returns
        -------
        DataFrame, shape (voxels × parameters)
            NaN for voxels whose data are constant. ``self.r2`` (Series) and ``self.predictions`` are set, and
            ``self.voxel_converged``, ``self.voxel_stalled`` (Series of bool; False for voxels not fitted): with
            ``'lm'``, each voxel's stop (converged or stalled, see above); with gradient descent, whether the
            early-stopping rule ended the fit (the same for every voxel) and False.
            ``self.iterated``: the voxels fitted. ``self.standard_errors``: DataFrame (voxels × parameters) in
            natural units from the Gauss–Newton matrix at the solution, σ² (JᵀJ)⁻¹ with σ² = SSR / dof (see
            :mod:`bids_encoder.optimize._uncertainty`); NaN for fixed and shared parameters, voxels not
            iterated, parameters at a bound, and voxels where the approximation fails (near-degenerate, at a
            model constraint).
        """
        iterate = kwargs.pop("iterate", None)
        if noise_model not in NOISE_MODELS:
            raise ValueError(f"Unknown noise_model {noise_model!r}; choose one of {list(NOISE_MODELS)}")
        if kwargs and not (optimizer is None or (isinstance(optimizer, str) and optimizer.lower() == "adam")):
            raise ValueError(f"Extra optimizer arguments {sorted(kwargs)} need optimizer=None or 'adam'")
        if optimizer is None:
            optimizer = "adam" if (shared_pars or kwargs) else "lm"
        if isinstance(optimizer, str) and optimizer.lower() == "adam":
            optimizer = tf.keras.optimizers.Adam(float(learning_rate), **kwargs)
            kwargs = {}
        use_lm = isinstance(optimizer, str)
        max_n_iterations, min_n_iterations, lag = int(max_n_iterations), int(min_n_iterations), int(lag)
        r2_atol = float(r2_atol)
        if min_n_iterations < 0 or max_n_iterations < 1 or lag < 1:
            raise ValueError("max_n_iterations and lag must be at least 1 and min_n_iterations non-negative")
        fixed = self._check_names(fixed_pars, "fixed_pars")
        shared = self._check_names(shared_pars, "shared_pars")
        if set(fixed) & set(shared):
            raise ValueError(f"Parameters cannot be both fixed and shared: {sorted(set(fixed) & set(shared))}")
        if use_lm and optimizer.lower() not in ("lm", "levenberg-marquardt"):
            raise ValueError(f"Unknown optimizer {optimizer!r}: pass a Keras optimizer, None, 'adam' or 'lm'")
        if use_lm and shared:
            raise ValueError("shared_pars couple voxels; fit them with a gradient-descent optimizer, not 'lm'")
        init = self._initial_parameters(init_pars)
        basis = confound_basis(confounds, self.data.shape[0], self.segments)
        weights = self._weights()
        mask = meaningful_voxels(self.data)
        self._check_finite_init(init, mask)
        iterated = mask & iterate_mask(iterate, self.data.columns)
        voxels = np.flatnonzero(iterated)
        n_free = len(init.columns) - len(fixed) - len(shared)
        free_labels = [label for label in init.columns if label not in fixed and label not in shared]
        gram = use_lm and gram_applicable(self.model, list(init.columns), free_labels, weights is not None)
        chunks = self._chunks(voxels, init.shape[1], n_free, use_lm, basis, gram=gram)
        if shared and len(chunks) > 1:  # tied parameters need every voxel in one problem
            logger.warning("shared_pars need all voxels in one chunk: memory_limit is exceeded")
            chunks = [voxels]

        labels = self.model.get_parameter_labels()
        free_columns = [labels.index(label) for label in free_labels]
        result = pd.DataFrame(np.nan, index=self.data.columns, columns=labels, dtype=np.float32)
        r2 = np.full(self.data.shape[1], np.nan, dtype=np.float32)
        sigma2 = np.full(self.data.shape[1], np.nan, dtype=np.float32)
        errors = np.full((self.data.shape[1], len(labels)), np.nan, dtype=np.float32)
        voxel_converged = np.zeros(self.data.shape[1], dtype=bool)
        voxel_stalled = np.zeros(self.data.shape[1], dtype=bool)
        self.history = []
        self.batch_sizes = []  # LM: voxels still moving at every call, per chunk
        intermediate = []
        self.n_iterations = 0
        self.converged = True
        log, writer = tensorboard_log(self.log_dir)
        label = "LM" if use_lm else "Adam"
        chunks = [chunk for chunk in chunks if len(chunk)]

        def fit_chunk(numbered):
            number, chunk = numbered
            problem = FitProblem(
                self.model, self.paradigm, self.data.iloc[:, chunk], init.iloc[chunk], self.segments,
                weights=None if weights is None else weights[:, chunk], basis=basis,
                fixed=fixed, shared=shared, noise_model=noise_model,
            )
            description = f"{label} {number + 1}/{len(chunks)}" if len(chunks) > 1 else label
            steps = []  # (mean R², loss) of every batch of steps, logged in chunk order afterwards

            def record(mean_r2, loss):
                steps.append((mean_r2, loss))

            if use_lm:
                outcome = run_levenberg_marquardt(problem, max_n_iterations, store_intermediate_parameters,
                                                  progressbar, description=description, on_steps=record)
            else:
                opt = optimizer
                if len(chunks) > 1:  # a fresh state per chunk
                    opt = optimizer.__class__.from_config(optimizer.get_config())
                outcome = problem.run_gradient_descent(
                    opt, max_n_iterations, min_n_iterations, r2_atol, lag, store_intermediate_parameters,
                    progressbar, description=description, on_steps=record)
                if not shared:  # the same Gauss–Newton standard errors at the solution gradient descent found
                    outcome["standard_errors"] = problem_standard_errors(problem)
            outcome["steps"] = steps
            outcome["placed_on"] = problem.free.device  # where its variables (and so its steps) live
            return outcome

        devices = compute_devices() if self.devices is None else list(self.devices)
        if not use_lm and len(devices) > 1 and not isinstance(optimizer, tf.keras.optimizers.Adam):
            devices = devices[:1]  # a Keras optimizer instance other than Adam is shared state: one device
        outcomes, _ = run_chunks(fit_chunk, list(enumerate(chunks)), devices)
        self.chunk_devices = [outcome["placed_on"] for outcome in outcomes]
        for chunk, outcome in zip(chunks, outcomes, strict=True):
            result.iloc[chunk] = outcome["parameters"]
            r2[chunk] = outcome["r2"]
            voxel_converged[chunk] = outcome.get("voxel_converged", outcome["converged"])
            voxel_stalled[chunk] = outcome.get("voxel_stalled", False)
            if outcome.get("standard_errors") is not None and free_columns:
                errors[np.ix_(chunk, free_columns)] = outcome["standard_errors"]
            if outcome["sigma2"] is not None:
                sigma2[chunk] = outcome["sigma2"]
            self.history.append(outcome["history"])
            self.batch_sizes.append(outcome.get("batch_sizes", []))
            self.n_iterations = max(self.n_iterations, outcome["n_iterations"])
            self.converged &= outcome["converged"]
            if store_intermediate_parameters:
                intermediate.append((chunk, outcome["intermediate"]))
            if log is not None:
                for mean_r2, loss in outcome["steps"]:
                    log(mean_r2, loss)
        for name in unreliable_labels(self.model, free_labels):  # see optimize._uncertainty
            errors[:, labels.index(name)] = np.nan
        kept = np.flatnonzero(mask & ~iterated)  # not iterated: their starting values, R² there
        if kept.size:
            result.iloc[kept] = init.iloc[kept].to_numpy()
            r2[kept] = self._r2_at(init.iloc[kept], kept, basis, weights)

        if writer is not None:
            writer.close()
        self.r2 = pd.Series(r2, index=self.data.columns, name="r2")
        self.voxel_converged = pd.Series(voxel_converged, index=self.data.columns, name="converged")
        self.voxel_stalled = pd.Series(voxel_stalled, index=self.data.columns, name="stalled")
        self.iterated = pd.Series(iterated, index=self.data.columns, name="iterated")
        self.standard_errors = as_frame(errors, labels, self.data.columns)
        self._predictions = None  # computed on first use (whole-brain predictions are large)
        self._predicted = (result, weights)
        self.estimated_sigma2 = (
            pd.Series(sigma2, index=self.data.columns, name="sigma2") if noise_model == "gaussian" else None
        )
        if store_intermediate_parameters:
            self.intermediate_parameters = stack_intermediate(intermediate, labels, self.data.columns)
        self.parameters = result
        return result

    def _r2_at(self, parameters, voxels, basis, weights):
        """R² of ``parameters`` (of the voxels ``voxels``), confounds projected out, in chunks under memory_limit."""
        n_time, n_features = self.paradigm.shape
        per_voxel = 4 * (6 * n_time + self.model._floats_per_voxel(n_time, n_features))
        size = int(max(1, self.memory_limit // per_voxel))
        out = np.empty(len(voxels), dtype=np.float32)
        for start in range(0, len(voxels), size):
            part = slice(start, start + size)
            chunk = voxels[part]
            problem = FitProblem(self.model, self.paradigm, self.data.iloc[:, chunk], parameters.iloc[part],
                                 self.segments, weights=None if weights is None else weights[:, chunk],
                                 basis=basis, fixed=list(parameters.columns))
            out[part] = problem.outcome([], True)["r2"]
        return out

    @property
    def predictions(self):
        """Predictions (time × voxels DataFrame) of the last ``fit``'s parameters, before the confound projection;
        NaN for voxels not fitted. Computed on first access, in chunks of voxels under ``memory_limit``."""
        if self._predictions is None:
            self._predictions = self.predict_voxels(np.arange(self.data.shape[1]))
        return self._predictions

    def predict_voxels(self, voxels):
        """:attr:`predictions` of some voxels only (NaN for voxels not fitted), in tiles under ``memory_limit``: a
        report's few voxels need not cost a whole-brain prediction.

        Parameters
        ----------
        voxels : array of int
            Column positions in the data.

        Returns
        -------
        DataFrame, shape (time, len(voxels))
        """
        if self._predicted is None:
            raise AttributeError("predictions exist after fit()")
        voxels = np.asarray(voxels, dtype=np.int64)
        parameters, weights = self._predicted
        values = np.full((self.data.shape[0], len(voxels)), np.nan, dtype=np.float32)
        chosen = parameters.to_numpy()[voxels]
        fitted = np.flatnonzero(np.all(np.isfinite(chosen), axis=1))
        n_time, n_features = self.paradigm.shape
        per_voxel = 4 * (4 * n_time + self.model._floats_per_voxel(n_time, n_features))
        size = int(max(1, self.memory_limit // per_voxel))
        paradigm = tf.constant(self.paradigm.to_numpy(), tf.float32)
        for start in range(0, len(fitted), size):
            chunk = fitted[start : start + size]
            values[:, chunk] = self.model._predict(
                paradigm, tf.constant(chosen[chunk], tf.float32),
                None if weights is None else tf.constant(weights[:, voxels[chunk]], tf.float32),
                segments=self.segments).numpy()
        return pd.DataFrame(values, index=self.data.index, columns=self.data.columns[voxels])

    @predictions.setter
    def predictions(self, value):
        self._predictions = value

    def fit_grid(self, *args, use_correlation_cost=False, positive_amplitude=True, confounds=None,
                 progressbar=True):
        """Exhaustive search over a grid of parameter values.

        Parameters
        ----------
        *args : one list of values per parameter label, in ``model.get_parameter_labels()`` order
            Every combination is tried. Give ``None`` for ``baseline`` and ``amplitude`` to solve them per
            voxel in closed form (least squares) instead.
        use_correlation_cost : bool
            Rank grid points by the correlation of prediction and data (equivalently, by R² with baseline and
            amplitude in closed form); baseline and amplitude values in ``args`` are then ignored.
        positive_amplitude : bool
            With closed-form amplitudes, only positive ones (negatively correlated points rank last).
        confounds : array (time × k), optional
            Projected out of data and predictions (with the indicators of runs 2..n when there are several).
        progressbar : bool
            Show the search's progress.

        Returns
        -------
        DataFrame (voxels × parameters): the best grid point per voxel (NaN for constant voxels).
        ``self.grid_r2`` holds the R² of that point.
        """
        labels = self.model.get_parameter_labels()
        if len(args) != len(labels):
            raise ValueError(f"fit_grid needs one list of values per parameter {labels}, got {len(args)}")
        mask = meaningful_voxels(self.data)
        basis = confound_basis(confounds, self.data.shape[0], self.segments)
        result = np.full((self.data.shape[1], len(labels)), np.nan, dtype=np.float32)
        r2 = np.full(self.data.shape[1], np.nan, dtype=np.float32)
        if mask.any():
            best, score = grid_search(
                self.model, self.paradigm.to_numpy(), self.data.to_numpy(), self.segments, list(args),
                basis=basis, use_correlation_cost=use_correlation_cost, positive_amplitude=positive_amplitude,
                memory_limit=self.memory_limit, progressbar=progressbar, devices=self.devices,
                voxels=np.flatnonzero(mask))
            result[mask], r2[mask] = best, score
        self.grid_r2 = pd.Series(r2, index=self.data.columns, name="r2")
        self.grid_parameters = as_frame(result, labels, self.data.columns)
        return self.grid_parameters

    def refine_baseline_and_amplitude(self, parameters, positive_amplitude=False, confounds=None):
        """Least-squares baseline and amplitude per voxel, the other parameters as given.

        Parameters
        ----------
        parameters : DataFrame (voxels × parameters) or array
            Starting values (their baseline and amplitude are replaced); rows with NaN stay NaN.
        positive_amplitude, confounds
            As for :meth:`fit_grid` (no positive constraint by default).

        Returns
        -------
        DataFrame (voxels × parameters), NaN rows kept for constant voxels.
        """
        labels = self.model.get_parameter_labels()
        frame = self._initial_parameters(parameters)
        valid = meaningful_voxels(self.data) & np.all(np.isfinite(frame.to_numpy()), axis=1)
        result = np.full(frame.shape, np.nan, dtype=np.float32)
        if valid.any():
            result[valid] = refine_baseline_and_amplitude(
                self.model, self.paradigm.to_numpy(), self.data.to_numpy(), self.segments,
                frame.to_numpy()[valid], basis=confound_basis(confounds, self.data.shape[0], self.segments),
                positive_amplitude=positive_amplitude, voxels=np.flatnonzero(valid), memory_limit=self.memory_limit)
        return as_frame(result, labels, self.data.columns)
