import json
import os

import nibabel as nib
import numpy as np
import pytest

from bids_encoder import __version__
from bids_encoder.bids.derivatives import (
    atomic_write,
    bids_label,
    derivative_path,
    output_layout,
    write_dataset_description,
    write_json,
)


def test_labels_and_names(tmp_path):
    assert bids_label("faces_left") == "facesLeft" and bids_label("hrf delay") == "hrfDelay"
    with pytest.raises(ValueError):
        bids_label("__")
    entities = {"subject": "01", "session": "2", "task": "prf", "space": "MNI152NLin2009cAsym", "res": "2",
                "model": "glm", "contrast": "faces_left", "stat": "effect"}
    path = derivative_path(tmp_path, entities)
    assert path == tmp_path / "sub-01" / "ses-2" / "func" / (
        "sub-01_ses-2_task-prf_space-MNI152NLin2009cAsym_res-2_model-glm_contrast-facesLeft_stat-effect_statmap.nii.gz")
    surface = derivative_path(tmp_path, {"subject": "01", "task": "prf", "hemi": "L", "space": "fsaverage5",
                                         "model": "prf2d", "stat": "rsquared"}, extension=".func.gii")
    assert surface.name == "sub-01_task-prf_hemi-L_space-fsaverage5_model-prf2d_stat-rsquared_statmap.func.gii"


def test_atomic_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "a" / "map.nii.gz"
    image = nib.Nifti1Image(np.ones((2, 2, 2), np.float32), np.eye(4))
    atomic_write(target, image.to_filename)
    assert nib.load(target).get_fdata().sum() == 8 and os.listdir(target.parent) == ["map.nii.gz"]

    def fails(tmp):
        open(tmp, "w").write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a" / "other.nii.gz", fails)
    assert os.listdir(target.parent) == ["map.nii.gz"]


@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_written_files_follow_the_umask(tmp_path, umask):
    """Derivatives are readable as any file the user writes (0644 under the usual umask, group-writable under a
    lab's 007), not private to the writer as the temporary file was (0600)."""
    old = os.umask(umask)
    try:
        path = write_json(tmp_path / "sidecar.json", {"a": 1})
        image = atomic_write(tmp_path / "map.nii.gz",
                             nib.Nifti1Image(np.ones((2, 2, 2), np.float32), np.eye(4)).to_filename)
    finally:
        os.umask(old)
    assert {oct(path.stat().st_mode & 0o777), oct(image.stat().st_mode & 0o777)} == {oct(0o666 & ~umask)}


def test_dataset_description_and_pybids_queries(tmp_path):
    out = tmp_path / "out"
    write_dataset_description(out, {"raw": tmp_path / "bids", "fmriprep": tmp_path / "bids/derivatives/fmriprep"})
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "bids_encoder"
    assert description["GeneratedBy"][0]["Version"] == __version__
    assert description["DatasetLinks"]["raw"] == (tmp_path / "bids").resolve().as_uri()
    image = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    for model, stat, contrast in [("glm", "effect", "faces"), ("glm", "rsquared", None), ("prf2d", "x", None)]:
        path = derivative_path(out, {"subject": "01", "task": "loc", "space": "MNI152NLin2009cAsym",
                                     "model": model, "contrast": contrast, "stat": stat})
        atomic_write(path, image.to_filename)
        write_json(path.with_name(path.name.replace(".nii.gz", ".json")), {"Description": stat})
    layout = output_layout(out)
    found = layout.get(model="glm", stat="effect", extension=".nii.gz")
    assert len(found) == 1 and found[0].entities["contrast"] == "faces"
    assert {f.entities["stat"] for f in layout.get(model="glm", extension=".nii.gz")} == {"effect", "rsquared"}
    assert layout.get(model="prf2d", stat="x", extension=".nii.gz")[0].get_metadata()["Description"] == "x"


@pytest.mark.parametrize(("environment", "container"), [
    ({}, None),  # outside this project's image: no claim, whether or not /.dockerenv exists
    ({"BIDS_ENCODER_CONTAINER": "docker", "BIDS_ENCODER_IMAGE": "bids_encoder:0.1.0-cpu"},
     {"Type": "docker", "Tag": "bids_encoder:0.1.0-cpu"}),
    ({"BIDS_ENCODER_CONTAINER": "apptainer"}, {"Type": "apptainer", "Tag": f"bids_encoder:{__version__}"}),
    ({"BIDS_ENCODER_CONTAINER": "docker", "APPTAINER_CONTAINER": "/x.sif"},  # the Docker image run by Apptainer
     {"Type": "apptainer", "Tag": f"bids_encoder:{__version__}"}),
    ({"APPTAINER_CONTAINER": "/other.sif"}, None),  # someone else's image
])
def test_container_is_claimed_only_in_this_projects_image(tmp_path, monkeypatch, environment, container):
    for name in ("BIDS_ENCODER_CONTAINER", "BIDS_ENCODER_IMAGE", "APPTAINER_CONTAINER", "SINGULARITY_CONTAINER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("pathlib.Path.exists", lambda self: True if str(self) == "/.dockerenv" else os.path.lexists(self))
    write_dataset_description(tmp_path, {"raw": tmp_path})
    generated_by = json.loads((tmp_path / "dataset_description.json").read_text())["GeneratedBy"][0]
    assert generated_by.get("Container") == container


def test_images_say_which_container_they_are():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    assert "    BIDS_ENCODER_CONTAINER=docker \\\n" in (root / "Dockerfile").read_text()
    assert "    export BIDS_ENCODER_CONTAINER=apptainer\n" in (root / "singularity/bids_encoder.def").read_text()
