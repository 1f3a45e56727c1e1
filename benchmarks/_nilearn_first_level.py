"""nilearn's first level on one subject of a BIDS dataset with fMRIPrep-like derivatives, as the reference of
``benchmarks/participant.py --nilearn``: the whole process is timed by the caller (imports included).

``FirstLevelModel(noise_model="ar1", hrf_model="spm", signal_scaling=0, drift_model=None)`` with the brain mask,
the same confounds as the app (``load_confounds`` with the same strategy: the cosine drifts of ``high_pass`` are
confounds, hence no drift model of nilearn's own), fitted on every run, then ``compute_contrast(output_type="all")``
for each condition, in memory; nothing is written. Prints a JSON line: wall times of its stages, voxels, runs.

    python benchmarks/_nilearn_first_level.py BIDS_DIR [--subject 01] [--confounds motion,high_pass,wm_csf]
"""

from __future__ import annotations

import argparse
import json
import time

START = time.perf_counter()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir")
    parser.add_argument("--subject", default="01")
    parser.add_argument("--confounds", default="motion,high_pass,wm_csf")
    parser.add_argument("--space", default="MNI152NLin2009cAsym")
    parser.add_argument("--n-jobs", type=int, default=1, help="FirstLevelModel's n_jobs (its default: 1)")
    args = parser.parse_args()

    from pathlib import Path

    import pandas as pd
    from nilearn.glm.first_level import FirstLevelModel
    from nilearn.interfaces.fmriprep import load_confounds

    stages = {"import": time.perf_counter() - START}
    start = time.perf_counter()
    root = Path(args.bids_dir)
    func = root / "derivatives" / "fmriprep" / f"sub-{args.subject}" / "func"
    bolds = sorted(func.glob(f"sub-{args.subject}_*space-{args.space}_*desc-preproc_bold.nii.gz"))
    if not bolds:
        raise SystemExit(f"no preprocessed BOLD of sub-{args.subject} in {func}")
    mask = sorted(func.glob(f"sub-{args.subject}_*space-{args.space}_*desc-brain_mask.nii.gz"))[0]
    tr = json.loads(bolds[0].with_name(bolds[0].name.replace(".nii.gz", ".json")).read_text())["RepetitionTime"]
    events = []
    for bold in bolds:
        run = next(part for part in bold.name.split("_") if part.startswith("run-"))
        raw = root / f"sub-{args.subject}" / "func"
        events.append(pd.read_csv(next(raw.glob(f"sub-{args.subject}_*{run}_events.tsv")), sep="\t"))
    confounds, sample_masks = load_confounds([str(b) for b in bolds], strategy=tuple(args.confounds.split(",")))
    stages["inputs"] = time.perf_counter() - start
    start = time.perf_counter()
    model = FirstLevelModel(t_r=tr, noise_model="ar1", hrf_model="spm", signal_scaling=0, drift_model=None,
                            mask_img=str(mask), minimize_memory=True, n_jobs=args.n_jobs)
    censored = any(mask is not None for mask in sample_masks)  # nilearn takes no None in its list
    model.fit([str(b) for b in bolds], events=events, confounds=confounds,
              sample_masks=sample_masks if censored else None)
    stages["fit"] = time.perf_counter() - start
    start = time.perf_counter()
    conditions = sorted(set().union(*[set(e["trial_type"]) for e in events]))
    maps = {name: model.compute_contrast(name, stat_type="t", output_type="all") for name in conditions}
    stages["contrasts"] = time.perf_counter() - start
    print(json.dumps({"stages": {k: round(v, 3) for k, v in stages.items()}, "runs": len(bolds),
                      "voxels": int(model.masker_.mask_img_.get_fdata().sum()),
                      "confounds": [int(c.shape[1]) for c in confounds], "maps": len(maps) * 5,
                      "total": round(time.perf_counter() - START, 3)}))


if __name__ == "__main__":
    main()
