"""Speed of the pRF fitters on the Szinte V1 data (2,365 voxels × 150 volumes), canonical HRF.

Rows:

- ``recipe``: :func:`bids_encoder.optimize.recipes.fit_prf2d` (grid → baseline/amplitude → LM), stage by stage;
- ``public API``: what a braincoder user writes with default arguments — ``ParameterFitter.fit_grid`` (the
  recipe's grid), ``refine_baseline_and_amplitude``, ``fit()``;
- ``grid floor``: the grid search's throughput (grid points × voxels per second) against a plain float32 product
  of the same size, ``(points × volumes) @ (volumes × voxels)``, the one step no grid search can skip; the ratio
  says how far the search (fields over the pixels, HRF, projection, best point per voxel) is from that floor.

Each row is measured twice in the same process (the first includes TensorFlow's tracing); peak RSS is the
process's after the row. ``--before DIR`` runs the same rows once with another checkout (e.g. a git worktree of
an older commit) in a child process first, so both appear side by side in one run (once: what a user of that
code gets, tracing included).

    BIDS_ENCODER_SZINTE_DIR=../shared/data/szinte2024 python benchmarks/prf_speed.py [--before ../old-checkout]

Target (2 CPU cores): recipe and public API ≤ 10 s, grid included.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np


def _rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def measure(data_dir, attempts=("first", "second")):
    import tensorflow as tf

    from bids_encoder.datasets.szinte import SZINTE_TR, load_szinte2024
    from bids_encoder.models import GaussianPRF2DWithHRF, SPMHRFModel
    from bids_encoder.optimize import ParameterFitter
    from bids_encoder.optimize.recipes import default_prf_grid, fit_prf2d

    szinte = load_szinte2024(data_dir)
    data, paradigm = szinte.data, szinte.paradigm
    rows = []
    for attempt in attempts:
        model = GaussianPRF2DWithHRF(grid_coordinates=szinte.grid, hrf_model=SPMHRFModel(tr=SZINTE_TR))
        start = time.perf_counter()
        fit = fit_prf2d(model, data, paradigm, progressbar=False)
        wall = time.perf_counter() - start
        rows.append({"route": "recipe", "attempt": attempt, "wall": wall, **fit.timings,
                     "iterations": fit.n_iterations, "median_r2": float(np.nanmedian(fit.r2)), "rss": _rss_gb()})
        model = GaussianPRF2DWithHRF(grid_coordinates=szinte.grid, hrf_model=SPMHRFModel(tr=SZINTE_TR))
        start = time.perf_counter()
        fitter = ParameterFitter(model, data, paradigm)
        xs, ys, sds = default_prf_grid(model)
        grid = fitter.fit_grid(xs, ys, sds, None, None, use_correlation_cost=True, progressbar=False)
        t_grid = time.perf_counter() - start
        init = fitter.refine_baseline_and_amplitude(grid)
        t_refine = time.perf_counter() - start - t_grid
        fitter.fit(init_pars=init.fillna(0.0), progressbar=False)
        wall = time.perf_counter() - start
        rows.append({"route": "public API", "attempt": attempt, "wall": wall, "grid": t_grid, "refine": t_refine,
                     "iterative": wall - t_grid - t_refine, "iterations": fitter.n_iterations,
                     "median_r2": float(np.nanmedian(fitter.r2)), "rss": _rss_gb()})
    n_points = len(xs) * len(ys) * len(sds)
    n_time, n_voxels = data.shape
    left = tf.random.normal([n_points, n_time])
    right = tf.constant(data.to_numpy(np.float32))
    floor = []
    for _ in range(3):
        start = time.perf_counter()
        tf.matmul(left, right).numpy()
        floor.append(time.perf_counter() - start)
    grid_time = min(row["grid"] for row in rows if row["attempt"] == attempts[-1])
    rows.append({"route": "grid floor", "points": n_points, "voxels": n_voxels,
                 "grid_rate": n_points * n_voxels / grid_time, "floor_rate": n_points * n_voxels / min(floor),
                 "ratio": grid_time / min(floor)})
    return rows


@click.command()
@click.option("--data-dir", default=lambda: os.environ.get("BIDS_ENCODER_SZINTE_DIR", "../shared/data/szinte2024"),
              type=click.Path(exists=True, file_okay=False), show_default="$BIDS_ENCODER_SZINTE_DIR")
@click.option("--before", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Another checkout: its rows are measured first, in a child process, and printed beside these.")
@click.option("--json-only", is_flag=True, hidden=True)
@click.option("--once", is_flag=True, hidden=True)
def main(data_dir, before, json_only, once):
    rows = []
    if before:
        done = subprocess.run([sys.executable, __file__, "--data-dir", data_dir, "--json-only", "--once"],
                              capture_output=True,
                              text=True, env=dict(os.environ, PYTHONPATH=str(before)))
        if done.returncode:
            sys.exit(f"the --before run failed: {done.stderr.strip().splitlines()[-1]}")
        rows += [dict(row, code="before") for row in json.loads(done.stdout.strip().splitlines()[-1])]
    rows += [dict(row, code="this") for row in measure(data_dir, ("first",) if once else ("first", "second"))]
    if json_only:
        print(json.dumps(rows))
        return
    print("| code | route | run | wall s | grid s | refine s | iterative s | iterations | median R² | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if row["route"] == "grid floor":
            continue
        print(f"| {row['code']} | {row['route']} | {row['attempt']} | {row['wall']:.2f} | {row['grid']:.2f} | "
              f"{row['refine']:.2f} | {row['iterative']:.2f} | {row['iterations']} | {row['median_r2']:.4f} | "
              f"{row['rss']:.2f} |")
    print()
    print("| code | grid points | voxels | grid points·voxels/s | float32 product of the same size /s | grid ÷ floor |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if row["route"] == "grid floor":
            print(f"| {row['code']} | {row['points']} | {row['voxels']} | {row['grid_rate']:.3g} | "
                  f"{row['floor_rate']:.3g} | {row['ratio']:.1f} |")
    ours = {row["route"]: row["wall"] for row in rows if row["code"] == "this" and row.get("attempt") == "second"}
    print(f"\ntarget ≤ 10 s: recipe {ours['recipe']:.1f} s, public API {ours['public API']:.1f} s")


if __name__ == "__main__":
    main()
