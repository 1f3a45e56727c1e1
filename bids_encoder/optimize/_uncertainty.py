"""Standard errors of fitted parameters from the Gauss–Newton matrix at the optimum.

At a least-squares optimum the covariance of the free (unconstrained) values is approximately σ² (JᵀJ)⁻¹, J the
Jacobian of the predictions with the confounds projected out and σ² = SSR / dof (dof: volumes − rank of the
confounds, spike regressors of censored volumes and run indicators included, − free parameters). The delta
method carries it to natural units through each transform's slope. It is undefined, and reported as NaN, where
the least-squares optimum is not a stationary point or not identified:

- a parameter at one of its bounds (its transform's slope below :data:`AT_BOUND` of its largest): NaN for it;
  the others' errors are those with it held fixed (the active bound's covariance);
- a voxel near a model constraint (2-D pRFs: a field the stimulus barely sees, see
  ``GaussianPRF2D.min_visibility``): NaN for every parameter;
- a near-degenerate voxel (the Jacobi-scaled JᵀJ has a condition number above 1 / :data:`MIN_RECIPROCAL_CONDITION`,
  e.g. an amplitude near zero that leaves position and size undetermined): NaN for every parameter;
- per-voxel HRF parameters fitted together with the model's: the HRF's delay and dispersion, and the parameters
  that trade off against them (``hrf_coupled_labels``: a 2-D pRF's ``sd``), are too nonlinear in the data for a
  Gauss–Newton interval. Simulated (120 volumes, SNR 2–3, LM started at the truth): sd correlates −0.8 with the
  dispersion and the 95 % intervals of sd, hrf_delay, hrf_dispersion held the truth for 83–87 %, 90–91 %, 76–84 %
  of voxels, while those of x, y and the amplitude held it for 94–96 %. They are NaN (see :func:`unreliable_labels`).
"""

from __future__ import annotations

import numpy as np

from .._tensorflow import tf

#: a transform slope below this share of its largest: the parameter sits at a bound
AT_BOUND = 4e-3
#: smallest ratio of the extreme eigenvalues of the Jacobi-scaled Gauss–Newton matrix (float32 Jacobians resolve
#: about 1e-6 of the largest direction; below it the inverse is noise)
MIN_RECIPROCAL_CONDITION = 1e-6


def natural_standard_errors(ssr, normal, slopes, inside, dof, max_slopes):
    """Natural-unit standard errors (voxels, free) from per-voxel SSR, JᵀJ in free values (voxels, P, P),
    transform slopes (voxels, P), feasibility (voxels,) and the residual degrees of freedom."""
    ssr = np.asarray(ssr, np.float64)
    normal = np.asarray(normal, np.float64)
    slopes = np.abs(np.asarray(slopes, np.float64))
    n_voxels, n_free = slopes.shape
    if n_free == 0 or n_voxels == 0:
        return np.full((n_voxels, n_free), np.nan)
    at_bound = slopes < AT_BOUND * np.asarray(max_slopes, np.float64)[np.newaxis, :]
    diagonal = np.einsum("vpp->vp", normal)
    usable = np.isfinite(diagonal) & (diagonal > 0)
    active = at_bound | ~usable  # held fixed
    scale = np.where(active, 1.0, np.sqrt(np.where(usable, diagonal, 1.0)))
    scaled = normal / (scale[:, :, np.newaxis] * scale[:, np.newaxis, :])
    scaled = np.where(np.isfinite(scaled), scaled, 0.0)
    keep = ~active
    scaled = scaled * (keep[:, :, np.newaxis] & keep[:, np.newaxis, :])
    scaled[:, np.arange(n_free), np.arange(n_free)] = 1.0  # unit diagonal: scaled, or a parameter held fixed
    eigenvalues = np.linalg.eigvalsh(scaled)
    degenerate = eigenvalues[:, 0] < MIN_RECIPROCAL_CONDITION * eigenvalues[:, -1]
    safe = np.where(degenerate[:, np.newaxis, np.newaxis], np.eye(n_free), scaled)
    variance = np.einsum("vpp->vp", np.linalg.inv(safe)) / scale**2
    sigma2 = ssr / max(int(dof), 1)
    errors = slopes * np.sqrt(np.maximum(variance, 0.0) * sigma2[:, np.newaxis])
    errors[active] = np.nan
    errors[degenerate | ~np.asarray(inside, bool) | ~np.isfinite(ssr)] = np.nan
    return errors


def gauss_newton_errors(problem, kernel, free, voxel_inputs, shared_inputs):
    """Standard errors (voxels × free parameters, natural units) of ``problem`` at the free values ``free``."""
    ssr, normal, slopes, inside = kernel.curvature(tf.constant(free, tf.float32), *(t for t, _ in voxel_inputs),
                                                   *shared_inputs)
    max_slopes = [problem.transforms[i].max_slope for i in problem.free_idx]
    return natural_standard_errors(ssr.numpy(), normal.numpy(), slopes.numpy(), inside.numpy(), problem.dof,
                                   max_slopes)


def unreliable_labels(model, free_labels):
    """Labels whose Gauss–Newton errors are not reported for ``model`` when ``free_labels`` are fitted: with free
    per-voxel HRF parameters, those and the model's ``hrf_coupled_labels`` (see the module docstring)."""
    hrf_model = getattr(model, "hrf_model", None)
    if hrf_model is None or not getattr(hrf_model, "unique_hrfs", False):
        return set()
    hrf_labels = set(hrf_model.get_parameter_labels())
    if not hrf_labels & set(free_labels):
        return set()
    return hrf_labels | set(getattr(model, "hrf_coupled_labels", ()))
