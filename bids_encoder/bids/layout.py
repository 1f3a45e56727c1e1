"""Find a participant's inputs in a BIDS dataset and its fMRIPrep derivatives, through one pybids layout."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib

logger = logging.getLogger(__name__)

__all__ = ["InputError", "RunInputs", "load_layout", "find_runs", "repetition_time"]

VOLUME_EXTENSIONS = [".nii.gz", ".nii"]
TR_TOLERANCE = 1e-3  # seconds


class InputError(ValueError):
    """Bad or missing input, with the BIDS-Apps exit code that reports it."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class RunInputs:
    """The files and metadata of one run."""

    subject: str
    task: str
    run: int | None
    session: str | None
    space: str
    bold: Path
    mask: Path | None
    confounds: Path | None
    events: Path | None
    tr: float
    start_time: float = 0.0
    entities: dict = field(default_factory=dict)


def load_layout(bids_dir, derivatives=None, database_dir=None):
    """One pybids layout over the raw dataset and the fMRIPrep derivatives.

    With ``database_dir``, the index is kept there (one database per pair of inputs) and reused by later calls.
    """
    from bids import BIDSLayout

    bids_dir = Path(bids_dir).resolve()
    if not bids_dir.is_dir():
        raise InputError(f"BIDS_DIR {bids_dir} does not exist", exit_code=66)
    if not (bids_dir / "dataset_description.json").is_file():
        raise InputError(f"BIDS_DIR {bids_dir} is not a BIDS dataset (no dataset_description.json)", exit_code=16)
    derivatives = Path(derivatives).resolve() if derivatives else bids_dir / "derivatives" / "fmriprep"
    if not (derivatives / "dataset_description.json").is_file():
        raise InputError(f"No fMRIPrep derivatives at {derivatives} (dataset_description.json missing)",
                         exit_code=66)
    database_path = None
    if database_dir is not None:
        key = hashlib.sha1(f"{bids_dir}|{derivatives}".encode()).hexdigest()[:12]
        database_path = Path(database_dir) / f"pybids-{key}"
        database_path.parent.mkdir(parents=True, exist_ok=True)
    return BIDSLayout(str(bids_dir), derivatives=[str(derivatives)], validate=False,
                      database_path=None if database_path is None else str(database_path))


def _one(files, what, bold):
    if not files:
        return None
    if len(files) > 1:
        logger.warning("%d %s files match %s; using %s", len(files), what, bold.name, Path(files[0]).name)
    return Path(files[0])


def repetition_time(layout, bold, raw_filters):
    """TR from the derivative sidecar, else the raw sidecar, else the image header; disagreement is an error."""
    sidecar = layout.get_metadata(str(bold)).get("RepetitionTime")
    if sidecar is None:
        raw = layout.get(scope="raw", suffix="bold", extension=VOLUME_EXTENSIONS, return_type="filename",
                         **raw_filters)
        if raw:
            sidecar = layout.get_metadata(raw[0]).get("RepetitionTime")
    header = None
    if "".join(Path(bold).suffixes[-2:]) in (".nii.gz", ".nii") or Path(bold).suffix == ".nii":
        try:
            zooms = nib.load(str(bold)).header.get_zooms()
            header = float(zooms[3]) if len(zooms) > 3 and zooms[3] > 0 else None
        except Exception as error:  # unreadable image: reported when the data are loaded
            logger.debug("Could not read the header of %s: %s", bold, error)
    if sidecar is None and header is None:
        raise InputError(f"No repetition time for {Path(bold).name}: no RepetitionTime in its sidecars "
                         "and none in the image header", exit_code=65)
    if sidecar is not None and header is not None and abs(float(sidecar) - header) > TR_TOLERANCE:
        raise InputError(f"RepetitionTime {sidecar} s in the sidecar of {Path(bold).name} disagrees with "
                         f"{header} s in its header", exit_code=65)
    return float(sidecar if sidecar is not None else header)


def find_runs(layout, subject, task=None, session=None, run=None, space="MNI152NLin2009cAsym", res=None,
              filters=None):
    """Every preprocessed run of one subject matching the filters, with its mask, confounds and events.

    Raises InputError (exit code 18) when the filters select no preprocessed BOLD file.
    """
    query = {"subject": subject}
    for name, value in (("task", task), ("session", session), ("run", run), ("res", res)):
        if value is not None:
            query[name] = value
    query.update(filters or {})
    bolds = layout.get(scope="derivatives", desc="preproc", suffix="bold", space=space,
                       extension=VOLUME_EXTENSIONS, return_type="filename", invalid_filters="drop", **query)
    if not bolds:
        raise InputError(f"No preprocessed BOLD (desc-preproc, space-{space}) for sub-{subject} with "
                         f"filters {query}", exit_code=18)
    runs = []
    for bold in sorted(bolds):
        entities = layout.parse_file_entities(bold)
        common = {key: entities[key] for key in ("subject", "session", "task", "run", "acquisition")
                  if key in entities}
        mask = layout.get(scope="derivatives", desc="brain", suffix="mask", space=space,
                          extension=VOLUME_EXTENSIONS, return_type="filename",
                          **common, **({"res": entities["res"]} if "res" in entities else {}))
        confounds = layout.get(scope="derivatives", desc="confounds", suffix=["timeseries", "regressors"],
                               extension=".tsv", return_type="filename", **common)
        events = layout.get(scope="raw", suffix="events", extension=".tsv", return_type="filename", **common)
        metadata = layout.get_metadata(bold)
        runs.append(RunInputs(
            subject=subject, task=entities.get("task"), run=entities.get("run"), session=entities.get("session"),
            space=space, bold=Path(bold), mask=_one(mask, "mask", Path(bold)),
            confounds=_one(confounds, "confounds", Path(bold)), events=_one(events, "events", Path(bold)),
            tr=repetition_time(layout, bold, common), start_time=float(metadata.get("StartTime", 0.0) or 0.0),
            entities=entities))
    return runs
