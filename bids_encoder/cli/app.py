"""Command line: ``bids_encoder BIDS_DIR OUTPUT_DIR {participant,group} [options]``.

Only options, validation and dispatch live here. Exit codes (BIDS-Apps execution spec): 0 success, 1 any other
error, 16 dataset invalid, 17 unknown analysis level, 18 filters select no files, 64 usage error, 65 bad data,
66 required input missing, 73 cannot create output, 130 interrupted (SIGINT), 143 terminated (SIGTERM).
Errors are printed on one line.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from .._tensorflow import filtered_stderr, quiet_environment
from .._version import __version__
from ..workflows.common.interrupts import handling_signals, received
from .support import (
    LABEL,
    LEVELS,
    AppError,
    _check_paths,
    _configure_device,
    _confound_parameters,
    _contrasts,
    _device_memory_limit,
    _expand_lists,
    _filters,
    _keep_log,
    _labels,
    _limit_threads,
    _load_config,
    _memory_budget,
    _setup_logging,
    _validate_dataset,
)

quiet_environment()  # before anything imports TensorFlow

logger = logging.getLogger("bids_encoder")

EXAMPLES = """Examples:

\b
  bids_encoder /data/bids /data/out participant --participant-label 01 --task localizer
  bids_encoder /data/bids /data/out participant --task localizer --contrast "facesVsHouses=faces - houses"
  bids_encoder /data/bids /data/out participant --task localizer --run-model fixed-effects   # as nilearn, FitLins
  bids_encoder /data/bids /data/out participant --task prf --model prf2d --hrf shared
  bids_encoder /data/bids /data/out participant --task prf --dry-run                          # what would run
  bids_encoder /data/bids /data/out group --min-rsquared 0.1

Installed in a virtual environment, the command is .venv/bin/bids_encoder (or `source .venv/bin/activate`
first); `python -m bids_encoder` is the same. Exit codes: 0 done, 64 usage, 65 bad data, 66 missing input,
73 output cannot be created (see the README)."""


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}, epilog=EXAMPLES)
@click.argument("bids_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("analysis_level", metavar="{participant,group}")
@click.option("--participant-label", "--participant_label", "participant_label", multiple=True,
              help="Subjects to process (with or without 'sub-'); several allowed. Default: all.")
@click.option("--session-label", "--session_label", "session_label", multiple=True, help="Sessions to use.")
@click.option("--task", help="Task to fit (default: every task).")
@click.option("--run", multiple=True, help="Runs to use (default: all, fitted jointly).")
@click.option("--bids-filter-file", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON of pybids filters for the BOLD query (fMRIPrep's format accepted).")
@click.option("--derivatives", type=click.Path(file_okay=False, path_type=Path),
              help="fMRIPrep output folder. Default: BIDS_DIR/derivatives/fmriprep.")
@click.option("--space", default="MNI152NLin2009cAsym", show_default=True,
              help="Output space of fMRIPrep: a template or T1w (NIfTI), fsnative/fsaverage* (GIFTI), fsLR (CIFTI).")
@click.option("--res", help="Resolution entity of the template space (res-).")
@click.option("--model", multiple=True, default=("glm",), show_default=True, metavar="MODEL[,MODEL…]",
              help="Encoding model(s): glm, prf2d, css2d, dog2d, dn2d (stimulus apertures), gauss1d, loggauss1d, "
              "vonmises1d (tuning to --stimulus-column), singletrial (one response per event, GLMsingle's method). "
              "Several (repeated or comma-separated): fitted on the same inputs and compared by cvR² "
              "(model-comparison_stat-bestmodel).")
@click.option("--single-trial-types", multiple=True, metavar="NAME", help="singletrial: a trial type "
              "(--condition-column value) whose events are single trials; repeatable (default: every event with a "
              "value there). The other events are nuisance regressors.")
@click.option("--repeat-column", metavar="NAME", help="singletrial: the events.tsv column whose value names what "
              "repeats (an image, a word; default: --condition-column); repeated trials choose the noise components "
              "and ridge fractions and give the reliability map.")
@click.option("--single-trial-stages", default="hrf,denoise,ridge", show_default=True, metavar="STAGE[,STAGE…]",
              help="singletrial: the stages on: hrf (each voxel's HRF from a library), denoise (noise components "
              "of a noise pool), ridge (fractional ridge per voxel); none: least squares with the canonical HRF.")
@click.option("--stimulus-column", metavar="NAME", help="1-D tuning models: the events.tsv column with each "
              "stimulus event's value (natural units); events without a value are not stimuli.")
@click.option("--stimulus-period", type=click.Choice(["180", "360"]), help="vonmises1d: period of the stimulus "
              "values in degrees (180: orientation, 360: direction).")
@click.option("--nuisance-trial-type", multiple=True, metavar="NAME", help="1-D tuning models: a trial_type (of "
              "the events without a stimulus value) entered as a nuisance regressor; repeatable. Other events are "
              "ignored.")
@click.option("--decode", is_flag=True, help="1-D tuning models: decode the stimulus of every trial from its "
              "single-trial response, leave one run out (needs ≥2 runs); writes …_decoding.tsv and posteriors.")
@click.option("--decode-voxels", type=click.IntRange(min=2), default=200, show_default=True, metavar="N",
              help="--decode: voxels per fold, the best by their cross-validated fit inside the training runs.")
@click.option("--decode-betas", type=click.Choice(["lsa", "lss", "singletrial"]), default="lsa", show_default=True,
              help="--decode: single-trial responses by one GLM of all trials per run (lsa), least-squares-"
              "separate GLMs (lss), or the singletrial model over all runs, without the stimulus values "
              "(--single-trial-stages).")
@click.option("--positive-amplitude", is_flag=True, help="pRF and tuning models: constrain amplitudes to be "
              "positive.")
@click.option("--min-grid-rsquared", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              show_default="0.1", help="pRF and tuning models: voxels whose grid-stage R² is below this keep their grid "
              "estimate and skip Levenberg-Marquardt (0 iterates every voxel); the desc-iterated mask says which.")
@click.option("--hrf", type=click.Choice(["canonical", "shared", "fit", "auto"]), default="canonical",
              show_default=True, help="canonical (SPM), shared (one delay and dispersion per fit, from the best "
              "voxels), fit (per-voxel delay and dispersion), or auto (the one with the best median cvR²).")
@click.option("--cv", type=click.Choice(["auto", "loro", "split-half", "none"]), default="auto", show_default=True,
              help="Cross-validated R²: leave one run out (loro), two contiguous halves of every run (split-half), "
              "auto (loro with ≥2 runs, else split-half) or none.")
@click.option("--confounds", default="motion,high_pass,wm_csf", show_default=True,
              help="nilearn fMRIPrep strategies, comma separated (motion,high_pass,wm_csf,global_signal,compcor,"
                   "ica_aroma,scrub,non_steady_state), or none.")
@click.option("--confounds-param", multiple=True, metavar="NAME=VALUE",
              help="Parameter of nilearn's load_confounds, e.g. motion=full, fd_threshold=0.5, n_compcor=5.")
@click.option("--noise-model", type=click.Choice(["ssq", "gaussian"]), default="ssq", show_default=True,
              help="ssq (least squares) or gaussian.")
@click.option("--contrast", "contrast", multiple=True, metavar="NAME=EXPRESSION",
              help="GLM: a t contrast over the conditions (BIDS labels or quoted trial_type values), e.g. "
              "facesVsHouses='faces - houses'; repeatable. One per condition is always written.")
@click.option("--f-contrast", "f_contrast", multiple=True, metavar="NAME=EXPRESSION",
              help="GLM: an F contrast, rows separated by commas, e.g. faceOrHouse='faces, houses'; repeatable. "
              "effectsOfInterest (all conditions) is always written.")
@click.option("--model-file", type=click.Path(dir_okay=False, path_type=Path), metavar="MODEL.json",
              help="GLM: a BIDS Stats Models 1.0 file, run through pybids (bids.modeling): its transformations, "
              "design and contrasts replace the events.tsv conditions and --contrast; run, session and subject nodes "
              "at the participant level, dataset nodes at the group level (give it to both).")
@click.option("--glm-noise-model", type=click.Choice(["ar1", "ols"]), default="ar1", show_default=True,
              help="GLM inference: AR(1) prewhitening (per voxel and run) or ordinary least squares.")
@click.option("--signal-scaling", type=click.Choice(["psc", "none"]), default="psc", show_default=True,
              help="GLM: percent signal change (each voxel's mean per run) or none (BOLD units).")
@click.option("--run-model", type=click.Choice(["joint", "fixed-effects"]), default="joint", show_default=True,
              help="GLM: the runs of a session and task in one design (shared condition columns, each run its own "
              "intercept, confounds and AR(1)), or each run fitted on its own and the runs' contrasts combined by "
              "fixed effects (nilearn's FirstLevelModel on a list of runs, FitLins).")
@click.option("--run-weights", type=click.Choice(["equal", "precision"]), help="--run-model fixed-effects: every "
              "run counts equally (default; nilearn, SPM) or by its precision (FSL).")
@click.option("--condition-column", default="trial_type", show_default=True, metavar="NAME",
              help="GLM: the events.tsv column that names the conditions (one regressor per value).")
@click.option("--max-iterations", type=click.IntRange(min=1), help="Cap on iterative-solver steps (pRF and tuning "
              "fits, --hrf fit). Default: the solver's, 50 Levenberg-Marquardt steps (it stops earlier when the fit "
              "converges).")
@click.option("--alpha", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Ridge penalty on GLM weights.")
@click.option("--smoothing-fwhm", type=click.FloatRange(min=0), help="Spatial smoothing (mm), volume spaces only.")
@click.option("--min-rsquared", type=click.FloatRange(max=1), help="Group: blank each participant's voxels whose "
              "R² is below this before aggregating.")
@click.option("--min-cvrsquared", type=click.FloatRange(max=1), help="Group: blank each participant's voxels "
              "whose cross-validated R² is below this (with --min-rsquared, a voxel must pass both).")
@click.option("--weight-by-se", is_flag=True, help="Group: also the inverse-variance weighted mean of pRF and tuning "
              "parameters (weights 1/se² from the participants' desc-se maps) and its standard error.")
@click.option("--group-model", type=click.Choice(["mixed", "ols"]), default="mixed", show_default=True,
              help="Group: mixed effects using the participants' variance maps (REML, FLAME1-like; OLS where they "
              "are missing) or OLS.")
@click.option("--group-covariate", multiple=True, metavar="NAME",
              help="Group: a numeric participants.tsv column added to the group design (demeaned); repeatable.")
@click.option("--fdr-q", type=click.FloatRange(min=0, max=1, min_open=True), default=0.05, show_default=True,
              help="Group: false discovery rate of the FDR-thresholded z maps.")
@click.option("--cluster-extent", type=click.IntRange(min=1), default=10, show_default=True,
              help="Group, volumes: smallest cluster (voxels) of the cluster-extent maps, at one-sided p < 0.001.")
@click.option("--atlas", help="Group: label image (NIfTI, GIFTI with {hemi}, CIFTI dlabel) for ROI summaries; "
              "{subject} in the path for per-participant atlases (required for T1w/fsnative outputs).")
@click.option("--atlas-labels", type=click.Path(dir_okay=False, path_type=Path),
              help="Group: TSV with 'index' and 'name' columns naming the atlas labels (default: beside the image).")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Work folder (pybids index). Default: ./work")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="Where TensorFlow runs: every visible GPU when there is one (auto), the CPU only, or the GPUs "
              "(gpu: an error, exit 1, when none is visible).")
@click.option("--nthreads", type=click.IntRange(min=1),
              help="CPU threads for TensorFlow and BLAS (default: TensorFlow's choice; the images start BLAS at 1).")
@click.option("--memory-limit", default="auto", show_default=True,
              help="Working-memory budget of a fit beyond its data (e.g. 4GB; every stage tiles its voxels within "
                   "it). auto: a quarter of the memory the job can get (the machine's available memory, its cgroup "
                   "limit, SLURM's allocation, --mem), at most 2GB.")
@click.option("--mem", "--mem-mb", "--mem_mb", "mem",
              help="The memory the whole job may use, as fMRIPrep's --mem (a bare number is MB; 16GB, 16G also "
                   "work): the auto --memory-limit is derived from it.")
@click.option("--skip-bids-validation", is_flag=True, help="Skip the basic dataset checks.")
@click.option("--overwrite", is_flag=True, help="Refit subjects whose outputs exist.")
@click.option("--dry-run", is_flag=True, help="Participant level: list the fits it would run (runs, volumes, model, "
              "outputs) and exit, writing nothing.")
@click.option("--no-report", is_flag=True, help="Skip the HTML reports (OUTPUT_DIR/sub-X.html, group.html).")
@click.option("--seed", type=int, help="Random seed (TensorFlow and numpy).")
@click.option("-v", "--verbose", count=True, help="More messages (-vv for debug).")
@click.option("--config", type=click.Path(dir_okay=False), callback=_load_config, is_eager=True, expose_value=False,
              help="YAML or JSON file with any of these options; the command line wins.")
@click.version_option(__version__, "--version", prog_name="bids_encoder", message="%(prog)s %(version)s")
def cli(bids_dir, output_dir, analysis_level, **options):
    """Fit fMRI encoding models (GLM, pRF) on fMRIPrep outputs; write BIDS-Derivatives maps.

    The group level aggregates the participant outputs in OUTPUT_DIR (every task, space and model found, unless
    --task, --space or --model is given) into OUTPUT_DIR/group.
    """
    context = click.get_current_context()
    options["explicit"] = {name for name in ("space", "model", "decode_voxels", "decode_betas", "hrf")
                           if context.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    run_app(bids_dir, output_dir, analysis_level, options)


def run_app(bids_dir, output_dir, analysis_level, options):
    """Validate, then dispatch to the participant or group workflow."""
    if analysis_level not in LEVELS:
        raise AppError(f"Unknown analysis level {analysis_level!r}: use participant or group", 17)
    if options["dry_run"] and analysis_level == "group":
        raise AppError("--dry-run lists the fits of the participant level; the group level has none", 64)
    labels = _labels(options["participant_label"], "participant label", prefix="sub-")
    sessions = _labels(options["session_label"], "session label", prefix="ses-")
    runs = _labels(options["run"], "run label", prefix="run-")
    if any(not run.isdigit() for run in runs):
        raise AppError(f"Run labels must be integers, got {', '.join(runs)}", 64)
    if options["task"] is not None and not LABEL.match(options["task"]):
        raise AppError(f"Invalid task label {options['task']!r}", 64)
    if analysis_level == "participant" and options["hrf"] == "auto" and options["cv"] == "none":
        raise AppError("--hrf auto chooses by cross-validated R²: it cannot run with --cv none", 64)
    models = _models(options["model"])
    if analysis_level == "participant" and len(models) > 1 and options["cv"] == "none":
        raise AppError("Several --model values are compared by cross-validated R²: they cannot run with --cv none",
                       64)
    _check_decode(analysis_level, options, models)
    memory_limit = _memory_budget(options["memory_limit"], options["mem"])
    contrasts = _contrasts(options["contrast"], "--contrast")
    f_contrasts = _contrasts(options["f_contrast"], "--f-contrast", f_contrast=True)
    confound_parameters = _confound_parameters(options["confounds_param"])
    filters = _filters(options["bids_filter_file"])
    bids_dir, output_dir = _check_paths(bids_dir, output_dir, options["work_dir"])
    if not options["skip_bids_validation"]:
        _validate_dataset(bids_dir)
    log_path, log_handler = _setup_logging(options["verbose"])
    try:
        logger.info("bids_encoder %s: %s level on %s → %s", __version__, analysis_level, bids_dir, output_dir)
        _limit_threads(options["nthreads"])
        stats_model = _stats_model(options, models)
        if analysis_level == "group":
            _run_group(bids_dir, output_dir, labels, options, models, stats_model)
            return
        if options["device"] == "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = "-1"  # before TensorFlow loads
        from ..bids.layout import InputError

        with filtered_stderr():  # the workflows load TensorFlow
            from ..workflows.participant.options import ParticipantOptions
            from ..workflows.participant.run import run_participant

        work_dir = options["work_dir"] or Path.cwd() / "work"
        participant_options = ParticipantOptions(
            derivatives=options["derivatives"], participant_label=labels, session_label=sessions,
            task=options["task"], run=runs, filters=filters, space=options["space"], res=options["res"],
            model=models[0], models=models, hrf=options["hrf"], cv=options["cv"], confounds=options["confounds"],
            confounds_parameters=confound_parameters, noise_model=options["noise_model"],
            max_iterations=options["max_iterations"], alpha=options["alpha"],
            smoothing_fwhm=options["smoothing_fwhm"], work_dir=work_dir, memory_limit=memory_limit,
            overwrite=options["overwrite"], progressbar=sys.stderr.isatty(),
            seed=options["seed"], report=not options["no_report"], condition_column=options["condition_column"],
            stimulus_column=options["stimulus_column"],
            stimulus_period=None if options["stimulus_period"] is None else float(options["stimulus_period"]),
            nuisance_trial_types=tuple(options["nuisance_trial_type"]),
            positive_amplitude=options["positive_amplitude"], min_grid_rsquared=options["min_grid_rsquared"],
            contrasts=contrasts, f_contrasts=f_contrasts, glm_noise_model=options["glm_noise_model"],
            signal_scaling=options["signal_scaling"], decode=options["decode"], stats_model=stats_model,
            run_model=options["run_model"], run_weights=options["run_weights"],
            decode_voxels=options["decode_voxels"], decode_betas=options["decode_betas"],
            single_trial_types=tuple(options["single_trial_types"]), repeat_column=options["repeat_column"],
            single_trial_stages=_stages(options["single_trial_stages"]))
        try:
            from ..workflows.participant.options import check_model_options

            check_model_options(participant_options)
        except InputError as error:
            raise AppError(str(error), error.exit_code) from error
        if options["dry_run"]:
            _dry_run(bids_dir, output_dir, participant_options)
            return
        participant_options.device = _configure_device(options["device"], options["nthreads"])
        participant_options.memory_limit = _device_memory_limit(memory_limit, participant_options.device)
        if options["seed"] is not None:
            import tensorflow as tf

            tf.keras.utils.set_random_seed(options["seed"])  # Python, NumPy and TensorFlow
            tf.config.experimental.enable_op_determinism()  # same reduction orders: identical maps run to run
        records = []
        try:
            written = run_participant(bids_dir, output_dir, participant_options, records=records)
        except InputError as error:
            raise AppError(str(error), error.exit_code) from error
        from ..workflows.common.records import summary_table

        total = sum(len(paths) for paths in written.values())
        click.echo(summary_table(records), err=True)
        click.echo(f"bids_encoder: {len(written)} participant(s) done, {total} file(s) written under {output_dir}",
                   err=True)
    finally:
        _keep_log(log_path, log_handler, output_dir, analysis_level, labels, keep=not options["dry_run"])
        for handler in [h for h in logging.getLogger().handlers if getattr(h, "_bids_encoder", False)]:
            logging.getLogger().removeHandler(handler)  # the console's stream may be closed after the run


def _dry_run(bids_dir, output_dir, participant_options):
    """--dry-run: check the selection and list its fits; nothing is written in OUTPUT_DIR."""
    from ..bids.layout import InputError
    from ..workflows.participant.plan import _plan, dry_run_lines
    from ..workflows.stats_models.participant_nodes import planned_fits

    try:
        plan, _, layout = _plan(bids_dir, participant_options, output_dir)
        model = participant_options.stats_model
        fits = None if model is None else planned_fits(layout, model, plan, participant_options)
        lines = dry_run_lines(plan, output_dir, participant_options, fits)
    except InputError as error:
        raise AppError(str(error), error.exit_code) from error
    click.echo("\n".join(lines))
    click.echo(f"bids_encoder: dry run: {len(lines)} fit(s) planned; nothing written")


def _stats_model(options, models):
    """--model-file read and checked (None without it); its conflicts with other options are usage errors."""
    if options.get("model_file") is None:
        return None
    if models != ("glm",):
        raise AppError(f"--model-file defines a GLM; it cannot run with --model {','.join(models)}", 64)
    if options["decode"]:
        raise AppError("--decode decodes the 1-D tuning models; it cannot run with --model-file", 64)
    from ..bids.layout import InputError
    from ..bids.stats_models import read_stats_model

    try:
        model = read_stats_model(options["model_file"])
    except InputError as error:
        raise AppError(str(error), error.exit_code) from error
    explicit = options.get("explicit", set())
    if options["contrast"] or options["f_contrast"]:
        logger.warning("--model-file %s: its contrasts replace --contrast and --f-contrast", model.name)
    if "hrf" in explicit and model.convolves:
        logger.warning("--model-file %s convolves regressors itself: --hrf %s applies only to the event regressors "
                       "it does not convolve", model.name, options["hrf"])
    if options["run_model"] != "joint":
        logger.warning("--model-file %s: its run node's GroupBy says which runs are fitted together; --run-model %s "
                       "is not used (its subject node combines the runs)", model.name, options["run_model"])
    if options["group_covariate"]:
        logger.warning("--model-file %s: the group design is its dataset nodes' X; --group-covariate is not used "
                       "for it", model.name)
    return model


def _run_group(bids_dir, output_dir, labels, options, models, stats_model=None):
    from ..bids.layout import InputError

    with filtered_stderr():  # the workflows load TensorFlow
        from ..workflows.group.run import GroupOptions, run_group

    if options["atlas_labels"] is not None and options["atlas"] is None:
        raise AppError("--atlas-labels names the labels of an --atlas image: give --atlas too", 64)
    group_options = GroupOptions(
        participant_label=labels, task=options["task"],
        space=options["space"] if "space" in options["explicit"] else None,
        model=_group_models(models) if "model" in options["explicit"] else None,
        min_rsquared=options["min_rsquared"], min_cvrsquared=options["min_cvrsquared"], atlas=options["atlas"], atlas_labels=options["atlas_labels"],
        work_dir=options["work_dir"] or Path.cwd() / "work", report=not options["no_report"],
        group_model=options["group_model"], covariates=tuple(options["group_covariate"]),
        fdr_q=options["fdr_q"], cluster_extent=options["cluster_extent"], stats_model=stats_model,
        weight_by_se=options["weight_by_se"])
    try:
        written = run_group(bids_dir, output_dir, group_options)
    except InputError as error:
        raise AppError(str(error), error.exit_code) from error
    click.echo(f"bids_encoder: group level done, {len(written)} file(s) written under {output_dir / 'group'}",
               err=True)


def _stages(text):
    """--single-trial-stages: a comma-separated list (``none``: no stage) → a tuple."""
    parts = tuple(dict.fromkeys(part for part in str(text).replace(",", " ").split()))
    return () if parts == ("none",) else parts


def _models(values):
    """--model values, repeated or comma-separated → a tuple without repeats; unknown names are usage errors."""
    from ..workflows.fits.kinds import MODELS

    models = tuple(dict.fromkeys(part for value in values for part in str(value).replace(",", " ").split()))
    unknown = [model for model in models if model not in MODELS]
    if unknown or not models:
        raise AppError(f"Invalid value for '--model': {', '.join(map(repr, unknown)) or repr('')} (choose from "
                       f"{', '.join(MODELS)})", 64)
    return models


def _check_decode(analysis_level, options, models):
    """--decode: participant level, 1-D tuning models only; its settings only with it (usage errors, 64)."""
    from ..workflows.fits.kinds import MODEL_KINDS

    if not options["decode"]:
        given = [f"--{name.replace('_', '-')}" for name in ("decode_voxels", "decode_betas")
                 if name in options["explicit"]]
        if given:
            raise AppError(f"{', '.join(given)} set(s) the decoding: give --decode too", 64)
        return
    if analysis_level != "participant":
        raise AppError("--decode runs at the participant level (the group level summarises its accuracy)", 64)
    other = [model for model in models if MODEL_KINDS[model] != "tuning"]
    if other:
        raise AppError(f"--decode decodes the 1-D tuning models (gauss1d, loggauss1d, vonmises1d), not --model "
                       f"{', '.join(other)}", 64)


def _group_models(models):
    """The group level's --model filter: several models also select their comparison maps."""
    return list(models) + (["comparison"] if len(models) > 1 else [])


def _interrupted():
    """Exit code 130 for SIGINT (Ctrl-C), 143 for SIGTERM, with one line on what was kept."""
    name = received() or "SIGINT"
    click.echo(f"bids_encoder: interrupted ({name}); finished outputs are kept, unfinished ones removed; "
               "a re-run resumes", err=True)
    return 143 if name == "SIGTERM" else 130


def main(argv=None):
    """Console entry point: runs the command and turns every failure into one line and an exit code."""
    argv = _expand_lists(list(sys.argv[1:] if argv is None else argv))
    with handling_signals():
        return _run(argv)


def console():
    """The ``bids_encoder`` command and ``python -m bids_encoder``: :func:`main`, then the process ends at once
    with its exit code (output flushed, logging shut down) instead of tearing down the interpreter: TensorFlow's
    runtime, thousands of modules and the fit's large arrays took 1.2–1.5 s to finalise after the work was done."""
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be written anyway
            pass
    os._exit(code)


def _run(argv):
    try:
        code = cli.main(args=argv, prog_name="bids_encoder", standalone_mode=False)
        if received():  # a signal whose exception a finaliser swallowed after the pipeline's last check
            return _interrupted()
        return code if isinstance(code, int) else 0
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.exceptions.UsageError as error:
        click.echo(f"bids_encoder: error: {' '.join(error.format_message().split())} (see --help)", err=True)
        return 64
    except click.exceptions.Abort:  # click turns KeyboardInterrupt (and our SIGTERM) into Abort
        return _interrupted()
    except AppError as error:
        click.echo(f"bids_encoder: error: {' '.join(str(error).split())}", err=True)
        return error.exit_code
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as error:  # noqa: BLE001 - the one place that reports unexpected failures
        logger.debug("Unexpected error", exc_info=True)
        click.echo(f"bids_encoder: error: {type(error).__name__}: {' '.join(str(error).split())}", err=True)
        return 1


if __name__ == "__main__":
    console()
