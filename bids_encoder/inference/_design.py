"""The design side of first-level inference, shared by every solver: the design's reduced (column-equilibrated
SVD) basis, contrasts in its coordinates, and the independent rows of an F contrast."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def _reduced_basis(design):
    """Column-equilibrated SVD of the design: (Z = U S, V, column norms, rank)."""
    norms = np.linalg.norm(design, axis=0)
    norms[norms == 0] = 1.0
    u, s, vt = np.linalg.svd(design / norms, full_matrices=False)
    rank = int((s > s[0] * max(design.shape) * np.finfo(float).eps).sum())
    return u[:, :rank] * s[:rank], vt[:rank].T, norms, rank


def _contrast_coordinates(weights, basis, norms, name):
    """A contrast over the design columns in the reduced coordinates; NaN (with a warning) when it is not
    estimable (a condition without events, or confounded with other columns): its maps are NaN."""
    scaled = np.atleast_2d(weights) / norms
    coordinates = scaled @ basis  # (rows, rank)
    if np.abs(scaled - coordinates @ basis.T).max() > 1e-6 * np.abs(scaled).max():
        logger.warning("Contrast %s is not estimable (a condition without events, or confounded with other columns "
                       "of the design): its maps are NaN", name)
        return np.full_like(coordinates, np.nan)
    return coordinates


def _f_coordinates(weights, basis, norms, name):
    """An F contrast's rows in the reduced coordinates, leaving out (with a warning) rows that are not estimable;
    all NaN when none is left."""
    rows = []
    for i, row in enumerate(np.atleast_2d(weights)):
        coordinates = _contrast_coordinates(row, basis, norms, f"{name} (row {i + 1})")
        if not np.isnan(coordinates).any():
            rows.append(coordinates[0])
    return independent_rows(np.vstack(rows), name) if rows else np.full((1, basis.shape[1]), np.nan)


def independent_rows(rows, name):
    """The rows of an F contrast if they are linearly independent, else (with a warning) an orthonormal basis of
    their span: the F statistic depends on the span only, and its size, the rank, is the numerator's degrees of
    freedom."""
    _, s, vt = np.linalg.svd(rows, full_matrices=False)
    rank = int((s > s[0] * max(rows.shape) * 1e-10).sum()) if s.size and s[0] > 0 else 0
    if rank == 0:
        return np.full((1, rows.shape[1]), np.nan)
    if rank == rows.shape[0]:
        return rows
    logger.warning("F contrast %s: its %d rows span %d dimensions of the design; tested with %d numerator degrees "
                   "of freedom", name, rows.shape[0], rank, rank)
    return vt[:rank]
