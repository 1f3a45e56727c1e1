"""Summaries of gridded stimulus posteriors: mean, mode, SD and an equal-tailed interval per dimension."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from ..models.likelihood import _circular_flags, cell_sizes, grid_log_weights

__all__ = ["posterior_summary", "interval_contains"]

_STATISTICS = ("mean", "mode", "sd", "lower", "upper")


def posterior_summary(pdf, circular=None, period=None, interval=0.95, log=None):
    """Posterior mean, mode, SD and equal-tailed interval of every row of a gridded posterior.

    Parameters
    ----------
    pdf : DataFrame, shape (time points, grid points)
        From :func:`stimulus_pdf` (densities or log densities; columns: the grid values, a MultiIndex in 2-D).
    circular : bool or sequence of bool, optional
        Angles of period ``period``: circular mean, circular SD sqrt(−2 ln R) (in the stimulus units), and the
        interval around the circular mean. Defaults to what :func:`stimulus_pdf` recorded (``pdf.attrs``).
    period : float, optional
        The period of circular dimensions (default 2π).
    interval : float
        The probability inside the interval (0.95: from the 2.5th to the 97.5th percentile).
    log : bool, optional
        Whether ``pdf`` holds log densities (default: as recorded in ``pdf.attrs``, else False).

    Returns
    -------
    DataFrame, indexed like ``pdf``
        Columns ``mean``, ``mode``, ``sd``, ``lower``, ``upper`` for one dimension; ``<dim>_mean`` … for each
        dimension of a multi-dimensional grid (marginal mean, SD and interval; the mode is the joint grid mode).
        Circular values are wrapped into [g, g + period), g the smallest grid value: an interval with
        ``lower > upper`` crosses the wrap (see :func:`interval_contains`).

    Notes
    -----
    The mass of each grid cell (density × cell volume) is spread evenly across the cell, so the cumulative
    distribution is piecewise linear and the percentiles are interpolated within cells.
    """
    if not 0 < interval < 1:
        raise ValueError(f"interval must be in (0, 1), got {interval}")
    attrs = pdf.attrs
    log = attrs.get("log", False) if log is None else log
    period = attrs.get("period", 2 * np.pi) if period is None else period
    columns = pdf.columns
    values = ([columns.get_level_values(i).to_numpy(np.float64) for i in range(columns.nlevels)]
              if isinstance(columns, pd.MultiIndex) else [columns.to_numpy(np.float64)])
    names = list(columns.names) if isinstance(columns, pd.MultiIndex) else [columns.name]
    flags = _circular_flags(attrs.get("circular", False) if circular is None else circular, len(values))

    array = pdf.to_numpy(np.float64)
    with np.errstate(divide="ignore"):
        log_density = array if log else np.log(np.maximum(array, 0.0))
    log_mass = log_density + grid_log_weights(columns, flags, period)[np.newaxis, :]
    mass = np.exp(log_mass - logsumexp(log_mass, axis=1, keepdims=True))
    modes = np.argmax(log_density, axis=1)

    result = {}
    for axis, name, flag in zip(values, names, flags, strict=True):
        unique, inverse = np.unique(axis, return_inverse=True)
        marginal = np.zeros((len(array), len(unique)))
        np.add.at(marginal.T, inverse, mass.T)
        widths = cell_sizes(unique, flag, period)
        stats = (_circular(marginal, unique, widths, period, interval) if flag
                 else _linear(marginal, unique, widths, interval))
        stats["mode"] = axis[modes]
        prefix = "" if len(values) == 1 else f"{name}_"
        result.update({prefix + key: stats[key] for key in _STATISTICS})
    return pd.DataFrame(result, index=pdf.index)


def interval_contains(summary, values, circular=False, period=2 * np.pi, dimension=None):
    """Whether each row's interval [lower, upper] contains ``values`` (wrapping for circular dimensions).

    Parameters
    ----------
    summary : DataFrame
        From :func:`posterior_summary`.
    values : array, shape (rows,)
        The true stimulus of every row.
    circular : bool
        The dimension is an angle: the interval may wrap (``lower`` > ``upper`` goes through the period's end).
    period : float
        The period of a circular dimension (2π: radians).
    dimension : str, optional
        The dimension's name for a multi-dimensional summary (columns ``<dimension>_lower`` …).

    Returns
    -------
    ndarray of bool, shape (rows,)
    """
    prefix = "" if dimension is None else f"{dimension}_"
    lower = summary[prefix + "lower"].to_numpy(np.float64)
    upper = summary[prefix + "upper"].to_numpy(np.float64)
    values = np.asarray(values, dtype=np.float64)
    if circular:
        return np.mod(values - lower, period) <= np.mod(upper - lower, period)
    return (values >= lower) & (values <= upper)


def _quantiles(mass, edges, probabilities):
    """Percentiles of a piecewise-uniform distribution: mass (rows × cells), edges (rows × cells + 1)."""
    cdf = np.concatenate([np.zeros((len(mass), 1)), np.cumsum(mass, axis=1)], axis=1)
    cdf /= cdf[:, -1:]
    out = []
    rows = np.arange(len(mass))
    for p in probabilities:
        index = np.clip(np.sum(cdf < p, axis=1), 1, mass.shape[1])  # the cell holding p: index - 1
        below = cdf[rows, index - 1]
        cell = np.maximum(mass[rows, index - 1] / np.maximum(cdf[:, -1], 1e-300), 1e-300)
        fraction = np.clip((p - below) / cell, 0.0, 1.0)
        left, right = edges[rows, index - 1], edges[rows, index]
        out.append(left + fraction * (right - left))
    return out


def _linear(mass, values, widths, interval):
    mean = mass @ values
    sd = np.sqrt(np.maximum(mass @ np.square(values) - mean**2, 0.0))
    edges = np.concatenate([values - widths / 2, values[-1:] + widths[-1:] / 2])
    edges = np.broadcast_to(edges, (len(mass), len(edges)))
    tail = (1 - interval) / 2
    lower, upper = _quantiles(mass, edges, (tail, 1 - tail))
    return {"mean": mean, "sd": sd, "lower": lower, "upper": upper}


def _circular(mass, values, widths, period, interval):
    angles = 2 * np.pi * values / period
    sine, cosine = mass @ np.sin(angles), mass @ np.cos(angles)
    resultant = np.clip(np.hypot(sine, cosine), 1e-12, 1.0)
    mean_angle = np.arctan2(sine, cosine)
    base = values.min()
    mean = _wrap(mean_angle * period / (2 * np.pi), base, period)
    sd = np.sqrt(-2.0 * np.log(resultant)) * period / (2 * np.pi)
    # deviations from the circular mean in (-period/2, period/2], the cells sorted along them for every row
    deviation = np.mod(values[np.newaxis, :] - mean[:, np.newaxis] + period / 2, period) - period / 2
    order = np.argsort(deviation, axis=1)
    deviation = np.take_along_axis(deviation, order, axis=1)
    sorted_mass = np.take_along_axis(mass, order, axis=1)
    sorted_widths = widths[order]
    edges = np.concatenate([deviation - sorted_widths / 2, deviation[:, -1:] + sorted_widths[:, -1:] / 2], axis=1)
    tail = (1 - interval) / 2
    lower, upper = _quantiles(sorted_mass, edges, (tail, 1 - tail))
    return {"mean": mean, "sd": sd, "lower": _wrap(mean + lower, base, period),
            "upper": _wrap(mean + upper, base, period)}


def _wrap(values, base, period):
    return base + np.mod(values - base, period)
