"""HCP-sized pRF subjects: cost per stage against voxels and frames, peak memory, recovery; library and app.

The HCP 7T retinotopy's shape (:mod:`bids_encoder.datasets.hcp_like`): 91,282 grayordinates, 6 runs × 300 frames at
TR 1 s; 30 % of the voxels carry a planted Gaussian pRF, the rest noise. The apertures are the Szinte et al. bars
(80 × 45 pixels, 150 frames) repeated to fill the runs when ``BIDS_ENCODER_SZINTE_DIR`` is set (the issue's set-up),
synthetic bars otherwise.

Library rows: each (voxels × frames) is generated and fitted with ``recipes.fit_prf2d`` and its defaults (or
``--memory-limit``) in a child process of its own, which reports the wall time of every stage, its peak resident
memory (beyond the data: the peak minus the resident memory once the data were made), the cost per voxel·frame
(which must stay flat as the work grows) and the recovery of the planted pRFs (r of x, y and size over the signal
voxels). App rows (``--app``): an HCP-like BIDS dataset with fMRIPrep-like CIFTI outputs, fitted by the whole CLI
process (``--model prf2d``, 6 × 300 frames; ``--model glm``, 4 × 900 frames), with its wall time and peak memory.

    python benchmarks/hcp.py                                   # the scaling table (about 15 minutes on 2 cores)
    python benchmarks/hcp.py --rows 91282x1800 --before ../old  # one row, this checkout beside another
    python benchmarks/hcp.py --rows none --app                 # the app only

Targets (2 cores): the library fit of 91,282 × 1,800 ≤ 60 s and ≤ 4 GB beyond the data, x and y recovered with
r ≥ 0.99; the app ≤ 90 s within its memory budget.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np

ROWS = ("10000x1800", "20000x1800", "45000x1800", "91282x1800", "91282x300", "91282x900")


def _rss():
    """The current resident memory (bytes) of this process."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _apertures():
    folder = os.environ.get("BIDS_ENCODER_SZINTE_DIR")
    if not folder or not Path(folder).is_dir():
        return None, None, "synthetic bars (40 × 40 pixels, 150 frames)"
    from bids_encoder.datasets.szinte import load_szinte2024

    szinte = load_szinte2024(folder)
    return szinte.paradigm.to_numpy(np.float32), szinte.grid, "Szinte et al. bars (80 × 45 pixels, 150 frames)"


def child(voxels, frames, memory_limit):
    """Generate one subject, fit it, print a JSON row (run in a process of its own)."""
    from bids_encoder.datasets.hcp_like import hcp_prf_subject
    from bids_encoder.models import GaussianPRF2DWithHRF, SPMHRFModel
    from bids_encoder.optimize.recipes import fit_prf2d

    apertures, grid, source = _apertures()
    n_runs = max(1, frames // 300)
    start = time.perf_counter()
    subject = hcp_prf_subject(voxels, n_runs=n_runs, n_frames=frames // n_runs, apertures=apertures, grid=grid,
                              seed=1)
    generated = time.perf_counter() - start
    data_rss = _rss()
    model = GaussianPRF2DWithHRF(subject.grid, hrf_model=SPMHRFModel(subject.tr))
    kwargs = {} if memory_limit is None else {"memory_limit": memory_limit}
    start = time.perf_counter()
    fit = fit_prf2d(model, subject.data, subject.paradigm, progressbar=False, **kwargs)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    signal = subject.signal
    r = {}
    for label in ("x", "y", "sd"):
        estimate = fit.parameters[label].to_numpy()[signal]
        truth = subject.truth[label].to_numpy()[signal]
        good = np.isfinite(estimate)
        r[label] = float(np.corrcoef(estimate[good], truth[good])[0, 1])
    iterated = getattr(fit, "iterated", None)
    print(json.dumps({"voxels": voxels, "frames": frames, "runs": n_runs, "apertures": source,
                      "generated": generated, "wall": wall, "timings": fit.timings, "peak": peak,
                      "data_rss": data_rss, "data_bytes": int(subject.data.to_numpy().nbytes), "r": r,
                      "iterated": None if iterated is None else int(np.sum(iterated)),
                      "median_r2": float(np.nanmedian(fit.r2))}))


def _run_child(row, memory_limit, code):
    voxels, frames = (int(n) for n in row.split("x"))
    command = [sys.executable, __file__, "--child", row]
    if memory_limit is not None:
        command += ["--memory-limit", str(memory_limit)]
    environment = dict(os.environ, PYTHONPATH=str(code)) if code else None
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    if done.returncode:
        sys.exit(f"the {row} row failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _app(folder, rows):
    """The whole CLI process on HCP-like CIFTI datasets (generated once under ``folder``)."""
    from bids_encoder.datasets.hcp_like import make_hcp_like

    out = []
    for model in ("prf2d", "glm"):
        bids = folder / f"hcp_{model}"
        if not (bids / "dataset_description.json").is_file():
            start = time.perf_counter()
            make_hcp_like(bids, model=model, seed=2)
            print(f"generated the HCP-like {model} dataset in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        for label, checkout in rows:
            target = folder / f"out_{model}_{label}"
            shutil.rmtree(target, ignore_errors=True)
            command = [sys.executable, str(Path(__file__).with_name("_peak.py")), sys.executable, "-m",
                       "bids_encoder", str(bids), str(target), "participant", "--space", "fsLR", "--model", model,
                       "--cv", "none", "--no-report", "--work-dir", str(folder / f"work_{model}")]
            if model == "prf2d":
                command += ["--task", "prf"]
            environment = dict(os.environ, PYTHONPATH=str(checkout)) if checkout else None
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=environment,
                                  cwd=checkout.resolve() if checkout else Path(__file__).resolve().parents[1])
            wall = time.perf_counter() - start
            if done.returncode:
                sys.exit(f"bids_encoder failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
            sidecar = json.loads(next(target.glob("sub-01/func/*_stat-rsquared_statmap.json")).read_text())
            out.append({"code": label, "model": model, "wall": wall,
                        "peak": float(done.stdout.strip().splitlines()[-1]),
                        "stages": sidecar["Processing"]["WallTime"], "median_r2": sidecar.get("MedianRSquared")})
    return out


@click.command()
@click.option("--rows", default=",".join(ROWS), show_default=True,
              help="VOXELSxFRAMES rows of the library table, comma-separated ('none': no library rows).")
@click.option("--memory-limit", type=float, default=None,
              help="memory_limit of the library fit in bytes (default: the library's own).")
@click.option("--before", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Another checkout (e.g. a git worktree of an older commit): every row also runs with it first, "
                   "side by side in this run.")
@click.option("--app", is_flag=True, help="Also time the whole CLI process on HCP-like CIFTI datasets.")
@click.option("--folder", type=click.Path(path_type=Path), default=Path("/tmp/bids_encoder_hcp"), show_default=True,
              help="Where the app's datasets are generated (kept and reused) and fitted.")
@click.option("--child", "child_row", hidden=True)
def main(rows, memory_limit, before, app, folder, child_row):
    if child_row:
        voxels, frames = (int(n) for n in child_row.split("x"))
        child(voxels, frames, None if memory_limit is None else int(memory_limit))
        return
    codes = ([("before", before)] if before else []) + [("this", None)]
    results = []
    for row in ([] if rows == "none" else rows.split(",")):
        for label, checkout in codes:
            result = _run_child(row, memory_limit, checkout)
            result["code"] = label
            results.append(result)
            print(f"{label} {row}: {result['wall']:.1f} s, peak {result['peak'] / 1e9:.2f} GB", file=sys.stderr)
    if results:
        print(f"Library: recipes.fit_prf2d, apertures: {results[0]['apertures']}, memory_limit "
              f"{'default' if memory_limit is None else f'{memory_limit:.3g}'}; 2 cores")
        stages = sorted({key for result in results for key in result["timings"]})
        print("| code | voxels | frames | " + " | ".join(f"{s} s" for s in stages) + " | total s | µs per "
              "voxel·frame | peak RSS GB | beyond data GB | iterated | r x | r y | r sd |")
        print("|" + "---|" * (len(stages) + 11))
        for result in results:
            per = 1e6 * result["wall"] / (result["voxels"] * result["frames"])
            cells = " | ".join(f"{result['timings'].get(s, float('nan')):.1f}" for s in stages)
            iterated = "n/a" if result["iterated"] is None else str(result["iterated"])
            print(f"| {result['code']} | {result['voxels']} | {result['frames']} | {cells} | {result['wall']:.1f} | "
                  f"{per:.3f} | {result['peak'] / 1e9:.2f} | {(result['peak'] - result['data_rss']) / 1e9:.2f} | "
                  f"{iterated} | {result['r']['x']:.4f} | {result['r']['y']:.4f} | {result['r']['sd']:.4f} |")
    if app:
        rows_app = _app(folder, codes)
        print("\nApp: the whole CLI process on HCP-like fsLR den-91k CIFTI datasets (91,282 grayordinates; "
              "--cv none --no-report)")
        print("| code | model | runs × frames | wall s | stages (s) | peak RSS GB | median R² |")
        print("|---|---|---|---|---|---|---|")
        for row in rows_app:
            shape = "6 × 300" if row["model"] == "prf2d" else "4 × 900"
            stages = ", ".join(f"{k} {v:.1f}" for k, v in row["stages"].items())
            print(f"| {row['code']} | {row['model']} | {shape} | {row['wall']:.1f} | {stages} | "
                  f"{row['peak'] / 1e9:.2f} | {row['median_r2']:.4f} |")


if __name__ == "__main__":
    main()
