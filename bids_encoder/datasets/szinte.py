"""Reader for the Szinte et al. (2024) V1 pRF data as distributed with braincoder (data/szinte2024).

The files are not shipped with bids_encoder; point :func:`load_szinte2024` at a folder holding them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["SZINTE_TR", "SzinteData", "load_szinte2024", "szinte_fit_inputs"]

#: Repetition time of the recordings (s); not stored in the files
SZINTE_TR = 1.317025


@dataclass
class SzinteData:
    frames: np.ndarray  # (150 time, 80 x, 45 y) apertures as stored (0..9)
    paradigm: pd.DataFrame  # (time × pixels) apertures scaled to a maximum of 1, x-major
    grid: pd.DataFrame  # pixel centres x, y (degrees), in the paradigm's column order
    data: pd.DataFrame  # (150 × 2,365) demeaned BOLD, columns = reference voxel labels
    reference: pd.DataFrame  # reference Gaussian pRF fits (x, y, sd, baseline, amplitude, r2)


def load_szinte2024(folder):
    """Read the Szinte et al. (2024) V1 data.

    Parameters
    ----------
    folder : path
        The folder with ``mask-v1_bold.tsv.gz``, ``dm_gazecenter.npz``, ``grid_coordinates.tsv`` and
        ``gauss_parameters.tsv`` (its README describes them).

    Returns
    -------
    SzinteData
        Frames, paradigm (time × pixels, scaled to 1), pixel grid, data (time × voxels) and the reference fits.

    Raises
    ------
    FileNotFoundError
        Naming a missing file.
    """
    folder = Path(folder)
    frames = np.load(folder / "dm_gazecenter.npz")["arr_0"]
    paradigm = pd.DataFrame(frames.reshape(len(frames), -1) / frames.max())
    grid = pd.read_csv(folder / "grid_coordinates.tsv", sep="\t")
    data = pd.read_csv(folder / "mask-v1_bold.tsv.gz", sep="\t", index_col=0)
    reference = pd.read_csv(folder / "gauss_parameters.tsv", sep="\t", index_col=0)
    data.columns = reference.index
    return SzinteData(frames=frames, paradigm=paradigm, grid=grid, data=data, reference=reference)


def szinte_fit_inputs(szinte):
    """The Szinte data as the inputs of one participant-level pRF fit (one run, no confounds), so that the app's
    fits and cross-validation (:mod:`bids_encoder.workflows.fits.crossval`) run on them directly.

    Parameters
    ----------
    szinte : SzinteData
        From :func:`load_szinte2024`.

    Returns
    -------
    bids_encoder.bids.inputs.FitInputs
    """
    from ..bids.inputs import FitInputs

    index = pd.MultiIndex.from_arrays([np.ones(len(szinte.data), int), np.arange(len(szinte.data))],
                                      names=["run", "volume"])
    data = szinte.data.set_axis(index, axis=0)
    paradigm = szinte.paradigm.astype(np.float32).set_axis(index, axis=0)
    return FitInputs(runs=[None], data=data, writer=None, tr=SZINTE_TR, paradigm=paradigm,
                     confounds=pd.DataFrame(index=index), grid=szinte.grid)
