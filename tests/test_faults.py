"""Faults and concurrency: a killed run resumes to the same maps, SIGINT/SIGTERM stop cleanly, concurrent
participant jobs share one OUTPUT_DIR, seeded CPU runs are identical, and extreme signal scales fit.

Every run is a separate ``python -m bids_encoder`` process, as users and schedulers start it. The reference is one
uninterrupted run of both participants (GLM with per-voxel HRFs: Levenberg–Marquardt, so that there is something
iterative to be deterministic about).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_encoder.datasets.example_dataset import make_example_dataset

pytestmark = pytest.mark.xdist_group(name="faults")

# --cv none: these tests are about signals, kills and concurrency; cross-validation would triple each fit's time
ARGS = ["--hrf", "fit", "--cv", "none", "--seed", "7", "--device", "cpu", "--confounds", "motion", "--confounds-param",
        "motion=basic"]
VOLATILE = ("WallTime",)  # sidecar fields that differ between identical runs (timings)


def _start(bids, out, work, *extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "bids_encoder", str(bids), str(out), "participant",
                             "--work-dir", str(work), *ARGS, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _finish(process, timeout=300):
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def _wait_for(pattern, folder, process, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(Path(folder).glob(pattern)):
            return
        assert process.poll() is None, f"the run ended before {pattern} appeared: {process.communicate()[1][-2000:]}"
        time.sleep(0.005)
    raise AssertionError(f"{pattern} did not appear within {timeout} s")


def _strip(content):
    if isinstance(content, dict):
        return {k: _strip(v) for k, v in content.items() if k not in VOLATILE}
    return content


def _outputs(out):
    """{relative path: array or sidecar} of every map and sidecar; the set of files (reports and logs aside)."""
    found = {}
    for path in sorted(Path(out).rglob("*")):
        relative = str(path.relative_to(out))
        if not path.is_file() or path.parts[-2] in ("logs", "figures") or path.suffix == ".html":
            continue
        if path.name.endswith(".nii.gz"):
            found[relative] = np.asarray(nib.load(path).dataobj)
        elif path.suffix == ".json":
            found[relative] = _strip(json.loads(path.read_text()))
        else:
            found[relative] = path.read_bytes()
    return found


def _assert_same(outputs, reference):
    assert sorted(outputs) == sorted(reference)
    for name, value in reference.items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(outputs[name], value, equal_nan=True), name
        else:
            assert outputs[name] == value, name


def _temporaries(out):
    return [str(p) for p in Path(out).rglob(".*")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    make_example_dataset(root / "bids", n_subjects=2, n_runs=2, n_volumes=80, shape=(11, 12, 9), noise=0.3, seed=4)
    code, err = _finish(_start(root / "bids", root / "reference", root / "work"))
    assert code == 0, err[-3000:]
    return root, _outputs(root / "reference")


def test_seeded_cpu_runs_give_identical_maps(dataset, tmp_path):
    root, reference = dataset
    # 3 conditions × (effect, variance, t, z, p), effects of interest (F, z, p), R², 2 HRF maps
    assert len([name for name in reference if name.endswith(".nii.gz")]) == 2 * 21
    code, err = _finish(_start(root / "bids", tmp_path / "out", tmp_path / "work"))
    assert code == 0, err[-3000:]
    _assert_same(_outputs(tmp_path / "out"), reference)


def test_sigkill_half_way_then_rerun_gives_the_uninterrupted_maps(dataset, tmp_path):
    root, reference = dataset
    out = tmp_path / "out"
    process = _start(root / "bids", out, tmp_path / "work")
    _wait_for("sub-01/func/*_design.tsv", out, process)  # sub-01's outputs are being written
    process.send_signal(signal.SIGKILL)
    code, _ = _finish(process)
    assert code == -signal.SIGKILL
    assert not list(out.glob("sub-01/func/*stat-rsquared_statmap.json"))  # unfinished: no marker
    assert not list(out.glob("sub-02/func/*"))
    code, err = _finish(_start(root / "bids", out, tmp_path / "work"))
    assert code == 0, err[-3000:]
    _assert_same(_outputs(out), reference)
    assert _temporaries(out) == []


class _SignalsItselfWhenCollected:
    """Sends SIGTERM to this process from its ``__del__``: Python runs the handler there and only prints its
    exception ("Exception ignored in …"), as happens when a signal arrives while the garbage collector finalises
    a TensorFlow or nibabel object."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):  # bytecodes: the pending handler runs here at the latest
            pass


def test_a_signal_lost_in_a_finaliser_still_stops_the_run(dataset, tmp_path, monkeypatch):
    """The swallowed SIGTERM comes while sub-02 is fitted: sub-02 must not be written, the exit code is 143."""
    from bids_encoder.cli import main
    from bids_encoder.workflows.common.interrupts import Terminated
    from bids_encoder.workflows.participant import run as participant

    root, reference = dataset
    swallowed, fits = [], []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: swallowed.append(unraisable.exc_type))
    fit_model = participant.fit_with_cv

    def fit_then_signal(*args, **kwargs):
        result = fit_model(*args, **kwargs)
        fits.append(result)
        if len(fits) == 2:
            _SignalsItselfWhenCollected()  # collected at once
        return result

    monkeypatch.setattr(participant, "fit_with_cv", fit_then_signal)
    out = tmp_path / "out"
    assert main([str(root / "bids"), str(out), "participant", "--work-dir", str(tmp_path / "work"), *ARGS]) == 143
    assert swallowed == [Terminated]  # the handler's exception was lost, as it is in a finaliser
    assert len(fits) == 2
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "logs" not in p.parts)
    assert [n for n in names if n.startswith("sub-01/func/")] == sorted(k for k in reference if k.startswith("sub-01/"))
    assert not [n for n in names if n.startswith("sub-02")] and _temporaries(out) == []


@pytest.mark.parametrize(("sent", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_sigterm_and_sigint_stop_cleanly(dataset, tmp_path, sent, code, name):
    """Sent while sub-02 is fitted: sub-01 stays whole, sub-02 leaves nothing, and a re-run completes."""
    root, reference = dataset
    out = tmp_path / "out"
    process = _start(root / "bids", out, tmp_path / "work")
    _wait_for("sub-01/func/*stat-rsquared_statmap.json", out, process)
    process.send_signal(sent)
    returned, err = _finish(process)
    assert returned == code, err[-3000:]
    assert err.strip().splitlines()[-1] == (f"bids_encoder: interrupted ({name}); finished outputs are kept, "
                                            "unfinished ones removed; a re-run resumes")
    outputs = _outputs(out)
    sub01 = {k: v for k, v in reference.items() if k.startswith("sub-01/")}
    _assert_same({k: v for k, v in outputs.items() if k.startswith("sub-01/")}, sub01)
    assert not [k for k in outputs if k.startswith("sub-02/")] and _temporaries(out) == []
    assert list((out / "logs").glob("participant_*.log"))  # the interrupted run's log is kept
    returned, err = _finish(_start(root / "bids", out, tmp_path / "work"))
    assert returned == 0, err[-3000:]
    _assert_same(_outputs(out), reference)


def test_concurrent_participant_jobs_share_one_output_dir(dataset, tmp_path):
    """Two jobs (as SLURM array tasks) started at once into one OUTPUT_DIR and one work dir."""
    root, reference = dataset
    out = tmp_path / "out"
    jobs = [_start(root / "bids", out, tmp_path / "work", "--participant-label", label) for label in ("01", "02")]
    for job in jobs:
        code, err = _finish(job)
        assert code == 0, err[-3000:]
    description = json.loads((out / "dataset_description.json").read_text())
    assert description == json.loads((root / "reference/dataset_description.json").read_text())
    _assert_same(_outputs(out), reference)
    assert _temporaries(out) == []
    assert len(list((out / "logs").glob("participant_sub-0*.log"))) == 2
    assert sorted(p.name for p in out.glob("*.html")) == ["sub-01.html", "sub-02.html"]


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_tiny_and_huge_signal_scales_fit_like_the_original(dataset, tmp_path, scale):
    """BOLD × 1e-6 and × 1e6: no NaN or inf where the original fits, every map as before (R², HRFs, and the
    effects and their statistics, in percent signal change)."""
    root, reference = dataset
    bids = tmp_path / "bids"
    shutil.copytree(root / "bids", bids, ignore=shutil.ignore_patterns("sub-02"))
    for path in bids.glob("derivatives/fmriprep/sub-01/func/*desc-preproc_bold.nii.gz"):
        image = nib.load(path)
        scaled = np.asarray(image.dataobj, dtype=np.float32) * np.float32(scale)
        nib.Nifti1Image(scaled, image.affine, image.header).to_filename(path)
    code, err = _finish(_start(bids, tmp_path / "out", tmp_path / "work", "--no-report"))
    assert code == 0, err[-3000:]
    outputs = _outputs(tmp_path / "out")
    maps = [name for name in reference if name.startswith("sub-01/") and name.endswith(".nii.gz")]
    for name in maps:
        original, values = reference[name], outputs[name]
        assert not np.isinf(values).any() and np.array_equal(np.isnan(values), np.isnan(original)), name
        fitted = np.isfinite(original)  # R², HRFs, effects (percent signal change) and their statistics
        assert np.median(np.abs(values[fitted] - original[fitted])) < 1e-3 * np.abs(original[fitted]).max(), name
        assert np.percentile(np.abs(values[fitted] - original[fitted]), 95) < 0.02 * np.abs(
            original[fitted]).max(), name
