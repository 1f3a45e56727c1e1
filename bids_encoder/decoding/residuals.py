"""The residual covariance across voxels, Ω, in van Bergen et al.'s (2015) form, by maximum likelihood."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.optimize

from .._tensorflow import tf
from ..models.likelihood import ModelResponses, check_data, is_circular

logger = logging.getLogger(__name__)

__all__ = ["ResidualFitter", "tuning_matrix"]

_TAU_FLOOR = 1e-4  # × the residuals' RMS: every voxel keeps some noise of its own, so Ω stays invertible


def tuning_matrix(model, stimulus_range=None, parameters=None, weights=None, paradigm=None, paradigm_fn=None):
    """W: each voxel's tuning over a stimulus basis, (basis × voxels), whose Gram matrix WᵀW enters Ω.

    Parameters
    ----------
    model : EncodingModel
    stimulus_range : array or DataFrame, optional
        Stimulus values (1-D models) or points (with ``paradigm_fn``) forming the basis. Without it: the
        model's features when it has a weight matrix (linear models) or pixels (2-D pRF models): the identity
        paradigm, one feature on at a time, whose responses are the weights or the receptive fields; for other
        models, 100 values evenly spanning the ``paradigm``'s first column (``[0, 2π)`` for von Mises models).
    parameters, weights : DataFrame, optional
        Fall back to the model's.
    paradigm : DataFrame, optional
        The fitted paradigm (for the default 1-D range).
    paradigm_fn : callable, optional
        Maps the grid points (points × dimensions) to paradigm rows (points × features).

    Returns
    -------
    DataFrame, shape (basis, voxels)
        The neural response (no baseline, no HRF) of every voxel to every basis stimulus.

    Notes
    -----
    This follows braincoder's documented choice for models without weights: "set up a grid of plausible
    stimulus values and set the height of the PRF as the weight of those stimulus values", so that σ² WᵀW is
    the covariance of independent noise of variance σ² in the population tuned to each grid value, and voxels
    with overlapping tuning share more of it. σ² therefore depends on the grid's density, not only on the data.
    """
    basis = _basis(model, stimulus_range, paradigm, paradigm_fn, weights)
    responses = ModelResponses(model, basis, parameters, weights)
    tuning = responses.neural(tf.constant(basis.to_numpy(np.float32))).numpy()
    return pd.DataFrame(tuning, index=basis.index, columns=responses.voxels)


def _basis(model, stimulus_range, paradigm, paradigm_fn, weights):
    if stimulus_range is not None:
        values = stimulus_range.to_numpy(np.float32) if isinstance(stimulus_range, pd.DataFrame) else \
            np.asarray(stimulus_range, dtype=np.float32)
        if values.ndim == 1:
            values = values[:, np.newaxis]
        rows = paradigm_fn(values) if paradigm_fn is not None else values
        return pd.DataFrame(np.asarray(rows, dtype=np.float32))
    n_features = None
    if model.uses_weights:
        weights = model.weights if weights is None else weights
        if weights is not None:
            n_features = np.shape(weights)[0]
        else:
            n_features = model.get_paradigm(paradigm).shape[1]
    elif hasattr(model, "grid_coordinates"):
        n_features = len(model.grid_coordinates)
    if n_features is not None:
        return pd.DataFrame(np.eye(n_features, dtype=np.float32))
    if is_circular(model):
        return pd.DataFrame(np.linspace(0.0, 2 * np.pi, 100, endpoint=False, dtype=np.float32))
    values = model.get_paradigm(paradigm).to_numpy()[:, 0]
    return pd.DataFrame(np.linspace(values.min(), values.max(), 100, dtype=np.float32))


class ResidualFitter:
    """Maximum-likelihood residual covariance Ω = τ τᵀ ∘ (ρ + (1 − ρ) I) + σ² WᵀW.

    τ (per voxel) is each voxel's own noise SD, ρ the correlation that all voxels share, σ² the variance of
    noise in the stimulus space that reaches voxels through their tuning W (:func:`tuning_matrix`). With
    shrinkage λ the covariance is Ω' = (1 − λ) Ω + λ S, S the empirical residual covariance.

    Parameters
    ----------
    model : EncodingModel
    data : DataFrame, shape (time, voxels)
    paradigm : DataFrame, shape (time, features), optional
        Falls back to the model's.
    parameters, weights : DataFrame, optional
        The fitted encoding model (fall back to the model's).
    stimulus_range, paradigm_fn : optional
        The stimulus basis of W (see :func:`tuning_matrix`).
    wwt : array, shape (voxels, voxels), optional
        WᵀW given directly (then ``stimulus_range`` is not used).

    Attributes
    ----------
    residuals : DataFrame (time × voxels)
    WWT : DataFrame (voxels × voxels)
    omega : DataFrame (after :meth:`fit`)
    tau : Series; rho, sigma2, dof : float (after :meth:`fit`; ``dof`` is None for Gaussian residuals)

    Notes
    -----
    Ω is positive definite by construction: τ = softplus(z) (plus a floor of 1e-4 of the residuals' RMS),
    ρ = sigmoid(z) in (0, 1) (no negative shared correlation), σ² = softplus(z), so Ω ⪰ (1 − ρ) diag(τ²) ≻ 0. The log-likelihood uses Ω's Cholesky
    factor (log-determinant from its diagonal, the residuals whitened by a triangular solve); it is minimised by
    L-BFGS (scipy) on a compiled TensorFlow function of the unconstrained parameters, on residuals scaled to unit
    RMS (the scale is restored afterwards). For Student-t residuals Ω is the scale matrix (the covariance is
    Ω ν/(ν − 2)).
    """

    def __init__(self, model, data, paradigm=None, parameters=None, weights=None, stimulus_range=None,
                 paradigm_fn=None, wwt=None):
        self.model = model
        paradigm = model.get_paradigm(paradigm)
        prediction = model.predict(paradigm, parameters, weights)
        data = check_data(data, prediction.columns)
        if len(data) != len(prediction):
            raise ValueError(f"data have {len(data)} time points but the paradigm has {len(prediction)}")
        if len(data) < 2:
            raise ValueError("ResidualFitter needs at least two time points")
        self.voxels = prediction.columns
        self.residuals = pd.DataFrame(data.to_numpy() - prediction.to_numpy(), index=data.index, columns=self.voxels)
        if wwt is None:
            tuning = tuning_matrix(model, stimulus_range, parameters, weights, paradigm, paradigm_fn).to_numpy()
            wwt = tuning.astype(np.float64).T @ tuning.astype(np.float64)
        wwt = np.asarray(wwt, dtype=np.float64)
        if wwt.shape != (len(self.voxels),) * 2 or not np.all(np.isfinite(wwt)):
            raise ValueError(f"WWT must be a finite ({len(self.voxels)}, {len(self.voxels)}) matrix")
        self.WWT = pd.DataFrame(0.5 * (wwt + wwt.T), index=self.voxels, columns=self.voxels)
        self.omega = self.tau = self.rho = self.sigma2 = self.dof = None

    # ------------------------------------------------------------------ fitting
    def fit(self, method="gauss", lambd=0.0, init_rho=None, init_tau=None, init_sigma2=None, init_dof=10.0,
            dof=None, max_n_iterations=1000, tolerance=1e-9):
        """Fit τ, ρ, σ² (and ν) by maximum likelihood; set ``model.omega``.

        Parameters
        ----------
        method : {'gauss', 't'}
            Multivariate normal or multivariate Student-t residuals.
        lambd : float in [0, 1)
            Shrinkage towards the empirical covariance: Ω' = (1 − λ) Ω + λ S.
        init_rho, init_tau, init_sigma2, init_dof : optional
            Starting values (default: the mean residual correlation, the residual SDs, a tenth of the mean
            residual variance spread over WᵀW's diagonal, 10).
        dof : float, optional
            With ``method='t'``, keep the degrees of freedom fixed at this value instead of estimating them.
        max_n_iterations : int
            L-BFGS iterations.
        tolerance : float
            L-BFGS's relative tolerance on the (per-value) negative log-likelihood.

        Returns
        -------
        DataFrame, shape (voxels, voxels)
            Ω (Ω' with shrinkage). Its parameters are in the attributes ``tau``, ``rho``, ``sigma2``, ``dof``.
        """
        if method not in ("gauss", "t"):
            raise ValueError(f"method must be 'gauss' or 't', got {method!r}")
        if not 0.0 <= lambd < 1.0:
            raise ValueError(f"lambd must be in [0, 1), got {lambd}")
        problem = _Problem(self.residuals.to_numpy(np.float64), self.WWT.to_numpy(), method, lambd, dof)
        z0 = problem.initial(init_tau, init_rho, init_sigma2, init_dof)
        result = scipy.optimize.minimize(problem.value_and_gradient, z0, jac=True, method="L-BFGS-B",
                                         options={"maxiter": int(max_n_iterations), "ftol": tolerance,
                                                  "gtol": 1e-7})
        self.n_iterations, self.converged = int(result.nit), bool(result.success)
        if not result.success:
            logger.info("ResidualFitter: L-BFGS stopped after %d iterations: %s", result.nit, result.message)
        tau, rho, sigma2, fitted_dof = problem.natural(result.x)
        self._problem, self._z = problem, result.x
        self.tau = pd.Series(tau, index=self.voxels, name="tau")
        self.rho, self.sigma2 = rho, sigma2
        self.dof = None if method == "gauss" else fitted_dof
        # in data units: the scaled residuals' density times the Jacobian of the scaling
        self.log_likelihood = -float(result.fun) * problem.n_values - problem.n_values * np.log(problem.scale)
        self.omega = pd.DataFrame(problem.omega_numpy(tau, rho, sigma2), index=self.voxels, columns=self.voxels)
        self.model.omega = self.omega.to_numpy(np.float32)
        logger.info("ResidualFitter: rho %.3f, sigma2 %.4g, median tau %.4g%s (%d iterations)", rho, sigma2,
                    float(np.median(tau)), "" if self.dof is None else f", dof {self.dof:.3g}", self.n_iterations)
        return self.omega

    def standard_errors(self):
        """Asymptotic standard errors of τ, ρ, σ² (and ν): the square roots of the inverse information's diagonal.

        Gaussian residuals: the expected (Fisher) information in closed form, (T/2) tr(Ω⁻¹ ∂Ω/∂θᵢ Ω⁻¹ ∂Ω/∂θⱼ),
        in float64. Student-t residuals: the observed information, the Hessian of the negative log-likelihood
        by automatic differentiation (float64; a few seconds for 200 voxels). Parameters at a boundary of their
        range (ρ or σ² near 0) have no meaningful SE; when the information is not positive definite the SEs
        are NaN (with a warning).

        Returns
        -------
        Series
            One SE per voxel's τ (labelled by voxel), then ``rho``, ``sigma2`` (and ``dof`` when estimated).
        """
        if self.omega is None:
            raise RuntimeError("Call fit() before standard_errors()")
        problem = self._problem
        if problem.method == "gauss":
            information = problem.fisher_information(self.tau.to_numpy(), self.rho, self.sigma2)
            scales = np.ones(len(information))
        else:
            information, scales = problem.hessian(self._z)
        labels = [*self.voxels, "rho", "sigma2"] + (["dof"] if problem.estimate_dof else [])
        try:
            if np.linalg.eigvalsh(information).min() <= 0:
                raise np.linalg.LinAlgError
            se = np.sqrt(np.diag(np.linalg.inv(information))) * scales
        except np.linalg.LinAlgError:
            logger.warning("The information matrix of the residual likelihood is not positive definite: "
                           "no standard errors")
            se = np.full(len(labels), np.nan)
        if not problem.use_wwt:
            se[len(self.voxels) + 1] = np.nan
        return pd.Series(se, index=pd.Index(labels, dtype=object), name="se")


_DTYPE = tf.float64


class _Problem:
    """The negative log-likelihood of residuals scaled to unit RMS, as a function of unconstrained values.

    In float64: the likelihood of a few hundred voxels is flat near its optimum, and float32 rounding moved the
    L-BFGS solution by 0.01 in ρ between data and the same data × 1e4; the matrices are (voxels × voxels), cheap."""

    def __init__(self, residuals, wwt, method, lambd, dof):
        n_time, n_voxels = residuals.shape
        self.n_time, self.n_voxels, self.n_values = n_time, n_voxels, n_time * n_voxels
        self.scale = float(np.sqrt(np.mean(residuals**2))) or 1.0
        scaled = residuals / self.scale
        self.wwt_scale = float(np.mean(np.diag(wwt)))
        self.use_wwt = self.wwt_scale > 0
        self.wwt_scale = self.wwt_scale if self.use_wwt else 1.0
        self.method, self.lambd = method, float(lambd)
        self.estimate_dof = method == "t" and dof is None
        self.fixed_dof = None if dof is None else float(dof)
        self.r_t = tf.constant(scaled.T, _DTYPE)  # (voxels, time)
        self.wwt = tf.constant(wwt / self.wwt_scale, _DTYPE)
        self.empirical = tf.constant(scaled.T @ scaled / n_time, _DTYPE)
        self._scaled, self._wwt = scaled, wwt
        self._value_and_gradient = tf.function(self._loss_and_gradient,
                                               input_signature=[tf.TensorSpec([n_voxels + 3], _DTYPE)])

    # transforms ---------------------------------------------------------------
    def initial(self, tau, rho, sigma2, dof):
        scaled = self._scaled
        sd = scaled.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        if rho is None:
            corr = np.corrcoef(scaled.T) if self.n_voxels > 1 else np.ones((1, 1))
            off = corr[~np.eye(self.n_voxels, dtype=bool)]
            rho = float(np.clip(np.nanmean(off) if off.size else 0.1, 0.05, 0.9))
        tau = sd * 0.9 if tau is None else np.asarray(tau, dtype=np.float64) / self.scale
        sigma2 = 0.1 if sigma2 is None else float(sigma2) * self.wwt_scale / self.scale**2
        tau = np.maximum(tau - _TAU_FLOOR, 1e-3)
        return np.concatenate([_softplus_inverse(tau), [_logit(rho), _softplus_inverse(max(sigma2, 1e-4)),
                                                         _softplus_inverse(float(dof))]]).astype(np.float64)

    def _natural_tf(self, z):
        n = self.n_voxels
        tau = tf.nn.softplus(z[:n]) + _TAU_FLOOR
        rho = tf.sigmoid(z[n])
        sigma2 = tf.nn.softplus(z[n + 1]) if self.use_wwt else tf.constant(0.0, _DTYPE)
        dof = tf.nn.softplus(z[n + 2]) + 1e-2 if self.estimate_dof else tf.constant(self.fixed_dof or 0.0, _DTYPE)
        return tau, rho, sigma2, dof

    def natural(self, z):
        tau, rho, sigma2, dof = (t.numpy() for t in self._natural_tf(tf.constant(z, _DTYPE)))
        return (tau.astype(np.float64) * self.scale, float(rho), float(sigma2) * self.scale**2 / self.wwt_scale,
                float(dof) if self.method == "t" else None)

    # likelihood -----------------------------------------------------------------
    def _omega(self, tau, rho, sigma2):
        outer = tau[:, tf.newaxis] * tau[tf.newaxis, :]
        omega = rho * outer + (1.0 - rho) * tf.linalg.diag(tf.square(tau)) + sigma2 * self.wwt
        if self.lambd > 0:
            omega = (1.0 - self.lambd) * omega + self.lambd * self.empirical
        return omega

    def _nll(self, tau, rho, sigma2, dof):
        """The negative log-likelihood, summed over time points (scaled residuals)."""
        factor = tf.linalg.cholesky(self._omega(tau, rho, sigma2))
        half_logdet = tf.reduce_sum(tf.math.log(tf.linalg.diag_part(factor)))
        whitened = tf.linalg.triangular_solve(factor, self.r_t, lower=True)
        quad = tf.reduce_sum(tf.square(whitened), axis=0)  # (time,)
        n_voxels = tf.constant(float(self.n_voxels), _DTYPE)
        if self.method == "gauss":
            per_time = half_logdet + 0.5 * quad + 0.5 * n_voxels * np.log(2 * np.pi)
        else:
            per_time = (tf.math.lgamma(0.5 * dof) - tf.math.lgamma(0.5 * (dof + n_voxels))
                        + 0.5 * n_voxels * tf.math.log(dof * np.pi) + half_logdet
                        + 0.5 * (dof + n_voxels) * tf.math.log1p(quad / dof))
        return tf.reduce_sum(per_time)

    def _loss_and_gradient(self, z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            loss = self._nll(*self._natural_tf(z)) / self.n_values
        return loss, tape.gradient(loss, z)

    def value_and_gradient(self, z):
        loss, gradient = self._value_and_gradient(tf.constant(z, _DTYPE))
        loss, gradient = float(loss.numpy()), gradient.numpy().astype(np.float64)
        if not np.isfinite(loss) or not np.all(np.isfinite(gradient)):
            return 1e10, np.zeros_like(z)  # a failed factorisation: L-BFGS's line search backs off
        return loss, gradient

    def hessian(self, z):
        """Hessian of the summed negative log-likelihood in the natural (scaled) parameters, and the factors
        that turn SEs in scaled units back into data units."""
        tau, rho, sigma2, dof = self._natural_tf(tf.constant(z, _DTYPE))
        theta = tf.concat([tau, [rho, sigma2]] + ([[dof]] if self.estimate_dof else []), axis=0)
        n = self.n_voxels

        @tf.function
        def second_derivatives(theta):
            with tf.GradientTape() as outer:
                outer.watch(theta)
                with tf.GradientTape() as inner:
                    inner.watch(theta)
                    nll = self._nll(theta[:n], theta[n], theta[n + 1], theta[n + 2] if self.estimate_dof else dof)
                gradient = inner.gradient(nll, theta)
            return outer.jacobian(gradient, theta)

        hessian = second_derivatives(theta).numpy().astype(np.float64)
        scales = np.concatenate([np.full(n, self.scale), [1.0, self.scale**2 / self.wwt_scale]]
                                + ([[1.0]] if self.estimate_dof else []))
        if not self.use_wwt:  # σ² is not a parameter then
            hessian[n + 1, :] = hessian[:, n + 1] = 0.0
            hessian[n + 1, n + 1] = 1.0
        return 0.5 * (hessian + hessian.T), scales

    def omega_numpy(self, tau, rho, sigma2):
        """Ω in data units (float64) from natural parameters in data units."""
        omega = rho * np.outer(tau, tau) + (1.0 - rho) * np.diag(tau**2) + sigma2 * self._wwt
        if self.lambd > 0:
            residuals = self._scaled * self.scale
            omega = (1.0 - self.lambd) * omega + self.lambd * residuals.T @ residuals / self.n_time
        return omega


    def fisher_information(self, tau, rho, sigma2):
        """Expected information of Gaussian residuals for (τ, ρ, σ²) in data units (float64, closed form).

        ∂Ω/∂τₖ = eₖuₖᵀ + uₖeₖᵀ with uₖ = ρτ + (1 − ρ)τₖeₖ, ∂Ω/∂ρ = ττᵀ − diag(τ²), ∂Ω/∂σ² = WᵀW, all times
        (1 − λ) with shrinkage; the traces then reduce to element-wise products of V × V matrices.
        """
        n = self.n_voxels
        precision = np.linalg.inv(self.omega_numpy(tau, rho, sigma2))
        shrink = 1.0 - self.lambd
        u = shrink * (rho * np.outer(tau, np.ones(n)) + (1.0 - rho) * np.diag(tau))  # columns uₖ
        d_rho = shrink * (np.outer(tau, tau) - np.diag(tau**2))
        d_sigma2 = shrink * self._wwt
        pu = precision @ u
        info = np.zeros((n + 2, n + 2))
        info[:n, :n] = self.n_time * (precision * (u.T @ pu) + pu * pu.T)
        for index, derivative in ((n, d_rho), (n + 1, d_sigma2)):
            pbp = precision @ derivative @ precision
            info[:n, index] = info[index, :n] = self.n_time * np.einsum("ik,ik->k", pbp, u)
        p_rho, p_sigma2 = precision @ d_rho, precision @ d_sigma2
        info[n, n] = 0.5 * self.n_time * np.sum(p_rho * p_rho.T)
        info[n + 1, n + 1] = 0.5 * self.n_time * np.sum(p_sigma2 * p_sigma2.T)
        info[n, n + 1] = info[n + 1, n] = 0.5 * self.n_time * np.sum(p_rho * p_sigma2.T)
        if not self.use_wwt:
            info[n + 1, :] = info[:, n + 1] = 0.0
            info[n + 1, n + 1] = 1.0
        return info


def _softplus_inverse(x):
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 30, x, np.log(np.expm1(np.minimum(x, 30))))


def _logit(p):
    return float(np.log(p) - np.log1p(-p))
