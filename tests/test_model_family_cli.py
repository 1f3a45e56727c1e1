"""The model family through the CLI: 1-D tuning models from events (numerosity on volumes, orientation on
surfaces), the 2-D pRF family, model comparison at both levels."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoder.cli import main
from bids_encoder.datasets.example_dataset import make_example_dataset
from bids_encoder.datasets.tuning_example import make_tuning_dataset
from bids_encoder.workflows.comparison.maps import best_model

FAST = ["--confounds", "motion", "--confounds-param", "motion=basic", "--nthreads", "1"]
SPACE = "space-MNI152NLin2009cAsym_res-2"


@pytest.fixture(scope="module")
def numerosity(tmp_path_factory):
    """One subject, two runs, log-Gaussian tuning planted (one event's peak response = the noise SD), fitted with
    loggauss1d and gauss1d (compared by cvR²; leave one run out), with the report."""
    root = tmp_path_factory.mktemp("numerosity")
    truth = make_tuning_dataset(root / "bids", "numerosity", n_subjects=1, seed=3)
    out = root / "out"
    assert main([str(root / "bids"), str(out), "participant", "--model", "loggauss1d,gauss1d", "--stimulus-column",
                 "numerosity", "--nuisance-trial-type", "response", "--positive-amplitude",
                 "--work-dir", str(root / "work"), *FAST]) == 0
    return truth, out


def _volume(out, subject, model, stat):
    path = out / f"sub-{subject}" / "func" / (f"sub-{subject}_task-numerosity_{SPACE}_model-{model}_stat-{stat}"
                                               "_statmap.nii.gz")
    return np.asarray(nib.load(path).dataobj, dtype=np.float64)


def test_numerosity_recovered_through_the_cli(numerosity, subject="01"):
    """Preferred numerosity (exp(mu), natural units) against the planted one: r ≥ 0.9 over the voxels with
    cvR² > 0 (which must be most of them)."""
    truth, out = numerosity
    preferred = _volume(out, subject, "loggauss1d", "preferred")[truth.mask]
    cvr2 = _volume(out, subject, "loggauss1d", "cvrsquared")[truth.mask]
    planted = truth.preferred[subject][truth.mask]
    chosen = cvr2 > 0
    assert chosen.mean() > 0.6
    r = np.corrcoef(preferred[chosen], planted[chosen])[0, 1]
    assert r >= 0.9, r
    mu = _volume(out, subject, "loggauss1d", "mu")[truth.mask]
    np.testing.assert_allclose(np.exp(mu), preferred, rtol=1e-5)  # the derived map in natural units
    assert (_volume(out, subject, "loggauss1d", "amplitude")[truth.mask] > 0).all()  # --positive-amplitude
    sidecar = json.loads((out / f"sub-{subject}/func/sub-{subject}_task-numerosity_{SPACE}_model-loggauss1d_stat-"
                                "preferred_statmap.json").read_text())
    assert sidecar["Units"] == "units of the events' numerosity column"
    assert sidecar["Model"]["Class"] == "LogGaussianPRFWithHRF"
    stimulus = sidecar["Fitter"]["ParameterFitter"]["Stimulus"]
    assert stimulus["Column"] == "numerosity" and stimulus["Values"] == [1, 2, 3, 4, 5, 6, 7]
    assert sidecar["Fitter"]["ParameterFitter"]["PositiveAmplitude"] is True
    design = pd.read_csv(next((out / f"sub-{subject}/func").glob("*model-loggauss1d_design.tsv")), sep="\t")
    assert "nuisance_response" in design.columns and "numerosity-7" in design.columns


def _comparison_rows(html):
    """{model: (fraction, second column)} of the model-comparison tables of a report."""
    import re

    rows = re.findall(r'<td class="fraction" data-model="([^"]+)">([^<]+)</td><td class="second" data-model="[^"]+">'
                      r"([^<]+)</td>", html)
    return {model: (float(fraction), float(second)) for model, fraction, second in rows}


def test_model_comparison_maps(numerosity, tmp_path):
    """Participant: the best model by cvR² per voxel, legend in the sidecar; group (participant outputs copied
    to three subjects, their best-model maps replaced by known ones): mode and fraction per model."""
    truth, out = numerosity
    stem = f"sub-01/func/sub-01_task-numerosity_{SPACE}_model-comparison_stat-bestmodel_statmap"
    best = np.asarray(nib.load(out / f"{stem}.nii.gz").dataobj)
    sidecar = json.loads((out / f"{stem}.json").read_text())
    assert sidecar["Levels"] == {"1": "loggauss1d", "2": "gauss1d"}
    expected = best_model(np.vstack([_volume(out, "01", m, "cvrsquared")[truth.mask] for m in ("loggauss1d",
                                                                                                "gauss1d")]))
    np.testing.assert_array_equal(best[truth.mask], expected)
    assert np.isnan(best[~truth.mask]).all()
    assert sum(sidecar["FractionOfVoxelsWon"].values()) == pytest.approx(1.0)
    report = (out / "sub-01.html").read_text()
    assert "Tuning and parameter distributions" in report and "model-loggauss1d_tuning.svg" in report
    name = f"sub-01_task-numerosity_{SPACE}_model-comparison"
    assert f'<section id="{name}" class="model-comparison">' in report
    assert (out / f"sub-01/figures/{name}_bestmodel.png").is_file() and f"figures/{name}_bestmodel.png" in report
    shown = _comparison_rows(report)
    inside = best[np.isfinite(best)]
    for number, model in (("1", "loggauss1d"), ("2", "gauss1d")):  # legend names; fractions from the map on disk
        assert f'<td class="model">{model}</td>' in report
        assert shown[model][0] == pytest.approx(np.mean(inside == int(number)), abs=5e-5)
        assert shown[model][1] == pytest.approx(np.nanmedian(_volume(out, "01", model, "cvrsquared")[truth.mask]),
                                                abs=5e-5)
    group_out = tmp_path / "out"
    shutil.copytree(out, group_out, ignore=shutil.ignore_patterns("*.html", "figures", "logs"))
    rng = np.random.default_rng(0)
    planted = {}
    for subject in ("02", "03"):  # the same fit under other subject labels, with known best-model maps
        shutil.copytree(group_out / "sub-01", group_out / f"sub-{subject}")
        for path in list((group_out / f"sub-{subject}").rglob("sub-01_*")):
            path.rename(path.with_name(path.name.replace("sub-01_", f"sub-{subject}_")))
    for subject in ("01", "02", "03"):
        path = group_out / f"sub-{subject}/func/sub-{subject}_task-numerosity_{SPACE}_model-comparison_stat-" \
                           "bestmodel_statmap.nii.gz"
        image = nib.load(path)
        values = np.where(truth.mask, rng.integers(1, 3, truth.mask.shape), np.nan).astype(np.float32)
        planted[subject] = values
        nib.Nifti1Image(values, image.affine).to_filename(path)
    bids = tmp_path / "bids"
    make_tuning_dataset(bids, "numerosity", n_subjects=3, n_volumes=30, n_per_value=1, seed=1)
    assert main([str(bids), str(group_out), "group", "--model", "loggauss1d", "--model", "gauss1d",
                 "--work-dir", str(tmp_path / "work"), "--no-report"]) == 0  # several models: with their comparison
    group = group_out / "group"
    mode = np.asarray(nib.load(group / f"task-numerosity_{SPACE}_model-comparison_stat-bestmodel_desc-mode"
                                       "_statmap.nii.gz").dataobj)
    fractions = {m: np.asarray(nib.load(group / f"task-numerosity_{SPACE}_model-comparison_stat-fraction_desc-{m}"
                                                "_statmap.nii.gz").dataobj) for m in ("loggauss1d", "gauss1d")}
    inside = truth.mask
    votes = np.stack([planted[s][inside] for s in ("01", "02", "03")])
    np.testing.assert_allclose(fractions["loggauss1d"][inside], (votes == 1).mean(axis=0))
    np.testing.assert_allclose(fractions["gauss1d"][inside], (votes == 2).mean(axis=0))
    np.testing.assert_array_equal(mode[inside], np.where((votes == 1).sum(axis=0) >= 2, 1.0, 2.0))
    meta = json.loads((group / f"task-numerosity_{SPACE}_model-comparison_stat-bestmodel_desc-mode_statmap.json")
                      .read_text())
    assert meta["Levels"] == {"1": "loggauss1d", "2": "gauss1d"} and "never a mean" in meta["Statistic"]
    assert not list(group.glob("*model-comparison*desc-mean*"))


def test_orientation_on_surfaces(tmp_path):
    """Von Mises tuning of 8 orientations (period 180°) on fsaverage-style GIFTI surfaces: preferred orientation
    within a few degrees (circular error) and r ≥ 0.9 over the vertices with cvR² > 0."""
    truth = make_tuning_dataset(tmp_path / "bids", "orientation", n_subjects=1, surface_vertices=50, seed=5)
    out = tmp_path / "out"
    assert main([str(tmp_path / "bids"), str(out), "participant", "--model", "vonmises1d", "--stimulus-column",
                 "orientation", "--stimulus-period", "180", "--space", "fsaverage5", "--no-report",
                 "--work-dir", str(tmp_path / "work"), *FAST]) == 0

    def surface(stat):
        return np.concatenate([np.asarray(nib.load(out / "sub-01/func" / (
            f"sub-01_task-orientation_hemi-{h}_space-fsaverage5_model-vonmises1d_stat-{stat}_statmap.func.gii"))
            .darrays[0].data, dtype=np.float64) for h in ("L", "R")])

    preferred, cvr2 = surface("preferred"), surface("cvrsquared")
    planted = truth.surface_preferred["01"]
    chosen = cvr2 > 0
    assert chosen.mean() > 0.6
    error = np.degrees(np.angle(np.exp(1j * np.radians(2 * (preferred - planted))))) / 2  # period 180
    assert np.median(np.abs(error[chosen])) < 10
    assert np.corrcoef(planted[chosen] + error[chosen], planted[chosen])[0, 1] >= 0.9
    assert ((preferred >= 0) & (preferred < 180)).all()
    mu = json.loads((out / "sub-01/func" / "sub-01_task-orientation_space-fsaverage5_model-vonmises1d_"
                     "stat-mu_statmap.json").read_text())
    assert mu["Units"] == "radians" and mu["CircularPeriod"] == pytest.approx(2 * np.pi)  # group: circular


FAMILY = {
    "dn2d": ("DivisiveNormalizationGaussianPRF2DWithHRF",
             ["x", "y", "sd", "rfAmplitude", "srfAmplitude", "srfSize", "neuralBaseline", "surroundBaseline"]),
    "css2d": ("CSSPRF2DWithHRF", ["x", "y", "sd", "baseline", "amplitude", "n"]),
    "dog2d": ("DifferenceOfGaussiansPRF2DWithHRF", ["x", "y", "sd", "baseline", "amplitude", "srfAmplitude",
                                                    "srfSize"]),
}


def _bars_dataset(bids, shape=(5, 6, 4), surface_vertices=0):
    """One subject, one 40-volume run of the example dataset with a sweeping bar as its stimulus."""
    make_example_dataset(bids, n_subjects=1, n_runs=1, n_volumes=40, shape=shape, noise=0.5, seed=2,
                         surface_vertices=surface_vertices)
    (bids / "stimuli").mkdir()
    frames = np.zeros((40, 10, 8), np.float32)
    for t in range(40):
        frames[t, t % 10, :] = 1.0
    np.save(bids / "stimuli/bars.npy", frames)
    (bids / "stimuli/bars.json").write_text(json.dumps({"VisualAngleX": [-5, 5], "VisualAngleY": [4, -4]}))
    pd.DataFrame({"onset": [0.0], "duration": [80.0], "trial_type": ["bars"], "stim_file": ["bars.npy"]}).to_csv(
        bids / "sub-01/func/sub-01_task-localizer_run-1_events.tsv", sep="\t", index=False)


@pytest.mark.parametrize("model", list(FAMILY))
def test_prf_family_through_the_cli(tmp_path, model):
    """The 2-D family's app path (staged fit, seeded from the Gaussian) for each member, on bar apertures: every
    parameter map with units, the derived maps, the recipe and class in the sidecar; divisive normalisation's
    surround_baseline fixed at 1. (The recipes' recovery is tested in test_model_family.)"""
    bids = tmp_path / "bids"
    _bars_dataset(bids)
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", "--model", model, "--cv", "none", "--max-iterations", "5",
                 "--no-report", "--work-dir", str(tmp_path / "work"), *FAST]) == 0
    prefix = out / f"sub-01/func/sub-01_task-localizer_space-MNI152NLin2009cAsym_res-2_model-{model}"
    class_name, parameters = FAMILY[model]
    stats = [*parameters, "polarAngle", "eccentricity", "rsquared"]
    for stat in stats:
        assert Path(f"{prefix}_stat-{stat}_statmap.nii.gz").is_file(), stat
        sidecar = json.loads(Path(f"{prefix}_stat-{stat}_statmap.json").read_text())
        assert sidecar["Units"] and sidecar["Description"], stat
    assert "Levenberg-Marquardt over every parameter" in sidecar["Fitter"]["ParameterFitter"]["Recipe"]
    assert sidecar["Model"]["Class"] == class_name
    if model == "dn2d":
        surround = np.asarray(nib.load(f"{prefix}_stat-surroundBaseline_statmap.nii.gz").dataobj)
        assert np.nanmin(surround) == np.nanmax(surround) == 1.0
    r2 = np.asarray(nib.load(f"{prefix}_stat-rsquared_statmap.nii.gz").dataobj)
    assert np.nanmedian(r2) > 0


def test_group_summarises_preferred_orientation_circularly(tmp_path):
    """vonmises1d's preferred orientation (period 180°) is averaged on the circle at the group level: 170° and
    10° average to 0°, not 90° (checked against scipy.stats.circmean with high=180)."""
    from scipy import stats as scipy_stats

    from bids_encoder.bids.derivatives import map_paths, sidecar_path
    from bids_encoder.bids.images import MapWriter

    bids = tmp_path / "bids"
    make_tuning_dataset(bids, "orientation", n_subjects=3, n_volumes=30, n_per_value=1, shape=(3, 3, 2), seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset_description.json").write_text(json.dumps({"Name": "o", "BIDSVersion": "1.9.0",
                                                              "DatasetType": "derivative"}))
    mask = np.ones((4, 1, 1), bool)
    writer = MapWriter("volume", reference=nib.Nifti1Image(np.zeros((4, 1, 1), np.float32), np.eye(4)), mask=mask)
    preferred = np.array([[170.0, 10.0, 90.0, 45.0], [10.0, 10.0, 80.0, 50.0], [175.0, 20.0, 100.0, 40.0]])
    for row, subject in zip(preferred, ("01", "02", "03"), strict=True):
        entities = {"subject": subject, "task": "orientation", "space": "MNI152NLin2009cAsym", "model": "vonmises1d"}
        mu = np.radians(row * 2)  # the model's own parameter: radians, 2π for the stimulus period
        for stat, values, extra in (("preferred", row, {"CircularPeriod": 180.0, "Units": "degrees"}),
                                    ("mu", mu, {"CircularPeriod": 2 * np.pi, "Units": "radians"}),
                                    ("rsquared", np.full(4, 0.5), {"Units": "fraction"})):
            path = map_paths(out, {**entities, "stat": stat}, "volume")
            writer.write(values, path, name=stat)
            sidecar_path(path).write_text(json.dumps({"Description": stat, "Runs": [1], "MedianRSquared": 0.5,
                                                      **extra}))
    assert main([str(bids), str(out), "group", "--work-dir", str(tmp_path / "work"), "--no-report"]) == 0
    stem = out / "group/task-orientation_space-MNI152NLin2009cAsym_model-vonmises1d_stat-preferred_desc-mean_statmap"
    mean = np.asarray(nib.load(f"{stem}.nii.gz").dataobj).ravel()
    expected = scipy_stats.circmean(preferred, high=180.0, low=0.0, axis=0)
    np.testing.assert_allclose(np.angle(np.exp(1j * np.radians(2 * (mean - expected)))), 0.0, atol=1e-4)
    assert abs(mean[0] - 178.33) < 0.5 or abs(mean[0] + 1.67) < 0.5  # near 0°/180°, far from the linear 118°
    assert json.loads(Path(f"{stem}.json").read_text())["Test"]["PeriodDegrees"] == 180.0
    # vonmises1d's mu (radians, as the app writes it with CircularPeriod 2π) is averaged on its own circle too
    stem = Path(str(stem).replace("stat-preferred", "stat-mu"))
    mu_mean = np.asarray(nib.load(f"{stem}.nii.gz").dataobj).ravel()
    expected = scipy_stats.circmean(np.radians(preferred * 2), high=2 * np.pi, low=0.0, axis=0)
    np.testing.assert_allclose(np.angle(np.exp(1j * (mu_mean - expected))), 0.0, atol=1e-4)
    assert json.loads(Path(f"{stem}.json").read_text())["Test"]["PeriodUnits"] == "radians"


def _write_orientation_maps(out, rows, sessions=None):
    """Hand-made vonmises1d participant maps on a 4-voxel grid: ``rows`` {(subject, session): preferred°}."""
    from bids_encoder.bids.derivatives import map_paths, sidecar_path
    from bids_encoder.bids.images import MapWriter

    out.mkdir(exist_ok=True)
    (out / "dataset_description.json").write_text(json.dumps({"Name": "o", "BIDSVersion": "1.9.0",
                                                              "DatasetType": "derivative"}))
    mask = np.ones((4, 1, 1), bool)
    writer = MapWriter("volume", reference=nib.Nifti1Image(np.zeros((4, 1, 1), np.float32), np.eye(4)), mask=mask)
    for (subject, session), row in rows.items():
        entities = {"subject": subject, "task": "orientation", "space": "MNI152NLin2009cAsym", "model": "vonmises1d",
                    **({"session": session} if session else {})}
        for stat, values, extra in (("preferred", np.asarray(row, float), {"CircularPeriod": 180.0}),
                                    ("rsquared", np.full(4, 0.5), {})):
            path = map_paths(out, {**entities, "stat": stat}, "volume")
            writer.write(values, path, name=stat)
            sidecar_path(path).write_text(json.dumps({"Description": stat, "Units": "degrees", "Runs": [1],
                                                      "MedianRSquared": 0.5, **extra}))


def _arc180(a, b):
    """Absolute difference of orientations (period 180°), in degrees."""
    return np.abs(np.mod(np.asarray(a, float) - np.asarray(b, float) + 90.0, 180.0) - 90.0)


def test_roi_tables_and_sessions_average_orientation_circularly(tmp_path):
    """ROI tables of vonmises1d's preferred orientation use the period of its sidecar (180°): region means,
    across-participant summaries and the averaging of one participant's two sessions are circular. 170° and
    10° give 0°/180°, never the linear 90°."""
    from scipy import stats as scipy_stats

    make_tuning_dataset(tmp_path / "bids", "orientation", n_subjects=3, n_volumes=30, n_per_value=1,
                        shape=(3, 3, 2), seed=1)
    out = tmp_path / "out"
    rows = {("01", "1"): [170.0, 170.0, 90.0, 45.0], ("01", "2"): [10.0, 10.0, 90.0, 45.0],
            ("02", None): [10.0, 10.0, 80.0, 50.0], ("03", None): [175.0, 20.0, 100.0, 40.0]}
    _write_orientation_maps(out, rows)
    atlas = nib.Nifti1Image(np.array([1, 1, 2, 2], np.int16).reshape(4, 1, 1), np.eye(4))
    atlas.to_filename(tmp_path / "atlas-halves_dseg.nii.gz")
    pd.DataFrame({"index": [1, 2], "name": ["first", "second"]}).to_csv(tmp_path / "atlas-halves_dseg.tsv",
                                                                       sep="\t", index=False)
    assert main([str(tmp_path / "bids"), str(out), "group", "--work-dir", str(tmp_path / "work"), "--no-report",
                 "--atlas", str(tmp_path / "atlas-halves_dseg.nii.gz")]) == 0
    stem = "group/task-orientation_space-MNI152NLin2009cAsym_atlas-halves_model-vonmises1d_desc-"
    participants = pd.read_csv(out / f"{stem}participants_rois.tsv", sep="\t").set_index(["participant_id", "name"])
    combined = {"sub-01": [0.0, 0.0, 90.0, 45.0], "sub-02": rows[("02", None)], "sub-03": rows[("03", None)]}
    expected = {}
    for subject, values in combined.items():  # sessions averaged first (circularly), then the region means
        for region, voxels in (("first", slice(0, 2)), ("second", slice(2, 4))):
            expected[subject, region] = scipy_stats.circmean(values[voxels], high=180.0, low=0.0)
            found = participants.loc[(subject, region), "preferred"]
            assert _arc180(found, expected[subject, region]) < 1e-3, (subject, region, found)
    assert _arc180(participants.loc[("sub-01", "first"), "preferred"], 0.0) < 1e-3  # not 90
    assert _arc180(participants.loc[("sub-03", "first"), "preferred"], 7.5) < 1e-3  # not the linear 97.5
    group = pd.read_csv(out / f"{stem}group_rois.tsv", sep="\t").set_index("name")
    for region in ("first", "second"):
        means = [expected[s, region] for s in combined]
        assert _arc180(group.loc[region, "preferred_mean"], scipy_stats.circmean(means, high=180.0, low=0.0)) < 1e-3
        assert 0.0 <= group.loc[region, "preferred_mean"] < 180.0
    sidecar = json.loads((out / f"{stem}group_rois.json").read_text())
    assert "period 180" in sidecar["preferred_mean"]["Description"]
    mean = np.asarray(nib.load(out / "group/task-orientation_space-MNI152NLin2009cAsym_model-vonmises1d_stat-"
                                     "preferred_desc-mean_statmap.nii.gz").dataobj).ravel()
    np.testing.assert_array_less(_arc180(mean, scipy_stats.circmean(np.array(list(combined.values())), high=180.0,
                                                                    low=0.0, axis=0)), 1e-3)


def test_group_comparison_averages_sessions(tmp_path):
    """A participant with two sessions whose per-voxel winners differ counts once, with the best model of its
    session-averaged cvR² (not its first session's map); the others' best-model maps are used as they are."""
    from bids_encoder.bids.derivatives import map_paths, sidecar_path
    from bids_encoder.bids.images import MapWriter

    make_tuning_dataset(tmp_path / "bids", "numerosity", n_subjects=3, n_volumes=30, n_per_value=1,
                        shape=(3, 3, 2), seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset_description.json").write_text(json.dumps({"Name": "c", "BIDSVersion": "1.9.0",
                                                              "DatasetType": "derivative"}))
    writer = MapWriter("volume", reference=nib.Nifti1Image(np.zeros((4, 1, 1), np.float32), np.eye(4)),
                       mask=np.ones((4, 1, 1), bool))
    models = ("loggauss1d", "gauss1d")
    cvr2 = {("01", "1"): [[0.5, 0.1, 0.3, np.nan], [0.1, 0.2, 0.1, 0.2]],  # winners 1 2 1 2
            ("01", "2"): [[0.0, 0.4, 0.1, np.nan], [0.2, 0.1, 0.4, 0.3]],  # winners 2 1 2 2
            ("02", None): [[0.3, 0.3, 0.1, 0.1], [0.1, 0.1, 0.3, 0.3]],    # winners 1 1 2 2
            ("03", None): [[0.1, 0.1, 0.1, 0.3], [0.3, 0.3, 0.3, 0.1]]}    # winners 2 2 2 1
    for (subject, session), rows in cvr2.items():
        entities = {"subject": subject, "task": "numerosity", "space": "MNI152NLin2009cAsym",
                    **({"session": session} if session else {})}
        maps = {(model, stat): values for model, row in zip(models, rows, strict=True)
                for stat, values in (("cvrsquared", row), ("rsquared", np.full(4, 0.5)))}
        maps[("comparison", "bestmodel")] = best_model(np.array(rows))
        for (model, stat), values in maps.items():
            path = map_paths(out, {**entities, "model": model, "stat": stat}, "volume")
            writer.write(np.asarray(values, np.float32), path, name=stat)
            extra = {"Levels": {"1": models[0], "2": models[1]}} if model == "comparison" else {}
            sidecar_path(path).write_text(json.dumps({"Description": stat, "Units": "n/a", "Runs": [1], **extra}))
    assert main([str(tmp_path / "bids"), str(out), "group", "--work-dir", str(tmp_path / "work")]) == 0
    stem = out / "group/task-numerosity_space-MNI152NLin2009cAsym_model-comparison_stat-"
    mode = np.asarray(nib.load(f"{stem}bestmodel_desc-mode_statmap.nii.gz").dataobj).ravel()
    fraction = np.asarray(nib.load(f"{stem}fraction_desc-loggauss1d_statmap.nii.gz").dataobj).ravel()
    # sub-01's averages: loggauss1d [0.25 0.25 0.2 nan], gauss1d [0.15 0.15 0.25 0.25] → winners 1 1 2 2
    votes = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [2, 2, 2, 1]])
    np.testing.assert_allclose(fraction, (votes == 1).mean(axis=0))  # first session only: [1/3 2/3 1/3 1/3]
    np.testing.assert_array_equal(mode, [1, 1, 2, 2])
    sidecar = json.loads(Path(f"{stem}bestmodel_desc-mode_statmap.json").read_text())
    assert "averaged over the participant's sessions" in sidecar["Sessions"]
    assert sidecar["SessionsAveraged"] == {"sub-01": ["1", "2"]}
    report = (out / "group.html").read_text()  # the group report: mode map, legend and the fractions of the maps
    name = "task-numerosity_space-MNI152NLin2009cAsym_model-comparison"
    assert f'<section id="{name}" class="model-comparison">' in report
    assert (out / f"group/figures/{name}_bestmodel_mode.png").is_file()
    shown = _comparison_rows(report)
    fractions = {m: np.asarray(nib.load(f"{stem}fraction_desc-{m}_statmap.nii.gz").dataobj).ravel() for m in models}
    for number, model in ((1, "loggauss1d"), (2, "gauss1d")):
        assert f'<td class="model">{model}</td>' in report
        assert shown[model] == pytest.approx((np.mean(mode == number), np.mean(fractions[model])), abs=5e-5)


SURFACE_MODELS = ("loggauss1d", "gauss1d")


@pytest.fixture(scope="module")
def surface_numerosity(tmp_path_factory):
    """Planted log-Gaussian tuning on 2 × 60 surface vertices, written both as fsaverage5 GIFTI pairs and as an
    fsLR CIFTI dtseries; loggauss1d and gauss1d fitted (and compared) on the GIFTI, loggauss1d on the CIFTI (the
    same fit: without cross-validation, which the GIFTI run has)."""
    root = tmp_path_factory.mktemp("surface_numerosity")
    truth = make_tuning_dataset(root / "bids", "numerosity", n_subjects=1, surface_vertices=60, cifti=True,
                                shape=(3, 3, 2), seed=4)
    common = [str(root / "bids"), "--stimulus-column", "numerosity", "--positive-amplitude",
              "--work-dir", str(root / "work"), *FAST]
    assert main([common[0], str(root / "gifti"), "participant", *common[1:], "--model", ",".join(SURFACE_MODELS),
                 "--space", "fsaverage5", "--no-report"]) == 0
    assert main([common[0], str(root / "cifti"), "participant", *common[1:], "--model", "loggauss1d",
                 "--space", "fsLR", "--cv", "none", "--no-report"]) == 0
    return truth, root


def _gifti(out, model, stat, task="numerosity"):
    paths = [out / "sub-01/func" / f"sub-01_task-{task}_hemi-{h}_space-fsaverage5_model-{model}_stat-{stat}"
                                   "_statmap.func.gii" for h in ("L", "R")]
    return np.concatenate([np.asarray(nib.load(p).darrays[0].data, dtype=np.float64) for p in paths])


def _trust_split(names, fitted):
    """Names without the pRF-trust outputs (#27), after checking them: the desc-iterated mask of each model (a
    hemi pair or one file) and desc-se maps only of ``fitted`` parameters (model -> labels)."""
    rest = set()
    for name in names:
        if "_desc-iterated_mask" in name or "_desc-se_statmap" in name:
            model = name.split("_model-")[1].split("_")[0]
            if "_desc-se_" in name:
                assert name.split("_stat-")[1].split("_")[0] in fitted[model], name
            continue
        rest.add(name)
    for model in fitted:
        assert any(f"_model-{model}_desc-iterated_mask" in name for name in names), model
    return rest


def test_tuning_models_on_gifti_surfaces(surface_numerosity):
    """loggauss1d and gauss1d on fsaverage5 GIFTI: every map as a hemi-L/hemi-R pair with one sidecar, the
    best-model pair, and preferred numerosity recovered (r ≥ 0.9 over the vertices with cvR² > 0)."""
    truth, root = surface_numerosity
    func = root / "gifti/sub-01/func"
    stem = "sub-01_task-numerosity_{}space-fsaverage5_model-{}_stat-{}_statmap"
    stats = {"loggauss1d": ["mu", "sd", "amplitude", "baseline", "preferred", "fwhm", "rsquared", "cvrsquared"],
             "gauss1d": ["mu", "sd", "amplitude", "baseline", "preferred", "fwhm", "rsquared", "cvrsquared"],
             "comparison": ["bestmodel"]}
    expected = {stem.format(f"hemi-{h}_", model, stat) + ".func.gii" for model, names in stats.items()
                for stat in names for h in ("L", "R")}
    expected |= {stem.format("", model, stat) + ".json" for model, names in stats.items() for stat in names}
    maps = {p.name for p in func.iterdir() if p.name.endswith((".func.gii", "_statmap.json"))}
    fitted = ["mu", "sd", "amplitude", "baseline"]
    assert _trust_split(maps, {"loggauss1d": fitted, "gauss1d": fitted}) == expected
    for model in SURFACE_MODELS:
        for stat in stats[model]:
            assert nib.load(func / (stem.format("hemi-R_", model, stat) + ".func.gii")).darrays[0].data.shape == (60,)
    sidecar = json.loads((func / (stem.format("", "loggauss1d", "preferred") + ".json")).read_text())
    assert sidecar["Units"] == "units of the events' numerosity column"
    assert sidecar["Model"]["Class"] == "LogGaussianPRFWithHRF"
    assert sidecar["Fitter"]["ParameterFitter"]["Stimulus"]["Values"] == [1, 2, 3, 4, 5, 6, 7]
    preferred, cvr2 = _gifti(root / "gifti", "loggauss1d", "preferred"), _gifti(root / "gifti", "loggauss1d",
                                                                                 "cvrsquared")
    chosen = cvr2 > 0
    assert chosen.mean() > 0.8
    r = np.corrcoef(preferred[chosen], truth.surface_preferred["01"][chosen])[0, 1]
    assert r >= 0.9, r
    comparison = json.loads((func / (stem.format("", "comparison", "bestmodel") + ".json")).read_text())
    assert comparison["Levels"] == {"1": "loggauss1d", "2": "gauss1d"}
    best = _gifti(root / "gifti", "comparison", "bestmodel")
    np.testing.assert_array_equal(best, best_model(np.vstack([_gifti(root / "gifti", m, "cvrsquared")
                                                              for m in SURFACE_MODELS])))
    from bids_encoder.report.comparison import participant_comparisons

    (section,) = participant_comparisons(root / "gifti", "01")  # the report's section: GIFTI pair found
    assert section["figure"]["file"].endswith("_model-comparison_bestmodel.svg")  # no mesh for 60 vertices: bars
    assert (root / "gifti" / section["figure"]["file"]).is_file()
    assert [(row["model"], row["fraction"]) for row in section["rows"]] == [
        (model, pytest.approx(np.mean(best == number))) for number, model in enumerate(SURFACE_MODELS, 1)]


def test_tuning_model_on_cifti(surface_numerosity):
    """loggauss1d on an fsLR CIFTI dtseries: dscalar maps on the input's grayordinates (space-fsLR_den-91k), with
    sidecars, and the fit of the GIFTI copy of the same data: preferred numerosity recovered (r ≥ 0.9 over the
    vertices whose cvR² is > 0 on the GIFTI)."""
    truth, root = surface_numerosity
    func = root / "cifti/sub-01/func"
    stem = "sub-01_task-numerosity_space-fsLR_den-91k_model-loggauss1d_stat-{}_statmap"
    bold = nib.load(root / "bids/derivatives/fmriprep/sub-01/func/sub-01_task-numerosity_run-1_space-fsLR_den-91k"
                           "_bold.dtseries.nii")
    stats = ("mu", "sd", "amplitude", "baseline", "preferred", "fwhm", "rsquared")
    expected = {stem.format(stat) + extension for stat in stats for extension in (".dscalar.nii", ".json")}
    assert _trust_split({p.name for p in func.glob("*_statmap.*")} | {p.name for p in func.glob("*_mask.*")},
                        {"loggauss1d": ["mu", "sd", "amplitude", "baseline"]}) == expected
    values = {}
    for stat in stats:
        image = nib.load(func / (stem.format(stat) + ".dscalar.nii"))
        assert image.header.get_axis(1) == bold.header.get_axis(1)
        assert list(image.header.get_axis(0).name) == [stat]
        values[stat] = np.asarray(image.dataobj, dtype=np.float64)[0]
        sidecar = json.loads((func / (stem.format(stat) + ".json")).read_text())
        assert sidecar["Units"] and sidecar["Model"]["Class"] == "LogGaussianPRFWithHRF", stat
    np.testing.assert_allclose(values["preferred"], _gifti(root / "gifti", "loggauss1d", "preferred"), rtol=1e-4)
    chosen = _gifti(root / "gifti", "loggauss1d", "cvrsquared") > 0
    assert np.corrcoef(values["preferred"][chosen], truth.surface_preferred["01"][chosen])[0, 1] >= 0.9


@pytest.fixture(scope="module")
def bars_on_surfaces(tmp_path_factory):
    root = tmp_path_factory.mktemp("bars-gifti")
    _bars_dataset(root / "bids", shape=(3, 3, 2), surface_vertices=30)
    return root


@pytest.mark.parametrize("model", ["prf2d", "css2d", "dog2d", "dn2d"])
def test_prf_model_on_gifti_surfaces(bars_on_surfaces, tmp_path, model):
    """Each 2-D pRF model (the family staged from the Gaussian) on fsaverage5 GIFTI: every parameter and derived
    map as a hemi pair, with units and the model class in the sidecars."""
    out = tmp_path / "out"
    assert main([str(bars_on_surfaces / "bids"), str(out), "participant", "--model", model, "--cv", "none",
                 "--max-iterations", "5", "--space", "fsaverage5", "--no-report", "--work-dir",
                 str(tmp_path / "work"), *FAST]) == 0
    func = out / "sub-01/func"
    class_name, parameters = {**FAMILY, "prf2d": ("GaussianPRF2DWithHRF", ["x", "y", "sd", "baseline",
                                                                           "amplitude"])}[model]
    stats = [*parameters, "polarAngle", "eccentricity", "rsquared"]
    stem = f"sub-01_task-localizer_{{}}space-fsaverage5_model-{model}_stat-{{}}_statmap"
    expected = {stem.format(f"hemi-{h}_", s) + ".func.gii" for s in stats for h in ("L", "R")}
    assert _trust_split({p.name for p in func.glob("*.func.gii")}, {model: parameters}) == expected
    for stat in stats:
        sidecar = json.loads((func / (stem.format("", stat) + ".json")).read_text())
        assert sidecar["Units"] and sidecar["Description"] and sidecar["Model"]["Class"] == class_name, stat
    angle = _gifti(out, model, "polarAngle", task="localizer")
    assert angle.shape == (60,) and np.all(np.abs(angle[np.isfinite(angle)]) <= 180.0)
    assert np.nanmedian(_gifti(out, model, "rsquared", task="localizer")) > 0


def _closed_form_regressor(events, n_volumes, tr, delay, dispersion, dt=0.005):
    """Events (onset, duration) convolved with the unit-area SPM double gamma of positive-lobe ``delay`` and
    ``dispersion`` (undershoot 16 s, ratio 0.167), sampled at the frame times: numpy/scipy on a fine grid."""
    from scipy.stats import gamma

    times = np.arange(0.0, n_volumes * tr + 32.0, dt)
    boxcar = np.zeros_like(times)
    for onset, duration in zip(events["onset"], events["duration"], strict=True):
        boxcar[(times >= onset) & (times < onset + duration)] = 1.0
    lags = np.arange(0.0, 32.0, dt)
    hrf = gamma.pdf(lags, delay / dispersion, scale=dispersion) - 0.167 * gamma.pdf(lags, 16.0)
    hrf /= hrf.sum() * dt
    response = np.convolve(boxcar, hrf)[: times.size] * dt
    return np.interp(np.arange(n_volumes) * tr, times, response)


def test_nuisance_regressors_take_the_shared_hrf(tmp_path, monkeypatch):
    """Responses planted with a 4.5 s HRF delay, a large nuisance response: with --hrf shared, the nuisance
    regressor of the design is the response events convolved with the shared HRF (closed form, numpy), and the
    fit predicts held-out runs better than the same fit with canonical nuisance regressors."""
    from bids_encoder.workflows.fits import tuning as fit_tuning

    truth = make_tuning_dataset(tmp_path / "bids", "numerosity", n_subjects=1, shape=(6, 6, 4), hrf_delay=4.5,
                                nuisance_effect=(20.0, 30.0), amplitude=1.5, seed=7)
    arguments = [str(tmp_path / "bids"), None, "participant", "--model", "loggauss1d", "--stimulus-column",
                 "numerosity", "--nuisance-trial-type", "response", "--hrf", "shared", "--no-report",
                 "--max-iterations", "3",
                 "--work-dir", str(tmp_path / "work"), *FAST]
    out = tmp_path / "out"
    assert main([*arguments[:1], str(out), *arguments[2:]]) == 0
    func = out / "sub-01/func"
    sidecar = json.loads(next(func.glob("*model-loggauss1d_stat-rsquared_statmap.json")).read_text())
    shared = sidecar["HRF"]["Shared"]
    assert shared["Estimated"] and abs(shared["Delay"] - 4.5) < 0.75, shared
    assert "shared HRF" in sidecar["Fitter"]["ParameterFitter"]["NuisanceRegressors"]["HRF"]
    design = pd.read_csv(next(func.glob("*model-loggauss1d_design.tsv")), sep="\t")
    n_volumes = len(design) // 2
    for run in (1, 2):
        events = truth.events[("01", run)]
        events = events[events["trial_type"] == "response"]
        column = design["nuisance_response"].to_numpy()[(run - 1) * n_volumes: run * n_volumes]
        expected = _closed_form_regressor(events, n_volumes, truth.tr, shared["Delay"], shared["Dispersion"])
        canonical = _closed_form_regressor(events, n_volumes, truth.tr, 6.0, 1.0)
        np.testing.assert_allclose(column, expected, atol=2e-3 * np.abs(expected).max())
        assert np.abs(column - canonical).max() > 0.1 * np.abs(canonical).max()  # the HRFs differ visibly
    shared_cv = nib.load(next(func.glob("*model-loggauss1d_stat-cvrsquared_statmap.nii.gz"))).get_fdata()
    monkeypatch.setattr(fit_tuning, "_nuisance_hrf", lambda inputs, hrf, hrf_model: (inputs, None))
    assert main([*arguments[:1], str(tmp_path / "canonical"), *arguments[2:]]) == 0  # canonical nuisance
    canonical_cv = nib.load(next((tmp_path / "canonical/sub-01/func").glob(
        "*model-loggauss1d_stat-cvrsquared_statmap.nii.gz"))).get_fdata()
    inside = truth.mask
    gain = shared_cv[inside] - canonical_cv[inside]
    assert np.median(gain) > 0 and np.mean(gain > 0) > 0.8, (np.median(gain), np.mean(gain > 0))


def test_nuisance_regressors_with_hrf_derivatives_closed_form():
    """--hrf fit's nuisance design: the canonical regressor and its central differences in HRF delay and
    dispersion (closed form, numpy), on the rows of the inputs (a training fold keeps only its runs); the shared
    HRF's regressor for another delay."""
    from bids_encoder.bids.inputs import FitInputs, nuisance_regressors

    tr, n = 1.5, 60
    events = {1: pd.DataFrame({"onset": [3.0, 30.0, 61.0], "duration": [0.5, 1.0, 0.5], "condition": "cue",
                               "modulation": 1.0}),
              2: pd.DataFrame({"onset": [12.0], "duration": [2.0], "condition": "cue", "modulation": 1.0})}
    index = pd.MultiIndex.from_arrays([np.repeat([1, 2], n), np.tile(np.arange(n), 2)], names=["run", "volume"])
    inputs = FitInputs(runs=[], data=pd.DataFrame(np.zeros((2 * n, 1)), index=index), writer=None, tr=tr,
                       paradigm=None, confounds=pd.DataFrame({"nuisance_cue": np.zeros(2 * n), "motion": 1.0},
                                                             index=index),
                       nuisance_events={run: (frame, n, tr, 0.0) for run, frame in events.items()})
    design = nuisance_regressors(inputs, None, derivatives=True)
    assert list(design.columns) == ["nuisance_cue", "nuisance_cue_ddelay", "nuisance_cue_ddispersion"]
    for run in (1, 2):
        rows = index.get_level_values("run") == run
        closed = {key: _closed_form_regressor(events[run], n, tr, delay, dispersion) for key, delay, dispersion in (
            ("c", 6.0, 1.0), ("d+", 6.5, 1.0), ("d-", 5.5, 1.0), ("s+", 6.0, 1.1), ("s-", 6.0, 0.9))}
        scale = np.abs(closed["c"]).max()
        np.testing.assert_allclose(design["nuisance_cue"][rows], closed["c"], atol=2e-3 * scale)
        np.testing.assert_allclose(design["nuisance_cue_ddelay"][rows], closed["d+"] - closed["d-"], atol=4e-3 * scale)
        np.testing.assert_allclose(design["nuisance_cue_ddispersion"][rows], (closed["s+"] - closed["s-"]) / 0.2,
                                   atol=2e-2 * scale)
    fold = FitInputs(**{**inputs.__dict__, "data": inputs.data[index.get_level_values("run") == 2],
                        "confounds": inputs.confounds[index.get_level_values("run") == 2]})
    shared = nuisance_regressors(fold, {"a1": 4.5, "d1": 0.8})
    np.testing.assert_allclose(shared["nuisance_cue"], _closed_form_regressor(events[2], n, tr, 4.5, 0.8),
                               atol=2e-3 * np.abs(shared["nuisance_cue"]).max())
