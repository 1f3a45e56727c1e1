"""Stimulus apertures from stimuli/ and BOLD ↔ arrays for NIfTI, GIFTI and CIFTI."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoder.bids.images import MapWriter, load_bold_runs, space_kind
from bids_encoder.bids.layout import InputError, RunInputs
from bids_encoder.bids.stimuli import run_apertures


@pytest.fixture
def stimuli(tmp_path, rng):
    folder = tmp_path / "stimuli"
    folder.mkdir()
    frames = (rng.random((20, 4, 3)) > 0.5).astype(np.float32) * 255
    frames[0, 0, 0] = 255
    np.save(folder / "bars.npy", frames)
    (folder / "bars.json").write_text(json.dumps({"VisualAngleX": [-3, 3], "VisualAngleY": [2, -2]}))
    return folder, frames / 255


def events(tmp_path, rows):
    path = tmp_path / "events.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


def test_one_frame_per_volume(tmp_path, stimuli):
    folder, frames = stimuli
    path = events(tmp_path, {"onset": [0.0], "duration": [30.0], "stim_file": ["bars.npy"]})
    paradigm, grid, used = run_apertures(path, folder, 20, 1.5, start_time=0.75)  # volume k sees [k·TR, (k+1)·TR)
    np.testing.assert_allclose(paradigm.to_numpy(), frames.reshape(20, -1), atol=1e-6)
    assert grid.to_numpy()[:4].tolist() == [[-3, 2], [-3, 0], [-3, -2], [-1, 2]]  # x-major, y as the sidecar says
    assert used == [folder / "bars.npy"]


def test_frames_resampled_to_the_tr(tmp_path, stimuli):
    folder, frames = stimuli
    (folder / "bars.json").write_text(json.dumps({"VisualAngleX": [-3, 3], "VisualAngleY": [2, -2],
                                                  "FrameRate": 2 / 1.5}))
    path = events(tmp_path, {"onset": [3.0], "duration": [15.0], "stim_file": ["bars.npy"]})
    paradigm, _, _ = run_apertures(path, folder, 20, 1.5)
    flat = frames.reshape(20, -1)
    # volume k averages [k·1.5 - 0.75, k·1.5 + 0.75); frames last 0.75 s from 3 s on
    np.testing.assert_allclose(paradigm.to_numpy()[2], flat[0] / 2, atol=1e-6)
    np.testing.assert_allclose(paradigm.to_numpy()[3], (flat[1] + flat[2]) / 2, atol=1e-6)
    assert np.all(paradigm.to_numpy()[:2] == 0) and np.all(paradigm.to_numpy()[13:] == 0)


def test_stimulus_partly_outside_the_run(tmp_path, stimuli, caplog):
    """Frames shown after the last volume (or before the first) are left out with a warning, not an error."""
    folder, frames = stimuli
    path = events(tmp_path, {"onset": [-3.0, 22.5], "duration": [30.0, 30.0], "stim_file": ["bars.npy"] * 2})
    with caplog.at_level("WARNING", logger="bids_encoder.bids.stimuli"):
        paradigm, _, _ = run_apertures(path, folder, 20, 1.5, start_time=0.75)
    flat = frames.reshape(20, -1)
    # volume k sees [k·1.5, (k+1)·1.5): the first showing from frame 2 on, the second's frames 0–4 in volumes 15–19
    expected = flat[2:22].copy()
    expected = np.vstack([flat[2:], np.zeros((2, flat.shape[1]))])
    expected[15:] += flat[:5]
    np.testing.assert_allclose(paradigm.to_numpy(), expected, atol=1e-6)
    assert caplog.records[-1].getMessage() == (
        "events.tsv: stimuli shown partly outside the run (bars.npy from -3 s: 2 of 20 frames; bars.npy from "
        "22.5 s: 15 of 20 frames); the frames inside it are used")


def test_nifti_apertures_match_numpy(tmp_path, stimuli):
    folder, frames = stimuli
    nib.Nifti1Image(np.moveaxis(frames, 0, -1)[:, :, np.newaxis, :], np.eye(4)).to_filename(folder / "bars.nii.gz")
    (folder / "bars.json").write_text(json.dumps({"VisualAngleX": [-3, 3], "VisualAngleY": [2, -2]}))
    path = events(tmp_path, {"onset": [0.0], "duration": [30.0], "stim_file": ["bars.nii.gz"]})
    paradigm, _, _ = run_apertures(path, folder, 20, 1.5, start_time=0.75)
    np.testing.assert_allclose(paradigm.to_numpy(), frames.reshape(20, -1), atol=1e-6)


@pytest.mark.parametrize("rows, message", [
    ({"onset": [0.0], "duration": [30.0], "stim_file": ["missing.npy"]}, "not found"),
    ({"onset": [0.0], "duration": [12.0], "stim_file": ["bars.npy"]}, "20 frames"),
    ({"onset": [40.0], "duration": [30.0], "stim_file": ["bars.npy"]},
     r"no stimulus frame is shown during the run \(0 to 30 s: 20 volumes × 1.5 s\)"),
    ({"onset": [0.0], "duration": [30.0], "stim_file": ["../bars.npy"]}, "inside stimuli/"),
    ({"onset": [0.0], "duration": [30.0]}, "stim_file"),
])
def test_bad_stimuli(tmp_path, stimuli, rows, message):
    folder, _ = stimuli
    with pytest.raises(InputError, match=message) as error:
        run_apertures(events(tmp_path, rows), folder, 20, 1.5)
    assert error.value.exit_code in (65, 66)


def test_space_kinds():
    assert [space_kind(s) for s in ("MNI152NLin2009cAsym", "T1w", "fsnative", "fsaverage5", "fsLR")] == [
        "volume", "volume", "gifti", "gifti", "cifti"]


def test_cifti_round_trip(tmp_path, rng):
    mask = np.zeros((3, 4, 5), bool)
    mask[1, 1:3, 2:4] = True
    models = nib.cifti2.BrainModelAxis.from_mask(mask, name="thalamus_left", affine=np.eye(4))
    series = nib.cifti2.SeriesAxis(start=0, step=1.5, size=30)
    values = rng.standard_normal((30, len(models))).astype(np.float32)
    path = tmp_path / "sub-01_task-x_space-fsLR_den-91k_bold.dtseries.nii"
    nib.Cifti2Image(values, header=(series, models)).to_filename(path)
    run = RunInputs(subject="01", task="x", run=None, session=None, space="fsLR", bold=path, mask=None,
                    confounds=None, events=None, tr=1.5)
    data, n_volumes, writer = load_bold_runs([run], "cifti")
    assert n_volumes == [30] and data.flags.c_contiguous
    np.testing.assert_array_equal(data, values.T)
    out = tmp_path / "map.dscalar.nii"
    writer.write(values[0], out, name="x")
    image = nib.load(out)
    np.testing.assert_array_equal(image.get_fdata()[0], values[0])
    assert image.header.get_axis(1) == models and list(image.header.get_axis(0).name) == ["x"]


def test_volume_writer_puts_nan_outside_the_mask():
    mask = np.zeros((2, 3, 4), bool)
    mask[0, 1, :] = True
    writer = MapWriter("volume", reference=nib.Nifti1Image(np.zeros((2, 3, 4, 5), np.float32), np.eye(4)),
                       mask=mask)
    image = writer.to_image(np.arange(4, dtype=np.float32))
    values = image.get_fdata()
    assert np.all(np.isnan(values[~mask])) and values[0, 1].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="Expected 4 values"):
        writer.to_image(np.zeros(3))
