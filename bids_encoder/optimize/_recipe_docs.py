"""The parameters the recipes of :mod:`bids_encoder.optimize.recipes` share, and the fields of their result:
numpydoc entries, added to the docstrings there (:func:`bids_encoder._docstrings.add_parameters`)."""

__all__ = ["PRFFIT_PARAMETERS", "RECIPE_PARAMETERS"]

RECIPE_PARAMETERS = """data : DataFrame or array, shape (time, voxels)
paradigm : DataFrame or array, shape (time, features)
    As for :class:`ParameterFitter` (a (run, time) MultiIndex marks runs).
optimizer : 'lm', 'adam' or a Keras optimizer
    The iterative stage's solver (:meth:`ParameterFitter.fit`).
confounds : array, shape (time, k), optional
    Projected out of data and predictions at every stage.
fixed_pars : list of str, optional
    Parameters kept at their starting (grid) values in the iterative stage (staged: the model's stage only).
memory_limit : int, optional
    Bytes of working memory, as for :class:`ParameterFitter`.
progressbar : bool
    Show the grid's and the solver's progress.
hrf_grid : dict, optional
    Grid values of the per-voxel HRF parameters (``{'hrf_delay': [...], 'hrf_dispersion': [...]}``);
    :func:`default_hrf_grid` when None (3 × 3 values around the canonical HRF). Ignored without them.
min_grid_r2 : float
    Voxels whose grid R² (closed-form baseline and amplitude) is below it keep their grid estimate and skip
    the iterative stage (:data:`MIN_GRID_R2` by default; 0 iterates every voxel).
**fit_kwargs
    Passed to :meth:`ParameterFitter.fit` (its stopping rule defaults to :data:`SOLVER_DEFAULTS`)."""

#: the fields of :class:`~bids_encoder.optimize.recipes.PRFFit`
PRFFIT_PARAMETERS = """parameters : DataFrame, shape (voxels, parameters)
    The final estimates (NaN for constant voxels).
r2 : Series, shape (voxels,)
    Their R² (with the confounds and run means projected out).
grid_parameters, grid_r2 : DataFrame, Series
    The same for the grid stage, baseline and amplitude solved in closed form (a staged fit's seeded grid: its
    linear scale only, ``baseline`` 0).
n_iterations : int
    The iterative stage's largest number of steps (over chunks of voxels).
converged : bool
    Whether every chunk of voxels converged.
timings : dict
    Stage → wall time (s).
fitter : ParameterFitter, optional
    The iterative stage's fitter (its ``predictions``, ``voxel_converged``, …).
stages : dict
    The fits the result was seeded from (``{'gaussian': PRFFit}`` for a staged fit).
iterated : Series of bool, optional
    The voxels that entered the iterative stage (grid R² at least ``min_grid_r2``); the others keep their grid
    estimate.
standard_errors : DataFrame, shape (voxels, parameters), optional
    Gauss–Newton standard errors of the iterated voxels, natural units (NaN where undefined, see
    :meth:`ParameterFitter.fit`).
min_grid_r2 : float
    The gate of the iterative stage."""
