"""The single-trial betas as BIDS-Derivatives: one 4-D map (a volume per trial) and the TSV naming each volume's
trial.

- volumes: ``…_model-singletrial_stat-beta_statmap.nii.gz``, x × y × z × trials (NaN outside the fitted voxels),
  written through a memory-mapped temporary array so that the whole 4-D image is never held in memory;
- GIFTI: ``…_hemi-{L,R}_…_stat-beta_statmap.func.gii``, one data array per trial;
- CIFTI: ``…_stat-beta_statmap.dscalar.nii``, one map per trial (named by its row in the TSV);
- ``…_model-singletrial_stat-beta_trials.tsv``: one row per volume, in order: ``volume`` (0…), the run's label,
  every column of the trial's events.tsv row, and ``estimated`` (false: the trial's response does not reach its
  run; its volume is NaN).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from ...bids.derivatives import atomic_write, derivative_path, map_paths, sidecar_path, write_json

logger = logging.getLogger(__name__)

__all__ = ["write_betas"]


def write_betas(output_dir, entities, writer, betas, table, sidecar):
    """Write the (trials × voxels) ``betas`` as one 4-D map of ``writer``'s geometry, its sidecar and the trials
    TSV (``table``: one row per trial); returns the paths."""
    entities = {**entities, "stat": "beta"}
    path = map_paths(output_dir, entities, writer.kind)
    names = [f"trial{k:04d}" for k in range(len(betas))]
    if writer.kind == "volume":
        _write_volume(writer, betas, path)
    elif writer.kind == "gifti":
        _write_gifti(writer, betas, path, names)
    else:
        image = nib.Cifti2Image(np.asarray(betas, np.float32), header=(nib.cifti2.ScalarAxis(names),
                                                                       writer.brain_models))
        atomic_write(path, lambda tmp: nib.save(image, tmp))
    written = list(path.values()) if isinstance(path, dict) else [path]
    tsv = derivative_path(output_dir, entities, suffix="trials", extension=".tsv")
    frame = table.copy()
    frame.insert(0, "volume", np.arange(len(frame)))
    atomic_write(tsv, lambda tmp: frame.to_csv(tmp, sep="\t", index=False, na_rep="n/a"))
    columns = {"volume": {"Description": "Index of the trial's volume (map) in the 4-D betas, from 0"},
               "run": {"Description": "Label of the run of the trial (n/a: the BOLD has no run entity)"},
               "estimated": {"Description": "False: the trial's response does not reach its run (NaN volume)"}}
    write_json(sidecar_path(tsv), {"Description": "One row per volume of the 4-D map of single-trial betas: the "
                                                  "trial's run and its row of the run's events.tsv", **columns,
                                   "Sources": sidecar.get("Sources", [])})
    write_json(sidecar_path(path), sidecar)
    return written + [sidecar_path(path), tsv, sidecar_path(tsv)]


def _write_volume(writer, betas, path):
    mask = writer.mask
    n_trials = len(betas)
    with tempfile.TemporaryDirectory(dir=Path(path).parent, prefix=".betas-") as folder:
        volume = np.lib.format.open_memmap(Path(folder) / "betas.npy", mode="w+", dtype=np.float32,
                                           shape=mask.shape + (n_trials,), fortran_order=True)
        flat_mask = mask.ravel(order="F")
        for k in range(n_trials):  # a trial is a contiguous (Fortran-order) slab
            slab = np.full(flat_mask.size, np.nan, np.float32)
            slab[flat_mask] = betas[k]
            volume[..., k] = slab.reshape(mask.shape, order="F")
        volume.flush()
        image = nib.Nifti1Image(volume, writer.reference.affine)
        image.header.set_xyzt_units("mm")
        image.header.set_intent("estimate", name="beta")
        atomic_write(path, lambda tmp, im=image: nib.save(im, tmp))
        del image, volume  # the memory map closes before its folder goes


def _write_gifti(writer, betas, paths, names):
    start = 0
    for hemi, size in writer.hemisphere_sizes.items():
        arrays = [nib.gifti.GiftiDataArray(np.asarray(betas[k, start:start + size], np.float32),
                                           intent="NIFTI_INTENT_ESTIMATE", datatype="NIFTI_TYPE_FLOAT32",
                                           meta=nib.gifti.GiftiMetaData({"Name": names[k]}))
                  for k in range(len(betas))]
        structure = "CortexLeft" if hemi == "L" else "CortexRight"
        image = nib.GiftiImage(darrays=arrays, meta=nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": structure,
                                                                            "Name": "beta"}))
        atomic_write(paths[hemi], lambda tmp, im=image: nib.save(im, tmp))
        start += size
