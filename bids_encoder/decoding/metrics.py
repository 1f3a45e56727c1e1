"""Decoding accuracy of a ``…_decoding.tsv``: correlation, mean absolute (circular) error, interval coverage.

numpy only (the group level reads the participants' tables without TensorFlow).
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "circular_error", "circular_correlation", "ACCURACY_COLUMNS"]

#: group table column → (sidecar key of :func:`accuracy`, description)
ACCURACY_COLUMNS = {
    "n_trials": ("NumberOfTrials", "Trials decoded (every stimulus event of every run, each by the model trained "
                                   "on the other runs)"),
    "correlation": ("Correlation", "Correlation of the posterior mean with the true value (Pearson; circular "
                                   "Fisher and Lee's circular correlation for circular stimuli)"),
    "mean_absolute_error": ("MeanAbsoluteError", "Mean absolute error of the posterior mean (circular: the "
                                                 "shortest distance around the period), in stimulus units"),
    "coverage": ("Coverage", "Fraction of trials whose true value lies in the 95 % posterior interval (0.95 for a "
                             "calibrated posterior)"),
    "median_posterior_sd": ("MedianPosteriorSD", "Median posterior SD (circular SD for circular stimuli), in "
                                                 "stimulus units"),
    "chance_correlation": ("ChanceCorrelation", "The correlation with the models trained on stimulus labels "
                                                "permuted within each run (chance level)"),
    "chance_mean_absolute_error": ("ChanceMeanAbsoluteError", "The mean absolute error with the models trained "
                                                              "on permuted labels (chance level)"),
}


def circular_error(decoded, true, period):
    """decoded − true wrapped into [−period/2, period/2)."""
    return np.mod(np.asarray(decoded, float) - np.asarray(true, float) + period / 2, period) - period / 2


def circular_correlation(a, b, period):
    """Fisher and Lee's (1983) circular correlation of two angle samples (in units of ``period``).

    ρ = Σ_{i<j} sin(a_i − a_j) sin(b_i − b_j) / sqrt(Σ_{i<j} sin²(a_i − a_j) Σ_{i<j} sin²(b_i − b_j)), in O(n)
    from resultant lengths. Unlike Jammalamadaka and SenGupta's, it needs no mean direction, so it is defined for
    stimuli spread evenly around the circle (their mean direction is arbitrary).
    """
    a = 2 * np.pi * np.asarray(a, float) / period
    b = 2 * np.pi * np.asarray(b, float) / period
    n = a.size

    def power(angles):
        return np.abs(np.sum(np.exp(1j * angles))) ** 2

    numerator = power(a - b) - power(a + b)
    denominator = np.sqrt(max(n**2 - power(2 * a), 0.0) * max(n**2 - power(2 * b), 0.0))
    return float(numerator / denominator) if denominator > 1e-12 * max(n, 1) ** 2 else float("nan")


def _pearson(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def accuracy(true, decoded, sd=None, lower=None, upper=None, circular=False, period=None):
    """Accuracy figures of decoded values (natural units); ``sd``, ``lower``, ``upper`` optional.

    Returns
    -------
    dict with ``NumberOfTrials``, ``Correlation``, ``MeanAbsoluteError``, ``RootMeanSquaredError`` and, with the
    interval, ``Coverage``; with ``sd``, ``MedianPosteriorSD`` and ``ErrorSDCorrelation`` (the correlation of
    the absolute error with the posterior SD: positive when the posterior knows when it is uncertain).
    """
    true, decoded = np.asarray(true, float), np.asarray(decoded, float)
    if circular:
        error = circular_error(decoded, true, period)
        correlation = circular_correlation(decoded, true, period)
    else:
        error = decoded - true
        correlation = _pearson(decoded, true)
    result = {"NumberOfTrials": int(true.size), "Correlation": correlation,
              "MeanAbsoluteError": float(np.mean(np.abs(error))) if true.size else float("nan"),
              "RootMeanSquaredError": float(np.sqrt(np.mean(error**2))) if true.size else float("nan")}
    if lower is not None and upper is not None:
        lower, upper = np.asarray(lower, float), np.asarray(upper, float)
        if circular:
            inside = np.mod(true - lower, period) <= np.mod(upper - lower, period)
        else:
            inside = (true >= lower) & (true <= upper)
        result["Coverage"] = float(np.mean(inside)) if true.size else float("nan")
    if sd is not None:
        sd = np.asarray(sd, float)
        result["MedianPosteriorSD"] = float(np.median(sd)) if sd.size else float("nan")
        result["ErrorSDCorrelation"] = _pearson(np.abs(error), sd)
    return result
