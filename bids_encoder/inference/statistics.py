"""t and F statistics to z scores and p-values, from log-probabilities so that extreme values stay finite."""

from __future__ import annotations

import sys

import numpy as np
from scipy import special, stats

__all__ = ["t_to_z_p", "f_to_z_p"]


# Hill's expansion is used where its error in z is below 5e-11 (measured against scipy on a grid, tested)
HILL_MIN_DF = 100.0
HILL_MAX_T = 8.0


def t_to_z_p(t, df):
    """One-sided (upper-tail) p of Student's t and the z with the same tail probability (sign of t).

    With at least 100 degrees of freedom and ``|t| ≤ 8`` (most of a brain), z comes from Hill's normal expansion
    of Student's t (Algorithm 395, Comm. ACM 13, 617, 1970), whose error there is below 5e-11, and ``p = Φ(−z)``:
    a few elementwise operations instead of the incomplete beta function, several times faster. Elsewhere, exactly
    from ``logsf`` (t ≥ 0) or ``logcdf`` (t < 0), so that t = 40 gives a finite z (≈ 13) and p near 1 is not
    rounded to 1 before the z is taken. NaN stays NaN.

    Parameters
    ----------
    t : array-like
        t statistics.
    df : float or array-like
        Degrees of freedom (broadcast against ``t``; ``inf``: the normal distribution).

    Returns
    -------
    z, p : ndarray
        The z of the same one-sided tail, with the sign of t, and the upper-tail p.
    """
    t = np.asarray(t, dtype=np.float64)
    scalar = np.ndim(df) == 0
    df = np.broadcast_to(np.asarray(df, dtype=np.float64), t.shape)
    z = np.full(t.shape, np.nan)
    p = np.full(t.shape, np.nan)
    finite = np.isfinite(t)
    fast = finite & (df >= HILL_MIN_DF) & np.isfinite(df) & (np.abs(t) <= HILL_MAX_T)
    if fast.any():  # on the whole array at once (TensorFlow, all cores), kept where it applies
        hill_z, hill_p = _hill(t, float(df.flat[0]) if scalar else df)
        z[fast], p[fast] = hill_z[fast], hill_p[fast]
    normal = finite & np.isinf(df)  # Student's t with infinite degrees of freedom is the normal distribution
    z[normal], p[normal] = t[normal], special.ndtr(-t[normal])
    upper = finite & ~fast & ~normal & (t >= 0)
    lower = finite & ~fast & ~normal & (t < 0)
    log_p = _t_log_tail(t[upper], df[upper])
    z[upper] = -special.ndtri_exp(log_p)
    p[upper] = np.exp(log_p)
    log_q = _t_log_tail(-t[lower], df[lower])  # the lower tail: p = 1 - q
    z[lower] = special.ndtri_exp(log_q)
    p[lower] = -np.expm1(log_q)
    return z, p


def _log_beta_tail(a, b, x):
    """``log I_x(a, b)`` where it underflows (x small): ``x^a (1 − x)^b / (a B(a, b)) · ₂F₁(a + b, 1; a + 1; x)``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a * np.log(x) + b * np.log1p(-x) - np.log(a) - special.betaln(a, b)
                + np.log(special.hyp2f1(a + b, 1.0, a + 1.0, x)))


def _t_log_tail(t, df):
    """``log P(T > t)``, t ≥ 0: scipy's, and beyond its range (``−inf`` for t in the hundreds) from the series."""
    log_p = stats.t.logsf(t, df)
    far = np.isneginf(log_p)
    if far.any():
        d = np.broadcast_to(df, t.shape)[far]
        log_p[far] = np.log(0.5) + _log_beta_tail(d / 2.0, 0.5, d / (d + t[far] ** 2))
    return log_p


def _hill(t, df):
    """z (and p = Φ(−z)) of Student's t by Hill's (1970) normalising expansion; with TensorFlow (all cores) when it
    is loaded already, else numpy (this module is imported before TensorFlow starts)."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not hasattr(tf, "constant"):
        z = _hill_z(np.asarray(t), df, np.log1p, np.sqrt, np.sign)
        return z, special.ndtr(-z)
    z = _hill_z(tf.constant(t, dtype=tf.float64), tf.constant(df, dtype=tf.float64), tf.math.log1p, tf.sqrt, tf.sign)
    return z.numpy(), (0.5 * tf.math.erfc(z / np.sqrt(2.0))).numpy()


def _hill_z(t, df, log1p, sqrt, sign):
    """``y = (df − ½) log(1 + t²/df)``, ``z = sign(t) √y (1 + (y + 3 + P(y) / (0.8 y² + 100 + b)) / b)``,
    ``b = 48 (df − ½)²``, ``P(y) = ((−0.4 y − 3.3) y − 24) y − 85.5``."""
    a = df - 0.5
    b = 48.0 * a * a
    y = a * log1p(t * t / df)
    correction = ((((-0.4 * y - 3.3) * y - 24.0) * y - 85.5) / (0.8 * y * y + 100.0 + b) + y + 3.0) / b
    return sign(t) * (1.0 + correction) * sqrt(y)


def f_to_z_p(f, df_numerator, df_denominator):
    """Upper-tail p of Fisher's F and the z with the same upper-tail probability (negative when p > 0.5).

    z is taken from the smaller tail (``fdtrc`` above the median, ``fdtr`` below it); an upper tail below 1e-300
    (F in the hundreds) is taken from the series of the incomplete beta function in log space, so that z stays
    finite.

    Parameters
    ----------
    f : array-like
        F statistics.
    df_numerator, df_denominator : float or array-like
        Their degrees of freedom.

    Returns
    -------
    z, p : ndarray
        The z of the same upper tail, and the upper-tail p; NaN where F is NaN.
    """
    f = np.asarray(f, dtype=np.float64)
    z = np.full(f.shape, np.nan)
    p = np.full(f.shape, np.nan)
    finite = np.isfinite(f)
    upper = special.fdtrc(df_numerator, df_denominator, np.maximum(f[finite], 0.0))
    values = -special.ndtri(upper)
    lower = upper >= 0.5
    values[lower] = special.ndtri(special.fdtr(df_numerator, df_denominator, np.maximum(f[finite][lower], 0.0)))
    tiny = upper < 1e-300
    if tiny.any():
        far = f[finite][tiny]
        values[tiny] = -special.ndtri_exp(_log_beta_tail(df_denominator / 2.0, df_numerator / 2.0,
                                                         df_denominator / (df_denominator + df_numerator * far)))
    z[finite], p[finite] = values, upper
    return z, p
