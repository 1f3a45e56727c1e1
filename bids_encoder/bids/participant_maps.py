"""Participant-level outputs as the group level sees them: found with pybids, checked, read into arrays.

A *fit* is what one participant-level job wrote for one (subject, session, task, space, model): its maps (one
per parameter and contrast, GIFTI as L/R pairs) and their sidecars. Its R² sidecar is written last, so a fit
without it is unfinished. Fits of different participants that share everything but subject and session form a
*group key*; their maps are aggregated.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from .derivatives import output_layout
from .images import MapWriter, load_image
from .layout import InputError

logger = logging.getLogger(__name__)

__all__ = ["ParticipantFit", "MapGeometry", "find_participant_fits", "read_map", "fit_name"]

MAP_EXTENSIONS = [".nii.gz", ".nii", ".func.gii", ".dscalar.nii"]
KEY_ORDER = ("task", "acquisition", "space", "res", "den", "model")


@dataclass
class ParticipantFit:
    """One participant fit: ``maps`` maps (contrast, stat) to a path (a dict hemi → path for GIFTI)."""

    subject: str
    session: str | None
    key: tuple  # ((entity, value), …) shared by the fits that are aggregated together
    maps: dict = field(default_factory=dict)
    sidecars: dict = field(default_factory=dict)  # (contrast, stat) → JSON path
    run: int | None = None
    #: (contrast, stat) → path of the standard-error map of that parameter (``…_stat-s_desc-se_statmap``, pRF and
    #: tuning fits), kept apart from ``maps`` so that it is never taken for the parameter itself
    standard_errors: dict = field(default_factory=dict)  # a BIDS Stats Model's run-node fit of one run (the group level uses them only there)

    @property
    def finished(self):
        """The R² sidecar, written last by the participant level, is there."""
        marker = self.sidecars.get((None, "rsquared"))
        return marker is not None and marker.is_file()

    def metadata(self, contrast=None, stat="rsquared"):
        return json.loads(self.sidecars[(contrast, stat)].read_text())

    @property
    def label(self):
        return (f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")
                + (f"_run-{self.run}" if self.run is not None else "") + "_" + fit_name(self.key))


def fit_name(key):
    """'task-x_space-y_model-glm' for a group key."""
    short = {"acquisition": "acq"}
    return "_".join(f"{short.get(name, name)}-{value}" for name, value in key)


def _key(entities):
    return tuple((name, str(entities[name])) for name in KEY_ORDER if entities.get(name) is not None)


def find_participant_fits(output_dir, subjects=None, filters=None):
    """Every participant fit under ``output_dir`` (pybids query with the bids_encoder config).

    ``filters`` restrict the query (e.g. {'task': 'x', 'space': 'y', 'model': 'glm'}).
    """
    output_dir = Path(output_dir)
    if not (output_dir / "dataset_description.json").is_file():
        raise InputError(f"{output_dir} holds no bids_encoder outputs (no dataset_description.json): run the "
                         "participant level first", exit_code=66)
    layout = output_layout(output_dir, subjects, metadata=False)
    query = {key: value for key, value in (filters or {}).items() if value is not None}
    if subjects:
        query["subject"] = list(subjects)
    fits = {}
    for item in layout.get(suffix="statmap", return_type="object", **query):
        entities = item.get_entities()
        if "subject" not in entities:  # group outputs
            continue
        path = Path(item.path)
        extension = entities.get("extension")
        if extension not in MAP_EXTENSIONS + [".json"]:
            continue
        identity = (entities["subject"], entities.get("session"), entities.get("run"), _key(entities))
        fit = fits.setdefault(identity, ParticipantFit(entities["subject"], entities.get("session"), _key(entities),
                                                       run=entities.get("run")))
        stat = (entities.get("contrast"), entities.get("stat"))
        if entities.get("desc") == "se":
            if extension != ".json":
                target = fit.standard_errors.setdefault(stat, {}) if "hemi" in entities else None
                if target is None:
                    fit.standard_errors[stat] = path
                else:
                    target[entities["hemi"]] = path
            continue
        if extension == ".json":
            fit.sidecars[stat] = path
        elif "hemi" in entities:
            fit.maps.setdefault(stat, {})[entities["hemi"]] = path
        else:
            fit.maps[stat] = path
    return sorted(fits.values(), key=lambda f: (f.key, f.subject, f.session or "", f.run or 0))


@dataclass
class MapGeometry:
    """What a map's values are laid out on: a voxel grid, a pair of hemisphere meshes, or CIFTI grayordinates."""

    kind: str
    shape: tuple = ()
    affine: np.ndarray | None = None
    hemisphere_sizes: dict | None = None
    brain_models: object = None

    def same_as(self, other):
        if self.kind != other.kind or self.shape != other.shape:
            return False
        if self.kind == "volume":
            return np.allclose(self.affine, other.affine, atol=1e-3)
        if self.kind == "gifti":
            return self.hemisphere_sizes == other.hemisphere_sizes
        return self.brain_models == other.brain_models

    def describe(self):
        if self.kind == "volume":
            return f"grid {self.shape} with affine {np.round(self.affine, 3).tolist()}"
        if self.kind == "gifti":
            return f"hemispheres of {self.hemisphere_sizes} vertices"
        return f"{self.shape[0]} grayordinates"

    def writer(self, mask):
        """A MapWriter for the values at ``mask`` (boolean over the flattened layout)."""
        if self.kind == "volume":
            reference = nib.Nifti1Image(np.zeros(self.shape, np.float32), self.affine)
            return MapWriter("volume", reference=reference, mask=mask.reshape(self.shape))
        if not mask.all():
            raise ValueError("Surface and CIFTI maps are written whole")
        if self.kind == "gifti":
            return MapWriter("gifti", hemisphere_sizes=self.hemisphere_sizes)
        return MapWriter("cifti", brain_models=self.brain_models)



def read_map(path):
    """(flat float64 values, MapGeometry) of a participant map; ``path`` is a dict hemi → path for GIFTI."""
    if isinstance(path, dict):
        if set(path) != {"L", "R"}:
            raise InputError(f"{next(iter(path.values())).name}: both hemispheres are needed, found "
                             f"{sorted(path)}", exit_code=66)
        halves = {hemi: np.asarray(load_image(path[hemi], "participant map").darrays[0].data, dtype=np.float64).ravel()
                  for hemi in ("L", "R")}
        sizes = {hemi: values.size for hemi, values in halves.items()}
        values = np.concatenate([halves["L"], halves["R"]])
        return values, MapGeometry("gifti", shape=(values.size,), hemisphere_sizes=sizes)
    image = load_image(path, "participant map")
    if str(path).endswith(".dscalar.nii"):
        values = np.asarray(image.dataobj, dtype=np.float64)[0]
        return values, MapGeometry("cifti", shape=(values.size,), brain_models=image.header.get_axis(1))
    data = np.asarray(image.dataobj, dtype=np.float64)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{Path(path).name} is not a 3-D map (shape {data.shape})", exit_code=65)
    return data.ravel(), MapGeometry("volume", shape=data.shape, affine=image.affine)
