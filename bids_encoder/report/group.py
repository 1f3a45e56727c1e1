"""Group HTML report: ``OUTPUT_DIR/group.html`` with figures in ``OUTPUT_DIR/group/figures/``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..bids.derivatives import short_label
from ..bids.participant_maps import read_map
from . import figures
from .comparison import group_comparisons
from .participant import MapPlotter
from .render import render

logger = logging.getLogger(__name__)

__all__ = ["write_group_report", "FEW_PARTICIPANTS"]

#: below this many participants, group.html says that its maps are a preview, not inference
FEW_PARTICIPANTS = 10
CLUSTER_ROWS = 15  # rows of a clusters table shown (the TSV has them all)


def _background(space):
    """nilearn's bundled MNI152 template for MNI152 spaces, else none."""
    if not space.startswith("MNI152"):
        return None
    from nilearn import datasets

    return datasets.load_mni152_template(resolution=2)


def write_group_report(output_dir, items, tables=(), clusters=()):
    """Draw the group maps listed in ``items`` and render ``group.html``.

    ``items`` : list of {'group': name, 'space': space, 'label': caption, 'stat': style key, 'path': map path
    (a dict hemi → path for GIFTI)}, in display order. ``tables``: [(name, DataFrame)] shown as tables (the
    decoding accuracy). ``clusters``: [(name, DataFrame)] clusters tables of thresholded z maps (their first
    rows are shown).
    """
    output_dir = Path(output_dir)
    folder = output_dir / "group" / "figures"
    sections, cuts = {}, {}
    maps = [(item, *read_map(item["path"])) for item in items]
    r2 = {item["group"]: values for item, values, _ in maps if item["label"] == "rsquared mean"}
    for item, values, geometry in maps:
        writer = geometry.writer(np.ones(values.size, dtype=bool))
        if geometry.kind == "volume" and item["group"] not in cuts:  # one set of cuts per group of maps, where
            cuts[item["group"]] = figures.axial_cuts(writer.to_image(values, item["stat"]))  # its first map has data
        units = item.get("units")
        caption = item["caption"] + (f" ({units})" if units and units not in item["caption"] else "")
        empty = _empty(item, values, geometry.kind)
        if empty:
            sections.setdefault(item["group"], []).append({"file": None, "title": item["label"], "empty": empty,
                                                           "caption": caption})
            continue
        plotter = MapPlotter(writer, _background(item["space"]) if geometry.kind == "volume" else None,
                             item["space"], cut_coords=cuts.get(item["group"]))
        words = item["label"].replace("(", "").replace(")", "").split()
        name = "_".join([item["group"], *(short_label(word) for word in words)])  # as the maps' names: cut labels
        fade_by = _fade_by_r2(item, r2.get(item["group"]))
        path, _, note = plotter.plot(values, folder / name, item["label"], item["stat"], units, fade_by)
        sections.setdefault(item["group"], []).append(
            {"file": path.relative_to(output_dir).as_posix(), "caption": caption + (f"; {note}." if note else "")})
    summary = pd.read_csv(output_dir / "group" / "participants_summary.tsv", sep="\t", dtype=str).fillna("n/a")
    subjects = summary["participant_id"] if "participant_id" in summary else summary.iloc[:, 0]
    columns, rows = participants_table(summary)
    return render("group.html", output_dir / "group.html", title="group", sections=sections,
                  columns=columns, rows=rows, summary_file="group/participants_summary.tsv",
                  hidden=len(summary.columns) - len(columns),
                  n_participants=int(subjects.nunique()), few=FEW_PARTICIPANTS,
                  comparisons=group_comparisons(output_dir, _background),
                  tables=[{"name": name, "columns": list(frame.columns),
                           "rows": frame.apply(lambda c: c.map(_cell)).to_numpy().tolist()} for name, frame in tables],
                  clusters=[{"name": name, "columns": list(frame.columns), "total": len(frame),
                             "rows": frame.head(CLUSTER_ROWS).apply(lambda c: c.map(_cell)).to_numpy().tolist()}
                            for name, frame in clusters])


#: the participants table's columns on the page, with their headings (the TSV beside it has them all)
SHOWN_COLUMNS = {"participant_id": "participant", "session_id": "session", "task": "task", "space": "space",
                 "res": "res", "model": "model", "runs": "runs", "volumes": "volumes", "voxels_fitted": "voxels",
                 "median_rsquared": "median R²", "median_cvrsquared": "median cvR²", "hrf": "HRF",
                 "wall_time_s": "wall time (s)"}


#: group maps of these statistics fade by their own values; other maps of a model that is not the GLM (pRF and
#: tuning parameters) fade by the group's mean R², so that the noise voxels' parameters do not fill the page
OWN_SCALE = ("count", "rsquared", "cvrsquared", "effect", "z", "t", "p", "F", "variance", "betweenVariance",
             "bestmodel", "fraction")


def _empty(item, values, kind):
    """Why a group map is not worth drawing (said instead of an empty panel), else ''."""
    finite = values[np.isfinite(values)]
    where = "vertex" if kind != "volume" else "voxel"
    last = item["label"].split()[-1].lower()
    if last.endswith(("fdr", "cluster")) and not np.any(finite != 0):
        return f"no {where} survives the threshold (the map is 0 everywhere)."
    if item["label"] == "count" and finite.size and finite.min() == finite.max():
        return f"every {where} has {finite[0]:g} participant(s) with a value."
    return ""


def _fade_by_r2(item, r2):
    """(R², (low, high), words) to fade a model parameter's group map by the group mean R²; None for statistics
    drawn on their own scale, the GLM's maps, or without an R² map."""
    stat = item["label"].split()[0] if item["label"] else ""
    if r2 is None or "model-glm" in item["group"] or stat in OWN_SCALE or item["stat"] in OWN_SCALE:
        return None
    finite = r2[np.isfinite(r2)]
    if not finite.size:
        return None
    low, high = (float(v) for v in np.percentile(finite, [50, 99]))
    if not high > low:
        return None
    return r2, (low, high), (f"the group mean R² is below {low:.2g} (its median); opaque from R² {high:.2g} (its "
                             "99th percentile)")


def participants_table(summary):
    """(headings, rows) of the participants table: the columns that matter to a reader (those with a value for
    some participant), numbers to 3 significant digits."""
    columns = [c for c in SHOWN_COLUMNS if c in summary and (summary[c] != "n/a").any()]
    rows = []
    for values in summary[columns].to_numpy().tolist():
        rows.append([_number(value) if column.startswith(("median", "wall")) else value
                     for column, value in zip(columns, values, strict=True)])
    return [SHOWN_COLUMNS[c] for c in columns], rows


def _number(text):
    try:
        return f"{float(text):.3g}"
    except ValueError:
        return text


def _cell(value):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
