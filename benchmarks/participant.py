"""Benchmark of the whole participant level on an MNI-sized subject.

A generated fMRIPrep-like subject on the 2 mm MNI grid (97 × 115 × 97, ≈ 200k voxels in the mask), 2 runs × 300
volumes, 3 conditions, is fitted with ``bids_encoder … participant --model glm --hrf fit`` in a child process.
Prints the wall time of each stage (from the R² sidecar) and the child's peak resident memory.

    python benchmarks/participant.py [--folder DIR] [--hrf fit|canonical] [--nthreads N]

Targets (2 CPU cores): under 3 minutes and under 8 GB.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click


@click.command()
@click.option("--folder", type=click.Path(path_type=Path), default=Path("/tmp/bids_encoder_benchmark"),
              show_default=True, help="Where the dataset is generated (kept and reused) and fitted.")
@click.option("--hrf", default="fit", show_default=True)
@click.option("--volumes", default=300, show_default=True)
@click.option("--confounds", default="motion,high_pass,wm_csf", show_default=True)
def main(folder, hrf, volumes, confounds):
    from bids_encoder.bids.example_dataset import make_example_dataset

    bids = folder / f"bids_{volumes}"
    if not (bids / "dataset_description.json").is_file():
        start = time.perf_counter()
        truth = make_example_dataset(bids, n_subjects=1, n_runs=2, n_volumes=volumes, tr=2.0, shape=(97, 115, 97),
                                     noise=1.0, mask_radius=0.707, seed=1)
        print(f"generated {int(truth.mask.sum())} in-mask voxels in {time.perf_counter() - start:.0f} s",
              file=sys.stderr)
    out = folder / f"out_{hrf}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "bids_encoder", str(bids), str(out), "participant", "--hrf", hrf,
               "--confounds", confounds, "--work-dir", str(folder / "work")]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"bids_encoder failed ({done.returncode}): {done.stderr.strip().splitlines()[-1]}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB
    sidecar = next(out.glob("sub-01/func/*_stat-rsquared_statmap.json"))
    content = json.loads(sidecar.read_text())
    processing = content["Processing"]
    print(f"| voxels | volumes | hrf | confounds | {' | '.join(processing['WallTime'])} | total wall s | peak RSS GB |")
    print("|" + "---|" * (6 + len(processing["WallTime"])))
    stages = " | ".join(f"{value:.1f}" for value in processing["WallTime"].values())
    print(f"| {processing['VoxelsTotal']} | {'+'.join(map(str, processing['Volumes']))} | {hrf} | "
          f"{content['Confounds']['NumberOfRegressors']} | {stages} | {wall:.1f} | {peak_gb:.2f} |")
    print(f"median R² {content['MedianRSquared']:.3f}; targets: total < 180 s, peak < 8 GB")


if __name__ == "__main__":
    main()
