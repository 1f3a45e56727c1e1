"""The options of the participant level (:class:`ParticipantOptions`, filled by the command line) and the usage
checks of ``--model`` and the options that go with it (exit 64)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..._memory import default_memory_limit
from ...bids.layout import InputError
from ..fits.kinds import MODEL_KINDS, MODELS, SINGLE_TRIAL_STAGES

logger = logging.getLogger(__name__)


@dataclass
class ParticipantOptions:
    """Options of the participant level (the CLI fills them; defaults are the CLI's)."""

    derivatives: Path | None = None
    participant_label: tuple = ()
    session_label: tuple = ()
    task: str | None = None
    run: tuple = ()
    filters: dict = field(default_factory=dict)
    space: str = "MNI152NLin2009cAsym"
    res: str | None = None
    model: str = "glm"
    hrf: str = "canonical"
    cv: str = "auto"
    confounds: str = "motion,high_pass,wm_csf"
    confounds_parameters: dict = field(default_factory=dict)
    noise_model: str = "ssq"
    max_iterations: int | None = None
    alpha: float = 0.0
    smoothing_fwhm: float | None = None
    work_dir: Path | None = None
    memory_limit: int = field(default_factory=default_memory_limit)  # bytes beyond the data (bids_encoder._memory)
    overwrite: bool = False
    progressbar: bool = True
    device: str = "CPU"
    seed: int | None = None
    report: bool = True
    condition_column: str = "trial_type"  # the events.tsv column naming the GLM's conditions
    models: tuple = ()  # several models on the same inputs (model comparison); () means (model,)
    stimulus_column: str | None = None  # 1-D tuning models: the events.tsv column with each event's value
    stimulus_period: float | None = None  # vonmises1d: the period of the values, degrees
    nuisance_trial_types: tuple = ()  # 1-D tuning models: trial types entered as nuisance regressors
    positive_amplitude: bool = False  # pRF and tuning models: amplitudes constrained positive
    min_grid_rsquared: float | None = None  # pRF and tuning models: the grid-R² gate of LM (None: MIN_GRID_R2)
    decode: bool = False  # 1-D tuning models: leave-one-run-out decoding of the stimulus (workflows.decoding)
    decode_voxels: int = 200  # voxels per decoding fold
    decode_betas: str = "lsa"  # single-trial responses: 'lsa', 'lss' or 'singletrial'
    single_trial_types: tuple = ()  # singletrial: the trial types whose events are single trials (default: all)
    repeat_column: str | None = None  # singletrial: the events.tsv column naming what repeats (default: conditions)
    single_trial_stages: tuple = SINGLE_TRIAL_STAGES  # singletrial: the stages on

    @property
    def model_list(self):
        """The models to fit, in order, without repeats."""
        return list(dict.fromkeys(self.models or (self.model,)))
    contrasts: tuple = ()  # GLM: (name, expression) t contrasts beside one per condition
    f_contrasts: tuple = ()  # GLM: (name, "a, b, …") F contrasts beside effectsOfInterest
    glm_noise_model: str = "ar1"  # GLM inference: ar1 or ols
    signal_scaling: str = "psc"  # GLM: psc (percent signal change per run) or none
    stats_model: object = None  # a bids.stats_models.StatsModel (--model-file): its nodes replace the GLM's design
    run_model: str = "joint"  # GLM: joint (the runs share their conditions' columns) or fixed-effects (per run)
    run_weights: str | None = None  # --run-model fixed-effects: equal (default) or precision


STIMULUS_PERIODS = (180.0, 360.0)


def check_model_options(options):
    """Usage errors (64) of --model and the options of the tuning models."""
    models = options.model_list
    unknown = [model for model in models if model not in MODELS]
    if unknown:
        raise InputError(f"Unknown model {', '.join(map(repr, unknown))}; choose from {', '.join(MODELS)}",
                         exit_code=64)
    tuning = [model for model in models if MODEL_KINDS[model] == "tuning"]
    if tuning and not options.stimulus_column:
        raise InputError(f"--model {', '.join(tuning)} needs --stimulus-column (the events.tsv column with each "
                         "event's stimulus value)", exit_code=64)
    if "vonmises1d" in models and options.stimulus_period not in STIMULUS_PERIODS:
        raise InputError("--model vonmises1d needs --stimulus-period 180 (orientation) or 360 (direction, "
                         "degrees)", exit_code=64)
    if options.nuisance_trial_types and not tuning:
        raise InputError("--nuisance-trial-type adds nuisance regressors to the 1-D tuning models "
                         "(gauss1d, loggauss1d, vonmises1d); the GLM models every trial type already", exit_code=64)
    if len(models) > 1 and options.cv == "none":
        raise InputError("Several --model values are compared by cross-validated R²: they cannot run with "
                         "--cv none", exit_code=64)
    if "singletrial" in models and len(models) > 1:
        raise InputError("--model singletrial estimates one response per event; it is not compared with other models "
                         "(fit it on its own)", exit_code=64)
    if "singletrial" in models and options.hrf != "canonical":
        raise InputError(f"--model singletrial chooses each voxel's HRF from its library (--single-trial-stages hrf); "
                         f"--hrf {options.hrf} does not apply to it", exit_code=64)
    unknown_stages = [s for s in options.single_trial_stages if s not in SINGLE_TRIAL_STAGES]
    if unknown_stages:
        raise InputError(f"--single-trial-stages: unknown stage(s) {', '.join(unknown_stages)} (choose from "
                         f"{', '.join(SINGLE_TRIAL_STAGES)}, or none)", exit_code=64)
    single = "singletrial" in models or (options.decode and options.decode_betas == "singletrial")
    if not single and (options.single_trial_types or options.repeat_column
                       or tuple(options.single_trial_stages) != SINGLE_TRIAL_STAGES):
        raise InputError("--single-trial-types, --repeat-column and --single-trial-stages set the single-trial "
                         "model: give --model singletrial (or --decode-betas singletrial)", exit_code=64)
    if options.run_model == "fixed-effects" and "glm" not in models and options.stats_model is None:
        raise InputError(f"--run-model fixed-effects combines the runs of GLM fits; --model {', '.join(models)} "
                         "fits its runs jointly", exit_code=64)
    if options.run_weights is not None and options.run_model != "fixed-effects":
        raise InputError("--run-weights weighs the runs of --run-model fixed-effects: give that too", exit_code=64)
    if options.decode and len(tuning) < len(models):
        raise InputError(f"--decode decodes the 1-D tuning models (gauss1d, loggauss1d, vonmises1d), not --model "
                         f"{', '.join(m for m in models if m not in tuning)}", exit_code=64)
