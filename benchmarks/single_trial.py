"""Whole-brain single-trial benchmark: GLMsingle's method (``fit_single_trials``) on a simulated subject.

A subject of ``--voxels`` voxels (default 200,000), ``--runs`` × ``--volumes`` (10 × 300, TR 1 s) and ``--trials``
trials (500: 125 conditions × 4 repeats, about one every 5.6 s), 20 % of the voxels responding, every voxel with
its own HRF (40 shapes, time to peak 5 ± 1 s) and shared noise (4 time courses per run), is simulated once into
``--folder`` (data.npy float32, trials.tsv, truth.npz) by a child process. Another child process (its peak
resident memory measured, as ``_peak.py`` does) loads the data into memory — as the app holds a subject's BOLD —
and runs every stage under ``--memory-limit`` with ``--nthreads`` TensorFlow threads, keeping every stage's betas
of ``--check-voxels`` voxels. Printed: wall time of the fit (and of its passes), peak RSS of the process, what was
chosen, and the stage-by-stage table — median split-half reliability over the voxels whose on/off model predicts
held-out data beyond chance (as the report shows it) and over the truly responsive ones, and the median correlation of the
betas with the true single-trial responses.

    python benchmarks/single_trial.py [--folder /tmp/bids_encoder_single_trial] [--voxels 200000]
                                      [--memory-limit 4GB] [--nthreads 2]

Targets (2 CPU cores, 4 GB limit): fit ≤ 5 min, peak RSS ≤ 6 GB.
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


def _generate(folder, voxels, runs, volumes, trials):
    from bids_encoder.datasets.single_trial_sim import simulate_single_trials

    n_repeats = 4
    tr = 1.0
    isi = (volumes * tr - 20.0) / (trials / runs)
    start = time.perf_counter()
    sim = simulate_single_trials(n_voxels=voxels, n_runs=runs, n_volumes=volumes, tr=tr,
                                 n_conditions=trials // n_repeats, n_repeats=n_repeats, isi=isi,
                                 responsive_fraction=0.2, seed=29)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "data.npy", sim.data)
    sim.trials.to_csv(folder / "trials.tsv", sep="\t", index=False)
    np.savez(folder / "truth.npz", betas=sim.betas, amplitude=sim.amplitude, hrf_peak=sim.hrf_peak,
             loading=sim.noise_loading, tr=sim.tr, volumes=volumes, runs=runs)
    print(f"simulated {voxels} voxels × {runs * volumes} volumes, {len(sim.trials)} trials in "
          f"{time.perf_counter() - start:.0f} s", file=sys.stderr)


def _fit(folder, memory_limit, nthreads, check_voxels):
    import pandas as pd

    from bids_encoder._tensorflow import start_tensorflow

    start_tensorflow(nthreads)
    from bids_encoder.decoding.single_trial.estimator import fit_single_trials

    data = np.load(folder / "data.npy")  # in memory, as the app holds a subject's BOLD
    trials = pd.read_csv(folder / "trials.tsv", sep="\t")
    truth = np.load(folder / "truth.npz")
    runs, volumes, tr = int(truth["runs"]), int(truth["volumes"]), float(truth["tr"])
    frame_times = [np.arange(volumes) * tr for _ in range(runs)]
    check = np.sort(np.random.default_rng(1).choice(data.shape[1], check_voxels, replace=False))
    start = time.perf_counter()
    result = fit_single_trials(data, frame_times, trials, memory_limit=memory_limit, return_stages=check)
    wall = time.perf_counter() - start
    np.savez(folder / "result.npz", check=check, hrf_index=result.hrf_index, fraction=result.fraction,
             responding=result.responding,
             cvr2=result.cvr2, r2=result.r2, **{f"reliability_{k}": v for k, v in result.stage_reliability.items()},
             **{f"stage_{k}": v for k, v in result.stage_betas.items()})
    summary = {"wall": wall, "timings": result.timings, "components": result.n_components,
               "choices": {k: v for k, v in result.choices.items() if k != "HRF"},
               "stage_table": result.stage_table().reset_index().to_dict(orient="records"),
               "peak_rss_in_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=float))


def _parse_bytes(text):
    text = str(text).strip().upper()
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("G", 10**9), ("M", 10**6)):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(float(text))


@click.command()
@click.option("--folder", type=click.Path(path_type=Path), default=Path("/tmp/bids_encoder_single_trial"),
              show_default=True, help="Where the simulated subject is kept (reused) and the results written.")
@click.option("--voxels", default=200_000, show_default=True)
@click.option("--runs", default=10, show_default=True)
@click.option("--volumes", default=300, show_default=True)
@click.option("--trials", default=500, show_default=True)
@click.option("--memory-limit", default="4GB", show_default=True)
@click.option("--nthreads", default=2, show_default=True)
@click.option("--check-voxels", default=20_000, show_default=True,
              help="Voxels whose betas are kept at every stage (correlation with the truth).")
@click.option("--step", type=click.Choice(["all", "generate", "fit"]), default="all", hidden=True)
def main(folder, voxels, runs, volumes, trials, memory_limit, nthreads, check_voxels, step):
    folder = folder / f"v{voxels}_r{runs}_t{volumes}_n{trials}"
    if step == "generate":
        return _generate(folder, voxels, runs, volumes, trials)
    if step == "fit":
        return _fit(folder, _parse_bytes(memory_limit), nthreads, min(check_voxels, voxels))
    me = [sys.executable, str(Path(__file__).resolve())]
    options = ["--folder", str(folder.parent), "--voxels", str(voxels), "--runs", str(runs), "--volumes",
               str(volumes), "--trials", str(trials), "--memory-limit", memory_limit, "--nthreads", str(nthreads),
               "--check-voxels", str(check_voxels)]
    if not (folder / "truth.npz").is_file():
        subprocess.run([*me, *options, "--step", "generate"], check=True)
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("_peak.py")), *me, *options, "--step",
                           "fit"], capture_output=True, text=True, env=environment)
    process_wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"the fit failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak = float(done.stdout.strip().splitlines()[-1]) / 1e9
    summary = json.loads((folder / "summary.json").read_text())
    truth = np.load(folder / "truth.npz")
    result = np.load(folder / "result.npz")
    check = result["check"]
    responsive = truth["amplitude"] > 0
    print(f"{voxels} voxels, {runs} runs × {volumes} volumes, {trials} trials; --memory-limit {memory_limit}, "
          f"{nthreads} threads")
    print(f"fit: {summary['wall']:.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in summary['timings'].items())}); "
          f"whole process (load, TensorFlow start, fit, writing results) {process_wall:.1f} s; "
          f"peak RSS {peak:.2f} GB")
    print(f"noise components: {summary['components']} ({summary['choices']['Denoise'].get('Selection')}); "
          f"ridge: {summary['choices']['Ridge']['Selection']}")
    lib_peaks = None
    try:
        from bids_encoder.decoding.single_trial.hrf_library import HRFLibrary

        lib_peaks = HRFLibrary().parameters["time_to_peak"].to_numpy()
    except ImportError:  # pragma: no cover
        pass
    if lib_peaks is not None:
        chosen = lib_peaks[result["hrf_index"][responsive]]
        print(f"HRF: correlation of chosen and true time to peak in responsive voxels "
              f"{np.corrcoef(chosen, truth['hrf_peak'][responsive])[0, 1]:.3f}")
    fractions = result["fraction"][responsive]
    print(f"ridge fraction in responsive voxels: median {np.nanmedian(fractions):.2f}, "
          f"{np.mean(fractions >= 0.999):.0%} at 1")
    predicts = result["responding"]
    print(f"responding voxels (on/off cvR² beyond chance): {int(predicts.sum())}, of which truly responsive "
          f"{np.mean(responsive[predicts]):.1%}; responsive voxels found {np.mean(predicts[responsive]):.1%}")
    print("\n| stage | median reliability, responding voxels (as the report) | median reliability, responsive voxels | "
          "median correlation with the true responses (responsive voxels checked) |")
    print("|---|---|---|---|")
    inside = responsive[check]
    for row in summary["stage_table"]:
        name = row["stage"]
        reliability = result[f"reliability_{name}"]
        betas = result[f"stage_{name}"][:, inside]
        true = truth["betas"][:, check[inside]]
        correlation = np.median([np.corrcoef(betas[:, j], true[:, j])[0, 1] for j in range(betas.shape[1])])
        print(f"| {name} | {np.nanmedian(reliability[predicts]):.3f} ({int(predicts.sum())} voxels) | "
              f"{np.nanmedian(reliability[responsive]):.3f} ({int(responsive.sum())}) | {correlation:.3f} "
              f"({int(inside.sum())}) |")
    print("\ntargets: fit ≤ 300 s on 2 cores, peak RSS ≤ 6 GB")


if __name__ == "__main__":
    main()
