"""CPU and GPU wall times side by side (``benchmarks/gpu.sh`` runs it).

Each (problem, device) runs in a child process; the CPU child hides the GPUs (``CUDA_VISIBLE_DEVICES=-1``) before
TensorFlow loads. Problems: ``synthetic`` (a bar-aperture pRF fit of 20,000 voxels through the recipe; 300
with ``--smoke``), ``szinte`` (the real V1 data, when ``BIDS_ENCODER_SZINTE_DIR`` is set) and ``whole-brain``
(200,000 voxels, skipped with ``--smoke``); then a second table of the first-level GLM inference of
``benchmarks/glm.py`` (50,000 voxels × 600 volumes as one run and as two; 2,000 × 200 with ``--smoke``). Without a
GPU its column says ``skipped (no GPU)``.

    python benchmarks/gpu_table.py [--smoke]      # the table
    python benchmarks/gpu_table.py --check        # devices TensorFlow sees, where a product runs; exit 3: no GPU
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import click


def _bars(n_side, n_time):
    import numpy as np
    import pandas as pd

    side = np.linspace(-5, 5, n_side)
    gx, gy = np.meshgrid(side, side)
    positions = np.tile(np.linspace(-6, 6, 24), n_time // 24 + 1)[:n_time]
    horizontal = np.abs(gx.ravel()[None] - positions[:, None]) < 1.0
    vertical = np.abs(gy.ravel()[None] - positions[:, None]) < 1.0
    bars = np.where((np.arange(n_time) // 24 % 2 == 0)[:, None], horizontal, vertical)
    return np.column_stack([gx.ravel(), gy.ravel()]), pd.DataFrame(bars.astype(np.float32))


def run_problem(problem):
    """Fit one problem on whatever device this process sees; returns a result row."""
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from bids_encoder.models import GaussianPRF2DWithHRF, SPMHRFModel
    from bids_encoder.optimize.recipes import fit_prf2d

    if problem == "szinte":
        from bids_encoder.datasets.szinte import SZINTE_TR, load_szinte2024

        szinte = load_szinte2024(os.environ["BIDS_ENCODER_SZINTE_DIR"])
        model = GaussianPRF2DWithHRF(grid_coordinates=szinte.grid, hrf_model=SPMHRFModel(tr=SZINTE_TR))
        data, paradigm = szinte.data, szinte.paradigm
    else:
        n_voxels = {"smoke": 300, "synthetic": 20_000, "whole-brain": 200_000}[problem]
        rng = np.random.default_rng(0)
        grid, paradigm = _bars(17, 120)
        model = GaussianPRF2DWithHRF(grid, hrf_model=SPMHRFModel(tr=1.5))
        truth = pd.DataFrame({"x": rng.uniform(-4, 4, n_voxels), "y": rng.uniform(-4, 4, n_voxels),
                              "sd": rng.uniform(0.6, 2.5, n_voxels), "baseline": np.full(n_voxels, 100.0),
                              "amplitude": rng.uniform(0, 3, n_voxels)})
        data = model.simulate(paradigm, truth, noise=1.0, random_state=1)
    fit_prf2d(model, data.iloc[:, :50], paradigm, progressbar=False)  # tracing and start-up, not timed
    start = time.perf_counter()
    fit = fit_prf2d(model, data, paradigm, progressbar=False, memory_limit=2_000_000_000)
    wall = time.perf_counter() - start
    device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    return {"problem": problem, "device": device, "voxels": int(data.shape[1]), "wall": wall,
            "grid": fit.timings["grid"], "lm": fit.timings["iterative"], "iterations": fit.n_iterations,
            "median_r2": float(np.nanmedian(fit.r2))}


def run_glm_problems(size):
    """First-level AR(1) inference (20 t contrasts and an F) of benchmarks/glm.py's problem as one run and as the
    same volumes in two runs, in one process; returns a row each: wall time and the z of one contrast on the first
    2,000 voxels (CPU/GPU check)."""
    import numpy as np
    import tensorflow as tf
    from glm import make_problem

    from bids_encoder.inference import first_level

    n_voxels, n_volumes = (2_000, 200) if size == "smoke" else (50_000, 600)
    model, paradigm, data = make_problem(n_voxels, n_volumes, 20, 1.0)
    convolved = model._design(tf.constant(paradigm.to_numpy()), None).numpy().astype(np.float64)
    y = np.ascontiguousarray(data.to_numpy(), dtype=np.float32)
    device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    rows = []
    for name, runs in (("glm-one-run", np.ones(n_volumes)), ("glm-two-runs", np.repeat([1.0, 2.0], n_volumes // 2))):
        design = np.hstack([convolved] + [(runs == r)[:, None] for r in np.unique(runs)])
        t = {f"c{i:02d}": np.eye(design.shape[1])[i] for i in range(20)}
        f = {"effectsOfInterest": np.eye(design.shape[1])[:20]}
        first_level(y[:, :500], design, runs, t, f)  # start-up, not timed
        start = time.perf_counter()
        result = first_level(y, design, runs, t, f)
        rows.append({"problem": name, "device": device, "voxels": n_voxels, "volumes": n_volumes,
                     "wall": time.perf_counter() - start, "z": result.contrasts["c00"]["z"][:2000].tolist()})
    return rows


def _child(problem, device):
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    done = subprocess.run([sys.executable, __file__, "--run", problem], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    print(f"TensorFlow {tf.__version__}: GPUs {[g.name for g in gpus] or 'none visible'}; "
          f"built with CUDA: {tf.test.is_built_with_cuda()}")
    device = gpus[0].name if gpus else "/device:CPU:0"
    with tf.device(device):
        product = tf.matmul(tf.ones([256, 256]), tf.ones([256, 256]))
    print(f"a matrix product placed on {device} ran on {product.device}")
    if gpus and "GPU" not in product.device:
        sys.exit("the product did not run on the GPU")
    if not gpus:
        sys.exit(3)


@click.command()
@click.option("--smoke", is_flag=True, help="A small synthetic problem only.")
@click.option("--check", "do_check", is_flag=True, help="Print the devices and where a product runs.")
@click.option("--gpu", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="Whether to run the GPU column (auto: if TensorFlow sees a GPU).")
@click.option("--run", "problem", hidden=True)
def main(smoke, do_check, gpu, problem):
    if problem:
        print(json.dumps(run_glm_problems(problem.split("-")[1]) if problem.startswith("glm") else
                         run_problem(problem)))
        return
    if do_check:
        check()
        return
    if gpu == "auto":
        gpu = "yes" if subprocess.run([sys.executable, __file__, "--check"], capture_output=True).returncode == 0 \
            else "no"
    gpu = gpu == "yes"
    problems = ["smoke"] if smoke else ["synthetic", "whole-brain"]
    if os.environ.get("BIDS_ENCODER_SZINTE_DIR") and not smoke:
        problems.insert(0, "szinte")
    print("| problem | voxels | CPU wall s | CPU grid s | CPU LM s | GPU wall s | GPU grid s | GPU LM s | CPU ÷ GPU |"
          " median R² CPU / GPU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in problems:
        cpu = _child(name, "cpu")
        if gpu:
            on_gpu = _child(name, "gpu")
            gpu_cells = (f"{on_gpu['wall']:.1f} | {on_gpu['grid']:.1f} | {on_gpu['lm']:.1f} | "
                         f"{cpu['wall'] / on_gpu['wall']:.1f} | {cpu['median_r2']:.4f} / {on_gpu['median_r2']:.4f}")
        else:
            gpu_cells = f"skipped (no GPU) | – | – | – | {cpu['median_r2']:.4f} / –"
        print(f"| {name} | {cpu['voxels']} | {cpu['wall']:.1f} | {cpu['grid']:.1f} | {cpu['lm']:.1f} | {gpu_cells} |",
              flush=True)
    print()
    print("| first-level GLM, AR(1), 20 t + 1 F | voxels × volumes | CPU wall s | GPU wall s | CPU ÷ GPU |"
          " max abs z difference (2,000 voxels) |")
    print("|---|---|---|---|---|---|")
    size = "smoke" if smoke else "full"
    cpu_rows = _child(f"glm-{size}", "cpu")
    gpu_rows = _child(f"glm-{size}", "gpu") if gpu else [None] * len(cpu_rows)
    for cpu, on_gpu in zip(cpu_rows, gpu_rows, strict=True):
        if on_gpu:
            difference = max(abs(a - b) for a, b in zip(cpu["z"], on_gpu["z"], strict=True))
            gpu_cells = f"{on_gpu['wall']:.2f} | {cpu['wall'] / on_gpu['wall']:.1f} | {difference:.1e}"
        else:
            gpu_cells = "skipped (no GPU) | – | –"
        print(f"| {cpu['problem']} | {cpu['voxels']} × {cpu['volumes']} | {cpu['wall']:.2f} | {gpu_cells} |",
              flush=True)


if __name__ == "__main__":
    main()
