"""Bad input: every case gets one clear error line on stderr, its documented exit code, and OUTPUT_DIR holds
nothing afterwards (no map, no sidecar, no dataset_description.json, no log, no temporary file).

Each case copies a small valid dataset (1 subject × 2 runs, MNI volume; a pRF variant with stimulus apertures)
and breaks one thing. A few inputs that look broken but are normal for fMRIPrep data (the n/a first row of
derivative confounds, some constant or NaN voxels, events outside the run) must instead fit, and are checked here
too.
"""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoder.cli import main
from bids_encoder.datasets.example_dataset import make_example_dataset

pytestmark = pytest.mark.xdist_group(name="bad_inputs")

SUB = "sub-01_task-localizer_run-1"
DERIV = "derivatives/fmriprep/sub-01/func"
BOLD = f"{DERIV}/{SUB}_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz"
MASK = f"{DERIV}/{SUB}_space-MNI152NLin2009cAsym_res-2_desc-brain_mask.nii.gz"
CONFOUNDS = f"{DERIV}/{SUB}_desc-confounds_timeseries.tsv"
EVENTS = f"sub-01/func/{SUB}_events.tsv"
N_VOLUMES, TR = 40, 2.0
FAST = ["--confounds", "motion", "--confounds-param", "motion=basic", "--no-report"]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A valid dataset, and a pRF variant of it (bar apertures in stimuli/, events naming them)."""
    root = tmp_path_factory.mktemp("template")
    make_example_dataset(root / "glm", n_subjects=1, n_runs=2, n_volumes=N_VOLUMES, shape=(6, 7, 5), noise=0.1,
                         seed=11)
    prf = root / "prf"
    shutil.copytree(root / "glm", prf)
    (prf / "stimuli").mkdir()
    frames = np.zeros((N_VOLUMES, 10, 8), np.float32)
    for t in range(N_VOLUMES):
        frames[t, t % 10, :] = 1.0  # a vertical bar sweeping left to right
    np.save(prf / "stimuli/bars.npy", frames)
    (prf / "stimuli/bars.json").write_text(json.dumps({"VisualAngleX": [-5, 5], "VisualAngleY": [4, -4]}))
    for run in (1, 2):
        pd.DataFrame({"onset": [0.0], "duration": [N_VOLUMES * TR], "trial_type": ["bars"],
                      "stim_file": ["bars.npy"]}).to_csv(prf / f"sub-01/func/sub-01_task-localizer_run-{run}_events.tsv",
                                                         sep="\t", index=False)
    return root


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file()) if folder.exists() else []


# ---- how each case breaks the dataset: a function (bids, tmp) → extra command-line arguments ----------------------

def _edit_tsv(path, edit):
    """``edit(frame)`` returns the new table (or None after changing it in place)."""
    frame = pd.read_csv(path, sep="\t", na_values=["n/a"])
    edited = edit(frame)
    (frame if edited is None else edited).to_csv(path, sep="\t", index=False, na_rep="n/a")


def _edit_bold(bids, edit):
    image = nib.load(bids / BOLD)
    data = np.asarray(image.dataobj, dtype=np.float32)
    data = edit(data)
    nib.Nifti1Image(data, image.affine, image.header).to_filename(bids / BOLD)


def _set_tr(bids, sidecar_tr, header_tr):
    for path in [bids / "task-localizer_bold.json", *bids.glob(f"{DERIV}/*_bold.json")]:
        content = json.loads(path.read_text())
        content.pop("RepetitionTime")
        if sidecar_tr is not None:
            content["RepetitionTime"] = sidecar_tr
        path.write_text(json.dumps(content))
    for path in [*bids.glob(f"{DERIV}/*_bold.nii.gz"), *bids.glob("sub-01/func/*_bold.nii.gz")]:
        image = nib.load(path)
        header = image.header.copy()
        header["pixdim"][4] = header_tr
        nib.Nifti1Image(np.asarray(image.dataobj), image.affine, header).to_filename(path)
    return []


def _filter_file(tmp, text):
    path = tmp / "filters.json"
    path.write_text(text)
    return ["--bids-filter-file", str(path)]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _file(path):
    path.write_text("a file, not a folder")


def _stimulus_frames(bids, n):
    np.save(bids / "stimuli/bars.npy", np.load(bids / "stimuli/bars.npy")[:n])


def _add_rest_task(bids):
    """A resting-state run (no events.tsv): run 1's derivatives under task-rest."""
    for path in list((bids / DERIV).glob("*_run-1_*")):
        path.with_name(path.name.replace("task-localizer", "task-rest")).write_bytes(path.read_bytes())


CASES = {  # name: (dataset, break it, exit code, message)
    "BIDS_DIR missing": ("glm", lambda b, t: ["BIDS_DIR=" + str(t / "nowhere")], 66, "does not exist"),
    "BIDS_DIR not a dataset": ("glm", lambda b, t: (b / "dataset_description.json").unlink() or [], 16,
                               "is not a BIDS dataset (no dataset_description.json)"),
    "no fMRIPrep derivatives": ("glm", lambda b, t: shutil.rmtree(b / "derivatives") or [], 66,
                                "No fMRIPrep derivatives"),
    "unknown participant": ("glm", lambda b, t: ["--participant-label", "07"], 18,
                            "Participant(s) sub-07 not found in the fMRIPrep derivatives"),
    "unknown task": ("glm", lambda b, t: ["--task", "rest"], 18,
                     "'task': 'rest'} (sub-01 has task(s) localizer; space(s) MNI152NLin2009cAsym)"),
    "unknown space": ("glm", lambda b, t: ["--space", "MNI305"], 18,
                      "No preprocessed BOLD (volume, space-MNI305) for sub-01"),
    "label ../x": ("glm", lambda b, t: ["--participant-label", "../x"], 64, "Invalid participant label '../x'"),
    "label a/b": ("glm", lambda b, t: ["--participant-label", "a/b"], 64, "Invalid participant label 'a/b'"),
    "task label with path": ("glm", lambda b, t: ["--task", "../x"], 64, "Invalid task label '../x'"),
    "filter file not JSON": ("glm", lambda b, t: _filter_file(t, "{bold: run"), 64, "is not readable JSON"),
    "filter file selects nothing": ("glm", lambda b, t: _filter_file(t, '{"bold": {"run": 9}}'), 18,
                                    "No preprocessed BOLD (volume, space-MNI152NLin2009cAsym) for sub-01 with filters "
                                    "{'subject': '01', 'run': 9}"),
    "events.tsv missing": ("glm", lambda b, t: (b / EVENTS).unlink() or [], 66, "No events.tsv"),
    "events.tsv empty": ("glm", lambda b, t: (b / EVENTS).write_text("") or [], 65, "is empty"),
    "events.tsv lacks columns": ("glm", lambda b, t: _edit_tsv(b / EVENTS, lambda f: f.drop(
        columns="duration")) or [], 65, "lacks the column(s) ['duration']"),
    "no trial_type column": ("glm", lambda b, t: _edit_tsv(b / EVENTS, lambda f: f.rename(
        columns={"trial_type": "stim_type"})) or [], 65, f"{SUB}_events.tsv has no 'trial_type' column naming the "
        "conditions (its columns: onset, duration, stim_type); name the one that does with --condition-column"),
    "condition column absent": ("glm", lambda b, t: ["--condition-column", "category"], 65,
                                "has no 'category' column naming the conditions (its columns: onset, duration, "
                                "trial_type)"),
    "only a task without events": ("glm", lambda b, t: _add_rest_task(b) or ["--task", "rest"], 66,
                                   "No events.tsv for any run of sub-01_task-rest: nothing to fit (the models need "
                                   "events; choose a task that has them with --task)"),
    "negative duration": ("glm", lambda b, t: _edit_tsv(b / EVENTS, lambda f: f.loc.__setitem__(
        (1, "duration"), -1.0)) or [], 65, "negative duration"),
    "no event reaches the run": ("glm", lambda b, t: _edit_tsv(b / EVENTS, lambda f: f.assign(onset=500.0)) or [],
                                 65, f"{SUB}_events.tsv: no event reaches the run (onsets 500 to 500 s, the run "
                                     "lasts 0 to 80 s: 40 volumes × 2 s)"),
    "TR missing": ("glm", lambda b, t: _set_tr(b, None, 0.0), 65, "no RepetitionTime in its sidecars and none in the image header"),
    "TR disagrees": ("glm", lambda b, t: _set_tr(b, 2.0, 1.5), 65, "disagrees with 1.5 s in its header"),
    "confounds shorter than the run": ("glm", lambda b, t: _edit_tsv(b / CONFOUNDS, lambda f: f.drop(
        index=f.index[-5:])) or [], 65, "has 35 rows but the BOLD has 40 volumes"),
    "confounds n/a mid-run": ("glm", lambda b, t: _edit_tsv(b / CONFOUNDS, lambda f: f.loc.__setitem__(
        (10, "trans_x"), np.nan)) or [], 65, "contains non-finite values after nilearn's filling of n/a rows"),
    "BOLD and mask shapes differ": ("glm", lambda b, t: nib.Nifti1Image(
        np.ones((5, 5, 5), np.uint8), np.eye(4)).to_filename(b / MASK) or [], 65, "(shape (5, 5, 5)) does not match"),
    "truncated NIfTI": ("glm", lambda b, t: _truncate(b / BOLD) or [], 65, "Cannot read the data of sub-01_task-localizer_run-1_space"),
    "not a NIfTI": ("glm", lambda b, t: _file(b / BOLD) or [], 65, "Cannot read sub-01_task-localizer_run-1_space"),
    "all-zero BOLD": ("glm", lambda b, t: _edit_bold(b, np.zeros_like) or [], 65,
                      "The BOLD of sub-01_task-localizer_run-1 is constant in every voxel or vertex"),
    "OUTPUT_DIR is BIDS_DIR": ("glm", lambda b, t: ["OUTPUT_DIR=" + str(b)], 64, "must not be BIDS_DIR"),
    "OUTPUT_DIR inside BIDS_DIR": ("glm", lambda b, t: ["OUTPUT_DIR=" + str(b / "sub-01/out")], 64,
                                   "must not be BIDS_DIR or inside it"),
    "OUTPUT_DIR not creatable": ("glm", lambda b, t: _file(t / "file") or ["OUTPUT_DIR=" + str(t / "file/out")], 73,
                                 "Cannot create or write OUTPUT_DIR"),
    "stim_file missing": ("prf", lambda b, t: (b / "stimuli/bars.npy").unlink() or ["--model", "prf2d"], 66,
                          "Stimulus file bars.npy not found"),
    "stim_file too few frames": ("prf", lambda b, t: _stimulus_frames(b, 30) or ["--model", "prf2d"], 65,
                                 "bars.npy has 30 frames at 0.5 Hz (60 s) but the event lasts 80 s"),
    "unknown model": ("glm", lambda b, t: ["--model", "svm"], 64, "Invalid value for '--model'"),
    "unknown HRF": ("glm", lambda b, t: ["--hrf", "boynton"], 64, "Invalid value for '--hrf'"),
    "tuning model without --stimulus-column": ("glm", lambda b, t: ["--model", "loggauss1d"], 64,
                                               "--model loggauss1d needs --stimulus-column"),
    "von Mises without a period": ("glm", lambda b, t: ["--model", "vonmises1d", "--stimulus-column", "x"], 64,
                                   "--model vonmises1d needs --stimulus-period 180"),
    "several models without cross-validation": ("glm", lambda b, t: ["--model", "glm,prf2d", "--cv", "none"], 64,
                                                "compared by cross-validated R²"),
    "stimulus column absent": ("glm", lambda b, t: ["--model", "gauss1d", "--stimulus-column", "numerosity"], 65,
                               "has no 'numerosity' column with the stimulus value of each event"),
    "non-numeric stimulus values": ("glm", lambda b, t: ["--model", "gauss1d", "--stimulus-column", "trial_type"],
                                    65, "the trial_type column has non-numeric values"),
    "unknown option": ("glm", lambda b, t: ["--smooth", "4"], 64, "No such option '--smooth'"),
    "negative alpha": ("glm", lambda b, t: ["--alpha", "-1"], 64, "Invalid value for '--alpha'"),
    "bad memory limit": ("glm", lambda b, t: ["--memory-limit", "lots"], 64, "Invalid --memory-limit"),
    "unknown analysis level": ("glm", lambda b, t: ["LEVEL=session"], 17, "Unknown analysis level 'session'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_cleanly(template, tmp_path, capsys, case):
    dataset, breaks, code, message = CASES[case]
    bids = tmp_path / "bids"
    shutil.copytree(template / dataset, bids)
    out = tmp_path / "out"
    extra = breaks(bids, tmp_path)
    positional = {"BIDS_DIR": str(bids), "OUTPUT_DIR": str(out), "LEVEL": "participant"}
    for item in [e for e in extra if e.split("=", 1)[0] in positional]:
        key, value = item.split("=", 1)
        positional[key] = value
        extra.remove(item)
    before = _files(Path(positional["OUTPUT_DIR"]))
    assert main([*positional.values(), "--work-dir", str(tmp_path / "work"), *FAST, *extra]) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("bids_encoder: error: ") and message in lines[-1], lines[-3:]
    assert _files(Path(positional["OUTPUT_DIR"])) == before  # nothing written, nothing left half-written
    assert _files(out) == []


# ---- inputs that are normal for fMRIPrep data: they fit --------------------------------------------------------------

def _fit(bids, tmp_path, capsys, *extra):
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", "--work-dir", str(tmp_path / "work"), *FAST, *extra]) == 0
    return out, capsys.readouterr().err


def _statmaps(out, pattern):
    """The maps matching ``pattern`` under ``out``, leaving out the cross-validated R² map (``stat-cvrsquared``),
    which the cross-validation work adds beside every fit: not what these tests are about."""
    return [p for p in Path(out).glob(pattern) if "stat-cvrsquared" not in p.name]


def _map(out, stat):
    path = next(out.glob(f"sub-01/func/*{stat}_statmap.nii.gz"))
    return np.asarray(nib.load(path).dataobj)


def test_confounds_first_row_na_is_normal(template, tmp_path, capsys):
    """fMRIPrep writes n/a in the first row of derivative columns: nilearn fills it; the fit uses every volume."""
    bids = tmp_path / "bids"
    shutil.copytree(template / "glm", bids)
    frame = pd.read_csv(bids / CONFOUNDS, sep="\t", na_values=["n/a"])
    assert frame["trans_x_derivative1"].isna().iloc[0]  # the fixture is fMRIPrep-like
    out, _ = _fit(bids, tmp_path, capsys, "--confounds-param", "motion=derivatives")
    design = pd.read_csv(next(out.glob("sub-01/func/*_design.tsv")), sep="\t")
    assert len(design) == 2 * N_VOLUMES and np.isfinite(design.drop(columns="run").to_numpy()).all()
    assert "trans_x_derivative1_run1" in design.columns


def test_constant_and_nan_voxels_are_left_out_with_a_warning(template, tmp_path, capsys):
    """Voxels constant in time (e.g. zero) or NaN in the BOLD are not fitted (NaN in the maps); the rest is."""
    bids = tmp_path / "bids"
    shutil.copytree(template / "glm", bids)
    mask = np.asarray(nib.load(bids / MASK).dataobj).astype(bool)
    inside = np.argwhere(mask)
    zero, constant, nan = map(tuple, inside[:3])

    def edit(data):
        data[zero] = 0.0
        data[constant] = 1234.5
        data[nan + (slice(10, 12),)] = np.nan
        return data

    _edit_bold(bids, edit)
    out, err = _fit(bids, tmp_path, capsys)
    assert "1 voxel(s) with NaN or infinite samples are not fitted" in err
    assert "3 voxel(s) or vertices without signal in some run(s) are not fitted" in err  # run 2 is intact
    for stat in ("contrast-faces_stat-effect", "contrast-faces_stat-z", "stat-rsquared"):
        values = _map(out, stat)
        assert np.isnan(values[zero]) and np.isnan(values[constant]) and np.isnan(values[nan])
        assert np.isfinite(values[mask]).sum() == mask.sum() - 3
        assert not np.isinf(values).any()
    sidecar = json.loads(next(out.glob("sub-01/func/*stat-rsquared_statmap.json")).read_text())
    assert sidecar["Processing"]["VoxelsFitted"] == mask.sum() - 3


def test_events_outside_the_run_fit_with_a_warning(template, tmp_path, capsys):
    """Real events files hold events after the last volume (OpenNeuro ds000001: 604.9 s in a 600 s run) or before
    the first: they are modelled as they happened, with a warning (it was exit 65)."""
    bids = tmp_path / "bids"
    shutil.copytree(template / "glm", bids)

    def edit(frame):
        frame.loc[1, "onset"] = 500.0
        frame.loc[2, ["onset", "duration"]] = [-4.0, 6.0]
        frame.loc[3, ["onset", "duration"]] = [75.0, 10.0]

    _edit_tsv(bids / EVENTS, edit)
    n_events = len(pd.read_csv(bids / EVENTS, sep="\t"))
    out, err = _fit(bids, tmp_path, capsys)
    assert (f"{SUB}_events.tsv: 1 start before 0 s, 1 start after the end of the run (80 s), 1 end after it of "
            f"{n_events} event(s); modelled as they happened (the part of their response inside the run counts); "
            "1 do not reach any volume") in err
    assert {p.name.split("model-glm_")[1] for p in _statmaps(out, "sub-01/func/*_statmap.nii.gz")
            if "_stat-effect_" in p.name or "_stat-rsquared_" in p.name} == {
        "contrast-faces_stat-effect_statmap.nii.gz", "contrast-houses_stat-effect_statmap.nii.gz",
        "contrast-scenes_stat-effect_statmap.nii.gz", "stat-rsquared_statmap.nii.gz"}
    mask = np.asarray(nib.load(bids / MASK).dataobj).astype(bool)
    assert np.isfinite(_map(out, "stat-rsquared")[mask]).all()


def test_condition_column_names_the_conditions(template, tmp_path, capsys):
    """ds000117 names its conditions in stim_type: --condition-column picks that column."""
    bids = tmp_path / "bids"
    shutil.copytree(template / "glm", bids)
    for path in bids.glob("sub-01/func/*_events.tsv"):
        _edit_tsv(path, lambda f: f.rename(columns={"trial_type": "stim_type"}))
    out, _ = _fit(bids, tmp_path, capsys, "--condition-column", "stim_type")
    assert sorted(p.name.split("model-glm_")[1] for p in _statmaps(out, "sub-01/func/*_statmap.nii.gz")
                  if "_stat-effect_" in p.name or "_stat-rsquared_" in p.name) == [
        "contrast-faces_stat-effect_statmap.nii.gz", "contrast-houses_stat-effect_statmap.nii.gz",
        "contrast-scenes_stat-effect_statmap.nii.gz", "stat-rsquared_statmap.nii.gz"]


def test_task_without_events_is_skipped_when_another_can_run(template, tmp_path, capsys):
    bids = tmp_path / "bids"
    shutil.copytree(template / "glm", bids)
    _add_rest_task(bids)
    out, err = _fit(bids, tmp_path, capsys)
    assert "sub-01_task-rest: no events.tsv for any run; skipped (the models need events)" in err
    assert {p.name.split("_space-")[0] for p in _statmaps(out, "sub-01/func/*_statmap.nii.gz")} == {"sub-01_task-localizer"}
