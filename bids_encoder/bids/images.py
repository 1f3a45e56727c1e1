"""BOLD images ↔ (time × voxel) arrays: NIfTI volumes with a brain mask, GIFTI hemispheres, CIFTI dtseries.

Loading gives one float32 array per run over a fixed set of voxels (the brain mask shared by all runs, or all
vertices/grayordinates); :class:`MapWriter` puts one value per voxel back into an image of the same geometry.
Out-of-mask voxels (volumes) are written as NaN; constant vertices or voxels, which no model can fit, are NaN too.
"""

from __future__ import annotations

import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip

from .._tensorflow import aligned_empty
from .derivatives import atomic_write
from .layout import InputError

logger = logging.getLogger(__name__)

__all__ = ["space_kind", "MapWriter", "load_bold_runs", "load_image", "reading_threads", "run_volumes"]


def space_kind(space):
    """'gifti' for fsnative/fsaverage*, 'cifti' for fsLR, else 'volume'."""
    if space == "fsnative" or space.startswith("fsaverage"):
        return "gifti"
    if space.startswith("fsLR"):
        return "cifti"
    return "volume"


def load_image(path, what="", **options):
    """``nib.load`` whose failures become one-line InputErrors (exit 65) naming the file (``what``: its role)."""
    try:
        return nib.load(str(path), **options)
    except Exception as error:  # nibabel raises many types for damaged files
        raise InputError(f"Cannot read {what + ' ' if what else ''}{Path(path).name}: "
                         f"{' '.join(str(error).split())}", exit_code=65) from error


def run_volumes(run):
    """Volumes of a run's BOLD without its data: the header (NIfTI, CIFTI), or the data arrays (GIFTI, L file)."""
    image = load_image(run.bold, "BOLD")
    if run.surfaces:
        return len(image.darrays)
    return int(image.shape[0] if str(run.bold).endswith(".dtseries.nii") else image.shape[3])


@contextlib.contextmanager
def _reading(path):
    """Failures while reading image data become one-line InputErrors (exit 65) naming the file."""
    try:
        yield
    except Exception as error:  # truncated gzip streams fail only when the data are read
        raise InputError(f"Cannot read the data of {Path(path).name}: {' '.join(str(error).split())}",
                         exit_code=65) from error


def _read(image, path):
    with _reading(path):
        return np.asarray(image.dataobj, dtype=np.float32)


class MapWriter:
    """Writes per-voxel values (1-D, the voxels of the loaded data) as images of the input's geometry."""

    def __init__(self, kind, reference=None, mask=None, hemisphere_sizes=None, brain_models=None):
        self.kind = kind
        self.reference = reference  # NIfTI image giving affine and shape
        self.mask = mask
        self.hemisphere_sizes = hemisphere_sizes  # {'L': n, 'R': n}
        self.brain_models = brain_models

    @property
    def n_voxels(self):
        if self.kind == "volume":
            return int(self.mask.sum())
        if self.kind == "gifti":
            return int(sum(self.hemisphere_sizes.values()))
        return len(self.brain_models)

    def to_image(self, values, name="value"):
        """Image(s) of ``values``: a NIfTI, a dict hemisphere → GIFTI, or a CIFTI dscalar."""
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (self.n_voxels,):
            raise ValueError(f"Expected {self.n_voxels} values, got shape {values.shape}")
        if self.kind == "volume":
            volume = np.full(self.mask.shape, np.nan, dtype=np.float32)
            volume[self.mask] = values
            image = nib.Nifti1Image(volume, self.reference.affine)
            image.header.set_xyzt_units("mm")
            image.header.set_intent("estimate", name=name[:15])
            return image
        if self.kind == "gifti":
            images, start = {}, 0
            for hemi, size in self.hemisphere_sizes.items():
                array = nib.gifti.GiftiDataArray(values[start : start + size], intent="NIFTI_INTENT_ESTIMATE",
                                                 datatype="NIFTI_TYPE_FLOAT32")
                structure = "CortexLeft" if hemi == "L" else "CortexRight"
                images[hemi] = nib.GiftiImage(darrays=[array], meta=nib.gifti.GiftiMetaData(
                    {"AnatomicalStructurePrimary": structure, "Name": name}))
                start += size
            return images
        axes = (nib.cifti2.ScalarAxis([name]), self.brain_models)
        return nib.Cifti2Image(values[np.newaxis, :], header=axes)

    def write_many(self, maps):
        """Write ``(values, path, name)`` triples, several at once (:func:`reading_threads` threads: gzip and the
        file writes release the GIL); returns their paths in order. Each file is atomic; the first error is raised
        once the other writes have finished."""
        maps = list(maps)
        return _in_parallel(lambda i: self.write(*maps[i]), len(maps))

    def write(self, values, path, name="value"):
        """Write ``values`` at ``path`` (for GIFTI, ``path`` is a dict hemisphere → path). Atomic."""
        image = self.to_image(values, name)
        if self.kind == "gifti":
            for hemi, hemi_image in image.items():
                atomic_write(path[hemi], lambda tmp, im=hemi_image: nib.save(im, tmp))
            return path
        return atomic_write(path, lambda tmp: nib.save(image, tmp))


def _common_mask(runs):
    """The voxels inside every run's brain mask (all voxels when no mask was found), and the runs' images (headers:
    their data are read by :func:`_read_volumes`)."""
    mask, reference, images = None, None, []
    for run in runs:
        image = load_image(run.bold)
        images.append(image)
        if len(image.shape) != 4:
            raise InputError(f"{run.bold.name} is not a 4-D image (shape {image.shape})", exit_code=65)
        if reference is None:
            reference = image
        elif image.shape[:3] != reference.shape[:3] or not np.allclose(image.affine, reference.affine, atol=1e-3):
            raise InputError(f"{run.bold.name} is not on the grid of {runs[0].bold.name}; runs of one fit must "
                             "share the voxel grid", exit_code=65)
        if run.mask is None:
            logger.warning("No brain mask for %s: every voxel is fitted", run.bold.name)
            run_mask = np.ones(image.shape[:3], dtype=bool)
        else:
            mask_image = load_image(run.mask)
            if mask_image.shape[:3] != image.shape[:3] or not np.allclose(mask_image.affine, image.affine,
                                                                           atol=1e-3):
                raise InputError(f"The mask {run.mask.name} (shape {mask_image.shape}) does not match "
                                 f"{run.bold.name} (shape {image.shape[:3]})", exit_code=65)
            run_mask = _read(mask_image, run.mask).reshape(image.shape[:3]) > 0
        mask = run_mask if mask is None else mask & run_mask
    if not mask.any():
        raise InputError(f"The brain masks of sub-{runs[0].subject} leave no voxel in common", exit_code=65)
    return mask, images


def _finite(array, name):
    """Replace non-finite samples by 0 in the voxels that have them (they become constant: not fitted).

    ``array`` is (voxels, time).
    """
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        logger.warning("%s: %d voxel(s) with NaN or infinite samples are not fitted", name, int(bad.sum()))
        array[bad] = 0.0
    return array


VOLUMES_PER_READ = 16


def reading_threads(n_files):
    """Threads that read ``n_files`` images at once: one per file, at most one per CPU this process may use
    (decompression and the voxel gathers release the GIL)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(n_files, cpus))


@contextlib.contextmanager
def _opened(path, image):
    """``image`` with its data on a stream: a gzipped NIfTI through ISA-L's gzip (python-isal, about twice as fast
    as Python's zlib), read front to back once; other files as nibabel opens them (uncompressed: memory-mapped)."""
    if not str(path).endswith(".gz"):
        yield image
        return
    with igzip.open(str(path), "rb") as stream:
        yield image.__class__.from_file_map(image.__class__.make_file_map({"image": stream, "header": stream}))


def _read_volumes(image, path, mask, out):
    """Fill ``out`` (voxels × time) with the in-mask samples of one run, a few volumes at a time: the whole 4-D
    array never sits in memory. The voxels are those of ``mask`` in C order (as ``volume[mask]``), gathered from each
    volume's contiguous (Fortran-order) samples."""
    offsets = np.ravel_multi_index(np.nonzero(mask), mask.shape, order="F")
    with _reading(path), _opened(path, image) as stream_image:
        n_volumes = image.shape[3]
        for start in range(0, n_volumes, VOLUMES_PER_READ):
            stop = min(start + VOLUMES_PER_READ, n_volumes)
            block = np.asarray(stream_image.dataobj[..., start:stop], dtype=np.float32)
            out[:, start:stop] = block.reshape(-1, stop - start, order="F").T[:, offsets].T


def load_bold_runs(runs, kind, smoothing_fwhm=None):
    """((voxels × time) float32 array of all runs, C-ordered; volumes per run; MapWriter) for one fit.

    Voxel-major storage is what pandas keeps for a (time × voxels) frame built from its transpose, and what the
    fitters hand to TensorFlow without a copy. The runs are read in parallel (:func:`reading_threads`).
    """
    if kind == "volume":
        return _load_volumes(runs, smoothing_fwhm)
    if smoothing_fwhm:
        raise InputError("--smoothing-fwhm applies to volume spaces only; surface and CIFTI data are "
                         "already sampled on meshes", exit_code=64)
    return _load_surfaces(runs) if kind == "gifti" else _load_cifti(runs)


def _load_volumes(runs, smoothing_fwhm):
    mask, images = _common_mask(runs)
    n_volumes = [image.shape[3] for image in images]
    data = aligned_empty((int(mask.sum()), sum(n_volumes)), np.float32)  # shared with TensorFlow, not copied
    starts = np.cumsum([0, *n_volumes])

    def read(index):
        run, image, columns = runs[index], images[index], data[:, starts[index]:starts[index + 1]]
        if smoothing_fwhm:
            from nilearn.image import smooth_img

            with _reading(run.bold):
                columns[:] = np.asarray(smooth_img(image, float(smoothing_fwhm)).dataobj, np.float32)[mask]
        else:
            _read_volumes(image, run.bold, mask, columns)
        _finite(columns, run.bold.name)

    _in_parallel(read, len(runs))
    logger.info("sub-%s: %d voxels in the brain mask, %s volumes", runs[0].subject, int(mask.sum()),
                "+".join(map(str, n_volumes)))
    return data, n_volumes, MapWriter("volume", reference=images[0], mask=mask)


def _in_parallel(function, n):
    """``function(i)`` for i < n, in :func:`reading_threads` threads; the first error (by index) is raised."""
    threads = reading_threads(n)
    if threads == 1:
        return [function(i) for i in range(n)]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bids_encoder-read") as pool:
        futures = [pool.submit(function, i) for i in range(n)]
        return [future.result() for future in futures]


def _hemisphere(path):
    """(time × vertices) of one GIFTI BOLD file (one data array per volume)."""
    image = load_image(path)
    try:
        return np.stack([np.asarray(d.data, np.float32) for d in image.darrays], axis=0)
    except ValueError as error:
        raise InputError(f"{path.name}: data arrays of unequal size", exit_code=65) from error


def _load_surfaces(runs):
    arrays, sizes = [], None
    for run in runs:
        missing = [hemi for hemi in ("L", "R") if run.surfaces.get(hemi) is None]
        if missing:
            raise InputError(f"No hemi-{missing[0]} GIFTI for {run.bold.name}", exit_code=66)
        left, right = _hemisphere(run.surfaces["L"]), _hemisphere(run.surfaces["R"])
        if left.shape[0] != right.shape[0]:
            raise InputError(f"The hemispheres of {run.bold.name} have different numbers of volumes", exit_code=65)
        run_sizes = {"L": left.shape[1], "R": right.shape[1]}
        if sizes is not None and run_sizes != sizes:
            raise InputError(f"{run.bold.name} has {run_sizes} vertices, other runs {sizes}", exit_code=65)
        sizes = run_sizes
        arrays.append(_finite(np.hstack([left, right]).T, run.bold.name))
    return _stack(arrays) + (MapWriter("gifti", hemisphere_sizes=sizes),)


def _load_cifti(runs):
    arrays, brain_models = [], None
    for run in runs:
        image = load_image(run.bold)
        axis = image.header.get_axis(1)
        if brain_models is not None and axis != brain_models:
            raise InputError(f"{run.bold.name} has other grayordinates than the first run", exit_code=65)
        brain_models = axis
        arrays.append(_finite(_read(image, run.bold).T, run.bold.name))
    return _stack(arrays) + (MapWriter("cifti", brain_models=brain_models),)


def _stack(arrays):
    """Runs (voxels × time each) side by side (aligned for TensorFlow), and their lengths."""
    lengths = [array.shape[1] for array in arrays]
    out = aligned_empty((arrays[0].shape[0], sum(lengths)), np.float32)
    np.concatenate(arrays, axis=1, out=out)
    return out, lengths
