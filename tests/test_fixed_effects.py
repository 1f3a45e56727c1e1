"""Fixed effects over sessions: the numeric core against nilearn's compute_fixed_effects, and its NaN handling."""

import nibabel as nib
import numpy as np
import pytest
from scipy import stats

from bids_encoder.inference import fixed_effects


def _images(values, shape):
    return [nib.Nifti1Image(row.reshape(shape).astype(np.float64), np.eye(4)) for row in values]


@pytest.mark.parametrize("weighted", [True, False])
def test_equals_nilearn_compute_fixed_effects(weighted):
    from nilearn.glm import compute_fixed_effects

    rng = np.random.default_rng(3)
    shape = (4, 5, 3)
    effects = rng.normal(0.5, 1.0, (3, 60))
    variances = rng.uniform(0.05, 2.0, (3, 60))  # unequal: weighted and unweighted results differ
    dofs = [40.0, 55.0, 61.0]
    mask = nib.Nifti1Image(np.ones(shape, np.uint8), np.eye(4))
    reference = compute_fixed_effects(_images(effects, shape), _images(variances, shape), mask=mask,
                                      precision_weighted=weighted, dofs=dofs)
    ours = fixed_effects(effects, variances, dofs, precision_weighted=weighted)
    for image, ours_values in zip(reference, (ours.effect, ours.variance, ours.t, ours.z), strict=True):
        np.testing.assert_allclose(ours_values, image.get_fdata().ravel(), rtol=1e-5)
    np.testing.assert_array_equal(ours.df, 156.0)
    np.testing.assert_allclose(ours.p, stats.t.sf(ours.t, 156.0), rtol=1e-8)
    if weighted:  # the inverse-variance mean, by hand
        w = 1 / variances
        np.testing.assert_allclose(ours.effect, (w * effects).sum(0) / w.sum(0), rtol=1e-12)
    else:
        assert not np.allclose(ours.effect, fixed_effects(effects, variances, dofs).effect)


def test_nan_inputs_drop_out_with_their_degrees_of_freedom():
    effects = np.array([[1.0, 2.0, np.nan, 4.0], [3.0, np.nan, np.nan, 1.0]])
    variances = np.array([[1.0, 0.5, 1.0, np.nan], [3.0, 1.0, np.nan, 2.0]])
    result = fixed_effects(effects, variances, [10.0, 20.0])
    assert result.effect[0] == pytest.approx((1 / 1 + 3 / 3) / (1 + 1 / 3))
    assert result.variance[0] == pytest.approx(1 / (1 + 1 / 3))
    assert result.effect[1] == 2.0 and result.variance[1] == 0.5 and result.df[1] == 10.0  # input 2 absent
    assert np.isnan([result.effect[2], result.variance[2], result.t[2], result.z[2], result.p[2],
                     result.df[2]]).all()  # no input at all
    assert result.effect[3] == 1.0 and result.df[3] == 20.0  # input 1's variance missing
    assert result.df[0] == 30.0
    assert result.t[1] == pytest.approx(2.0 / np.sqrt(0.5))
    unweighted = fixed_effects(effects, variances, np.array([[10.0] * 4, [20.0] * 4]), precision_weighted=False)
    assert unweighted.effect[0] == 2.0 and unweighted.variance[0] == pytest.approx(4.0 / 4)
    assert unweighted.effect[1] == 2.0 and unweighted.variance[1] == 0.5
