"""What the participant level tells the console: one line per fit as it starts (the ``bids_encoder.progress``
logger, shown at default verbosity), a table of the fits at the end, and the plan that ``--dry-run`` lists.

The numbers of the table come from each fit's R² sidecar (written last, it marks a finished fit), so fits skipped
because they were finished earlier are summarised like new ones.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PROGRESS", "FitRecord", "fit_record", "summary_table"]

#: INFO messages of this logger reach the console at default verbosity (the CLI's console filter lets them through)
PROGRESS = logging.getLogger("bids_encoder.progress")


@dataclass
class FitRecord:
    """One row of the end-of-run table."""

    fit: str
    status: str  # 'done' or 'skipped' (finished earlier)
    voxels: int | None
    median_r2: float | None
    median_cvr2: float | None
    wall_time: float | None
    report: Path | None
    positive_cvr2: float | None = None  # fraction of the fitted voxels with cvR² > 0


def _sidecar(marker):
    try:
        return json.loads(Path(marker).read_text())
    except (OSError, ValueError):
        return {}


def fit_record(name, marker, status, wall_time, report):
    """The row of fit ``name`` from its R² sidecar ``marker``; a skipped fit's wall time is its recorded one.
    ``MedianCVRSquared`` is there only when the fit was cross-validated."""
    sidecar = _sidecar(marker)
    processing = sidecar.get("Processing", {})
    if status == "skipped":
        stages = processing.get("WallTime") or {}
        wall_time = sum(stages.values()) if stages else None
    return FitRecord(fit=name, status=status, voxels=processing.get("VoxelsFitted"),
                     median_r2=sidecar.get("MedianRSquared"), median_cvr2=sidecar.get("MedianCVRSquared"),
                     wall_time=wall_time, report=report, positive_cvr2=sidecar.get("FractionPositiveCVRSquared"))


def _number(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary_table(records):
    """The fits as an aligned text table: fit, status, voxels, median R², median cvR², the fraction of voxels with
    cvR² > 0 (a whole brain's median cvR² is below 0 when most voxels have no signal, however well the others are
    fitted), wall time, report."""
    header = ("fit", "status", "voxels", "median R²", "median cvR²", "cvR² > 0", "wall time", "report")
    rows = [(r.fit, r.status, "n/a" if r.voxels is None else str(r.voxels), _number(r.median_r2),
             _number(r.median_cvr2), "n/a" if r.positive_cvr2 is None else f"{r.positive_cvr2:.0%} of voxels",
             "n/a" if r.wall_time is None else f"{r.wall_time:.1f} s",
             "none (--no-report)" if r.report is None else str(r.report)) for r in records]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *rows])


