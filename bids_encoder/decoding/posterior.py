"""Stimulus apertures for decoding 2-D pRF models on a grid of positions (the posterior itself is the model's
likelihood, :func:`bids_encoder.models.likelihood.stimulus_pdf`, re-exported here)."""

from __future__ import annotations

import numpy as np

from ..models.likelihood import grid_log_weights, make_grid, stimulus_pdf

__all__ = ["stimulus_pdf", "grid_log_weights", "make_grid", "disc_apertures"]


def disc_apertures(grid_coordinates, radius):
    """A ``paradigm_fn`` for 2-D pRF models: each (x, y) point becomes a disc of ``radius`` (degrees).

    Parameters
    ----------
    grid_coordinates : DataFrame or array, shape (pixels, 2)
        The model's pixel positions (``model.grid_coordinates``).
    radius : float

    Returns
    -------
    callable
        ``f(points)`` → apertures (points × pixels): 1 inside the disc, 0 outside, with a linear edge one pixel
        wide (anti-aliased, so that the response changes smoothly with the position).
    """
    pixels = np.asarray(grid_coordinates, dtype=np.float64)
    steps = [np.diff(np.unique(pixels[:, i])) for i in range(2)]
    pixel = float(np.median(np.concatenate([s for s in steps if s.size]))) if any(s.size for s in steps) else 1.0

    def apertures(points):
        points = np.asarray(points, dtype=np.float64)
        distance = np.hypot(points[:, :1] - pixels[:, 0], points[:, 1:2] - pixels[:, 1])
        return np.clip(0.5 + (radius - distance) / pixel, 0.0, 1.0).astype(np.float32)

    return apertures
