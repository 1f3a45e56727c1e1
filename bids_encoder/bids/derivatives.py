"""BIDS-Derivatives output: file names, atomic writes, dataset_description.json, and the pybids config."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from .._version import __version__

__all__ = ["PYBIDS_CONFIG", "bids_label", "derivative_path", "map_extension", "map_paths", "sidecar_path", "atomic_write", "write_json",
           "write_dataset_description", "container_info", "output_layout"]

#: pybids configuration declaring the entities bids_encoder adds (``stat``, ``contrast``; ``model`` is standard)
PYBIDS_CONFIG = Path(__file__).resolve().parent.parent / "data" / "bids_encoder_config.json"

ENTITY_ORDER = [("subject", "sub"), ("session", "ses"), ("task", "task"), ("acquisition", "acq"), ("run", "run"),
                ("hemi", "hemi"), ("space", "space"), ("res", "res"), ("den", "den"), ("atlas", "atlas"),
                ("model", "model"), ("contrast", "contrast"), ("stat", "stat"), ("desc", "desc")]


def bids_label(text):
    """An alphanumeric BIDS label from free text: 'faces_left' → 'facesLeft', 'hrf delay' → 'hrfDelay'."""
    words = [w for w in re.split(r"[^0-9a-zA-Z]+", str(text)) if w]
    if not words:
        raise ValueError(f"Cannot make a BIDS label from {text!r}")
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


def derivative_path(output_dir, entities, suffix="statmap", extension=".nii.gz"):
    """``OUTPUT_DIR/sub-X/[ses-Y/]func/sub-X[_ses-Y]_task-T…_model-m_stat-s_<suffix><extension>``.

    Without a subject (group results): ``OUTPUT_DIR/group/task-T…_<suffix><extension>``.
    """
    parts = []
    for key, short in ENTITY_ORDER:
        value = entities.get(key)
        if value is None or value == "":
            continue
        if key == "run" and isinstance(value, int):
            value = str(value)
        parts.append(f"{short}-{bids_label(value) if key in ('contrast', 'stat', 'model') else value}")
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
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name.split('.')[0]}-", suffix=suffix)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


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
