"""First-level inference through the command line on a generated dataset: exact output names, sidecars, the maps
against an independent numpy computation from the BOLD and the design TSV, and contrast usage errors."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoder.cli import main
from bids_encoder.datasets.example_dataset import make_example_dataset

VOLUME = "space-MNI152NLin2009cAsym_res-2"
CONDITIONS = ("faces", "houses", "scenes")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    truth = make_example_dataset(root / "bids", n_subjects=1, n_runs=2, n_volumes=80, shape=(8, 9, 6), noise=0.1,
                                 seed=4)
    out = root / "out"
    code = main([str(root / "bids"), str(out), "participant", "--work-dir", str(root / "work"), "--confounds",
                 "motion", "--confounds-param", "motion=basic", "--cv", "none", "--no-report",
                 "--contrast", "facesVsHouses=faces - 'houses'", "--contrast", "all=(faces + houses + scenes) / 3",
                 "--f-contrast", "faceOrHouse=faces, houses"])
    assert code == 0
    return truth, root, out


def _stem(out):
    return out / "sub-01/func" / f"sub-01_task-localizer_{VOLUME}_model-glm"


def test_output_names(fitted):
    _, _, out = fitted
    found = sorted(p.name.split("model-glm_")[1] for p in (out / "sub-01/func").iterdir())
    expected = ["design.json", "design.tsv", "stat-rsquared_statmap.json", "stat-rsquared_statmap.nii.gz"]
    for contrast in (*CONDITIONS, "facesVsHouses", "all"):
        for stat in ("effect", "variance", "t", "z", "p"):
            expected += [f"contrast-{contrast}_stat-{stat}_statmap.{ext}" for ext in ("json", "nii.gz")]
    for contrast in ("effectsOfInterest", "faceOrHouse"):
        for stat in ("F", "z", "p"):
            expected += [f"contrast-{contrast}_stat-{stat}_statmap.{ext}" for ext in ("json", "nii.gz")]
    assert found == sorted(expected)


def _map(out, name):
    return nib.load(f"{_stem(out)}_{name}_statmap.nii.gz").get_fdata()


def test_maps_equal_numpy_gls(fitted):
    """Percent signal change per run, then AR(1) GLS: a voxel's effect and variance of facesVsHouses equal a dense
    numpy computation from the BOLD, the design TSV and the written AR coefficients' definition."""
    truth, root, out = fitted
    design = pd.read_csv(f"{_stem(out)}_design.tsv", sep="\t")
    sidecar = json.loads(open(f"{_stem(out)}_contrast-facesVsHouses_stat-t_statmap.json").read())
    columns = list(sidecar["Contrast"]["ContrastWeights"])
    assert columns[:3] == list(CONDITIONS) and columns[-2:] == ["intercept_run1", "intercept_run2"]
    assert sidecar["Contrast"]["ContrastWeights"]["faces"] == 1 and sidecar["Contrast"]["ContrastWeights"]["houses"] == -1
    assert sidecar["NoiseModel"] == "AR(1)" and sidecar["Contrast"]["Type"] == "t"
    runs = design["run"].to_numpy()
    x = np.hstack([design[columns[:-2]].to_numpy(), (runs[:, None] == np.array([[1, 2]])).astype(float)])
    assert sidecar["DegreesOfFreedom"] == len(x) - np.linalg.matrix_rank(x)
    stem = root / "bids/derivatives/fmriprep/sub-01/func/sub-01_task-localizer"
    mask = nib.load(f"{stem}_run-1_{VOLUME}_desc-brain_mask.nii.gz").get_fdata() > 0
    bold = np.vstack([nib.load(f"{stem}_run-{r}_{VOLUME}_desc-preproc_bold.nii.gz").get_fdata()[mask].T for r in (1, 2)])
    effect, variance = _map(out, "contrast-facesVsHouses_stat-effect")[mask], _map(out, "contrast-facesVsHouses_stat-variance")[mask]
    c = np.array(list(sidecar["Contrast"]["ContrastWeights"].values()))
    for voxel in np.linspace(0, mask.sum() - 1, 6).astype(int):
        y = bold[:, voxel].copy()
        for r in (1, 2):
            y[runs == r] = 100 * (y[runs == r] / y[runs == r].mean() - 1)
        e = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
        whitening = np.zeros((len(y), len(y)))
        for r in (1, 2):
            rows = np.flatnonzero(runs == r)
            rho = (e[rows][1:] * e[rows][:-1]).sum() / (e[rows] ** 2).sum()
            whitening[rows[0], rows[0]] = np.sqrt(1 - rho**2)
            whitening[rows[1:], rows[1:]] = 1.0
            whitening[rows[1:], rows[:-1]] = -rho
        xw, yw = whitening @ x, whitening @ y
        beta = np.linalg.lstsq(xw, yw, rcond=None)[0]
        sigma2 = ((yw - xw @ beta) ** 2).sum() / sidecar["DegreesOfFreedom"]
        assert effect[voxel] == pytest.approx(c @ beta, rel=1e-3, abs=1e-4)
        assert variance[voxel] == pytest.approx(c @ np.linalg.pinv(xw.T @ xw) @ c * sigma2, rel=1e-3)
    t = _map(out, "contrast-facesVsHouses_stat-t")[mask]
    np.testing.assert_allclose(t, effect / np.sqrt(variance), rtol=1e-5)
    z, p = _map(out, "contrast-facesVsHouses_stat-z")[mask], _map(out, "contrast-facesVsHouses_stat-p")[mask]
    from scipy import stats

    np.testing.assert_allclose(p, stats.t.sf(t, sidecar["DegreesOfFreedom"]), rtol=1e-4, atol=1e-7)
    assert np.all(np.sign(z) == np.sign(t))
    # the default per-condition contrasts are the effect maps of before; 'all' is their mean
    mean = np.mean([_map(out, f"contrast-{c}_stat-effect")[mask] for c in CONDITIONS], axis=0)
    np.testing.assert_allclose(_map(out, "contrast-all_stat-effect")[mask], mean, rtol=1e-4, atol=1e-5)
    faces = _map(out, "contrast-faces_stat-z")[mask]
    planted = truth.effects[("01", "faces")][mask] > 0.5 * truth.effects[("01", "faces")].max()
    assert np.median(faces[planted]) > 3 and np.median(faces[~planted]) < np.median(faces[planted]) - 2


def test_sidecars(fitted):
    _, _, out = fitted
    f = json.loads(open(f"{_stem(out)}_contrast-faceOrHouse_stat-F_statmap.json").read())
    assert f["Contrast"]["Type"] == "F" and f["NumeratorDegreesOfFreedom"] == 2
    assert [row["faces"] for row in f["Contrast"]["ContrastWeights"]] == [1, 0]
    effect = json.loads(open(f"{_stem(out)}_contrast-faces_stat-effect_statmap.json").read())
    assert effect["Units"] == "percent signal change per unit regressor"
    assert effect["SignalScaling"].startswith("percent signal change")
    assert effect["Model"]["Contrast"] == "faces" and effect["Contrast"]["Expression"] == "faces"
    p = json.loads(open(f"{_stem(out)}_contrast-faces_stat-p_statmap.json").read())
    assert "One-sided (upper-tail)" in p["Description"]


@pytest.mark.parametrize(("option", "message"), [
    (["--contrast", "bad_name=faces"], "must be alphanumeric"),
    (["--contrast", "x=faces *"], "unexpected end"),
    (["--contrast", "x"], "expected NAME=EXPRESSION"),
    (["--contrast", "x=faces - cars"], "names 'cars', which is no condition"),
    (["--contrast", "faces=faces - houses"], "used twice"),
    (["--f-contrast", "x=faces, faces"], "linearly dependent"),
])
def test_contrast_errors_exit_64(fitted, tmp_path, capsys, option, message):
    """Bad contrasts: exit 64 with one line, nothing written."""
    _, root, _ = fitted
    out = tmp_path / "out"
    code = main([str(root / "bids"), str(out), "participant", "--work-dir", str(root / "work"), "--confounds",
                 "none", "--cv", "none", "--no-report", *option])
    assert code == 64
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("bids_encoder: error:") and message in error
    assert not list(out.rglob("*.nii.gz"))


def test_shared_hrf_ols_effects_equal_the_least_squares_weights(fitted, tmp_path):
    """--hrf shared, --glm-noise-model ols, --signal-scaling none: the inference sees the design the weights were
    fitted with: its effects equal WeightFitter's weights with the shared HRF (the effect maps of before)."""
    from bids_encoder.hrf import SPMHRFModel
    from bids_encoder.models import LinearModelWithBaselineHRF
    from bids_encoder.optimize import WeightFitter

    _, root, _ = fitted
    out = tmp_path / "out"
    assert main([str(root / "bids"), str(out), "participant", "--work-dir", str(root / "work"), "--confounds", "none",
                 "--cv", "none", "--no-report", "--hrf", "shared", "--glm-noise-model", "ols", "--signal-scaling",
                 "none"]) == 0
    sidecar = json.loads(open(f"{_stem(out)}_contrast-faces_stat-effect_statmap.json").read())
    assert sidecar["NoiseModel"] == "OLS" and sidecar["Units"] == "BOLD signal units per unit regressor"
    shared = sidecar["HRF"]["Shared"]
    design = pd.read_csv(f"{_stem(out)}_design.tsv", sep="\t")
    index = pd.MultiIndex.from_arrays([design["run"].to_numpy(), design["volume"].to_numpy()], names=["run", "volume"])
    paradigm = pd.DataFrame(design[list(CONDITIONS)].to_numpy(np.float32), index=index, columns=list(CONDITIONS))
    stem = root / "bids/derivatives/fmriprep/sub-01/func/sub-01_task-localizer"
    mask = nib.load(f"{stem}_run-1_{VOLUME}_desc-brain_mask.nii.gz").get_fdata() > 0
    bold = np.vstack([nib.load(f"{stem}_run-{r}_{VOLUME}_desc-preproc_bold.nii.gz").get_fdata()[mask].T
                      for r in (1, 2)])
    hrf = SPMHRFModel(2.0, delay=shared["Delay"], dispersion=shared["Dispersion"])
    weights = WeightFitter(LinearModelWithBaselineHRF(hrf_model=hrf), None, pd.DataFrame(bold, index=index),
                           paradigm).fit()
    for condition in CONDITIONS:
        np.testing.assert_allclose(_map(out, f"contrast-{condition}_stat-effect")[mask], weights.loc[condition],
                                   rtol=1e-3, atol=1e-4)
