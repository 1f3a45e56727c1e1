"""Data sets and generators for examples and tests (as nilearn's ``datasets``).

- :mod:`.synthetic`: bar apertures (numbers only, nothing written)
- :mod:`.example_dataset`: small fMRIPrep-like BIDS datasets with known ground truth (the tests)
- :mod:`.tuning_example`: fMRIPrep-like datasets with planted 1-D tuning (numerosity: log-Gaussian; orientation:
  von Mises), several runs, events with the stimulus value per event (tuning models, model comparison, decoding)
- :mod:`.mni_example`: the README example's whole-brain MNI dataset (GLM localizer + retinotopic pRF task)
- :mod:`.szinte`: reader for the Szinte et al. (2024) V1 pRF data
"""
