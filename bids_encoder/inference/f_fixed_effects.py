"""Fixed effects of F contrasts over runs, per voxel (numpy): the runs' row effects and their covariances combined.

Each input (a run) has, for an F contrast of q rows, the effects of the rows it can estimate (NaN for the others)
and their (q × q) sampling covariance. Equal weights (nilearn's ``FirstLevelModel`` on a list of runs, SPM's):
the rows' effects are summed over the inputs that have them and so are the covariances (over the inputs that
have both rows), ``F = s' C⁻¹ s / q``. Precision weights (FSL's): each input's information ``C⁻¹`` over its rows
(zero elsewhere) is summed, ``I = Σ Iᵢ``, the combined rows ``s = I⁻¹ Σ Iᵢ eᵢ`` and ``F = s' I s / q``. Either way the
degrees of freedom are the sum of the inputs' and q counts the rows some input has; z and p from F.
"""

from __future__ import annotations

import logging

import numpy as np

from .statistics import f_to_z_p

logger = logging.getLogger(__name__)

__all__ = ["f_fixed_effects"]


def f_fixed_effects(effects, covariances, dofs, precision_weighted=False):
    """Combine the row effects of an F contrast over inputs by fixed effects.

    Parameters
    ----------
    effects : array-like (inputs × rows × voxels)
        Each input's estimate of each row; NaN where the input cannot estimate the row.
    covariances : array-like (inputs × rows × rows × voxels)
        Their sampling covariances (entries of absent rows are ignored).
    dofs : array-like (inputs,)
        Degrees of freedom of each input (only inputs with at least one row count).
    precision_weighted : bool
        Inverse-covariance weights; False (default) gives every input the same weight.

    Returns
    -------
    dict with ``F``, ``z``, ``p`` (voxels,), ``rows`` (the numerator degrees of freedom) and ``df``.
    """
    effects = np.asarray(effects, dtype=np.float64)
    covariances = np.asarray(covariances, dtype=np.float64)
    n_inputs, q, n_voxels = effects.shape
    present = np.isfinite(effects).all(axis=2)  # (inputs × rows): the rows each input estimates
    rows = present.any(axis=0)
    used = present.any(axis=1)
    df = float(np.asarray(dofs, dtype=np.float64)[used].sum())
    f = np.full(n_voxels, np.nan)
    if rows.any():
        keep = np.flatnonzero(rows)
        e = np.nan_to_num(effects[:, keep])  # (inputs × k × voxels)
        c = np.nan_to_num(covariances[:, keep][:, :, keep])  # (inputs × k × k × voxels)
        mask = present[:, keep]
        both = (mask[:, :, None] & mask[:, None, :]).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            if precision_weighted:
                information = np.zeros((n_voxels, keep.size, keep.size))
                weighted = np.zeros((n_voxels, keep.size))
                for i in np.flatnonzero(used):
                    rows_i = np.flatnonzero(mask[i])
                    block = np.moveaxis(c[i][np.ix_(rows_i, rows_i)], -1, 0)  # (voxels × r × r)
                    inverse = _inverse(block)
                    information[:, rows_i[:, None], rows_i[None, :]] += inverse
                    weighted[:, rows_i] += np.einsum("vrs,sv->vr", inverse, e[i][rows_i])
                combined = _solve(information, weighted)
                f = np.einsum("vr,vr->v", combined, weighted) / keep.size
            else:
                total = np.einsum("irv->vr", e * mask[:, :, None])
                covariance = np.einsum("irsv,irs->vrs", c, both)
                f = np.einsum("vr,vr->v", total, _solve(covariance, total)) / keep.size
    z, p = f_to_z_p(f, int(rows.sum()) or 1, max(df, 1.0))
    logger.debug("F fixed effects of %d inputs, %d of %d rows", n_inputs, int(rows.sum()), q)
    return {"F": f, "z": z, "p": p, "rows": int(rows.sum()), "df": df}


def _inverse(matrices):
    """Batched inverse; NaN for singular or non-finite matrices."""
    out = np.full_like(matrices, np.nan)
    good = np.isfinite(matrices).all(axis=(1, 2))
    if good.any():
        try:
            out[good] = np.linalg.inv(matrices[good])
        except np.linalg.LinAlgError:
            for v in np.flatnonzero(good):
                try:
                    out[v] = np.linalg.inv(matrices[v])
                except np.linalg.LinAlgError:
                    pass
    return out


def _solve(matrices, vectors):
    """Batched ``matrices⁻¹ vectors`` (voxels × k × k, voxels × k); NaN where a matrix is singular."""
    return np.einsum("vrs,vs->vr", _inverse(matrices), vectors)
