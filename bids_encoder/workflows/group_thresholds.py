"""Thresholded group z maps: Benjamini-Hochberg FDR (every geometry) and cluster extent (volumes), with nilearn.

- FDR: nilearn's ``fdr_threshold`` on the finite z values (one-sided p = Φ(−z), positive effects): z where
  z ≥ the threshold, 0 elsewhere in the map, NaN where the z map has none.
- Cluster extent (volumes): nilearn's ``threshold_stats_img`` at a one-sided height p < ``height_p`` keeping clusters
  of at least ``extent`` voxels (face-connected, nilearn's rule), and ``get_clusters_table`` of the result.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["fdr_map", "cluster_map", "HEIGHT_P"]

HEIGHT_P = 0.001


def fdr_map(z, q):
    """(thresholded z, threshold or None when nothing survives)."""
    from nilearn.glm import fdr_threshold

    z = np.asarray(z, dtype=np.float64)
    finite = np.isfinite(z)
    threshold = float(fdr_threshold(z[finite], q)) if finite.any() else np.inf
    values = np.where(finite, np.where(z >= threshold, z, 0.0), np.nan)
    return values, (None if not np.isfinite(threshold) else threshold)


def cluster_map(z, writer, extent, height_p=HEIGHT_P):
    """(thresholded z over the writer's voxels, clusters table DataFrame, height threshold) of a volume z map."""
    from nilearn.glm import threshold_stats_img
    from nilearn.reporting import get_clusters_table

    z = np.asarray(z, dtype=np.float64)
    image = writer.to_image(np.nan_to_num(z), "z")
    thresholded, height = threshold_stats_img(image, alpha=height_p, height_control="fpr",
                                              cluster_threshold=int(extent), two_sided=False)
    values = np.asarray(thresholded.dataobj, dtype=np.float64)[writer.mask]
    values = np.where(np.isfinite(z), values, np.nan)
    table = get_clusters_table(image, stat_threshold=float(height), cluster_threshold=int(extent), two_sided=False)
    return values, table, float(height)
