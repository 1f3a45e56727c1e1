"""Model comparison by cross-validated R²: the best model per voxel of a participant's fit, and how often each
model wins across participants (:mod:`.maps`)."""
