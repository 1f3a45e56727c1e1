"""The memory a fit may use: what this process can get (the machine's available memory, its cgroup's limit,
SLURM's allocation), and the default working-memory budget of the fitters derived from it.

``memory_limit`` (library) and ``--memory-limit`` (app) are the budget of a fit's working set beyond its input
data: every stage (grid, baseline/amplitude refinement, Levenberg–Marquardt, standard errors, cross-validation,
predictions, the GLM's inference) tiles its voxels (and grid points) to stay within it. Without one, the budget is
a quarter of the memory this process can get, at most :data:`MAX_DEFAULT` (larger tiles no longer speed anything
up) and at least :data:`MIN_DEFAULT`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["MAX_DEFAULT", "MIN_DEFAULT", "available_memory", "default_memory_limit", "resolve_memory_limit"]

MAX_DEFAULT = 2_000_000_000
MIN_DEFAULT = 256_000_000
_FRACTION = 0.25


def _read(path):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _meminfo_available():
    text = _read("/proc/meminfo")
    if text is None:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) * 1024 if match else None


def _cgroup_headroom():
    """Bytes left under this process's cgroup limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``), or None."""
    text = _read("/proc/self/cgroup") or ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":  # cgroup v2
            folder = Path("/sys/fs/cgroup") / path.lstrip("/")
            limit, used = _read(folder / "memory.max"), _read(folder / "memory.current")
        elif "memory" in controllers.split(","):  # cgroup v1
            folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            limit, used = _read(folder / "memory.limit_in_bytes"), _read(folder / "memory.usage_in_bytes")
        else:
            continue
        if limit and limit.isdigit() and int(limit) < 2**60:
            return max(0, int(limit) - int(used or 0))
    return None


def _rss():
    text = _read("/proc/self/statm")
    return int(text.split()[1]) * os.sysconf("SC_PAGE_SIZE") if text else 0


def _slurm_headroom():
    """Bytes left of SLURM's allocation (``SLURM_MEM_PER_NODE``, or ``SLURM_MEM_PER_CPU`` × CPUs; MB), or None."""
    per_node = os.environ.get("SLURM_MEM_PER_NODE")
    per_cpu = os.environ.get("SLURM_MEM_PER_CPU")
    cpus = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or "1"
    try:
        if per_node:
            allocated = int(per_node) * 2**20
        elif per_cpu:
            allocated = int(per_cpu) * int(cpus) * 2**20
        else:
            return None
    except ValueError:
        return None
    return max(0, allocated - _rss())


def available_memory(total=None):
    """The memory (bytes) this process can still get: the least of the machine's available memory, its cgroup's
    headroom, SLURM's allocation less what the process holds, and ``total`` (a job's memory, as fMRIPrep's
    ``--mem``) less what it holds; None when none can be read."""
    candidates = [_meminfo_available(), _cgroup_headroom(), _slurm_headroom()]
    if total is not None:
        candidates.append(max(0, int(total) - _rss()))
    known = [value for value in candidates if value is not None]
    return min(known) if known else None


def default_memory_limit(total=None):
    """A quarter of :func:`available_memory` (``total``: the job's memory), between :data:`MIN_DEFAULT` and
    :data:`MAX_DEFAULT` (2 GB when nothing can be read)."""
    available = available_memory(total)
    if available is None:
        return MAX_DEFAULT
    return int(min(MAX_DEFAULT, max(MIN_DEFAULT, _FRACTION * available)))


def resolve_memory_limit(memory_limit):
    """``memory_limit`` in bytes as an int, or the machine's default for None."""
    if memory_limit is None:
        return default_memory_limit()
    memory_limit = int(memory_limit)
    if memory_limit <= 0:
        raise ValueError(f"memory_limit must be a positive number of bytes, got {memory_limit}")
    return memory_limit
