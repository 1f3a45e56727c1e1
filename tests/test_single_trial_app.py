"""``--model singletrial`` through the command line: a real layout with repeated images (ds000117, its events as
published), GIFTI and CIFTI outputs, the report, and the usage and data errors."""

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.glm.first_level import compute_regressor

from bids_encoder.cli import main
from bids_encoder.datasets.example_dataset import make_example_dataset
from bids_encoder.datasets.fmriprep_like import SPACE, build_fmriprep, copy_raw
from bids_encoder.datasets.tuning_example import make_tuning_dataset

ROOT = Path(__file__).resolve().parent.parent
REAL = Path(os.environ.get("BIDS_ENCODER_REAL_BIDS_DIR", ROOT.parent / "shared" / "real-bids"))
FAST = ["--confounds", "motion,high_pass", "--confounds-param", "motion=basic"]
FIT = f"sub-01_ses-mri_task-facerecognition_space-{SPACE}_model-singletrial"


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """ds000117 sub-01, runs 1–3 (each face or scrambled image shown twice in a run, immediately or after a delay),
    fMRIPrep-like outputs with planted responses 1, 2, 3 × the SPM response for FAMOUS, SCRAMBLED, UNFAMILIAR."""
    if not REAL.is_dir():
        pytest.skip(f"no real BIDS layouts at {REAL} (set BIDS_ENCODER_REAL_BIDS_DIR)")
    root = tmp_path_factory.mktemp("faces")
    bids = root / "ds000117"
    copy_raw(REAL / "ds000117", bids, "01")
    planted = build_fmriprep(bids, "01", "facerecognition", unpad_runs=True, condition_column="stim_type")
    out = root / "out"
    code = main([str(bids), str(out), "participant", "--participant-label", "01", "--task", "facerecognition",
                 "--run", "1", "2", "3", "--work-dir", str(root / "work"), "--model", "singletrial",
                 "--condition-column", "stim_type", "--repeat-column", "stim_file", *FAST])
    return bids, out, code, planted


def test_real_layout_with_repeated_images(faces):
    """One 4-D volume per event with a stim_type (rest rows excluded), in the events' order; the trials TSV holds
    each volume's run, onset, stim_type and stim_file as published; the betas recover the planted responses (peak
    of one trial's SPM response × 1, 2, 3, within 5 %); the images repeat within runs only: the delayed repeats
    cross-validate, a reliability map is written; the sidecar records every choice; the report shows the median
    reliability of every stage."""
    bids, out, code, planted = faces
    assert code == 0
    func = out / "sub-01" / "ses-mri" / "func"
    events = []
    for run in (1, 2, 3):
        frame = pd.read_csv(next(bids.glob(f"sub-01/ses-mri/func/*run-0{run}_events.tsv")), sep="\t",
                            na_values=["n/a"])
        events.append(frame[frame["stim_type"].notna()].assign(run=run))
    events = pd.concat(events, ignore_index=True)
    betas = nib.load(func / f"{FIT}_stat-beta_statmap.nii.gz")
    assert betas.shape[3] == len(events)
    table = pd.read_csv(func / f"{FIT}_stat-beta_trials.tsv", sep="\t")
    assert list(table.columns[:3]) == ["volume", "run", "onset"]
    assert {"stim_type", "stim_file", "duration", "estimated"} <= set(table.columns)
    assert table["volume"].tolist() == list(range(len(events)))
    np.testing.assert_allclose(table["onset"], events["onset"])
    assert table["stim_file"].tolist() == events["stim_file"].tolist() and table["run"].tolist() == events["run"].tolist()
    assert table["estimated"].all()
    values = np.asarray(betas.dataobj)
    mask = np.isfinite(values[..., 0])
    median_duration = float(np.median(events["duration"]))
    fine = np.arange(0, 40, 0.05)
    peak = compute_regressor(np.array([[1.0], [median_duration], [1.0]]), "spm", fine, oversampling=5)[0].max()
    for effect, kind in enumerate(("FAMOUS", "SCRAMBLED", "UNFAMILIAR"), start=1):
        rows = (table["stim_type"] == kind).to_numpy()
        median = float(np.median(values[mask][:, rows]))
        assert median == pytest.approx(effect * peak, rel=0.05), (kind, median, effect * peak)
    sidecar = json.loads((func / f"{FIT}_stat-rsquared_statmap.json").read_text())
    choices = sidecar["SingleTrial"]
    assert choices["Repeats"]["AcrossRuns"] is False and choices["Repeats"]["RepeatedConditions"] > 50
    assert choices["RepeatColumn"] == "stim_file" and choices["Stages"] == ["canonical", "hrf", "denoise", "ridge"]
    assert choices["NoiseComponents"] == 0 and "noise pool" in choices["Denoise"]["Reason"]  # every voxel responds
    assert "partners" in choices["Ridge"]["Selection"]
    assert set(sidecar["HRF"]["Library"]) >= {"Entries", "CanonicalIndex"}
    beta_sidecar = json.loads((func / f"{FIT}_stat-beta_statmap.json").read_text())
    assert beta_sidecar["Units"] == "percent signal change" and beta_sidecar["SingleTrial"] == choices
    for stat in ("reliability", "reliabilityCanonical", "hrfIndex", "hrfTimeToPeak", "ridgeFraction", "cvrsquared",
                 "rsquared", "noisePool"):
        image = nib.load(func / f"{FIT}_stat-{stat}_statmap.nii.gz")
        assert image.shape == betas.shape[:3], stat
    fraction = np.asarray(nib.load(func / f"{FIT}_stat-ridgeFraction_statmap.nii.gz").dataobj)[mask]
    assert np.all((fraction > 0) & (fraction <= 1))
    html = (out / "sub-01.html").read_text()
    assert "Median reliability after each stage" in html and "ridge" in html
    assert not list(out.rglob(".*"))  # no temporaries left


def test_surfaces_and_cifti(tmp_path):
    """GIFTI (fsaverage5): one data array per trial in each hemisphere, named by its TSV row; CIFTI (fsLR): a
    dscalar with one map per trial over every grayordinate; the stages can be switched off (least squares with
    the canonical HRF: no ridge maps, fractions absent from the sidecar)."""
    make_example_dataset(tmp_path / "bids", n_subjects=1, n_runs=2, n_volumes=80, surface_vertices=120, seed=2)
    out = tmp_path / "out"
    assert main([str(tmp_path / "bids"), str(out), "participant", "--space", "fsaverage5", "--model", "singletrial",
                 "--work-dir", str(tmp_path / "work"), "--no-report", *FAST]) == 0
    func = out / "sub-01" / "func"
    table = pd.read_csv(next(func.glob("*_stat-beta_trials.tsv")), sep="\t")
    for hemi in ("L", "R"):
        image = nib.load(next(func.glob(f"*hemi-{hemi}_space-fsaverage5_model-singletrial_stat-beta_statmap.func.gii")))
        assert len(image.darrays) == len(table) and image.darrays[0].data.shape == (120,)
        assert image.darrays[3].meta["Name"] == "trial0003"
    tuning = tmp_path / "tuning"
    make_tuning_dataset(tuning / "bids", n_subjects=1, n_runs=2, n_volumes=100, surface_vertices=60, cifti=True)
    out = tmp_path / "out_cifti"
    assert main([str(tuning / "bids"), str(out), "participant", "--space", "fsLR", "--model", "singletrial",
                 "--single-trial-stages", "none", "--work-dir", str(tuning / "work"), "--no-report", *FAST]) == 0
    func = out / "sub-01" / "func"
    table = pd.read_csv(next(func.glob("*_stat-beta_trials.tsv")), sep="\t")
    image = nib.load(next(func.glob("*model-singletrial_stat-beta_statmap.dscalar.nii")))
    assert image.shape == (len(table), 120)
    assert list(image.header.get_axis(0).name[:2]) == ["trial0000", "trial0001"]
    assert not list(func.glob("*ridgeFraction*"))
    sidecar = json.loads(next(func.glob("*model-singletrial_stat-rsquared_statmap.json")).read_text())
    assert sidecar["SingleTrial"]["Stages"] == ["canonical"] and sidecar["SingleTrial"]["Ridge"] is None


@pytest.mark.parametrize("arguments, code, message", [
    (["--model", "singletrial", "--hrf", "fit"], 64, "--hrf fit does not apply"),
    (["--model", "singletrial,glm"], 64, "not compared with other models"),
    (["--repeat-column", "stim_file"], 64, "give --model singletrial"),
    (["--model", "singletrial", "--single-trial-stages", "hrf,smooth"], 64, "unknown stage(s) smooth"),
    (["--model", "singletrial", "--repeat-column", "image"], 65, "has no 'image' column (--repeat-column"),
    (["--model", "singletrial", "--single-trial-types", "tools"], 65, "--single-trial-types tools: no event"),
])
def test_usage_and_data_errors(tmp_path, capsys, arguments, code, message):
    make_example_dataset(tmp_path / "bids", n_subjects=1, n_runs=2, n_volumes=60, seed=3)
    out = tmp_path / "out"
    assert main([str(tmp_path / "bids"), str(out), "participant", "--work-dir", str(tmp_path / "work"),
                 "--no-report", *FAST, *arguments]) == code
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("bids_encoder: error:") and message in last, last
    assert not out.exists() or not list(out.rglob("*_statmap.*"))


def test_single_trial_types_make_the_other_events_nuisance(tmp_path):
    """--single-trial-types faces: only the faces events are trials (TSV), the houses and scenes events enter as
    nuisance regressors with their HRF derivatives (named in the sidecar's confounds)."""
    make_example_dataset(tmp_path / "bids", n_subjects=1, n_runs=2, n_volumes=80, seed=4)
    out = tmp_path / "out"
    assert main([str(tmp_path / "bids"), str(out), "participant", "--work-dir", str(tmp_path / "work"),
                 "--no-report", "--model", "singletrial", "--single-trial-types", "faces", *FAST]) == 0
    func = out / "sub-01" / "func"
    table = pd.read_csv(next(func.glob("*_stat-beta_trials.tsv")), sep="\t")
    assert set(table["trial_type"]) == {"faces"}
    sidecar = json.loads(next(func.glob("*model-singletrial_stat-beta_statmap.json")).read_text())
    assert {"nuisance_houses", "nuisance_scenes_ddelay"} <= set(sidecar["Confounds"]["NuisanceEvents"])


def test_group_level_leaves_single_trial_fits_out(tmp_path, capsys):
    """Two participants' singletrial fits: the group level says it does not aggregate single-trial betas (exit 18,
    one line) instead of failing on their 4-D maps."""
    make_example_dataset(tmp_path / "bids", n_subjects=2, n_runs=2, n_volumes=60, seed=5)
    out = tmp_path / "out"
    common = [str(tmp_path / "bids"), str(out)]
    assert main([*common, "participant", "--model", "singletrial", "--work-dir", str(tmp_path / "work"),
                 "--no-report", *FAST]) == 0
    capsys.readouterr()
    assert main([*common, "group", "--work-dir", str(tmp_path / "work"), "--no-report"]) == 18
    err = capsys.readouterr().err
    assert "left out" in err and err.strip().splitlines()[-1].startswith(
        "bids_encoder: error: Only --model singletrial outputs")
