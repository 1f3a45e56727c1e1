import numpy as np
import pandas as pd
import pytest
from nilearn.glm.first_level import make_first_level_design_matrix
from scipy import stats

from bids_encoder.bids.events import convolved_design, occupancy_paradigm, read_events
from bids_encoder.bids.layout import InputError


def write(tmp_path, frame, name="events.tsv"):
    path = tmp_path / name
    frame.to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


@pytest.mark.parametrize("tr", [2.0, 1.317025, 0.8])
def test_convolved_design_matches_nilearn(tmp_path, tr):
    n_volumes = 120
    events = pd.DataFrame({"onset": [3.3, 17.9, 40.05, 61.0, 88.7], "duration": [1.0, 2.5, 0.0, 4.0, 1.7],
                           "trial_type": ["faces", "houses", "faces", "houses", "faces"],
                           "amplitude": [1.0, 2.0, 0.5, 1.0, 3.0]})
    ours = convolved_design(read_events(write(tmp_path, events), n_volumes, tr, modulation_column="amplitude"),
                            n_volumes, tr, oversampling=50)
    frame_times = np.arange(n_volumes) * tr
    reference = make_first_level_design_matrix(
        frame_times, events.rename(columns={"amplitude": "modulation"}), hrf_model="spm", drift_model=None,
        oversampling=50)
    for condition in ("faces", "houses"):
        peak = reference[condition].abs().max()
        # nilearn shifts its gammas by one fine step (loc=dt) and builds its own fine grid: a few % at most
        assert np.max(np.abs(ours[condition].to_numpy() - reference[condition].to_numpy())) < 0.03 * peak
    # exact reference: a boxcar's response is a difference of gamma CDFs (unit-area double gamma, ratio 0.167)
    def response(t, onset, duration):
        def integral(tau):
            tau = np.clip(tau, 0, None)
            return (stats.gamma.cdf(tau, 6.0) - 0.167 * stats.gamma.cdf(tau, 16.0)) / (1 - 0.167)
        return integral(t - onset) - integral(t - onset - duration)

    exact = sum(m * response(frame_times, o, max(d, tr / 50)) for o, d, c, m in events.to_numpy() if c == "houses")
    assert np.max(np.abs(ours["houses"].to_numpy() - exact)) < 2e-3 * np.abs(exact).max()


def test_occupancy_paradigm_and_start_time(tmp_path):
    events = read_events(write(tmp_path, pd.DataFrame({"onset": [1.0, 10.0], "duration": [2.0, 0.5],
                                                        "trial_type": ["a", "a"]})), 10, 2.0)
    paradigm = occupancy_paradigm(events, 10, 2.0, oversampling=20)
    # frame k covers [2k - 1, 2k + 1): the 1–3 s event fills frame 1 (0–2 s is half), frame 5 holds 0.5 s
    np.testing.assert_allclose(paradigm["a"].to_numpy()[:7], [0.0, 1.0, 0.0, 0.0, 0.0, 0.25, 0.0], atol=0.051)
    assert paradigm["a"].sum() * 2.0 == pytest.approx(2.5, abs=0.1)  # seconds of stimulation are kept
    shifted = convolved_design(events, 10, 2.0, start_time=0.5)
    assert shifted.index[0] == 0.5


@pytest.mark.parametrize(("frame", "message"), [
    (pd.DataFrame({"onset": [1.0], "trial_type": ["a"]}), r"lacks the column\(s\) \['duration'\]"),
    (pd.DataFrame({"onset": [1.0], "duration": [-1.0], "trial_type": ["a"]}), "negative durations"),
    (pd.DataFrame({"onset": [200.0, 500.0], "duration": [1.0, 1.0], "trial_type": ["a", "a"]}),
     r"no event reaches the run \(onsets 200 to 500 s, the run lasts 0 to 200 s: 100 volumes × 2 s\)"),
    (pd.DataFrame({"onset": [-40.0], "duration": [7.0], "trial_type": ["a"]}), "no event reaches the run"),
    (pd.DataFrame({"onset": [1.0], "duration": [1.0], "trial_type": [np.nan]}), "has no event with a trial_type"),
    (pd.DataFrame({"onset": [], "duration": [], "trial_type": []}), "has no events"),
])
def test_bad_events(tmp_path, frame, message):
    with pytest.raises(InputError, match=message) as error:
        read_events(write(tmp_path, frame), 100, 2.0)
    assert error.value.exit_code == 65


def test_empty_file(tmp_path):
    path = tmp_path / "events.tsv"
    path.write_text("")
    with pytest.raises(InputError, match="is empty"):
        read_events(path, 10, 2.0)


def _exact_response(t, onset, duration):
    """The canonical response to a unit boxcar: a difference of gamma CDFs (unit-area SPM double gamma)."""
    def integral(tau):
        tau = np.clip(tau, 0, None)
        return (stats.gamma.cdf(tau, 6.0) - 0.167 * stats.gamma.cdf(tau, 16.0)) / (1 - 0.167)
    return integral(t - onset) - integral(t - onset - duration)


def test_events_outside_the_run_are_modelled_as_they_happened(tmp_path, caplog):
    """ds000001-like: a 300-volume, 600 s run whose events file holds an event at 604.9 s (after the last
    volume), one lasting past the end, and one that started 10 s before the first volume."""
    frame = pd.DataFrame({"onset": [-10.0, 30.0, 590.0, 604.9], "duration": [14.0, 2.0, 20.0, 2.0],
                          "trial_type": ["a", "a", "a", "b"]})
    with caplog.at_level("WARNING", logger="bids_encoder.bids.events"):
        events = read_events(write(tmp_path, frame, "sub-01_task-x_events.tsv"), 300, 2.0)
    assert [r.getMessage() for r in caplog.records] == [
        "sub-01_task-x_events.tsv: 1 start before 0 s, 1 start after the end of the run (600 s), 1 end after it "
        "of 4 event(s); modelled as they happened (the part of their response inside the run counts); 1 do not "
        "reach any volume"]
    assert len(events) == 4
    design = convolved_design(events, 300, 2.0, oversampling=50)
    frame_times = np.arange(300) * 2.0
    exact = sum(_exact_response(frame_times, o, d) for o, d in ((-10.0, 14.0), (30.0, 2.0), (590.0, 20.0)))
    np.testing.assert_allclose(design["a"].to_numpy(), exact, atol=2e-3 * exact.max())
    assert design["a"].iloc[0] > 0.01  # the response to the event that began before the run is there
    np.testing.assert_array_equal(design["b"].to_numpy(), 0.0)  # after the last volume: no response in the run


def test_occupancy_paradigm_leaves_out_stimulation_before_the_run(tmp_path, caplog):
    events = read_events(write(tmp_path, pd.DataFrame({"onset": [-3.0, 4.0], "duration": [4.0, 30.0],
                                                        "trial_type": ["a", "a"]})), 10, 2.0)
    with caplog.at_level("WARNING", logger="bids_encoder.bids.events"):
        paradigm = occupancy_paradigm(events, 10, 2.0, oversampling=20, name="run.tsv")
    # frame 0 covers [-1, 1), inside the first event (-3 to 1 s); frame 2 holds half of its TR of the second, and
    # the last frame its whole TR (it held 0.6 before the fine grid reached the end of that TR)
    np.testing.assert_allclose(paradigm["a"].to_numpy(), [1.0, 0.0, 0.5] + [1.0] * 7, atol=1e-9)
    assert caplog.records[-1].getMessage() == (
        "run.tsv: 2 s of stimulation before the first volume is left out of the TR-resolution paradigm (it is "
        "convolved within the run: use the canonical HRF to model its response)")
