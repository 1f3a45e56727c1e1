"""What the console shows: no TensorFlow start-up noise, one line per fit, the end-of-run table, --dry-run's plan;
and the logs kept in OUTPUT_DIR/logs."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import click
import nibabel as nib
import numpy as np
import pytest

from bids_encoder._tensorflow import filtered_stderr, is_noise
from bids_encoder.cli import main
from bids_encoder.cli.support import KEEP_LOGS, _prune_logs
from bids_encoder.datasets.example_dataset import make_example_dataset
from bids_encoder.workflows.common.records import FitRecord, summary_table

pytestmark = pytest.mark.xdist_group(name="console")

ROOT = Path(__file__).resolve().parent.parent
FIT = "sub-01_task-localizer_space-MNI152NLin2009cAsym_res-2_model-glm"
FAST = ["--confounds", "motion", "--confounds-param", "motion=basic", "--no-report"]
TF_NOISE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cuInit|oneDNN|cuda drivers|rebuild TensorFlow")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    make_example_dataset(root / "bids", n_subjects=1, n_runs=2, n_volumes=40, shape=(5, 6, 5), noise=0.1, seed=2)
    return root / "bids"


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*")) if Path(folder).exists() else []


def test_console_of_a_run_in_a_subprocess(dataset, tmp_path):
    """No TensorFlow start-up line on stderr (TF_CPP_MIN_LOG_LEVEL unset); the fit's start line, the table and the
    closing line; stdout empty."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "bids_encoder", str(dataset), str(out), "participant",
                           "--work-dir", str(tmp_path / "work"), *FAST], capture_output=True, text=True, env=env,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert not [line for line in lines if TF_NOISE.search(line)], lines
    sidecar = json.loads((out / f"sub-01/func/{FIT}_stat-rsquared_statmap.json").read_text())
    voxels = int(np.asarray(nib.load(next((dataset / "derivatives/fmriprep/sub-01/func").glob(
        "*run-1*_mask.nii.gz"))).dataobj).sum())
    assert sidecar["Processing"]["VoxelsFitted"] == voxels
    assert lines[0] == f"bids_encoder: {FIT}: fitting 2 run(s) with model glm, HRF canonical"
    assert lines[1].split() == ["fit", "status", "voxels", "median", "R²", "median", "cvR²", "cvR²", ">", "0", "wall",
                                "time", "report"]
    row = lines[2].split()
    cv = sidecar.get("MedianCVRSquared")  # present once fits are cross-validated
    assert row[:5] == [FIT, "done", str(voxels), f"{sidecar['MedianRSquared']:.3f}", "n/a" if cv is None else f"{cv:.3f}"]
    assert row[5:8] == [f"{sidecar['FractionPositiveCVRSquared']:.0%}", "of", "voxels"]
    assert row[9:] == ["s", "none", "(--no-report)"] and 0 < float(row[8]) < 120
    written = sum(1 for p in (out / "sub-01").rglob("*") if p.is_file())  # --no-report: all of them this run's
    assert lines[3:] == [f"bids_encoder: 1 participant(s) done, {written} file(s) written under {out.resolve()}"]
    assert done.stdout == ""  # no progress bar either: stderr is not a terminal


def test_real_errors_on_descriptor_2_are_kept(capfd):
    with filtered_stderr():
        os.write(2, b"W0000 00:00:1796152021.485067    6293 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"E0000 00:00:1796152031.293683    6293 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n")
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"E0000 00:00:1796152031.3 6293 gpu_device.cc:2] out of memory allocating 4 GB on GPU:0\n")
        os.write(2, b"Traceback (most recent call last): a real error\n")
    assert capfd.readouterr().err.splitlines() == [
        "E0000 00:00:1796152031.3 6293 gpu_device.cc:2] out of memory allocating 4 GB on GPU:0",
        "Traceback (most recent call last): a real error"]
    assert is_noise("I0000 00:00:1796152021.485451    6293 cudart_stub.cc:31] Could not find cuda drivers")


def test_dry_run_lists_fits_and_writes_nothing(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    work = tmp_path / "work"
    args = [str(dataset), str(out), "participant", "--work-dir", str(work), *FAST]
    assert main([*args, "--dry-run"]) == 0
    stdout = capsys.readouterr().out.splitlines()
    bolds = [f"sub-01_task-localizer_run-{r}_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz" for r in (1, 2)]
    folder = out.resolve() / "sub-01" / "func"
    assert stdout == [f"{FIT}: 2 run(s) ({', '.join(bolds)}), 40+40 volumes, model glm, HRF canonical, "
                      "cross-validation loro (leave one run out: 2 folds) → "
                      f"{folder}/{FIT}_* (to fit)", "bids_encoder: dry run: 1 fit(s) planned; nothing written"]
    assert not out.exists()
    assert main(args) == 0
    capsys.readouterr()
    before = _files(out)
    assert main([*args, "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("(finished: skipped (--overwrite refits it))")
    assert _files(out) == before  # no log either
    assert main([str(dataset), str(out), "group", "--work-dir", str(work), "--dry-run"]) == 64
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "bids_encoder: error: --dry-run lists the fits of the participant level; the group level has none")


def test_summary_table_with_and_without_cross_validation():
    records = [FitRecord("sub-01_task-a_model-glm", "done", 1200, 0.31234, -0.02, 12.34, Path("/out/sub-01.html"),
                         0.234),
               FitRecord("sub-02_task-a_model-glm", "skipped", 900, 0.25, None, None, None)]
    assert summary_table(records).splitlines() == [
        "fit                      status   voxels  median R²  median cvR²  cvR² > 0       wall time  report",
        "sub-01_task-a_model-glm  done     1200    0.312      -0.020       23% of voxels  12.3 s     /out/sub-01.html",
        "sub-02_task-a_model-glm  skipped  900     0.250      n/a          n/a            n/a        none (--no-report)"]


def test_logs_keep_the_newest_of_each_level(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    now = time.time()
    for index in range(KEEP_LOGS + 3):
        for level in ("participant", "group"):
            path = folder / f"{level}_sub-01_2026120{index:02d}_{index}.log"
            path.write_text("log")
            os.utime(path, (now - 1000 + index, now - 1000 + index))
    _prune_logs(folder, "participant")
    assert sorted(p.name for p in folder.glob("participant_*")) == [
        f"participant_sub-01_2026120{index:02d}_{index}.log" for index in range(3, KEEP_LOGS + 3)]
    assert len(list(folder.glob("group_*"))) == KEEP_LOGS + 3  # another level's logs are left alone


def test_nthreads_twice_in_one_process():
    """A second start with --nthreads after TensorFlow's runtime is up (tests, notebooks) keeps the pools instead
    of failing with 'Intra op parallelism cannot be modified after initialization'."""
    import tensorflow as tf

    from bids_encoder._tensorflow import start_tensorflow

    tf.constant(1.0) + 1.0  # the runtime is initialised
    start_tensorflow(3)
    start_tensorflow(3)


def test_help_has_examples_and_describes_every_option():
    """--help: every option says what it does (defaults shown where there is one), and examples end it."""
    from bids_encoder.cli import cli
    from bids_encoder.optimize._problem import SOLVER_DEFAULTS

    undocumented = [p.name for p in cli.params if isinstance(p, click.Option) and not p.help]
    assert not undocumented
    iterations = next(p for p in cli.params if p.name == "max_iterations")
    assert f"{SOLVER_DEFAULTS['lm']['max_n_iterations']} Levenberg-Marquardt steps" in iterations.help
    text = cli.get_help(click.Context(cli, info_name="bids_encoder"))
    assert "Examples:" in text and "bids_encoder /data/bids /data/out group" in text
    assert ".venv/bin/bids_encoder" in text
