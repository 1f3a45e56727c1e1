"""Write a ``--decode`` result beside the model's maps (BIDS-Derivatives, atomic writes):

- ``<fit>_decoding.tsv`` + ``.json``: one row per trial (run, onset, true value, posterior mean, mode, SD, 95 %
  interval, chance-level posterior mean); the sidecar describes the columns and units, the grid, the voxels and
  Ω parameters of every fold, the accuracy and its chance level.
- ``<fit>_desc-posterior_decoding.tsv.gz`` + ``.json``: the posterior densities, trials × grid values, the
  sidecar naming the grid.

``<fit>`` is the fit's prefix (``sub-01_task-T_space-S_model-m``): a failed or interrupted fit removes them with
its other outputs, and a re-fit replaces them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..._version import __version__
from ...bids.derivatives import atomic_write, derivative_path, write_json

__all__ = ["decoding_paths", "write_decoding"]

LSS_HRF = "SPM canonical HRF (unit-sum kernel, 16x oversampled boxcars of each event's onset and duration)"


def decoding_paths(output_dir, entities):
    """(table, posterior) paths of the fit with ``entities`` (subject, task, space, model, …)."""
    table = derivative_path(output_dir, entities, suffix="decoding", extension=".tsv")
    posterior = derivative_path(output_dir, {**entities, "desc": "posterior"}, suffix="decoding",
                                extension=".tsv.gz")
    return table, posterior


def _finite(value):
    """The sidecar with NaN and infinite numbers as null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value


def _json_path(path):
    return path.with_name(path.name.split(".")[0] + ".json")


def _grid(result):
    return {"Values": [round(float(v), 6) for v in result.grid], "Units": result.units,
            "NumberOfPoints": int(result.grid.size), "Circular": result.circular,
            **({"PeriodDegrees": result.period} if result.circular else {}),
            "Spacing": ("evenly around the period" if result.circular else
                        "evenly from the smallest to the largest stimulus value of the design")}


SINGLE_TRIAL_DEFINITION = (
    "GLMsingle's method over all runs at once (bids_encoder.decoding.single_trial.fit_single_trials, the stages "
    "of --single-trial-stages): every stimulus event its own regressor with the voxel's HRF, per run its "
    "confounds, drifts, intercept and noise components, fractional ridge; its choices (HRF, number of components, "
    "ridge fractions) come from held-out time series, never from the stimulus values")
SINGLE_TRIAL_HRF = "per voxel, the best of an SPM library by the on/off model (or canonical without the hrf stage)"


def write_decoding(output_dir, entities, result, model, sources, method):
    """Write the decoding table, the posterior densities and their sidecars; returns the four paths."""
    table_path, posterior_path = decoding_paths(output_dir, entities)
    units = result.units
    table = result.table
    atomic_write(table_path, lambda tmp: table.to_csv(tmp, sep="\t", index=False, na_rep="n/a",
                                                      float_format="%.6g"))
    stimulus = f"the {result.column} of the trial"
    columns = {
        "run": {"Description": "Run label of the trial (n/a: the BOLD has no run entity); decoded by the model "
                               "trained on the other runs"},
        "onset": {"Description": "Onset of the stimulus event, from its events.tsv", "Units": "s"},
        "true_value": {"Description": f"True stimulus value: {stimulus} in events.tsv", "Units": units},
        "posterior_mean": {"Description": "Posterior mean of the stimulus (circular mean for circular stimuli)",
                           "Units": units},
        "posterior_mode": {"Description": "Grid value of highest posterior density", "Units": units},
        "posterior_sd": {"Description": "Posterior standard deviation (circular SD sqrt(-2 ln R) for circular "
                                        "stimuli)", "Units": units},
        "interval_lower": {"Description": "Lower end of the equal-tailed 95 % posterior interval (circular: "
                                          "around the circular mean; lower > upper when it crosses the wrap)",
                           "Units": units},
        "interval_upper": {"Description": "Upper end of the 95 % posterior interval", "Units": units},
        "chance_posterior_mean": {"Description": "Posterior mean decoded by the models trained on the stimulus "
                                                 "labels permuted within each run (same voxels): the chance level",
                                  "Units": units},
    }
    common = {"Model": {"Name": model, "Decoded": "the stimulus value of every stimulus event"},
              "Sources": sources, "SoftwareVersion": __version__}
    sidecar = {
        "Description": "Leave-one-run-out decoding of the stimulus of every trial from its single-trial response "
                       "pattern, with the posterior over the stimulus grid",
        **columns, **common,
        "SingleTrialResponses": {
            "Method": method.upper(),
            "Definition": ("one GLM per run: every stimulus event its own regressor, the run's confounds and an "
                           "intercept" if method == "lsa" else
                           "least-squares-separate: one GLM per trial of a run (the trial, the run's other "
                           "stimulus events summed, its confounds and an intercept)" if method == "lss" else
                           SINGLE_TRIAL_DEFINITION),
            "HRF": SINGLE_TRIAL_HRF if method == "singletrial" else LSS_HRF, "UsesStimulusValues": False},
        "CrossValidation": {
            "Scheme": "leave one run out",
            "Training": "on the other runs' single-trial responses only: voxel selection, tuning fit (grid -> "
                        "least-squares amplitude and baseline -> Levenberg-Marquardt, no HRF), residual "
                        "covariance",
            "VoxelSelection": "the voxels with the highest cross-validated R² of the tuning model inside the "
                              "training runs (leave one training run out, or two contiguous halves of the "
                              "trials of a single training run), among those with cvR² > 0",
            "Omega": "ResidualFitter (Gaussian): tau tau' o (rho + (1 - rho) I) + sigma2 W'W, W the tuning curves "
                     "over the grid, fitted to the held-out residuals of the inner cross-validation (they carry the "
                     "tuning fit's own error)",
            "Posterior": "Gaussian likelihood of the trial's pattern given the tuning curves at each grid value, "
                         "uniform prior over the grid, normalised to unit integral (log space)",
            "VoxelIndicesDefinition": "0-based indices of the voxels among the fit's in-mask voxels, in the "
                                      "order the maps store them (volumes: the brain mask's voxels in "
                                      "row-major order of the image grid; surfaces: left then right vertices)",
            "Folds": result.folds},
        "Grid": _grid(result),
        "Accuracy": result.accuracy,
        "ChanceLevel": {**result.chance, "Definition": "the same folds and voxels, the tuning model and Omega "
                                                        "trained on labels permuted within each run (seed "
                                                        f"{result.settings.get('ShuffleSeed')}); scored against "
                                                        "the true labels"},
        "Processing": {**result.settings, "WallTime": {k: round(v, 3) for k, v in result.timings.items()}},
    }
    table_json = write_json(_json_path(table_path), _finite(sidecar))

    labels = [f"{value:.6g}" for value in result.grid]
    densities = pd.DataFrame(result.posterior.astype(np.float64), columns=labels)
    densities.insert(0, "onset", table["onset"].to_numpy())
    densities.insert(0, "run", table["run"].to_numpy())
    atomic_write(posterior_path, lambda tmp: densities.to_csv(tmp, sep="\t", index=False, na_rep="n/a",
                                                              float_format="%.6g", compression="gzip"))
    posterior_json = write_json(_json_path(posterior_path), {
        "Description": "Posterior density of the stimulus of every trial (rows, in the order of the decoding "
                       "table) at every grid value (columns after run and onset)",
        "run": columns["run"], "onset": columns["onset"],
        "Grid": {**_grid(result), "ColumnNames": labels},
        "Units": f"probability density per unit of the stimulus ({units}); sums times the grid spacing to 1",
        **common})
    return [table_path, table_json, posterior_path, posterior_json]
