import numpy as np
import pandas as pd
import pytest

from bids_encoder.bids.confounds import load_run_confounds, parse_strategy
from bids_encoder.bids.layout import InputError
from bids_encoder.datasets.example_dataset import SPACE, make_example_dataset


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("conf") / "bids"
    make_example_dataset(root, n_subjects=1, n_runs=1, n_volumes=40, shape=(5, 5, 5))
    func = root / "derivatives" / "fmriprep" / "sub-01" / "func"
    bold = func / f"sub-01_task-localizer_run-1_space-{SPACE}_res-2_desc-preproc_bold.nii.gz"
    return bold, func / "sub-01_task-localizer_run-1_desc-confounds_timeseries.tsv"


def test_parse_strategy():
    assert parse_strategy("motion, high_pass,wm_csf") == ("motion", "high_pass", "wm_csf")
    assert parse_strategy("none") == () and parse_strategy(None) == ()
    with pytest.raises(InputError, match="Unknown confound strategy") as error:
        parse_strategy("motion,aroma")
    assert error.value.exit_code == 64


def test_standard_strategies(run_files):
    bold, tsv = run_files
    confounds, mask = load_run_confounds(tsv, ("motion", "high_pass", "wm_csf"), 40, motion="basic")
    assert sorted(confounds.columns) == sorted(
        ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "cosine00", "cosine01", "cosine02",
         "csf", "white_matter"])
    assert mask is None and np.isfinite(confounds.to_numpy()).all()
    full, _ = load_run_confounds(tsv, ("motion",), 40)  # 'full': derivatives (first row n/a) and squares
    assert full.shape[1] == 24 and np.isfinite(full.to_numpy()).all()
    raw = pd.read_csv(tsv, sep="\t")
    high_motion = int(np.sum(raw["framewise_displacement"].fillna(0) > 0.02))
    _, kept = load_run_confounds(tsv, ("motion", "scrub"), 40, scrub=0, fd_threshold=0.02)
    assert 0 < len(kept) == 40 - high_motion
    assert load_run_confounds(tsv, (), 40) == (None, None)


def test_confounds_with_too_few_rows(run_files, tmp_path):
    bold, tsv = run_files
    with pytest.raises(InputError, match="has 40 rows but the BOLD has 50 volumes") as error:
        load_run_confounds(tsv, ("motion",), 50)
    assert error.value.exit_code == 65


def test_degrees_of_freedom_count_spikes_once():
    """Censored volumes are spike columns of the confounds: each costs one degree of freedom, not two."""
    from bids_encoder.bids.inputs import check_degrees_of_freedom

    check_degrees_of_freedom(10, n_regressors=3, n_confounds=4, n_runs=2)  # 4 confounds incl. 2 spikes: 1 left
    with pytest.raises(InputError, match="10 volumes cannot support 3 regressors, 5 confounds") as error:
        check_degrees_of_freedom(10, n_regressors=3, n_confounds=5, n_runs=2)
    assert error.value.exit_code == 65
