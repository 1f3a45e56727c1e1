"""Figures of the reports (matplotlib, Agg backend; brain maps with nilearn's plotting). Each function writes one
file and returns its path; vector plots are SVG, brain maps PNG."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["design_figure", "confounds_figure", "volume_map_figure", "surface_map_figure", "histogram_figure",
           "timeseries_figure", "curve_figure", "fsaverage_mesh", "cv_scatter_figure", "axial_cuts", "colorbar",
           "interactive_view"]

CYCLIC = "twilight_shifted"  # polar angle: a colour map that wraps around at ±180°


def _save(figure, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight", dpi=90)
    plt.close(figure)
    return path


def _run_starts(index):
    runs = index.get_level_values("run").to_numpy()
    return np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]])


def _short(name, limit=40):
    """A long column name cut in the middle for a tick label (the design TSV and the sidecars keep it whole)."""
    name = str(name)
    return name if len(name) <= limit else f"{name[: limit - 16]}…{name[-15:]}"


def design_figure(design, columns, path, title):
    """The regressors (``columns`` of ``design``, time × columns) as an image, each column scaled to [-1, 1]."""
    values = design[columns].to_numpy(dtype=np.float64)
    scale = np.abs(values).max(axis=0)
    values = values / np.where(scale > 0, scale, 1.0)
    figure, axis = plt.subplots(figsize=(max(3.0, 0.35 * len(columns) + 1.5), 4.5))
    axis.imshow(values, aspect="auto", cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
    axis.set_xticks(range(len(columns)), [_short(c) for c in columns], rotation=60, ha="right", fontsize=8)
    for start in _run_starts(design.index)[1:]:
        axis.axhline(start - 0.5, color="tab:red", linewidth=1)
    axis.set_ylabel("volume (runs separated by red lines)" if len(_run_starts(design.index)) > 1 else "volume")
    axis.set_title(title, fontsize=10)
    return _save(figure, path)


def confounds_figure(design, columns, path, title):
    """Every confound regressor of every run, one panel per run with that run's own columns (block-diagonal), each
    column standardised over the run and drawn as an image (time down, one named column each)."""
    runs = design.index.get_level_values("run").to_numpy()
    labels = list(dict.fromkeys(runs))
    blocks = []
    for run in labels:
        rows = design.loc[runs == run, list(columns)]
        shown = [c for c in columns if np.any(rows[c].to_numpy() != 0)]  # block-diagonal: this run's columns
        blocks.append((run, shown, rows[shown].to_numpy(dtype=np.float64)))
    widest = max([len(shown) for _, shown, _ in blocks] + [1])
    figure, axes = plt.subplots(1, len(labels), figsize=(max(4.0, 0.22 * widest + 1.5) * len(labels), 5.2),
                                squeeze=False, constrained_layout=True)
    for axis, (run, shown, block) in zip(axes[0], blocks, strict=True):
        spread = block.std(axis=0) if block.size else np.ones(0)
        block = (block - block.mean(axis=0)) / np.where(spread > 0, spread, 1.0) if block.size else block
        if block.size:
            axis.imshow(block, aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3, interpolation="nearest")
        axis.set_xticks(range(len(shown)), [str(name).rsplit("_run", 1)[0] for name in shown], rotation=90,
                        fontsize=6)
        axis.set_ylabel("volume", fontsize=8)
        axis.tick_params(axis="y", labelsize=7)
        axis.set_title(f"run {run}: {len(shown)} columns", fontsize=9, pad=8)
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def axial_cuts(image, n_cuts=7):
    """``n_cuts`` axial slice heights (mm) spread over the image's finite non-zero voxels, inner 80 % of their
    extent: one set per fit, so that every map of it is cut at the same places."""
    data = np.asarray(image.dataobj, dtype=np.float64)
    ijk = np.argwhere(np.isfinite(data) & (data != 0))
    if ijk.size == 0:
        return None
    z = (ijk @ image.affine[:3, :3].T + image.affine[:3, 3])[:, 2]
    low, high = np.percentile(z, [10, 90])
    step = float(np.abs(image.affine[2, 2])) or 1.0  # a thin slab: no two cuts in one slice (nilearn drops them)
    cuts = np.unique(np.round(np.linspace(low, high, n_cuts) / step) * step)
    return [float(round(c)) for c in cuts]


def _colormap(name):
    """A matplotlib colour map by name, nilearn's own (``cold_hot``) included."""
    from nilearn.plotting import cm  # noqa: F401  (registers nilearn's colour maps with matplotlib)

    if not isinstance(name, str):
        return name
    try:
        return matplotlib.colormaps[name]
    except KeyError:
        return getattr(cm, name)


def _tick(value, _position=None):
    """'−0.12', '1.4', '180', '2e+04' → short, with a real minus sign (never hidden or clipped)."""
    text = f"{value:.3g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"${mantissa}\\times10^{{{int(exponent)}}}$"
    return text.replace("-", "\u2212")


def colorbar(figure, rect, cmap, vmin, vmax, label=None):
    """A colour bar in its own axes (``rect`` in figure fractions), clear of the images: ticks at the ends and
    the middle (or every 90° for angles), labelled with real minus signs; ``label`` says the units."""
    from matplotlib import colorbar as mcolorbar
    from matplotlib import colors

    axis = figure.add_axes(rect)
    bar = mcolorbar.ColorbarBase(axis, cmap=_colormap(cmap), norm=colors.Normalize(vmin=vmin, vmax=vmax))
    ticks = (np.arange(-180, 181, 90) if (vmin, vmax) == (-180.0, 180.0) else np.linspace(vmin, vmax, 3))
    bar.set_ticks(ticks)
    bar.set_ticklabels([_tick(t) for t in ticks])
    axis.tick_params(labelsize=8)
    if label:
        bar.set_label(label, fontsize=8)
    return bar


def _range(values, vmin, vmax, symmetric):
    finite = values[np.isfinite(values)]
    if vmax is None:
        vmax = float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0
    vmax = vmax or 1.0
    if symmetric:
        return -abs(vmax), abs(vmax)
    if vmin is None:
        vmin = float(finite.min()) if finite.size else 0.0
    return vmin, vmax if vmax > vmin else vmin + 1.0


def volume_map_figure(image, path, title, background=None, cmap="cold_hot", vmin=None, vmax=None, symmetric=True,
                      threshold=None, cut_coords=None, fade=None, label=None, fade_image=None):
    """Axial slices (``cut_coords``: heights in mm, else 6 chosen by nilearn) of a 3-D map over ``background``
    (nilearn ``plot_stat_map``), its colour bar beside them; ``fade`` (low, high): transparent where |value| <
    low, opaque from high, so that the background shows (by the values of ``fade_image`` when given, e.g. R²);
    ``label``: the colour bar's units."""
    from nilearn import plotting

    data = np.asarray(image.dataobj, dtype=np.float64)
    vmin, vmax = _range(data, vmin, vmax, symmetric)
    figure = plt.figure(figsize=(11, 2.8))
    image = _nan_to_zero(image)
    background = _nan_to_zero(background) if background is not None else None
    faded = {}
    if fade is not None:
        source = _nan_to_zero(image if fade_image is None else fade_image)
        weights = np.abs(np.asarray(source.dataobj, dtype=np.float32))
        # nilearn scales the alphas in float32: bounds that are float32 numbers keep its top alpha at exactly 1
        low, high = (float(np.float32(v)) for v in (fade[0], min(fade[1], float(weights.max()))))
        faded = ({"transparency": 0.0} if not high > low else
                 {"transparency": source, "transparency_range": [low, high]})
    arguments = dict(bg_img=background, display_mode="z", axes=[0.0, 0.0, 0.9, 1.0],
                     cut_coords=cut_coords if cut_coords is not None else 6, cmap=cmap, vmin=vmin, vmax=vmax,
                     symmetric_cbar=symmetric, threshold=threshold, title=title, figure=figure, colorbar=False,
                     black_bg=False, draw_cross=False, annotate=True)
    try:
        plotting.plot_stat_map(image, **arguments, **faded)
    except ValueError:  # a transparency nilearn refuses: the map drawn opaque rather than no report
        logger.debug("transparency refused; drawing %s opaque", path, exc_info=True)
        figure.clear()
        plotting.plot_stat_map(image, **arguments)
    colorbar(figure, [0.915, 0.12, 0.012, 0.72], cmap, vmin, vmax, label)
    return _save(figure, path)


def interactive_view(image, path, title, background=None, cmap="cold_hot", vmax=None, symmetric=True,
                     threshold=None):
    """nilearn's ``view_img`` of a 3-D map (every slice, any orientation, the value under the cursor) as one
    self-contained HTML page (its JavaScript inline), for an ``<iframe>`` of the report."""
    from nilearn import plotting

    view = plotting.view_img(_nan_to_zero(image), bg_img=_nan_to_zero(background) if background is not None else
                             None, cmap=cmap, vmax=vmax, symmetric_cmap=symmetric, threshold=threshold,
                             title=title, black_bg=False, colorbar=True, width_view=900)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(view.get_standalone(), encoding="utf-8")  # the page itself (save_as_html wraps it in a frame)
    return path


def _nan_to_zero(image):
    import nibabel as nib

    data = np.nan_to_num(np.asarray(image.dataobj, dtype=np.float32))
    return nib.Nifti1Image(data, image.affine)


def fsaverage_mesh(n_left, n_right):
    """nilearn's bundled fsaverage5 inflated mesh ({'left', 'right'}) when the vertex counts match, else None."""
    if n_left != 10242 or n_right != 10242:
        return None
    try:
        from nilearn import datasets

        meshes = datasets.load_fsaverage("fsaverage5")["inflated"]
        mesh = {"left": meshes.parts["left"], "right": meshes.parts["right"]}
        try:  # the sulcal depth shows the folding where a map is not drawn
            sulcal = datasets.load_fsaverage_data("fsaverage5", "inflated", "sulcal").data.parts
            mesh["sulcal"] = {hemi: np.asarray(sulcal[hemi]).ravel() for hemi in ("left", "right")}
        except Exception:  # noqa: BLE001 - no background: plain grey
            logger.debug("fsaverage5 sulcal depth unavailable", exc_info=True)
        return mesh
    except Exception:  # noqa: BLE001 - no mesh: the caller falls back to a histogram
        logger.debug("fsaverage5 mesh unavailable", exc_info=True)
        return None


def surface_map_figure(values, hemisphere_sizes, mesh, path, title, cmap="cold_hot", vmin=None, vmax=None,
                       symmetric=True, threshold=None, label=None):
    """Lateral and medial views of both hemispheres on ``mesh`` (nilearn ``plot_surf_stat_map``), four panels of
    one size and the colour bar in its own axes; vertices with |value| < ``threshold`` (and NaN) are not drawn."""
    from nilearn import plotting

    vmin, vmax = _range(np.asarray(values, dtype=np.float64), vmin, vmax, symmetric)
    halves = {"left": values[: hemisphere_sizes["L"]], "right": values[hemisphere_sizes["L"]:]}
    figure = plt.figure(figsize=(12, 3.2))
    for k, (hemi, view) in enumerate([("left", "lateral"), ("left", "medial"), ("right", "lateral"),
                                      ("right", "medial")]):
        axis = figure.add_axes([0.005 + 0.225 * k, 0.02, 0.22, 0.84], projection="3d")
        plotting.plot_surf_stat_map(mesh[hemi], np.nan_to_num(halves[hemi]), hemi=hemi, view=view, axes=axis,
                                    figure=figure, cmap=cmap, vmin=vmin, vmax=vmax, colorbar=False,
                                    symmetric_cbar=symmetric, engine="matplotlib",
                                    threshold=threshold, bg_map=mesh.get("sulcal", {}).get(hemi))
        axis.set_title(f"{hemi} hemisphere, {view}", fontsize=9)
    colorbar(figure, [0.93, 0.15, 0.012, 0.65], cmap, vmin, vmax, label)
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def histogram_figure(series, path, title, xlabel, bounds=None):
    """Histograms of one or more value sets ({label: values}), NaN dropped; ``bounds`` ({label: (low, high)})
    are drawn as dashed lines in the series' colour."""
    figure, axis = plt.subplots(figsize=(6, 3))
    for label, values in series.items():
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            _, _, patches = axis.hist(values, bins=50, alpha=0.6, label=f"{label} (median {np.median(values):.3g})")
            if bounds and label in bounds:
                for bound in bounds[label]:
                    axis.axvline(bound, color=patches[0].get_facecolor(), linestyle="--", linewidth=1.2)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("voxels")
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=10)
    return _save(figure, path)


def timeseries_figure(observed, fitted, labels, tr, path, title, runs=None, units="BOLD (scanner units)"):
    """Data (grey) and fit (colour) of a few voxels, one panel each; ``runs`` (one label per volume) draws dashed
    lines where a run starts and names the runs; the y axis says ``units``."""
    n = observed.shape[1]
    figure, axes = plt.subplots(n, 1, figsize=(10, 1.9 * n), squeeze=False, sharex=True)
    time = np.arange(observed.shape[0]) * tr
    runs = None if runs is None or len(runs) != observed.shape[0] else np.asarray(runs)
    starts = [] if runs is None else list(np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]]))
    for k in range(n):
        axis = axes[k, 0]
        axis.plot(time, observed[:, k], color="0.55", linewidth=0.8, label="data")
        axis.plot(time, fitted[:, k], color="tab:blue", linewidth=1.2, label="fit")
        axis.set_title(labels[k], fontsize=8, loc="left")
        axis.tick_params(labelsize=7)
        for start in starts[1:]:
            axis.axvline(time[start] - tr / 2, color="tab:red", linestyle="--", linewidth=0.9)
        if k == n - 1 and len(starts) > 1:  # run names under the last panel's axis, clear of the titles
            for start in starts:
                axis.text(time[start], -0.32, f"run {runs[start]} →", transform=axis.get_xaxis_transform(),
                          fontsize=7, color="tab:red", va="top")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    figure.supylabel(units, fontsize=8)
    axes[-1, 0].set_xlabel("time (s" + (", runs concatenated; dashed lines: run starts)" if len(starts) > 1 else ")"))
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def curve_figure(histories, path, title):
    """Mean R² over iterations, one line per chunk of voxels."""
    figure, axis = plt.subplots(figsize=(6, 3))
    for k, history in enumerate(histories):
        axis.plot(np.arange(1, len(history) + 1), history, marker=".", label=f"chunk {k + 1}" if len(histories) > 1
                  else None)
    axis.set_xlabel("iteration")
    axis.set_ylabel("mean R²")
    if len(histories) > 1:
        axis.legend(fontsize=7)
    axis.set_title(title, fontsize=10)
    return _save(figure, path)


def cv_scatter_figure(r2, cvr2, path, title):
    """Cross-validated against in-sample R² per voxel, with the identity and cvR² = 0 lines."""
    r2, cvr2 = np.asarray(r2, dtype=np.float64), np.asarray(cvr2, dtype=np.float64)
    both = np.isfinite(r2) & np.isfinite(cvr2)
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    if both.any():
        if both.sum() > 5000:
            axis.hexbin(r2[both], cvr2[both], gridsize=60, bins="log", cmap="Greys", mincnt=1)
        else:
            axis.scatter(r2[both], cvr2[both], s=4, alpha=0.4, color="tab:blue", linewidths=0)
        low = min(float(np.percentile(cvr2[both], 0.5)), 0.0)
        high = max(float(r2[both].max()), 0.05)
        axis.plot([low, high], [low, high], color="0.4", linewidth=0.8, label="cvR² = R²")
        axis.axhline(0.0, color="tab:red", linewidth=0.8, label="cvR² = 0")
        axis.set_ylim(low, high)
        axis.legend(fontsize=7, loc="upper left")
    axis.set_xlabel("R² (in sample)")
    axis.set_ylabel("cvR² (held out)")
    axis.set_title(title, fontsize=10)
    return _save(figure, path)
