"""``--model-file``: a BIDS Stats Model's run, session and subject nodes at the participant level.

The run node's outputs (see :func:`bids_encoder.bids.stats_models.run_designs`) are fitted by the app's GLM — its
``--hrf`` for the event regressors the file does not convolve, ``--confounds`` unless the file's X names fMRIPrep
confounds itself, ``--glm-noise-model`` and ``--signal-scaling`` — and written like any GLM fit, named
``model-<the model's Name>`` (with ``run-`` when the node fits each run on its own), with the file's contrasts only.
Session and subject nodes (``X: [1]``) then combine their incoming contrasts: ``FEMA`` by precision-weighted fixed
effects, ``t`` by a one-sample t-test over the inputs; their maps have no ``run`` (and no ``ses`` when they combine
sessions). The dataset nodes run at the group level (:mod:`.dataset_nodes`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from bids.modeling.statsmodels import ContrastInfo

from ..._version import __version__
from ...bids.derivatives import bids_label, map_paths, sidecar_path, write_json
from ...bids.layout import InputError
from ...bids.participant_maps import read_map
from ...bids.stats_models import StatsModelError, contrast_rows, edge_inputs, node_outputs, run_designs
from ...inference.group import group_glm
from ...inference.statistics import t_to_z_p
from ..common.interrupts import raise_if_interrupted
from ..common.naming import fit_marker, fit_name
from ..common.records import fit_record
from ..fits.glm_inference import ContrastSpec

logger = logging.getLogger(__name__)

__all__ = ["select_model_inputs", "design_contrast_specs", "stats_model_sidecar", "fit_stats_model",
           "common_entities", "planned_fits", "COMBINED_STATS"]

COMBINED_STATS = ("effect", "variance", "t", "z", "p")
INPUT_ENTITIES = ("subject", "session", "task", "run")


def select_model_inputs(plan, model):
    """The runs of ``plan`` ({subject: runs}) that the model file's ``Input`` selects (all without one)."""
    chosen = {key.lower(): value for key, value in (model.spec.get("Input") or {}).items()}
    if not chosen:
        return plan
    wanted = {key: {str(v).removeprefix(f"{key[:3]}-") for v in (value if isinstance(value, list) else [value])}
              for key, value in chosen.items() if key in INPUT_ENTITIES}

    def keep(run):
        for key, values in wanted.items():
            value = getattr(run, key)
            if key == "run" and value is not None:
                values, value = {str(int(v)) for v in values}, str(int(value))
            if value is None or str(value) not in values:
                return False
        return True

    selected = {subject: [run for run in runs if keep(run)] for subject, runs in plan.items()}
    selected = {subject: runs for subject, runs in selected.items() if runs}
    if not selected:
        raise InputError(f"--model-file {model.name}: its Input {chosen} selects none of the runs found",
                         exit_code=18)
    return selected


def design_contrast_specs(design, model, name):
    """The run node's contrasts of ``design`` as the GLM inference's contrast specifications."""
    specs, labels = [], {}
    for contrast in design.contrasts:
        kind, rows = contrast_rows(contrast, design.columns, f"{name} ({model.name}, node {design.node})")
        label = bids_label(contrast.name)
        if label in labels:
            raise StatsModelError(f"{name}: contrasts {labels[label]!r} and {contrast.name!r} of {model.name} have "
                                  f"the same BIDS label {label}")
        labels[label] = contrast.name
        terms = " ".join(f"{w:+g}*{c}" for c, w in zip(design.columns, rows[0], strict=True) if w) if kind == "t" \
            else ", ".join(str(c) for c in contrast.conditions)
        specs.append(ContrastSpec(label, kind, f"{contrast.name}: {terms}", rows[0] if kind == "t" else rows))
    if not specs:
        raise StatsModelError(f"{name}: the run node {design.node} of {model.name} defines no contrast "
                              "(Contrasts or DummyContrasts)")
    return specs


def stats_model_sidecar(model, design):
    """What every map of a run-node fit says of the model file."""
    return {"Name": model.name, "File": None if model.source is None else str(model.source), "Node": design.node,
            "Level": "Run", "Nodes": [design.node], "Entities": {k: str(v) for k, v in design.entities.items()},
            "Contrasts": {bids_label(c.name): str(c.name) for c in design.contrasts},
            "EventRegressors": [str(c) for c in design.event_columns],
            "SampledRegressors": [str(c) for c in design.dense_columns],
            "Convolution": ("event regressors convolved by bids_encoder with --hrf; sampled regressors as pybids "
                            "gives them at the TR (convolved by the file's Convolve, or not from events)"),
            "Implementation": "pybids bids.modeling (transformations, formula, contrasts, grouping)"}


@dataclass
class _Input:
    """A contrast map set of one participant-level node output, as an input of the next nodes."""

    info: ContrastInfo
    paths: dict  # stat → path (or hemi → path)
    df: float
    nodes: list = field(default_factory=list)
    entities: dict = field(default_factory=dict)  # output entities of its maps (without contrast and stat)


def fit_stats_model(graph, model, groups, output_dir, fit, records, report, kind, options):
    """Run the participant-level nodes of ``model`` on one subject's ``groups`` of runs; returns the paths written.

    ``fit(runs, design=..., cache=...)`` fits one run design (the participant workflow's ``_fit_group``).
    """
    from ..common.naming import fit_entities

    loaded, written, available = {}, [], []
    for runs in groups:
        for design in run_designs(model, graph, runs, loaded):
            raise_if_interrupted()
            if design.dense_columns and options.hrf != "canonical":
                raise StatsModelError(f"--model-file {model.name}: node {design.node} has regressors sampled at the "
                                      f"TR by pybids ({', '.join(map(str, design.dense_columns[:5]))}): --hrf "
                                      f"{options.hrf} applies to event regressors only; use --hrf canonical")
            started = time.perf_counter()
            named = _confounds_named(design)
            if named:
                logger.warning("--model-file %s: node %s's X names fMRIPrep confounds (%s): they are its confounds, "
                               "--confounds is not applied", model.name, design.node, ", ".join(named[:5]))
            paths = fit(design.runs, design=design, cache={}, **({"strategy": ()} if named else {}))
            entities = fit_entities(design.runs, options, design)
            records.append(fit_record(fit_name(entities, output_dir), fit_marker(output_dir, entities),
                                      "done" if paths else "skipped", time.perf_counter() - started, report))
            written += paths
            available += _run_inputs(design, entities, output_dir, kind)
    for name, level in model.nodes[1:]:
        if level in ("session", "subject"):
            raise_if_interrupted()
            new, paths = _combine_node(graph, model, name, level, available, output_dir, kind)
            available += new
            written += paths
    return written


def planned_fits(layout, model, plan, options):
    """(runs, entities, model text) of every run-node fit of ``plan`` ({subject: groups of runs}), for --dry-run:
    pybids reads the events and the BOLD headers, no image data."""
    from ..common.naming import fit_entities

    graph, loaded, fits = model.graph(layout), {}, []
    for groups in plan.values():
        for runs in groups:
            for design in run_designs(model, graph, runs, loaded):
                text = (f"glm of {model.name} node {design.node} ({len(design.columns)} regressors: "
                        f"{', '.join(map(str, design.columns[:6]))}{'…' if len(design.columns) > 6 else ''})")
                fits.append((design.runs, fit_entities(design.runs, options, design), text))
    return fits


def _confounds_named(design):
    """The design's sampled regressors that are columns of its runs' fMRIPrep confounds files."""
    names = set()
    for run in design.runs:
        if run.confounds is not None:
            with open(run.confounds) as handle:
                names |= set(handle.readline().rstrip("\n").split("\t"))
    return [str(c) for c in design.dense_columns if str(c) in names]


def _run_inputs(design, entities, output_dir, kind):
    inputs = []
    run = design.runs[0]
    for contrast in design.contrasts:
        if str(contrast.test).upper() == "F":
            continue
        target = {**entities, "contrast": bids_label(contrast.name)}
        paths = {stat: map_paths(output_dir, {**target, "stat": stat}, kind) for stat in COMBINED_STATS}
        sidecar = sidecar_path(_first(paths["effect"]))
        if not sidecar.is_file() or not _exists(paths["variance"]):
            logger.warning("%s: no variance map for contrast %s (fitted with --alpha?): not combined by the later "
                           "nodes", fit_name(entities, output_dir), contrast.name)
            continue
        extra = {"task": run.task, **({"session": run.session} if run.session is not None else {})}
        info = ContrastInfo(contrast.name, contrast.conditions, contrast.weights, contrast.test,
                            {**contrast.entities, **extra})
        inputs.append(_Input(info, paths, float(json.loads(sidecar.read_text())["DegreesOfFreedom"]),
                             [design.node], dict(entities)))
    return inputs


def _first(path):
    return path["L"] if isinstance(path, dict) else path


def _exists(path):
    return all(p.is_file() for p in path.values()) if isinstance(path, dict) else path.is_file()


def _combine_node(graph, model, name, level, available, output_dir, kind):
    """Fixed effects (FEMA) or t-tests of one session/subject node; returns (new inputs, paths written)."""
    node = graph.get_node(name)
    inputs = edge_inputs(node, available, lambda item: item.info, lambda item: item.nodes)
    if not inputs:
        logger.warning("--model-file %s, node %s: no input from %s; skipped", model.name, name,
                       ", ".join(sorted(edge.source.name for edge in node.parents)))
        return [], []
    new, written = [], []
    for output, rows in node_outputs(graph, name, [item.info for item in inputs]):
        chosen = [inputs[k] for k in rows]
        for contrast in output.contrasts:
            item, paths = _combine(model, name, level, contrast, chosen, output_dir, kind)
            new.append(item)
            written += paths
    logger.info("--model-file %s, node %s: %d map set(s)", model.name, name, len(new))
    return new, written


def _combine(model, name, level, contrast, chosen, output_dir, kind):
    kind_t, rows = contrast_rows(contrast, ["intercept"], f"--model-file {model.name}, node {name}")
    weight = float(rows[0, 0])
    base = common_entities([item.entities for item in chosen], drop=("run",))
    target = {**base, "contrast": bids_label(contrast.name)}
    paths = {stat: map_paths(output_dir, {**target, "stat": stat}, kind) for stat in COMBINED_STATS}
    info = ContrastInfo(contrast.name, contrast.conditions, contrast.weights, contrast.test,
                        {**contrast.entities, **{k: v for k, v in base.items() if k in ("task", "session")}})
    if len(chosen) == 1 and _first(paths["effect"]) == _first(chosen[0].paths["effect"]):
        item = chosen[0]  # one input under the same name: this node passes it on unchanged
        item.nodes.append(name)
        for stat in COMBINED_STATS:
            path = sidecar_path(_first(item.paths[stat]))
            if path.is_file():
                sidecar = json.loads(path.read_text())
                sidecar.setdefault("StatsModel", {}).setdefault("Nodes", [])
                if name not in sidecar["StatsModel"]["Nodes"]:
                    sidecar["StatsModel"]["Nodes"].append(name)
                write_json(path, sidecar)
        return item, []
    effects, geometry = zip(*[read_map(item.paths["effect"]) for item in chosen], strict=True)
    variances = [read_map(item.paths["variance"])[0] for item in chosen]
    if any(not g.same_as(geometry[0]) for g in geometry):
        raise InputError(f"--model-file {model.name}, node {name}: the inputs of {contrast.name} are on different "
                         "grids", exit_code=65)
    effects, variances = np.vstack(effects), np.vstack(variances)
    dofs = np.array([item.df for item in chosen])
    test = str(contrast.test).upper()
    if test == "FEMA":
        from ...inference import fixed_effects

        combined = fixed_effects(effects, variances, dofs)
        effect, variance, df = weight * combined.effect, weight**2 * combined.variance, combined.df
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(variance > 0, effect / np.sqrt(variance), np.nan)
        method = "precision-weighted fixed effects (inverse-variance weights), degrees of freedom summed"
    else:
        result = group_glm(effects, np.ones((len(chosen), 1)), {"c": [weight]}, model="ols")["c"]
        effect, variance, t, df = result["effect"], result["variance"], result["t"], result["dof"]
        method = "one-sample t-test over the inputs (ordinary least squares)"
    z, p = t_to_z_p(t, df)
    values = {"effect": effect, "variance": variance, "t": t, "z": z, "p": p}
    first = json.loads(sidecar_path(_first(chosen[0].paths["effect"])).read_text())
    units = first.get("Units")
    common = {"Contrast": {"Name": str(contrast.name), "Label": bids_label(contrast.name), "Test": contrast.test,
                           "Weight": weight},
              "Combination": {"Method": method, "Inputs": [fit_name({**item.entities, "contrast":
                                                                     bids_label(item.info.name)}, output_dir)
                                                           for item in chosen]},
              "DegreesOfFreedom": float(np.nanmax(df)) if np.isfinite(df).any() else None,
              "NoiseModel": first.get("NoiseModel"), "SignalScaling": first.get("SignalScaling"),
              "StatsModel": {"Name": model.name, "Node": name, "Level": level.capitalize(), "Nodes": [name]},
              "Sources": [_relative(_first(item.paths[stat]), output_dir) for item in chosen
                          for stat in ("effect", "variance")],
              "SoftwareVersion": __version__}
    texts = {"effect": ("Effect", units), "variance": ("Sampling variance of the effect", f"({units})^2"),
             "t": ("t statistic", "t"), "z": ("z score (one-sided upper-tail p of t; sign of t)", "z"),
             "p": ("One-sided (upper-tail) p-value of the t statistic", "probability")}
    writer = geometry[0].writer(np.ones(effects.shape[1], bool))
    written = []
    try:
        for stat, (text, unit) in texts.items():
            writer.write(np.asarray(values[stat], np.float32), paths[stat], name=stat)
            written += list(paths[stat].values()) if isinstance(paths[stat], dict) else [paths[stat]]
            description = f"{text} of contrast {contrast.name}, node {name} of {model.name} ({method})"
            written.append(write_json(sidecar_path(_first(paths[stat])), {"Description": description,
                                                                           "Units": unit, **common}))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return _Input(info, paths, common["DegreesOfFreedom"] or 0.0, [name], base), written


def common_entities(entities, drop=()):
    """The entities every one of ``entities`` (dicts) has with the same value, but ``drop`` (a combination of
    several tasks or sessions is named by neither)."""
    first = entities[0]
    return {key: value for key, value in first.items() if key not in drop
            and all(other.get(key) == value for other in entities[1:])}


def _relative(path, output_dir):
    return f"bids::{path.relative_to(output_dir).as_posix()}"
