"""Sessions end to end: 3 generated subjects × 2 sessions (session 2: effects × 1.5, noise × 2) through the CLI;
subject-level fixed effects over sessions (volume, GIFTI; CIFTI from written maps), the group level on them, the
stale-input errors, and the paired session difference."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from bids_encoder.bids.derivatives import map_paths, sidecar_path
from bids_encoder.bids.images import MapWriter
from bids_encoder.cli import main
from bids_encoder.datasets.example_dataset import make_example_dataset
from bids_encoder.inference import fixed_effects, group_glm
from bids_encoder.workflows.sessions import fixed_effects as subject_fixed_effects
from bids_encoder.workflows.sessions.fixed_effects import write_subject_fixed_effects

pytestmark = pytest.mark.xdist_group(name="sessions_e2e")

SUBJECTS = ("01", "02", "03")
CONDITIONS = ("faces", "houses")
GAIN = 0.5
VOLUME = "task-localizer_space-MNI152NLin2009cAsym_res-2_model-glm"
SURFACE = "task-localizer_space-fsaverage5_model-glm"
STATS = ("effect", "variance", "t", "z", "p")
DOF = 54  # 60 volumes - 2 conditions, 3 cosines (high_pass) and the intercept


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("sessions")
    truth = make_example_dataset(root / "bids", n_subjects=3, n_runs=1, n_volumes=60, shape=(10, 11, 8), noise=0.05,
                                 seed=11, shared_effects=True, conditions=CONDITIONS, n_sessions=2,
                                 session_gain=GAIN, session_noise=(1.0, 2.0), surface_vertices=20)
    out, work = root / "out", root / "work"
    common = ["--work-dir", str(work), "--confounds", "high_pass", "--cv", "none", "--no-report"]
    assert main([str(root / "bids"), str(out), "participant", *common]) == 0
    assert main([str(root / "bids"), str(out), "participant", "--space", "fsaverage5", *common]) == 0
    assert main([str(root / "bids"), str(out), "group", "--work-dir", str(work), "--no-report"]) == 0
    return truth, root, out


def _session(out, subject, session, name, stem=VOLUME):
    return out / f"sub-{subject}/ses-{session}/func/sub-{subject}_ses-{session}_{stem}_{name}_statmap.nii.gz"


def _fixed(out, subject, name, extension="nii.gz", stem=VOLUME):
    return out / f"sub-{subject}/func/sub-{subject}_{stem}_{name}_statmap.{extension}"


def _data(path):
    return nib.load(path).get_fdata()


def test_fixed_effects_files_and_sidecars(study):
    _, _, out = study
    names = sorted(p.name for p in (out / "sub-01/func").iterdir())
    expected = []
    for contrast in CONDITIONS:  # t contrasts only: effectsOfInterest (F) is not combined
        for stat in STATS:
            name = f"contrast-{contrast}_stat-{stat}_statmap"
            expected += [f"sub-01_{VOLUME}_{name}.{e}" for e in ("json", "nii.gz")]
            expected += [f"sub-01_{SURFACE}_{name}.json"]
            expected += [f"sub-01_{SURFACE.replace('localizer_', f'localizer_hemi-{h}_')}_{name}.func.gii"
                         for h in "LR"]
    assert names == sorted(expected)
    assert not list(out.rglob(".*fixedeffects*"))  # no staging folder left
    sidecar = json.loads(_fixed(out, "01", "contrast-faces_stat-effect", "json").read_text())
    session = [json.loads(_session(out, "01", s, "contrast-faces_stat-effect").with_name(
        _session(out, "01", s, "contrast-faces_stat-effect").name.replace(".nii.gz", ".json")).read_text())
        for s in ("1", "2")]
    assert sidecar["FixedEffects"]["Sessions"] == ["1", "2"]
    assert sidecar["FixedEffects"]["Method"].startswith("precision-weighted fixed effects (inverse-variance)")
    assert "not combined" in sidecar["FixedEffects"]["FContrasts"]
    assert sidecar["DegreesOfFreedom"] == session[0]["DegreesOfFreedom"] + session[1]["DegreesOfFreedom"] == 2 * DOF
    assert sidecar["Contrast"] == {"Name": "faces", "Label": "faces", "Condition": "faces", "Type": "t",
                                   "Expression": "faces"}
    assert sidecar["NoiseModel"] == session[0]["NoiseModel"] == "AR(1)"
    assert sidecar["SignalScaling"] == session[0]["SignalScaling"] and sidecar["Units"] == session[0]["Units"]
    assert sidecar["Sources"] == sorted(
        f"bids::sub-01/ses-{s}/func/sub-01_ses-{s}_{VOLUME}_contrast-faces_stat-{stat}_statmap.nii.gz"
        for s in ("1", "2") for stat in ("effect", "variance"))
    surface = json.loads(_fixed(out, "01", "contrast-faces_stat-z", "json", SURFACE).read_text())
    assert len(surface["Sources"]) == 8 and surface["Units"] == "z"  # a hemisphere pair per map


def test_fixed_effects_equal_nilearn(study):
    from nilearn.glm import compute_fixed_effects

    truth, _, out = study
    mask = nib.Nifti1Image(truth.mask.astype(np.uint8), truth.affine)
    for subject in SUBJECTS:
        for contrast in CONDITIONS:
            effects = [str(_session(out, subject, s, f"contrast-{contrast}_stat-effect")) for s in ("1", "2")]
            variances = [str(_session(out, subject, s, f"contrast-{contrast}_stat-variance")) for s in ("1", "2")]
            reference = compute_fixed_effects(effects, variances, mask=mask, precision_weighted=True,
                                              dofs=[DOF, DOF])
            for image, stat in zip(reference, ("effect", "variance", "t", "z"), strict=True):
                ours = _data(_fixed(out, subject, f"contrast-{contrast}_stat-{stat}"))[truth.mask]
                np.testing.assert_allclose(ours, image.get_fdata()[truth.mask], rtol=1e-5, atol=1e-6)
            unweighted = compute_fixed_effects(effects, variances, mask=mask, precision_weighted=False)
            assert np.max(np.abs(unweighted[0].get_fdata() - reference[0].get_fdata())[truth.mask]) > 0.05
    # GIFTI: both hemispheres, the same computation
    def surface(path):
        return np.concatenate([nib.load(str(path).replace("localizer_", f"localizer_hemi-{h}_")).darrays[0].data
                               for h in "LR"])
    stem = f"sub-02/ses-{{}}/func/sub-02_ses-{{}}_{SURFACE}_contrast-houses_stat-{{}}_statmap.func.gii"
    e = np.stack([surface(out / stem.format(s, s, "effect")) for s in ("1", "2")])
    v = np.stack([surface(out / stem.format(s, s, "variance")) for s in ("1", "2")])
    found = surface(_fixed(out, "02", "contrast-houses_stat-t", "func.gii", SURFACE))
    np.testing.assert_allclose(found, fixed_effects(e, v, [DOF, DOF]).t, rtol=1e-5)


def _fe_and_average(out, contrast):
    fe = {stat: np.stack([_data(_fixed(out, s, f"contrast-{contrast}_stat-{stat}")) for s in SUBJECTS])
          for stat in ("effect", "variance")}
    sessions = {stat: np.stack([[_data(_session(out, s, ses, f"contrast-{contrast}_stat-{stat}"))
                                 for ses in ("1", "2")] for s in SUBJECTS]) for stat in ("effect", "variance")}
    average = {"effect": sessions["effect"].mean(axis=1), "variance": sessions["variance"].sum(axis=1) / 4}
    return fe, average, sessions


def test_group_uses_the_fixed_effects_maps(study):
    truth, _, out = study
    inside = truth.mask
    for contrast in CONDITIONS:
        effects = np.stack([truth.effects[(s, contrast)] for s in SUBJECTS])[:, inside]
        region = effects.min(axis=0) >= 0.5 * effects.max()
        group = _data(out / f"group/{VOLUME}_contrast-{contrast}_stat-effect_statmap.nii.gz")[inside]
        fe, average, _ = _fe_and_average(out, contrast)
        expected = group_glm(fe["effect"][:, inside], np.ones((3, 1)), {"m": [1.0]}, fe["variance"][:, inside])
        np.testing.assert_allclose(group, expected["m"]["effect"], rtol=1e-4, atol=1e-6)
        averaged = group_glm(average["effect"][:, inside], np.ones((3, 1)), {"m": [1.0]},
                             average["variance"][:, inside])["m"]["effect"]
        # session averages would give something else: session 2 (effects × 1.5) weighs 1/4 of session 1 here
        assert np.median(np.abs(averaged - group)[region]) > 0.05  # measured: 0.12 (faces), 0.32 (houses)
    sidecar = json.loads((out / f"group/{VOLUME}_contrast-faces_stat-z_statmap.json").read_text())
    assert sidecar["SessionFixedEffects"] == {f"sub-{s}": ["1", "2"] for s in SUBJECTS}
    assert sidecar["SessionsAveraged"] == {f"sub-{s}": ["1", "2"] for s in SUBJECTS}
    assert sorted(sidecar["Sources"]) == sorted(
        [f"bids::sub-{s}/func/sub-{s}_{VOLUME}_contrast-faces_stat-{stat}_statmap.nii.gz"
         for s in SUBJECTS for stat in ("effect", "variance")]
        + [f"bids::sub-{s}/ses-{ses}/func/sub-{s}_ses-{ses}_{VOLUME}_stat-rsquared_statmap.nii.gz"
           for s in SUBJECTS for ses in ("1", "2")])


def test_paired_session_difference_recovers_the_planted_gain(study):
    truth, root, out = study
    pair = "desc-ses2MinusSes1"
    names = {p.name for p in (out / "group").iterdir()}
    for stat in (*STATS, "betweenVariance"):
        assert f"{VOLUME}_contrast-faces_stat-{stat}_{pair}_statmap.nii.gz" in names
    for desc in ("Fdr", "Cluster"):
        assert f"{VOLUME}_contrast-faces_stat-z_{pair}{desc}_statmap.nii.gz" in names
    assert f"{VOLUME}_contrast-faces_stat-z_{pair}Cluster_clusters.tsv" in names
    assert f"task-localizer_hemi-L_space-fsaverage5_model-glm_contrast-houses_stat-z_{pair}Fdr_statmap.func.gii" \
        in names
    for contrast in CONDITIONS:
        effects = np.stack([truth.effects[(s, contrast)] for s in SUBJECTS])
        region = (effects.min(axis=0) >= 0.5 * effects.max()) & truth.mask
        null = (effects.max(axis=0) == 0) & truth.mask
        assert region.sum() >= 3 and null.sum() >= 20
        planted = []  # the true difference in percent signal change: 100 · gain · effect / mean BOLD, per session
        for subject in SUBJECTS:
            means = [_data(root / f"bids/derivatives/fmriprep/sub-{subject}/ses-{s}/func/sub-{subject}_ses-{s}_"
                           f"task-localizer_run-1_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz"
                           ).mean(axis=-1) for s in ("1", "2")]
            with np.errstate(divide="ignore", invalid="ignore"):
                planted.append(100 * truth.effects[(subject, contrast)] * ((1 + GAIN) / means[1] - 1 / means[0]))
        planted = np.mean(planted, axis=0)
        found = _data(out / f"group/{VOLUME}_contrast-{contrast}_stat-effect_{pair}_statmap.nii.gz")
        # the generator's linear drift, which 3 cosines do not remove exactly, biases every voxel alike: measured
        # from the null voxels (a few % of the planted difference) and taken off
        offset = np.median(found[null])
        ratio = (np.median(found[region]) - offset) / np.median(planted[region])
        assert 0.8 < ratio < 1.2, (contrast, ratio)  # measured: faces 0.88, houses 1.02
        assert np.all(found[region] > 0) and abs(offset) < 0.15 * np.median(planted[region])
        _, _, sessions = _fe_and_average(out, contrast)  # the group model of the per-participant differences
        difference = sessions["effect"][:, 1] - sessions["effect"][:, 0]
        expected = group_glm(difference[:, truth.mask], np.ones((3, 1)), {"m": [1.0]},
                             sessions["variance"].sum(axis=1)[:, truth.mask])["m"]
        np.testing.assert_allclose(found[truth.mask], expected["effect"], rtol=1e-4, atol=1e-6)
        z = _data(out / f"group/{VOLUME}_contrast-{contrast}_stat-z_{pair}_statmap.nii.gz")
        np.testing.assert_allclose(z[truth.mask], expected["z"], rtol=1e-3, atol=1e-4)
    sidecar = json.loads((out / f"group/{VOLUME}_contrast-faces_stat-t_{pair}_statmap.json").read_text())
    assert sidecar["Test"]["PairedSessions"]["Minuend"] == "2" and sidecar["Test"]["GroupModel"] == "mixed"
    assert sidecar["ParticipantsWithValues"] == [f"sub-{s}" for s in SUBJECTS]


def _copy(out, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("group", "logs"))
    return copy


@pytest.mark.parametrize("case", ["sessions", "missing", "refitted"])
def test_stale_fixed_effects_exit_66(study, tmp_path, capsys, case):
    _, root, out = study
    copy = _copy(out, tmp_path)
    if case == "sessions":
        path = _fixed(copy, "02", "contrast-houses_stat-variance", "json")
        sidecar = json.loads(path.read_text())
        sidecar["FixedEffects"]["Sessions"] = ["1"]
        path.write_text(json.dumps(sidecar))
    elif case == "missing":
        for path in (copy / "sub-02/func").glob(f"*{VOLUME}*"):
            path.unlink()
    else:  # a session refitted after the fixed effects were written: its R² sidecar (the marker) changed
        marker = _session(copy, "02", "2", "stat-rsquared").with_name(
            f"sub-02_ses-2_{VOLUME}_stat-rsquared_statmap.json")
        marker.write_text(marker.read_text().replace('"Device"', '"Device" ', 1))
    assert main([str(root / "bids"), str(copy), "group", "--space", "MNI152NLin2009cAsym", "--no-report",
                 "--work-dir", str(tmp_path / "work")]) == 66
    error = capsys.readouterr().err
    assert "sub-02_" + VOLUME in error and "re-run the participant level for sub-02" in error
    assert error.count("\n") == 1 and not (copy / "group").exists()


def test_rewritten_every_run_and_never_half_written(study, tmp_path, monkeypatch):
    _, root, out = study
    copy = _copy(out, tmp_path)
    path = _session(copy, "01", "2", "contrast-faces_stat-effect")
    image = nib.load(path)
    nib.Nifti1Image(np.asarray(image.dataobj) * 2, image.affine).to_filename(path)
    assert main([str(root / "bids"), str(copy), "participant", "--participant-label", "01", "--confounds", "none",
                 "--cv", "none", "--no-report", "--work-dir", str(tmp_path / "work")]) == 0  # fits skipped
    e = np.stack([_data(_session(copy, "01", s, "contrast-faces_stat-effect")) for s in ("1", "2")])
    v = np.stack([_data(_session(copy, "01", s, "contrast-faces_stat-variance")) for s in ("1", "2")])
    found = _data(_fixed(copy, "01", "contrast-faces_stat-effect"))
    np.testing.assert_allclose(found.ravel(), fixed_effects(e.reshape(2, -1), v.reshape(2, -1), [DOF, DOF]).effect,
                               rtol=1e-5, atol=1e-7)
    assert not np.allclose(found, _data(_fixed(out, "01", "contrast-faces_stat-effect")), equal_nan=True)

    calls = []
    original = subject_fixed_effects._stage_contrast

    def failing(*arguments):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(*arguments)

    monkeypatch.setattr(subject_fixed_effects, "_stage_contrast", failing)
    with pytest.raises(OSError):
        write_subject_fixed_effects(copy, "01")
    assert not list((copy / "sub-01/func").glob(f"*{VOLUME}*"))  # no set at all, not a partial or old one
    assert not list((copy / "sub-01/func").glob(".*"))
    assert list((copy / "sub-01/func").glob(f"*{SURFACE}*"))  # other keys untouched (written before)


def test_cifti_fixed_effects_and_single_session(tmp_path):
    """CIFTI maps written as the participant level writes them; a subject with one session gets nothing."""
    models = (nib.cifti2.BrainModelAxis.from_surface(np.arange(30), 30, "CortexLeft")
              + nib.cifti2.BrainModelAxis.from_surface(np.arange(30), 30, "CortexRight"))
    writer = MapWriter("cifti", brain_models=models)
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset_description.json").write_text(json.dumps({"Name": "o", "BIDSVersion": "1.9.0"}))
    rng = np.random.default_rng(0)
    values = {}
    for subject, sessions in (("01", ("a", "b")), ("02", ("a",))):
        for session in sessions:
            entities = {"subject": subject, "session": session, "task": "loc", "space": "fsLR", "den": "91k",
                        "model": "glm"}
            maps = {("c", "effect"): rng.normal(1, 1, 60), ("c", "variance"): rng.uniform(0.1, 1, 60),
                    (None, "rsquared"): rng.uniform(0, 1, 60)}
            values[(subject, session)] = maps
            for (contrast, stat), array in maps.items():
                path = map_paths(out, {**entities, "stat": stat, **({"contrast": contrast} if contrast else {})},
                                 "cifti")
                writer.write(array, path, name=stat)
                sidecar_path(path).write_text(json.dumps({"Units": "a.u.", "DegreesOfFreedom": 30.0}))
    written = write_subject_fixed_effects(out, "01")
    assert sorted(p.name for p in written) == sorted(
        f"sub-01_task-loc_space-fsLR_den-91k_model-glm_contrast-c_stat-{s}_statmap.{e}" for s in STATS
        for e in ("json", "dscalar.nii"))
    effect = np.asarray(nib.load(out / "sub-01/func/sub-01_task-loc_space-fsLR_den-91k_model-glm_contrast-c_"
                                       "stat-effect_statmap.dscalar.nii").dataobj)[0]
    expected = fixed_effects([values[("01", s)][("c", "effect")] for s in "ab"],
                             [values[("01", s)][("c", "variance")] for s in "ab"], [30, 30]).effect
    np.testing.assert_allclose(effect, expected, rtol=1e-5, atol=1e-6)  # inputs written as float32
    assert write_subject_fixed_effects(out, "02") == [] and not (out / "sub-02/func").exists()
