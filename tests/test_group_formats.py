"""Group level on CIFTI and GIFTI participant outputs, with surface and grayordinate atlases.

The participant outputs are written here with the package's own MapWriter (as the participant level does), so
these tests run in seconds; the end-to-end path from BOLD is covered by test_group_e2e.
"""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from bids_encoder.bids.derivatives import map_paths, sidecar_path
from bids_encoder.bids.images import MapWriter
from bids_encoder.cli import main

SUBJECTS = ("01", "02", "03")


def _dataset(root, subjects=SUBJECTS, task="loc"):
    bids = root / "bids"
    bids.mkdir()
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    for subject in subjects:
        func = bids / f"sub-{subject}" / "func"
        func.mkdir(parents=True)
        (func / f"sub-{subject}_task-{task}_bold.nii.gz").write_bytes(b"")
    out = root / "out"
    out.mkdir()
    (out / "dataset_description.json").write_text(json.dumps({"Name": "o", "BIDSVersion": "1.9.0",
                                                              "DatasetType": "derivative"}))
    return bids, out


def _write_outputs(out, writer, entities, maps):
    """maps: {(contrast, stat): values}; the R² sidecar last, as the participant level does."""
    for (contrast, stat), values in sorted(maps.items(), key=lambda item: item[0][1] == "rsquared"):
        full = {**entities, "stat": stat, **({"contrast": contrast} if contrast else {})}
        path = map_paths(out, full, writer.kind)
        writer.write(values, path, name=stat)
        sidecar_path(path).write_text(json.dumps({
            "Description": f"{stat} map", "Units": "a.u.", "Runs": [1], "MedianRSquared": 0.2, "Device": "CPU",
            "Processing": {"VoxelsFitted": int(values.size), "VoxelsTotal": int(values.size),
                           "FractionConverged": 0.5, "Volumes": [100], "WallTime": {"load": 1.0, "fit": 2.0}}}))


def test_cifti_outputs_and_grayordinate_atlas(tmp_path, rng):
    bids, out = _dataset(tmp_path)
    models = (nib.cifti2.BrainModelAxis.from_surface(np.arange(60), 60, "CortexLeft")
              + nib.cifti2.BrainModelAxis.from_surface(np.arange(60), 60, "CortexRight"))
    writer = MapWriter("cifti", brain_models=models)
    effects = {}
    for subject in SUBJECTS:
        effects[subject] = rng.normal(1.0, 0.5, 120).astype(np.float32)
        _write_outputs(out, writer, {"subject": subject, "task": "loc", "space": "fsLR", "den": "91k",
                                     "model": "glm"},
                       {("a", "effect"): effects[subject], (None, "rsquared"): rng.uniform(0, 1, 120)})
    labels = np.repeat([1, 2, 3], 40).astype(np.float32)
    atlas = MapWriter("cifti", brain_models=models).to_image(labels, "labels")
    atlas.to_filename(tmp_path / "atlas-thirds_dseg.dscalar.nii")
    (tmp_path / "names.tsv").write_text("index\tname\n1\tfirst\n2\tsecond\n3\tthird\n")
    assert main([str(bids), str(out), "group", "--work-dir", str(tmp_path / "work"), "--atlas",
                 str(tmp_path / "atlas-thirds_dseg.dscalar.nii"), "--atlas-labels", str(tmp_path / "names.tsv")]) == 0
    stem = out / "group" / "task-loc_space-fsLR_den-91k_model-glm_contrast-a_stat"
    values = np.stack([effects[s] for s in SUBJECTS])
    mean = nib.load(f"{stem}-effect_desc-mean_statmap.dscalar.nii")
    assert mean.header.get_axis(1) == models
    np.testing.assert_allclose(mean.get_fdata()[0], values.mean(axis=0), rtol=1e-5)
    t = nib.load(f"{stem}-t_statmap.dscalar.nii").get_fdata()[0]
    np.testing.assert_allclose(t, scipy_stats.ttest_1samp(values, 0.0, axis=0).statistic, rtol=1e-4)
    group = pd.read_csv(out / "group/task-loc_space-fsLR_den-91k_atlas-thirds_model-glm_desc-group_rois.tsv",
                        sep="\t")
    assert list(group["name"]) == ["first", "second", "third"]
    regions = np.stack([values[:, labels == k].mean(axis=1) for k in (1, 2, 3)], axis=1)
    np.testing.assert_allclose(group["effect_a_mean"], regions.mean(axis=0), rtol=1e-5)
    summary = pd.read_csv(out / "group/participants_summary.tsv", sep="\t")
    assert list(summary["fraction_converged"]) == [0.5] * 3 and list(summary["wall_time_s"]) == [3.0] * 3


def test_gifti_outputs_with_label_gifti_atlas(tmp_path, rng):
    bids, out = _dataset(tmp_path)
    writer = MapWriter("gifti", hemisphere_sizes={"L": 30, "R": 25})
    for subject in SUBJECTS:
        _write_outputs(out, writer, {"subject": subject, "task": "loc", "space": "fsaverage5", "model": "prf2d"},
                       {(None, "polarAngle"): (rng.normal(180.0, 3.0, 55) + 180.0) % 360.0 - 180.0,
                        (None, "rsquared"): rng.uniform(0, 1, 55)})
    for hemi, size in (("L", 30), ("R", 25)):
        table = nib.gifti.GiftiLabelTable()
        for key, label in ((0, "unknown"), (1, "V1"), (2, "V2")):
            entry = nib.gifti.GiftiLabel(key)
            entry.label = label
            table.labels.append(entry)
        array = nib.gifti.GiftiDataArray(np.repeat([1, 2], [size // 2, size - size // 2]).astype(np.int32),
                                         intent="NIFTI_INTENT_LABEL", datatype="NIFTI_TYPE_INT32")
        nib.save(nib.GiftiImage(darrays=[array], labeltable=table), tmp_path / f"hemi-{hemi}_atlas-visual.label.gii")
    work = ["--work-dir", str(tmp_path / "work")]
    assert main([str(bids), str(out), "group", *work, "--atlas", str(tmp_path / "hemi-L_atlas-visual.label.gii")]) == 64
    assert main([str(bids), str(out), "group", *work, "--atlas", str(tmp_path / "hemi-{hemi}_atlas-visual.label.gii")]) == 0
    rows = pd.read_csv(out / "group/task-loc_space-fsaverage5_atlas-visual_model-prf2d_desc-participants_rois.tsv",
                       sep="\t")
    assert list(rows["name"].unique()) == ["V1", "V2"] and list(rows["n_voxels"][:2]) == [15 + 12, 15 + 13]
    assert np.all(np.abs(rows["polarAngle"]) > 170)  # circular region means, near ±180
    mean = np.concatenate([nib.load(out / f"group/task-loc_hemi-{h}_space-fsaverage5_model-prf2d_stat-polarAngle_"
                                          "desc-mean_statmap.func.gii").darrays[0].data for h in "LR"])
    assert mean.shape == (55,) and np.all(np.abs(mean) > 170)


def test_group_needs_participant_outputs(tmp_path, capsys):
    bids, _ = _dataset(tmp_path)
    assert main([str(bids), str(tmp_path / "nothing"), "group", "--work-dir", str(tmp_path / "w")]) == 66
    assert "run the participant level first" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("arguments, code", [(["--atlas-labels", "x.tsv"], 64), (["--min-rsquared", "2"], 64)])
def test_group_option_errors(tmp_path, arguments, code):
    bids, out = _dataset(tmp_path)
    assert main([str(bids), str(out), "group", "--work-dir", str(tmp_path / "w"), *arguments]) == code
