"""``--model-file`` at the group level: the dataset nodes of a BIDS Stats Model.

Each dataset node takes the participant-level maps of the nodes its edges come from (effect and variance of every
contrast, per participant), and pybids groups them (``GroupBy``, with ``contrast`` added when missing), builds the
node's design from participants.tsv (``X``, transformations) and its contrasts. The group GLM is the app's: mixed
effects with the participants' variances (REML between-participant variance) or OLS with ``--group-model ols``;
the design is the file's ``X`` as written (covariates not demeaned; a categorical column with two levels coded 0/1,
1 for the level that sorts last). Maps: ``group/task-…_space-…_model-<Name>_contrast-<contrast>_stat-…_desc-<node
and group>``, with FDR (and, for volumes, cluster-extent) thresholded z maps.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
from bids.modeling.statsmodels import ContrastInfo

from ...bids.derivatives import bids_label, map_paths, sidecar_path, write_json
from ...bids.layout import InputError, load_layout
from ...bids.participant_maps import fit_name, read_map
from ...bids.stats_models import contrast_rows, edge_inputs, node_outputs
from ...inference.group import group_glm
from ..common.thresholds import write_thresholded
from .participant_nodes import common_entities

logger = logging.getLogger(__name__)

__all__ = ["stats_model_fits", "run_dataset_nodes"]

TEXTS = {"effect": ("Group estimate", "{units}"), "variance": ("Sampling variance of the group estimate",
                                                               "({units})^2"),
         "t": ("t statistic", "t"), "z": ("z score with the one-sided (upper-tail) p-value of t; sign of t", "z"),
         "p": ("One-sided (upper-tail) p-value of the t statistic", "probability")}


def _model_sidecar(fit):
    """The StatsModel field of a fit's sidecars (every map of a model-file fit has it), or None."""
    if not fit.sidecars:
        return None
    path = fit.sidecars.get((None, "rsquared")) or fit.sidecars[min(fit.sidecars, key=str)]
    try:
        return json.loads(path.read_text()).get("StatsModel")
    except (OSError, ValueError):
        return None


def stats_model_fits(fits):
    """Split participant fits into (ordinary fits, {model name: fits made from a model file})."""
    ordinary, made = [], {}
    for fit in fits:
        info = _model_sidecar(fit)
        if info is None:
            ordinary.append(fit)
        else:
            made.setdefault(info["Name"], []).append(fit)
    return ordinary, made


def _inputs(fits):
    """(ContrastInfo, {'effect': path, 'variance': path, 'nodes': [...], 'fit': fit}) of every contrast map set."""
    items = []
    for fit in fits:
        for (contrast, stat), path in fit.maps.items():
            if stat != "effect" or contrast is None or (contrast, "variance") not in fit.maps:
                continue
            sidecar = fit.metadata(contrast, "effect")
            info = sidecar.get("StatsModel", {})
            name = (sidecar.get("Contrast", {}).get("Name") if "Combination" in sidecar else
                    info.get("Contrasts", {}).get(contrast, contrast))
            entities = {"subject": fit.subject, "contrast": name, **dict(fit.key)}
            if fit.session:
                entities["session"] = fit.session
            if fit.run is not None:
                entities["run"] = int(fit.run)
            items.append((ContrastInfo(name, [name], [1], "t", entities),
                          {"effect": path, "variance": fit.maps[(contrast, "variance")],
                           "nodes": info.get("Nodes", []), "fit": fit}))
    return items


def _design_matrix(X, where):
    """The node's X as numbers: numeric columns as they are, two-level categorical columns 0/1."""
    columns, coding = {}, {}
    for name in X.columns:
        values = pd.to_numeric(X[name], errors="coerce")
        if values.notna().all():
            columns[name] = values.to_numpy(float)
            continue
        levels = sorted(set(map(str, X[name].dropna())))
        if len(levels) != 2 or X[name].isna().any():
            raise InputError(f"{where}: X column {name!r} has values {', '.join(levels[:5])}: numbers or a "
                             "two-level category are supported (use a Factor transformation for more levels)",
                             exit_code=65)
        columns[name] = (X[name].astype(str) == levels[1]).to_numpy(float)
        coding[str(name)] = {levels[0]: 0, levels[1]: 1}
    return pd.DataFrame(columns), coding


def run_dataset_nodes(bids_dir, model, fits, staging, output_dir, options, shown, common):
    """Every dataset node of ``model`` on its participant fits; returns the paths written (under ``staging``)."""
    layout = load_layout(bids_dir, raw_only=True)
    graph = model.graph(layout)
    dataset_nodes = [name for name, level in model.nodes if level == "dataset"]
    if not dataset_nodes:
        logger.warning("--model-file %s has no dataset node: no group result for it", model.name)
        return []
    try:
        graph.load_collections(nodes=dataset_nodes)
    except ValueError as error:
        raise InputError(f"--model-file {model.name}: cannot load the participants' variables: "
                         f"{str(error).splitlines()[0]}", exit_code=66) from error
    items = _inputs(fits)
    written = []
    for name in dataset_nodes:
        node = graph.get_node(name)
        chosen = edge_inputs(node, items, lambda pair: pair[0], lambda pair: pair[1]["nodes"])
        if not chosen:
            logger.warning("--model-file %s, node %s: no participant maps from %s", model.name, name,
                           ", ".join(sorted(edge.source.name for edge in node.parents)))
            continue
        for output, rows in node_outputs(graph, name, [info for info, _ in chosen], missing_values="error"):
            used = [chosen[k][1] for k in rows]
            written += _fit_output(model, name, output, used, staging, output_dir, options, shown, common)
    return written


def _fit_output(model, name, output, used, staging, output_dir, options, shown, common):
    group = {k: v for k, v in output.entities.items() if k != "contrast"}
    where = (f"--model-file {model.name}, node {name}" + "".join(f", {k} {v}" for k, v in group.items())
             + f", contrast {output.entities.get('contrast')}")
    if not output.contrasts:
        logger.warning("%s: the node defines no contrast (Contrasts or DummyContrasts): nothing to test", where)
        return []
    X, coding = _design_matrix(output.X.reset_index(drop=True), where)
    rank = np.linalg.matrix_rank(X.to_numpy()) if len(X) else 0
    if len(used) <= rank:
        logger.warning("%s: %d participant(s) for %d design column(s): not estimable; skipped", where, len(used),
                       rank)
        return []
    maps = [read_map(item["effect"]) for item in used]
    geometry = maps[0][1]
    if any(not g.same_as(geometry) for _, g in maps):
        raise InputError(f"{where}: the participants' maps are on different grids", exit_code=65)
    effects = np.vstack([values for values, _ in maps])
    variances = np.vstack([read_map(item["variance"])[0] for item in used])
    mask = np.isfinite(effects).any(axis=0) if geometry.kind == "volume" else np.ones(effects.shape[1], bool)
    writer = geometry.writer(mask)
    contrasts = {}
    for contrast in output.contrasts:
        _, weights = contrast_rows(contrast, list(X.columns), where)
        contrasts[str(contrast.name)] = weights[0]
    used_model = options.group_model
    results = group_glm(effects[:, mask], X.to_numpy(), contrasts,
                        variances=None if used_model == "ols" else variances[:, mask], model=used_model)
    fit = used[0]["fit"]
    base = common_entities([dict(item["fit"].key) for item in used])  # several tasks: no task entity
    base["model"] = model.label
    desc = bids_label(" ".join([name, *[f"{k} {v}" for k, v in group.items()]]))
    subjects = [f"sub-{item['fit'].subject}" for item in used]
    sources = [f"bids::{p.relative_to(output_dir).as_posix()}" for item in used
               for p in ([*item["effect"].values()] if isinstance(item["effect"], dict) else [item["effect"]])]
    units = fit.metadata(next(c for c, s in fit.maps if s == "effect" and c), "effect").get("Units")
    written = []

    def write(entities, values, sidecar, sources):
        path = map_paths(staging, entities, geometry.kind)
        writer.write(np.asarray(values, np.float32), path, name=entities.get("stat", "value"))
        written.extend(list(path.values()) if isinstance(path, dict) else [path])
        written.append(write_json(sidecar_path(path), {**sidecar, **common, "Sources": sources}))
        if entities["stat"] == "z" and np.isfinite(values).any():  # no figure of a map without values
            label = " ".join(str(entities[k]) for k in ("contrast", "stat", "desc") if entities.get(k))
            shown.append({"group": fit_name(tuple(base.items())), "space": base.get("space", ""), "label": label,
                          "stat": "z", "caption": sidecar["Description"], "path": path})

    for contrast, weights in contrasts.items():
        target = {**base, "contrast": bids_label(contrast), "desc": desc}
        test = {"Name": "mixed effects" if used_model == "mixed" else "ordinary least squares",
                "GroupModel": used_model, "Design": {str(c): X[c].tolist() for c in X.columns},
                "Participants": subjects, "ContrastWeights": dict(zip(map(str, X.columns), weights.tolist(),
                                                                      strict=True)),
                "CategoricalCoding": coding, "DegreesOfFreedom": f"participants with a value at the voxel - "
                                                                 f"{np.linalg.matrix_rank(X.to_numpy())}"}
        stats_model = {"Name": model.name, "Node": name, "Level": "Dataset", "Group": {k: str(v) for k, v in
                                                                                      group.items()},
                       "Contrast": contrast, "Implementation": "pybids bids.modeling (grouping, X, contrasts); "
                                                                "bids_encoder.inference.group (the GLM)"}
        for stat, (text, unit) in TEXTS.items():
            values = np.full(effects.shape[1], np.nan)
            values[mask] = results[contrast][stat]
            sidecar = {"Description": f"{text} of contrast {contrast}, node {name} of {model.name}"
                                      + "".join(f", {k} {v}" for k, v in group.items()),
                       "Units": unit.format(units=units), "Test": test, "StatsModel": stats_model,
                       "ParticipantsWithValues": subjects}
            write({**target, "stat": stat}, values[mask], sidecar, sources)
            if stat == "z":
                written.extend(write_thresholded(write, staging, geometry.kind, writer, {**target, "stat": "z"},
                                                 values[mask], sidecar, sources, options.fdr_q,
                                                 options.cluster_extent, common))
    logger.info("%s: %d participants, contrasts %s", where, len(used), ", ".join(contrasts))
    return written
