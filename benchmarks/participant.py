"""Benchmark of the whole participant level on an MNI-sized subject, beside nilearn's first level.

A generated fMRIPrep-like subject on the 2 mm MNI grid (97 × 115 × 97, 194,337 voxels in the mask), 2 runs × 300
volumes, 3 conditions, 58 confound columns (``motion,high_pass,wm_csf``), is fitted with ``bids_encoder …
participant --model glm --hrf H --cv C --no-report`` in a child process per (H, C) given (``--config H:C``,
repeatable). Prints one row per configuration: the wall time of each stage (from the R² sidecar;
``cross_validation`` is the cost of cvR²; ``other`` is the rest of the process: start-up and imports, the layout,
writing, exit), total wall time of the whole process and its ratio to the first row (measured side by side in one
run), the child's peak resident memory, median R² and cvR², and the HRF kept.

``--nilearn`` also runs nilearn's ``FirstLevelModel(noise_model="ar1", hrf_model="spm", signal_scaling=0)`` on the
same subject with the same confounds, fit + ``compute_contrast(output_type="all")`` of the 3 conditions, in memory,
nothing written, the whole process timed (imports included; ``benchmarks/_nilearn_first_level.py``), and adds a
``nilearn ÷ row`` column: how many times faster than nilearn each row is.

``--surfaces`` adds the same GLM on the same subject's surfaces, written from the same events and confounds:
GIFTI pairs (``--surface-space``, default fsaverage6: 2 × 40,962 vertices) and a CIFTI dtseries (``space-fsLR
den-91k``: 91,282 grayordinates), each 2 runs × 300 volumes, with ``--cv none`` (``--surface-cv`` to change it).

    python benchmarks/participant.py --nilearn --config canonical:none --config fit:none --config canonical:auto
    python benchmarks/participant.py --nilearn --surfaces --before /path/to/old/checkout   # before/after, one run
    python benchmarks/participant.py --config prf2d:canonical:none   # the whole-brain pRF benchmark

``--config MODEL:HRF:CV`` with model ``prf2d`` fits the retinotopic run of a generated whole-brain MNI subject
(2 mm, 235,375 voxels, bar apertures; pRFs planted in 20,336 occipital voxels; ``make_mni_example`` with
``prf_coverage="brain"``) with ``--task prf --model prf2d``; its rows add the recovery of the planted pRFs
(Pearson r of x, y and sd over the planted voxels, from the written maps; the truth is kept beside the generated
dataset) and the voxels the iterative stage fitted (the grid-R² gate, when the code has one).

Targets (2 CPU cores): GLM canonical AR(1) with contrasts, everything written, ≥ 5× nilearn (issue 28);
``--hrf fit`` ≤ 25 s and ≤ 4 GB; ``--cv auto`` ≤ 1.5× ``--cv none``; the whole-brain pRF fit ≤ 30 s and 4 GB
(issue 27).
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

PEAK = str(Path(__file__).with_name("_peak.py"))
SURFACE_SIZES = {"fsaverage5": 10242, "fsaverage6": 40962, "fsaverage": 163842}
CIFTI_GRAYORDINATES = 91282


def _child(command, code=None):
    """Run ``command`` under _peak.py in the checkout ``code`` (or this one): (wall s, peak bytes, stdout lines)."""
    environment = dict(os.environ, PYTHONPATH=str(code)) if code else None
    start = time.perf_counter()
    # python -m puts the working folder first on sys.path: run in the checkout that is measured
    done = subprocess.run([sys.executable, PEAK, *command], capture_output=True, text=True, env=environment,
                          cwd=code.resolve() if code else Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{command[2:4]} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    lines = done.stdout.strip().splitlines()
    return wall, float(lines[-1]), lines[:-1]


def _surface_dataset(volume_bids, root, space, volumes):
    """GIFTI pairs in ``space`` and a CIFTI dtseries of the volume subject's runs: the raw events and fMRIPrep
    confounds of ``volume_bids`` (copied), BOLD = 100 + effects × the conditions' SPM regressors + drift + noise."""
    import numpy as np
    import pandas as pd
    from nilearn.glm.first_level import compute_regressor

    from bids_encoder.datasets.example_dataset import _write_gifti, _write_json, write_cifti_run

    rng = np.random.default_rng(2)
    shutil.copytree(volume_bids, root, ignore=shutil.ignore_patterns("*.nii.gz"))
    n_gifti, n_cifti = SURFACE_SIZES[space], CIFTI_GRAYORDINATES // 2
    tr = json.loads((root / "task-localizer_bold.json").read_text())["RepetitionTime"]
    frame_times = np.arange(volumes) * tr
    deriv = root / "derivatives" / "fmriprep" / "sub-01" / "func"
    for run in (1, 2):
        stem = f"sub-01_task-localizer_run-{run}"
        events = pd.read_csv(root / "sub-01" / "func" / f"{stem}_events.tsv", sep="\t")
        for n, write in ((n_gifti, "gifti"), (n_cifti, "cifti")):
            values = 100.0 + np.outer(np.linspace(-1, 1, volumes) * rng.normal(), np.ones(2 * n))
            values += rng.normal(0, 1.0, values.shape)
            for amplitude, condition in enumerate(sorted(set(events["trial_type"])), start=1):
                chosen = events[events["trial_type"] == condition]
                regressor, _ = compute_regressor(np.vstack([chosen["onset"], chosen["duration"],
                                                            np.ones(len(chosen))]), "spm", frame_times)
                effect = np.where(rng.random(2 * n) < 0.2, 0.5 * amplitude, 0.0)
                values += np.outer(regressor[:, 0], effect)
            values = values.astype(np.float32)
            if write == "cifti":
                write_cifti_run(deriv, stem, values, tr, "localizer")
                continue
            for offset, hemi in enumerate(("L", "R")):
                name = f"{stem}_hemi-{hemi}_space-{space}_bold"
                _write_gifti(deriv / f"{name}.func.gii", values[:, offset * n:(offset + 1) * n])
                _write_json(deriv / f"{name}.json", {"RepetitionTime": tr, "TaskName": "localizer"})


@click.command()
@click.option("--folder", type=click.Path(path_type=Path), default=Path("/tmp/bids_encoder_benchmark"),
              show_default=True, help="Where the dataset is generated (kept and reused) and fitted.")
@click.option("--config", "configs", multiple=True, default=("canonical:none",), show_default=True,
              help="HRF:CV, e.g. canonical:none, fit:none, canonical:auto (repeatable; the first is the reference).")
@click.option("--volumes", default=300, show_default=True)
@click.option("--confounds", default="motion,high_pass,wm_csf", show_default=True)
@click.option("--nilearn", "with_nilearn", is_flag=True,
              help="Also time nilearn's FirstLevelModel on the same subject (whole process) and give each row's "
                   "ratio to it.")
@click.option("--nilearn-jobs", default=1, show_default=True, help="n_jobs of nilearn's FirstLevelModel.")
@click.option("--surfaces", is_flag=True, help="Also the GLM on the subject's GIFTI pairs and CIFTI dtseries.")
@click.option("--surface-space", type=click.Choice(list(SURFACE_SIZES)), default="fsaverage6", show_default=True)
@click.option("--surface-config", default="canonical:none", show_default=True, help="HRF:CV of the surface rows.")
@click.option("--before", "before", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Another checkout of bids_encoder (e.g. a git worktree of an older commit): every configuration "
                   "also runs with it first (PYTHONPATH), rows labelled 'before', side by side in this run.")
def main(folder, configs, volumes, confounds, with_nilearn, nilearn_jobs, surfaces, surface_space, surface_config,
         before):
    from bids_encoder.datasets.example_dataset import make_example_dataset

    bids = folder / f"bids_{volumes}"
    if not (bids / "dataset_description.json").is_file():
        start = time.perf_counter()
        truth = make_example_dataset(bids, n_subjects=1, n_runs=2, n_volumes=volumes, tr=2.0, shape=(97, 115, 97),
                                     noise=1.0, mask_radius=0.707, seed=1)
        print(f"generated {int(truth.mask.sum())} in-mask voxels in {time.perf_counter() - start:.0f} s",
              file=sys.stderr)
    surface_bids = folder / f"surfaces_{surface_space}_{volumes}"
    if surfaces and not (surface_bids / "dataset_description.json").is_file():
        start = time.perf_counter()
        shutil.rmtree(surface_bids, ignore_errors=True)
        _surface_dataset(bids, surface_bids, surface_space, volumes)
        print(f"generated the surfaces in {time.perf_counter() - start:.0f} s", file=sys.stderr)
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
    nilearn = None
    if with_nilearn:
        wall, peak, lines = _child([sys.executable, str(Path(__file__).with_name("_nilearn_first_level.py")),
                                    str(bids), "--confounds", confounds, "--n-jobs", str(nilearn_jobs)])
        nilearn = (wall, peak / 1e9, json.loads(lines[-1]))
        print(f"done: nilearn in {wall:.0f} s", file=sys.stderr, flush=True)
    planned = [("volume", config) for config in configs]
    if surfaces:
        planned += [(space, surface_config) for space in (surface_space, "fsLR")]
    rows = []
    for space, config in planned:
        for code in (before, None) if before else (None,):
            model, hrf, cv = config.split(":") if config.startswith("prf2d:") else ("glm", *config.split(":"))
            label = "" if space == "volume" else f"_{space}"
            out = folder / f"out_{model}_{hrf}_{cv}{label}{'_before' if code else ''}"
            shutil.rmtree(out, ignore_errors=True)
            if model == "prf2d":
                source, extra = prf_bids, ["--task", "prf"]
            elif space == "volume":
                source, extra = bids, []
            else:
                source, extra = surface_bids, ["--space", space]
            command = [sys.executable, "-m", "bids_encoder", str(source), str(out), "participant", "--model", model,
                       *extra, "--hrf", hrf, "--cv", cv, "--confounds", confounds, "--no-report", "--work-dir",
                       str(folder / f"work_{model}{label}")]
            wall, peak, _ = _child(command, code)
            content = json.loads(next(out.glob("sub-01/func/*_stat-rsquared_statmap.json")).read_text())
            if model == "prf2d":
                content["Recovery"] = _prf_recovery(out, folder / "prf_2mm_truth.npz")
            name = f"{model} {hrf}" + ("" if space == "volume" else f" {space}") + (" (before)" if code else "")
            rows.append((name, cv, content, wall, peak / 1e9))
            print(f"done: {name} {cv} in {wall:.0f} s", file=sys.stderr, flush=True)
    stages = list(dict.fromkeys(k for _, _, c, _, _ in rows for k in c["Processing"]["WallTime"]))
    header = ["voxels", "volumes", "model, hrf", "cv", "kept", "confounds", *stages, "other", "total wall s",
              "× first", *(["nilearn ÷ row"] if nilearn else []), "peak RSS GB", "median R²", "median cvR²"]
    table = []
    if nilearn:
        wall, peak, content = nilearn
        table.append([content["voxels"], f"{content['runs']} runs", "nilearn FirstLevelModel ar1", "none", "spm",
                      "+".join(map(str, content["confounds"])), *["" for _ in stages],
                      " + ".join(f"{k} {v:.1f}" for k, v in content["stages"].items()), f"{wall:.1f}",
                      f"{wall / rows[0][3]:.2f}", "1.00", f"{peak:.2f}", "", ""])
    for name, cv, content, wall, peak_gb in rows:
        processing = content["Processing"]
        cvr2 = content.get("MedianCVRSquared")
        table.append([processing["VoxelsTotal"], "+".join(map(str, processing["Volumes"])), name, cv,
                      content["HRF"]["Choice"], content["Confounds"]["NumberOfRegressors"],
                      *[f"{processing['WallTime'].get(k, float('nan')):.1f}" for k in stages],
                      f"{wall - sum(processing['WallTime'].values()):.1f}", f"{wall:.1f}",
                      f"{wall / rows[0][3]:.2f}", *([f"{nilearn[0] / wall:.2f}"] if nilearn else []),
                      f"{peak_gb:.2f}", f"{content['MedianRSquared']:.3f}", "n/a" if cvr2 is None else f"{cvr2:.3f}"])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in table:
        print("| " + " | ".join(map(str, cells)) + " |")
    prf_rows = [(name, content) for name, _, content, _, _ in rows if "Recovery" in content]
    if prf_rows:
        print()
        print("| model, hrf | r(x) planted | r(y) planted | r(sd) planted | iterated voxels | max abs amplitude (planted) |")
        print("|---|---|---|---|---|---|")
        for name, content in prf_rows:
            recovery = content["Recovery"]
            print(f"| {name} | {recovery['x']:.3f} | {recovery['y']:.3f} | {recovery['sd']:.3f} | "
                  f"{recovery['iterated']} | {recovery['max_amplitude']:.3g} |")
    print("targets (issue 28): glm canonical none ≥ 5× nilearn; --hrf fit ≤ 25 s and ≤ 4 GB; --cv auto ≤ 1.5× "
          "--cv none; (issue 27) whole-brain pRF ≤ 30 s, ≤ 4 GB, recovery no worse")


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
