import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoder.bids.layout import InputError, find_runs, load_layout
from bids_encoder.datasets.example_dataset import SPACE, make_example_dataset


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    root = tmp_path_factory.mktemp("example") / "bids"
    truth = make_example_dataset(root, n_subjects=2, n_runs=2, n_volumes=60, shape=(8, 9, 7))
    return root, truth


def test_example_dataset_is_fmriprep_like(example):
    root, truth = example
    deriv = root / "derivatives" / "fmriprep" / "sub-01" / "func"
    bold = nib.load(deriv / f"sub-01_task-localizer_run-1_space-{SPACE}_res-2_desc-preproc_bold.nii.gz")
    assert bold.shape == (8, 9, 7, 60) and bold.header.get_zooms()[3] == pytest.approx(2.0)
    confounds = pd.read_csv(deriv / "sub-01_task-localizer_run-1_desc-confounds_timeseries.tsv", sep="\t")
    assert np.isnan(confounds["trans_x_derivative1"].iloc[0]) and len(confounds) == 60
    events = pd.read_csv(root / "sub-01" / "func" / "sub-01_task-localizer_run-1_events.tsv", sep="\t")
    assert list(events.columns) == ["onset", "duration", "trial_type"]
    assert (np.abs(events["onset"] / 2.0 - np.round(events["onset"] / 2.0)) > 0).any()  # off the volume grid
    assert set(truth.effects) == {(s, c) for s in ("01", "02") for c in truth.conditions}


def test_find_runs_discovers_files_and_tr(example, tmp_path):
    root, _ = example
    layout = load_layout(root, database_dir=tmp_path / "work")
    runs = find_runs(layout, "01", task="localizer")
    assert [r.run for r in runs] == [1, 2]
    for r in runs:
        assert r.tr == pytest.approx(2.0)
        assert r.mask.name.endswith("_desc-brain_mask.nii.gz") and f"run-{r.run}_" in r.mask.name
        assert r.confounds.name == f"sub-01_task-localizer_run-{r.run}_desc-confounds_timeseries.tsv"
        assert r.events.name == f"sub-01_task-localizer_run-{r.run}_events.tsv"
    assert [r.run for r in find_runs(layout, "02", run=2)] == [2]
    assert list((tmp_path / "work").iterdir())  # the persistent pybids database


@pytest.mark.parametrize(("kwargs", "code", "message"), [
    ({"subject": "07"}, 18, "No preprocessed BOLD"),
    ({"subject": "01", "task": "rest"}, 18, "No preprocessed BOLD"),
    ({"subject": "01", "space": "T1w"}, 18, "space-T1w"),
])
def test_find_runs_reports_empty_selections(example, kwargs, code, message):
    root, _ = example
    with pytest.raises(InputError, match=message) as error:
        find_runs(load_layout(root), **kwargs)
    assert error.value.exit_code == code


def test_layout_errors(tmp_path, example):
    with pytest.raises(InputError, match="does not exist") as error:
        load_layout(tmp_path / "missing")
    assert error.value.exit_code == 66
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a BIDS dataset") as error:
        load_layout(tmp_path / "empty")
    assert error.value.exit_code == 16
    root, _ = example
    with pytest.raises(InputError, match="No fMRIPrep derivatives"):
        load_layout(root, derivatives=tmp_path)


def test_tr_disagreement_is_an_error(tmp_path):
    root = tmp_path / "bids"
    make_example_dataset(root, n_subjects=1, n_runs=1, n_volumes=30, shape=(5, 5, 5))
    sidecar = (root / "derivatives" / "fmriprep" / "sub-01" / "func" /
               f"sub-01_task-localizer_run-1_space-{SPACE}_res-2_desc-preproc_bold.json")
    sidecar.write_text(json.dumps({"RepetitionTime": 2.5, "TaskName": "localizer"}))
    with pytest.raises(InputError, match="2.5 s in the sidecar .* disagrees with 2.0 s") as error:
        find_runs(load_layout(root), "01")
    assert error.value.exit_code == 65


def test_events_are_inherited(tmp_path):
    """ds114 keeps its block designs at the top level (task-X_events.tsv) for every subject and session; a
    subject's own file overrides it; runs match as integers (raw run-01, derivative run-1)."""
    from bids_encoder.bids.layout import inherited_events

    root = tmp_path / "bids"
    make_example_dataset(root, n_subjects=2, n_runs=2, n_volumes=20, shape=(3, 3, 3))
    for path in root.glob("sub-*/func/*_events.tsv"):
        path.rename(path.with_name(path.name.replace("run-", "run-0")))
    top = root / "task-localizer_events.tsv"
    top.write_text("onset\tduration\ttrial_type\n2\t1\tfaces\n")
    for path in root.glob("sub-02/func/*_events.tsv"):
        path.unlink()
    layout = load_layout(root)
    assert [r.events.name for r in find_runs(layout, "01")] == [
        "sub-01_task-localizer_run-01_events.tsv", "sub-01_task-localizer_run-02_events.tsv"]
    assert [r.events for r in find_runs(layout, "02")] == [top, top]
    assert inherited_events(layout, {"subject": "03", "task": "localizer", "session": "a"}) == [str(top)]
    assert inherited_events(layout, {"subject": "01", "task": "other"}) == []


def test_hrf_auto_builds_its_canonical_design_from_the_condition_column(tmp_path):
    """Regression: with --hrf auto, the second (canonical) design read trial_type whatever --condition-column said,
    so a dataset whose conditions are in another column failed (no 'trial_type' column)."""
    from bids_encoder.bids.inputs import assemble_inputs

    root = tmp_path / "ds"
    make_example_dataset(root, n_subjects=1, n_runs=1, n_volumes=40, shape=(4, 4, 4), conditions=("a", "b"))
    for events in root.rglob("*_events.tsv"):
        events.write_text(events.read_text().replace("trial_type", "condition", 1))
    runs = find_runs(load_layout(root, database_dir=tmp_path / "work"), "01", task="localizer")
    auto = assemble_inputs(runs, "glm", hrf="auto", condition_column="condition")
    canonical = assemble_inputs(runs, "glm", hrf="canonical", condition_column="condition")
    assert list(auto.convolved.columns) == ["a", "b"]
    np.testing.assert_array_equal(auto.convolved.to_numpy(), canonical.paradigm.to_numpy())
