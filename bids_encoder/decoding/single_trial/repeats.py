"""Repeated conditions: which trials can cross-validate each other, and the reliability of betas.

A *condition* is what repeats (an image, a word: the events' column named by the caller). Two occurrences of a
condition can check each other only if their betas are estimated from independent data: occurrences in different
runs always are; occurrences in the same run only when they are at least ``min_separation`` seconds apart
(adjacent trials' least-squares betas share noise: at a 3 s spacing their errors correlate about −0.6, beyond
about 15 s only through the run's common drift). In time order, an occurrence closer than that to an occurrence
already kept in the same run is not used (its beta is still estimated). The kept occurrences of every condition
with at least two of them are the *repeated trials*; each is predicted by the mean of its condition's other kept
occurrences (its *partners*), and they are split into two halves (alternating in time order) for the split-half
reliability.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..._tensorflow import tf

logger = logging.getLogger(__name__)

__all__ = ["Repeats", "MIN_SEPARATION", "MIN_REPEATED_TRIALS"]

MIN_SEPARATION = 15.0  # s
MIN_REPEATED_TRIALS = 10  # fewer repeated trials than this: the choices use held-out time series instead


class Repeats:
    """The repeated trials of a fit.

    Parameters
    ----------
    conditions : sequence or None
        Condition of every trial (NaN/None: a trial that repeats nothing); None: no conditions.
    runs, onsets : arrays (trials,)
    positions : array (trials,) of int
        Row of every trial in the betas the methods receive (−1: not estimated).
    min_separation : float
        Seconds between two kept occurrences of a condition in the same run.

    Attributes
    ----------
    rows : array of int
        Rows (into the betas) of the repeated trials, grouped by condition.
    codes : array of int
        Condition (0…n_conditions − 1) of each repeated trial; ``halves`` its half (0 or 1).
    usable : bool
        Enough repeated trials (:data:`MIN_REPEATED_TRIALS`, two conditions or more) to choose by them.
    across_runs : bool
        Some condition repeats in different runs.
    """

    def __init__(self, conditions, runs, onsets, positions, min_separation=MIN_SEPARATION):
        self.min_separation = float(min_separation)
        n = len(runs)
        runs, onsets, positions = np.asarray(runs), np.asarray(onsets, float), np.asarray(positions)
        rows, codes, halves = [], [], []
        self.across_runs = False
        self.n_dropped = 0
        n_codes = 0
        if conditions is not None:
            labels, _ = pd.factorize(pd.Series(list(conditions), dtype=object), use_na_sentinel=True)
            for label in range(int(labels.max(initial=-1)) + 1):
                members = np.flatnonzero((labels == label) & (positions >= 0))
                members = members[np.lexsort((onsets[members], runs[members]))]
                kept = []
                for t in members:
                    if all(runs[k] != runs[t] or abs(onsets[k] - onsets[t]) >= self.min_separation for k in kept):
                        kept.append(t)
                self.n_dropped += len(members) - len(kept)
                if len(kept) >= 2:
                    rows.extend(positions[kept])
                    codes.extend([n_codes] * len(kept))
                    n_codes += 1
                    halves.extend(np.arange(len(kept)) % 2)
                    self.across_runs |= len(set(runs[kept].tolist())) > 1
        self.n_trials = n
        self.rows = np.asarray(rows, dtype=np.int64)
        self.codes = np.asarray(codes, dtype=np.int64)
        self.halves = np.asarray(halves, dtype=np.int64)
        self.n_conditions = int(self.codes.max(initial=-1)) + 1
        self.counts = np.bincount(self.codes, minlength=self.n_conditions).astype(np.float32)
        self.usable = self.rows.size >= MIN_REPEATED_TRIALS and self.n_conditions >= 2
        self.reliability_defined = self.n_conditions >= 3
        self._codes_tf = tf.constant(self.codes.astype(np.int32))
        self._halves_tf = tf.constant((2 * self.codes + self.halves).astype(np.int32))
        self._counts_tf = tf.constant(self.counts)
        half_counts = np.bincount(2 * self.codes + self.halves, minlength=2 * self.n_conditions)
        self._half_counts_tf = tf.constant(half_counts.astype(np.float32))
        if conditions is not None and self.n_dropped:
            logger.info("%d occurrence(s) within %g s of an earlier one of the same condition in the same run are "
                        "not used for cross-validation", self.n_dropped, self.min_separation)

    def describe(self):
        return {"RepeatedTrials": int(self.rows.size), "RepeatedConditions": int(self.n_conditions),
                "AcrossRuns": bool(self.across_runs), "MinimumSeparation": self.min_separation,
                "OccurrencesNotUsed": int(self.n_dropped)}

    def take(self, betas):
        """The repeated trials' rows of ``betas`` (trials × …), as a float32 tensor."""
        return tf.gather(tf.convert_to_tensor(betas, tf.float32), self.rows)

    def partner_means(self, repeated):
        """Each repeated trial's partners' mean: (S_c − b_t) / (n_c − 1), for ``repeated`` (repeated trials × …)."""
        sums = tf.math.unsorted_segment_sum(repeated, self._codes_tf, self.n_conditions)
        counts = tf.gather(self._counts_tf, self._codes_tf)
        shape = [-1] + [1] * (len(repeated.shape) - 1)
        return (tf.gather(sums, self._codes_tf) - repeated) / tf.reshape(counts - 1.0, shape)

    def cv_r2(self, repeated):
        """Cross-validated R² of the repeated trials' betas predicted by their partners (about 0: no response):
        1 − Σ (b − m)² / Σ b², over the leading axis."""
        error = tf.reduce_sum(tf.square(repeated - self.partner_means(repeated)), axis=0)
        total = tf.reduce_sum(tf.square(repeated), axis=0)
        return 1.0 - error / tf.maximum(total, 1e-30)

    def split_half(self, repeated):
        """Split-half reliability per voxel: Pearson correlation, across conditions, of the mean beta of each
        condition's odd and even kept occurrences (NaN with fewer than 3 conditions)."""
        if not self.reliability_defined:
            return tf.fill(tf.shape(repeated)[1:], np.float32(np.nan))
        sums = tf.math.unsorted_segment_sum(repeated, self._halves_tf, 2 * self.n_conditions)
        shape = [-1] + [1] * (len(repeated.shape) - 1)
        means = sums / tf.reshape(self._half_counts_tf, shape)
        a, b = means[0::2], means[1::2]
        a = a - tf.reduce_mean(a, axis=0)
        b = b - tf.reduce_mean(b, axis=0)
        denominator = tf.sqrt(tf.reduce_sum(a * a, axis=0) * tf.reduce_sum(b * b, axis=0))
        return tf.where(denominator > 0, tf.reduce_sum(a * b, axis=0) / tf.maximum(denominator, 1e-30), np.nan)
