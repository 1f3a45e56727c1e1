"""The GPU path's split and placement logic, run on logical CPU devices (no GPU here): chunks of voxels (LM,
Adam) and of grid points go round-robin to every device, and the results equal those of one device."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def two_devices():
    done = subprocess.run([sys.executable, str(HERE / "_devices_fit.py"), "2"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_chunks_are_split_over_every_device(two_devices):
    devices = two_devices["devices"]
    assert len(devices) == 2 and all("CPU" in name for name in devices)
    for solver in ("lm", "adam"):
        placed = two_devices["split"][f"{solver}_devices"]
        assert len(placed) >= 4  # the memory limit makes several chunks
        # round-robin: chunk i on device i mod 2, and the variables really live there
        assert [name.rsplit(":", 1)[-1] for name in placed] == [str(i % 2) for i in range(len(placed))]
        assert {name.rsplit(":", 1)[-1] for name in two_devices["single"][f"{solver}_devices"]} == {"0"}


@pytest.mark.parametrize("stage", ["grid", "lm", "adam"])
def test_split_results_equal_one_device(two_devices, stage):
    split = np.asarray(two_devices["split"][stage])
    single = np.asarray(two_devices["single"][stage])
    np.testing.assert_allclose(split, single, rtol=1e-5, atol=1e-5)


def test_split_fit_recovers_positions(two_devices):
    x = np.asarray(two_devices["split"]["lm"])[:, 0]
    assert np.corrcoef(x, two_devices["truth_x"])[0, 1] > 0.95
    assert two_devices["split"]["lm_r2"] > 0.5


def test_memory_limit_is_capped_by_the_gpus_free_memory(tmp_path, monkeypatch):
    """A fake nvidia-smi with two GPUs (8000 and 3000 MiB free): a 4 GB budget becomes 80 % of the least free one
    on a GPU, and stays as given on the CPU; with CUDA_VISIBLE_DEVICES=0 only the first GPU counts."""
    from bids_encoder._tensorflow import gpu_free_memory
    from bids_encoder.cli import support as _cli_support

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0, 8000\\n1, 3000\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_free_memory() == 3000 * 2**20
    assert _cli_support._device_memory_limit(4_000_000_000, "GPU") == int(0.8 * 3000 * 2**20)
    assert _cli_support._device_memory_limit(4_000_000_000, "CPU") == 4_000_000_000
    assert _cli_support._device_memory_limit(1_000_000_000, "GPU") == 1_000_000_000
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert gpu_free_memory() == 8000 * 2**20


def test_gpu_script_runs_here_with_the_gpu_columns_skipped():
    """benchmarks/gpu.sh passes shellcheck and, on this GPU-less machine, checks the devices, skips the GPU tests
    and prints the CPU column of its table with the GPU one marked skipped (exit 0)."""
    import os
    import shutil

    root = HERE.parent
    shellcheck = Path(sys.executable).parent / "shellcheck"
    if not shellcheck.is_file():
        shellcheck = shutil.which("shellcheck")
    if shellcheck:
        lint = subprocess.run([str(shellcheck), str(root / "benchmarks" / "gpu.sh")], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout
    env = {key: value for key, value in os.environ.items() if key != "BIDS_ENCODER_SZINTE_DIR"}
    done = subprocess.run(["bash", str(root / "benchmarks" / "gpu.sh"), "--smoke"], capture_output=True, text=True,
                          env=dict(env, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="-1"), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert any("GPUs none visible" in line for line in lines)
    assert "skipped: no GPU visible to TensorFlow" in lines
    row = next(line for line in lines if line.startswith("| smoke |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "300" and float(cells[2]) > 0 and cells[5] == "skipped (no GPU)"
    assert 0.0 < float(cells[9].split("/")[0]) < 1.0  # the CPU fit's median R²
    for name in ("glm-one-run", "glm-two-runs"):  # the first-level GLM table
        cells = [cell.strip() for cell in next(line for line in lines if line.startswith(f"| {name} |")).strip(
            "|").split("|")]
        assert cells[1] == "2000 × 200" and float(cells[2]) > 0 and cells[3] == "skipped (no GPU)"
