"""Names that fit the file system, whatever the labels (issue #32): a real layout (ds102's events and sidecars,
two participants) renamed with the longest labels seen in public data — the 73-character task label of an OpenfMRI
Posner-cueing study and sentence-long trial_type values (up to 107 characters) — runs through the participant and
group levels; every name stays within 255 bytes, the full names are kept in the sidecars, the design TSV and the
reports. Names that cannot fit are refused before anything is fitted (exit 73)."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from bids_encoder.bids import derivatives
from bids_encoder.bids.derivatives import (
    MAX_LABEL,
    bids_label,
    condition_labels,
    derivative_path,
    short_label,
)
from bids_encoder.cli import main
from bids_encoder.datasets.fmriprep_like import build_fmriprep, copy_raw

pytestmark = pytest.mark.xdist_group(name="real_layouts")

ROOT = Path(__file__).resolve().parent.parent
REAL = Path(os.environ.get("BIDS_ENCODER_REAL_BIDS_DIR", ROOT.parent / "shared" / "real-bids"))
TASK = "IncidentalencodingtaskusingPosnercueingparadigmwithobjectvgreeblejudgment"
LONG_TASK = TASK + "RepeatedWithAnotherSessionOfTheSameParadigmForTesting"  # 125 characters: beyond MAX_TASK_LABEL
# ds102's trial types → sentences as that study's events say them (the longest is 107 characters)
SENTENCES = {
    "congruent_correct": "Valid Object Greeble: stimulus that was a tested and correctly judged greeble and that "
                         "followed a valid cue",
    "incongruent_correct": "Invalid Other Greeble: stimulus that was an untested or no response greeble and that "
                           "followed a invalid cue",
    "incongruent_incorrect": "Invalid Object Greeble: stimulus that was a tested but wrongly judged greeble that "
                             "followed an invalid cue",
}
FAST = ["--confounds", "motion,high_pass", "--confounds-param", "motion=basic", "--cv", "none"]


def _layout(tmp_path, task=TASK):
    bids = tmp_path / "bids"
    copy_raw(REAL / "ds102", bids, ["01", "02"])
    for path in sorted(bids.rglob("*flankertask*")):
        target = path.with_name(path.name.replace("flankertask", task))
        if path.is_symlink():
            target.symlink_to(path.resolve())
            path.unlink()
        else:
            path.rename(target)
    for events in bids.rglob("*_events.tsv"):
        frame = pd.read_csv(events, sep="\t", dtype=str)
        frame["trial_type"] = frame["trial_type"].map(SENTENCES)
        frame.to_csv(events, sep="\t", index=False)
    for subject in ("01", "02"):
        build_fmriprep(bids, subject, task)
    return bids


def _too_long(out):
    return [p for p in out.rglob("*") if len(p.name.encode()) > 255]


def test_longest_real_names_fit_and_keep_their_full_names(tmp_path, capsys):
    assert max(map(len, SENTENCES.values())) == 107 and len(TASK) == 73
    bids, out = _layout(tmp_path), tmp_path / "out"
    common = ["--work-dir", str(tmp_path / "work"), *FAST]
    assert main([str(bids), str(out), "participant", *common]) == 0, capsys.readouterr().err[-2000:]
    assert main([str(bids), str(out), "group", "--work-dir", str(tmp_path / "work")]) == 0
    capsys.readouterr()
    assert not _too_long(out)
    labels = condition_labels(SENTENCES.values(), warn=False)
    assert len(set(labels.values())) == 3 and all(len(short_label(label)) == MAX_LABEL for label in labels.values())
    func = out / "sub-01/func"
    for sentence, label in labels.items():  # the map's name has the short label, its sidecar the full names
        name = (f"sub-01_task-{TASK}_space-MNI152NLin2009cAsym_model-glm_contrast-{short_label(label)}_"
                "stat-effect_statmap")
        assert (func / f"{name}.nii.gz").is_file(), sorted(p.name for p in func.iterdir())[:5]
        contrast = json.loads((func / f"{name}.json").read_text())["Contrast"]
        assert contrast["Condition"] == sentence and contrast["Name"] == label
        assert contrast["Label"] == short_label(label)
    design = next(func.glob("*_design.tsv"))
    assert set(SENTENCES.values()) <= set(pd.read_csv(design, sep="\t").columns)
    report = (out / "sub-01.html").read_text()
    assert SENTENCES["incongruent_correct"] in report
    group_maps = sorted((out / "group").glob(f"task-{TASK}_*_contrast-*_stat-effect_statmap.nii.gz"))
    assert len(group_maps) == 3  # both participants' maps found by their shortened names
    sidecar = json.loads(group_maps[0].with_name(group_maps[0].name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["Contrast"]["Condition"] in SENTENCES.values() and sidecar["NumberOfParticipants"] == 2


def test_task_label_beyond_the_limit_is_shortened_the_same_way_everywhere(tmp_path, capsys):
    """… and a trial_type without a letter or digit (a fixation cross, '+') is a condition like any other."""
    bids, out = _layout(tmp_path, LONG_TASK), tmp_path / "out"
    events = next(bids.glob("sub-01/func/*_run-01_events.tsv"))
    frame = pd.read_csv(events, sep="\t", dtype=str)
    frame.loc[::4, "trial_type"] = "+"
    frame.to_csv(events, sep="\t", index=False)
    assert main([str(bids), str(out), "participant", "--participant-label", "01", "--no-report",
                 "--work-dir", str(tmp_path / "work"), *FAST]) == 0, capsys.readouterr().err[-2000:]
    short = short_label(LONG_TASK, derivatives.MAX_TASK_LABEL)
    assert len(short) == derivatives.MAX_TASK_LABEL and short.startswith(TASK[:72])
    names = {p.name for p in (out / "sub-01/func").iterdir()}
    assert names and all(f"_task-{short}_" in name for name in names) and not _too_long(out)
    cross = next(p for p in (out / "sub-01/func").glob(f"*_contrast-condition{derivatives._digest('+')}_stat-z_*.json"))
    assert json.loads(cross.read_text())["Contrast"]["Condition"] == "+"


def test_names_that_cannot_fit_are_refused_before_fitting(tmp_path, capsys, monkeypatch):
    """A file system with 160-byte names (eCryptfs allows 143): exit 73 and one line, nothing written."""
    monkeypatch.setattr(derivatives, "name_limits", lambda folder: (160, 4096))
    bids, out = _layout(tmp_path), tmp_path / "out"
    assert main([str(bids), str(out), "participant", "--participant-label", "01",
                 "--work-dir", str(tmp_path / "work"), *FAST]) == 73
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"bids_encoder: error: sub-01_task-{TASK}_space-MNI152NLin2009cAsym_model-glm: output "
                           "file names would be up to ") and "more than the 160 this file system allows" in last
    assert f"task ({len(TASK)} characters)" in last
    assert not out.exists() or not any(out.rglob("*.nii.gz"))


def test_labels_are_deterministic_and_idempotent(tmp_path):
    label = bids_label(SENTENCES["incongruent_correct"])
    assert short_label(label) == short_label(label) == short_label(short_label(label))
    assert short_label(label) == "InvalidOtherGreebleStimu" + "d5ee0a2a"  # SHA-1 of the label: every machine alike
    assert short_label("faces") == "faces"
    path = derivative_path(tmp_path, {"subject": "01", "task": TASK, "model": "glm", "contrast": label,
                                      "stat": "effect"})
    assert f"_contrast-{short_label(label)}_" in path.name
    assert condition_labels(["+", "faces left", "faces_left", "houses"], warn=False) == {
        "+": "condition" + derivatives._digest("+"), "faces left": "facesLeft" + derivatives._digest("faces left"),
        "faces_left": "facesLeft" + derivatives._digest("faces_left"), "houses": "houses"}
