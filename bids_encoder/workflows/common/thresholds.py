"""Thresholded group z maps: Benjamini-Hochberg FDR (every geometry) and cluster extent (volumes), with nilearn.

- FDR: nilearn's ``fdr_threshold`` on the finite z values (one-sided p = Φ(−z), positive effects): z where
  z ≥ the threshold, 0 elsewhere in the map, NaN where the z map has none.
- Cluster extent (volumes): nilearn's ``threshold_stats_img`` at a one-sided height p < ``height_p`` keeping clusters
  of at least ``extent`` voxels (face-connected, nilearn's rule), and ``get_clusters_table`` of the result.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from scipy.stats import norm

logger = logging.getLogger(__name__)

__all__ = ["fdr_map", "cluster_map", "write_thresholded", "HEIGHT_P"]

HEIGHT_P = 0.001
CLUSTER_COLUMNS = ["Cluster ID", "X", "Y", "Z", "Peak Stat", "Cluster Size (mm3)"]


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
    height = float(norm.isf(height_p))
    if not np.any(np.nan_to_num(z) > height):  # nothing above the height: nilearn would find an empty mask
        return np.where(np.isfinite(z), 0.0, np.nan), pd.DataFrame(columns=CLUSTER_COLUMNS), height
    image = writer.to_image(np.nan_to_num(z), "z")
    with warnings.catch_warnings():  # "no clusters found" and the like: the table says so
        warnings.simplefilter("ignore", UserWarning)
        thresholded, height = threshold_stats_img(image, alpha=height_p, height_control="fpr",
                                                  cluster_threshold=int(extent), two_sided=False)
        table = get_clusters_table(image, stat_threshold=float(height), cluster_threshold=int(extent),
                                   two_sided=False)
    values = np.asarray(thresholded.dataobj, dtype=np.float64)[writer.mask]
    values = np.where(np.isfinite(z), values, np.nan)
    return values, table, float(height)


def write_thresholded(write, staging, kind, writer, target, z, sidecar, used, fdr_q, extent, common):
    """Write the FDR-thresholded z map of ``target`` (entities of a z map) and, for volumes, its cluster-extent map
    and clusters table; ``write(entities, values, sidecar, used)`` writes a map. Returns the table's paths."""
    from ...bids.derivatives import atomic_write, derivative_path, write_json

    prefix = target.get("desc", "")
    label = (lambda word: prefix + word.capitalize()) if prefix else (lambda word: word)
    values, threshold = fdr_map(z, fdr_q)
    write({**target, "desc": label("fdr")}, values, {
        **sidecar, "Description": f"FDR-thresholded (q = {fdr_q}) {sidecar['Description']}",
        "Threshold": {"Method": "Benjamini-Hochberg FDR on the one-sided p-values of z (nilearn fdr_threshold)",
                      "Q": fdr_q, "ZThreshold": threshold, "BelowThresholdValue": 0,
                      "Survivors": int(np.sum(values > 0))}}, used)
    if kind != "volume":
        return []
    values, table, height = cluster_map(z, writer, extent)
    entities = {**target, "desc": label("cluster")}
    definition = {"Method": "nilearn threshold_stats_img (height_control='fpr', one-sided) then clusters of at least "
                            "ClusterExtent voxels; get_clusters_table for the table",
                  "HeightP": HEIGHT_P, "ZThreshold": height, "ClusterExtent": extent, "BelowThresholdValue": 0,
                  "Clusters": int(table["Cluster ID"].astype(str).str.isdigit().sum())}
    write(entities, values, {**sidecar, "Description": f"Cluster-extent thresholded {sidecar['Description']}",
                             "Threshold": definition}, used)
    path = derivative_path(staging, entities, suffix="clusters", extension=".tsv")
    atomic_write(path, lambda tmp: table.to_csv(tmp, sep="\t", index=False, na_rep="n/a"))
    return [path, write_json(path.with_name(path.name[: -len(".tsv")] + ".json"), {
        "Description": f"Clusters of: {sidecar['Description']}", "Threshold": definition,
        "Columns": {"Cluster ID": "cluster number (letters: sub-peaks)", "X": "mm", "Y": "mm", "Z": "mm",
                    "Peak Stat": "z at the peak", "Cluster Size (mm3)": "volume of the cluster"},
        **common, "Sources": used})]
