"""``--decode``: the leave-one-run-out logic (no training data from the held-out run), single-trial betas per
run, the accuracy figures, and the command end to end on the synthetic numerosity dataset."""

import gzip
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bids_encoder import __version__
from bids_encoder.cli import main
from bids_encoder.datasets.tuning_example import make_tuning_dataset
from bids_encoder.decoding import lss_betas, trial_regressors
from bids_encoder.decoding.metrics import accuracy, circular_correlation, circular_error
from bids_encoder.workflows.decoding.decode import (
    Trials,
    _Fitter,
    _inner_cvr2,
    _lsa_betas,
    _train_fold,
    decode_betas,
    decoding_grid,
    single_trial_betas,
)

N_RUNS, N_TRIALS, N_VOXELS = 2, 28, 12


def _simulated_betas(rng):
    """Gaussian tuning over 1–7, preferred values spread over the range, iid noise (SNR about 2)."""
    values = np.tile(np.repeat(np.arange(1.0, 8.0), 4)[:N_TRIALS], N_RUNS)
    runs = np.repeat(np.arange(1, N_RUNS + 1), N_TRIALS)
    for run in range(1, N_RUNS + 1):
        rows = np.flatnonzero(runs == run)
        values[rows] = rng.permutation(values[rows])
    preferred = np.linspace(1.0, 7.0, N_VOXELS)
    signal = 2.0 * np.exp(-0.5 * ((values[:, None] - preferred[None, :]) / 1.5) ** 2)
    betas = (signal + rng.normal(0.0, 1.0, signal.shape)).astype(np.float32)
    return betas, Trials(runs, np.arange(len(runs)) * 5.0, np.full(len(runs), 2.0), values)


def test_held_out_run_never_reaches_its_training_fit(rng):
    """The fold that holds run 1 out, retrained after run 1's betas are replaced by noise, is bit-identical
    (voxels, their inner cvR², tuning parameters, Ω); the voxel selection of the fold that trains on run 1
    changes. Voxels are chosen by their inner cvR² (8 of 12, best first)."""
    betas, trials = _simulated_betas(rng)
    changed = betas.copy()
    held = trials.run == 1
    changed[held] = rng.normal(0.0, 1.0, changed[held].shape).astype(np.float32)
    grid = decoding_grid("gauss1d", np.arange(1.0, 8.0))

    def fitter():
        return _Fitter("gauss1d", np.arange(1.0, 8.0), None, False, 10, 2_000_000_000)

    rows = np.flatnonzero(trials.run != 1)
    before = _train_fold(fitter(), betas, trials.value, trials.run, rows, 8, grid)
    again = _train_fold(fitter(), changed, trials.value, trials.run, rows, 8, grid)
    np.testing.assert_array_equal(before["voxels"], again["voxels"])
    np.testing.assert_array_equal(before["cvr2"], again["cvr2"])
    np.testing.assert_array_equal(before["parameters"].to_numpy(), again["parameters"].to_numpy())
    np.testing.assert_array_equal(before["omega"].to_numpy(), again["omega"].to_numpy())
    assert before["voxels"].size == 8 and np.all(np.diff(before["cvr2"]) <= 0) and before["cvr2"][-1] > 0
    rows = np.flatnonzero(trials.run != 2)  # trains on run 1
    cvr2, _, _ = _inner_cvr2(fitter(), betas, trials.value, trials.run, rows, np.arange(N_VOXELS))
    changed_cvr2, _, _ = _inner_cvr2(fitter(), changed, trials.value, trials.run, rows, np.arange(N_VOXELS))
    assert not np.array_equal(cvr2, changed_cvr2)
    assert np.nanmedian(changed_cvr2) < 0 < np.nanmedian(cvr2)  # run 1's noise holds no tuning


def test_decode_needs_two_runs(rng):
    betas, trials = _simulated_betas(rng)
    one = trials.run == 1
    with pytest.raises(Exception, match="at least two runs") as error:
        decode_betas(betas[one], Trials(trials.run[one], trials.onset[one], trials.duration[one],
                                        trials.value[one]), "gauss1d")
    assert error.value.exit_code == 65


def test_betas_of_a_run_depend_on_its_bold_only(tmp_path, rng):
    """Single-trial betas per run: changing run 2's BOLD leaves run 1's betas identical (LSA and LSS); LSA equals
    lss_betas with every trial its own nuisance group (all trials in one GLM)."""
    n, tr = 120, 1.5
    runs, frames = [], []
    for number in (1, 2):
        onsets = 4.0 + np.arange(20) * 8.0
        path = tmp_path / f"run-{number}_events.tsv"
        pd.DataFrame({"onset": onsets, "duration": 1.0, "trial_type": "stimulus",
                      "numerosity": rng.integers(1, 6, onsets.size)}).to_csv(path, sep="\t", index=False)
        runs.append(SimpleNamespace(events=path, tr=tr, start_time=0.0, label=f"run-{number}", run=number))
        frames.append(rng.normal(100.0, 1.0, (n, 6)).astype(np.float32))
    index = pd.MultiIndex.from_arrays([np.repeat([1, 2], n), np.tile(np.arange(n), 2)], names=["run", "volume"])
    inputs = SimpleNamespace(runs=runs, n_volumes=[n, n], tr=tr, data=pd.DataFrame(np.vstack(frames), index=index),
                             confounds=pd.DataFrame(rng.normal(size=(2 * n, 2)), index=index))
    for method in ("lsa", "lss"):
        betas, trials, usable = single_trial_betas(inputs, "numerosity", method=method)
        assert betas.shape == (40, 6) and usable.tolist() == list(range(6)) and set(trials.run) == {1, 2}
        other = SimpleNamespace(**vars(inputs))
        other.data = inputs.data.copy()
        other.data.iloc[n:] = rng.normal(100.0, 1.0, (n, 6)).astype(np.float32)
        again, _, _ = single_trial_betas(other, "numerosity", method=method)
        np.testing.assert_array_equal(betas[trials.run == 1], again[trials.run == 1])
        assert not np.allclose(betas[trials.run == 2], again[trials.run == 2])
    regressors = trial_regressors(np.arange(10) * 9.0 + 3.0, 1.0, np.arange(n) * tr)
    data, confounds = rng.normal(size=(n, 4)), rng.normal(size=(n, 3))
    expected = lss_betas(regressors, data, confounds=confounds, trial_types=np.arange(10)).to_numpy()
    np.testing.assert_allclose(_lsa_betas(regressors.to_numpy(), data, confounds), expected, rtol=1e-4,
                               atol=1e-5)


def test_accuracy_figures():
    """Pearson r, MAE and coverage by hand; circular error wraps, circular correlation of a shifted copy is 1."""
    true = np.array([1.0, 2.0, 3.0, 4.0])
    decoded = true + [0.5, -0.5, 0.5, -1.0]
    result = accuracy(true, decoded, [1, 1, 1, 1], decoded - 0.6, decoded + 0.6)
    assert result["MeanAbsoluteError"] == pytest.approx(0.625)
    assert result["Coverage"] == pytest.approx(0.75)
    assert result["Correlation"] == pytest.approx(np.corrcoef(true, true + [0.5, -0.5, 0.5, -1.0])[0, 1])
    np.testing.assert_allclose(circular_error([179.0, 1.0], [1.0, 179.0], 180.0), [-2.0, 2.0])
    angles = np.array([10.0, 50.0, 100.0, 150.0, 170.0])
    assert circular_correlation(angles, np.mod(angles + 30.0, 180.0), 180.0) == pytest.approx(1.0)
    wrapped = accuracy([170.0, 10.0], [10.0, 170.0], None, [160.0, 175.0], [20.0, 15.0], True, 180.0)
    assert wrapped["MeanAbsoluteError"] == pytest.approx(20.0) and wrapped["Coverage"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- end to end
FIT = "sub-01_task-numerosity_space-MNI152NLin2009cAsym_res-2_model-loggauss1d"
ARGS = ["--model", "loggauss1d", "--stimulus-column", "numerosity", "--nuisance-trial-type", "response",
        "--cv", "none", "--no-report", "--positive-amplitude", "--confounds", "motion,high_pass",
        "--confounds-param", "motion=basic"]


def _decode(tmp_path_factory, name, *extra):
    """The numerosity data set (one participant, two runs) decoded by the CLI: (root, output folder, exit code)."""
    root = tmp_path_factory.mktemp(name)
    make_tuning_dataset(root / "bids", kind="numerosity", n_subjects=1, n_runs=2, amplitude=2.0, seed=1)
    out = root / "out"
    code = main([str(root / "bids"), str(out), "participant", "--work-dir", str(root / "work"), *ARGS,
                 "--decode", "--decode-voxels", "60", *extra])
    return root, out, code


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    return _decode(tmp_path_factory, "decode")


@pytest.fixture(scope="module")
def decoded_singletrial(tmp_path_factory):
    """As ``decoded``, the single-trial responses by the singletrial model (every stage)."""
    return _decode(tmp_path_factory, "decode_singletrial", "--decode-betas", "singletrial")


def test_decode_end_to_end(decoded):
    """Exact file names; the table's columns and sidecar fields; decoded vs true r ≥ 0.75 (chance below it);
    coverage of the 95 % intervals 0.45–1.0 (plug-in posteriors of 2 runs are overconfident, see the README);
    posteriors integrate to 1."""
    _, out, code = decoded
    _check_decoding(out, code, "LSA")


def test_decode_end_to_end_with_singletrial_betas(decoded, decoded_singletrial):
    """--decode-betas singletrial: the same files, fields and bounds; the sidecar names the method; on these
    data its betas decode at least as well as least squares per run (measured: r 0.875 against 0.809)."""
    _, out, code = decoded_singletrial
    _check_decoding(out, code, "SINGLETRIAL")
    sidecar = json.loads((out / "sub-01" / "func" / f"{FIT}_decoding.json").read_text())
    assert "held-out time series" in sidecar["SingleTrialResponses"]["Definition"]
    lsa = json.loads((decoded[1] / "sub-01" / "func" / f"{FIT}_decoding.json").read_text())
    assert sidecar["Accuracy"]["Correlation"] >= lsa["Accuracy"]["Correlation"] - 0.02


def test_singletrial_betas_do_not_use_the_stimulus_values(tmp_path, rng):
    """--decode-betas singletrial chooses nothing from the labels: permuting the stimulus values of both runs leaves
    every beta identical (no held-out label can shape the training betas)."""
    n, tr = 120, 1.5
    runs, frames, values = [], [], rng.integers(1, 6, 40)
    for number in (1, 2):
        runs.append(SimpleNamespace(events=tmp_path / f"run-{number}_events.tsv", tr=tr, start_time=0.0,
                                    label=f"run-{number}", run=number))
        frames.append(rng.normal(100.0, 1.0, (n, 80)).astype(np.float32))
    index = pd.MultiIndex.from_arrays([np.repeat([1, 2], n), np.tile(np.arange(n), 2)], names=["run", "volume"])
    inputs = SimpleNamespace(runs=runs, n_volumes=[n, n], tr=tr, data=pd.DataFrame(np.vstack(frames), index=index),
                             confounds=pd.DataFrame(rng.normal(size=(2 * n, 2)), index=index))
    results = []
    for labels in (values, rng.permutation(values)):
        for number, run in enumerate(runs):
            pd.DataFrame({"onset": 4.0 + np.arange(20) * 8.0, "duration": 1.0, "trial_type": "stimulus",
                          "numerosity": labels[number * 20:(number + 1) * 20]}).to_csv(run.events, sep="\t",
                                                                                        index=False)
        results.append(single_trial_betas(inputs, "numerosity", method="singletrial"))
    (first, trials, usable), (second, permuted, _) = results
    assert first.shape == (40, 80) and usable.size == 80 and set(trials.run) == {1, 2}
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(trials.value, permuted.value)


def _check_decoding(out, code, method):
    assert code == 0
    func = out / "sub-01" / "func"
    names = sorted(p.name for p in func.iterdir() if "decoding" in p.name)
    assert names == [f"{FIT}_decoding.json", f"{FIT}_decoding.tsv", f"{FIT}_desc-posterior_decoding.json",
                     f"{FIT}_desc-posterior_decoding.tsv.gz"]
    table = pd.read_csv(func / f"{FIT}_decoding.tsv", sep="\t")
    assert list(table.columns) == ["run", "onset", "true_value", "posterior_mean", "posterior_mode", "posterior_sd",
                                   "interval_lower", "interval_upper", "chance_posterior_mean"]
    assert set(table["run"]) == {1, 2} and len(table) > 90
    sidecar = json.loads((func / f"{FIT}_decoding.json").read_text())
    for column in table.columns:
        assert "Description" in sidecar[column]
    assert sidecar["true_value"]["Units"] == "units of the events' numerosity column"
    assert sidecar["SoftwareVersion"] == __version__
    assert sidecar["Grid"]["NumberOfPoints"] == 100 and sidecar["Grid"]["Values"][0] == 1.0
    assert sidecar["Grid"]["Values"][-1] == 7.0
    folds = sidecar["CrossValidation"]["Folds"]
    assert [fold["HeldOutRun"] for fold in folds] == [1, 2]
    for fold in folds:
        assert 5 <= fold["NumberOfVoxels"] <= 60 and len(set(fold["VoxelIndices"])) == fold["NumberOfVoxels"]
        assert set(fold["Omega"]) >= {"rho", "sigma2", "tau_median"} and 0 <= fold["Omega"]["rho"] < 1
    r = np.corrcoef(table["posterior_mean"], table["true_value"])[0, 1]
    assert sidecar["Accuracy"]["Correlation"] == pytest.approx(r, abs=1e-4)
    assert r >= 0.75, r
    assert abs(sidecar["ChanceLevel"]["Correlation"]) < r - 0.1  # one permutation: its r varies (README)
    inside = (table["true_value"] >= table["interval_lower"]) & (table["true_value"] <= table["interval_upper"])
    assert sidecar["Accuracy"]["Coverage"] == pytest.approx(inside.mean())
    assert 0.45 <= inside.mean() <= 1.0
    with gzip.open(func / f"{FIT}_desc-posterior_decoding.tsv.gz", "rt") as handle:
        posterior = pd.read_csv(handle, sep="\t")
    assert posterior.shape == (len(table), 2 + 100) and list(posterior.columns[:2]) == ["run", "onset"]
    density = posterior.iloc[:, 2:].to_numpy()
    grid = np.array(sidecar["Grid"]["Values"])
    assert np.all(np.isfinite(density)) and np.all(density >= 0)
    mass = density * np.gradient(grid)[np.newaxis, :]
    np.testing.assert_allclose(mass.sum(axis=1), 1.0, atol=2e-3)
    meta = json.loads((func / f"{FIT}_desc-posterior_decoding.json").read_text())
    assert meta["Grid"]["ColumnNames"] == list(posterior.columns[2:])
    assert sidecar["SingleTrialResponses"]["Method"] == method
    assert not list(out.rglob(".*"))  # no temporary files


def test_decode_usage_and_data_errors(decoded, capsys):
    """One run: exit 65 naming the fit, nothing written; --decode with the GLM: 64; --decode-voxels alone: 64."""
    root, _, _ = decoded
    fresh = root / "out-one-run"
    common = [str(root / "bids"), str(fresh), "participant", "--work-dir", str(root / "work"), *ARGS]
    capsys.readouterr()
    assert main([*common, "--run", "1", "--decode"]) == 65
    message = capsys.readouterr().err.strip().splitlines()
    assert message[-1].startswith("bids_encoder: error: --decode needs at least two runs")
    assert "sub-01_task-numerosity has one" in message[-1]
    assert not fresh.exists() or not any(fresh.rglob("*.tsv"))
    glm = [str(root / "bids"), str(fresh), "participant", "--work-dir", str(root / "work"), "--decode"]
    assert main(glm) == 64
    assert "--decode decodes the 1-D tuning models" in capsys.readouterr().err
    assert main([*common, "--decode-voxels", "50"]) == 64
    assert "give --decode too" in capsys.readouterr().err


def test_group_decoding_accuracy_table(tmp_path):
    """Two participants' decoding tables → one row each (accuracy recomputed from the trials) and a group row,
    the mean over participants; circular error for a circular grid."""
    from bids_encoder.workflows.group.tables import write_decoding_accuracy

    output_dir, staging = tmp_path / "out", tmp_path / "staging"
    key = (("task", "orientation"), ("space", "MNI"), ("model", "vonmises1d"))
    groups = {key: {}}
    errors = {"01": [10.0, -10.0, 170.0, 0.0], "02": [20.0, 20.0, -20.0, -20.0]}  # 170 wraps to -10
    for subject, error in errors.items():
        func = output_dir / f"sub-{subject}" / "func"
        func.mkdir(parents=True)
        stem = f"sub-{subject}_task-orientation_space-MNI_model-vonmises1d"
        true = np.array([0.0, 45.0, 90.0, 135.0])
        decoded = np.mod(true + error, 180.0)
        pd.DataFrame({"run": [1, 1, 2, 2], "onset": [0, 5, 0, 5], "true_value": true, "posterior_mean": decoded,
                      "posterior_mode": decoded, "posterior_sd": 10.0, "interval_lower": np.mod(decoded - 15, 180),
                      "interval_upper": np.mod(decoded + 15, 180), "chance_posterior_mean": 90.0}).to_csv(
            func / f"{stem}_decoding.tsv", sep="\t", index=False)
        (func / f"{stem}_decoding.json").write_text(json.dumps({"Grid": {"Circular": True, "PeriodDegrees": 180.0}}))
        marker = func / f"{stem}_stat-rsquared_statmap.json"
        marker.write_text("{}")
        groups[key][subject] = [SimpleNamespace(sidecars={(None, "rsquared"): marker}, session=None)]
    written, shown = write_decoding_accuracy(staging, groups, output_dir)
    table = pd.read_csv(staging / "group" / "task-orientation_space-MNI_model-vonmises1d_desc-accuracy_decoding.tsv",
                        sep="\t")
    assert [p.name for p in written][0].endswith("desc-accuracy_decoding.tsv") and len(shown) == 1
    assert list(table["participant_id"]) == ["sub-01", "sub-02", "group"]
    assert table["mean_absolute_error"].tolist() == pytest.approx([7.5, 20.0, 13.75])
    assert table["coverage"].tolist() == pytest.approx([1.0, 0.0, 0.5])
    assert table["n_trials"].tolist() == [4, 4, 8]
    sidecar = json.loads(written[1].read_text())
    assert sidecar["Circular"] is True and sidecar["NumberOfParticipants"] == 2
    assert sidecar["GroupSD"]["mean_absolute_error"] == pytest.approx(np.std([7.5, 20.0], ddof=1))
    assert len(sidecar["Sources"]) == 2 and "Description" in sidecar["coverage"]


def test_report_figures_of_a_decoding(tmp_path, rng):
    """The report's three decoding figures are drawn (SVG, with r in the scatter's title) from a result."""
    from bids_encoder.report.decoding import decoding_figures, summary_text

    true = np.repeat(np.arange(1.0, 8.0), 6)
    decoded = true + rng.normal(0.0, 0.5, true.size)
    grid = np.linspace(1.0, 7.0, 50)
    posterior = np.exp(-0.5 * ((grid[None, :] - decoded[:, None]) / 0.5) ** 2)
    posterior /= posterior.sum(axis=1, keepdims=True) * (grid[1] - grid[0])
    table = pd.DataFrame({"run": np.tile([1, 2], true.size // 2), "onset": np.arange(true.size) * 5.0,
                          "true_value": true, "posterior_mean": decoded, "posterior_mode": decoded,
                          "posterior_sd": 0.5, "interval_lower": decoded - 1.0, "interval_upper": decoded + 1.0,
                          "chance_posterior_mean": rng.uniform(1, 7, true.size)})
    result = SimpleNamespace(
        table=table, grid=grid, posterior=posterior, folds=[{"NumberOfVoxels": 30}, {"NumberOfVoxels": 31}],
        column="numerosity", circular=False, period=None, timings={"decode": 1.0},
        accuracy=accuracy(true, decoded, table["posterior_sd"], table["interval_lower"], table["interval_upper"]),
        chance=accuracy(true, table["chance_posterior_mean"]))
    drawn = decoding_figures(result, tmp_path / "fit")
    assert [path.name for path, _ in drawn] == ["fit_decoding.svg", "fit_posteriors.svg", "fit_calibration.svg"]
    r = result.accuracy["Correlation"]
    assert f"r = {r:.2f}" in drawn[0][0].read_text() and f"r = {r:.3f}" in drawn[0][1]
    assert "30/31 voxels" in summary_text(result)


def test_failed_decoding_write_leaves_nothing(decoded, monkeypatch, capsys):
    """A failure after the decoding table is written (here: right after write_decoding) removes the fit's maps,
    decoding files and temporaries, and writes no R² sidecar (exit 1)."""
    import bids_encoder.workflows.participant.run as participant
    from bids_encoder.workflows.decoding.decode import DecodingResult

    root, out, _ = decoded
    func = out / "sub-01" / "func"
    table = pd.read_csv(func / f"{FIT}_decoding.tsv", sep="\t")
    sidecar = json.loads((func / f"{FIT}_decoding.json").read_text())
    with gzip.open(func / f"{FIT}_desc-posterior_decoding.tsv.gz", "rt") as handle:
        posterior = pd.read_csv(handle, sep="\t").iloc[:, 2:].to_numpy()
    result = DecodingResult(table=table, posterior=posterior, grid=np.array(sidecar["Grid"]["Values"]),
                            folds=sidecar["CrossValidation"]["Folds"], circular=False, period=None,
                            units=sidecar["true_value"]["Units"], column="numerosity",
                            accuracy=sidecar["Accuracy"], chance=sidecar["ChanceLevel"], timings={"decode": 0.0})
    real = participant.write_decoding

    def failing(*args, **kwargs):
        written = real(*args, **kwargs)
        assert all(path.is_file() for path in written)
        raise RuntimeError("disk full")

    monkeypatch.setattr(participant, "_decode", lambda inputs, options, name: result)
    monkeypatch.setattr(participant, "write_decoding", failing)
    fresh = root / "out-failed"
    assert main([str(root / "bids"), str(fresh), "participant", "--work-dir", str(root / "work"), *ARGS,
                 "--decode"]) == 1
    assert "disk full" in capsys.readouterr().err
    left = [p.name for p in (fresh / "sub-01" / "func").iterdir()] if (fresh / "sub-01" / "func").exists() else []
    assert left == []


