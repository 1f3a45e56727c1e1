"""Group level end to end: 4 generated subjects with effects planted in the same regions, each fitted by its own
process into one output folder (as SLURM array tasks do), then ``bids_encoder … group``."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from bids_encoder import __version__
from bids_encoder.bids.derivatives import output_layout
from bids_encoder.cli import main
from bids_encoder.datasets.example_dataset import make_example_dataset

pytestmark = pytest.mark.xdist_group(name="group_e2e")  # one worker builds the dataset once

SUBJECTS = ("01", "02", "03", "04")
CONDITIONS = ("faces", "houses", "scenes")
VOLUME = "task-localizer_space-MNI152NLin2009cAsym_res-2_model-glm"
SURFACE = "task-localizer_space-fsaverage5_model-glm"
COMMON = ["--confounds", "motion,high_pass", "--confounds-param", "motion=basic"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("group")
    truth = make_example_dataset(root / "bids", n_subjects=4, n_runs=2, n_volumes=150, shape=(12, 14, 10),
                                 noise=0.1, seed=7, shared_effects=True, surface_vertices=150)
    out, work = root / "out", root / "work"
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    jobs = [subprocess.Popen([sys.executable, "-m", "bids_encoder", str(root / "bids"), str(out), "participant",
                              "--participant-label", subject, "--work-dir", str(work), "--nthreads", "1", *COMMON],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
            for subject in SUBJECTS]  # four array tasks at once, sharing the work folder and the output folder
    for job in jobs:
        _, error = job.communicate(timeout=600)
        assert job.returncode == 0, error[-2000:]
    assert main([str(root / "bids"), str(out), "participant", "--space", "fsaverage5", "--work-dir", str(work),
                 *COMMON]) == 0
    assert main([str(root / "bids"), str(out), "group", "--work-dir", str(work)]) == 0
    return truth, root, out


def _image(path):
    return nib.load(path).get_fdata()


def _participant(out, subject, stat, stem=VOLUME):
    return _image(out / f"sub-{subject}/func/sub-{subject}_{stem}_{stat}_statmap.nii.gz")


def expected_group_files():
    files = ["participants_summary.tsv", "participants_summary.json"]
    for stem, kind in ((VOLUME, "volume"), (SURFACE, "gifti")):
        maps = ["stat-count", *[f"stat-{r}_desc-{d}" for r in ("rsquared", "cvrsquared")
                                for d in ("mean", "median", "sd")]]
        for condition in CONDITIONS:
            maps += [f"contrast-{condition}_stat-effect_desc-{d}" for d in ("mean", "median", "sd")]
            maps += [f"contrast-{condition}_stat-{s}" for s in ("effect", "variance", "t", "z", "p",
                                                                  "betweenVariance")]
            maps += [f"contrast-{condition}_stat-z_desc-fdr"]
            if kind == "volume":
                maps += [f"contrast-{condition}_stat-z_desc-cluster"]
                files += [f"{stem}_contrast-{condition}_stat-z_desc-cluster_clusters.{e}" for e in ("tsv", "json")]
        for name in maps:
            files.append(f"{stem}_{name}_statmap.json")
            if kind == "volume":
                files.append(f"{stem}_{name}_statmap.nii.gz")
            else:
                files += [f"{stem.replace('task-localizer_', f'task-localizer_hemi-{h}_')}_{name}_statmap.func.gii"
                          for h in "LR"]
    return sorted(files)


def test_separate_processes_then_group_write_every_file(study):
    _, _, out = study
    for subject in SUBJECTS:
        assert (out / f"sub-{subject}/func/sub-{subject}_{VOLUME}_stat-rsquared_statmap.json").is_file()
    assert sorted(p.name for p in (out / "group").iterdir() if p.is_file()) == expected_group_files()
    # counts, R² means, z maps; and the FDR-thresholded z (both spaces) and cluster-extent z (volume) of 3 conditions:
    # drawn, or said in words when nothing survives or the count is the same everywhere
    said = (out / "group.html").read_text().count('class="empty-map"')
    assert len(list((out / "group/figures").iterdir())) + said == 12 + 3 * 3
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left
    assert len(list((out / "logs").glob("participant_sub-*.log"))) == 4
    assert len(list((out / "logs").glob("group_*.log"))) == 1


def test_group_z_finds_the_planted_region_and_nothing_else(study):
    truth, _, out = study
    for condition in CONDITIONS:
        z = _image(out / f"group/{VOLUME}_contrast-{condition}_stat-z_statmap.nii.gz")
        effects = np.stack([truth.effects[(s, condition)] for s in SUBJECTS])
        region = (effects.min(axis=0) >= 0.5 * effects.max()) & truth.mask
        null = (effects.max(axis=0) == 0) & truth.mask
        threshold = scipy_stats.norm.isf(0.001)
        assert region.sum() >= 10 and null.sum() >= 400
        # mixed effects (default) never trust a spread across 4 participants below their first-level variances:
        # p < 0.01 everywhere in the region, p < 0.001 in most of it (OLS had p < 0.001 everywhere)
        assert np.all(z[region] > scipy_stats.norm.isf(0.01)) and np.median(z[region]) > threshold, condition
        assert np.mean(z[null] > threshold) <= 0.01, condition
        assert np.all(np.isnan(z[~truth.mask]))
        from nilearn.glm import fdr_threshold

        fdr = _image(out / f"group/{VOLUME}_contrast-{condition}_stat-z_desc-fdr_statmap.nii.gz")
        inside = np.isfinite(z)
        expected = np.where(z[inside] >= fdr_threshold(z[inside], 0.05), z[inside], 0.0)
        np.testing.assert_allclose(fdr[inside], expected, rtol=1e-6)
        assert np.all(fdr[region] > 0) and np.mean(fdr[null] > 0) <= 0.01
        clusters = pd.read_csv(out / f"group/{VOLUME}_contrast-{condition}_stat-z_desc-cluster_clusters.tsv",
                               sep="\t")
        assert len(clusters) >= 1 and clusters["Peak Stat"].max() == pytest.approx(np.nanmax(z), rel=1e-5)
        page = (out / "group.html").read_text()  # the report shows the table, its peak as in the TSV
        assert f"<h2>Clusters: {VOLUME}_contrast-{condition}_stat-z_desc-cluster</h2>" in page
        assert f"<td>{clusters['Peak Stat'].iloc[0]:.3f}</td>" in page
        cluster = _image(out / f"group/{VOLUME}_contrast-{condition}_stat-z_desc-cluster_statmap.nii.gz")
        assert np.all((cluster[inside] == 0) | (cluster[inside] == z[inside]))
        assert np.all(cluster[inside][cluster[inside] > 0] > scipy_stats.norm.isf(0.001))


def test_group_maps_match_numpy_scipy_and_nilearn(study, tmp_path):
    """The summaries, and with --group-model ols the one-sample t-test (scipy, nilearn); a covariate's slope with
    OLS equals numpy's least squares."""
    _, root, study_out = study
    out = _copy(study_out, tmp_path)
    assert main([str(root / "bids"), str(out), "group", "--space", "MNI152NLin2009cAsym", "--group-model", "ols",
                 "--no-report", "--work-dir", str(tmp_path / "work")]) == 0
    for condition in CONDITIONS:
        stat = f"contrast-{condition}_stat-effect"
        values = np.stack([_participant(out, s, stat) for s in SUBJECTS])
        inside = np.isfinite(values).all(axis=0)
        group = {d: _image(out / f"group/{VOLUME}_{stat}_desc-{d}_statmap.nii.gz") for d in ("mean", "median", "sd")}
        np.testing.assert_allclose(group["mean"][inside], values.mean(axis=0)[inside], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(group["median"][inside], np.median(values, axis=0)[inside], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(group["sd"][inside], values.std(axis=0, ddof=1)[inside], rtol=1e-5, atol=1e-6)
        t = _image(out / f"group/{VOLUME}_contrast-{condition}_stat-t_statmap.nii.gz")
        z = _image(out / f"group/{VOLUME}_contrast-{condition}_stat-z_statmap.nii.gz")
        reference = scipy_stats.ttest_1samp(values[:, inside], 0.0, axis=0, alternative="greater")
        np.testing.assert_allclose(t[inside], reference.statistic, rtol=1e-4)
        np.testing.assert_allclose(z[inside], scipy_stats.norm.isf(reference.pvalue), rtol=1e-4, atol=1e-4)
    count = _image(out / f"group/{VOLUME}_stat-count_statmap.nii.gz")
    assert np.all(count[inside] == 4)

    from nilearn.glm.second_level import SecondLevelModel

    images = [out / f"sub-{s}/func/sub-{s}_{VOLUME}_contrast-faces_stat-effect_statmap.nii.gz" for s in SUBJECTS]
    mask = nib.Nifti1Image(inside.astype(np.uint8), nib.load(images[0]).affine)
    model = SecondLevelModel(mask_img=mask).fit([str(p) for p in images],
                                                design_matrix=pd.DataFrame({"intercept": [1.0] * 4}))
    nilearn_z = model.compute_contrast("intercept", output_type="z_score").get_fdata()
    ours = _image(out / f"group/{VOLUME}_contrast-faces_stat-z_statmap.nii.gz")
    np.testing.assert_allclose(ours[inside], nilearn_z[inside], atol=2e-3)

    bids = tmp_path / "bids"
    shutil.copytree(root / "bids", bids, ignore=shutil.ignore_patterns("derivatives"))
    age = np.array([23.0, 31.0, 27.0, 40.0])
    pd.DataFrame({"participant_id": [f"sub-{s}" for s in SUBJECTS], "age": age}).to_csv(
        bids / "participants.tsv", sep="\t", index=False)
    assert main([str(bids), str(out), "group", "--space", "MNI152NLin2009cAsym", "--group-model", "ols",
                 "--group-covariate", "age", "--no-report", "--work-dir", str(tmp_path / "work2")]) == 0
    slope = _image(out / f"group/{VOLUME}_contrast-faces_stat-effect_desc-age_statmap.nii.gz")
    t = _image(out / f"group/{VOLUME}_contrast-faces_stat-t_desc-age_statmap.nii.gz")
    x = np.column_stack([np.ones(4), age - age.mean()])
    y = np.stack([_participant(out, s, "contrast-faces_stat-effect") for s in SUBJECTS])[:, inside]
    beta, residuals = np.linalg.lstsq(x, y, rcond=None)[:2]
    se = np.sqrt(residuals / 2 * np.linalg.inv(x.T @ x)[1, 1])
    np.testing.assert_allclose(slope[inside], beta[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(t[inside], beta[1] / se, rtol=1e-4)
    sidecar = json.loads((out / f"group/{VOLUME}_contrast-faces_stat-t_desc-age_statmap.json").read_text())
    assert sidecar["Test"]["Covariates"]["age"]["Mean"] == age.mean() and sidecar["Test"]["Design"] == ["mean", "age"]


def test_surface_group_maps_match_numpy(study):
    _, _, out = study
    def surface(path_for_hemi):
        return np.concatenate([nib.load(path_for_hemi(h)).darrays[0].data for h in "LR"])

    stat = "contrast-houses_stat-effect"
    values = np.stack([surface(lambda h, s=s: out / f"sub-{s}/func/sub-{s}_task-localizer_hemi-{h}_space-"
                                                  f"fsaverage5_model-glm_{stat}_statmap.func.gii") for s in SUBJECTS])
    mean = surface(lambda h: out / f"group/task-localizer_hemi-{h}_space-fsaverage5_model-glm_{stat}_desc-mean_"
                                   "statmap.func.gii")
    np.testing.assert_allclose(mean, values.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_sidecars_list_participants_test_and_sources(study):
    _, _, out = study
    z = json.loads((out / f"group/{VOLUME}_contrast-faces_stat-z_statmap.json").read_text())
    assert z["Participants"] == [f"sub-{s}" for s in SUBJECTS] and z["NumberOfParticipants"] == 4
    assert z["Test"]["Name"] == "mixed effects" and z["Units"] == "z" and z["MinRSquared"] is None
    assert z["Test"]["GroupModel"] == "mixed" and z["Test"]["Design"] == ["mean"]
    assert len(z["Sources"]) == 12  # faces effect, its variance and R² of every participant
    for uri in z["Sources"]:
        assert uri.startswith("bids::") and (out / uri[len("bids::"):]).is_file()
    mean = json.loads((out / f"group/{SURFACE}_contrast-faces_stat-effect_desc-mean_statmap.json").read_text())
    assert mean["Test"] == {"Name": "mean", "Definition": "Mean across participants", "Circular": False}
    assert mean["Units"] == "percent signal change per unit regressor"
    assert "GLM effect" in mean["Description"]


def test_participants_summary_matches_the_participant_outputs(study):
    _, _, out = study
    table = pd.read_csv(out / "group/participants_summary.tsv", sep="\t")
    assert len(table) == 8 and set(table["space"]) == {"MNI152NLin2009cAsym", "fsaverage5"}
    volume = table[table["space"] == "MNI152NLin2009cAsym"].set_index("participant_id")
    assert list(volume.index) == [f"sub-{s}" for s in SUBJECTS]
    for subject in SUBJECTS:
        row = volume.loc[f"sub-{subject}"]
        r2 = _participant(out, subject, "stat-rsquared")
        assert row["median_rsquared"] == pytest.approx(np.nanmedian(r2), rel=1e-5)
        assert row["voxels_fitted"] == np.isfinite(r2).sum() and row["volumes"] == 300
        assert row["runs"] == "1,2" and row["n_runs"] == 2 and row["fraction_converged"] == 1.0
        assert row["device"] == "CPU" and row["wall_time_s"] > 0 and pd.isna(row["session_id"])
    description = json.loads((out / "group/participants_summary.json").read_text())
    assert set(description) == {*table.columns, "SoftwareVersion"} and description["SoftwareVersion"] == __version__


def test_group_outputs_are_queryable_with_pybids(study):
    _, _, out = study
    layout = output_layout(out)
    found = [f for f in layout.get(stat="z", contrast="faces", space="MNI152NLin2009cAsym", extension=".nii.gz")
             if "subject" not in f.entities and "desc" not in f.entities]  # not the participants' or thresholded
    assert [Path(f.path).name for f in found] == [f"{VOLUME}_contrast-faces_stat-z_statmap.nii.gz"]


def _copy(out, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("group", "logs"))
    return copy


def test_min_rsquared_masks_participants_voxels(study, tmp_path):
    _, root, out = study
    copy = _copy(out, tmp_path)
    assert main([str(root / "bids"), str(copy), "group", "--space", "MNI152NLin2009cAsym", "--min-rsquared", "0.3",
                 "--work-dir", str(tmp_path / "work")]) == 0
    r2 = np.stack([_participant(copy, s, "stat-rsquared") for s in SUBJECTS])
    values = np.stack([_participant(copy, s, "contrast-scenes_stat-effect") for s in SUBJECTS])
    values[~(r2 >= 0.3)] = np.nan
    count = _image(copy / f"group/{VOLUME}_stat-count_statmap.nii.gz")
    mean = _image(copy / f"group/{VOLUME}_contrast-scenes_stat-effect_desc-mean_statmap.nii.gz")
    kept = np.isfinite(values).sum(axis=0)
    some = kept > 0
    assert 0 < some.sum() < truth_mask_size(r2)
    np.testing.assert_array_equal(np.nan_to_num(count), kept)
    np.testing.assert_allclose(mean[some], np.nanmean(values[:, some], axis=0), rtol=1e-5)
    assert np.all(np.isnan(mean[~some]))
    assert not (copy / "group" / f"{SURFACE}_stat-count_statmap.json").exists()  # --space restricts the group
    sidecar = json.loads((copy / f"group/{VOLUME}_stat-count_statmap.json").read_text())
    assert sidecar["MinRSquared"] == 0.3


def test_min_cvrsquared_combines_with_min_rsquared(study, tmp_path):
    _, root, out = study
    copy = _copy(out, tmp_path)
    assert main([str(root / "bids"), str(copy), "group", "--space", "MNI152NLin2009cAsym", "--min-rsquared", "0.2",
                 "--min-cvrsquared", "0.25", "--no-report", "--work-dir", str(tmp_path / "work")]) == 0
    r2 = np.stack([_participant(copy, s, "stat-rsquared") for s in SUBJECTS])
    cvr2 = np.stack([_participant(copy, s, "stat-cvrsquared") for s in SUBJECTS])
    kept = (r2 >= 0.2) & (cvr2 >= 0.25)
    assert 0 < kept.sum() < (r2 >= 0.2).sum()  # the cvR² threshold removes voxels the R² threshold keeps
    count = _image(copy / f"group/{VOLUME}_stat-count_statmap.nii.gz")
    np.testing.assert_array_equal(np.nan_to_num(count), kept.sum(axis=0))
    mean = _image(copy / f"group/{VOLUME}_stat-cvrsquared_desc-mean_statmap.nii.gz")
    some = kept.any(axis=0)
    np.testing.assert_allclose(mean[some], np.nanmean(np.where(kept, cvr2, np.nan)[:, some], axis=0), rtol=1e-5)
    sidecar = json.loads((copy / f"group/{VOLUME}_stat-count_statmap.json").read_text())
    assert sidecar["MinRSquared"] == 0.2 and sidecar["MinCVRSquared"] == 0.25
    for path in (copy / "sub-01" / "func").glob(f"*{VOLUME}*stat-cvrsquared_statmap.*"):
        path.unlink()  # a fit without cvR² (as with --cv none) cannot be thresholded on it
    assert main([str(root / "bids"), str(copy), "group", "--space", "MNI152NLin2009cAsym", "--min-cvrsquared", "0.1",
                 "--no-report", "--work-dir", str(tmp_path / "work")]) == 66


def truth_mask_size(r2):
    return int(np.isfinite(r2).any(axis=0).sum())


def _atlas(truth, path, pad=2):
    """Labels 1 = the faces region, 2 = the rest of the brain, on a grid padded by ``pad`` voxels."""
    effects = np.stack([truth.effects[(s, "faces")] for s in SUBJECTS])
    labels = np.where(truth.mask, 2, 0)
    labels[(effects.min(axis=0) >= 0.5 * effects.max()) & truth.mask] = 1
    padded = np.pad(labels, pad)
    affine = truth.affine.copy()
    affine[:3, 3] -= pad * np.diag(truth.affine)[:3]
    nib.Nifti1Image(padded.astype(np.int16), affine).to_filename(path)
    path.with_name(path.name.replace(".nii.gz", ".tsv")).write_text("index\tname\n1\tfaceRegion\n2\trest\n")
    return labels


def _roi_check(copy, stem, labels, subjects=SUBJECTS):
    stem_atlas = stem.replace("_model-", "_atlas-test_model-")
    participants = pd.read_csv(copy / f"group/{stem_atlas}_desc-participants_rois.tsv", sep="\t")
    group = pd.read_csv(copy / f"group/{stem_atlas}_desc-group_rois.tsv", sep="\t")
    assert list(group["name"]) == ["faceRegion", "rest"] and list(group["index"]) == [1, 2]
    means = []
    for subject in subjects:
        values = _participant(copy, subject, "contrast-faces_stat-effect", stem)
        rows = participants[participants["participant_id"] == f"sub-{subject}"].set_index("index")
        for index in (1, 2):
            inside = (labels == index) & np.isfinite(values)
            assert rows.loc[index, "n_voxels"] == inside.sum()
            assert rows.loc[index, "effect_faces"] == pytest.approx(values[inside].mean(), rel=1e-5)
        means.append(rows["effect_faces"].to_numpy())
    means = np.array(means)
    np.testing.assert_allclose(group["effect_faces_mean"], means.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(group["effect_faces_t"], scipy_stats.ttest_1samp(means, 0.0, axis=0).statistic,
                               rtol=1e-4)
    assert group.loc[0, "effect_faces_z"] > scipy_stats.norm.isf(0.001)
    return group


def test_atlas_roi_tables_in_template_space(study, tmp_path):
    truth, root, out = study
    copy = _copy(out, tmp_path)
    labels = _atlas(truth, tmp_path / "atlas-test_dseg.nii.gz")  # another grid: resampled (nearest neighbour)
    assert main([str(root / "bids"), str(copy), "group", "--space", "MNI152NLin2009cAsym", "--atlas",
                 str(tmp_path / "atlas-test_dseg.nii.gz"), "--work-dir", str(tmp_path / "work")]) == 0
    _roi_check(copy, VOLUME, labels)
    assert (copy / f"group/{VOLUME}_stat-count_statmap.nii.gz").is_file()  # maps as well as tables


def _as_native(out, tmp_path, subjects=SUBJECTS):
    """The volume outputs renamed to space-T1w (what --space T1w writes), without the group folder."""
    native = tmp_path / "native"
    native.mkdir()
    shutil.copy(out / "dataset_description.json", native)
    for subject in subjects:
        folder = native / f"sub-{subject}" / "func"
        folder.mkdir(parents=True)
        for path in (out / f"sub-{subject}" / "func").glob(f"*{VOLUME}*"):
            shutil.copy(path, folder / path.name.replace("space-MNI152NLin2009cAsym_res-2", "space-T1w"))
    return native


def test_native_space_needs_a_per_participant_atlas(study, tmp_path, capsys):
    truth, root, out = study
    native = _as_native(out, tmp_path)
    stem = VOLUME.replace("space-MNI152NLin2009cAsym_res-2", "space-T1w")
    work = ["--work-dir", str(tmp_path / "work")]
    assert main([str(root / "bids"), str(native), "group", *work]) == 64
    assert "space-T1w" in capsys.readouterr().err
    labels = None
    for subject in SUBJECTS:
        labels = _atlas(truth, tmp_path / f"sub-{subject}_atlas-test_dseg.nii.gz")
    assert main([str(root / "bids"), str(native), "group", "--atlas", str(tmp_path / "atlas-test_dseg.nii.gz"),
                 *work]) == 64
    assert "{subject}" in capsys.readouterr().err
    assert not (native / "group").exists()
    assert main([str(root / "bids"), str(native), "group", "--atlas",
                 str(tmp_path / "sub-{subject}_atlas-test_dseg.nii.gz"), *work]) == 0
    _roi_check(native, stem, labels)
    assert not list((native / "group").glob("*_statmap.*"))  # no voxel-wise averaging in native space


def test_circular_statistics_for_polar_angle(study, tmp_path):
    _, root, out = study
    copy = _copy(out, tmp_path)
    angles = {"01": 170.0, "02": -170.0, "03": 175.0, "04": -175.0}  # around 180°: the linear mean is ~0
    prf = VOLUME.replace("model-glm", "model-prf2d")
    for subject, angle in angles.items():
        folder = copy / f"sub-{subject}" / "func"
        r2 = nib.load(folder / f"sub-{subject}_{VOLUME}_stat-rsquared_statmap.nii.gz")
        polar = np.where(np.isfinite(r2.get_fdata()), angle, np.nan).astype(np.float32)
        nib.Nifti1Image(polar, r2.affine).to_filename(folder / f"sub-{subject}_{prf}_stat-polarAngle_statmap.nii.gz")
        shutil.copy(folder / f"sub-{subject}_{VOLUME}_stat-rsquared_statmap.nii.gz",
                    folder / f"sub-{subject}_{prf}_stat-rsquared_statmap.nii.gz")
        shutil.copy(folder / f"sub-{subject}_{VOLUME}_stat-rsquared_statmap.json",
                    folder / f"sub-{subject}_{prf}_stat-rsquared_statmap.json")
    assert main([str(root / "bids"), str(copy), "group", "--model", "prf2d", "--work-dir", str(tmp_path / "w")]) == 0
    mean = _image(copy / f"group/{prf}_stat-polarAngle_desc-mean_statmap.nii.gz")
    median = _image(copy / f"group/{prf}_stat-polarAngle_desc-median_statmap.nii.gz")
    sd = _image(copy / f"group/{prf}_stat-polarAngle_desc-sd_statmap.nii.gz")
    inside = np.isfinite(mean)
    assert inside.sum() > 400
    assert np.allclose(np.abs(mean[inside]), 180.0, atol=1e-3)  # not the linear mean, 0
    assert np.allclose(np.abs(median[inside]), 180.0, atol=1e-3)
    expected_sd = np.degrees(scipy_stats.circstd(np.radians(list(angles.values()))))
    np.testing.assert_allclose(sd[inside], expected_sd, rtol=1e-4)
    sidecar = json.loads((copy / f"group/{prf}_stat-polarAngle_desc-mean_statmap.json").read_text())
    assert sidecar["Test"]["Circular"] is True
    assert not (copy / "group" / f"{VOLUME}_stat-count_statmap.nii.gz").exists()  # --model restricts the group


@pytest.mark.parametrize("case, code, message", [
    ("missing", 66, "sub-04"),
    ("unfinished", 66, "sub-03_task-localizer_space-MNI152NLin2009cAsym_res-2_model-glm is unfinished"),
    ("one", 18, "at least 2"),
    ("unknown", 18, "sub-09"),
    ("spaces", 65, "different spaces"),
])
def test_group_errors_name_the_problem_and_keep_previous_results(study, tmp_path, capsys, case, code, message):
    _, root, out = study
    copy = _copy(out, tmp_path)
    arguments = [str(root / "bids"), str(copy), "group", "--work-dir", str(tmp_path / "work"), "--space",
                 "MNI152NLin2009cAsym"]
    assert main(arguments) == 0
    capsys.readouterr()
    before = {p.name: p.stat().st_mtime_ns for p in (copy / "group").iterdir()}
    if case == "missing":
        for path in (copy / "sub-04").rglob(f"*{VOLUME}*"):
            path.unlink()
    elif case == "unfinished":
        (copy / f"sub-03/func/sub-03_{VOLUME}_stat-rsquared_statmap.json").unlink()
    elif case == "one":
        arguments += ["--participant-label", "01"]
    elif case == "unknown":
        arguments += ["--participant-label", "09"]
    else:
        arguments = arguments[:-2]
        for subject in ("03", "04"):
            for path in (copy / f"sub-{subject}").rglob(f"*{VOLUME}*"):
                path.rename(path.with_name(path.name.replace("space-MNI152NLin2009cAsym_res-2", "space-T1w")))
            for path in (copy / f"sub-{subject}").rglob("*space-fsaverage5*"):
                path.unlink()
        for subject in ("01", "02"):
            for path in (copy / f"sub-{subject}").rglob("*space-fsaverage5*"):
                path.unlink()
    assert main(arguments) == code
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert {p.name: p.stat().st_mtime_ns for p in (copy / "group").iterdir()} == before
    assert not [p for p in copy.iterdir() if p.name.startswith(".")]
