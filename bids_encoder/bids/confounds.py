"""Confound regressors from fMRIPrep's confounds files, through nilearn's standard denoising strategies."""

from __future__ import annotations

import logging

import numpy as np

from .layout import InputError

logger = logging.getLogger(__name__)

__all__ = ["STRATEGIES", "parse_strategy", "load_run_confounds"]

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


def load_run_confounds(bold, strategy, n_volumes, **parameters):
    """Confounds (time × k DataFrame, or None) and sample mask (kept volume indices, or None) of one run.

    ``parameters`` are nilearn's ``load_confounds`` options (``motion='full'``, ``fd_threshold=0.5``, …). The
    confounds file is found next to the preprocessed BOLD, the way fMRIPrep names it.
    """
    strategy = tuple(strategy)
    if not strategy:
        return None, None
    from nilearn.interfaces.fmriprep import load_confounds

    try:
        confounds, sample_mask = load_confounds(str(bold), strategy=strategy, **parameters)
    except (ValueError, FileNotFoundError, KeyError) as error:
        message = " ".join(str(error).split())
        raise InputError(f"Cannot load confounds for {bold.name if hasattr(bold, 'name') else bold}: {message}",
                         exit_code=65) from error
    if confounds is not None and len(confounds) != n_volumes:
        raise InputError(f"The confounds of {getattr(bold, 'name', bold)} have {len(confounds)} rows but the BOLD "
                         f"has {n_volumes} volumes", exit_code=65)
    if confounds is not None and not np.all(np.isfinite(confounds.to_numpy())):
        raise InputError(f"The confounds of {getattr(bold, 'name', bold)} contain non-finite values after "
                         "nilearn's filling of n/a rows", exit_code=65)
    if sample_mask is not None and len(sample_mask) < 2:
        raise InputError(f"Scrubbing leaves {len(sample_mask)} volume(s) of {getattr(bold, 'name', bold)}",
                         exit_code=65)
    logger.info("%s: %d confound regressors (%s), %s volumes kept", getattr(bold, "name", bold),
                0 if confounds is None else confounds.shape[1], ",".join(strategy),
                n_volumes if sample_mask is None else len(sample_mask))
    return confounds, sample_mask
