"""t and F statistics to z scores and p-values, from log-probabilities so that extreme values stay finite."""

from __future__ import annotations

import numpy as np
from scipy import special, stats

__all__ = ["t_to_z_p", "f_to_z_p"]


def t_to_z_p(t, df):
    """One-sided (upper-tail) p of Student's t and the z with the same tail probability (sign of t).

    Computed from ``logsf`` (t ≥ 0) or ``logcdf`` (t < 0), so that t = 40 gives a finite z (≈ 13) and p near 1 is
    not rounded to 1 before the z is taken. NaN stays NaN.
    """
    t = np.asarray(t, dtype=np.float64)
    df = np.broadcast_to(np.asarray(df, dtype=np.float64), t.shape)
    z = np.full(t.shape, np.nan)
    p = np.full(t.shape, np.nan)
    upper = np.isfinite(t) & (t >= 0)
    lower = np.isfinite(t) & (t < 0)
    log_p = stats.t.logsf(t[upper], df[upper])
    z[upper] = -special.ndtri_exp(log_p)
    p[upper] = np.exp(log_p)
    log_q = stats.t.logcdf(t[lower], df[lower])  # the lower tail: p = 1 - q
    z[lower] = special.ndtri_exp(log_q)
    p[lower] = -np.expm1(log_q)
    return z, p


def f_to_z_p(f, df_numerator, df_denominator):
    """Upper-tail p of Fisher's F and the z with the same upper-tail probability (negative when p > 0.5)."""
    f = np.asarray(f, dtype=np.float64)
    z = np.full(f.shape, np.nan)
    p = np.full(f.shape, np.nan)
    finite = np.isfinite(f)
    log_p = stats.f.logsf(f[finite], df_numerator, df_denominator)
    log_q = stats.f.logcdf(f[finite], df_numerator, df_denominator)
    small = log_p < np.log(0.5)
    z[finite] = np.where(small, -special.ndtri_exp(np.minimum(log_p, 0.0)), special.ndtri_exp(np.minimum(log_q, 0.0)))
    p[finite] = np.where(small, np.exp(log_p), -np.expm1(log_q))
    return z, p
