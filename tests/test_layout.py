"""The shape of the package: no import cycle, no import from a lower layer to a higher one, modules of at most
500 lines, the public API's names, and a quiet import of the library (no TensorFlow start-up lines)."""

import ast
import importlib
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bids_encoder"

#: the layers, lowest first: a module may import its own unit and the units of lower layers only. A unit is the
#: longest prefix listed here; units of one layer must not import each other.
LAYERS = [
    ["bids_encoder"],  # the package's __init__, _version, _tensorflow (a module not listed below lands here)
    ["bids_encoder.models"],
    ["bids_encoder.hrf", "bids_encoder.optimize", "bids_encoder.inference"],
    ["bids_encoder.decoding"],
    ["bids_encoder.bids"],
    ["bids_encoder.datasets", "bids_encoder.report"],
    ["bids_encoder.workflows", "bids_encoder.workflows.common"],
    ["bids_encoder.workflows.fits"],
    ["bids_encoder.workflows.comparison", "bids_encoder.workflows.decoding", "bids_encoder.workflows.stats_models",
     "bids_encoder.workflows.single_trial"],
    ["bids_encoder.workflows.sessions"],
    ["bids_encoder.workflows.participant", "bids_encoder.workflows.group"],
    ["bids_encoder.cli"],
    ["bids_encoder.example", "bids_encoder.__main__"],
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _modules():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


def _imports(modules):
    """Every import of the package by every module (at any depth: an import inside a function still couples)."""
    graph = defaultdict(set)
    for name, (path, is_package) in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                           for alias in node.names]
            for target in targets:
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def _unit(module):
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in RANK:
            return ".".join(parts[:n])
    raise AssertionError(f"{module} belongs to no layer of tests/test_layout.py: add its package there")


def _cycles(graph, nodes):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return modules, _imports(modules)


def test_no_import_cycle_between_modules_or_units(graph):
    modules, imports = graph
    assert _cycles(imports, modules) == []
    units = defaultdict(set)
    for source, targets in imports.items():
        for target in targets:
            if _unit(source) != _unit(target):
                units[_unit(source)].add(_unit(target))
    assert _cycles(units, RANK) == []


def _upward(imports):
    return [f"{source} → {target}" for source, targets in sorted(imports.items()) for target in sorted(targets)
            if _unit(source) != _unit(target) and RANK[_unit(target)] >= RANK[_unit(source)]]


def test_imports_go_down_the_layers(graph):
    """numeric core → bids/ → report/ → workflows/ (stage by stage) → cli → examples; report/ never calls the
    pipeline, models/ never import decoding/."""
    _, imports = graph
    assert _upward(imports) == []


def test_the_checker_sees_upward_imports_and_cycles():
    """The rules above can fail: models importing decoding, a report calling a workflow, two stages of one layer
    importing each other, a cycle of two modules."""
    assert _upward({"bids_encoder.models.base": {"bids_encoder.decoding.posterior"},
                    "bids_encoder.report.decoding": {"bids_encoder.workflows.decoding.decode"},
                    "bids_encoder.workflows.group.run": {"bids_encoder.workflows.participant.run"},
                    "bids_encoder.workflows.fits.prf": {"bids_encoder.optimize.recipes"}}) == [
        "bids_encoder.models.base → bids_encoder.decoding.posterior",
        "bids_encoder.report.decoding → bids_encoder.workflows.decoding.decode",
        "bids_encoder.workflows.group.run → bids_encoder.workflows.participant.run"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, ["a", "b", "c", "d"]) == [["a", "b", "c"]]


def test_modules_have_at_most_500_lines(graph):
    modules, _ = graph
    long = {name: n for name, (path, _) in modules.items() if (n := len(path.read_text().splitlines())) > 500}
    assert long == {}


def test_every_subpackage_says_what_it_owns(graph):
    modules, _ = graph
    silent = [name for name, (path, is_package) in modules.items()
              if is_package and not (ast.get_docstring(ast.parse(path.read_text())) or "").strip()]
    assert silent == []


#: the public API (braincoder's names and ours): these names stay importable from these modules
PUBLIC = {
    "bids_encoder.models": ["EncodingModel", "HRFEncodingModel", "LinearModelWithBaseline",
                            "LinearModelWithBaselineHRF", "HRFModel", "SPMHRFModel", "CustomHRFModel", "GaussianPRF",
                            "GaussianPRFWithHRF", "LogGaussianPRF", "LogGaussianPRFWithHRF", "VonMisesPRF",
                            "VonMisesPRFWithHRF", "GaussianPRF2D", "GaussianPRF2DWithHRF", "CSSPRF2D",
                            "CSSPRF2DWithHRF", "DifferenceOfGaussiansPRF2D", "DifferenceOfGaussiansPRF2DWithHRF",
                            "DivisiveNormalizationGaussianPRF2D", "DivisiveNormalizationGaussianPRF2DWithHRF"],
    "bids_encoder.hrf": ["spm_hrf", "HRFModel", "SPMHRFModel", "CustomHRFModel", "convolve"],
    "bids_encoder.optimize": ["ParameterFitter", "WeightFitter"],
    "bids_encoder.inference": ["ContrastError", "check_name", "check_syntax", "parse_expression",
                               "parse_f_expression", "NOISE_MODELS", "FirstLevelResult", "LaggedRegressors",
                               "first_level", "percent_signal_change", "f_to_z_p", "t_to_z_p", "group_glm",
                               "reml_tau2", "FixedEffects", "fixed_effects"],
    "bids_encoder.decoding": ["ResidualFitter", "tuning_matrix", "stimulus_pdf", "disc_apertures", "make_grid",
                              "posterior_summary", "interval_contains", "StimulusFitter", "pixel_neighbours",
                              "lss_betas", "trial_regressors"],
    "bids_encoder.datasets": ["bar_apertures", "make_example_dataset", "make_tuning_dataset", "make_mni_example",
                              "load_szinte2024", "szinte_fit_inputs", "build_fmriprep", "copy_raw"],
    "bids_encoder.optimize.recipes": ["fit_prf2d", "fit_prf2d_staged", "fit_tuning1d", "default_prf_grid",
                                      "default_hrf_grid", "default_tuning_grid", "default_extra_grid", "PRFFit"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names(module):
    imported = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(imported, name)]
    assert missing == []
    assert set(PUBLIC[module]) <= set(getattr(imported, "__all__", PUBLIC[module]))
    assert set(PUBLIC[module]) <= set(dir(imported))


QUIET_SCRIPT = """
import os, sys
import numpy as np
from bids_encoder.models import GaussianPRF2DWithHRF, SPMHRFModel
from bids_encoder.optimize import ParameterFitter
from bids_encoder.datasets import bar_apertures
apertures, grid = bar_apertures(n_side=8, n_steps=6, blank=2)
model = GaussianPRF2DWithHRF(grid, hrf_model=SPMHRFModel(2.0))
import pandas as pd
truth = pd.DataFrame({"x": [1.0, -2.0], "y": [0.5, 1.0], "sd": [1.5, 2.0], "baseline": [0.0, 1.0],
                      "amplitude": [1.0, 2.0]})
data = model.simulate(apertures, truth, noise=0.1, random_state=0)
fitter = ParameterFitter(model, data, apertures)
fitter.fit(init_pars=truth, progressbar=False)
print("TF_CPP_MIN_LOG_LEVEL=" + os.environ.get("TF_CPP_MIN_LOG_LEVEL", "unset"))
os.write(2, b"a real error line\\n")
"""


@pytest.mark.parametrize("level", [None, "0"])
def test_importing_the_library_prints_no_tensorflow_start_up_lines(level):
    """In a fresh interpreter, as in a script or a notebook: no ``absl::InitializeLog``, ``cuInit``,
    ``cpu_feature_guard`` or oneDNN lines on stderr, whatever TF_CPP_MIN_LOG_LEVEL says (the library never sets it:
    the user's value, or its absence, stays), and other lines written to stderr still reach it."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    done = subprocess.run([sys.executable, "-c", QUIET_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"TF_CPP_MIN_LOG_LEVEL={level or 'unset'}" in done.stdout
    noise = ["absl::InitializeLog", "cuInit", "cpu_feature_guard", "oneDNN", "cudart_stub", "rebuild TensorFlow"]
    assert [line for line in done.stderr.splitlines() if any(n in line for n in noise)] == []
    assert "a real error line" in done.stderr
