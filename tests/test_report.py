"""The README's example command end to end, and its HTML reports rendered in headless Chromium.

The rendering test drives Debian's chromium through chromedriver (selenium): it fails on any console error or
figure that does not load, checks every section, and saves full-page screenshots as test artifacts (in
``$BIDS_ENCODER_TEST_ARTIFACTS`` when set, else the test's temporary folder). It skips only when chromium or
chromedriver is absent.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bids_encoder import __version__

pytestmark = pytest.mark.xdist_group(name="example")

SECTIONS = ("summary", "design", "rsquared", "parameters", "timeseries", "convergence", "hrf")


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The README's first command (after installing): generate the example dataset, run the app, report."""
    folder = tmp_path_factory.mktemp("readme")
    done = subprocess.run([sys.executable, "-m", "bids_encoder.example", str(folder / "example")],
                          capture_output=True, text=True, cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, folder / "example/derivatives/bids_encoder"


def test_readme_example_command_recovers_effects(example):
    stdout, out = example
    rows = [line for line in stdout.splitlines() if line.startswith("| sub-")]
    assert len(rows) == 6
    assert all(float(r) > 0.7 for row in rows for r in row.strip(" |").split("|")[2:])
    # per subject: GLM volume + surface (3 conditions × effect, variance, t, z, p; effects of interest F, z, p; R²,
    # cvR²), pRF volume (x, y, sd, amplitude, baseline, R², polar angle, eccentricity; --cv none) and the standard
    # errors of its 5 parameters (desc-se)
    assert len(list(out.glob("sub-*/func/*_statmap.json"))) == 2 * (2 * 20 + 8 + 5)
    assert len(list(out.glob("sub-*/func/*_model-prf2d_desc-iterated_mask.nii.gz"))) == 2
    group = [line for line in stdout.splitlines() if line.startswith("| group mean")]
    assert len(group) == 3 and all(float(row.split("|")[3]) > 0.85 for row in group)
    prf = [line.strip(" |").split("|") for line in stdout.splitlines() if line.startswith("| pRF sub-")]
    assert len(prf) == 2 and all(int(row[1]) > 2000 for row in prf)
    assert all(float(row[2]) > 0.95 and float(row[3]) > 0.95 and float(row[4]) > 0.6 for row in prf)  # x, y, sd
    assert (out / "group/participants_summary.tsv").is_file()
    assert f"Reports:                    {out}/sub-01.html, sub-02.html, group.html" in stdout


def test_every_sidecar_carries_the_version(example):
    """The version of one place (bids_encoder/_version.py) is in dataset_description.json and every sidecar."""
    _, out = example
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Version"] == __version__
    sidecars = [p for p in out.rglob("*.json") if "figures" not in p.parts and p.name != "dataset_description.json"]
    # maps (standard errors and the iterated mask of the pRF fits included), designs, group
    assert len(sidecars) == 96 + 2 * (5 + 1) + 6 + len(list((out / "group").glob("*.json")))
    assert len(list((out / "group").glob("*.json"))) > 20
    assert {p.name: json.loads(p.read_text()).get("SoftwareVersion") for p in sidecars} == {
        p.name: __version__ for p in sidecars}


def test_report_files_and_sections_are_written(example):
    _, out = example
    assert sorted(p.name for p in out.glob("*.html")) == ["group.html", "sub-01.html", "sub-02.html"]
    sections = sorted((out / "sub-01/figures").glob("*_report.json"))
    assert [p.name for p in sections] == [
        "sub-01_task-localizer_space-MNI152NLin2009cAsym_model-glm_report.json",
        "sub-01_task-localizer_space-fsaverage5_model-glm_report.json",
        "sub-01_task-prf_space-MNI152NLin2009cAsym_model-prf2d_report.json"]
    surface = json.loads(sections[1].read_text())
    assert {"x", "y", "sd", "polarAngle", "eccentricity"} <= {
        item["caption"].split(":")[0] for item in json.loads(sections[2].read_text())["figures"]["parameters"]}
    prf = json.loads(sections[2].read_text())["figures"]
    # pRF maps only where the fit means something (#27), and the standard errors of the position
    assert all("; shown where iterated with" in item["caption"] for item in prf["parameters"])
    assert (out / prf["standard_errors"]["file"]).stat().st_size > 1000
    assert "on the fsaverage5 inflated mesh; not drawn where R² < " in surface["figures"]["rsquared"]["caption"]
    assert len(surface["figures"]["parameters"]) == 3 + 4  # effects, z of the conditions and effects of interest
    for section in map(json.loads, (p.read_text() for p in sections[:2])):
        for item in [*section["figures"]["parameters"], section["figures"]["design"], section["figures"]["rsquared"],
                     section["figures"]["timeseries"], section["figures"]["confounds"]]:
            assert (out / item["file"]).stat().st_size > 1000
    logs = "".join(p.read_text() for p in (out / "logs").glob("*.log"))
    assert "Report sub-01.html written in" in logs and "Report group.html written in" in logs


def _browser(tmp_path):
    # Debian's chromium (.ci/run), or the Google Chrome that GitHub's Ubuntu runners ship with its chromedriver.
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("chromium and chromedriver are not installed (Debian packages chromium, chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--allow-file-access-from-files",
                 f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1300,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def _artifacts(tmp_path):
    folder = Path(os.environ.get("BIDS_ENCODER_TEST_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.parametrize("page", ["sub-01.html", "group.html"])
def test_reports_render_in_headless_chromium(example, tmp_path, page):
    _, out = example
    browser = _browser(tmp_path)
    try:
        browser.get((out / page).as_uri())
        browser.implicitly_wait(0)
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 60).until(lambda b: b.execute_script(
            "return document.readyState === 'complete' && "
            "document.getElementById('report-check').hasAttribute('data-broken')"))
        images = browser.execute_script("return Array.from(document.images).map(i => [i.getAttribute('src'), "
                                        "i.complete && i.naturalWidth > 0])")
        assert images and all(loaded for _, loaded in images), [src for src, ok in images if not ok]
        check = browser.find_element("id", "report-check")
        assert check.get_attribute("data-broken") == "0"
        errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
        ids = set(browser.execute_script("return Array.from(document.querySelectorAll('[id]')).map(e => e.id)"))
        if page == "group.html":
            # GLM: 2 spaces × (mean R², mean cvR², 3 z maps); pRF: mean R², 6 parameter means. Said in words
            # instead of drawn: the 3 uniform count maps, the 2 × 3 FDR and 3 cluster maps where nothing survives
            assert "participants" in ids and "few-participants" in ids and len(images) == 2 * 5 + 7
            empty = browser.execute_script("return Array.from(document.querySelectorAll('.empty-map'))"
                                           ".map(e => e.textContent)")
            assert len(empty) == 12 and sum("no voxel survives" in e or "no vertex survives" in e for e in empty) == 9
            assert sum("has 2 participant(s)" in e for e in empty) == 3
            header = browser.execute_script("return Array.from(document.querySelectorAll('#participants th'))"
                                            ".map(e => e.textContent)")
            assert "median cvR²" in header and len(header) <= 13
            assert {"task-localizer_space-MNI152NLin2009cAsym_model-glm", "task-localizer_space-fsaverage5_model-glm",
                    "task-prf_space-MNI152NLin2009cAsym_model-prf2d"} <= ids
        else:
            for fit in ("task-localizer_space-MNI152NLin2009cAsym_model-glm",
                        "task-localizer_space-fsaverage5_model-glm", "task-prf_space-MNI152NLin2009cAsym_model-prf2d"):
                name = f"sub-01_{fit}"
                assert {f"{name}-{section}" for section in SECTIONS} <= ids, sorted(ids)
            # one interactive view (nilearn view_img, self-contained) per volume fit, drawn in its frame
            frames = browser.find_elements("css selector", "figure.viewer iframe")
            assert len(frames) == 2
            browser.execute_script("arguments[0].scrollIntoView()", frames[0])
            browser.switch_to.frame(frames[0])
            WebDriverWait(browser, 60).until(lambda b: b.execute_script(
                "return document.readyState === 'complete' && document.querySelectorAll('canvas').length > 0"))
            browser.switch_to.default_content()
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1300, min(int(height), 16000))
        shot = _artifacts(tmp_path) / f"report_{page.replace('.html', '')}.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 50_000
    finally:
        browser.quit()


def test_summary_rows_are_readable():
    """Sidecar-like values (the fitter settings, a dict; or a JSON string in older report.json) become key: value
    rows, numbers and flags readable."""
    from bids_encoder.report.participant import readable_rows

    fitter = {"ParameterFitter": {"Solver": "Levenberg-Marquardt", "Converged": False, "Tolerance": 1e-05,
                                  "Bounds": {"sd": [0.1, 8.0]}}}
    expected = [("Runs", "1, 2"), ("Fitter › ParameterFitter › Solver", "Levenberg-Marquardt"),
                ("Fitter › ParameterFitter › Converged", "no"), ("Fitter › ParameterFitter › Tolerance", "1e-05"),
                ("Fitter › ParameterFitter › Bounds › sd", "0.1, 8"), ("Device", "n/a")]
    assert readable_rows([("Runs", [1, 2]), ("Fitter", fitter), ("Device", None)]) == expected
    assert readable_rows([("Runs", [1, 2]), ("Fitter", json.dumps(fitter)), ("Device", None)]) == expected


def test_axial_cuts_are_millimetres_of_the_data():
    import nibabel as nib
    import numpy as np

    from bids_encoder.report.figures import axial_cuts

    data = np.zeros((10, 10, 20), np.float32)
    data[:, :, 5:15] = 1.0  # slices 5..14, z = -40 + 4 k mm: -20 … 16 mm
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = -40.0
    cuts = axial_cuts(nib.Nifti1Image(data, affine), n_cuts=5)
    assert len(cuts) == 5 and cuts[0] >= -20 and cuts[-1] <= 16 and cuts == sorted(cuts)
    assert axial_cuts(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), affine)) is None
