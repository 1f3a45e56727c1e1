"""Names of a fit's outputs: its entities, the prefix every output shares, the R² sidecar that marks it finished,
the ``bids:`` URIs of its sources, and the removal of a fit's files (on ``--overwrite`` or a failure)."""

from __future__ import annotations

import logging
from pathlib import Path

from ...bids.derivatives import check_names, derivative_path, map_paths

logger = logging.getLogger(__name__)


def output_entities(runs, model):
    """Entities shared by the outputs of one fit: the source entities common to its runs, plus the model."""
    first = runs[0].entities
    entities = {"subject": runs[0].subject, "model": model}
    for key in ("session", "task", "acquisition", "space", "res", "den"):
        values = {run.entities.get(key) for run in runs}
        if len(values) == 1 and first.get(key) is not None:
            entities[key] = first[key]
    return entities


def _uri(path, roots):
    path = Path(path).resolve()
    for name, root in sorted(roots.items(), key=lambda item: -len(Path(item[1]).resolve().parts)):
        try:
            return f"bids:{name}:{path.relative_to(Path(root).resolve()).as_posix()}"
        except ValueError:
            continue
    return path.as_uri()


def fit_sources(inputs, roots):
    """``bids:`` URIs of every BOLD, mask, events, confounds and stimulus file of a fit's inputs."""
    sources = []
    for run in inputs.runs:
        sources += [_uri(p, roots) for p in ([*run.surfaces.values()] or [run.bold])]
        sources += [_uri(p, roots) for p in (run.mask, run.events, run.confounds) if p is not None]
    return sources + [_uri(p, roots) for p in inputs.stimulus_files]


def fit_name(entities, output_dir):
    """``sub-01_task-T_space-S_model-m``: the prefix of every output of a fit (GIFTI names add ``hemi-``)."""
    return derivative_path(output_dir, entities).name.rsplit("_", 1)[0]


def fit_marker(output_dir, entities):
    """The R² sidecar of the fit with ``entities``: written last, it marks the fit as finished."""
    return derivative_path(output_dir, {**entities, "stat": "rsquared"}, extension=".json")


def remove_fit_outputs(folder, name, marker=None):
    """Remove the files of the fit called ``name`` in ``folder`` (its ``marker`` first), temporaries included."""
    if marker is not None:
        Path(marker).unlink(missing_ok=True)
    if not Path(folder).is_dir():
        return
    for path in Path(folder).iterdir():  # maps, sidecars, design, report figures; ".name-XXXX" temporaries
        plain = path.name.lstrip(".").replace("_hemi-L", "").replace("_hemi-R", "")
        if path.is_file() and plain.startswith(name + "_"):
            path.unlink(missing_ok=True)


#: the longest stat names the app writes: a contrast's (variance) and a fit's (hrfDispersion); other models' maps
#: are checked with a 16-character stat name (surroundBaseline)
CONTRAST_STAT, LONGEST_STAT = "variance", "x" * 16


def fit_output_paths(output_dir, entities, kind, contrasts=(), stats=(LONGEST_STAT,)):
    """The paths of the longest names a fit with ``entities`` writes: a map per stat (GIFTI: the hemi-L one) and
    per contrast label (its variance map), its design and its decoding tables. Report figures, temporaries and
    the sessions' fixed effects have shorter names."""
    def first(path):
        return path["L"] if isinstance(path, dict) else path

    paths = [first(map_paths(output_dir, {**entities, "stat": stat}, kind)) for stat in stats]
    paths += [first(map_paths(output_dir, {**entities, "contrast": c, "stat": CONTRAST_STAT}, kind))
              for c in contrasts]
    paths.append(derivative_path(output_dir, entities, suffix="design", extension=".json"))
    paths.append(derivative_path(output_dir, {**entities, "desc": "posterior"}, suffix="decoding",
                                 extension=".tsv.gz"))
    return paths


def check_fit_names(output_dir, entities, kind, contrasts=(), stats=(LONGEST_STAT,)):
    """Raise :class:`~bids_encoder.bids.derivatives.NameTooLongError` (before anything is fitted) when the outputs
    of the fit would have names or paths longer than the file system of ``output_dir`` allows."""
    check_names(fit_output_paths(output_dir, entities, kind, contrasts, stats), fit_name(entities, output_dir))


def fit_entities(runs, options, design=None):
    """Entities of a fit's outputs: its runs' common ones and the model; a model file's name as the model, and the
    run of a run-node output that is one run."""
    if design is None:
        return output_entities(runs, options.model)
    entities = output_entities(runs, options.stats_model.label)
    if design.one_run:
        entities["run"] = runs[0].run
    return entities
