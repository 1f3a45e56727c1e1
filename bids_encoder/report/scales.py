"""How a map is drawn: its colour range and where it fades out over the underlay, with the caption that says so.

Statistics fade by their own value (fully transparent below the low end, opaque above the high end, linear
between), so that the mean BOLD (or template) underlay shows where a map has nothing to say:

- z maps: transparent where |z| < 1.96, opaque from |z| ≥ 3.09 (a t contrast's two-sided p 0.05 and 0.002,
  uncorrected); colours up to the 99.9th percentile of |z| (at least 4), never saturated by the noise.
- effects, F, R², cvR²: transparent below the median of |value| over the brain, opaque from its 99th percentile;
  colours up to the largest |value| of the brain's 99.9th percentile, so the colour bar reaches the effects' size.
- participant counts: opaque; a constant count is said in words rather than drawn (a uniform panel says nothing).

Other maps (model parameters) keep the colour range of :func:`~bids_encoder.report.participant.map_style`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["display_scale", "scale_note", "FADED"]

#: statistics drawn with a fade over the underlay
FADED = ("z", "effect", "F", "rsquared", "cvrsquared")
Z_FADE = (1.96, 3.09)
NAMES = {"rsquared": "R²", "cvrsquared": "|cvR²|", "effect": "|effect|", "F": "F"}


def _finite(values):
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def display_scale(stat, values):
    """``{'vmax', 'fade', 'faded', 'range'}`` for a map of ``stat``: the colour range's end (None: the style's own),
    the (low, high) |value| range over which the map fades in (None: opaque), and the caption's words for both."""
    finite = np.abs(_finite(values))
    if stat not in FADED or finite.size == 0:
        return {"vmax": None, "fade": None, "faded": "", "range": ""}
    top = float(np.percentile(finite, 99.9))
    if stat == "z":
        return {"vmax": max(top, 4.0), "fade": Z_FADE,
                "faded": f"|z| < {Z_FADE[0]:g}; opaque from |z| ≥ {Z_FADE[1]:g} (uncorrected)",
                "range": f"colours up to |z| {max(top, 4.0):.3g}"}
    low, high = (float(v) for v in np.percentile(finite, [50, 99]))
    if not high > low:
        return {"vmax": top or None, "fade": None, "faded": "", "range": ""}
    name = NAMES.get(stat, "|value|")
    return {"vmax": max(top, high), "fade": (low, high),
            "faded": f"{name} < {low:.2g} (the median over the brain); opaque from {high:.2g} (its 99th "
                     "percentile)",
            "range": f"colours up to {max(top, high):.3g} (the 99.9th percentile of {name}; largest "
                     f"{float(finite.max()):.3g})"}


def scale_note(scale, how):
    """The caption's sentence on the colour scale of a map drawn as ``how`` ('slices' or 'mesh')."""
    if not scale["fade"]:
        return scale["range"]
    faded = ("transparent over the underlay where " if how == "slices" else "not drawn where ") + scale["faded"]
    if how == "mesh":
        faded = faded.split("; opaque", 1)[0]
    return "; ".join(part for part in (faded, scale["range"]) if part)
