"""What the report's figures say (issue #32): colour bars with real minus signs and readable exponents, colour
ranges that reach the effects' size, statistics that fade over the underlay, time courses without the nuisance,
every confound named, distinct slice heights, and the group page's words where a figure would say nothing."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoder.report import figures
from bids_encoder.report.group import _empty, _fade_by_r2, participants_table
from bids_encoder.report.scales import Z_FADE, display_scale, scale_note


def test_colour_bar_ticks_keep_minus_signs_and_exponents():
    assert figures._tick(-0.12) == "\u22120.12" and figures._tick(0.0) == "0" and figures._tick(180.0) == "180"
    assert figures._tick(-18600.0) == "$-1.86\\times10^{4}$"  # mathtext: a real minus, never clipped '+04'
    figure = figures.plt.figure()
    bar = figures.colorbar(figure, [0.9, 0.1, 0.02, 0.8], "twilight_shifted", -180.0, 180.0, "degrees")
    assert [t.get_text() for t in bar.ax.get_yticklabels()] == ["\u2212180", "\u221290", "0", "90", "180"]
    figures.plt.close(figure)


def test_effect_colours_reach_the_effects_and_noise_fades():
    """A blob of 1.4 % in noise of SD 0.1 (as the example's faces effect): the colour range reaches the blob,
    where the 99th percentile (the old scale) stopped at the noise."""
    rng = np.random.default_rng(0)
    values = rng.normal(0, 0.1, 30000)
    values[:100] = 1.4
    scale = display_scale("effect", values)
    assert np.percentile(np.abs(values), 99) < 0.3 and scale["vmax"] > 1.3
    low, high = scale["fade"]
    assert low == pytest.approx(np.median(np.abs(values))) and high < 1.4
    z = display_scale("z", values * 10)
    assert z["fade"] == Z_FADE and "|z| < 1.96" in scale_note(z, "slices")
    assert scale_note(z, "mesh").startswith("not drawn where |z| < 1.96")
    assert display_scale("polarAngle", values)["fade"] is None  # parameters keep their own scale


def test_volume_map_fades_over_the_underlay(tmp_path):
    data = np.zeros((12, 12, 6), np.float32)
    data[2:10, 2:10, 1:5] = np.random.default_rng(1).normal(0, 1, (8, 8, 4))
    data[4:7, 4:7, 2:4] = 8.0
    image = nib.Nifti1Image(data, np.diag([4.0, 4.0, 4.0, 1.0]))
    background = nib.Nifti1Image(np.full(data.shape, 100.0, np.float32), image.affine)
    path = figures.volume_map_figure(image, tmp_path / "z.png", "z", background=background, vmax=8.0,
                                     cut_coords=[8.0, 12.0], fade=Z_FADE, label="z")
    assert path.stat().st_size > 5000


def test_axial_cuts_are_distinct_on_a_thin_slab():
    data = np.zeros((10, 10, 30), np.float32)
    data[:, :, 10:13] = 1.0  # three slices: seven cuts would repeat (nilearn: "Dropping duplicates cuts")
    cuts = figures.axial_cuts(nib.Nifti1Image(data, np.diag([4.0, 4.0, 4.0, 1.0])))
    assert len(cuts) == len(set(cuts)) <= 3


def test_confounds_figure_names_every_column(tmp_path):
    index = pd.MultiIndex.from_arrays([np.repeat([1, 2], 50), np.tile(np.arange(50), 2)], names=["run", "volume"])
    rng = np.random.default_rng(2)
    columns = [f"c{k:02d}_run{r}" for r in (1, 2) for k in range(29)]
    values = np.zeros((100, 58))
    values[:50, :29] = rng.normal(size=(50, 29))
    values[50:, 29:] = rng.normal(size=(50, 29))
    design = pd.DataFrame(values, index=index, columns=columns)
    path = figures.confounds_figure(design, columns, tmp_path / "confounds.svg", "Confounds")
    text = path.read_text()
    assert all(f">c{k:02d}<" in text or f"c{k:02d}" in text for k in range(29))
    assert "run 1: 29 columns" in text and "run 2: 29 columns" in text


def test_group_page_says_what_an_empty_figure_would_not():
    fdr = {"label": "faces z fdr"}
    assert _empty(fdr, np.zeros(50), "volume") == "no voxel survives the threshold (the map is 0 everywhere)."
    assert _empty(fdr, np.r_[np.zeros(49), 3.2], "volume") == ""
    assert _empty({"label": "count"}, np.full(50, 2.0), "gifti") == "every vertex has 2 participant(s) with a value."
    r2 = np.r_[np.full(90, 0.01), np.full(10, 0.6)]
    faded = _fade_by_r2({"label": "x mean", "stat": "x", "group": "task-prf_space-S_model-prf2d"}, r2)
    assert faded is not None and faded[1][0] == pytest.approx(0.01)
    assert _fade_by_r2({"label": "faces z", "stat": "z", "group": "task-a_space-S_model-glm"}, r2) is None


def test_participants_table_keeps_the_columns_that_matter():
    summary = pd.DataFrame([{"participant_id": "sub-01", "session_id": "n/a", "task": "a",
                             "space": "MNI152NLin2009cAsym", "res": "n/a", "model": "glm", "runs": "1,2",
                             "n_runs": "2", "volumes": "240", "voxels_fitted": "29398", "voxels_total": "29398",
                             "median_rsquared": "0.0143948", "median_cvrsquared": "-0.0237505", "hrf": "canonical",
                             "fraction_converged": "1", "device": "CPU", "wall_time_s": "5.581",
                             "software_version": "0.1.0"}])
    columns, rows = participants_table(summary)
    assert columns == ["participant", "task", "space", "model", "runs", "volumes", "voxels", "median R²",
                       "median cvR²", "HRF", "wall time (s)"]
    assert rows == [["sub-01", "a", "MNI152NLin2009cAsym", "glm", "1,2", "240", "29398", "0.0144", "-0.0238",
                     "canonical", "5.58"]]


def test_glm_time_course_shows_the_model_not_the_drifts():
    """The report's data and fit have the confounds and run means projected out (what R² is measured on): a voxel
    of drift and noise no longer looks fitted."""
    from bids_encoder.report.participant import _without_nuisance

    class Inputs:
        pass

    rng = np.random.default_rng(3)
    n = 120
    index = pd.MultiIndex.from_arrays([np.repeat([1, 2], n // 2), np.tile(np.arange(n // 2), 2)],
                                      names=["run", "volume"])
    drift = np.cos(np.linspace(0, np.pi, n))[:, None]
    inputs = Inputs()
    inputs.confounds = pd.DataFrame(drift, index=index, columns=["cosine00"])
    inputs.data = pd.DataFrame(np.zeros((n, 1)), index=index)

    class Result:
        confounds_for = None

    observed = 100 + 5 * drift + rng.normal(0, 0.1, (n, 1))
    fitted = 100 + 5 * drift  # a full GLM fit: intercepts and the drift
    data, fit = _without_nuisance(inputs, Result(), observed, fitted)
    assert np.abs(fit).max() < 1e-8 and data.std() == pytest.approx(0.1, rel=0.2)
