"""Sweep over real raw BIDS layouts (bids-examples ds002, ds003, ds005, ds102, ds114, ds000117: their real events,
sidecars and names; 0-byte images).

For each, the raw tree of one subject is copied (text files copied, placeholder images linked), an fMRIPrep-like
derivatives tree is built beside it (6×6×6-voxel BOLD as long as the events imply at the sidecar's TR, a brain
mask, confounds with fMRIPrep's columns, derivative sidecars with StartTime when the raw data have SliceTiming),
with a planted effect per condition; then the participant level runs through the CLI on one subject and one task.
Each layout either fits — exit 0, the expected effect maps, effects recovered — or fails with a documented exit
code and a one-line message saying what to do.

The folder comes from ``BIDS_ENCODER_REAL_BIDS_DIR`` (default: ``../shared/real-bids`` beside the project root);
the tests skip only when it is absent.
"""

import json
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoder.cli import main
from bids_encoder.datasets.fmriprep_like import SPACE, build_fmriprep, copy_raw

pytestmark = pytest.mark.xdist_group(name="real_layouts")

ROOT = Path(__file__).resolve().parent.parent
REAL = Path(os.environ.get("BIDS_ENCODER_REAL_BIDS_DIR", ROOT.parent / "shared" / "real-bids"))
FAST = ["--model", "glm", "--confounds", "motion,high_pass,wm_csf", "--confounds-param", "motion=basic",
        "--no-report"]
ENTITY = re.compile(r"([a-z]+)-([a-zA-Z0-9]+)")


def _stem_entities(stem):
    return dict(ENTITY.findall(stem))

if not REAL.is_dir():
    pytest.skip(f"no real BIDS layouts at {REAL} (set BIDS_ENCODER_REAL_BIDS_DIR)", allow_module_level=True)


def _statmaps(out, pattern):
    """The maps matching ``pattern`` under ``out``, leaving out the cross-validated R² map (``stat-cvrsquared``),
    which the cross-validation work adds beside every fit: not what these tests are about."""
    return [p for p in Path(out).glob(pattern) if "stat-cvrsquared" not in p.name]


# dataset, subject, task(s) (several: no --task, one fit each), CLI arguments, builder options, expected exit code,
# expected message (errors)
LAYOUTS = {
    "ds002 three tasks": ("ds002", "02", ("deterministicclassification", "mixedeventrelatedprobe",
                                          "probabilisticclassification"), [], {}, 0, None),
    "ds002": ("ds002", "01", "deterministicclassification", [], {"unpad_runs": True}, 0, None),
    "ds003": ("ds003", "01", "rhymejudgment", [], {"derivative_sidecars": False}, 0, None),
    "ds005": ("ds005", "01", "mixedgamblestask", [], {}, 0, None),
    "ds102": ("ds102", "01", "flankertask", [], {}, 0, None),
    "ds114 fingerfootlips": ("ds114", "01", "fingerfootlips", [], {}, 0, None),
    "ds114 linebisection": ("ds114", "02", "linebisection", ["--session-label", "retest"], {}, 0, None),
    "ds000117": ("ds000117", "01", "facerecognition", [], {"unpad_runs": True}, 65,
                 "sub-01_ses-mri_task-facerecognition_run-01_events.tsv has no 'trial_type' column naming the "
                 "conditions (its columns: onset, duration, circle_duration, stim_type, trigger, button_pushed, "
                 "response_time, stim_file); name the one that does with --condition-column"),
    "ds000117 stim_type": ("ds000117", "01", "facerecognition", ["--condition-column", "stim_type"],
                           {"unpad_runs": True, "condition_column": "stim_type"}, 0, None),
}


@pytest.mark.parametrize("case", list(LAYOUTS))
def test_real_layout(case, tmp_path, capsys):
    dataset, subject, task, arguments, build, code, message = LAYOUTS[case]
    bids = tmp_path / dataset
    copy_raw(REAL / dataset, bids, subject)
    tasks = (task,) if isinstance(task, str) else task
    planted = {}
    for name in tasks:
        planted.update(build_fmriprep(bids, subject, name, **build))
    out = tmp_path / "out"
    sessions = [a for a in arguments if a not in ("--session-label",)]
    result = main([str(bids), str(out), "participant", "--participant-label", subject,
                   *(["--task", task] if len(tasks) == 1 else []), "--work-dir", str(tmp_path / "work"), *FAST,
                   *arguments])
    err = capsys.readouterr().err
    assert result == code, err[-2000:]
    if code:
        last = err.strip().splitlines()[-1]
        assert last == f"bids_encoder: error: {message}"
        assert not out.exists()
        return
    fits = {}  # one fit per (session, task): its runs' planted effects agree (same conditions, same values)
    for stem, (_, effects) in planted.items():
        session = _stem_entities(stem).get("ses")
        if "--session-label" in arguments and session not in sessions:
            continue
        fits.setdefault((session, _stem_entities(stem)["task"]), {}).update(effects)
    expected = []
    for (session, name), effects in fits.items():
        folder = out / f"sub-{subject}" / (f"ses-{session}/func" if session else "func")
        prefix = "_".join([f"sub-{subject}"] + ([f"ses-{session}"] if session else []) + [f"task-{name}"])
        for condition, value in effects.items():
            name = f"{prefix}_space-{SPACE}_model-glm_contrast-{condition}_stat-effect_statmap.nii.gz"
            expected.append(str((folder / name).relative_to(out)))
            median = float(np.nanmedian(np.asarray(nib.load(folder / name).dataobj)))
            assert median == pytest.approx(value, rel=0.05), (name, median)
        expected.append(str((folder / f"{prefix}_space-{SPACE}_model-glm_stat-rsquared_statmap.nii.gz").relative_to(out)))
    for name in {name for session, name in fits if session}:  # ≥ 2 sessions: the fixed effects over them, ses absent
        combined = [effects for (session, task_name), effects in fits.items() if session and task_name == name]
        for condition in combined[0] if len(combined) > 1 else ():
            path = out / f"sub-{subject}/func/sub-{subject}_task-{name}_space-{SPACE}_model-glm_contrast-{condition}_" \
                         "stat-effect_statmap.nii.gz"
            expected.append(str(path.relative_to(out)))
            median = float(np.nanmedian(np.asarray(nib.load(path).dataobj)))
            assert median == pytest.approx(combined[0][condition], rel=0.05), (path.name, median)
    assert sorted(str(p.relative_to(out)) for p in _statmaps(out, "**/*_statmap.nii.gz")
                  if "_stat-effect_" in p.name or "_stat-rsquared_" in p.name) == sorted(expected)
    for path in expected:  # every effect has its t map (first-level inference)
        if "_stat-effect_" in path:
            assert (out / path.replace("_stat-effect_", "_stat-t_")).is_file(), path
    for session, name in fits:  # every run's volumes are in the design
        design = next(out.glob(f"sub-{subject}/{f'ses-{session}/' if session else ''}func/*task-{name}_*_design.tsv"))
        n_volumes = sum(n for stem, (n, _) in planted.items()
                        if (_stem_entities(stem).get("ses"), _stem_entities(stem)["task"]) == (session, name))
        assert len(pd.read_csv(design, sep="\t")) == n_volumes


def test_task_without_events_is_skipped_beside_one_with_events(tmp_path, capsys):
    """ds003 with a resting-state run that fMRIPrep also processed (no events.tsv): it is skipped with a warning."""
    bids = tmp_path / "ds003"
    copy_raw(REAL / "ds003", bids, "01")
    (bids / "sub-01/func/sub-01_task-rest_bold.nii.gz").symlink_to(REAL / "ds003/sub-01/func/sub-01_task-rhymejudgment_bold.nii.gz")
    (bids / "task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.0, "TaskName": "rest"}))
    build_fmriprep(bids, "01", "rhymejudgment")
    build_fmriprep(bids, "01", "rest")
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", "--participant-label", "01", "--work-dir",
                 str(tmp_path / "work"), *FAST]) == 0
    assert "sub-01_task-rest: no events.tsv for any run; skipped (the models need events)" in capsys.readouterr().err
    assert sorted(p.name for p in _statmaps(out, "**/*_statmap.nii.gz")
                  if "_stat-effect_" in p.name or "_stat-rsquared_" in p.name) == [
        f"sub-01_task-rhymejudgment_space-{SPACE}_model-glm_contrast-{c}_stat-effect_statmap.nii.gz"
        for c in ("pseudoword", "word")] + [f"sub-01_task-rhymejudgment_space-{SPACE}_model-glm_stat-rsquared_statmap.nii.gz"]


def test_generators_take_strings_copy_twice_and_say_what_is_missing(tmp_path):
    """copy_raw and build_fmriprep take str paths as well as Path; copying the same subject again works (the image
    links are replaced); a task without raw BOLD is a FileNotFoundError naming it (it was an assert, gone under -O)."""
    raw = tmp_path / "raw"
    for _ in range(2):
        copy_raw(str(REAL / "ds005"), str(raw), "01")
    links = sorted(raw.glob("sub-01/func/*_bold.nii.gz"))
    assert links and all(link.is_symlink() and link.resolve().is_file() for link in links)
    planted = build_fmriprep(str(raw), "01", "mixedgamblestask", shape=(4, 4, 4))
    assert len(planted) == len(links)
    with pytest.raises(FileNotFoundError, match="sub-01 task-nosuchtask"):
        build_fmriprep(str(raw), "01", "nosuchtask", shape=(4, 4, 4))
