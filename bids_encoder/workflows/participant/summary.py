"""What a fit's report summarises (runs, volumes, confounds, model, HRF, cross-validation, inference, timings) and
the confound settings its sidecars record."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def _confound_settings(strategy, parameters, inputs):
    return {"Strategy": list(strategy), "Parameters": parameters,
            "Interface": "nilearn.interfaces.fmriprep.load_confounds",
            "NumberOfRegressors": int(inputs.confounds.shape[1]), "VolumesCensored": int(inputs.n_censored),
            "PerRun": inputs.confounds_per_run,
            "Handling": "block-diagonal per run, fitted with the model; censored volumes as spike regressors"}


def _summary_rows(runs, inputs, result, settings, options, timings, fitted):
    confounds = settings["confounds"]
    return [
        ("Runs", ", ".join(run.label for run in runs)),
        ("BOLD files", ", ".join(Path(p).name for run in runs for p in ([*run.surfaces.values()] or [run.bold]))),
        ("Repetition time", f"{inputs.tr:g} s"),
        ("Volumes per run", " + ".join(map(str, inputs.n_volumes))),
        ("Space", runs[0].space + (f" (res-{runs[0].entities['res']})" if runs[0].entities.get("res") else "")),
        ("Voxels fitted / total", f"{int(fitted.sum())} / {fitted.size}"),
        ("Confounds", f"{', '.join(confounds['Strategy']) or 'none'}: {confounds['NumberOfRegressors']} regressors, "
                      f"{confounds['VolumesCensored']} censored volumes"),
        ("Model", f"{options.model} ({result.model_class})"),
        ("HRF", _hrf_summary(result.hrf)),
        ("Cross-validation", _cv_summary(result.cv)),
        *([("Inference", f"{result.inference['NoiseModel']} noise model, {result.inference['DegreesOfFreedom']:g} "
                         f"degrees of freedom, signal scaling {result.inference['SignalScaling']}, median AR(1) "
                         f"{result.inference['MedianAR1']}; contrasts {', '.join(result.inference['Contrasts'])}")]
          if result.inference else []),
        *([("Run model", "each run fitted on its own, the runs' contrasts combined by "
                         + result.inference.get("RunModel", "fixed effects"))] if result.run_columns is not None
          else [("Run model", "joint: the runs in one design (shared condition columns; each run its own "
                              "intercept, confounds and AR(1))")] if result.inference else []),
        ("Fitter", result.fitter),  # a dict: the report shows one row per setting
        ("Device", settings.get("device")),
        ("Wall time per stage", ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())),
    ]


def _hrf_summary(hrf):
    text = f"{hrf['Choice']}: {hrf['Model']}" + (" — fitted per voxel" if hrf.get("Fitted") else "")
    if hrf.get("FractionAtBound"):
        text += "; at a bound: " + ", ".join(f"{k} {v:.0%}" for k, v in hrf["FractionAtBound"].items()
                                           if v is not None)
    if hrf.get("Auto"):
        medians = hrf["Auto"]["MedianCVRSquared"]
        text += ("; chosen by --hrf auto (median cvR² " + ", ".join(
            f"{k} {'n/a' if v is None else f'{v:.4f}'}" for k, v in medians.items()) + ")")
    return text


def _cv_summary(cv):
    if cv is None:
        return "none (--cv none)"
    folds = "; ".join(f"{fold['HeldOut']}" for fold in cv["Folds"])
    median = "n/a" if cv["MedianCVRSquared"] is None else f"{cv['MedianCVRSquared']:.4f}"
    return f"{cv['Scheme']} ({len(cv['Folds'])} folds: {folds}); median cvR² {median}; {cv['WallTime']:.1f} s"
