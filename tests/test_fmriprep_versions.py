"""Outputs of older fMRIPrep releases: ``desc-confounds_regressors.tsv`` (< 20.2), the CamelCase confounds columns
of 1.0–1.1, the ``space-X_hemi-L`` entity order of GIFTI BOLD; and sparse acquisitions (``VolumeTiming``), which are
refused with one line."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from bids_encoder.bids.confounds import load_run_confounds, modern_column
from bids_encoder.bids.layout import find_runs, load_layout
from bids_encoder.cli import main
from bids_encoder.datasets.example_dataset import make_example_dataset

pytestmark = pytest.mark.xdist_group(name="fmriprep_versions")

DERIV = "derivatives/fmriprep/sub-01/func"
STEM = "sub-01_task-localizer_run-{}"
FAST = ["--confounds", "motion,high_pass,wm_csf", "--confounds-param", "motion=basic", "--no-report"]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("versions") / "bids"
    make_example_dataset(root, n_subjects=2, n_runs=2, n_volumes=40, shape=(5, 6, 5), noise=0.1, seed=5,
                         surface_vertices=30)
    return root


def _copy(template, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(template, bids)
    return bids


def _to_regressors(bids):
    """fMRIPrep < 20.2 named the confounds file desc-confounds_regressors.tsv."""
    for path in list((bids / DERIV).glob("*_desc-confounds_timeseries.*")):
        path.rename(path.with_name(path.name.replace("_timeseries", "_regressors")))


def test_confounds_regressors_name_is_found_and_fitted(template, tmp_path, capsys):
    bids = _copy(template, tmp_path)
    modern, _ = load_run_confounds(bids / DERIV / f"{STEM.format(1)}_desc-confounds_timeseries.tsv",
                                   ("motion", "high_pass", "wm_csf"), 40, motion="basic")
    _to_regressors(bids)
    runs = find_runs(load_layout(bids), "01", task="localizer")
    assert [run.confounds.name for run in runs] == [f"{STEM.format(r)}_desc-confounds_regressors.tsv" for r in (1, 2)]
    old, _ = load_run_confounds(runs[0].confounds, ("motion", "high_pass", "wm_csf"), 40, motion="basic")
    pd.testing.assert_frame_equal(old, modern)
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", "--participant-label", "01", "--work-dir",
                 str(tmp_path / "work"), *FAST]) == 0
    design = json.loads(next(out.glob("sub-01/func/*_design.json")).read_text())
    assert "trans_x_run1" in design["ConfoundRegressors"] and "csf_run2" in design["ConfoundRegressors"]
    assert any(source.endswith("_desc-confounds_regressors.tsv") for source in design["Sources"])


def test_camel_case_confounds_of_fmriprep_1_1(template, tmp_path, caplog):
    """fMRIPrep 1.0–1.1 wrote X, RotX, WhiteMatter, aCompCor00…; nilearn refuses them, so they are renamed."""
    bids = _copy(template, tmp_path)
    path = bids / DERIV / f"{STEM.format(1)}_desc-confounds_timeseries.tsv"
    modern, _ = load_run_confounds(path, ("motion", "high_pass", "wm_csf"), 40, motion="basic")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    old_names = {"trans_x": "X", "trans_y": "Y", "trans_z": "Z", "rot_x": "RotX", "rot_y": "RotY", "rot_z": "RotZ",
                 "csf": "CSF", "white_matter": "WhiteMatter", "cosine00": "Cosine00", "cosine01": "Cosine01",
                 "cosine02": "Cosine02"}
    frame = frame[list(old_names)].rename(columns=old_names)
    old_path = tmp_path / f"{STEM.format(1)}_desc-confounds_regressors.tsv"
    frame.to_csv(old_path, sep="\t", index=False)
    with caplog.at_level("WARNING", logger="bids_encoder.bids.confounds"):
        old, _ = load_run_confounds(old_path, ("motion", "high_pass", "wm_csf"), 40, motion="basic")
    pd.testing.assert_frame_equal(old[sorted(old.columns)], modern[sorted(modern.columns)])
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [(
        f"{old_path.name} has the column names of fMRIPrep < 1.2 (X, Y, Z, …): read as trans_x, trans_y, trans_z, …")]
    assert [modern_column(n) for n in ("aCompCor03", "tCompCor00", "NonSteadyStateOutlier01", "stdDVARS",
                                       "non-stdDVARS", "FramewiseDisplacement", "csf")] == [
        "a_comp_cor_03", "t_comp_cor_00", "non_steady_state_outlier01", "std_dvars", "dvars",
        "framewise_displacement", "csf"]


def test_both_gifti_entity_orders(template):
    """sub-01 has hemi-L_space-fsaverage5 (fMRIPrep today), sub-02 space-fsaverage5_hemi-L (older releases)."""
    layout = load_layout(template)
    for subject, order in (("01", "{hemi}_space-fsaverage5"), ("02", "space-fsaverage5_{hemi}")):
        runs = find_runs(layout, subject, space="fsaverage5", kind="gifti")
        assert [run.run for run in runs] == [1, 2]
        for run in runs:
            assert {hemi: path.name for hemi, path in run.surfaces.items()} == {
                hemi: f"sub-{subject}_task-localizer_run-{run.run}_{order.format(hemi='hemi-' + hemi)}_bold.func.gii"
                for hemi in "LR"}


def test_sparse_acquisition_is_refused_in_one_line(template, tmp_path, capsys):
    bids = _copy(template, tmp_path)
    sidecar = bids / "task-localizer_bold.json"
    content = json.loads(sidecar.read_text())
    content.pop("RepetitionTime")
    content.update({"VolumeTiming": list(np.arange(40) * 2.0 + 0.5), "AcquisitionDuration": 1.0})
    sidecar.write_text(json.dumps(content))
    for path in (bids / DERIV).glob("*_bold.json"):
        path.write_text(json.dumps({"TaskName": "localizer"}))
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", "--participant-label", "01", "--work-dir",
                 str(tmp_path / "work"), *FAST]) == 65
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "bids_encoder: error: sub-01_task-localizer_run-1_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz "
        "is a sparse acquisition (VolumeTiming in its sidecar, no regular RepetitionTime): not supported; fit it "
        "with a tool that models the volume times")
    assert not out.exists()
