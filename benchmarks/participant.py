"""Benchmark of the whole participant level on an MNI-sized subject.

A generated fMRIPrep-like subject on the 2 mm MNI grid (97 × 115 × 97, ≈ 200k voxels in the mask), 2 runs × 300
volumes, 3 conditions, is fitted with ``bids_encoder … participant --model glm --hrf H --cv C`` in a child process
per (H, C) given (``--config H:C``, repeatable). Prints one row per configuration: the wall time of each stage
(from the R² sidecar; ``cross_validation`` is the cost of cvR²), total wall time and its ratio to the first row
(measured side by side in one run), the child's peak resident memory, median R² and cvR², and the HRF kept.

    python benchmarks/participant.py [--folder DIR] [--config fit:none --config fit:auto --config auto:auto]
    python benchmarks/participant.py --config prf2d:canonical:none   # the whole-brain pRF benchmark

``--config MODEL:HRF:CV`` with model ``prf2d`` fits the retinotopic run of a generated whole-brain MNI subject
(2 mm, 235,375 voxels, bar apertures; pRFs planted in 20,336 occipital voxels; ``make_mni_example`` with
``prf_coverage="brain"``) with ``--task prf --model prf2d``; its rows add the recovery of the planted pRFs
(Pearson r of x, y and sd over the planted voxels, from the written maps; the truth is kept beside the generated
dataset) and the voxels the iterative stage fitted (the grid-R² gate, when the code has one).

Targets (2 CPU cores): --hrf fit under 60 s and 6 GB; the whole-brain pRF fit ≤ 30 s and 4 GB.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np


@click.command()
@click.option("--folder", type=click.Path(path_type=Path), default=Path("/tmp/bids_encoder_benchmark"),
              show_default=True, help="Where the dataset is generated (kept and reused) and fitted.")
@click.option("--config", "configs", multiple=True, default=("fit:auto",), show_default=True,
              help="HRF:CV, e.g. canonical:none, fit:auto, auto:auto (repeatable; the first is the reference).")
@click.option("--volumes", default=300, show_default=True)
@click.option("--confounds", default="motion,high_pass,wm_csf", show_default=True)
@click.option("--before", "before", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Another checkout of bids_encoder (e.g. a git worktree of an older commit): every configuration "
                   "also runs with it first (PYTHONPATH), rows labelled 'before', side by side in this run.")
def main(folder, configs, volumes, confounds, before):
    from bids_encoder.datasets.example_dataset import make_example_dataset

    bids = folder / f"bids_{volumes}"
    if not (bids / "dataset_description.json").is_file():
        start = time.perf_counter()
        truth = make_example_dataset(bids, n_subjects=1, n_runs=2, n_volumes=volumes, tr=2.0, shape=(97, 115, 97),
                                     noise=1.0, mask_radius=0.707, seed=1)
        print(f"generated {int(truth.mask.sum())} in-mask voxels in {time.perf_counter() - start:.0f} s",
              file=sys.stderr)
    prf_bids = folder / "prf_2mm"
    if any(config.startswith("prf2d:") for config in configs) and not (prf_bids / "dataset_description.json").is_file():
        from bids_encoder.datasets.mni_example import make_mni_example

        start = time.perf_counter()
        truth = make_mni_example(prf_bids, n_subjects=1, n_runs=1, n_volumes=20, resolution=2, prf_coverage="brain")
        planted = truth.prf["01"]
        np.savez(folder / "prf_2mm_truth.npz", prf_mask=truth.prf_mask, x=planted["x"].to_numpy(),
                 y=planted["y"].to_numpy(), sd=planted["sd"].to_numpy())
        print(f"generated {int(truth.mask.sum())} voxels ({int(truth.prf_mask.sum())} with a pRF) in "
              f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    rows = []
    runs = [(config, code) for config in configs for code in ((before, None) if before else (None,))]
    for config, code in runs:
        model, hrf, cv = config.split(":") if config.startswith("prf2d:") else ("glm", *config.split(":"))
        out = folder / f"out_{model}_{hrf}_{cv}{'_before' if code else ''}"
        shutil.rmtree(out, ignore_errors=True)
        source, task = (prf_bids, ["--task", "prf"]) if model == "prf2d" else (bids, [])
        command = [sys.executable, str(Path(__file__).with_name("_peak.py")), sys.executable, "-m", "bids_encoder",
                   str(source),
                   str(out), "participant", "--model", model, *task, "--hrf", hrf, "--cv", cv, "--confounds",
                   confounds, "--no-report", "--work-dir", str(folder / f"work_{model}")]
        start = time.perf_counter()
        environment = dict(os.environ, PYTHONPATH=str(code)) if code else None
        # python -m puts the working folder first on sys.path: run in the checkout that is measured
        done = subprocess.run(command, capture_output=True, text=True, env=environment,
                              cwd=code.resolve() if code else Path(__file__).resolve().parents[1])
        wall = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"bids_encoder failed ({done.returncode}): {done.stderr.strip().splitlines()[-1]}")
        peak_gb = float(done.stdout.strip().splitlines()[-1]) / 1e9
        content = json.loads(next(out.glob("sub-01/func/*_stat-rsquared_statmap.json")).read_text())
        if model == "prf2d":
            content["Recovery"] = _prf_recovery(out, folder / "prf_2mm_truth.npz")
        rows.append((f"{model} {hrf}" + (" (before)" if code else ""), cv, content, wall, peak_gb))
        print(f"done: {config} in {wall:.0f} s", file=sys.stderr, flush=True)
    stages = list(dict.fromkeys(k for _, _, c, _, _ in rows for k in c["Processing"]["WallTime"]))
    print(f"| voxels | volumes | model, hrf | cv | kept | confounds | {' | '.join(stages)} | total wall s | × first | "
          "peak RSS GB | median R² | median cvR² |")
    print("|" + "---|" * (12 + len(stages)))
    for hrf, cv, content, wall, peak_gb in rows:
        processing = content["Processing"]
        times = " | ".join(f"{processing['WallTime'].get(k, float('nan')):.1f}" for k in stages)
        cvr2 = content.get("MedianCVRSquared")
        print(f"| {processing['VoxelsTotal']} | {'+'.join(map(str, processing['Volumes']))} | {hrf} | {cv} | "
              f"{content['HRF']['Choice']} | {content['Confounds']['NumberOfRegressors']} | {times} | {wall:.1f} | "
              f"{wall / rows[0][3]:.2f} | {peak_gb:.2f} | {content['MedianRSquared']:.3f} | "
              f"{'n/a' if cvr2 is None else f'{cvr2:.3f}'} |")
    prf_rows = [(name, content) for name, _, content, _, _ in rows if "Recovery" in content]
    if prf_rows:
        print()
        print("| model, hrf | r(x) planted | r(y) planted | r(sd) planted | iterated voxels | max abs amplitude (planted) |")
        print("|---|---|---|---|---|---|")
        for name, content in prf_rows:
            recovery = content["Recovery"]
            print(f"| {name} | {recovery['x']:.3f} | {recovery['y']:.3f} | {recovery['sd']:.3f} | "
                  f"{recovery['iterated']} | {recovery['max_amplitude']:.3g} |")
    print("targets: --hrf fit total ≤ 60 s, peak ≤ 6 GB; whole-brain pRF ≤ 30 s, ≤ 4 GB, recovery no worse")


def _prf_recovery(out, truth_file):
    """Pearson r of the written x, y, sd maps with the planted pRFs over the planted voxels, the number of voxels
    iterated (from the sidecar, when the fit records it) and the largest |amplitude| over planted voxels."""
    import nibabel as nib

    truth = np.load(truth_file)
    mask = truth["prf_mask"]
    recovery = {}
    for stat in ("x", "y", "sd", "amplitude"):
        image = next(out.glob(f"sub-01/func/*_stat-{stat}_statmap.nii.gz"))
        values = np.asarray(nib.load(image).dataobj, dtype=np.float64)[mask]
        if stat == "amplitude":
            recovery["max_amplitude"] = float(np.nanmax(np.abs(values)))
            continue
        finite = np.isfinite(values)
        recovery[stat] = float(np.corrcoef(values[finite], truth[stat][finite])[0, 1])
    sidecar = json.loads(next(out.glob("sub-01/func/*_stat-x_statmap.json")).read_text())
    gate = sidecar.get("Fitter", {}).get("ParameterFitter", {}).get("IteratedVoxels")
    recovery["iterated"] = "all" if gate is None else gate
    return recovery


if __name__ == "__main__":
    main()
