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
    for item in items:
        values, geometry = read_map(item["path"])
        writer = geometry.writer(np.ones(values.size, dtype=bool))
        if geometry.kind == "volume" and item["group"] not in cuts:  # one set of cuts per group of maps, where
            cuts[item["group"]] = figures.axial_cuts(writer.to_image(values, item["stat"]))  # its first map has data
        plotter = MapPlotter(writer, _background(item["space"]) if geometry.kind == "volume" else None,
                             item["space"], cut_coords=cuts.get(item["group"]))
        words = item["label"].replace("(", "").replace(")", "").split()
        name = "_".join([item["group"], *(short_label(word) for word in words)])  # as the maps' names: cut labels
        path, _ = plotter.plot(values, folder / name, item["label"], item["stat"])
        sections.setdefault(item["group"], []).append(
            {"file": path.relative_to(output_dir).as_posix(), "caption": item["caption"]})
    summary = pd.read_csv(output_dir / "group" / "participants_summary.tsv", sep="\t", dtype=str).fillna("n/a")
    subjects = summary["participant_id"] if "participant_id" in summary else summary.iloc[:, 0]
    return render("group.html", output_dir / "group.html", title="group", sections=sections,
                  columns=list(summary.columns), rows=summary.to_numpy().tolist(),
                  n_participants=int(subjects.nunique()), few=FEW_PARTICIPANTS,
                  comparisons=group_comparisons(output_dir, _background),
                  tables=[{"name": name, "columns": list(frame.columns),
                           "rows": frame.apply(lambda c: c.map(_cell)).to_numpy().tolist()} for name, frame in tables],
                  clusters=[{"name": name, "columns": list(frame.columns), "total": len(frame),
                             "rows": frame.head(CLUSTER_ROWS).apply(lambda c: c.map(_cell)).to_numpy().tolist()}
                            for name, frame in clusters])


def _cell(value):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
