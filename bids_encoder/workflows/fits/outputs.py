"""Write one fit as BIDS-Derivatives: a map and a JSON sidecar per parameter, the R² map, the design TSV."""

from __future__ import annotations

import logging

import numpy as np

from ..._version import __version__
from ...bids.derivatives import atomic_write, bids_label, derivative_path, map_paths, sidecar_path, write_json
from ..common.naming import fit_marker, fit_name, fit_sources, output_entities, remove_fit_outputs
from .results import MapSpec

logger = logging.getLogger(__name__)

__all__ = ["write_fit"]

OUT_OF_MASK = ("NaN: voxels outside the brain mask shared by all runs, and voxels or vertices whose BOLD is "
               "constant in a run (not fitted)")


CV_DESCRIPTION = ("Cross-validated coefficient of determination: the model fitted without the held-out data "
                  "predicts them (can be negative; not clipped)")
CV_DEFINITION = ("1 - sum(SSE) / sum(SST) over all held-out blocks, each scored after projecting its own confounds "
                 "and run intercepts out of both the data and the prediction; every parameter (HRF and grid starts "
                 "included) estimated on the training fold only. loro: leave one run out; split-half: two "
                 "contiguous halves of every run, the held-out half censored (spike regressors) in the training fit")


def write_fit(output_dir, inputs, result, model, settings, roots, extra=None, entities=None):
    """Write the maps, sidecars and design of one fit, all but the R² sidecar.

    Returns ``(written, finish)``: the paths written, and a function that writes the R² sidecar — whose presence
    marks a finished fit — and returns its path. Call it once everything else of the fit (its report too) is
    written. Outputs of an earlier fit with the same name are removed first, marker first, so that an interrupted
    re-fit is never taken for a finished one. ``entities``: the fit's entities, when not those of its runs and
    model (a BIDS Stats Models fit).
    """
    kind = inputs.writer.kind
    base = output_entities(inputs.runs, model) if entities is None else entities
    marker = fit_marker(output_dir, base)
    remove_fit_outputs(marker.parent, fit_name(base, output_dir), marker)
    written, sources = [], fit_sources(inputs, roots)
    r2 = np.asarray(result.r2, dtype=np.float32)
    median_r2 = float(np.nanmedian(r2)) if np.isfinite(r2).any() else None
    common = {
        "Sources": sources,
        "Model": {"Name": model, "Class": result.model_class},
        "HRF": result.hrf,
        "Fitter": result.fitter,
        "Confounds": settings["confounds"],
        "Runs": [run.run for run in inputs.runs],
        "RepetitionTime": inputs.tr,
        "OutOfMaskValue": OUT_OF_MASK,
        "MedianRSquared": median_r2,
        "MedianCVRSquared": None if result.cv is None else result.cv["MedianCVRSquared"],
        "FractionPositiveCVRSquared": None if result.cv is None else result.cv["FractionPositive"],
        "SoftwareVersion": __version__,
        "Device": settings.get("device"),
    }
    if extra:
        common.update(extra)
    design_path = derivative_path(output_dir, base, suffix="design", extension=".tsv")
    design = result.design.reset_index()
    run_labels = {i + 1: run.run for i, run in enumerate(inputs.runs)}
    design["run"] = design["run"].map(run_labels).fillna("n/a")
    design.insert(2, "onset", design["volume"] * inputs.tr)
    atomic_write(design_path, lambda tmp: design.to_csv(tmp, sep="\t", index=False, na_rep="n/a",
                                                        float_format="%.6g"))
    written += [design_path, _write_design_sidecar(design_path, design, inputs, sources)]
    maps = list(result.maps)
    maps.append(MapSpec("rsquared", r2, "Coefficient of determination of the model"
                        + (" on the variance left by the confounds and run means" if model == "glm" else
                           " (confounds and run means projected out of data and predictions)"), "fraction"))
    if result.cv is not None:
        maps.append(MapSpec("cvrsquared", result.cv["cvr2"], CV_DESCRIPTION, "fraction"))
    paths = []
    for spec in maps:
        entities = {**base, "stat": bids_label(spec.stat) if spec.stat else None}
        if spec.contrast:
            entities["contrast"] = spec.contrast
        if spec.desc:
            entities["desc"] = spec.desc
        paths.append(map_paths(output_dir, entities, kind, suffix=spec.suffix))
    for path in paths:  # listed first: a failure part-way removes whatever was written
        written += list(path.values()) if isinstance(path, dict) else [path]
    inputs.writer.write_many((spec.values, path, spec.stat) for spec, path in zip(maps, paths, strict=True))
    rsquared_sidecar = None
    for spec, path in zip(maps, paths, strict=True):
        sidecar = {"Description": spec.description, "Units": spec.units, **(spec.sidecar or {}), **common}
        sidecar["Model"] = {**common["Model"], "Parameter": spec.stat or None}
        if spec.contrast:
            sidecar["Model"]["Contrast"] = spec.contrast
        if spec.sidecar:
            sidecar.update(spec.sidecar)
        finite = spec.values[np.isfinite(spec.values)]
        sidecar["Summary"] = {"NumberOfFittedVoxels": int(finite.size),
                              "Median": float(np.median(finite)) if finite.size else None}
        if spec.stat == "cvrsquared":
            sidecar["CrossValidation"] = {key: value for key, value in result.cv.items() if key != "cvr2"}
            sidecar["CrossValidation"]["Definition"] = CV_DEFINITION
        if spec.stat == "rsquared":
            rsquared_sidecar = (sidecar_path(path), sidecar)
            continue
        written.append(sidecar_path(path))
        write_json(sidecar_path(path), sidecar)
    logger.info("Wrote %d files for %s", len(written) + 1, derivative_path(output_dir, base).name)
    return written, lambda: write_json(*rsquared_sidecar)


def _write_design_sidecar(design_path, design, inputs, sources):
    """Describe the design TSV's columns: model regressors, confounds (per run) and spikes of censored volumes."""
    confounds = [str(c) for c in inputs.confounds.columns]
    spikes = [c for c in confounds if c.startswith("censored_run")]
    regressors = [str(c) for c in design.columns if c not in ("run", "volume", "onset") and str(c) not in confounds]
    content = {
        "Description": "Design of the fit: one row per volume of every run fitted jointly; the model's regressors "
                       "(before the HRF for fits that estimate it), then the confounds, each run's in its own "
                       "columns (zero in other runs), then one spike column per censored volume",
        **({} if "_run-" in design_path.name else {  # a run entity in the name: pybids takes a "run" key for it
            "run": {"Description": "Run label of the volume (n/a: the BOLD has no run entity)"}}),
        "volume": {"Description": "Volume index within its run, from 0"},
        "onset": {"Description": "Time of the volume from the start of its run (volume × RepetitionTime)",
                  "Units": "s"},
        "ModelRegressors": regressors,
        "ConfoundRegressors": [c for c in confounds if c not in spikes],
        "CensoredVolumeRegressors": spikes,
        "RepetitionTime": inputs.tr,
        "Sources": sources,
        "SoftwareVersion": __version__,
    }
    return write_json(sidecar_path(design_path), content)
