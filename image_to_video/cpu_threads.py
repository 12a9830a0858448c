"""Torch's CPU threads, chosen on purpose: ``model.cpu_threads`` and ``model.cpu_wait_policy``.

Torch starts as many OpenMP threads as the machine has cores, and they spin at every barrier while
they wait for each other. On a small machine whose cores also run the server's event loop, the
page, ffmpeg or other programs, a spinning thread takes the core another needs and one video can
take thirty times longer (docs/PERFORMANCE.md, "CPU threads", has the measurements and the command
that repeats them). So the app sets the thread count itself, shares the cores between the workers
of one machine, and tells OpenMP how its idle threads wait.

The wait policy is read by OpenMP once, when torch is imported: ``prepare_environment`` must run
before the first ``import torch`` of the process (the command line does it first thing), and the
worker processes it spawns inherit it. The thread count is set with ``torch.set_num_threads`` when
the app is built (``apply``), before the model loads.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: The environment variable OpenMP reads it from, when torch is imported.
WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"


@dataclass(frozen=True)
class ThreadPlan:
    """How many torch threads each worker process on this machine gets, and why (for the log)."""

    threads: int
    why: str


def machine_cores() -> int:
    """The cores this process may run on (a container's or ``taskset``'s limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def plan(setting: str, *, workers: int = 1, cores: int | None = None,
         env: MutableMapping[str, str] | None = None) -> ThreadPlan:
    """The threads of each of ``workers`` processes on this machine for ``model.cpu_threads``.

    ``setting`` is "auto" or a whole number: the threads of the whole machine, shared between its
    workers (each gets at least one). "auto" is ``OMP_NUM_THREADS`` when the environment sets it
    (whoever set it meant it), else every core of this machine.
    """
    env = os.environ if env is None else env
    cores = cores or machine_cores()
    asked = env.get("OMP_NUM_THREADS", "").strip()
    if setting != "auto":
        total, why = int(setting), f"model.cpu_threads {setting}"
    elif asked.isdigit() and int(asked) > 0:
        total, why = int(asked), f"OMP_NUM_THREADS={int(asked)}"
    else:
        total, why = cores, f"auto: {cores} core(s)"
    threads = max(1, total // max(1, workers))
    if workers > 1:
        why += f", shared by {workers} workers"
    return ThreadPlan(threads, why)


def prepare_environment(wait_policy: str, env: MutableMapping[str, str] | None = None) -> str:
    """Set ``OMP_WAIT_POLICY`` for this process and the processes it starts, unless the environment
    already sets it; returns the policy in force. Call it before torch is imported: OpenMP reads the
    variable once, when torch loads it."""
    env = os.environ if env is None else env
    if WAIT_POLICY_VARIABLE not in env and wait_policy != "default":
        env[WAIT_POLICY_VARIABLE] = wait_policy.upper()
        if "torch" in sys.modules:
            log.warning("OMP_WAIT_POLICY was set after torch was imported: it applies to the worker "
                        "processes this one starts, not to this one")
    return wait_policy_in_force(env)


def wait_policy_in_force(env: MutableMapping[str, str] | None = None) -> str:
    """The OpenMP wait policy of this process's environment: passive, active, or default (none set)."""
    return (os.environ if env is None else env).get(WAIT_POLICY_VARIABLE, "default").lower()


def apply(thread_plan: ThreadPlan, *, who: str = "this process") -> None:
    """Give torch ``thread_plan.threads`` threads in this process, and log it."""
    import torch

    torch.set_num_threads(thread_plan.threads)
    log.info("CPU threads for %s: %d (%s); OpenMP wait policy: %s", who, torch.get_num_threads(),
             thread_plan.why, wait_policy_in_force())
