"""Synthetic stimuli for examples and tests (numbers only; nothing is written to disk)."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["bar_apertures"]

DIRECTIONS = [(1, 0), (0, 1), (-1, 0), (0, -1), (0.7071, 0.7071), (-0.7071, -0.7071)]


def bar_apertures(n_side=16, extent=5.0, n_steps=16, blank=4):
    """Bars sweeping in six directions over an (n_side × n_side) pixel grid spanning ±extent degrees.

    Each sweep has ``n_steps`` positions and is followed by ``blank`` empty frames; the bar is 2.5 pixels wide.

    Parameters
    ----------
    n_side : int
        Pixels along each side.
    extent : float
        Half the width of the field (degrees): pixel centres from -extent to extent.
    n_steps : int
        Bar positions per sweep.
    blank : int
        Empty frames after each sweep.

    Returns
    -------
    paradigm : DataFrame (time × pixels) of 0/1 apertures
    grid_coordinates : DataFrame (pixels × 2), columns x and y in degrees, in the paradigm's column order
    """
    coords = np.linspace(-extent, extent, n_side)
    gx, gy = np.meshgrid(coords, coords, indexing="ij")
    grid = pd.DataFrame({"x": gx.ravel(), "y": gy.ravel()})
    width = 2.5 * (coords[1] - coords[0])
    frames = []
    for dx, dy in DIRECTIONS:
        projection = gx * dx + gy * dy
        for position in np.linspace(-extent, extent, n_steps):
            frames.append((np.abs(projection - position) < width / 2).astype(np.float32).ravel())
        frames.extend([np.zeros(n_side * n_side, np.float32)] * blank)
    return pd.DataFrame(np.array(frames)), grid
