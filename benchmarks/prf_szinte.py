"""pRF benchmark on real V1 data (Szinte et al., 2024): HRF choices in and out of sample, and the solvers.

Fits GaussianPRF2DWithHRF to all 2,365 voxels (150 volumes, one run) through the app's fit functions with the
canonical, the shared (one per fit) and per-voxel HRFs, and prints one table: wall time of the full-data fit and
of its split-half cross-validation (two contiguous halves, the held-out half censored in the training fit; every
parameter, HRF included, estimated on the training half), iterations, median in-sample R² and median cvR² (all
non-constant voxels; the 1,279 voxels with a reference fit; voxels with cvR² > 0 under any choice), the fraction
of voxels with cvR² > 0, the fraction of per-voxel HRF parameters at a bound, agreement with the reference
(Pearson r of x, y, sd), and which choice ``--hrf auto`` would keep. ``--solvers lm adam`` adds the Adam
recipe (canonical HRF, in-sample only) for comparison.

    BIDS_ENCODER_SZINTE_DIR=../shared/data/szinte2024 python benchmarks/prf_szinte.py [--solvers lm adam]

The model family (``--models prf2d css2d dog2d dn2d``, one row per model × HRF): the Gaussian, and the staged fits
of the compressive (CSS), difference-of-Gaussians and divisive-normalisation models (Gaussian grid → LM → seeded
grid over the extra parameters → LM), with their wall time, in-sample R² and split-half cvR². ``--voxels N``
fits the first N voxels only (quicker).

    python benchmarks/prf_szinte.py --models prf2d --models css2d --models dog2d --models dn2d --hrfs canonical
"""

from __future__ import annotations

import os
import resource
import sys
import time

import click
import numpy as np
import pandas as pd

from bids_encoder.datasets.szinte import SZINTE_TR, load_szinte2024, szinte_fit_inputs


def agreement(parameters, r2, reference):
    mask = reference["r2"].notna().to_numpy()
    row = {f"r_{label}": float(np.corrcoef(parameters[label].to_numpy()[mask],
                                           reference[label].to_numpy()[mask])[0, 1]) for label in ("x", "y", "sd")}
    row["r2_all"] = float(np.nanmedian(r2))
    row["r2_ref"] = float(np.nanmedian(np.asarray(r2)[mask]))
    return row


@click.command()
@click.option("--data-dir", default=lambda: os.environ.get("BIDS_ENCODER_SZINTE_DIR", "../shared/data/szinte2024"),
              type=click.Path(exists=True, file_okay=False), show_default="$BIDS_ENCODER_SZINTE_DIR")
@click.option("--hrfs", multiple=True, default=("canonical", "shared", "fit"),
              type=click.Choice(["canonical", "shared", "fit"]), show_default=True)
@click.option("--solvers", multiple=True, default=("lm",), type=click.Choice(["lm", "adam"]), show_default=True)
@click.option("--models", multiple=True, default=("prf2d",), type=click.Choice(["prf2d", "css2d", "dog2d", "dn2d"]),
              show_default=True)
@click.option("--voxels", type=int, help="Fit only the first N voxels.")
def main(data_dir, hrfs, solvers, models, voxels):
    import tensorflow as tf

    from bids_encoder.models import GaussianPRF2DWithHRF, SPMHRFModel
    from bids_encoder.optimize.recipes import fit_prf2d
    from bids_encoder.workflows.fits.crossval import cross_validate
    from bids_encoder.workflows.fits.dispatch import fit_model

    szinte = load_szinte2024(data_dir)
    if voxels:
        szinte.data = szinte.data.iloc[:, :voxels]
        szinte.reference = szinte.reference.iloc[:voxels]
    inputs = szinte_fit_inputs(szinte)
    reference = szinte.reference
    device = "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    rows, cvr2 = [], {}
    options = {"memory_limit": 2_000_000_000, "progressbar": False}
    for model_name, hrf in ((m, h) for m in models for h in hrfs):
        start = time.perf_counter()
        full = fit_model(inputs, model_name, hrf=hrf, **options)
        t_fit = time.perf_counter() - start
        cv = cross_validate(inputs, lambda train, hrf=hrf, m=model_name: fit_model(train, m, hrf=hrf, **options),
                            "split-half")
        parameters = pd.DataFrame({spec.stat: spec.values for spec in full.maps}, index=szinte.data.columns)
        if model_name == "prf2d":
            cvr2[hrf] = cv["cvr2"]
        at_bound = full.hrf.get("FractionAtBound") or {}
        shared = full.hrf.get("Shared") or {}
        rows.append({"model": model_name, "hrf": hrf, "solver": "lm", "t_fit": t_fit, "t_cv": cv["WallTime"],
                     "iterations": full.fitter["ParameterFitter"]["Iterations"],
                     **agreement(parameters, full.r2, reference),
                     "cvr2_all": float(np.nanmedian(cv["cvr2"])),
                     "cvr2_ref": float(np.nanmedian(cv["cvr2"][reference["r2"].notna().to_numpy()])),
                     "cv>0": cv["FractionPositive"],
                     "delay_at_bound": at_bound.get("hrf_delay", np.nan),
                     "disp_at_bound": at_bound.get("hrf_dispersion", np.nan),
                     "shared_delay": shared.get("Delay", np.nan), "shared_disp": shared.get("Dispersion", np.nan),
                     "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9})
        print(f"done: {model_name} {hrf} in {t_fit:.1f} s + cv {cv['WallTime']:.1f} s", file=sys.stderr, flush=True)
    if "adam" in solvers:
        model = GaussianPRF2DWithHRF(szinte.grid, hrf_model=SPMHRFModel(SZINTE_TR))
        start = time.perf_counter()
        fit = fit_prf2d(model, szinte.data, szinte.paradigm, optimizer="adam", progressbar=False)
        rows.append({"model": "prf2d", "hrf": "canonical", "solver": "adam", "t_fit": time.perf_counter() - start,
                     "iterations": fit.n_iterations, **agreement(fit.parameters, fit.r2, reference)})
    gaussian_hrfs = [h for h in hrfs if h in cvr2]
    stacked = np.vstack([cvr2[h] for h in gaussian_hrfs]) if gaussian_hrfs else None
    positive = np.any(stacked > 0, axis=0) if stacked is not None else None
    for row in rows:
        if row["solver"] == "lm" and row["model"] == "prf2d" and positive is not None:
            row["cvr2_any>0"] = float(np.nanmedian(cvr2[row["hrf"]][positive]))
    table = pd.DataFrame(rows)
    print(f"Szinte 2024 V1: {szinte.data.shape[1]} voxels × {szinte.data.shape[0]} volumes, {device}; "
          "cvR²: split-half (on: its cost is t_cv)")
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if positive is not None:
        winner = max(gaussian_hrfs, key=lambda h: float(np.nanmedian(cvr2[h][positive])))
        print(f"--hrf auto would keep: {winner} (median cvR² over the {int(positive.sum())} voxels with cvR² > 0 "
              "under any choice)")
    print(f"reference (gauss_parameters.tsv): median r2 on its voxels {reference['r2'].median():.3f}")


if __name__ == "__main__":
    main()
