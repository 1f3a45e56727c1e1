"""The Szinte et al. (2024) V1 data laid out as a BIDS dataset (BOLD as a small NIfTI, apertures in stimuli/),
fitted with ``bids_encoder … participant --model prf2d``: the x/y maps must agree with the direct core fit.

Read from $BIDS_ENCODER_SZINTE_DIR; skipped only when the variable is unset.
"""

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoder.cli import main
from bids_encoder.datasets.szinte import load_szinte2024
from bids_encoder.models import GaussianPRF2DWithHRF, SPMHRFModel
from bids_encoder.optimize.recipes import fit_prf2d

TR = 1.317025
FOLDER = os.environ.get("BIDS_ENCODER_SZINTE_DIR")
pytestmark = pytest.mark.skipif(not FOLDER, reason="BIDS_ENCODER_SZINTE_DIR is not set")
SHAPE = (5, 11, 43)  # 2,365 voxels


def write_json(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


@pytest.fixture(scope="module")
def szinte_bids(tmp_path_factory):
    folder = Path(FOLDER)
    assert folder.is_dir(), f"BIDS_ENCODER_SZINTE_DIR={FOLDER} is not a folder"
    szinte = load_szinte2024(folder)
    frames, grid, data = szinte.frames, szinte.grid, szinte.data
    root = tmp_path_factory.mktemp("szinte") / "bids"
    write_json(root / "dataset_description.json", {"Name": "Szinte 2024 V1", "BIDSVersion": "1.9.0"})
    stimuli = root / "stimuli"
    stimuli.mkdir(parents=True)
    np.savez(stimuli / "bars.npz", frames)
    xs, ys = grid["x"].to_numpy().reshape(80, 45), grid["y"].to_numpy().reshape(80, 45)
    write_json(stimuli / "bars.json", {"VisualAngleX": [xs[0, 0], xs[-1, 0]], "VisualAngleY": [ys[0, 0], ys[0, -1]]})
    func = root / "sub-01" / "func"
    func.mkdir(parents=True)
    pd.DataFrame({"onset": [0.0], "duration": [150 * TR], "trial_type": ["bars"], "stim_file": ["bars.npz"]}).to_csv(
        func / "sub-01_task-prf_events.tsv", sep="\t", index=False)
    fmriprep = root / "derivatives" / "fmriprep"
    write_json(fmriprep / "dataset_description.json", {"Name": "fMRIPrep", "BIDSVersion": "1.9.0",
                                                       "DatasetType": "derivative",
                                                       "GeneratedBy": [{"Name": "fMRIPrep", "Version": "23.2.1"}]})
    deriv = fmriprep / "sub-01" / "func"
    deriv.mkdir(parents=True)
    bold = (data.to_numpy().T.reshape(*SHAPE, 150) + 1000.0).astype(np.float32)
    image = nib.Nifti1Image(bold, np.diag([2.0, 2.0, 2.0, 1.0]))
    image.header.set_xyzt_units("mm", "sec")
    image.header["pixdim"][4] = TR
    stem = "sub-01_task-prf_space-T1w"
    image.to_filename(deriv / f"{stem}_desc-preproc_bold.nii.gz")
    # slice-time corrected to the middle of the TR: volume k is the brain at k·TR + TR/2, frame k is on
    # during [k·TR, (k+1)·TR), so each volume sees exactly one frame
    write_json(deriv / f"{stem}_desc-preproc_bold.json", {"RepetitionTime": TR, "StartTime": TR / 2})
    nib.Nifti1Image(np.ones(SHAPE, np.uint8), image.affine).to_filename(deriv / f"{stem}_desc-brain_mask.nii.gz")
    return root, frames, grid, data


def test_prf_maps_agree_with_direct_core_fit(szinte_bids, tmp_path):
    root, frames, grid, data = szinte_bids
    out = tmp_path / "out"
    code = main([str(root), str(out), "participant", "--model", "prf2d", "--space", "T1w", "--confounds", "none", "--cv", "none",
                 "--work-dir", str(tmp_path / "work")])
    assert code == 0
    prefix = out / "sub-01" / "func" / "sub-01_task-prf_space-T1w_model-prf2d"
    maps = {stat: nib.load(f"{prefix}_stat-{stat}_statmap.nii.gz").get_fdata().reshape(-1)
            for stat in ("x", "y", "sd", "rsquared", "polarAngle", "eccentricity")}
    direct = fit_prf2d(GaussianPRF2DWithHRF(grid, hrf_model=SPMHRFModel(TR)), data + 1000.0,
                       pd.DataFrame(frames.reshape(150, -1) / frames.max()),
                       optimizer="lm", progressbar=False)
    fitted = direct.r2.notna().to_numpy()
    assert np.array_equal(np.isfinite(maps["x"]), fitted)  # the 57 all-zero voxels are NaN in both
    good = fitted & (direct.r2.to_numpy() > 0.1)
    for stat in ("x", "y"):
        reference = direct.parameters[stat].to_numpy()
        assert np.corrcoef(maps[stat][good], reference[good])[0, 1] > 0.99
        assert np.median(np.abs(maps[stat][fitted] - reference[fitted])) < 0.05
    assert np.nanmedian(maps["rsquared"]) == pytest.approx(float(direct.r2.median()), abs=0.01)
    np.testing.assert_allclose(maps["eccentricity"][fitted], np.hypot(maps["x"], maps["y"])[fitted], rtol=1e-5)
    sidecar = json.loads(Path(f"{prefix}_stat-x_statmap.json").read_text())
    assert sidecar["Units"] == "degrees of visual angle"
    assert sidecar["Model"]["Class"] == "GaussianPRF2DWithHRF"
    assert sidecar["Fitter"]["ParameterFitter"]["Solver"] == "Levenberg-Marquardt"
    assert sidecar["Sources"] == ["bids:fmriprep:sub-01/func/sub-01_task-prf_space-T1w_desc-preproc_bold.nii.gz",
                                  "bids:fmriprep:sub-01/func/sub-01_task-prf_space-T1w_desc-brain_mask.nii.gz",
                                  "bids:raw:sub-01/func/sub-01_task-prf_events.tsv", "bids:raw:stimuli/bars.npz"]
    section = json.loads((out / "sub-01/figures/sub-01_task-prf_space-T1w_model-prf2d_report.json").read_text())
    captions = [item["caption"] for item in section["figures"]["parameters"]]
    assert any(c.startswith("polarAngle:") for c in captions) and any(c.startswith("eccentricity:") for c in captions)
    assert {"curve", "timeseries", "rsquared"} <= set(section["figures"]) and (out / "sub-01.html").is_file()


def test_gate_mask_and_standard_error_maps(szinte_bids, tmp_path):
    """--min-grid-rsquared: the desc-iterated mask marks exactly the voxels whose grid R² reached it (the recipe's
    own bookkeeping), the sidecars give the threshold and counts, and every fitted parameter has a desc-se map —
    NaN where the voxel was not iterated — equal to the recipe's standard errors; 0 iterates every voxel."""
    from bids_encoder.optimize.recipes import MIN_GRID_R2

    root, frames, grid, data = szinte_bids
    paradigm = pd.DataFrame(frames.reshape(150, -1) / frames.max())
    direct = fit_prf2d(GaussianPRF2DWithHRF(grid, hrf_model=SPMHRFModel(TR)), data + 1000.0, paradigm,
                       progressbar=False, min_grid_r2=0.2)
    counts = {}
    for threshold in ("0.2", "0"):
        out = tmp_path / f"out{threshold}"
        code = main([str(root), str(out), "participant", "--model", "prf2d", "--space", "T1w", "--confounds", "none",
                     "--cv", "none", "--no-report", "--min-grid-rsquared", threshold,
                     "--work-dir", str(tmp_path / "work")])
        assert code == 0
        prefix = out / "sub-01" / "func" / "sub-01_task-prf_space-T1w_model-prf2d"
        mask = nib.load(f"{prefix}_desc-iterated_mask.nii.gz").get_fdata().reshape(-1)
        gate = json.loads(Path(f"{prefix}_stat-x_statmap.json").read_text())["Fitter"]["ParameterFitter"]["Gate"]
        assert gate["MinGridRSquared"] == float(threshold) and gate["IteratedVoxels"] == int(np.nansum(mask))
        counts[threshold] = gate["IteratedVoxels"]
        if threshold == "0.2":
            fitted = direct.r2.notna().to_numpy()
            assert np.array_equal(mask[fitted] == 1, direct.iterated.to_numpy()[fitted])
            assert np.isnan(mask[~fitted]).all()
            se = nib.load(f"{prefix}_stat-x_desc-se_statmap.nii.gz").get_fdata().reshape(-1)
            assert np.isnan(se[mask == 0]).all()
            both = np.isfinite(se) & np.isfinite(direct.standard_errors["x"].to_numpy())
            assert both.sum() > 300
            relative = np.abs(se[both] / direct.standard_errors["x"].to_numpy()[both] - 1)
            assert np.median(relative) < 0.01 and np.quantile(relative, 0.99) < 0.05  # float32 paths differ a little
            sidecar = json.loads(Path(f"{prefix}_stat-x_desc-se_statmap.json").read_text())
            assert sidecar["Units"] == "degrees of visual angle" and "Gauss-Newton" in sidecar["StandardError"]["Method"]
    assert counts["0"] == int(direct.r2.notna().sum()) > counts["0.2"]
    assert MIN_GRID_R2 == 0.1  # the CLI's documented default (--help, README)


def test_group_weights_parameters_by_their_standard_errors(szinte_bids, tmp_path):
    """--weight-by-se: two participants (the Szinte subject and a copy with its noise doubled by adding it
    again) give the inverse-variance weighted mean of x and its standard error sqrt(1 / Σ 1/se²)."""
    import shutil

    root, *_ = szinte_bids
    bids = tmp_path / "bids"
    shutil.copytree(root, bids)
    shutil.copytree(bids / "sub-01", bids / "sub-02")
    func = bids / "derivatives" / "fmriprep" / "sub-01" / "func"
    target = func.parent.parent / "sub-02" / "func"
    target.mkdir(parents=True)
    for path in func.iterdir():
        shutil.copy(path, target / path.name.replace("sub-01", "sub-02"))
    for path in (bids / "sub-02" / "func").iterdir():
        path.rename(path.with_name(path.name.replace("sub-01", "sub-02")))
    space = "MNI152NLin2009cAsym"  # the group level averages template spaces only
    for path in list((bids / "derivatives" / "fmriprep").rglob("*space-T1w*")):
        path.rename(path.with_name(path.name.replace("space-T1w", f"space-{space}")))
    bold = nib.load(target / f"sub-02_task-prf_space-{space}_desc-preproc_bold.nii.gz")
    values = bold.get_fdata()
    noise = np.random.default_rng(0).normal(0, values.std(axis=-1, keepdims=True), values.shape)
    nib.Nifti1Image((values + noise).astype(np.float32), bold.affine, bold.header).to_filename(
        target / f"sub-02_task-prf_space-{space}_desc-preproc_bold.nii.gz")
    out = tmp_path / "out"
    common = ["--space", space, "--work-dir", str(tmp_path / "work"), "--no-report"]
    assert main([str(bids), str(out), "participant", "--model", "prf2d", "--confounds", "none", "--cv", "none",
                 *common]) == 0
    assert main([str(bids), str(out), "group", "--weight-by-se", *common]) == 0

    def load(pattern):
        return nib.load(next(out.glob(pattern))).get_fdata().reshape(-1)

    x = [load(f"sub-0{s}/func/*_stat-x_statmap.nii.gz") for s in (1, 2)]
    se = [load(f"sub-0{s}/func/*_stat-x_desc-se_statmap.nii.gz") for s in (1, 2)]
    weighted = load("group/*_stat-x_desc-weightedMean_statmap.nii.gz")
    error = load("group/*_stat-x_desc-weightedMeanSe_statmap.nii.gz")
    both = np.isfinite(se[0]) & np.isfinite(se[1])
    assert both.sum() > 100
    w = [1 / s[both] ** 2 for s in se]
    np.testing.assert_allclose(weighted[both], (w[0] * x[0][both] + w[1] * x[1][both]) / (w[0] + w[1]), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(error[both], 1 / np.sqrt(w[0] + w[1]), rtol=1e-4)
    assert np.median(se[1][both]) > 1.2 * np.median(se[0][both])  # the noisier copy weighs less
