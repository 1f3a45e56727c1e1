"""BIDS Stats Models (``--model-file``) on the real ds005 layout with the two published specifications.

ds005's real events and sidecars (four participants: sub-01 and sub-04 are M, sub-02 and sub-03 F; two runs each)
get fMRIPrep-like derivatives (:mod:`bids_encoder.datasets.fmriprep_like`) whose BOLD holds a planted response
to every event (1 % signal change) and to its response time (0.8 % per SD of the run's response times), both
convolved by nilearn's ``compute_regressor``. The specifications are used as published except that, as their
README says, pybids' copy of ds005 names the response-time column ``RT``: the copied events files rename
``response_time`` to ``RT``.
"""

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.glm import compute_fixed_effects
from nilearn.glm.first_level import compute_regressor

from bids_encoder.cli import main
from bids_encoder.datasets.fmriprep_like import SPACE, build_fmriprep, copy_raw

ROOT = Path(__file__).resolve().parent.parent
REAL = Path(os.environ.get("BIDS_ENCODER_REAL_BIDS_DIR", ROOT.parent / "shared" / "real-bids"))
MODELS = REAL / "ds005-models"
SUBJECTS = ["01", "02", "03", "04"]
TASK = "mixedgamblestask"
EVENT_EFFECT, RT_EFFECT = 1.0, 0.8
FAST = ["--run", "1", "--run", "2", "--cv", "none", "--confounds", "motion", "--confounds-param", "motion=basic",
        "--no-report"]

if not MODELS.is_dir():
    pytest.skip(f"no ds005 models at {MODELS} (set BIDS_ENCODER_REAL_BIDS_DIR)", allow_module_level=True)

pytestmark = pytest.mark.xdist_group(name="stats_models")


def _scaled(values):
    return (values - values.mean()) / values.std()  # pybids' Scale: demean, divide by the SD (pandas, n - 1)


def _plant(raw, subject, rng):
    """Replace each run's BOLD by 100 + events + RT responses + noise (inside the mask)."""
    func = raw / "derivatives" / "fmriprep" / f"sub-{subject}" / "func"
    for bold in sorted(func.glob(f"*_space-{SPACE}_desc-preproc_bold.nii.gz")):
        image = nib.load(bold)
        stem = bold.name.split("_space-")[0]
        events = pd.read_csv(raw / f"sub-{subject}" / "func" / f"{stem}_events.tsv", sep="\t", na_values="n/a")
        n_volumes, tr = image.shape[3], 2.0
        frame_times = np.arange(n_volumes) * tr
        onsets, durations = events["onset"].to_numpy(), events["duration"].to_numpy()
        event_regressor = compute_regressor(np.vstack([onsets, durations, np.ones(len(events))]), "spm",
                                            frame_times)[0][:, 0]
        rt_regressor = compute_regressor(np.vstack([onsets, durations, _scaled(events["RT"])]), "spm",
                                         frame_times)[0][:, 0]
        mask = np.asarray(nib.load(str(bold).replace("desc-preproc_bold", "desc-brain_mask")).dataobj) > 0
        signal = np.zeros(image.shape, np.float32)
        signal[mask] = (100 + EVENT_EFFECT * event_regressor + RT_EFFECT * rt_regressor
                        + rng.normal(0, 0.05, (int(mask.sum()), n_volumes)))
        nib.Nifti1Image(signal, image.affine, image.header).to_filename(bold)


@pytest.fixture(scope="module")
def ds005(tmp_path_factory):
    raw = tmp_path_factory.mktemp("ds005") / "ds005"
    copy_raw(REAL / "ds005", raw, SUBJECTS)
    rng = np.random.default_rng(5)
    for subject in SUBJECTS:
        for events in (raw / f"sub-{subject}" / "func").glob("*_events.tsv"):
            events.write_text(events.read_text().replace("response_time", "RT"))
        build_fmriprep(raw, subject, TASK, seed=int(subject))
        _plant(raw, subject, rng)
    return raw


def _run(raw, out, level, model, *extra):
    work = out.parent / f"work-{out.name}"
    return main([str(raw), str(out), level, "--model-file", str(model), "--work-dir", str(work), *extra])


def _map(path):
    return np.asarray(nib.load(path).dataobj, dtype=np.float64)


@pytest.fixture(scope="module")
def test_model(ds005, tmp_path_factory):
    """The published test model: participant level, then the group level with OLS."""
    out = tmp_path_factory.mktemp("test-model") / "out"
    assert _run(ds005, out, "participant", MODELS / "ds-005_type-test_model.json", *FAST) == 0
    assert _run(ds005, out, "group", MODELS / "ds-005_type-test_model.json", "--group-model", "ols",
                "--no-report") == 0
    return out


def _name(subject, contrast, stat, run=None):
    return (f"sub-{subject}_task-{TASK}" + (f"_run-{run}" if run else "")
            + f"_space-{SPACE}_model-testModel_contrast-{contrast}_stat-{stat}_statmap.nii.gz")


def test_run_and_subject_nodes_of_the_published_test_model(test_model):
    func = test_model / "sub-01" / "func"
    for contrast in ("gain", "RT", "RTGain"):  # DummyContrasts over the formula 0 + RT * gain
        for stat in ("effect", "variance", "t", "z", "p"):
            assert (func / _name("01", contrast, stat, run="01")).is_file()
            assert (func / _name("01", contrast, stat)).is_file()  # the FEMA subject node: no run entity
    sidecar = json.loads((func / _name("01", "gain", "effect", run="01").replace(".nii.gz", ".json")).read_text())
    assert sidecar["StatsModel"]["Node"] == "run" and sidecar["StatsModel"]["Name"] == "test_model"
    assert sidecar["StatsModel"]["EventRegressors"] == ["RT", "gain", "RT:gain"]
    assert sidecar["Contrast"]["Name"] == "gain" and sidecar["NoiseModel"] == "AR(1)"
    # the factor's indicator "gain" (every event is a "parametric gain" trial) recovers the planted 1 % response
    effect = _map(func / _name("01", "gain", "effect", run="01"))
    assert abs(np.nanmedian(effect) - EVENT_EFFECT) < 0.05
    # RT and RT:gain are the same column (gain is 1 at every event): not estimable, NaN, not a wrong number
    assert np.isnan(_map(func / _name("01", "RT", "effect", run="01"))).all()
    # subject node = nilearn's precision-weighted fixed effects of the two runs
    runs = [func / _name("01", "gain", "effect", run=r) for r in ("01", "02")]
    variances = [func / _name("01", "gain", "variance", run=r) for r in ("01", "02")]
    mask = nib.Nifti1Image(np.isfinite(_map(runs[0])).astype(np.uint8), nib.load(runs[0]).affine)
    effect, variance, _ = compute_fixed_effects([nib.load(p) for p in runs], [nib.load(p) for p in variances], mask,
                                                precision_weighted=True)[:3]
    inside = np.asarray(mask.dataobj) > 0
    np.testing.assert_allclose(_map(func / _name("01", "gain", "effect"))[inside],
                               np.asarray(effect.dataobj)[inside], rtol=1e-5)
    np.testing.assert_allclose(_map(func / _name("01", "gain", "variance"))[inside],
                               np.asarray(variance.dataobj)[inside], rtol=1e-5)
    # pybids (with metadata) reads the outputs: the run-level design sidecar has no "run" key against its run entity
    from bids_encoder.bids.derivatives import output_layout

    found = output_layout(test_model).get(subject="01", run=1, suffix="design", extension=".tsv")
    assert len(found) == 1 and "ModelRegressors" in found[0].get_metadata()
    combined = json.loads((func / _name("01", "gain", "t").replace(".nii.gz", ".json")).read_text())
    assert combined["StatsModel"]["Level"] == "Subject" and combined["Contrast"]["Test"] == "FEMA"
    assert len(combined["Combination"]["Inputs"]) == 2


def test_dataset_nodes_of_the_published_test_model(test_model):
    group = test_model / "group"
    base = f"task-{TASK}_space-{SPACE}_model-testModel"
    subject_effects = {s: _map(test_model / f"sub-{s}" / "func" / _name(s, "gain", "effect")) for s in SUBJECTS}
    inside = np.isfinite(subject_effects["01"])
    # by-group (GroupBy sex, contrast added): a one-sample t-test per sex, closed form
    for sex, members in (("M", ["01", "04"]), ("F", ["02", "03"])):
        values = np.stack([subject_effects[s][inside] for s in members])
        effect = _map(group / f"{base}_contrast-gain_stat-effect_desc-byGroupSex{sex}_statmap.nii.gz")[inside]
        t = _map(group / f"{base}_contrast-gain_stat-t_desc-byGroupSex{sex}_statmap.nii.gz")[inside]
        np.testing.assert_allclose(effect, values.mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(t, values.mean(axis=0) / (values.std(axis=0, ddof=1) / np.sqrt(2)), rtol=1e-4)
    # group-diff, X = [1, sex]: sex coded 1 for M (the level sorting last), so its contrast is mean(M) - mean(F)
    males = np.mean([subject_effects[s][inside] for s in ("01", "04")], axis=0)
    females = np.mean([subject_effects[s][inside] for s in ("02", "03")], axis=0)
    difference = _map(group / f"{base}_contrast-gainSex_stat-effect_desc-groupDiff_statmap.nii.gz")[inside]
    np.testing.assert_allclose(difference, males - females, rtol=1e-4, atol=1e-6)
    intercept = _map(group / f"{base}_contrast-gain_stat-effect_desc-groupDiff_statmap.nii.gz")[inside]
    np.testing.assert_allclose(intercept, females, rtol=1e-5)
    sidecar = json.loads((group / f"{base}_contrast-gainSex_stat-z_desc-groupDiff_statmap.json").read_text())
    assert sidecar["Test"]["CategoricalCoding"] == {"sex": {"F": 0, "M": 1}}
    assert sidecar["StatsModel"]["Node"] == "group-diff"
    assert sorted(sidecar["ParticipantsWithValues"]) == [f"sub-{s}" for s in SUBJECTS]
    assert (group / f"{base}_contrast-gain_stat-z_desc-byGroupSexMFdr_statmap.nii.gz").is_file()
    assert (group / f"{base}_contrast-gain_stat-z_desc-groupDiffCluster_clusters.tsv").is_file()


def test_mfx_model_recovers_the_response_time_effect_and_says_what_it_ignores(ds005, tmp_path, capsys):
    out = tmp_path / "out"
    model = MODELS / "ds-005_type-mfx_model.json"
    assert _run(ds005, out, "participant", model, "--participant-label", "01", *FAST) == 0
    err = capsys.readouterr().err
    assert "node run: no GroupBy (required by BIDS Stats Models 1.0)" in err
    assert "node group: Model VarianceComponents is not supported; ignored" in err
    func = out / "sub-01" / "func"
    name = f"sub-01_task-{TASK}_run-01_space-{SPACE}_model-mfxModel_contrast-RT_stat-effect_statmap.nii.gz"
    assert abs(np.nanmedian(_map(func / name)) - RT_EFFECT) < 0.05  # the scaled RT's planted response
    # its RT regressor is the events' response times, z-scored within the run (Scale), convolved (SPM)
    design = pd.read_csv(func / name.replace("_contrast-RT_stat-effect_statmap.nii.gz", "_design.tsv"), sep="\t")
    events = pd.read_csv(ds005 / "sub-01" / "func" / f"sub-01_task-{TASK}_run-01_events.tsv", sep="\t")
    expected = compute_regressor(np.vstack([events["onset"], events["duration"], _scaled(events["RT"])]), "spm",
                                 np.arange(len(design)) * 2.0)[0][:, 0]
    assert np.max(np.abs(design["RT"].to_numpy() - expected)) < 0.03 * np.abs(expected).max()
    trial = f"sub-01_task-{TASK}_run-01_space-{SPACE}_model-mfxModel_contrast-trialType_stat-effect_statmap.nii.gz"
    assert abs(np.nanmedian(_map(func / trial)) - EVENT_EFFECT) < 0.05  # the one-level trial_type's indicator
    # its dataset node (X: [age], straight from the run node) defines no contrast: said, nothing written
    assert _run(ds005, out, "group", model, "--participant-label", "01", "--no-report") == 0
    assert "node group, contrast RT: the node defines no contrast (Contrasts or DummyContrasts): nothing to " \
        "test" in capsys.readouterr().err
    assert not list((out / "group").glob("*statmap*"))


def _spec(tmp_path, change):
    spec = json.loads((MODELS / "ds-005_type-test_model.json").read_text())
    change(spec)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize("change, code, message", [
    (lambda s: s["Nodes"][1]["Model"].update(X=[1, "age"]), 64,
     "node participant: Model X [1, 'age'] is not supported at the subject level"),
    (lambda s: s["Nodes"][0]["Model"].update(Type="meta"), 64, "node run: Model Type 'meta' is not supported"),
    (lambda s: s["Nodes"].pop(0), 64, "the first node is Subject-level"),
    (lambda s: (s["Nodes"][0]["Transformations"].append({"Name": "Convolve", "Input": ["gain"]}),
                s["Nodes"][0]["Model"].pop("Formula")), 64,
     "--hrf fit applies to event regressors only; use --hrf canonical"),
    # the reviewer's cases: a Formula column beside sampled regressors (pybids multiplies unconvolved boxcars) …
    (lambda s: s["Nodes"][0]["Transformations"].append({"Name": "Convolve", "Input": ["gain"]}), 64,
     "the Formula column 'RT:gain' beside regressors sampled at the TR is not supported"),
    # … and the file's Convolve over several runs in one output (pybids concatenates their timelines)
    (lambda s: (s["Nodes"][0]["Transformations"].append({"Name": "Convolve", "Input": ["gain"]}),
                s["Nodes"][0]["Model"].pop("Formula"), s["Nodes"][0].update(GroupBy=["subject"])), 64,
     "one output holds 2 runs and the file convolves"),
])
def test_unsupported_parts_are_one_line_usage_errors(ds005, tmp_path, capsys, change, code, message):
    extra = ["--hrf", "fit"] if "--hrf" in message else []
    out = tmp_path / "out"
    assert _run(ds005, out, "participant", _spec(tmp_path, change), "--participant-label", "01", *FAST,
                *extra) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert not list(out.glob("sub-01/func/*statmap*"))


def test_missing_model_file_exits_66(ds005, tmp_path, capsys):
    assert _run(ds005, tmp_path / "out", "participant", tmp_path / "absent.json", *FAST) == 66
    assert "no such file" in capsys.readouterr().err


def test_group_level_without_the_model_file_leaves_its_outputs_out(test_model, ds005, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(test_model, out, ignore=shutil.ignore_patterns("group"))
    code = main([str(ds005), str(out), "group", "--work-dir", str(tmp_path / "work"), "--no-report"])
    err = capsys.readouterr().err
    assert "BIDS Stats Model test_model are left out: give its file with --model-file" in err
    assert code == 18  # nothing else to aggregate


FITLINS_STYLE = {  # a FitLins-style model: the file convolves (with a derivative) and names fMRIPrep confounds
    "Name": "fitlins style", "BIDSModelVersion": "1.0.0", "Input": {"task": [TASK]},
    "Nodes": [
        {"Level": "Run", "Name": "run", "GroupBy": ["run", "subject"],
         "Transformations": {"Transformer": "pybids-transforms-v1", "Instructions": [
             {"Name": "Factor", "Input": ["trial_type"]}, {"Name": "Scale", "Input": ["RT"]},
             {"Name": "Convolve", "Input": ["trial_type.parametric gain", "RT"], "Model": "spm",
              "Derivative": True}]},
         "Model": {"Type": "glm", "X": ["trial_type.parametric gain", "RT", "trial_type.parametric gain_derivative",
                                        "trans_x", "trans_y", 1]},
         "DummyContrasts": {"Contrasts": ["trial_type.parametric gain", "RT"], "Test": "t"},
         "Contrasts": [{"Name": "gainAndRT", "ConditionList": ["trial_type.parametric gain", "RT"],
                        "Weights": [[1, 0], [0, 1]], "Test": "F"}]},
        {"Level": "Subject", "Name": "subject", "GroupBy": ["subject", "contrast"], "Model": {"Type": "glm", "X": [1]},
         "DummyContrasts": {"Test": "t"}},
        {"Level": "Dataset", "Name": "dataset", "GroupBy": ["contrast"], "Model": {"Type": "glm", "X": [1, "age"]},
         "DummyContrasts": {"Test": "t"}}]}


def test_a_model_that_convolves_itself_and_names_confounds(ds005, tmp_path, capsys):
    model = tmp_path / "model.json"
    model.write_text(json.dumps(FITLINS_STYLE))
    out = tmp_path / "out"
    assert _run(ds005, out, "participant", model, *FAST) == 0
    assert "X names fMRIPrep confounds (trans_x, trans_y): they are its confounds, --confounds is not applied" in \
        capsys.readouterr().err
    assert _run(ds005, out, "group", model, "--group-model", "ols", "--no-report") == 0
    func = out / "sub-01" / "func"
    prefix = f"sub-01_task-{TASK}_run-01_space-{SPACE}_model-fitlinsStyle"
    design = pd.read_csv(func / f"{prefix}_design.tsv", sep="\t")
    assert [c for c in design.columns if c not in ("run", "volume", "onset")] == [
        "trial_type.parametric gain", "RT", "trial_type.parametric gain_derivative", "trans_x", "trans_y"]
    confounds = pd.read_csv(ds005 / "derivatives" / "fmriprep" / "sub-01" / "func" /
                            f"sub-01_task-{TASK}_run-01_desc-confounds_timeseries.tsv", sep="\t")
    np.testing.assert_allclose(design["trans_x"], confounds["trans_x"], rtol=1e-5)
    sidecar = json.loads((func / f"{prefix}_stat-rsquared_statmap.json").read_text())
    assert sidecar["StatsModel"]["SampledRegressors"][:2] == ["trial_type.parametric gain", "RT"]
    assert sidecar["Confounds"]["NumberOfRegressors"] == 0  # --confounds not applied: the file names its own
    # pybids' convolved regressors (sampled as pybids resamples them to the TR) recover the planted responses
    for contrast, planted in (("trialTypeParametricGain", EVENT_EFFECT), ("RT", RT_EFFECT)):
        effect = _map(func / f"{prefix}_contrast-{contrast}_stat-effect_statmap.nii.gz")
        assert abs(np.nanmedian(effect) - planted) < 0.15 * planted
    assert (func / f"{prefix}_contrast-gainAndRT_stat-F_statmap.nii.gz").is_file()
    # dataset node, X = [1, age] (age as written, not demeaned): ordinary least squares, closed form
    ages = pd.read_csv(ds005 / "participants.tsv", sep="\t").set_index("participant_id")["age"]
    effects = np.stack([_map(out / f"sub-{s}" / "func" / f"sub-{s}_task-{TASK}_space-{SPACE}_model-fitlinsStyle_"
                             "contrast-RT_stat-effect_statmap.nii.gz") for s in SUBJECTS])
    inside = np.isfinite(effects).all(axis=0)
    X = np.column_stack([np.ones(len(SUBJECTS)), [ages[f"sub-{s}"] for s in SUBJECTS]])
    beta = np.linalg.lstsq(X, effects[:, inside], rcond=None)[0]
    base = out / "group" / f"task-{TASK}_space-{SPACE}_model-fitlinsStyle"
    np.testing.assert_allclose(_map(f"{base}_contrast-RT_stat-effect_desc-dataset_statmap.nii.gz")[inside],
                               beta[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_map(f"{base}_contrast-RTAge_stat-effect_desc-dataset_statmap.nii.gz")[inside],
                               beta[1], rtol=1e-4, atol=1e-7)


SESSIONS_MODEL = {  # ds114: two sessions of one run without a run entity; the subject node combines the sessions
    "Name": "ffl", "BIDSModelVersion": "1.0.0", "Input": {"task": ["fingerfootlips"]},
    "Nodes": [
        {"Level": "Run", "Name": "run", "GroupBy": ["run", "session", "subject"],
         "Transformations": {"Transformer": "pybids-transforms-v1",
                             "Instructions": [{"Name": "Factor", "Input": ["trial_type"]}]},
         "Model": {"X": ["trial_type.Finger", "trial_type.Foot", "trial_type.Lips"]},
         "Contrasts": [{"Name": "footVsFinger", "ConditionList": ["trial_type.Foot", "trial_type.Finger"],
                        "Weights": [1, -1], "Test": "t"}]},
        {"Level": "Subject", "Name": "subject", "GroupBy": ["subject", "contrast"], "Model": {"X": [1]},
         "DummyContrasts": {"Test": "FEMA"}},
        {"Level": "Dataset", "Name": "dataset", "GroupBy": ["contrast"], "Model": {"X": [1]},
         "DummyContrasts": {"Test": "t"}}]}


def test_sessions_without_run_entities_are_combined_by_the_subject_node(tmp_path):
    raw = tmp_path / "ds114"
    copy_raw(REAL / "ds114", raw, ["01", "02"])
    planted = {s: build_fmriprep(raw, s, "fingerfootlips", seed=int(s)) for s in ("01", "02")}
    assert all(effects == {"Finger": 1.0, "Foot": 2.0, "Lips": 3.0} for runs in planted.values()
               for _, effects in runs.values())
    model = tmp_path / "model.json"
    model.write_text(json.dumps(SESSIONS_MODEL))
    out = tmp_path / "out"
    assert _run(raw, out, "participant", model, "--cv", "none", "--no-report", "--confounds-param",
                "motion=basic") == 0
    assert _run(raw, out, "group", model, "--group-model", "ols", "--no-report") == 0
    stem = f"task-fingerfootlips_space-{SPACE}_model-ffl_contrast-footVsFinger_stat-effect"
    subject = {}
    for s in ("01", "02"):
        sessions = [_map(out / f"sub-{s}" / f"ses-{ses}" / "func" / f"sub-{s}_ses-{ses}_{stem}_statmap.nii.gz")
                    for ses in ("retest", "test")]
        subject[s] = _map(out / f"sub-{s}" / "func" / f"sub-{s}_{stem}_statmap.nii.gz")  # no ses: both combined
        inside = np.isfinite(subject[s])
        assert all(abs(np.median(m[inside]) - 1.0) < 0.05 for m in sessions)  # Foot 2 − Finger 1
        assert np.all((subject[s][inside] >= np.minimum(*sessions)[inside] - 1e-6)
                      & (subject[s][inside] <= np.maximum(*sessions)[inside] + 1e-6))  # a weighted mean
    group = _map(out / "group" / f"{stem}_desc-dataset_statmap.nii.gz")
    np.testing.assert_allclose(group[inside], (subject["01"][inside] + subject["02"][inside]) / 2, rtol=1e-5)


def test_an_intercept_in_x_with_dummy_contrasts_runs_without_its_contrast(ds005, tmp_path, capsys):
    """X with 1 and a bare DummyContrasts: pybids adds a contrast on the intercept, which the app's design has as
    every run's own mean; it is left out with a warning (the run used to stop with exit 64)."""
    def change(spec):
        spec["Nodes"][0]["Model"] = {"X": [1, "RT", "gain"]}
    out = tmp_path / "out"
    assert _run(ds005, out, "participant", _spec(tmp_path, change), "--participant-label", "01", *FAST) == 0
    assert "no contrast intercept on the intercept" in capsys.readouterr().err
    names = {p.name.split("_contrast-")[1].split("_")[0] for p in (out / "sub-01" / "func").glob("*run-01*contrast-*")}
    assert names == {"RT", "gain"}


def test_edge_filters_select_the_inputs_of_a_dataset_node(test_model, ds005, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(test_model, out, ignore=shutil.ignore_patterns("group"))
    spec = json.loads((MODELS / "ds-005_type-test_model.json").read_text())
    spec["Edges"][2]["Filter"] = {"contrast": ["gain"]}  # participant → group-diff: the gain contrast only
    model = tmp_path / "model.json"
    model.write_text(json.dumps(spec))
    assert _run(ds005, out, "group", model, "--group-model", "ols", "--no-report") == 0
    diff = {p.name.split("_contrast-")[1].split("_")[0] for p in (out / "group").glob("*desc-groupDiff_statmap.json")}
    assert diff == {"gain", "gainSex"}
    by_group = {p.name.split("_contrast-")[1].split("_")[0] for p in (out / "group").glob("*desc-byGroupSexM_*.json")}
    assert by_group == {"gain", "RT", "RTGain"}  # the other edge has no filter


def test_node_rows_map_back_to_their_inputs_with_and_without_run_entities(ds005):
    """pybids turns a run column with missing values into floats; rows are mapped back by a private index, not by
    comparing entity strings (which found no input for '1.0' against 1)."""
    from bids.modeling.statsmodels import ContrastInfo

    from bids_encoder.bids.layout import load_layout
    from bids_encoder.bids.stats_models import StatsModel, node_outputs

    graph = StatsModel(json.loads((MODELS / "ds-005_type-test_model.json").read_text())).graph(
        load_layout(ds005, raw_only=True))
    inputs = [ContrastInfo("gain", ["gain"], [1], "t", {"subject": "01", "task": task, "contrast": "gain", **run})
              for task, run in (("a", {"run": 1}), ("a", {"run": 2}), ("b", {}))]
    (output, rows), = node_outputs(graph, "participant", inputs)
    assert sorted(rows) == [0, 1, 2] and len(output.metadata) == 3
    for row, index in zip(output.metadata.itertuples(), rows, strict=True):
        assert row.task == inputs[index].entities["task"]


def test_a_missing_covariate_stops_the_dataset_node_instead_of_becoming_zero(test_model, ds005, tmp_path, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(ds005, raw, symlinks=True)
    table = pd.read_csv(raw / "participants.tsv", sep="\t", dtype=str)
    table.loc[table["participant_id"] == "sub-02", "age"] = "n/a"
    table.to_csv(raw / "participants.tsv", sep="\t", index=False)
    out = tmp_path / "out"
    shutil.copytree(test_model, out, ignore=shutil.ignore_patterns("group"))
    spec = json.loads((MODELS / "ds-005_type-test_model.json").read_text())
    spec["Nodes"][3]["Model"]["X"] = [1, "age"]
    model = tmp_path / "model.json"
    model.write_text(json.dumps(spec))
    assert _run(raw, out, "group", model, "--no-report") == 65
    assert "node group-diff: NaNs detected in columns" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_combination_over_tasks_is_named_by_none_of_them():
    from bids_encoder.workflows.stats_models.participant_nodes import common_entities

    entities = [{"subject": "01", "task": "a", "space": "S", "run": 1}, {"subject": "01", "task": "b", "space": "S"}]
    assert common_entities(entities, drop=("run",)) == {"subject": "01", "space": "S"}


def test_dry_run_lists_the_run_node_fits(ds005, tmp_path, capsys):
    """Regression: --dry-run with a model file listed one model-glm fit per task, not what the model file fits."""
    out = tmp_path / "out"
    assert _run(ds005, out, "participant", MODELS / "ds-005_type-test_model.json", "--participant-label", "01",
                "--dry-run", *FAST) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sub-01")]
    assert [line.split(":")[0] for line in lines] == [
        f"sub-01_task-{TASK}_run-{r}_space-{SPACE}_model-testModel" for r in ("01", "02")]
    assert all("model glm of test_model node run (3 regressors: RT, gain, RT:gain)" in line for line in lines)
    assert not out.exists()
