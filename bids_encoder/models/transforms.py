"""Smooth bijections between the real line and a parameter's allowed range.

Fitters optimise unconstrained values ``z``; models see ``forward(z)``. ``backward`` maps natural values (numpy)
to unconstrained ones, clipping values on or beyond a bound just inside it.
"""

from __future__ import annotations

import numpy as np

from .._tensorflow import tf

__all__ = ["Identity", "Positive", "Bounded"]


class Identity:
    """No constraint."""

    bounds = (-np.inf, np.inf)
    max_slope = 1.0  # the largest derivative of forward (a slope far below it: the value sits at a bound)

    def forward(self, z):
        return z

    def backward(self, x):
        return np.asarray(x, dtype=np.float64)

    def __repr__(self):
        return "Identity()"


class Positive:
    """Values above ``lower``: lower + softplus(z)."""

    def __init__(self, lower=0.0):
        self.lower = float(lower)
        self.bounds = (self.lower, np.inf)
        self.max_slope = 1.0

    def forward(self, z):
        return self.lower + tf.nn.softplus(z)

    def backward(self, x):
        y = np.maximum(np.asarray(x, dtype=np.float64) - self.lower, 1e-6)
        # inverse softplus, stable for large y
        return np.where(y > 30, y, np.log(np.expm1(np.minimum(y, 30))))

    def __repr__(self):
        return f"Positive(lower={self.lower})"


class Bounded:
    """Values in (low, high): low + (high - low) * sigmoid(z)."""

    def __init__(self, low, high):
        if not low < high:
            raise ValueError(f"Lower bound {low} must be below upper bound {high}")
        self.low, self.high = float(low), float(high)
        self.bounds = (self.low, self.high)
        self.max_slope = (self.high - self.low) / 4.0

    def forward(self, z):
        return self.low + (self.high - self.low) * tf.sigmoid(z)

    def backward(self, x):
        p = (np.asarray(x, dtype=np.float64) - self.low) / (self.high - self.low)
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p) - np.log1p(-p)

    def __repr__(self):
        return f"Bounded({self.low}, {self.high})"
