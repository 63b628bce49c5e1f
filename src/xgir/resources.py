"""What a run may ask of the machine: memory and worker processes, checked before the work
with one line, rather than the kernel killing the process or a fork of thousands of workers."""

from __future__ import annotations

import os
from pathlib import Path

from xgir.errors import XgirError, warn

MEMORY_SHARE = 0.5  # a single array (or batch) may take at most this share of the machine's memory


def machine_memory() -> int:
    """Bytes of physical memory (``os.sysconf``), or the container's limit when lower (cgroup v2
    ``memory.max``)."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def check_memory(nbytes: float, what: str, fix: str) -> None:
    """XgirError when ``nbytes`` (an estimate of what ``what`` needs) is more than
    :data:`MEMORY_SHARE` of the machine's memory; ``fix`` says what to lower.

    >>> check_memory(1024, "a tiny array", "lower it")
    """
    allowed = MEMORY_SHARE * machine_memory()
    if nbytes > allowed:
        raise XgirError(f"{what} needs about {_gib(nbytes)} of memory, more than half of this machine's "
                        f"{_gib(machine_memory())}; {fix}")


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB" if nbytes < 2**60 else f"{nbytes / 2**30:.2e} GiB"


def cap_workers(workers: int, option: str = "--workers") -> int:
    """``workers`` (worker processes), at most the CPU count: more is capped with a warning line;
    below 0 is an XgirError."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise XgirError(f"{option} must be 0 or more, got {workers!r}")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers > cpus:
        warn(f"{option} {workers} is more than the {cpus} CPUs here; using {cpus}")
        return cpus
    return workers
