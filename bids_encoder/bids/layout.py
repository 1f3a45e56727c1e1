"""Find a participant's inputs in a BIDS dataset and its fMRIPrep derivatives, through one pybids layout."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
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
    surfaces: dict = field(default_factory=dict)  # GIFTI: {'L': path, 'R': path}; ``bold`` is then the L file

    @property
    def label(self):
        """'sub-01_ses-a_task-x_run-1' style name of the run (for messages and reports)."""
        parts = [f"sub-{self.subject}"] + [f"{key}-{value}" for key, value in (
            ("ses", self.session), ("task", self.task), ("run", self.run)) if value is not None]
        return "_".join(parts)


def load_layout(bids_dir, derivatives=None, database_dir=None, raw_only=False):
    """One pybids layout over the raw dataset and the fMRIPrep derivatives (only the raw dataset: ``raw_only``).

    With ``database_dir``, the index is kept there (one database per set of inputs) and reused by later calls.
    """
    bids_dir = Path(bids_dir).resolve()
    if not bids_dir.is_dir():
        raise InputError(f"BIDS_DIR {bids_dir} does not exist", exit_code=66)
    if not (bids_dir / "dataset_description.json").is_file():
        raise InputError(f"BIDS_DIR {bids_dir} is not a BIDS dataset (no dataset_description.json)", exit_code=16)
    folders = []
    if not raw_only:
        derivatives = Path(derivatives).resolve() if derivatives else bids_dir / "derivatives" / "fmriprep"
        if not (derivatives / "dataset_description.json").is_file():
            raise InputError(f"No fMRIPrep derivatives at {derivatives} (dataset_description.json missing)",
                             exit_code=66)
        folders = [str(derivatives)]
    return _indexed(bids_dir, folders, database_dir)


def _indexed(bids_dir, derivatives, database_dir):
    from bids import BIDSLayout

    arguments = {"derivatives": derivatives or False, "validate": False}
    if database_dir is None:
        return BIDSLayout(str(bids_dir), **arguments)
    key = hashlib.sha1("|".join([str(bids_dir), *derivatives]).encode()).hexdigest()[:12]
    database_path = Path(database_dir) / f"pybids-{key}"
    if not (database_path / "layout_index.sqlite").is_file():
        # Index in memory, save under a private name, then rename into place: jobs started together (a SLURM
        # array sharing --work-dir) never read a half-written index; when several finish, the first rename wins.
        database_path.parent.mkdir(parents=True, exist_ok=True)
        private = Path(tempfile.mkdtemp(prefix=f".{database_path.name}-", dir=database_path.parent))
        try:
            BIDSLayout(str(bids_dir), **arguments).save(str(private))
            private.chmod(0o755)  # mkdtemp makes it private; the index is shared like the rest of the work dir
            os.replace(private, database_path)
        except OSError:  # another job's index is in place already
            pass
        finally:
            shutil.rmtree(private, ignore_errors=True)
    return BIDSLayout(str(bids_dir), database_path=str(database_path), **arguments)


def _one(files, what, bold):
    if not files:
        return None
    if len(files) > 1:
        logger.warning("%d %s files match %s; using %s", len(files), what, bold.name, Path(files[0]).name)
    return Path(files[0])


def _header_tr(bold):
    """TR from a NIfTI header (4th zoom, in seconds) or a CIFTI series axis; None when absent or unreadable."""
    name = Path(bold).name
    try:
        if name.endswith(".dtseries.nii"):
            axis = nib.load(str(bold)).header.get_axis(0)
            factor = {"SECOND": 1.0, "MSEC": 1e-3, "USEC": 1e-6}.get(getattr(axis, "unit", "SECOND").upper(), 1.0)
            return float(axis.step) * factor if axis.step > 0 else None
        if name.endswith((".nii.gz", ".nii")):
            header = nib.load(str(bold)).header
            zooms = header.get_zooms()
            if len(zooms) < 4 or zooms[3] <= 0:
                return None
            unit = header.get_xyzt_units()[1]
            return float(zooms[3]) * {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
    except Exception as error:  # unreadable image: reported when the data are loaded
        logger.debug("Could not read the header of %s: %s", bold, error)
    return None


def repetition_time(layout, bold, raw_filters, metadata=None):
    """TR from the derivative sidecar (``metadata``, if already read), else the raw sidecar, else the image
    header; disagreement is an error, and so is a sparse acquisition (``VolumeTiming``: no regular TR)."""
    metadata = layout.get_metadata(str(bold)) if metadata is None else metadata
    sidecar = metadata.get("RepetitionTime")
    raw_metadata = {}
    if sidecar is None or "VolumeTiming" not in metadata:
        raw = layout.get(scope="raw", suffix="bold", extension=VOLUME_EXTENSIONS, return_type="filename",
                         **raw_filters)
        raw_metadata = layout.get_metadata(raw[0]) if raw else {}
    if "VolumeTiming" in metadata or "VolumeTiming" in raw_metadata:
        raise InputError(f"{Path(bold).name} is a sparse acquisition (VolumeTiming in its sidecar, no regular "
                         "RepetitionTime): not supported; fit it with a tool that models the volume times",
                         exit_code=65)
    if sidecar is None:
        sidecar = raw_metadata.get("RepetitionTime")
    header = _header_tr(bold)
    if sidecar is None and header is None:
        raise InputError(f"No repetition time for {Path(bold).name}: no RepetitionTime in its sidecars "
                         "and none in the image header", exit_code=65)
    if sidecar is not None and header is not None and abs(float(sidecar) - header) > TR_TOLERANCE:
        raise InputError(f"RepetitionTime {sidecar} s in the sidecar of {Path(bold).name} disagrees with "
                         f"{header} s in its header", exit_code=65)
    return float(sidecar if sidecar is not None else header)


INHERITED_ENTITIES = ("subject", "session", "task", "acquisition", "run")


def inherited_events(layout, entities):
    """The raw events.tsv files that apply to a run with ``entities``, by BIDS inheritance: every file whose own
    entities all match the run's (``task-X_events.tsv`` at the top level applies to every run of task X) and that
    no more specific one overrides; runs match as integers (``run-1`` and ``run-01`` are one run)."""
    candidates = layout.get(scope="raw", suffix="events", extension=".tsv", task=entities.get("task"),
                            return_type="object")
    matching = []
    for candidate in candidates:
        own = {key: candidate.entities[key] for key in INHERITED_ENTITIES if key in candidate.entities}
        if all(key in entities and str(value).lstrip("0") == str(entities[key]).lstrip("0")
               if key == "run" else entities.get(key) == value for key, value in own.items()):
            matching.append((-len(own), len(Path(candidate.path).parts), candidate.path))
    matching.sort()
    return [path for specificity, _, path in matching if specificity == matching[0][0]]


def _bold_query(kind, space):
    if kind == "gifti":
        return {"suffix": "bold", "extension": ".func.gii", "space": space, "hemi": "L"}
    if kind == "cifti":
        return {"suffix": "bold", "extension": ".dtseries.nii", "space": space}
    return {"suffix": "bold", "extension": VOLUME_EXTENSIONS, "space": space, "desc": "preproc"}


def find_runs(layout, subject, task=None, session=None, run=None, space="MNI152NLin2009cAsym", res=None,
              filters=None, kind="volume"):
    """Every preprocessed run of one subject matching the filters, with its mask, confounds and events.

    ``kind`` is 'volume' (``desc-preproc_bold.nii.gz`` + ``desc-brain_mask``), 'gifti' (``hemi-L``/``hemi-R``
    ``bold.func.gii`` pairs, in either entity order) or 'cifti' (``bold.dtseries.nii``).
    Raises InputError (exit code 18) when the filters select no preprocessed BOLD file.
    """
    query = {"subject": subject}
    for name, value in (("task", task), ("session", session), ("run", run), ("res", res)):
        if value is not None:
            query[name] = value
    query.update(filters or {})
    bold_query = _bold_query(kind, space)
    query = {key: value for key, value in query.items() if key not in bold_query}  # the kind fixes these
    bolds = layout.get(scope="derivatives", return_type="filename", invalid_filters="drop", **bold_query, **query)
    if not bolds:
        available = layout.get(scope="derivatives", subject=subject, suffix="bold", return_type="object")
        tasks = sorted({f.entities["task"] for f in available if "task" in f.entities})
        spaces = sorted({f.entities["space"] for f in available if "space" in f.entities})
        raise InputError(f"No preprocessed BOLD ({kind}, space-{space}) for sub-{subject} with filters {query} "
                         f"(sub-{subject} has task(s) {', '.join(tasks) or 'none'}; space(s) "
                         f"{', '.join(spaces) or 'none'})", exit_code=18)
    runs = []
    for bold in sorted(bolds):
        entities = layout.parse_file_entities(bold)
        common = {key: entities[key] for key in ("subject", "session", "task", "run", "acquisition")
                  if key in entities}
        surfaces = {}
        if kind == "gifti":
            right = layout.get(scope="derivatives", suffix="bold", extension=".func.gii", space=space, hemi="R",
                               return_type="filename", **common,
                               **{key: entities[key] for key in ("den",) if key in entities})
            surfaces = {"L": Path(bold), "R": _one(right, "hemi-R GIFTI", Path(bold))}
            if surfaces["R"] is None:
                raise InputError(f"{Path(bold).name} has no hemi-R counterpart", exit_code=66)
        mask = None
        if kind == "volume":
            mask = _one(layout.get(scope="derivatives", desc="brain", suffix="mask", space=space,
                                   extension=VOLUME_EXTENSIONS, return_type="filename",
                                   **common, **({"res": entities["res"]} if "res" in entities else {})),
                        "mask", Path(bold))
        confounds = layout.get(scope="derivatives", desc="confounds", suffix=["timeseries", "regressors"],
                               extension=".tsv", return_type="filename", **common)
        events = inherited_events(layout, common)
        metadata = layout.get_metadata(bold)
        runs.append(RunInputs(
            subject=subject, task=entities.get("task"), run=entities.get("run"), session=entities.get("session"),
            space=space, bold=Path(bold), mask=mask,
            confounds=_one(confounds, "confounds", Path(bold)), events=_one(events, "events", Path(bold)),
            tr=repetition_time(layout, bold, common, metadata), start_time=float(metadata.get("StartTime", 0.0) or 0.0),
            entities=entities, surfaces=surfaces))
    return runs
