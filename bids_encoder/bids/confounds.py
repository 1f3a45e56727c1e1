"""Confound regressors from fMRIPrep's confounds files, through nilearn's standard denoising strategies."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .layout import InputError

logger = logging.getLogger(__name__)

__all__ = ["STRATEGIES", "parse_strategy", "load_run_confounds", "modern_column"]

#: nilearn.interfaces.fmriprep.load_confounds strategies (tedana needs multi-echo outputs, left out)
STRATEGIES = ("motion", "high_pass", "wm_csf", "global_signal", "compcor", "ica_aroma", "scrub",
              "non_steady_state")


def parse_strategy(text):
    """'motion,high_pass,wm_csf' → ('motion', 'high_pass', 'wm_csf'); '' or 'none' → (); unknown → InputError."""
    if text is None:
        return ()
    names = tuple(part.strip() for part in str(text).split(",") if part.strip())
    if names in ((), ("none",)):
        return ()
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown:
        raise InputError(f"Unknown confound strategy {unknown}; choose from {', '.join(STRATEGIES)}", exit_code=64)
    return names


#: fMRIPrep 1.0–1.1 column names (CamelCase, which nilearn refuses) → the names fMRIPrep has written since 1.2
OLD_COLUMNS = {"X": "trans_x", "Y": "trans_y", "Z": "trans_z", "RotX": "rot_x", "RotY": "rot_y", "RotZ": "rot_z",
               "CSF": "csf", "WhiteMatter": "white_matter", "GlobalSignal": "global_signal",
               "FramewiseDisplacement": "framewise_displacement", "stdDVARS": "std_dvars", "non-stdDVARS": "dvars",
               "vx-wisestdDVARS": "dvars_voxelwise"}
OLD_NUMBERED = (("aCompCor", "a_comp_cor_"), ("tCompCor", "t_comp_cor_"), ("Cosine", "cosine"),
                ("NonSteadyStateOutlier", "non_steady_state_outlier"), ("AROMAAggrComp", "aroma_motion_"))


def modern_column(name):
    """A confounds column name as fMRIPrep ≥ 1.2 writes it ('RotX' → 'rot_x', 'aCompCor03' → 'a_comp_cor_03')."""
    if name in OLD_COLUMNS:
        return OLD_COLUMNS[name]
    for old, new in OLD_NUMBERED:
        if name.startswith(old) and name[len(old):].isdigit():
            return new + name[len(old):]
    return name


def _link(source, target):
    try:
        target.symlink_to(Path(source).resolve())
    except OSError:
        shutil.copyfile(source, target)


def _nilearn_view(confounds_file, folder):
    """Present the confounds file to nilearn under a canonical fMRIPrep name, whatever the BOLD file is called.

    nilearn finds the confounds of an image by its name and accepts only some spellings (entity orders, CIFTI,
    GIFTI pairs); pybids already found the file, so nilearn gets a link to it beside a nominal image name. The
    CamelCase columns of fMRIPrep 1.0–1.1 are renamed (with a warning) in a copy.
    """
    confounds_file = Path(confounds_file)
    suffix = "regressors" if confounds_file.name.endswith("_regressors.tsv") else "timeseries"
    stem = "sub-x_task-x"
    table = Path(folder) / f"{stem}_desc-confounds_{suffix}.tsv"
    with confounds_file.open(encoding="utf-8") as handle:
        header = handle.readline().rstrip("\r\n").split("\t")
    renamed = {name: modern_column(name) for name in header if modern_column(name) != name}
    if renamed:
        logger.warning("%s has the column names of fMRIPrep < 1.2 (%s, …): read as %s, …", confounds_file.name,
                       ", ".join(list(renamed)[:3]), ", ".join(list(renamed.values())[:3]))
        frame = pd.read_csv(confounds_file, sep="\t", dtype=str, keep_default_na=False)
        frame.rename(columns=renamed).to_csv(table, sep="\t", index=False)
    else:
        _link(confounds_file, table)
    sidecar = confounds_file.with_suffix(".json")
    if sidecar.is_file():
        _link(sidecar, table.with_suffix(".json"))
    return str(Path(folder) / f"{stem}_desc-preproc_bold.nii.gz")


def load_run_confounds(confounds_file, strategy, n_volumes, **parameters):
    """Confounds (time × k DataFrame, or None) and sample mask (kept volume indices, or None) of one run.

    ``confounds_file`` is fMRIPrep's ``desc-confounds_timeseries.tsv`` (or the older ``_regressors.tsv``);
    ``parameters`` are nilearn's ``load_confounds`` options (``motion='full'``, ``fd_threshold=0.5``, …).
    """
    strategy = tuple(strategy)
    if not strategy:
        return None, None
    from nilearn.interfaces.fmriprep import load_confounds

    name = Path(confounds_file).name
    if not Path(confounds_file).is_file():
        raise InputError(f"Confounds file {name} not found", exit_code=66)
    with tempfile.TemporaryDirectory(prefix="bids_encoder-confounds-") as folder:
        try:
            confounds, sample_mask = load_confounds(_nilearn_view(confounds_file, folder), strategy=strategy,
                                                    **parameters)
        except (ValueError, FileNotFoundError, KeyError, TypeError) as error:
            message = " ".join(str(error).split())
            raise InputError(f"Cannot load confounds from {name}: {message}", exit_code=65) from error
    if confounds is not None and len(confounds) != n_volumes:
        raise InputError(f"{name} has {len(confounds)} rows but the BOLD has {n_volumes} volumes", exit_code=65)
    if confounds is not None and not np.all(np.isfinite(confounds.to_numpy())):
        raise InputError(f"{name} contains non-finite values after nilearn's filling of n/a rows", exit_code=65)
    if sample_mask is not None and len(sample_mask) < 2:
        raise InputError(f"Scrubbing leaves {len(sample_mask)} volume(s) of the run of {name}", exit_code=65)
    logger.info("%s: %d confound regressors (%s), %s volumes kept", name,
                0 if confounds is None else confounds.shape[1], ",".join(strategy),
                n_volumes if sample_mask is None else len(sample_mask))
    return confounds, sample_mask
