"""Run the BIDS-App end to end on a generated whole-brain fMRIPrep-like dataset with known ground truth.

    python -m bids_encoder.example [FOLDER]        (default: ./bids_encoder_example)

Writes FOLDER/bids (:mod:`bids_encoder.datasets.mni_example`: 2 subjects, MNI152 brain at 4 mm and fsaverage5
surfaces; a localizer task of 2 runs with faces / houses / scenes effects in fusiform, parahippocampal and
transverse-occipital blobs; a retinotopic bar-sweep run with pRFs planted in occipital cortex, apertures in
``stimuli/``), runs ``bids_encoder FOLDER/bids FOLDER/derivatives/bids_encoder participant`` (GLM on the volume and
the surface, 2-D Gaussian pRF on the volume) and then the group level, and prints how well the maps recover the
planted effects and pRFs, and where the maps and reports are.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import nibabel as nib
import numpy as np

VOLUME = "space-MNI152NLin2009cAsym"


def _run(app, arguments):
    click.echo(f"bids_encoder {' '.join(arguments)}")
    code = app(arguments)
    if code:
        sys.exit(code)


def _r(estimate, truth):
    return float(np.corrcoef(estimate, truth)[0, 1])


@click.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default=Path("bids_encoder_example"))
@click.option("--noise", default=0.2, show_default=True, help="Noise SD of the generated localizer BOLD.")
def main(folder, noise):
    """Generate the example dataset, fit it with the participant level, report the recovery."""
    from ..cli.app import main as app
    from ..datasets.mni_example import REGIONS, make_mni_example

    bids = folder / "bids"
    out = folder / "derivatives" / "bids_encoder"
    click.echo(f"Generating a whole-brain fMRIPrep-like dataset with known effects in {bids} (rewritten on every run)"
               " …")
    truth = make_mni_example(bids, n_subjects=2, n_runs=2, n_volumes=120, noise=noise)
    common = [str(bids), str(out), "participant", "--work-dir", str(folder / "work"), "--overwrite"]
    for space in ("MNI152NLin2009cAsym", "fsaverage5"):
        _run(app, [*common, "--task", "localizer", "--space", space])
    _run(app, [*common, "--task", "prf", "--model", "prf2d", "--cv", "none"])  # cvR²: 2 more fits, 2× the time
    _run(app, [str(bids), str(out), "group", "--work-dir", str(folder / "work")])

    click.echo("\nRecovery of the planted GLM effects (correlation of the effect maps with the truth over the brain):")
    click.echo("| subject | condition (region) | volume r | surface r |\n|---|---|---|---|")
    for subject in ("01", "02"):
        func = out / f"sub-{subject}" / "func"
        for condition in truth.conditions:
            stat = f"model-glm_contrast-{condition}_stat-effect_statmap"
            volume = nib.load(next(func.glob(f"*{VOLUME}*{stat}.nii.gz"))).get_fdata()
            r_volume = _r(volume[truth.mask], truth.effects[(subject, condition)][truth.mask])
            surface = np.concatenate([nib.load(next(func.glob(f"*hemi-{h}_space-fsaverage5*{stat}.func.gii")))
                                      .darrays[0].data for h in "LR"])
            r_surface = _r(surface, truth.surface_effects[(subject, condition)])
            click.echo(f"| sub-{subject} | {condition} ({REGIONS[condition][0]}) | {r_volume:.3f} | {r_surface:.3f} |")
    for condition in truth.conditions:
        mean = nib.load(out / "group" / f"task-localizer_{VOLUME}_model-glm_contrast-{condition}_stat-effect_"
                                         "desc-mean_statmap.nii.gz").get_fdata()
        expected = np.mean([truth.effects[(s, condition)] for s in ("01", "02")], axis=0)
        click.echo(f"| group mean | {condition} ({REGIONS[condition][0]}) | "
                   f"{_r(mean[truth.mask], expected[truth.mask]):.3f} | |")

    click.echo("\nRecovery of the planted pRFs (correlation over the occipital voxels with a pRF):")
    click.echo("| pRF subject | voxels | x r | y r | size (sd) r |\n|---|---|---|---|---|")
    for subject in ("01", "02"):
        prefix = out / f"sub-{subject}" / "func" / f"sub-{subject}_task-prf_{VOLUME}_model-prf2d"
        fitted = {stat: nib.load(f"{prefix}_stat-{stat}_statmap.nii.gz").get_fdata()[truth.prf_mask]
                  for stat in ("x", "y", "sd")}
        planted = truth.prf[subject]
        good = np.all([np.isfinite(v) for v in fitted.values()], axis=0)
        rs = [_r(fitted[stat][good], planted[stat].to_numpy()[good]) for stat in ("x", "y", "sd")]
        click.echo(f"| pRF sub-{subject} | {good.sum()} | " + " | ".join(f"{r:.3f}" for r in rs) + " |")
    click.echo(f"\nMaps, sidecars and designs: {out}/sub-*/func/\nGroup maps and tables:      {out}/group/\n"
               f"Reports:                    {out}/sub-01.html, sub-02.html, group.html\n"
               f"Logs:                       {out}/logs/")


if __name__ == "__main__":
    main()
