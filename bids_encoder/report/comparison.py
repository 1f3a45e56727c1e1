"""Report sections of the model comparison: the categorical best-model map (one colour per model, the legend from
the map's sidecar ``Levels``) and a table per comparison.

Participant level (``…_model-comparison_stat-bestmodel_statmap``): per model, the fraction of voxels it wins
(computed from the map) and its median cvR² (the sidecar's ``MedianCVRSquared``, from the models' cvR² maps).
Group level (``…_model-comparison_stat-bestmodel_desc-mode_statmap``): per model, the fraction of voxels where it
is the mode and its mean, over voxels, of the fraction of participants it wins (``stat-fraction_desc-<model>``).
The sections are built from the maps on disk, so a report rebuilt later shows every comparison written so far.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..bids.participant_maps import read_map
from .figures import _save, axial_cuts, fsaverage_mesh, plt

logger = logging.getLogger(__name__)

__all__ = ["participant_comparisons", "group_comparisons", "level_fractions", "COLOURS"]

COLOURS = plt.get_cmap("tab10").colors  # model k (1-based) gets COLOURS[(k - 1) % 10]


def level_fractions(values, levels):
    """{model: fraction of the voxels with a value whose level is the model's} of a categorical map."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return {model: (float(np.mean(finite == float(number))) if finite.size else None)
            for number, model in levels.items()}


def _colour(number):
    red, green, blue = COLOURS[(int(number) - 1) % len(COLOURS)][:3]
    return f"#{round(255 * red):02x}{round(255 * green):02x}{round(255 * blue):02x}"


def _legend(owner, levels, **placement):
    """The levels' colour patches as a legend of ``owner`` (an axis or a figure)."""
    from matplotlib.patches import Patch

    owner.legend(handles=[Patch(color=_colour(number), label=f"{number}: {model}")
                          for number, model in levels.items()], fontsize=8, title="best model",
                 **(placement or {"loc": "upper left", "bbox_to_anchor": (1.0, 1.0)}))


def categorical_map_figure(values, geometry, levels, path, title, background=None, space=""):
    """One colour per level: axial slices (volumes), the fsaverage5 mesh (GIFTI with its vertex counts), else a
    bar chart of the voxels per level. Returns the path written."""
    from matplotlib.colors import ListedColormap

    n_levels = max(int(k) for k in levels)
    cmap = ListedColormap([_colour(k) for k in range(1, n_levels + 1)])
    values = np.asarray(values, dtype=np.float64)
    if geometry.kind == "volume":
        import nibabel as nib
        from nilearn import plotting

        image = nib.Nifti1Image(np.nan_to_num(values).reshape(geometry.shape).astype(np.float32), geometry.affine)
        figure = plt.figure(figsize=(11, 2.8))
        display = plotting.plot_roi(image, bg_img=background,
                                    display_mode="z", cut_coords=axial_cuts(image) or 6, cmap=cmap, vmin=0.5,
                                    vmax=n_levels + 0.5, title=title, figure=figure, black_bg=False,
                                    draw_cross=False, colorbar=False, alpha=1.0)
        _legend(display.axes[list(display.axes)[-1]].ax, levels)
        return _save(figure, Path(path).with_suffix(".png"))
    mesh = None
    if geometry.kind == "gifti" and space.startswith("fsaverage"):
        mesh = fsaverage_mesh(geometry.hemisphere_sizes["L"], geometry.hemisphere_sizes["R"])
    if mesh is not None:
        from nilearn import plotting

        left = geometry.hemisphere_sizes["L"]
        halves = {"left": values[:left], "right": values[left:]}
        figure, axes = plt.subplots(1, 4, figsize=(12, 3.2), subplot_kw={"projection": "3d"})
        for k, (hemi, view) in enumerate([("left", "lateral"), ("left", "medial"), ("right", "lateral"),
                                          ("right", "medial")]):
            plotting.plot_surf_roi(mesh[hemi], np.nan_to_num(halves[hemi]).astype(int), hemi=hemi, view=view,
                                   axes=axes[k], figure=figure, cmap=cmap, vmin=0.5, vmax=n_levels + 0.5,
                                   colorbar=False, engine="matplotlib")
            axes[k].set_title(f"{hemi} hemisphere, {view}", fontsize=9)
        _legend(figure, levels, loc="center left", bbox_to_anchor=(0.9, 0.5))
        figure.suptitle(title, fontsize=10)
        return _save(figure, Path(path).with_suffix(".png"))
    figure, axis = plt.subplots(figsize=(6, 3))
    counts = [int(np.sum(values == float(number))) for number in levels]
    axis.bar([f"{number}: {model}" for number, model in levels.items()], counts,
             color=[_colour(number) for number in levels])
    axis.set_ylabel("voxels won" if geometry.kind == "volume" else "vertices / grayordinates won")
    axis.set_title(title + " (no mesh for this space: counts)", fontsize=10)
    return _save(figure, Path(path).with_suffix(".svg"))


def _section(name, map_path, sidecar, figure_path, output_dir, background=None, space=""):
    values, geometry = read_map(map_path)
    levels = sidecar["Levels"]
    path = categorical_map_figure(values, geometry, levels, figure_path, f"Best model per voxel: {name}",
                                  background=background, space=space)
    return values, {"name": name, "levels": levels, "colours": {k: _colour(k) for k in levels},
                    "figure": {"file": Path(path).relative_to(output_dir).as_posix(),
                               "caption": f"{sidecar.get('Description', 'Best model')}; colours: the legend "
                                          "(numbers as in the sidecar's Levels)."}}


def _map_path(sidecar_file):
    """The map(s) beside a comparison sidecar: a NIfTI or CIFTI file, or a dict hemi → GIFTI."""
    stem = sidecar_file.name[: -len(".json")]
    for extension in (".nii.gz", ".nii", ".dscalar.nii"):
        candidate = sidecar_file.with_name(stem + extension)
        if candidate.is_file():
            return candidate
    pair = {}
    for hemi in ("L", "R"):  # the GIFTI pair: the sidecar's name with a hemi entity (sidecar_path drops it)
        for candidate in sorted(sidecar_file.parent.glob(f"*_hemi-{hemi}_*.func.gii")):
            if candidate.name.replace(f"_hemi-{hemi}", "", 1) == stem + ".func.gii":
                pair[hemi] = candidate
    return pair if len(pair) == 2 else None


def _space(name):
    for entity in name.split("_"):
        if entity.startswith("space-"):
            return entity[len("space-"):]
    return ""


def participant_comparisons(output_dir, subject):
    """The comparison sections of ``sub-<subject>``'s report, one per best-model map (figures drawn under its
    ``figures/`` folder)."""
    output_dir = Path(output_dir)
    folder = output_dir / f"sub-{subject}"
    sections = []
    for sidecar_file in sorted(folder.rglob("*_model-comparison_stat-bestmodel_statmap.json")):
        map_path = _map_path(sidecar_file)
        if map_path is None:
            logger.warning("Model comparison %s has no map beside it: not in the report", sidecar_file.name)
            continue
        sidecar = json.loads(sidecar_file.read_text())
        name = sidecar_file.name[: -len("_stat-bestmodel_statmap.json")]
        values, section = _section(name, map_path, sidecar, folder / "figures" / f"{name}_bestmodel", output_dir,
                                   space=_space(name))
        fractions = level_fractions(values, sidecar["Levels"])
        medians = sidecar.get("MedianCVRSquared", {})
        section["rows"] = [{"number": number, "model": model, "fraction": fractions[model],
                            "median": medians.get(model)} for number, model in sidecar["Levels"].items()]
        sections.append(section)
    return sections


def group_comparisons(output_dir, background_of=None):
    """The comparison sections of ``group.html``, one per group best-model (mode) map under ``group/``;
    ``background_of(space)``: a background image for volume maps (or None)."""
    output_dir = Path(output_dir)
    folder = output_dir / "group"
    sections = []
    for sidecar_file in sorted(folder.glob("*_model-comparison_stat-bestmodel_desc-mode_statmap.json")):
        map_path = _map_path(sidecar_file)
        if map_path is None:
            continue
        sidecar = json.loads(sidecar_file.read_text())
        name = sidecar_file.name[: -len("_stat-bestmodel_desc-mode_statmap.json")]
        space = _space(name)
        background = background_of(space) if background_of is not None else None
        values, section = _section(name, map_path, sidecar, folder / "figures" / f"{name}_bestmodel_mode",
                                   output_dir, background=background,
                                   space=space)
        mode_fractions = level_fractions(values, sidecar["Levels"])
        rows = []
        for number, model in sidecar["Levels"].items():
            fraction_file = sidecar_file.with_name(sidecar_file.name.replace("_stat-bestmodel_desc-mode_",
                                                                             f"_stat-fraction_desc-{model}_"))
            fraction_map = _map_path(fraction_file)
            mean = None
            if fraction_map is not None:
                shares, _ = read_map(fraction_map)
                shares = shares[np.isfinite(values)]
                mean = float(np.nanmean(shares)) if np.isfinite(shares).any() else None
            rows.append({"number": number, "model": model, "fraction": mode_fractions[model], "median": mean})
        section["rows"] = rows
        section["participants"] = sidecar.get("NumberOfParticipants")
        sections.append(section)
    return sections
