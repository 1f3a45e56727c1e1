"""Report figures of ``--decode``: decoded against true values (and at chance level), posterior examples,
calibration (absolute error against the posterior SD)."""

from __future__ import annotations

import numpy as np

from ..decoding.metrics import circular_error
from .figures import _save, plt

__all__ = ["decoding_figures", "summary_text", "N_EXAMPLES"]

N_EXAMPLES = 6
SEED = 0


def _jitter(values, spread):
    rng = np.random.default_rng(SEED)
    return values + rng.uniform(-spread, spread, len(values))


def _scatter(axis, true, decoded, accuracy, title, result):
    low, high = float(result.grid.min()), float(result.grid.max())
    step = np.min(np.diff(np.unique(true))) if np.unique(true).size > 1 else 1.0
    axis.scatter(_jitter(true, 0.15 * step), decoded, s=10, alpha=0.6, color="tab:blue", linewidths=0)
    axis.plot([low, high], [low, high], color="0.3", linestyle="--", linewidth=1, label="identity")
    axis.set_xlim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    axis.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    axis.set_xlabel(f"true {result.column}")
    axis.set_ylabel(f"decoded {result.column} (posterior mean)")
    axis.set_title(f"{title}: r = {accuracy['Correlation']:.2f}, MAE {accuracy['MeanAbsoluteError']:.2f}",
                   fontsize=9)
    axis.legend(fontsize=7, loc="upper left")


def _scatter_figure(result, path):
    table = result.table
    figure, axes = plt.subplots(1, 2, figsize=(8.5, 4.0))
    _scatter(axes[0], table["true_value"].to_numpy(), table["posterior_mean"].to_numpy(), result.accuracy,
             "decoded", result)
    _scatter(axes[1], table["true_value"].to_numpy(), table["chance_posterior_mean"].to_numpy(), result.chance,
             "shuffled labels (chance)", result)
    figure.tight_layout()
    return _save(figure, path)


def _examples_figure(result, path):
    """Posteriors of a few trials spread over the true values (fixed seed), their true values marked."""
    table = result.table
    order = np.argsort(table["true_value"].to_numpy(), kind="stable")
    picks = order[np.linspace(0, len(order) - 1, min(N_EXAMPLES, len(order))).round().astype(int)]
    figure, axes = plt.subplots(2, int(np.ceil(len(picks) / 2)), figsize=(9, 4.2), squeeze=False, sharex=True)
    for axis, row in zip(axes.ravel(), picks, strict=False):
        axis.plot(result.grid, result.posterior[row], color="tab:blue")
        axis.axvline(table["true_value"].iloc[row], color="tab:red", linewidth=1, label="true")
        axis.axvspan(table["interval_lower"].iloc[row], table["interval_upper"].iloc[row], color="tab:blue",
                     alpha=0.12, label="95 % interval")
        axis.set_title(f"run {table['run'].iloc[row]}, onset {table['onset'].iloc[row]:g} s", fontsize=8)
        axis.tick_params(labelsize=7)
    for axis in axes.ravel()[len(picks):]:
        axis.axis("off")
    axes[0, 0].legend(fontsize=6)
    figure.supxlabel(result.column, fontsize=9)
    figure.supylabel("posterior density", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def _calibration_figure(result, path):
    """|error| against posterior SD, binned means, and the line of a calibrated Gaussian posterior."""
    table = result.table
    true, decoded = table["true_value"].to_numpy(), table["posterior_mean"].to_numpy()
    error = np.abs(circular_error(decoded, true, result.period) if result.circular else decoded - true)
    sd = table["posterior_sd"].to_numpy()
    figure, axis = plt.subplots(figsize=(5.0, 4.0))
    axis.scatter(sd, error, s=10, alpha=0.5, color="tab:blue", linewidths=0, label="trials")
    edges = np.unique(np.quantile(sd, np.linspace(0, 1, 6)))
    if edges.size > 2:
        which = np.clip(np.searchsorted(edges, sd, side="right") - 1, 0, edges.size - 2)
        centres = [sd[which == k].mean() for k in range(edges.size - 1) if np.any(which == k)]
        means = [error[which == k].mean() for k in range(edges.size - 1) if np.any(which == k)]
        axis.plot(centres, means, "o-", color="tab:orange", label="mean |error| per SD quintile")
    top = float(max(sd.max(initial=0.0), 1e-9))
    axis.plot([0, top], [0, top * np.sqrt(2 / np.pi)], "--", color="0.3",
              label="calibrated (Gaussian): E|error| = 0.80 SD")
    axis.set_xlabel(f"posterior SD ({result.column})")
    axis.set_ylabel(f"|decoded - true| ({result.column})")
    coverage = result.accuracy.get("Coverage")
    axis.set_title(f"Calibration: 95 % intervals hold the truth in {coverage:.0%} of trials", fontsize=9)
    axis.legend(fontsize=7)
    return _save(figure, path)


def summary_text(result):
    """One line for the fit's summary table."""
    accuracy, chance = result.accuracy, result.chance
    voxels = "/".join(str(fold["NumberOfVoxels"]) for fold in result.folds)
    return (f"{len(result.table)} trials, leave one run out ({voxels} voxels per fold): r "
            f"{accuracy['Correlation']:.3f} (chance {chance['Correlation']:.3f}), mean absolute error "
            f"{accuracy['MeanAbsoluteError']:.3g}, 95 % coverage {accuracy.get('Coverage', float('nan')):.1%}; "
            + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()))


def decoding_figures(result, stem):
    """Draw the three figures of a decoding result; returns [(path, caption)]."""
    accuracy, chance = result.accuracy, result.chance
    folds = result.folds
    voxels = ", ".join(str(fold["NumberOfVoxels"]) for fold in folds)
    return [
        (_scatter_figure(result, f"{stem}_decoding.svg"),
         f"Leave-one-run-out decoding of {len(result.table)} trials ({len(folds)} folds, {voxels} voxels): "
         f"posterior mean against the true {result.column} (jittered horizontally), dashed: identity; r = "
         f"{accuracy['Correlation']:.3f}{' (circular)' if result.circular else ''}. Right: the same with the "
         f"tuning model and Ω trained on labels permuted within each run (one permutation), r = "
         f"{chance['Correlation']:.3f}."),
        (_examples_figure(result, f"{stem}_posteriors.svg"),
         f"Posterior densities of {min(N_EXAMPLES, len(result.table))} trials spread over the true values: red, the "
         "true value; shaded, the 95 % interval."),
        (_calibration_figure(result, f"{stem}_calibration.svg"),
         f"Absolute error against posterior SD; a calibrated posterior follows the dashed line. Coverage of the "
         f"95 % intervals: {accuracy.get('Coverage', float('nan')):.1%}; correlation of |error| with SD: "
         f"{accuracy.get('ErrorSDCorrelation', float('nan')):.2f}."),
    ]
