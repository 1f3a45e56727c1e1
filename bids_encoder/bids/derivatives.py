"""BIDS-Derivatives output: file names, atomic writes, dataset_description.json, and the pybids config."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path

from .._version import __version__

logger = logging.getLogger(__name__)

__all__ = ["PYBIDS_CONFIG", "bids_label", "short_label", "condition_labels", "name_limits", "NameTooLongError",
           "check_names", "entity_labels", "MAX_LABEL", "MAX_TASK_LABEL", "derivative_path", "map_extension", "map_paths", "sidecar_path", "atomic_write", "write_json",
           "write_dataset_description", "container_info", "output_layout"]

#: pybids configuration declaring the entities bids_encoder adds (``stat``, ``contrast``; ``model`` is standard)
PYBIDS_CONFIG = Path(__file__).resolve().parent.parent / "data" / "bids_encoder_config.json"

ENTITY_ORDER = [("subject", "sub"), ("session", "ses"), ("task", "task"), ("acquisition", "acq"), ("run", "run"),
                ("hemi", "hemi"), ("space", "space"), ("res", "res"), ("den", "den"), ("atlas", "atlas"),
                ("model", "model"), ("contrast", "contrast"), ("stat", "stat"), ("desc", "desc")]


#: labels the app makes from free text (conditions, contrast names, a model file's Name, descriptions, atlas names)
#: longer than this many characters are shortened in file names (:func:`short_label`)
MAX_LABEL = 32
#: task labels (from the input file names) longer than this are shortened the same way in the outputs' names
MAX_TASK_LABEL = 80
#: hexadecimal digits of the SHA-1 that end a shortened label
HASH_DIGITS = 8
#: entities whose values are shortened: the app's free-text labels, and the task
SHORTENED = {"contrast": MAX_LABEL, "model": MAX_LABEL, "desc": MAX_LABEL, "atlas": MAX_LABEL,
             "task": MAX_TASK_LABEL}
#: file-system limits assumed when the file system does not say (Linux's NAME_MAX and PATH_MAX)
NAME_MAX, PATH_MAX = 255, 4096


def bids_label(text):
    """An alphanumeric BIDS label from free text: 'faces_left' → 'facesLeft', 'hrf delay' → 'hrfDelay'."""
    words = [w for w in re.split(r"[^0-9a-zA-Z]+", str(text)) if w]
    if not words:
        raise ValueError(f"Cannot make a BIDS label from {text!r}")
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


def _digest(text):
    return hashlib.sha1(str(text).encode("utf-8")).hexdigest()[:HASH_DIGITS]


def short_label(label, limit=MAX_LABEL):
    """``label`` as it appears in file names: unchanged up to ``limit`` characters, else its first
    ``limit − 8`` characters followed by the first 8 hexadecimal digits of the SHA-1 of the whole label.

    Deterministic (the same label always gives the same name, on every machine and at both levels) and
    idempotent (a shortened label is returned as it is), so maps named by it are found again by their names.
    """
    label = str(label)
    if len(label) <= limit:
        return label
    return label[: limit - HASH_DIGITS] + _digest(label)


def condition_labels(conditions, warn=True):
    """{condition: label}: the BIDS label of each condition name (events' ``trial_type`` values), made unique.

    Conditions whose labels would be the same (``faces left`` and ``faces_left``) get the first 8 hexadecimal
    digits of the SHA-1 of their own name appended; a name without a letter or digit (``+``) becomes
    ``condition`` followed by them. Both are logged as warnings (``warn``). The labels are not shortened here: file names
    shorten them (:func:`short_label`), sidecars keep them whole.
    """
    labels = {}
    for condition in conditions:
        try:
            labels[condition] = bids_label(condition)
        except ValueError:
            labels[condition] = "condition" + _digest(condition)
            if warn:
                logger.warning("Condition %r has no letter or digit: labelled %s", condition, labels[condition])
    shared = {}
    for condition, label in labels.items():
        shared.setdefault(label, []).append(condition)
    for label, names in shared.items():
        if len(names) > 1:
            for condition in names:
                labels[condition] = label + _digest(condition)
            (logger.warning if warn else logger.debug)("Conditions %s would share the label %s: labelled %s", ", ".join(map(repr, names)), label,
                           ", ".join(labels[c] for c in names))
    return labels


def _label(key, value):
    if key == "run" and isinstance(value, int):
        return str(value)
    if key in ("contrast", "stat", "model"):
        value = bids_label(value)
    return short_label(value, SHORTENED[key]) if key in SHORTENED else str(value)


def entity_labels(entities):
    """{entity: value as written in file names} for the entities of ``entities`` that have a value."""
    return {key: _label(key, entities[key]) for key, _ in ENTITY_ORDER if entities.get(key) not in (None, "")}


def derivative_path(output_dir, entities, suffix="statmap", extension=".nii.gz"):
    """``OUTPUT_DIR/sub-X/[ses-Y/]func/sub-X[_ses-Y]_task-T…_model-m_stat-s_<suffix><extension>``.

    Without a subject (group results): ``OUTPUT_DIR/group/task-T…_<suffix><extension>``. Labels the app makes
    from free text (contrast, model, desc, atlas) longer than :data:`MAX_LABEL` characters, and task labels longer
    than :data:`MAX_TASK_LABEL`, are shortened by :func:`short_label`.
    """
    labels = entity_labels(entities)
    parts = [f"{short}-{labels[key]}" for key, short in ENTITY_ORDER if key in labels]
    if entities.get("subject") is None:
        return Path(output_dir) / "group" / ("_".join(parts) + f"_{suffix}{extension}")
    folder = Path(output_dir) / f"sub-{entities['subject']}"
    if entities.get("session"):
        folder = folder / f"ses-{entities['session']}"
    return folder / "func" / ("_".join(parts) + f"_{suffix}{extension}")


def map_extension(kind):
    return {"volume": ".nii.gz", "gifti": ".func.gii", "cifti": ".dscalar.nii"}[kind]


def map_paths(output_dir, entities, kind, suffix="statmap"):
    extension = map_extension(kind)
    if kind == "gifti":
        return {hemi: derivative_path(output_dir, {**entities, "hemi": hemi}, suffix=suffix, extension=extension)
                for hemi in ("L", "R")}
    return derivative_path(output_dir, entities, suffix=suffix, extension=extension)


def sidecar_path(path):
    """The sidecar of a map: ``…_statmap.json`` (one per GIFTI pair, without the hemi entity)."""
    if isinstance(path, dict):
        name = path["L"].name.replace("_hemi-L", "")
        return path["L"].with_name(name.split(".")[0] + ".json")
    return path.with_name(path.name.split(".")[0] + ".json")


def _umask():
    """The process's umask, read without changing it (``/proc/self/status``), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Call ``write(temporary_path)`` then rename onto ``path``: readers never see a half-written file.

    The file gets the permissions a plain ``open()`` would give it (0666 less the umask: 0644 by default), not the
    temporary's private 0600, so that a lab's group can read the derivatives."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)  # keep .nii.gz so that writers pick the right format
    # ".<stem>-XXXXXXXX<suffix>": a stem too long for the file system is cut to fit (it still starts with the
    # fit's name, by which an interrupted fit's temporaries are found and removed)
    stem = path.name.split(".")[0][: max(1, name_limits(path.parent)[0] - len(suffix) - 10)]
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{stem}-", suffix=suffix)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


class NameTooLongError(ValueError):
    """An output name or path longer than the file system allows (exit 73: the output cannot be created)."""


def name_limits(folder):
    """(longest file name, longest path) in bytes on the file system of ``folder`` (its nearest existing
    ancestor): ``os.pathconf``'s NAME_MAX and PATH_MAX, else 255 and 4096."""
    existing = Path(folder).resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    limits = []
    for key, default in (("PC_NAME_MAX", NAME_MAX), ("PC_PATH_MAX", PATH_MAX)):
        try:
            value = os.pathconf(existing, key)
        except (OSError, ValueError):
            value = -1
        limits.append(value if value and value > 0 else default)
    return tuple(limits)


def check_names(paths, what, limits=None):
    """Raise :class:`NameTooLongError` when a path of ``paths`` has a file name or a whole path longer than the file
    system of its folder allows; ``what`` names the fit in the message. Nothing is created."""
    paths = [Path(p) for p in paths]
    if not paths:
        return
    name_max, path_max = limits or name_limits(paths[0].parent)
    longest = max(paths, key=lambda p: len(p.name.encode("utf-8")))
    size = len(longest.name.encode("utf-8"))
    if size > name_max:
        long_ones = ", ".join(f"{key} ({len(value)} characters)" for key, value in
                              re.findall(r"(?:^|_)([a-z]+)-([a-zA-Z0-9]+)", longest.name) if len(value) > 24)
        raise NameTooLongError(f"{what}: output file names would be up to {size} bytes ({longest.name}), more than the "
                         f"{name_max} this file system allows, even with contrast, model and description labels cut "
                         f"to {MAX_LABEL} characters and task labels to {MAX_TASK_LABEL}"
                         + (f"; long labels: {long_ones}" if long_ones else ""))
    deepest = max(paths, key=lambda p: len(str(p).encode("utf-8")))
    size = len(str(deepest).encode("utf-8"))
    if size > path_max:
        raise NameTooLongError(f"{what}: output paths would be up to {size} bytes, more than the {path_max} this file "
                         "system allows; choose a shorter OUTPUT_DIR")


def write_json(path, content):
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(content, indent=2, sort_keys=False) + "\n"))


def container_info():
    """{'Type': 'docker'|'apptainer', 'Tag': …} when running in this project's image, else None.

    The image says so: the Dockerfile sets ``BIDS_ENCODER_CONTAINER=docker``, singularity/bids_encoder.def
    ``apptainer`` (a Docker image run by Apptainer directly is reported as apptainer). Any other container (a
    ``/.dockerenv`` of someone else's image with bids_encoder pip-installed) is not claimed.
    """
    kind = os.environ.get("BIDS_ENCODER_CONTAINER", "").strip().lower()
    if kind not in ("docker", "apptainer"):
        return None
    if os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER"):
        kind = "apptainer"
    return {"Type": kind, "Tag": os.environ.get("BIDS_ENCODER_IMAGE", f"bids_encoder:{__version__}")}


def write_dataset_description(output_dir, sources):
    """Write (atomically) the derivative dataset_description.json.

    Parameters
    ----------
    sources : dict name → folder, e.g. {'raw': BIDS_DIR, 'fmriprep': derivatives}; they become DatasetLinks (for
        ``bids:<name>:`` URIs in sidecars) and SourceDatasets.
    """
    generated_by = {"Name": "bids_encoder", "Version": __version__}
    container = container_info()
    if container:
        generated_by["Container"] = container
    links = {name: Path(folder).resolve().as_uri() for name, folder in sources.items()}
    content = {
        "Name": "bids_encoder encoding-model fits",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated_by],
        "SourceDatasets": [{"URL": f"bids:{name}:"} for name in sources],
        "DatasetLinks": links,
    }
    return write_json(Path(output_dir) / "dataset_description.json", content)


def output_layout(output_dir, subjects=None, metadata=True):
    """A pybids layout over bids_encoder outputs that knows the model, stat and contrast entities; with
    ``subjects`` (labels), only their folders are indexed (a participant job need not index everyone's outputs).

    ``metadata=False`` leaves the sidecars out of the index (faster; bids_encoder reads its sidecars itself)."""
    from bids import BIDSLayout, BIDSLayoutIndexer

    config = ["bids", "derivatives", str(PYBIDS_CONFIG)]
    if not subjects:
        return BIDSLayout(str(output_dir), config=config, validate=False,
                          indexer=BIDSLayoutIndexer(validate=False, index_metadata=metadata))
    chosen = "|".join(re.escape(f"sub-{label}") for label in subjects)
    ignore = [re.compile(rf"^/(?!(?:{chosen})(?:/|$)|dataset_description\.json$)"), re.compile(r"/\.")]
    return BIDSLayout(str(output_dir), config=config, validate=False,
                      indexer=BIDSLayoutIndexer(validate=False, ignore=ignore, index_metadata=metadata))
