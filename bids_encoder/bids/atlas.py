"""Label images (atlases) for ROI summaries, aligned to the layout of the participants' maps.

``--atlas`` names a label image: NIfTI for volume spaces (resampled to the maps' grid by nearest neighbour when
its grid differs), GIFTI for surface spaces (``{hemi}`` in the path stands for L and R; ``.label.gii`` or any
integer-valued GIFTI), CIFTI ``.dlabel.nii``/``.dscalar.nii`` for fsLR. ``{subject}`` in the path stands for the
participant label: native-space (T1w, fsnative) outputs need one atlas per participant. Region names come from a
BIDS ``dseg.tsv``-style table (columns ``index`` and ``name``): ``--atlas-labels``, else the TSV beside the image,
else the image's own label table; label 0 is background.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .derivatives import bids_label
from .images import load_image
from .layout import InputError

logger = logging.getLogger(__name__)

__all__ = ["Atlas", "NATIVE_SPACES", "is_native"]

NATIVE_SPACES = ("T1w", "T2w", "anat", "fsnative", "func", "boldref", "scanner", "orig")
IMAGE_EXTENSIONS = (".label.gii", ".func.gii", ".shape.gii", ".dlabel.nii", ".dscalar.nii", ".nii.gz", ".nii")


def is_native(space):
    """Spaces whose coordinates belong to one participant: maps there cannot be averaged voxel by voxel."""
    return space in NATIVE_SPACES


def _strip_extension(name):
    for extension in IMAGE_EXTENSIONS:
        if name.endswith(extension):
            return name[: -len(extension)]
    return name.split(".")[0]


class Atlas:
    """A label image given as a path template (``{subject}``, ``{hemi}``) and an optional label table."""

    def __init__(self, template, labels_file=None):
        self.template = str(template)
        self.labels_file = Path(labels_file) if labels_file else None
        stem = _strip_extension(Path(self.template).name)
        match = re.search(r"(?:^|_)(?:atlas|seg|desc)-([A-Za-z0-9]+)", stem)
        self.name = match.group(1) if match else bids_label(stem.replace("{subject}", "").replace("{hemi}", ""))
        self.per_subject = "{subject}" in self.template
        if self.labels_file is not None and not self.labels_file.is_file():
            raise InputError(f"--atlas-labels {self.labels_file} does not exist", exit_code=66)

    def path(self, subject=None, hemi=None):
        path = self.template.replace("{subject}", subject or "").replace("{hemi}", hemi or "")
        return Path(path)

    def check(self, subjects, kind):
        """Fail early, naming the file, when an atlas image this group needs is missing."""
        if kind == "gifti" and "{hemi}" not in self.template:
            raise InputError(f"--atlas {self.template}: surface maps need one label image per hemisphere; write "
                             "{hemi} where the path says L or R", exit_code=64)
        for subject in subjects if self.per_subject else [None]:
            for hemi in ("L", "R") if kind == "gifti" else [None]:
                path = self.path(subject, hemi)
                if not path.is_file():
                    raise InputError(f"Atlas image {path} does not exist", exit_code=66)

    def labels(self, geometry, subject=None):
        """(integer label per value of the map layout, {label: name}) for maps of ``geometry``."""
        if geometry.kind == "gifti":
            parts, table = [], {}
            for hemi in ("L", "R"):
                path = self.path(subject, hemi)
                image = load_image(path, "atlas")
                values = np.rint(np.asarray(image.darrays[0].data)).astype(np.int64).ravel()
                if values.size != geometry.hemisphere_sizes[hemi]:
                    raise InputError(f"Atlas {path.name} has {values.size} vertices, the maps' hemi-{hemi} "
                                     f"{geometry.hemisphere_sizes[hemi]}", exit_code=65)
                parts.append(values)
                table.update({k: v for k, v in image.labeltable.get_labels_as_dict().items() if k})
            return np.concatenate(parts), self._names(table)
        path = self.path(subject)
        image = load_image(path, "atlas")
        if geometry.kind == "cifti":
            values = np.rint(np.asarray(image.dataobj)[0]).astype(np.int64)
            if values.size != geometry.shape[0]:
                raise InputError(f"Atlas {path.name} has {values.size} grayordinates, the maps "
                                 f"{geometry.shape[0]}", exit_code=65)
            axis = image.header.get_axis(0)
            table = {k: v[0] for k, v in axis.label[0].items() if k} if isinstance(
                axis, nib.cifti2.LabelAxis) else {}
            return values, self._names(table, path)
        if image.shape[:3] != tuple(geometry.shape) or not np.allclose(image.affine, geometry.affine, atol=1e-3):
            from nilearn.image import resample_to_img

            reference = nib.Nifti1Image(np.zeros(geometry.shape, np.int8), geometry.affine)
            logger.info("Resampling atlas %s to the maps' grid (nearest neighbour)", path.name)
            image = resample_to_img(image, reference, interpolation="nearest", force_resample=True,
                                    copy_header=True)
        values = np.rint(np.asarray(image.dataobj)).astype(np.int64)
        return values.reshape(geometry.shape).ravel(), self._names({}, path)

    def _names(self, table, image_path=None):
        """{label: name} from --atlas-labels, else the TSV beside the image, else the image's own table."""
        tsv = self.labels_file
        if tsv is None and image_path is not None:
            beside = image_path.with_name(_strip_extension(image_path.name) + ".tsv")
            tsv = beside if beside.is_file() else None
        if tsv is None:
            return table
        try:
            frame = pd.read_csv(tsv, sep="\t")
            return {int(i): str(n) for i, n in zip(frame["index"], frame["name"], strict=True) if int(i) != 0}
        except (KeyError, ValueError, OSError) as error:
            raise InputError(f"Atlas label table {tsv} needs 'index' and 'name' columns ({error})",
                             exit_code=65) from error

