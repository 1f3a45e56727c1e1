"""Helpers of the command line: option parsing, --config, thread limits, logging and log files."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

from .._memory import default_memory_limit
from .._tensorflow import gpu_free_memory, start_tensorflow

LEVELS = ("participant", "group")
LIST_OPTIONS = ("--participant-label", "--participant_label", "--session-label", "--session_label", "--run")
LABEL = re.compile(r"^[A-Za-z0-9]+$")
PROGRESS_LOGGER = "bids_encoder.progress"  # bids_encoder.workflows.common.records.PROGRESS
KEEP_LOGS = 10  # OUTPUT_DIR/logs keeps the newest logs of each level


class AppError(Exception):
    """An error reported on one line with an exit code."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def _expand_lists(argv):
    """BIDS-Apps write ``--participant-label 01 02``; click wants one value per flag: repeat the flag."""
    expanded, current = [], None
    for token in argv:
        if token in LIST_OPTIONS:
            current = token
            expanded.append(token)
            continue
        if current and not token.startswith("-") and expanded[-1] != current:
            expanded.append(current)
        elif token.startswith("-"):
            current = None
        expanded.append(token)
    return expanded


def _labels(values, what, prefix=""):
    labels = []
    for value in values:
        for part in str(value).replace(",", " ").split():
            label = part[len(prefix):] if prefix and part.startswith(prefix) else part
            if not LABEL.match(label):
                raise AppError(f"Invalid {what} {part!r}: labels are alphanumeric (no '/', '..', '_' or '-')", 64)
            labels.append(label)
    return tuple(labels)


def _memory(text, option="--memory-limit", bare=1):
    """Bytes of a memory size (``4GB``, ``500MB``, ``16G``; a bare number is ``bare`` bytes)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)[bB]?\s*", str(text))
    if not match:
        unit = "a number of bytes" if bare == 1 else "a number of MB"
        raise AppError(f"Invalid {option} {text!r}: use for example 4GB, 500MB or {unit}", 64)
    factor = {"": bare, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[match.group(2).lower()]
    value = int(float(match.group(1)) * factor)
    if value < 10_000_000:
        raise AppError(f"{option} {text} is too small (at least 10MB)", 64)
    return value


def _memory_budget(memory_limit, mem=None):
    """The working-memory budget of a fit (bytes): ``--memory-limit``, or for ``auto`` the machine's default,
    derived from ``--mem`` (the job's memory, fMRIPrep's spelling: a bare number is MB) when it is given."""
    total = None if mem is None else _memory(mem, "--mem", bare=1_000_000)
    if str(memory_limit).strip().lower() != "auto":
        return _memory(memory_limit)
    return default_memory_limit(total)


def _parameter_value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _confound_parameters(values):
    parameters = {}
    for item in values:
        if "=" not in item:
            raise AppError(f"Invalid --confounds-param {item!r}: use NAME=VALUE, e.g. fd_threshold=0.5", 64)
        key, value = item.split("=", 1)
        parameters[key.strip()] = _parameter_value(value.strip())
    return parameters


def _filters(path):
    if path is None:
        return {}
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise AppError(f"--bids-filter-file {path} is not readable JSON: {' '.join(str(error).split())}", 64) from error
    if not isinstance(content, dict):
        raise AppError(f"--bids-filter-file {path} must hold a JSON object of pybids filters", 64)
    if isinstance(content.get("bold"), dict):  # fMRIPrep's format: one entry per query
        content = content["bold"]
    return {key: value for key, value in content.items() if key not in ("datatype", "suffix", "extension")}


def _load_config(ctx, _param, value):
    """--config: YAML or JSON with any option (dashes or underscores); the command line wins."""
    if value is None:
        return None
    try:
        text = Path(value).read_text()
        if value.endswith(".json"):
            content = json.loads(text)
        else:
            import yaml

            content = yaml.safe_load(text)
    except Exception as error:
        raise click.BadParameter(f"cannot read {value}: {' '.join(str(error).split())}") from error
    if not isinstance(content, dict):
        raise click.BadParameter(f"{value} must hold a mapping of option names to values")
    names = {p.name for p in ctx.command.params}
    content = {str(key).replace("-", "_"): item for key, item in content.items()}
    unknown = sorted(set(content) - names)
    if unknown:
        raise click.BadParameter(f"unknown option(s) in {value}: {', '.join(unknown)}")
    ctx.default_map = {**(ctx.default_map or {}), **content}
    return value


def _limit_threads(nthreads):
    """--nthreads: the BLAS/OpenMP pools of numpy and scipy (already loaded, hence threadpoolctl) and children."""
    if not nthreads:
        return
    from threadpoolctl import threadpool_limits

    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(nthreads)
    threadpool_limits(limits=nthreads)


def _configure_device(device, nthreads):
    """Start TensorFlow on the device (--device cpu hid the GPUs before it loaded); returns 'GPU' or 'CPU'."""
    _, gpus = start_tensorflow(nthreads)
    if device == "gpu" and not gpus:
        raise AppError("--device gpu: TensorFlow sees no GPU (check the driver, and --gpus all / --nv)", 1)
    return "GPU" if gpus else "CPU"


def _device_memory_limit(memory_limit, device):
    """--memory-limit, capped on a GPU at 80 % of the free memory of the least free GPU (each GPU holds one chunk
    at a time): a chunk planned for the host's memory would not fit a smaller GPU."""
    if device != "GPU":
        return memory_limit
    free = gpu_free_memory()
    if free is None:
        return memory_limit
    cap = int(0.8 * free)
    if cap < memory_limit:
        logging.getLogger("bids_encoder").info("--memory-limit %d MB capped at %d MB (80 %% of the GPU's free "
                                               "memory)", memory_limit // 10**6, cap // 10**6)
        return cap
    return memory_limit


class _ConsoleFormatter(logging.Formatter):
    """Progress lines (one per fit) as plain ``bids_encoder: …`` lines; the rest with time, level and logger."""

    def format(self, record):
        if record.name == PROGRESS_LOGGER and record.levelno == logging.INFO:
            return f"bids_encoder: {record.getMessage()}"
        return super().format(record)


def _setup_logging(verbose):
    """Console at WARNING (INFO with -v, DEBUG with -vv) plus the progress lines; everything at DEBUG in a
    temporary log file."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        if getattr(handler, "_bids_encoder", False):
            root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    threshold = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    console.setLevel(min(threshold, logging.INFO))
    console.addFilter(lambda record: record.levelno >= threshold or record.name == PROGRESS_LOGGER)
    console.setFormatter(_ConsoleFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handle, log_path = tempfile.mkstemp(prefix="bids_encoder-", suffix=".log")
    os.close(handle)
    logfile = logging.FileHandler(log_path)
    logfile.setLevel(logging.DEBUG)
    logfile.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for handler in (console, logfile):
        handler._bids_encoder = True
        root.addHandler(handler)
    for noisy in ("bidsschematools", "matplotlib", "h5py", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return Path(log_path), logfile


def _keep_log(log_path, handler, output_dir, level, labels, keep=True):
    """Move the run's log to OUTPUT_DIR/logs once the output dataset exists (never create it for a log), and
    remove that level's logs beyond the newest :data:`KEEP_LOGS`; ``keep=False`` (``--dry-run``) drops it."""
    handler.close()
    logging.getLogger().removeHandler(handler)
    if keep and (output_dir / "dataset_description.json").is_file():
        folder = output_dir / "logs"
        folder.mkdir(exist_ok=True)
        who = "_".join(f"sub-{label}" for label in labels[:3]) or "all"
        target = folder / f"{level}_{who}_{time.strftime('%Y%m%dT%H%M%S')}_{os.getpid()}.log"
        shutil.move(str(log_path), target)
        _prune_logs(folder, level)
    else:
        log_path.unlink(missing_ok=True)


def _prune_logs(folder, level, keep=KEEP_LOGS):
    """Remove the logs of ``level`` beyond the newest ``keep`` (by modification time; concurrent jobs may have
    removed some already)."""
    logs = sorted(folder.glob(f"{level}_*.log"), key=lambda path: (path.stat().st_mtime, path.name), reverse=True)
    for path in logs[keep:]:
        path.unlink(missing_ok=True)


def _contrasts(values, option, f_contrast=False):
    """``NAME=EXPRESSION`` values of --contrast / --f-contrast → ((name, expression), …), syntax checked (64)."""
    from ..inference.contrasts import ContrastError, check_name, check_syntax

    parsed = []
    for value in values:
        name, equals, expression = str(value).partition("=")
        try:
            if not equals or not expression.strip():
                raise ContrastError(f"expected NAME=EXPRESSION, got {value!r}")
            check_name(name.strip())
            check_syntax(expression, f_contrast=f_contrast)
        except ContrastError as error:
            raise AppError(f"{option}: {error}", 64) from error
        parsed.append((name.strip(), expression.strip()))
    return tuple(parsed)


def _check_paths(bids_dir, output_dir, work_dir):
    bids_dir, output_dir = bids_dir.resolve(), output_dir.resolve()
    if not bids_dir.is_dir():
        raise AppError(f"BIDS_DIR {bids_dir} does not exist", 66)
    if output_dir == bids_dir or (bids_dir in output_dir.parents
                                  and output_dir.relative_to(bids_dir).parts[0] != "derivatives"):
        raise AppError(f"OUTPUT_DIR {output_dir} must not be BIDS_DIR or inside it (BIDS_DIR/derivatives/<name> "
                       "is allowed)", 64)
    if work_dir is not None and bids_dir in work_dir.resolve().parents:
        raise AppError(f"--work-dir {work_dir} must not be inside BIDS_DIR", 64)
    existing = output_dir
    while not existing.exists():
        existing = existing.parent
    try:  # a real write, not os.access: root passes os.access on read-only mounts
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".bids_encoder-write-test-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise AppError(f"Cannot create or write OUTPUT_DIR {output_dir} ({error.strerror or error})", 73) from error
    return bids_dir, output_dir


def _validate_dataset(bids_dir):
    description = bids_dir / "dataset_description.json"
    if not description.is_file():
        raise AppError(f"BIDS_DIR {bids_dir} is not a BIDS dataset (no dataset_description.json)", 16)
    try:
        content = json.loads(description.read_text())
    except json.JSONDecodeError as error:
        raise AppError(f"{description} is not valid JSON: {error}", 16) from error
    missing = [key for key in ("Name", "BIDSVersion") if key not in content]
    if missing:
        raise AppError(f"{description} lacks required field(s) {', '.join(missing)}", 16)
    if not any(path.is_dir() for path in bids_dir.glob("sub-*")):
        raise AppError(f"BIDS_DIR {bids_dir} has no sub-* folder", 16)
