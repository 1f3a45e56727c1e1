"""Per-participant HTML report: ``OUTPUT_DIR/sub-X.html`` with its figures in ``OUTPUT_DIR/sub-X/figures/``.

Each fit (session, task, space, model) adds a section: its figures and a ``<fit>_report.json`` describing them are
written right after the fit, so the subject's page can be rebuilt from every finished fit, including those of
earlier runs of the app.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..bids.derivatives import short_label, write_json
from ..optimize._inputs import confound_basis
from . import decoding, figures, tuning
from .comparison import participant_comparisons
from .render import render
from .scales import display_scale, scale_note

logger = logging.getLogger(__name__)

__all__ = ["fit_section", "write_participant_report", "map_style"]

MAX_PARAMETER_MAPS = 24
SAMPLE_SEED = 0


def map_style(stat):
    """Colour map and range of a parameter: cyclic for polar angle, sequential for sizes and delays."""
    if stat == "polarAngle":
        return {"cmap": figures.CYCLIC, "vmin": -180.0, "vmax": 180.0, "symmetric": False}
    if stat == "cvrsquared":  # negative values are informative: a diverging map centred on 0
        return {"cmap": "cold_hot", "vmin": None, "vmax": None, "symmetric": True}
    if stat in ("eccentricity", "sd", "rsquared", "hrf_delay", "hrf_dispersion", "count"):
        return {"cmap": "viridis", "vmin": 0.0 if stat != "hrf_delay" else None, "vmax": None, "symmetric": False}
    return {"cmap": "cold_hot", "vmin": None, "vmax": None, "symmetric": True}


def meaningful_voxels(result):
    """(mask, wording) of the voxels whose pRF/tuning parameters are shown: iterated and cvR² > 0, or without
    cross-validation iterated with R² at least the gate's threshold; (None, "") for fits without a gate (GLM)."""
    iterated = next((spec.values for spec in result.maps if spec.desc == "iterated"), None)
    if iterated is None:
        return None, ""
    iterated = np.asarray(iterated) == 1
    if result.cv is not None:
        with np.errstate(invalid="ignore"):
            return iterated & (np.asarray(result.cv["cvr2"], dtype=np.float64) > 0), "where iterated with cvR² > 0"
    gate = result.fitter.get("ParameterFitter", {}).get("Gate", {}).get("MinGridRSquared", 0.0)
    with np.errstate(invalid="ignore"):
        return iterated & (np.asarray(result.r2, dtype=np.float64) >= gate), f"where iterated with R² ≥ {gate:g}"


class MapPlotter:
    """Draws per-voxel values with the geometry of a MapWriter: slices, a mesh, or a histogram without one."""

    def __init__(self, writer, background=None, space="", cut_coords=None):
        self.writer, self.background = writer, background
        self.cut_coords = cut_coords  # volume: the same axial cuts (mm) for every map, from the mask by default
        if writer.kind == "volume" and cut_coords is None:
            self.cut_coords = figures.axial_cuts(writer.to_image(np.ones(writer.n_voxels), "mask"))
        self.mesh = None
        if writer.kind == "gifti" and space.startswith("fsaverage"):
            self.mesh = figures.fsaverage_mesh(writer.hemisphere_sizes["L"], writer.hemisphere_sizes["R"])

    def plot(self, values, path, title, stat, units=None, fade_by=None):
        """Draw ``values``; returns (path, how: 'slices', 'mesh' or 'histogram', the caption's note on the colour
        scale). Statistics fade over the underlay where they are small (:mod:`.scales`); ``fade_by`` (values,
        (low, high), words): fade by other values instead (a model's parameters by its R²)."""
        style = map_style(stat)
        values = np.asarray(values, dtype=np.float64)
        scale = display_scale(stat, values)
        fade_image = None
        if fade_by is not None:
            weights, fade, words = fade_by
            scale.update(fade=fade, faded=words)
            meaningful = np.isfinite(values) & (np.asarray(weights) >= fade[0])
            if meaningful.any() and style["vmax"] is None:  # the colours span the values where the fit explains
                style["vmax"] = float(np.percentile(np.abs(values[meaningful]), 99))
                scale["range"] = f"colours up to {style['vmax']:.3g} (99th percentile of those voxels)"
            if self.writer.kind == "volume":
                fade_image = self.writer.to_image(np.asarray(weights, dtype=np.float64), "weights")
            else:  # a mesh draws no transparency: the values where the weights are low are left out
                values = np.where(np.asarray(weights) >= fade[0], values, np.nan)
        if scale["vmax"] is not None:
            style["vmax"] = scale["vmax"]
        label = None if units in (None, "fraction", stat) or len(str(units)) > 28 else units
        if self.writer.kind == "volume":
            if style["vmax"] is None and stat in ("rsquared", "sd", "eccentricity", "count"):
                finite = values[np.isfinite(values)]
                style["vmax"] = float(np.percentile(finite, 99)) if finite.size else 1.0
            return figures.volume_map_figure(self.writer.to_image(values, stat), path.with_suffix(".png"), title,
                                             background=self.background, cmap=style["cmap"], vmin=style["vmin"],
                                             vmax=style["vmax"], symmetric=style["symmetric"],
                                             cut_coords=self.cut_coords, fade=scale["fade"], label=label,
                                             fade_image=fade_image), "slices", scale_note(scale, "slices")
        if self.mesh is not None:
            if style["vmax"] is None:  # a robust range, not the extremes
                finite = np.abs(values[np.isfinite(values)])
                style["vmax"] = float(np.percentile(finite, 99)) if finite.size else 1.0
            return figures.surface_map_figure(values, self.writer.hemisphere_sizes, self.mesh,
                                              path.with_suffix(".png"), title, cmap=style["cmap"],
                                              vmin=style["vmin"], vmax=style["vmax"], symmetric=style["symmetric"],
                                              threshold=(1e-12 if fade_by is not None else
                                                         scale["fade"][0] if scale["fade"] else None),
                                              label=label), "mesh", scale_note(scale, "mesh")
        return figures.histogram_figure({stat: values}, path.with_suffix(".svg"), title, stat), "histogram", ""


def _sample_voxels(r2):
    """Best, median and three random fitted voxels: [(label, index)]."""
    fitted = np.flatnonzero(np.isfinite(r2))
    if fitted.size == 0:
        return []
    best = fitted[np.argmax(r2[fitted])]
    median = fitted[np.argmin(np.abs(r2[fitted] - np.median(r2[fitted])))]
    rng = np.random.default_rng(SAMPLE_SEED)
    chosen = [("best", best), ("median", median)]
    chosen += [("random", i) for i in rng.choice(fitted, size=min(3, fitted.size), replace=False)]
    return chosen


def _add_viewer(section, result, plotter, writer, background, stem, output_dir):
    """Volumes: an interactive view (nilearn ``view_img``) of the fit's main map — the GLM's effects-of-interest z,
    else R² — beside its static slices."""
    if writer.kind != "volume":
        return
    chosen = next((spec for spec in result.maps if spec.stat == "z" and spec.contrast == "effectsOfInterest"), None)
    values, stat = (chosen.values, "z") if chosen is not None else (np.asarray(result.r2, np.float64), "rsquared")
    scale = display_scale(stat, values)
    style = map_style(stat)
    path = figures.interactive_view(writer.to_image(np.asarray(values, np.float64), stat), f"{stem}_viewer.html",
                                    "effects of interest, z" if chosen is not None else "R²", background,
                                    cmap=style["cmap"], vmax=scale["vmax"], symmetric=style["symmetric"],
                                    threshold=scale["fade"][0] if scale["fade"] else None)
    target = next((item for item in section["figures"]["parameters"] if chosen is not None
                   and item["caption"].startswith("z (effectsOfInterest)")), section["figures"]["rsquared"])
    target["viewer"] = Path(path).relative_to(output_dir).as_posix()
    target["viewer_title"] = ("Interactive view of the map above (nilearn view_img): click to move the cuts; values "
                              f"below {scale['fade'][0]:.3g} not shown" if scale["fade"] else
                              "Interactive view of the map above (nilearn view_img)")


def _without_nuisance(inputs, result, observed, fitted):
    """Data and fit of a few voxels with the fit's confounds and every run's mean projected out of both (what R²
    is measured on): a GLM's full fit includes its drifts and intercepts, which would make any voxel look fitted."""
    confounds = (inputs.confounds if result.confounds_for is None else result.confounds_for(inputs)).to_numpy()
    runs = inputs.data.index.get_level_values("run").to_numpy()
    nuisance = np.hstack([confounds, (runs[:, None] == np.unique(runs)[None, :]).astype(float)])
    basis = confound_basis(nuisance, len(runs))
    if basis is None:
        return observed, fitted
    observed, fitted = np.asarray(observed, np.float64), np.asarray(fitted, np.float64)
    return observed - basis @ (basis.T @ observed), fitted - basis @ (basis.T @ fitted)


def _voxel_name(writer, index):
    if writer.kind == "volume":
        ijk = np.argwhere(writer.mask)[index]
        xyz = writer.reference.affine[:3, :3] @ ijk + writer.reference.affine[:3, 3]
        return ("voxel at (" + ", ".join(f"{c:.0f}" for c in xyz) + ") mm, index ("
                + ", ".join(str(int(c)) for c in ijk) + ")")
    if writer.kind == "gifti":
        left = writer.hemisphere_sizes["L"]
        return f"vertex {index} (hemi-L)" if index < left else f"vertex {index - left} (hemi-R)"
    return f"grayordinate {index}"


def _figure(path, output_dir, caption):
    return {"file": Path(path).relative_to(output_dir).as_posix(), "caption": caption}


def fit_section(output_dir, subject, name, inputs, result, info):
    """Draw the figures of one fit and write its ``<name>_report.json``; returns the section."""
    output_dir = Path(output_dir)
    folder = output_dir / f"sub-{subject}" / "figures"
    stem = folder / name
    writer = inputs.writer
    background = None
    if writer.kind == "volume":
        background = writer.to_image(inputs.data.to_numpy().mean(axis=0) if inputs.signal_mean is None
                                 else inputs.signal_mean, "mean BOLD")
    plotter = MapPlotter(writer, background, info.get("space", ""))
    section = {"name": name, "summary": info["summary"], "warnings": info["warnings"],
               "convergence": info["convergence"], "figures": {}}
    design = result.design
    nuisance = [c for c in design.columns if str(c).startswith("nuisance_") and c not in inputs.confounds.columns]
    regressors = [c for c in design.columns if c not in inputs.confounds.columns and c not in nuisance]
    several = len(inputs.runs) > 1
    section["figures"]["design"] = _figure(figures.design_figure(
        design, regressors, f"{stem}_design.svg", "Model regressors (each scaled to its maximum)"), output_dir,
        "Regressors of the model" + (", all runs; red lines separate runs." if several else "."))
    confounds = list(inputs.confounds.columns) + nuisance  # nuisance: e.g. the HRF derivatives of --hrf fit
    if confounds:
        section["figures"]["confounds"] = _figure(figures.confounds_figure(
            design, confounds, f"{stem}_confounds.svg", "Confound regressors (standardised per run)"), output_dir,
            f"All {len(confounds)} confound regressors" + (", block-diagonal per run (each run's own columns in its "
                                                           "panel)" if several else "")
            + "; censored volumes' spike columns included.")
    r2 = np.asarray(result.r2, dtype=np.float64)
    path, how, note = plotter.plot(r2, Path(f"{stem}_rsquared"), "R²", "rsquared")
    section["figures"]["rsquared"] = _figure(path, output_dir, "R² of the model" + (
        " over the mean BOLD image" if how == "slices" else " on the fsaverage5 inflated mesh" if how == "mesh"
        else ": distribution (no mesh bundled for this space)") + (f"; {note}." if note else "."))
    if result.cv is not None:
        cvr2 = np.asarray(result.cv["cvr2"], dtype=np.float64)
        path, how, note = plotter.plot(cvr2, Path(f"{stem}_cvrsquared"), "cvR²", "cvrsquared")
        fraction = result.cv["FractionPositive"]
        section["figures"]["cvrsquared"] = _figure(path, output_dir, (
            f"Cross-validated R² ({result.cv['Scheme']}, {len(result.cv['Folds'])} folds): the model fitted without "
            "the held-out data predicts them; negative values are worse than the held-out mean")
            + ("" if fraction is None else f"; {fraction:.1%} of fitted voxels have cvR² > 0")
            + (f"; {note}." if note else "."))
        section["figures"]["cvscatter"] = _figure(figures.cv_scatter_figure(
            r2, cvr2, f"{stem}_cvscatter.svg", "Held-out against in-sample R²"), output_dir,
            "Each voxel's cvR² against its R²: the distance below the identity line is the in-sample optimism.")
    parameter_figures = []
    meaningful, where = meaningful_voxels(result)
    for spec in [spec for spec in result.maps if spec.in_report][:MAX_PARAMETER_MAPS]:
        label = spec.stat + (f" ({short_label(spec.contrast)})" if spec.contrast else "")
        file_name = f"{stem}_{spec.stat}" + (f"_{short_label(spec.contrast)}" if spec.contrast else "")
        values = spec.values if meaningful is None else np.where(meaningful, spec.values, np.nan)
        path, _, note = plotter.plot(values, Path(file_name), label, spec.stat, spec.units)
        parameter_figures.append(_figure(path, output_dir, f"{label}: {spec.description} ({spec.units})"
                                         + ("" if meaningful is None else f"; shown {where}")
                                         + (f"; {note}." if note else "")))
    section["figures"]["parameters"] = parameter_figures
    errors = {spec.stat: spec.values for spec in result.maps if spec.desc == "se" and spec.stat in ("x", "y", "mu")}
    if errors:
        keep = np.ones(len(r2), bool) if meaningful is None else meaningful
        section["figures"]["standard_errors"] = _figure(figures.histogram_figure(
            {f"se({name})": np.where(keep, values, np.nan) for name, values in errors.items()},
            f"{stem}_se_position.svg", "Standard error of the position", "standard error"), output_dir,
            f"Gauss–Newton standard errors of the position over the voxels {where or 'fitted'} "
            "(NaN where undefined: not iterated, at a bound or constraint, near-degenerate).")
    _add_viewer(section, result, plotter, writer, background, stem, output_dir)
    shown = [spec for spec in result.maps if spec.in_report]
    section["notes"] = {"parameters": f"First {MAX_PARAMETER_MAPS} of {len(shown)} maps shown."
                        if len(shown) > MAX_PARAMETER_MAPS else ""}
    chosen = _sample_voxels(r2)
    if chosen and result.predict is not None:
        observed, fitted = _without_nuisance(inputs, result, *result.predict([index for _, index in chosen]))
        labels = [f"{kind} R² = {r2[index]:.3f}: {_voxel_name(writer, index)}" for kind, index in chosen]
        scale = "% signal change" if info.get("signal_scaling") == "psc" else "scanner units"
        section["figures"]["timeseries"] = _figure(figures.timeseries_figure(
            observed, fitted, labels, inputs.tr, f"{stem}_timeseries.svg", "Data and fit",
            runs=inputs.data.index.get_level_values("run"),
            units=f"BOLD − confounds and {'run means' if several else 'mean'} ({scale})"), output_dir,
            "Best, median and three random voxels (seed 0): data (grey) and the model's prediction (blue), both with "
            "the confounds and " + ("each run's mean" if several else "the mean")
            + " projected out — the variance R² is measured on" + ("; dashed lines: run starts." if several else "."))
    if result.history:
        section["figures"]["curve"] = _figure(figures.curve_figure(
            result.history, f"{stem}_curve.svg", "Mean R² over iterations"), output_dir,
            "Levenberg–Marquardt: mean R² of the fitted voxels after each iteration.")
    hrf_maps = {spec.stat: spec.values for spec in result.maps
                if spec.stat in ("hrf_delay", "hrf_dispersion") and not spec.desc}
    if hrf_maps:
        bounds = result.hrf.get("Bounds")
        at_bound = result.hrf.get("FractionAtBound") or {}
        share = ", ".join(f"{k} {v:.1%}" for k, v in at_bound.items() if v is not None)
        section["figures"]["hrf"] = _figure(figures.histogram_figure(
            hrf_maps, f"{stem}_hrf.svg", "Fitted HRF parameters", "seconds", bounds=bounds), output_dir,
            "Distribution of the fitted HRF delay and dispersion over voxels; dashed lines: their bounds"
            + (f" (at a bound: {share})." if share else "."))
    if info["model"] != "glm":
        section["figures"]["histograms"] = [_figure(path, output_dir, caption) for path, caption in
                                            tuning.parameter_histograms(result.maps, r2, stem)]
    if result.tuning is not None:
        section["figures"]["tuning"] = _figure(tuning.tuning_curves_figure(
            result.tuning, r2, f"{stem}_tuning.svg", "Tuning curves of the best voxels"), output_dir,
            f"Fitted tuning curves of the {tuning.N_BEST} voxels with the highest R² (baseline removed); grey lines: "
            "the stimulus values shown.")
    if info.get("decoding") is not None:
        section["figures"]["decoding"] = [_figure(path, output_dir, caption) for path, caption in
                                          decoding.decoding_figures(info["decoding"], stem)]
        section["summary"] = [*section["summary"], ("Decoding", decoding.summary_text(info["decoding"]))]
    write_json(f"{stem}_report.json", section)
    return section


def _readable(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return ", ".join(map(_readable, value)) or "none"
    return "n/a" if value is None else str(value)


def readable_rows(rows, prefix=""):
    """Summary rows as ``(label, text)``: a dict value (or a JSON object in a string, as older reports wrote the
    fitter settings) becomes one ``label › key`` row per entry, nested dicts recursively."""
    result = []
    for label, value in rows:
        if isinstance(value, str) and value.startswith("{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if isinstance(value, dict):
            result += readable_rows(value.items(), f"{prefix}{label} › ")
        elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
            result += readable_rows([(f"{k + 1}", v) for k, v in enumerate(value)], f"{prefix}{label} › ")
        else:
            result.append((f"{prefix}{label}", _readable(value)))
    return result


def write_participant_report(output_dir, subject):
    """Render ``OUTPUT_DIR/sub-X.html`` from every fit section of the subject."""
    output_dir = Path(output_dir)
    sections = [json.loads(path.read_text()) for path in
                sorted((output_dir / f"sub-{subject}" / "figures").glob("*_report.json"))]
    for section in sections:
        section["summary"] = readable_rows(section["summary"])
        section["convergence"] = readable_rows(section["convergence"])
    return render("participant.html", output_dir / f"sub-{subject}.html", title=f"sub-{subject}",
                  subject=subject, sections=sections, comparisons=participant_comparisons(output_dir, subject))
