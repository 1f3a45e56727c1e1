"""Group level at whole-brain scale: N fabricated participants' GLM outputs on the MNI 2 mm grid, then
``bids_encoder … group`` in a child process; prints wall time and peak memory.

    python benchmarks/group.py [--subjects 20] [--atlas 100]

``--atlas N`` adds an N-region label image on the same grid (slabs along x), so ROI tables are computed too.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (97, 115, 97)
CONDITIONS = ("faces", "houses", "scenes")
STEM = "task-bench_space-MNI152NLin2009cAsym_res-2_model-glm"


def fabricate(root, n_subjects, seed=0):
    """Raw dataset skeleton plus participant outputs (effects, R², R² sidecar) for ``n_subjects``."""
    rng = np.random.default_rng(seed)
    bids = root / "bids"
    (bids / "dataset_description.json").parent.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "bench", "BIDSVersion": "1.9.0"}))
    out = root / "out"
    out.mkdir()
    (out / "dataset_description.json").write_text(json.dumps({"Name": "bench", "BIDSVersion": "1.9.0",
                                                              "DatasetType": "derivative"}))
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"), axis=-1)
    mask = (grid**2).sum(axis=-1) <= 0.8
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for number in range(1, n_subjects + 1):
        subject = f"{number:02d}"
        func = bids / f"sub-{subject}" / "func"
        func.mkdir(parents=True)
        (func / f"sub-{subject}_task-bench_bold.nii.gz").write_bytes(b"")  # the raw BOLD (content not read)
        folder = out / f"sub-{subject}" / "func"
        folder.mkdir(parents=True)
        for name in [f"contrast-{c}_stat-effect" for c in CONDITIONS] + ["stat-rsquared"]:
            values = np.full(SHAPE, np.nan, np.float32)
            values[mask] = rng.normal(0.2, 1.0, int(mask.sum()))
            nib.Nifti1Image(values, affine).to_filename(folder / f"sub-{subject}_{STEM}_{name}_statmap.nii.gz")
            (folder / f"sub-{subject}_{STEM}_{name}_statmap.json").write_text(json.dumps({
                "Description": name, "Units": "a.u.", "Runs": [1], "MedianRSquared": 0.1, "Device": "CPU",
                "Processing": {"VoxelsFitted": int(mask.sum()), "VoxelsTotal": int(mask.sum()),
                               "FractionConverged": 1.0, "Volumes": [300], "WallTime": {"load": 1.0}}}))
    return bids, out, int(mask.sum())


def fabricate_atlas(path, n_regions):
    """Slabs along x inside the fabricated maps' mask, labelled 1..n_regions, with its dseg.tsv."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"), axis=-1)
    slab = np.minimum((np.arange(SHAPE[0]) * n_regions) // SHAPE[0], n_regions - 1) + 1
    labels = np.where((grid**2).sum(axis=-1) <= 0.8, slab[:, np.newaxis, np.newaxis], 0).astype(np.int16)
    nib.Nifti1Image(labels, np.diag([2.0, 2.0, 2.0, 1.0])).to_filename(path)
    names = "index\tname\n" + "".join(f"{i}\tregion{i}\n" for i in range(1, n_regions + 1))
    Path(str(path).replace(".nii.gz", ".tsv")).write_text(names)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--atlas", type=int, default=0, help="regions of a fabricated atlas (0: none)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        start = time.perf_counter()
        bids, out, n_voxels = fabricate(root, arguments.subjects)
        atlas = []
        if arguments.atlas:
            fabricate_atlas(root / "atlas-bench_dseg.nii.gz", arguments.atlas)
            atlas = ["--atlas", str(root / "atlas-bench_dseg.nii.gz")]
        made = time.perf_counter() - start
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "bids_encoder", str(bids), str(out), "group", "--work-dir",
                               str(root / "work"), "--skip-bids-validation", *atlas], capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            sys.exit(done.stderr)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6  # kB → GB (Linux)
        files = len(list((out / "group").iterdir()))
    print("| participants | voxels | maps per participant | atlas regions | group files | wall time | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {arguments.subjects} | {n_voxels:,} | {len(CONDITIONS) + 1} | {arguments.atlas or 'none'} | {files} "
          f"| {wall:.1f} s | {peak:.2f} GB |")
    print(f"(fabricating the inputs took {made:.1f} s; cvR²: not computed at the group level — participant cvR² "
          "maps, when present, are aggregated like any map)")


if __name__ == "__main__":
    main()
