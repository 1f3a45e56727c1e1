"""``--run-model fixed-effects`` (issue #32): each run's GLM on its own, the runs' contrasts combined as nilearn's
``FirstLevelModel`` combines a list of runs (equal weights) or as ``compute_fixed_effects(precision_weighted=True)``
(precision weights), on a real layout whose rare condition is missing from one run: ds102's sub-01 has one
``incongruent_incorrect`` trial, in run 2 (its events and sidecars, a 10×10×10 fMRIPrep-like BOLD with AR(1) noise,
coefficients 0.1–0.5, and effects of every strength)."""

import json
import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoder.cli import main
from bids_encoder.datasets.fmriprep_like import build_fmriprep, copy_raw
from bids_encoder.inference import fixed_effects
from bids_encoder.inference.f_fixed_effects import f_fixed_effects

pytestmark = pytest.mark.xdist_group(name="real_layouts")

ROOT = Path(__file__).resolve().parent.parent
REAL = Path(os.environ.get("BIDS_ENCODER_REAL_BIDS_DIR", ROOT.parent / "shared" / "real-bids"))
CONDITIONS = {"congruent_correct": "congruentCorrect", "incongruent_correct": "incongruentCorrect",
              "incongruent_incorrect": "incongruentIncorrect"}
ARGUMENTS = ["--run-model", "fixed-effects", "--confounds", "motion,high_pass", "--confounds-param", "motion=basic",
             "--contrast", "congruency=congruentCorrect - incongruentCorrect",
             "--f-contrast", "congruent=congruentCorrect"]


@pytest.fixture(scope="module")
def ds102(tmp_path_factory):
    if not REAL.is_dir():
        pytest.skip(f"no real BIDS layouts at {REAL} (set BIDS_ENCODER_REAL_BIDS_DIR)")
    folder = tmp_path_factory.mktemp("ds102")
    bids = folder / "bids"
    copy_raw(REAL / "ds102", bids, "01")
    build_fmriprep(bids, "01", "flankertask", shape=(10, 10, 10), noise=0.5, autocorrelation=(0.1, 0.5),
                   effect_spread=True, seed=3)
    return bids


def _nilearn_runs(bids):
    """nilearn's own design (SPM HRF from the events, nilearn's load_confounds) for each run."""
    from nilearn.interfaces.fmriprep import load_confounds

    func = bids / "derivatives/fmriprep/sub-01/func"
    images = sorted(func.glob("*desc-preproc_bold.nii.gz"))
    events = [pd.read_csv(p, sep="\t")[["onset", "duration", "trial_type"]]
              for p in sorted((bids / "sub-01/func").glob("*_events.tsv"))]
    confounds = [load_confounds(str(image), strategy=("motion", "high_pass"), motion="basic")[0] for image in images]
    return [str(i) for i in images], events, confounds, str(next(func.glob("*brain_mask.nii.gz")))


def _model(mask):
    from nilearn.glm.first_level import FirstLevelModel

    return FirstLevelModel(t_r=2.0, noise_model="ar1", hrf_model="spm", drift_model=None, signal_scaling=0,
                           mask_img=mask, minimize_memory=False)


def _ours(folder, label, stat):
    return np.asarray(nib.load(next(folder.glob(f"*_contrast-{label}_stat-{stat}_statmap.nii.gz"))).dataobj)


def _agree(ours, theirs, what):
    """z r >= 0.999 and 99th percentile |dz| <= 0.1 over the voxels where nilearn's |z| < 7 (its z goes through
    p and saturates near 8.2)."""
    keep = np.abs(theirs) < 7
    r = np.corrcoef(ours[keep], theirs[keep])[0, 1]
    p99 = np.percentile(np.abs(ours - theirs)[keep], 99)
    assert keep.sum() > 300 and r >= 0.999 and p99 <= 0.1, (what, keep.sum(), r, p99)
    return r, p99


def test_fixed_effects_equals_nilearn_first_level_model_on_a_list_of_runs(ds102, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(ds102), str(out), "participant", "--work-dir", str(tmp_path / "work"), *ARGUMENTS]) == 0, \
        capsys.readouterr().err[-2000:]
    images, events, confounds, mask = _nilearn_runs(ds102)
    inside = np.asarray(nib.load(mask).dataobj) > 0
    model = _model(mask).fit(images, events=events, confounds=confounds)
    func = out / "sub-01/func"
    figures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Contrast for run 0 is null": the rare condition's run 1
        for condition, label in CONDITIONS.items():
            vectors = [np.asarray(d.columns == condition, float) for d in model.design_matrices_]
            theirs = model.compute_contrast(vectors, output_type="all")
            z = np.asarray(theirs["z_score"].dataobj)[inside]
            figures[label] = _agree(_ours(func, label, "z")[inside], z, label)
            effect = np.asarray(theirs["effect_size"].dataobj)[inside]
            assert np.corrcoef(_ours(func, label, "effect")[inside], effect)[0, 1] > 0.9999
        difference = model.compute_contrast("congruent_correct - incongruent_correct", output_type="z_score")
        figures["congruency"] = _agree(_ours(func, "congruency", "z")[inside],
                                       np.asarray(difference.dataobj)[inside], "congruency")
    print("z agreement (r, 99th percentile |dz|):", figures)
    rare = json.loads(next(func.glob("*_contrast-incongruentIncorrect_stat-z_statmap.json")).read_text())
    both = json.loads(next(func.glob("*_contrast-congruentCorrect_stat-z_statmap.json")).read_text())
    assert rare["RunModel"]["Runs"] == [2] and both["RunModel"]["Runs"] == [1, 2]
    assert rare["DegreesOfFreedom"] == rare["RunModel"]["RunDegreesOfFreedom"][0]
    assert both["DegreesOfFreedom"] == sum(both["RunModel"]["RunDegreesOfFreedom"])
    # an F contrast of one row is the square of its t contrast
    t, f = _ours(func, "congruentCorrect", "t")[inside], _ours(func, "congruent", "F")[inside]
    np.testing.assert_allclose(f, t**2, rtol=1e-5)
    # the cross-validation (leave one run out, each condition's mean weight over the training runs) and the report
    cv = json.loads(next(func.glob("*_stat-cvrsquared_statmap.json")).read_text())
    assert cv["CrossValidation"]["Scheme"] == "loro" and cv["CrossValidation"]["FractionPositive"] > 0.5
    design = pd.read_csv(next(func.glob("*_design.tsv")), sep="\t")
    assert {"congruent_correct_run1", "congruent_correct_run2", "incongruent_incorrect_run2"} <= set(design.columns)
    assert "incongruent_incorrect_run1" not in design.columns
    assert "fixed effects (equal)" in (out / "sub-01.html").read_text()


def test_precision_weights_equal_nilearn_compute_fixed_effects(ds102, tmp_path, capsys):
    from nilearn.glm.contrasts import compute_fixed_effects

    out = tmp_path / "out"
    assert main([str(ds102), str(out), "participant", "--work-dir", str(tmp_path / "work"), *ARGUMENTS,
                 "--run-weights", "precision", "--cv", "none", "--no-report"]) == 0, capsys.readouterr().err[-2000:]
    images, events, confounds, mask = _nilearn_runs(ds102)
    inside = np.asarray(nib.load(mask).dataobj) > 0
    runs = [_model(mask).fit(image, events=e, confounds=c) for image, e, c in zip(images, events, confounds,
                                                                                   strict=True)]
    maps = [run.compute_contrast("congruent_correct", output_type="all") for run in runs]
    dofs = [float(next(iter(run.results_[0].values())).df_residuals) for run in runs]
    _, _, _, z = compute_fixed_effects([m["effect_size"] for m in maps], [m["effect_variance"] for m in maps],
                                       mask=mask, precision_weighted=True, dofs=dofs)
    _agree(_ours(out / "sub-01/func", "congruentCorrect", "z")[inside], np.asarray(z.dataobj)[inside], "precision")


@pytest.mark.parametrize("arguments, message", [
    (["--run-weights", "precision"], "--run-weights weighs the runs of --run-model fixed-effects: give that too"),
    (["--run-model", "fixed-effects", "--model", "prf2d"],
     "--run-model fixed-effects combines the runs of GLM fits; --model prf2d fits its runs jointly"),
])
def test_run_model_usage_errors(ds102, tmp_path, capsys, arguments, message):
    assert main([str(ds102), str(tmp_path / "out"), "participant", *arguments]) == 64
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"bids_encoder: error: {message}"


def test_f_fixed_effects_sums_rows_over_the_runs_that_have_them(rng):
    """Equal weights: the summed rows and their summed covariances (a row missing from a run leaves it out);
    precision weights: the information-weighted combination; one row: the square of the t fixed effects."""
    n = 50
    effects = rng.normal(size=(2, 2, n))
    a = rng.normal(size=(2, 2, 2, n))
    covariances = np.einsum("irkv,iskv->irsv", a, a) + 0.5 * np.eye(2)[None, :, :, None]
    effects[0, 1] = np.nan  # run 1 lacks row 2
    result = f_fixed_effects(effects, covariances, [100, 90])
    s = np.array([effects[0, 0] + effects[1, 0], effects[1, 1]])
    c = covariances[1].copy()
    c[0, 0] += covariances[0, 0, 0]
    expected = np.array([s[:, v] @ np.linalg.solve(c[:, :, v], s[:, v]) / 2 for v in range(n)])
    np.testing.assert_allclose(result["F"], expected, rtol=1e-10)
    assert result["rows"] == 2 and result["df"] == 190
    one = f_fixed_effects(effects[:, :1], covariances[:, :1, :1], [100, 90], precision_weighted=True)
    t = fixed_effects(effects[:, 0], covariances[:, 0, 0], [100, 90], precision_weighted=True).t
    np.testing.assert_allclose(one["F"], t**2, rtol=1e-10)
