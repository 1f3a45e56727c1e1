"""End to end: a generated fMRIPrep-like dataset (2 subjects × 2 runs, MNI volume + fsaverage5 GIFTI) through the
``bids_encoder`` command, checked against the ground truth, file by file and sidecar by sidecar."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_encoder import __version__
from bids_encoder.bids.derivatives import output_layout
from bids_encoder.cli import main
from bids_encoder.datasets.example_dataset import make_example_dataset

pytestmark = pytest.mark.xdist_group(name="participant_e2e")  # one worker builds the dataset once

CONDITIONS = ("faces", "houses", "scenes")
VOLUME = "space-MNI152NLin2009cAsym_res-2"
SURFACE = "space-fsaverage5"
SIDECAR_KEYS = {"Description", "Units", "Sources", "Model", "HRF", "Fitter", "Confounds", "Runs", "RepetitionTime",
                "FractionPositiveCVRSquared", "OutOfMaskValue", "MedianRSquared", "MedianCVRSquared", "SoftwareVersion", "Device", "Processing",
                "Summary"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    truth = make_example_dataset(root / "bids", n_subjects=2, n_runs=2, n_volumes=120, shape=(12, 14, 10),
                                 noise=0.1, surface_vertices=400, seed=3)
    out = root / "out"
    common = ["--work-dir", str(root / "work"), "--confounds", "motion,high_pass", "--confounds-param", "motion=basic"]
    assert main([str(root / "bids"), str(out), "participant", "--participant-label", "01", "sub-02", *common]) == 0
    assert main([str(root / "bids"), str(out), "participant", "--space", "fsaverage5", *common]) == 0
    return truth, root, out


def expected_files():
    files = ["dataset_description.json"]
    for subject in ("01", "02"):
        stem = f"sub-{subject}/func/sub-{subject}_task-localizer"
        for space, extensions in ((VOLUME, [".nii.gz"]), (SURFACE, None)):
            model = f"{stem}_{space}_model-glm"
            files += [f"{model}_design.tsv", f"{model}_design.json"]
            stats = [f"contrast-{c}_stat-{s}" for c in CONDITIONS for s in ("effect", "variance", "t", "z", "p")]
            stats += [f"contrast-effectsOfInterest_stat-{s}" for s in ("F", "z", "p")]
            stats += ["stat-rsquared", "stat-cvrsquared"]
            for stat in stats:
                files.append(f"{model}_{stat}_statmap.json")
                if extensions:
                    files.append(f"{model}_{stat}_statmap.nii.gz")
                else:
                    files += [f"{stem}_hemi-{h}_{space}_model-glm_{stat}_statmap.func.gii" for h in "LR"]
    return sorted(files)


def test_exact_output_files(dataset):
    _, _, out = dataset
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                   and p.parts[-2] not in ("logs", "figures") and p.suffix != ".html")
    assert found == expected_files()
    assert sorted(p.name for p in out.glob("*.html")) == ["sub-01.html", "sub-02.html"]
    for subject in ("01", "02"):  # per fit: design, confounds, R², cvR², cvR² vs R², 3 effects, 4 z maps (3
        # conditions, effects of interest), data and fit, JSON; the volume fit's interactive view
        assert len(list((out / f"sub-{subject}" / "figures").iterdir())) == 2 * 14 + 1
    logs = list((out / "logs").glob("participant_*.log"))
    assert len(logs) == 2 and all(log.stat().st_size > 0 for log in logs)
    assert not list(out.rglob(".*"))  # no temporary files left


def _surface_values(out, subject, stat):
    stem = out / f"sub-{subject}" / "func" / f"sub-{subject}_task-localizer"
    return np.concatenate([nib.load(f"{stem}_hemi-{h}_{SURFACE}_model-glm_{stat}_statmap.func.gii").darrays[0].data
                           for h in "LR"])


@pytest.mark.parametrize("subject", ["01", "02"])
def test_effects_recover_truth(dataset, subject):
    truth, root, out = dataset
    for condition in CONDITIONS:
        path = out / f"sub-{subject}/func/sub-{subject}_task-localizer_{VOLUME}_model-glm_contrast-{condition}_stat-effect_statmap.nii.gz"
        image = nib.load(path)
        values = image.get_fdata()
        assert np.allclose(image.affine, truth.affine)
        assert np.all(np.isnan(values[~truth.mask])) and np.all(np.isfinite(values[truth.mask]))
        # effects are in percent signal change (--signal-scaling psc): the planted BOLD effect over the voxel's mean
        expected = truth.effects[(subject, condition)][truth.mask] * 100.0 / _mean_bold(root, subject, truth.mask)
        # ≥ 0.94: sub-02's faces give 0.951 with OLS, 0.949 with the default AR(1) (the simulated noise is white)
        assert np.corrcoef(values[truth.mask], expected)[0, 1] >= 0.94
        assert np.polyfit(expected, values[truth.mask], 1)[0] == pytest.approx(1.0, abs=0.1)  # unit gain
        surface = _surface_values(out, subject, f"contrast-{condition}_stat-effect")
        assert np.corrcoef(surface, truth.surface_effects[(subject, condition)])[0, 1] >= 0.95


def test_sidecars(dataset):
    _, root, out = dataset
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "bids_encoder"
    assert description["GeneratedBy"][0]["Version"] == __version__
    links = {name: Path(url.removeprefix("file://")) for name, url in description["DatasetLinks"].items()}
    assert links == {"raw": (root / "bids").resolve(), "fmriprep": (root / "bids/derivatives/fmriprep").resolve()}
    sidecars = sorted(out.glob("sub-*/func/*_statmap.json"))
    assert len(sidecars) == 4 * (3 * 5 + 3 + 2)  # 2 subjects × 2 spaces: 3 t and 1 F contrast, R², cvR²
    for path in sidecars:
        sidecar = json.loads(path.read_text())
        cv = "_stat-cvrsquared_" in path.name
        inference = {"Contrast", "DegreesOfFreedom", "NoiseModel", "NoiseModelDescription", "SignalScaling", "RunModel"}
        if "contrast-effectsOfInterest" in path.name:
            inference |= {"NumeratorDegreesOfFreedom"}
        elif "contrast-" not in path.name:
            inference = set()
        assert set(sidecar) == SIDECAR_KEYS | ({"CrossValidation"} if cv else set()) | inference, path.name
        if inference:
            assert sidecar["NoiseModel"] == "AR(1)" and sidecar["DegreesOfFreedom"] == 240 - (3 + 18 + 2)
        if cv:
            assert sidecar["CrossValidation"]["Scheme"] == "loro"
            assert [f["HeldOut"] for f in sidecar["CrossValidation"]["Folds"]] == ["run 1 held out", "run 2 held out"]
            assert [f["HeldOutVolumes"] for f in sidecar["CrossValidation"]["Folds"]] == [120, 120]
        assert sidecar["SoftwareVersion"] == __version__
        assert sidecar["Runs"] == [1, 2] and sidecar["RepetitionTime"] == 2.0
        assert sidecar["Model"]["Class"] == "LinearModelWithBaseline" and sidecar["Model"]["Name"] == "glm"
        assert sidecar["Confounds"]["Strategy"] == ["motion", "high_pass"]
        assert sidecar["Confounds"]["NumberOfRegressors"] == 2 * (6 + 3)
        assert sidecar["HRF"]["Fitted"] is False
        assert sidecar["Fitter"]["WeightFitter"]["Alpha"] == 0.0
        n_sources = 8  # per run: BOLD + mask (volume) or the 2 hemispheres (GIFTI), events, confounds
        assert len(sidecar["Sources"]) == n_sources
        for uri in sidecar["Sources"]:
            scheme, name, relative = uri.split(":", 2)
            assert scheme == "bids" and (links[name] / relative).is_file(), uri
        stat = path.name.split("_stat-")[1].split("_")[0]
        assert sidecar["Model"]["Parameter"] == stat
        if stat == "effect":
            assert sidecar["Model"]["Contrast"] in CONDITIONS
    for space in (VOLUME, SURFACE):
        path = out / f"sub-01/func/sub-01_task-localizer_{space}_model-glm_stat-rsquared_statmap.json"
        sidecar = json.loads(path.read_text())
        if space == VOLUME:
            r2 = nib.load(str(path).replace(".json", ".nii.gz")).get_fdata()
        else:
            r2 = _surface_values(out, "01", "stat-rsquared")
        assert sidecar["MedianRSquared"] == pytest.approx(float(np.nanmedian(r2)), rel=1e-5)
        assert 0.02 < sidecar["MedianRSquared"] < 1.0  # most voxels lie outside the effect blobs


def _mean_bold(root, subject, mask):
    stem = root / f"bids/derivatives/fmriprep/sub-{subject}/func/sub-{subject}_task-localizer"
    return np.mean([nib.load(f"{stem}_run-{run}_{VOLUME}_desc-preproc_bold.nii.gz").get_fdata()[mask].mean(axis=1)
                    for run in (1, 2)], axis=0)


def _bold(root, subject):
    stem = root / f"bids/derivatives/fmriprep/sub-{subject}/func/sub-{subject}_task-localizer"
    mask = nib.load(f"{stem}_run-1_{VOLUME}_desc-brain_mask.nii.gz").get_fdata() > 0
    runs = [nib.load(f"{stem}_run-{run}_{VOLUME}_desc-preproc_bold.nii.gz").get_fdata()[mask].T for run in (1, 2)]
    return mask, runs


def test_cvrsquared_is_leave_one_run_out_least_squares(dataset):
    """The written cvR² equals an independent numpy computation from the BOLD and the design TSV: fit on one run
    (regressors, confounds, intercept), predict the other, project the held-out run's confounds and intercept out
    of data and prediction, 1 - ΣSSE/ΣSST over both folds."""
    import pandas as pd

    _, root, out = dataset
    mask, runs = _bold(root, "01")
    design = pd.read_csv(out / f"sub-01/func/sub-01_task-localizer_{VOLUME}_model-glm_design.tsv", sep="\t")
    regressors = design[list(CONDITIONS)].to_numpy()
    sse, sst = 0.0, 0.0
    for held in (1, 2):
        train, test = design["run"] != held, design["run"] == held
        confounds = design.filter(like=f"_run{3 - held}").to_numpy()[train]
        x = np.hstack([regressors[train], confounds, np.ones((train.sum(), 1))])
        beta = np.linalg.lstsq(x, runs[2 - held], rcond=None)[0][: len(CONDITIONS)]
        nuisance = np.hstack([design.filter(like=f"_run{held}").to_numpy()[test], np.ones((test.sum(), 1))])
        project = np.eye(test.sum()) - nuisance @ np.linalg.pinv(nuisance)
        y = project @ runs[held - 1]
        sse = sse + ((y - project @ (regressors[test] @ beta)) ** 2).sum(0)
        sst = sst + (y**2).sum(0)
    expected = 1 - sse / sst
    written = nib.load(out / f"sub-01/func/sub-01_task-localizer_{VOLUME}_model-glm_stat-cvrsquared_statmap.nii.gz")
    values = written.get_fdata()[mask]
    np.testing.assert_allclose(values, expected, atol=2e-4)
    r2 = nib.load(out / f"sub-01/func/sub-01_task-localizer_{VOLUME}_model-glm_stat-rsquared_statmap.nii.gz")
    assert (values < 0).any() and np.median(values) < np.median(r2.get_fdata()[mask])  # honest: not clipped


def test_design_tsv(dataset):
    _, _, out = dataset
    import pandas as pd

    design = pd.read_csv(out / f"sub-01/func/sub-01_task-localizer_{VOLUME}_model-glm_design.tsv", sep="\t")
    assert list(design.columns[:6]) == ["run", "volume", "onset", *CONDITIONS]
    assert len(design) == 240 and list(design["run"].unique()) == [1, 2]
    assert design.shape[1] == 6 + 18
    sidecar = json.loads((out / f"sub-01/func/sub-01_task-localizer_{VOLUME}_model-glm_design.json").read_text())
    assert sidecar["ModelRegressors"] == list(CONDITIONS)
    assert sidecar["ConfoundRegressors"] + sidecar["CensoredVolumeRegressors"] == list(design.columns[6:])
    assert sidecar["ConfoundRegressors"][0].endswith("_run1") and sidecar["ConfoundRegressors"][-1].endswith("_run2")
    assert sidecar["onset"]["Units"] == "s" and sidecar["RepetitionTime"] == 2.0
    assert sidecar["SoftwareVersion"] == __version__
    assert any(source.endswith("_desc-confounds_timeseries.tsv") for source in sidecar["Sources"])


def test_pybids_queries_outputs(dataset):
    _, _, out = dataset
    layout = output_layout(out)
    effects = layout.get(model="glm", stat="effect", space="MNI152NLin2009cAsym", extension=".nii.gz")
    assert len(effects) == 6
    assert {f.entities["contrast"] for f in effects} == set(CONDITIONS)
    assert len(layout.get(model="glm", stat="rsquared", hemi="L", extension=".func.gii")) == 2
    assert len(layout.get(subject="02", stat="effect", contrast="faces", suffix="statmap", extension=".json")) == 2


def test_rerun_skips_finished_subjects(dataset):
    _, root, out = dataset
    path = out / f"sub-01/func/sub-01_task-localizer_{VOLUME}_model-glm_contrast-faces_stat-effect_statmap.nii.gz"
    before = path.stat().st_mtime_ns
    args = [str(root / "bids"), str(out), "participant", "--participant-label", "01", "--work-dir", str(root / "work"),
            "--confounds", "motion,high_pass", "--confounds-param", "motion=basic"]
    assert main(args) == 0
    assert path.stat().st_mtime_ns == before
    assert main([*args, "--overwrite"]) == 0
    assert path.stat().st_mtime_ns > before


@pytest.mark.parametrize("arguments, code, message", [
    (["group2"], 17, "Unknown analysis level"),
    (["participant", "--model", "lasso"], 64, "--model"),
    (["participant", "--participant-label", "07"], 18, "sub-07 not found"),
    (["participant", "--participant-label", "../x"], 64, "Invalid participant label"),
    (["participant", "--task", "nback"], 18, "No preprocessed BOLD"),
    (["participant", "--space", "MNI305"], 18, "space-MNI305"),
    (["participant", "--confounds", "motion,aroma"], 64, "Unknown confound strategy"),
    (["participant", "--memory-limit", "lots"], 64, "--memory-limit"),
    (["participant", "--no-such-option"], 64, "No such option"),
    (["participant", "--hrf", "auto", "--cv", "none"], 64, "--hrf auto chooses by cross-validated R²"),
    (["participant", "--participant-label", "01", "--run", "1", "--cv", "loro", "--no-report"], 64,
     "--cv loro needs at least two runs"),
])
def test_exit_codes(dataset, tmp_path, capsys, arguments, code, message):
    _, root, _ = dataset
    out = tmp_path / "out"
    assert main([str(root / "bids"), str(out), *arguments, "--work-dir", str(tmp_path / "work")]) == code
    error = capsys.readouterr().err.strip().splitlines()
    assert message in error[-1] and error[-1].startswith("bids_encoder: error:")
    assert not out.exists() or not any(p.is_file() and p.name != "dataset_description.json" for p in out.rglob("*"))


def test_missing_and_invalid_datasets(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), str(tmp_path / "out"), "participant"]) == 66
    (tmp_path / "notbids").mkdir()
    assert main([str(tmp_path / "notbids"), str(tmp_path / "out"), "participant"]) == 16
    assert main([str(tmp_path / "notbids"), str(tmp_path / "notbids"), "participant"]) == 64
    assert not (tmp_path / "out").exists()


def test_module_entry_point_version_and_help():
    done = subprocess.run([sys.executable, "-m", "bids_encoder", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"bids_encoder {__version__}"
    done = subprocess.run([sys.executable, "-m", "bids_encoder", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for option in ("--participant-label", "--space", "--model", "--hrf", "--confounds", "--memory-limit", "--config"):
        assert option in done.stdout


def test_shared_hrf_and_split_half_through_the_cli(dataset, tmp_path):
    """--hrf shared on one run: one delay near the canonical 6 s (the data were made with it), its estimate in the
    sidecars, split-half cvR² (the default with one run) with its folds."""
    _, root, _ = dataset
    out = tmp_path / "out"
    assert main([str(root / "bids"), str(out), "participant", "--participant-label", "01", "--run", "1", "--hrf",
                 "shared", "--confounds", "high_pass", "--no-report", "--work-dir", str(root / "work")]) == 0
    prefix = out / f"sub-01/func/sub-01_task-localizer_{VOLUME}_model-glm"
    sidecar = json.loads(Path(f"{prefix}_stat-cvrsquared_statmap.json").read_text())
    shared = sidecar["HRF"]["Shared"]
    assert sidecar["HRF"]["Choice"] == "shared" and shared["Estimated"] and shared["VoxelsUsed"] >= 50
    assert abs(shared["Delay"] - 6.0) < 0.5 and shared["MeanUnexplainedFraction"] <= shared[
        "MeanUnexplainedFractionCanonical"]
    assert sidecar["CrossValidation"]["Scheme"] == "split-half"
    assert [f["HeldOutVolumes"] for f in sidecar["CrossValidation"]["Folds"]] == [60, 60]
    cvr2 = nib.load(f"{prefix}_stat-cvrsquared_statmap.nii.gz").get_fdata()
    assert np.nanmedian(cvr2) == pytest.approx(sidecar["CrossValidation"]["MedianCVRSquared"], abs=1e-6)


def test_config_filters_and_fitted_hrf(dataset, tmp_path):
    """--config (YAML) sets options, the command line wins, --bids-filter-file keeps run 1, --hrf fit adds maps."""
    _, root, _ = dataset
    (tmp_path / "filters.json").write_text(json.dumps({"bold": {"run": 1}}))
    # high_pass: the data have a slow drift, which a per-voxel HRF would otherwise absorb (delays late by ~0.6 s)
    (tmp_path / "config.yml").write_text("hrf: fit\nconfounds: high_pass\nmodel: lasso\nmax-iterations: 8\n")
    out = tmp_path / "out"
    code = main([str(root / "bids"), str(out), "participant", "--config", str(tmp_path / "config.yml"),
                 "--model", "glm", "--participant-label", "01", "--bids-filter-file", str(tmp_path / "filters.json"),
                 "--work-dir", str(root / "work")])
    assert code == 0
    func = out / "sub-01" / "func"
    names = sorted(p.name for p in func.iterdir())
    prefix = f"sub-01_task-localizer_{VOLUME}_model-glm"
    assert f"{prefix}_stat-hrfDelay_statmap.nii.gz" in names and f"{prefix}_stat-hrfDispersion_statmap.json" in names
    sidecar = json.loads((func / f"{prefix}_stat-hrfDelay_statmap.json").read_text())
    assert sidecar["Runs"] == [1] and sidecar["Units"] == "s"
    assert sidecar["Model"]["Class"] == "LinearModelWithBaselineHRF" and sidecar["HRF"]["Fitted"] is True
    assert sidecar["Fitter"]["ParameterFitter"]["MaxIterations"] == 8
    assert 1 <= sidecar["Fitter"]["ParameterFitter"]["Iterations"] <= 8
    assert sidecar["Confounds"]["Strategy"] == ["high_pass"] and sidecar["Confounds"]["NumberOfRegressors"] == 3
    delay = nib.load(func / f"{prefix}_stat-hrfDelay_statmap.nii.gz").get_fdata()
    finite = delay[np.isfinite(delay)]
    assert finite.size > 0 and np.all((finite >= 3.0) & (finite <= 7.0))
    assert abs(np.median(finite) - 6.0) < 0.5  # the data were made with the canonical HRF
    section = json.loads((out / "sub-01/figures" / f"{prefix}_report.json").read_text())
    assert {"curve", "hrf", "timeseries", "rsquared", "design"} <= set(section["figures"])  # iterative-fit sections
    assert all((out / item["file"]).is_file() for item in section["figures"]["parameters"])
    assert "confounds" in section["figures"]
