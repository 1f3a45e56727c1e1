"""The group GLM of the effect maps: design from participants.tsv covariates, mixed effects or OLS, its maps.

Mixed effects (default) when every participant of a contrast has its variance map (first-level inference), OLS
otherwise or with ``--group-model ols`` (see :mod:`bids_encoder.inference.group`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ...bids.derivatives import bids_label
from ...bids.layout import InputError
from ...inference.group import group_glm

logger = logging.getLogger(__name__)

__all__ = ["read_covariates", "GroupDesign"]

MODEL_NAMES = {"mixed": "mixed effects: REML between-participant variance given the first-level variances "
                        "(FLAME1-like), weighted least squares",
               "ols": "ordinary least squares over the participants' effects"}


def read_covariates(bids_dir, names):
    """participants.tsv columns ``names`` → DataFrame indexed by subject label (numeric; errors 64/65/66)."""
    if not names:
        return None
    path = Path(bids_dir) / "participants.tsv"
    if not path.is_file():
        raise InputError(f"--group-covariate needs {path}, which does not exist", exit_code=66)
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "participant_id" not in table.columns:
        raise InputError(f"{path.name} has no participant_id column", exit_code=65)
    missing = [name for name in names if name not in table.columns]
    if missing:
        raise InputError(f"--group-covariate {', '.join(missing)}: no such column in {path.name} (columns: "
                         f"{', '.join(c for c in table.columns if c != 'participant_id')})", exit_code=64)
    table.index = table["participant_id"].str.removeprefix("sub-")
    values = {}
    for name in names:
        column = pd.to_numeric(table[name].replace("n/a", np.nan), errors="coerce")
        bad = table.index[column.isna()].tolist()
        if bad:
            raise InputError(f"--group-covariate {name}: {path.name} has no number for "
                             f"{', '.join('sub-' + s for s in bad)}", exit_code=65)
        values[name] = column.astype(float)
    return pd.DataFrame(values)


class GroupDesign:
    """The design of one group key: an intercept and the demeaned covariates of its participants."""

    def __init__(self, subjects, covariates, label):
        self.subjects = list(subjects)
        columns = {"mean": np.ones(len(self.subjects))}
        self.covariates = {}
        if covariates is not None:
            absent = [s for s in self.subjects if s not in covariates.index]
            if absent:
                raise InputError(f"participants.tsv has no row for {', '.join('sub-' + s for s in absent)}",
                                 exit_code=65)
            for name in covariates.columns:
                if bids_label(name) == "mean":
                    raise InputError("--group-covariate mean: the name is taken by the group mean", exit_code=64)
                values = covariates.loc[self.subjects, name].to_numpy()
                if np.ptp(values) == 0:
                    raise InputError(f"{label}: covariate {name} is the same for every participant", exit_code=65)
                columns[bids_label(name)] = values - values.mean()
                self.covariates[bids_label(name)] = {"Column": name, "Mean": float(values.mean()),
                                                     "Values": {f"sub-{s}": float(v) for s, v in
                                                                zip(self.subjects, values, strict=True)}}
        self.names = list(columns)
        self.matrix = np.column_stack(list(columns.values()))

    def fit(self, effects, variances, model):
        """{column: result} of :func:`~bids_encoder.inference.group.group_glm`, and the model used."""
        used = model if variances is not None else "ols"
        contrasts = {name: np.eye(len(self.names))[i] for i, name in enumerate(self.names)}
        return group_glm(effects, self.matrix, contrasts, variances=variances, model=used), used

    def test(self, used, column):
        test = {"Name": ("one-sample t-test" if used == "ols" and len(self.names) == 1 else
                         "mixed effects" if used == "mixed" else "ordinary least squares"),
                "GroupModel": used, "Definition": MODEL_NAMES[used],
                "Design": self.names, "Tested": column,
                "NullHypothesis": ("mean across participants = 0" if column == "mean" else
                                   f"slope of the demeaned covariate {column} = 0"),
                "DegreesOfFreedom": f"participants with a value at the voxel - {len(self.names)}",
                "Implementation": "bids_encoder.inference.group (numpy), z and p from scipy.stats.t log-probabilities"}
        if self.covariates:
            test["Covariates"] = self.covariates
        return test
