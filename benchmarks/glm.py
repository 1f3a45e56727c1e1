"""GLM benchmark: bids_encoder's LinearModelWithBaselineHRF + WeightFitter against nilearn's run_glm (OLS).

Both solve the same design (20 HRF-convolved regressors + intercept) for the same data, side by side in one
process. Also reports ParameterFitter iterations per second with per-voxel HRFs on the same problem.

    python benchmarks/glm.py [--voxels 50000] [--volumes 600] [--regressors 20] [--iterations 50]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def make_problem(n_voxels, n_volumes, n_regressors, tr, seed=0):
    from bids_encoder.models import LinearModelWithBaselineHRF, SPMHRFModel

    rng = np.random.default_rng(seed)
    paradigm = pd.DataFrame(
        (rng.random((n_volumes, n_regressors)) < 0.05).astype(np.float32),
        columns=[f"condition{i:02d}" for i in range(n_regressors)],
    )
    weights = pd.DataFrame(rng.normal(1.0, 0.5, (n_regressors, n_voxels)), index=paradigm.columns)
    model = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(tr))
    parameters = pd.DataFrame({"baseline": rng.normal(100.0, 5.0, n_voxels)})
    data = model.simulate(paradigm, parameters, weights, noise=1.0, random_state=seed + 1)
    return model, paradigm, data


def best_of(function, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=50_000)
    parser.add_argument("--volumes", type=int, default=600)
    parser.add_argument("--regressors", type=int, default=20)
    parser.add_argument("--tr", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=50, help="ParameterFitter steps to time")
    args = parser.parse_args()

    import tensorflow as tf
    from nilearn.glm.first_level import run_glm

    from bids_encoder.models import LinearModelWithBaselineHRF, SPMHRFModel
    from bids_encoder.optimize import ParameterFitter, WeightFitter

    model, paradigm, data = make_problem(args.voxels, args.volumes, args.regressors, args.tr)
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"

    def ours():
        fitter = WeightFitter(model, None, data, paradigm)
        return fitter.fit(), fitter

    # nilearn gets the identical design: our HRF-convolved regressors plus an intercept.
    design = model._design(tf.constant(paradigm.to_numpy()), None).numpy()
    design = np.hstack([design, np.ones((len(design), 1), np.float32)]).astype(np.float64)
    y = data.to_numpy()

    def theirs():
        _, results = run_glm(y, design, noise_model="ols")
        return next(iter(results.values())).theta

    ours()  # warm-up (graph building, thread pools)
    t_ours, (weights, fitter) = best_of(ours, args.repeats)
    t_theirs, theta = best_of(theirs, args.repeats)
    ref = theta[: args.regressors]
    max_abs = float(np.max(np.abs(weights.to_numpy() - ref)))
    max_rel = max_abs / float(np.max(np.abs(ref)))

    unique = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(args.tr, unique_hrfs=True), weights=weights)
    pf = ParameterFitter(unique, data, paradigm, memory_limit=16 * 1024**3)
    pf.fit(max_n_iterations=5, min_n_iterations=5, progressbar=False)  # warm-up / tracing
    start = time.perf_counter()
    pf.fit(max_n_iterations=args.iterations, min_n_iterations=args.iterations, progressbar=False)
    t_iter = time.perf_counter() - start

    rows = [
        ("problem", f"{args.voxels} voxels x {args.volumes} volumes x {args.regressors} regressors, {device}"),
        ("bids_encoder WeightFitter (s)", f"{t_ours:.3f}"),
        ("nilearn run_glm OLS (s)", f"{t_theirs:.3f}"),
        ("speed-up (nilearn / ours)", f"{t_theirs / t_ours:.1f}x"),
        ("max |weight difference|", f"{max_abs:.2e}"),
        ("max relative difference", f"{max_rel:.2e}"),
        ("ParameterFitter unique HRFs (it/s)", f"{pf.n_iterations / t_iter:.2f}"),
        ("ParameterFitter voxel-iterations/s", f"{pf.n_iterations * args.voxels / t_iter:.3g}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}} | value")
    print(f"{'-' * width}-|-{'-' * 40}")
    for name, value in rows:
        print(f"{name:<{width}} | {value}")
    print("cvR²: off (in-sample least squares of both libraries; the app's cross-validation refits once per fold, "
          "see benchmarks/participant.py)")


if __name__ == "__main__":
    main()
