"""Report figures of the pRF and tuning models: tuning curves of the best voxels, parameter histograms."""

from __future__ import annotations

import numpy as np

from .figures import _save, histogram_figure, plt

__all__ = ["tuning_curves_figure", "parameter_histograms", "N_BEST"]

N_BEST = 6  # tuning curves drawn
SKIPPED = ("baseline", "hrf_delay", "hrf_dispersion", "polarAngle")  # histograms elsewhere, or not informative


def tuning_curves_figure(tuning, r2, path, title):
    """Fitted tuning curves (without baseline) of the ``N_BEST`` voxels with the highest R², over the stimulus
    range in natural units, the presented values marked."""
    r2 = np.asarray(r2, dtype=np.float64)
    order = [int(i) for i in np.argsort(np.where(np.isfinite(r2), r2, -np.inf))[::-1][:N_BEST] if np.isfinite(r2[i])]
    model, parameters, values = tuning["model"], tuning["parameters"], tuning["values"]
    if tuning["name"] == "vonmises1d":
        natural = np.linspace(0.0, tuning["period"], 181)
        argument = 2 * np.pi * natural / tuning["period"]
    elif tuning["name"] == "loggauss1d":
        natural = np.geomspace(values.min(), values.max(), 181)
        argument = natural
    else:
        natural = np.linspace(values.min(), values.max(), 181)
        argument = natural
    figure, axis = plt.subplots(figsize=(6, 3.2))
    if order:
        curves = model.tuning_curve(argument, parameters.iloc[order]).to_numpy()
        for column, index in enumerate(order):
            axis.plot(natural, curves[:, column], label=f"voxel {index}: R² {r2[index]:.2f}")
    for value in values:
        axis.axvline(value, color="0.8", linewidth=0.8, zorder=0)
    if tuning["name"] == "loggauss1d":
        axis.set_xscale("log")
    axis.set_xlabel(tuning["column"] + (" (degrees)" if tuning["name"] == "vonmises1d" else ""))
    axis.set_ylabel("response (BOLD units)")
    axis.set_title(title, fontsize=10)
    if order:
        axis.legend(fontsize=7)
    return _save(figure, path)


def parameter_histograms(maps, r2, stem):
    """One histogram per parameter map (over the voxels with R² > 0); returns [(path, caption)]."""
    r2 = np.asarray(r2, dtype=np.float64)
    keep = np.isfinite(r2) & (r2 > 0)
    drawn = []
    for spec in maps:
        if spec.stat in SKIPPED or spec.contrast or spec.desc:  # standard errors, the iterated mask: elsewhere
            continue
        values = np.where(keep, spec.values, np.nan)
        path = histogram_figure({spec.stat: values}, f"{stem}_hist-{spec.stat}.svg", spec.description[:80],
                                spec.units or "")
        drawn.append((path, f"{spec.stat}: distribution over the {int(keep.sum())} voxels with R² > 0"))
    return drawn
