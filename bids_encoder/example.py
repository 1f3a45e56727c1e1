"""Run the BIDS-App end to end on a generated fMRIPrep-like dataset with known ground truth.

    python -m bids_encoder.example [FOLDER]        (default: ./bids_encoder_example)

Writes FOLDER/bids (2 subjects × 2 runs, MNI volume and fsaverage5 surfaces, events, confounds; each condition's
effect in the same region for both subjects), runs ``bids_encoder FOLDER/bids FOLDER/derivatives/bids_encoder
participant`` for both spaces and then the group level, and prints how well the GLM effect maps recover the
planted effects and where the maps and reports are.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import nibabel as nib
import numpy as np


@click.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default=Path("bids_encoder_example"))
@click.option("--noise", default=0.2, show_default=True, help="Noise SD of the generated BOLD.")
def main(folder, noise):
    """Generate the example dataset, fit it with the participant level, report the recovery."""
    from .datasets.example_dataset import make_example_dataset
    from .cli import main as app

    bids = folder / "bids"
    out = folder / "derivatives" / "bids_encoder"
    click.echo(f"Generating an fMRIPrep-like dataset with known effects in {bids} (rewritten on every run) …")
    truth = make_example_dataset(bids, n_subjects=2, n_runs=2, n_volumes=120, noise=noise, surface_vertices=10242,
                                 shared_effects=True)
    common = [str(bids), str(out), "participant", "--work-dir", str(folder / "work"), "--overwrite"]
    for space in ("MNI152NLin2009cAsym", "fsaverage5"):
        click.echo(f"bids_encoder {' '.join(common)} --space {space}")
        code = app([*common, "--space", space])
        if code:
            sys.exit(code)
    group = [str(bids), str(out), "group", "--work-dir", str(folder / "work")]
    click.echo(f"bids_encoder {' '.join(group)}")
    code = app(group)
    if code:
        sys.exit(code)
    click.echo("\nRecovery of the planted effects (correlation of the effect maps with the truth):")
    click.echo("| subject | condition | volume r | surface r |\n|---|---|---|---|")
    for subject in ("01", "02"):
        func = out / f"sub-{subject}" / "func"
        for condition in truth.conditions:
            stat = f"model-glm_contrast-{condition}_stat-effect_statmap"
            volume = nib.load(next(func.glob(f"*space-MNI152NLin2009cAsym*{stat}.nii.gz"))).get_fdata()
            r_volume = np.corrcoef(volume[truth.mask], truth.effects[(subject, condition)][truth.mask])[0, 1]
            surface = np.concatenate([nib.load(next(func.glob(f"*hemi-{h}_space-fsaverage5*{stat}.func.gii")))
                                      .darrays[0].data for h in "LR"])
            r_surface = np.corrcoef(surface, truth.surface_effects[(subject, condition)])[0, 1]
            click.echo(f"| sub-{subject} | {condition} | {r_volume:.3f} | {r_surface:.3f} |")
    for condition in truth.conditions:
        mean = nib.load(out / "group" / f"task-localizer_space-MNI152NLin2009cAsym_res-2_model-glm_contrast-"
                                         f"{condition}_stat-effect_desc-mean_statmap.nii.gz").get_fdata()
        expected = np.mean([truth.effects[(s, condition)] for s in ("01", "02")], axis=0)
        r_group = np.corrcoef(mean[truth.mask], expected[truth.mask])[0, 1]
        click.echo(f"| group mean | {condition} | {r_group:.3f} | |")
    click.echo(f"\nMaps, sidecars and designs: {out}/sub-*/func/\nGroup maps and tables:      {out}/group/\n"
               f"Reports:                    {out}/sub-01.html, sub-02.html, group.html\n"
               f"Logs:                       {out}/logs/")


if __name__ == "__main__":
    main()
