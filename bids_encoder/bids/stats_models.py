"""BIDS Stats Models 1.0 through pybids' own implementation (:mod:`bids.modeling`).

pybids reads the specification, loads the events, confounds and participants variables, applies each node's
transformations (``Factor``, ``Scale``, ``Convolve``…), its ``Formula`` and its contrasts, and groups the inputs of
every node by its ``GroupBy``. This module turns what pybids gives into what the app fits:

- a :class:`RunDesign` per output of the run node: its runs, the regressors built from events (each event with its
  amplitude, convolved by the app with ``--hrf``: exact SPM convolution for the canonical HRF), the regressors pybids
  gives sampled at the TR (convolved by the file's own ``Convolve``, or not from events: confounds), and the contrasts;
- the groups of the later nodes (subject, session, dataset): which inputs each output combines, its design matrix
  and its contrasts (:func:`node_outputs`).

What the app does not support is said in one line: :class:`StatsModelError` (a usage error) for what would change
the results, a warning for what is ignored (``VarianceComponents``: the dataset level already fits one
between-participant variance per voxel; ``Options``, ``Software``). Missing ``GroupBy`` (required by 1.0, absent
from older specifications) gets the usual default of its level, with a warning.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .derivatives import bids_label
from .images import run_volumes
from .layout import InputError

logger = logging.getLogger(__name__)

__all__ = ["StatsModel", "StatsModelError", "RunDesign", "read_stats_model", "run_designs", "node_outputs",
           "edge_inputs", "contrast_rows"]

LEVELS = ("run", "session", "subject", "dataset")
DEFAULT_GROUP_BY = {"run": ["run", "session", "subject"], "session": ["subject", "session", "contrast"],
                    "subject": ["subject", "contrast"], "dataset": ["contrast"]}
HRF_MODELS = {"spm": "spm", "doublegamma": "spm", "glover": "glover", "fir": "fir"}
LOWER_TESTS = {"run": ("t", "F"), "session": ("FEMA", "t"), "subject": ("FEMA", "t"), "dataset": ("t",)}


class StatsModelError(InputError):
    """A specification the app cannot run as written (exit code 64)."""

    def __init__(self, message):
        super().__init__(message, exit_code=64)


def read_stats_model(path):
    """The JSON of ``path`` as a :class:`StatsModel` (missing file 66, bad JSON 65, unsupported parts 64)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--model-file {path}: no such file", exit_code=66)
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"--model-file {path.name} is not valid JSON: {error}", exit_code=65) from error
    return StatsModel(spec, source=path)


@dataclass
class RunDesign:
    """One output of the run node: what one GLM fit of the app fits."""

    node: str
    entities: dict  # pybids' grouping entities of the output (subject, run…)
    runs: list  # RunInputs, in order
    event_columns: list  # regressors from events, convolved by the app
    events: list  # per run: DataFrame onset, duration, condition, modulation
    dense_columns: list  # regressors pybids samples at the TR (file-convolved, or not from events)
    dense: list  # per run: array (volumes × dense columns)
    contrasts: list  # pybids ContrastInfo
    one_run: bool = False  # the output is one run: its maps carry the run entity

    @property
    def columns(self):
        return self.event_columns + self.dense_columns


class StatsModel:
    """A BIDS Stats Models specification, checked and completed for pybids (see the module's description)."""

    def __init__(self, spec, source=None):
        if not isinstance(spec, dict) or not isinstance(spec.get("Nodes"), list) or not spec["Nodes"]:
            raise InputError(f"--model-file {getattr(source, 'name', '')}: no Nodes (is it a BIDS Stats Model?)",
                             exit_code=65)
        self.source = source
        self.original = spec
        self.spec = copy.deepcopy(spec)
        self.name = str(spec.get("Name") or (Path(source).stem if source else "model"))
        self.label = bids_label(self.name)
        self.notes = []
        for node in self.spec["Nodes"]:
            self._complete(node)
        if self.spec["Nodes"][0].get("Level", "").lower() != "run":
            raise StatsModelError(f"--model-file {self.name}: the first node is {self.spec['Nodes'][0].get('Level')}"
                                  "-level; the app fits BOLD time series, so it must be the Run level")
        for message in self.notes:
            logger.warning("%s", message)

    def _complete(self, node):
        name = node.get("Name", "?")
        level = str(node.get("Level", "")).lower()
        where = f"--model-file {self.name}, node {name}"
        if level not in LEVELS:
            raise StatsModelError(f"{where}: Level {node.get('Level')!r} is not one of Run, Session, Subject, Dataset")
        model = node.setdefault("Model", {})
        kind = str(model.get("Type", "glm")).lower()
        if kind != "glm":
            raise StatsModelError(f"{where}: Model Type {model.get('Type')!r} is not supported (only glm)")
        if "GroupBy" not in node:
            node["GroupBy"] = list(DEFAULT_GROUP_BY[level])
            self.notes.append(f"{where}: no GroupBy (required by BIDS Stats Models 1.0); using "
                              f"{node['GroupBy']}, the default of its level")
        if level == "dataset" and "contrast" not in node["GroupBy"]:
            node["GroupBy"] = [*node["GroupBy"], "contrast"]
            self.notes.append(f"{where}: GroupBy {node['GroupBy'][:-1]} has no 'contrast': each incoming contrast "
                              "is analysed on its own (a group model over different contrasts has no meaning)")
        for part in ("VarianceComponents", "Options", "Software"):
            if model.get(part):
                what = ("ignored: the dataset level fits one between-participant variance per voxel (mixed "
                        "effects)" if part == "VarianceComponents" else "ignored")
                self.notes.append(f"{where}: Model {part} is not supported; {what}")
                model.pop(part)
        hrf = model.pop("HRF", None)
        if hrf:
            self._hrf_as_convolve(node, hrf, where)
        tests = [c.get("Test", "t") for c in node.get("Contrasts", [])]
        if node.get("DummyContrasts"):
            tests.append(node["DummyContrasts"].get("Test", "t") if isinstance(node["DummyContrasts"], dict)
                         else "t")
        for test in tests:
            if test not in LOWER_TESTS[level]:
                raise StatsModelError(f"{where}: contrast test {test!r} is not supported at the {level} level "
                                      f"(supported: {', '.join(LOWER_TESTS[level])})")
        if level in ("session", "subject") and [str(x) for x in model.get("X", [])] != ["1"]:
            raise StatsModelError(f"{where}: Model X {model.get('X')} is not supported at the {level} level (only "
                                  "[1]: fixed effects or a t-test of each incoming contrast)")

    def _hrf_as_convolve(self, node, hrf, where):
        """BIDS Stats Models' ``Model.HRF`` as the ``Convolve`` transformation pybids applies."""
        name = str(hrf.get("Model", "spm")).lower()
        if name not in HRF_MODELS:
            raise StatsModelError(f"{where}: HRF Model {hrf.get('Model')!r} is not supported (spm, DoubleGamma, "
                                  "glover, fir)")
        parameters = hrf.get("Parameters", {})
        instruction = {"Name": "Convolve", "Input": list(hrf.get("Variables", [])), "Model": HRF_MODELS[name]}
        for key in ("Derivative", "Dispersion"):
            if parameters.get(key):
                instruction[key] = bool(parameters[key])
        if "FIRDelays" in parameters:
            instruction["FirDelays"] = parameters["FIRDelays"]
        transformations = node.setdefault("Transformations", {"Transformer": "pybids-transforms-v1",
                                                              "Instructions": []})
        if isinstance(transformations, list):
            transformations = node["Transformations"] = {"Transformer": "pybids-transforms-v1",
                                                         "Instructions": transformations}
        transformations.setdefault("Instructions", []).append(instruction)

    @property
    def nodes(self):
        return [(node["Name"], node["Level"].lower()) for node in self.spec["Nodes"]]

    @property
    def convolves(self):
        """Whether the run node convolves anything itself (a Convolve transformation)."""
        transformations = self.spec["Nodes"][0].get("Transformations", {})
        instructions = transformations.get("Instructions", []) if isinstance(transformations, dict) else \
            transformations
        return any(str(t.get("Name", "")).lower() == "convolve" for t in instructions)

    def graph(self, layout):
        """pybids' BIDSStatsModelsGraph of the specification on ``layout`` (its validation notes logged)."""
        from bids.modeling import BIDSStatsModelsGraph

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                graph = BIDSStatsModelsGraph(layout, copy.deepcopy(self.spec))
            except (ValueError, KeyError, TypeError) as error:
                raise InputError(f"--model-file {self.name}: pybids cannot read it: {error}", exit_code=65) from error
        for item in caught:
            logger.debug("pybids: %s", item.message)
        return graph


def _selector(run):
    chosen = {"subject": run.subject, "task": run.task}
    if run.session is not None:
        chosen["session"] = run.session
    if run.run is not None:
        chosen["run"] = int(run.run)
    return chosen


def _pybids(call, what):
    """Run a pybids call, turning its errors into one-line InputErrors (65) and its warnings into log lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = call()
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(f"{what}: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
                             exit_code=65) from error
    for item in caught:
        text = str(item.message).splitlines()[0]
        if "NaNs detected" in text:
            logger.warning("%s: %s (pybids replaced them with 0)", what, text)
        else:
            logger.debug("pybids: %s", text)
    return result


def run_designs(model, graph, runs, loaded):
    """The :class:`RunDesign` of every output of the run node over ``runs`` (one subject, session and task).

    ``loaded``: {run label: volumes} of the runs whose variables the graph already holds (updated).
    """
    root = graph.root_node
    for run in runs:
        if run.label not in loaded:
            loaded[run.label] = run_volumes(run)
            _pybids(lambda run=run: graph.load_collections(nodes=[root.name], scope="all",
                                                           scan_length=loaded[run.label] * run.tr,
                                                           **_selector(run)),
                    f"{run.label}: loading its variables for {model.name}")
    chosen = {"subject": runs[0].subject, "task": runs[0].task}
    if runs[0].session is not None:
        chosen["session"] = runs[0].session
    outputs = _pybids(lambda: root.run(group_by=root.group_by, force_dense=False, transformation_history=True,
                                       missing_values="fill", invalid_contrasts="error", **chosen),
                      f"{model.name}, node {root.name}")
    missing = [key for key in ("session", "task") if key not in root.group_by and chosen.get(key) is not None]
    if missing:
        logger.info("%s, node %s: GroupBy has no %s: the app fits one session and task at a time (%s); a later "
                    "node can combine them", model.name, root.name, " or ".join(missing), runs[0].label)
    designs = [_run_design(model, root, output, runs, loaded) for output in outputs]
    return [design for design in designs if design is not None]


def _runs_of(frame, runs):
    """Index of each row's run among ``runs`` (from the frame's run and session columns)."""
    index = np.zeros(len(frame), int)
    for i, run in enumerate(runs):
        match = np.ones(len(frame), bool)
        if run.run is not None and "run" in frame:
            match &= frame["run"].astype(int).to_numpy() == int(run.run)
        if run.session is not None and "session" in frame:
            match &= frame["session"].astype(str).to_numpy() == str(run.session)
        index[match] = i
    return index


def _numeric(values, name, where):
    """A regressor's amplitudes as numbers: a categorical variable with one level is its indicator."""
    numeric = pd.to_numeric(pd.Series(values), errors="coerce")
    text = pd.Series(values)[numeric.isna() & pd.Series(values).notna()]
    if text.empty:
        return numeric.fillna(0.0).to_numpy(float)
    levels = sorted(set(map(str, text)))
    if len(levels) == 1 and numeric.notna().sum() == 0:
        return np.where(pd.Series(values).notna(), 1.0, 0.0)
    raise InputError(f"{where}: X variable {name!r} is categorical ({', '.join(levels[:4])}): add a Factor "
                     "transformation and use its columns", exit_code=65)


def _run_design(model, node, output, all_runs, volumes):
    where = f"{model.name}, node {node.name} ({', '.join(f'{k} {v}' for k, v in output.entities.items())})"
    X, metadata = output.X.reset_index(drop=True), output.metadata.reset_index(drop=True)
    if X.empty or not len(X.columns):
        logger.warning("%s: an empty design; skipped", where)
        return None
    history = getattr(output, "trans_hist", None) or []
    variables = history[-1].output.variables if history else {}
    present = sorted(set(_runs_of(metadata, all_runs))) if len(metadata) else list(range(len(all_runs)))
    runs = [all_runs[i] for i in present]
    event_columns, dense_columns, dense_mode = _split_columns(model, X, variables, runs, where)
    events = _event_tables(X, metadata, variables, event_columns, dense_mode, runs, where)
    dense = _sampled_blocks(X, metadata, dense_columns, runs, volumes, where)
    contrasts = []
    for contrast in output.contrasts:
        if list(contrast.conditions) == ["intercept"]:  # pybids' dummy contrast of X's 1: a run mean here
            logger.warning("%s: no contrast %s on the intercept: every run has its own mean in the app's design",
                           where, contrast.name)
            continue
        contrasts.append(contrast)
    one_run = "run" in node.group_by and len(runs) == 1 and runs[0].run is not None
    return RunDesign(node=node.name, entities=dict(output.entities), runs=runs, event_columns=event_columns,
                     events=events, dense_columns=dense_columns, dense=dense, contrasts=contrasts, one_run=one_run)


def _split_columns(model, X, variables, runs, where):
    """(event columns, columns pybids sampled at the TR, whether there are any of the latter) of a design; refuses
    what pybids would build wrong."""
    from bids.variables import DenseRunVariable, SparseRunVariable

    dense_mode = any(isinstance(variables.get(c), DenseRunVariable) for c in X.columns)
    if dense_mode and len(runs) > 1 and model.convolves:
        raise StatsModelError(f"{where}: one output holds {len(runs)} runs and the file convolves: pybids convolves "
                              "them on one concatenated timeline (every run's events in the first run's time); "
                              "group the run node by run (GroupBy [run, subject]) or leave the convolution to the "
                              "app (no Convolve)")
    event_columns, dense_columns = [], []
    for column in X.columns:
        variable = variables.get(column)
        if column == "intercept":
            logger.info("%s: the intercept is not a regressor here: every run has its own mean in the design", where)
        elif not dense_mode or isinstance(variable, SparseRunVariable):
            event_columns.append(column)
        elif isinstance(variable, DenseRunVariable):
            dense_columns.append(column)
        else:
            raise StatsModelError(f"{where}: the Formula column {column!r} beside regressors sampled at the TR is "
                                  "not supported (pybids multiplies unconvolved boxcars); without sampled "
                                  "regressors in X the app convolves Formula columns as events")
    if dense_mode and event_columns and any(run.start_time for run in runs):
        logger.warning("%s: the app samples its convolved event regressors at the slice-timing reference "
                       "(StartTime %g s), pybids its sampled ones at the start of each volume", where,
                       runs[0].start_time)
    return event_columns, dense_columns, dense_mode


def _event_tables(X, metadata, variables, columns, dense_mode, runs, where):
    """Per run, the events (onset, duration, condition, modulation) of the event columns: pybids' event rows of X,
    or with sampled columns beside them each variable's own events."""
    if not columns:
        return [pd.DataFrame({"onset": [], "duration": [], "condition": [], "modulation": []}) for _ in runs]
    if dense_mode:
        sources = [(column, variables[column].to_df(entities=True), "amplitude") for column in columns]
    else:
        sources = [(column, metadata.assign(value=X[column].to_numpy()), "value") for column in columns]
    table = pd.concat([pd.DataFrame({"onset": frame["onset"].to_numpy(float),
                                     "duration": frame["duration"].to_numpy(float), "condition": column,
                                     "modulation": _numeric(frame[value].to_numpy(), column, where),
                                     "_run": _runs_of(frame, runs)}) for column, frame, value in sources],
                      ignore_index=True)
    table = table[table["modulation"] != 0]
    return [table[table["_run"] == i].drop(columns="_run").reset_index(drop=True) for i in range(len(runs))]


def _sampled_blocks(X, metadata, columns, runs, volumes, where):
    """Per run, the (volumes × columns) values pybids sampled at the TR, in time order; checked against the BOLD."""
    if not columns:
        return [np.zeros((0, 0)) for _ in runs]
    order, blocks = _runs_of(metadata, runs), []
    for i, run in enumerate(runs):
        block = X.loc[order == i, columns]
        if "onset" in metadata:
            block = block.iloc[np.argsort(metadata.loc[order == i, "onset"].to_numpy(float), kind="stable")]
        values = np.column_stack([_numeric(block[c].to_numpy(), c, where) for c in columns])
        if len(values) != volumes[run.label]:
            raise InputError(f"{where}: pybids sampled {len(values)} volumes of {run.label}, its BOLD has "
                             f"{volumes[run.label]}", exit_code=65)
        blocks.append(values)
    return blocks


def contrast_rows(contrast, columns, where):
    """A pybids ContrastInfo's weights over ``columns``: (kind 't' or 'F', array (rows × columns))."""
    conditions = list(contrast.conditions)
    missing = [c for c in conditions if c not in columns]
    if missing:
        raise StatsModelError(f"{where}: contrast {contrast.name!r} names {', '.join(map(str, missing))}, not a "
                              f"regressor of the design ({', '.join(map(str, columns))})")
    weights = np.atleast_2d(np.asarray(contrast.weights, dtype=float))
    if weights.shape[1] != len(conditions):
        raise StatsModelError(f"{where}: contrast {contrast.name!r} has {weights.shape[1]} weights for "
                              f"{len(conditions)} conditions")
    rows = np.zeros((weights.shape[0], len(columns)))
    for j, condition in enumerate(conditions):
        rows[:, columns.index(condition)] = weights[:, j]
    kind = "F" if str(contrast.test).upper() == "F" else "t"
    if kind == "t" and rows.shape[0] != 1:
        raise StatsModelError(f"{where}: t contrast {contrast.name!r} has {rows.shape[0]} rows of weights")
    return kind, rows


INPUT_KEY = "bidsEncoderInput"  # a private entity numbering a node's inputs: pybids' rows are mapped back by it


def edge_inputs(node, items, info, nodes):
    """The items that reach ``node`` through its edges: made by an edge's source node (``nodes(item)``), passing
    the edge's ``Filter`` (on ``info(item)``'s entities)."""
    from bids.utils import matches_entities

    chosen = []
    for item in items:
        for edge in node.parents:
            if edge.source.name in nodes(item) and matches_entities(info(item), edge.filter or {}):
                chosen.append(item)
                break
    return chosen


def node_outputs(graph, name, inputs, missing_values=None):
    """pybids' outputs of node ``name`` given the incoming ContrastInfos ``inputs``, and for each output the index
    (into ``inputs``) of every row of its design."""
    from bids.modeling.statsmodels import ContrastInfo

    node = graph.get_node(name)
    numbered = [ContrastInfo(i.name, i.conditions, i.weights, i.test, {**i.entities, INPUT_KEY: k})
                for k, i in enumerate(inputs)]
    outputs = _pybids(lambda: node.run(numbered, group_by=node.group_by, invalid_contrasts="error",
                                       missing_values=missing_values), f"node {name}")
    return [(output, [int(k) for k in output.metadata[INPUT_KEY]]) for output in outputs]
