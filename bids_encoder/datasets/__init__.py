"""Data sets and generators for examples and tests (as nilearn's ``datasets``).

- :mod:`.synthetic`: bar apertures (numbers only, nothing written): :func:`bar_apertures`
- :mod:`.example_dataset`: small fMRIPrep-like BIDS datasets with known ground truth (the tests):
  :func:`make_example_dataset`
- :mod:`.tuning_example`: fMRIPrep-like datasets with planted 1-D tuning (numerosity: log-Gaussian; orientation:
  von Mises), several runs, events with the stimulus value per event (tuning models, model comparison, decoding):
  :func:`make_tuning_dataset`
- :mod:`.mni_example`: the README example's whole-brain MNI dataset (GLM localizer + retinotopic pRF task):
  :func:`make_mni_example`
- :mod:`.fmriprep_like`: fMRIPrep-like derivatives around a real raw BIDS layout's events and sidecars:
  :func:`copy_raw`, :func:`build_fmriprep`
- :mod:`.hcp_like`: HCP-shaped subjects (91,282 grayordinates, 6 runs × 300 frames at TR 1 s, planted pRFs), in
  memory or as a BIDS dataset with fMRIPrep-like CIFTI outputs: :func:`hcp_prf_subject`, :func:`make_hcp_like`
- :mod:`.szinte`: reader for the Szinte et al. (2024) V1 pRF data: :func:`load_szinte2024`,
  :func:`szinte_fit_inputs`

The names load on first use (the generators import nibabel and nilearn).
"""

__all__ = ["bar_apertures", "make_example_dataset", "make_tuning_dataset", "make_mni_example", "copy_raw",
           "build_fmriprep", "hcp_prf_subject", "make_hcp_like", "load_szinte2024", "szinte_fit_inputs"]

_LAZY = {"bar_apertures": "synthetic", "make_example_dataset": "example_dataset",
         "make_tuning_dataset": "tuning_example", "make_mni_example": "mni_example", "copy_raw": "fmriprep_like",
         "build_fmriprep": "fmriprep_like", "hcp_prf_subject": "hcp_like", "make_hcp_like": "hcp_like",
         "load_szinte2024": "szinte", "szinte_fit_inputs": "szinte"}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
