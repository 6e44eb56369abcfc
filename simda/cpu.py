"""CPU thread policy: keep torch's OpenMP threads from spinning on cores another job needs.

At the end of every parallel region OpenMP's threads spin before they sleep (libgomp: 300,000
turns). On a machine shared with another job (a second ``simda`` run, a notebook, a test
runner, the other ranks of ``torchrun``) those spins take the cores the other job's threads
are waiting for, and both slow down 5-75x. The policy:

- OpenMP wait policy ``PASSIVE`` (threads sleep at once), unless ``OMP_WAIT_POLICY`` is set;
- intra-op threads: ``SIMDA_CPU_THREADS`` when set (always wins); else, with more than one
  process on this machine (``LOCAL_WORLD_SIZE`` > 1, as under ``torchrun``) and
  ``OMP_NUM_THREADS`` unset or 1, the available cores / local world size (at least 1);
  else left alone. torchrun sets ``OMP_NUM_THREADS=1`` itself when it is unset, so a 1 there
  cannot be told from a user's 1: ``SIMDA_CPU_THREADS=1`` asks for one thread.

The ``simda`` commands apply it before torch is imported; ``import simda`` changes nothing, and
``cpu_threads()`` applies it in a program or notebook. OpenMP reads the wait policy once, when
torch is imported: later changes have no effect (the thread count can change at any time).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping

from simda.errors import SimDAError

#: what this process's policy set, by ``cpu_threads()``: {"wait_policy": "simda",
#: "threads": why}; read by ``collect()`` to say who set what is in force
_applied: dict[str, str] = {}


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise SimDAError(f"{name}={text!r}: expected a positive integer (a thread count)")
    return value


def local_world_size(environ: Mapping[str, str]) -> int:
    """Processes of this job on this machine: ``LOCAL_WORLD_SIZE`` (set by torchrun), else 1."""
    text = environ.get("LOCAL_WORLD_SIZE")
    return 1 if text is None else _positive_int("LOCAL_WORLD_SIZE", text)


def planned_threads(environ: Mapping[str, str], cores: int) -> tuple[int | None, str]:
    """The intra-op thread count the policy sets for this environment (None: leave it) and
    why: ``"SIMDA_CPU_THREADS"`` or ``"torchrun split"``."""
    override = environ.get("SIMDA_CPU_THREADS")
    if override is not None:
        return _positive_int("SIMDA_CPU_THREADS", override), "SIMDA_CPU_THREADS"
    world = local_world_size(environ)
    if world > 1 and environ.get("OMP_NUM_THREADS", "1").strip() == "1":
        return max(1, cores // world), "torchrun split"
    return None, ""


def cpu_threads(threads: int | None = None) -> None:
    """Apply simda's CPU thread policy to this process, as the ``simda`` commands do.

    Call it first thing in a notebook or script that shares the machine with other jobs
    (another ``simda`` run, a second notebook, a test runner), before anything imports torch.

    Args:
        threads: intra-op threads for this process (positive); None follows the policy:
            ``SIMDA_CPU_THREADS``, else the torchrun split, else torch's default.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is set. Once torch is imported OpenMP has read
    its wait policy, so then this warns and sets only the thread count.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)):
        raise TypeError(f"threads must be an int or None, got {type(threads).__name__}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be a positive thread count, got {threads}")
    torch_loaded = "torch" in sys.modules
    count, why = (
        (threads, "cpu_threads(threads=...)")
        if threads is not None
        else planned_threads(os.environ, available_cores())
    )
    if "OMP_WAIT_POLICY" not in os.environ:
        if torch_loaded:
            warnings.warn(
                "torch was imported before simda.cpu_threads(): OpenMP's wait policy is fixed "
                "for this process (threads spin at every barrier); call it before importing "
                "torch, or start Python with OMP_WAIT_POLICY=PASSIVE",
                stacklevel=2,
            )
        else:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
            _applied["wait_policy"] = "simda"
    if count is not None:
        if torch_loaded:
            import torch

            torch.set_num_threads(count)
        else:
            # read when torch loads OpenMP (and by MKL's OpenMP threading)
            os.environ["OMP_NUM_THREADS"] = str(count)
        _applied["threads"] = why


def collect() -> dict:
    """The policy in force, as plain data (``simda env`` reports it). Imports torch.

    ``wait_policy_set_by``: "user", "simda" or "default" (unset). ``threads_set_by``: what
    chose the intra-op thread count: "SIMDA_CPU_THREADS", "torchrun split",
    "cpu_threads(threads=...)" (those three applied by simda), "OMP_NUM_THREADS" or "default".
    """
    import torch

    policy = os.environ.get("OMP_WAIT_POLICY")
    if "threads" in _applied:
        threads_by = _applied["threads"]
    elif "OMP_NUM_THREADS" in os.environ:
        threads_by = "OMP_NUM_THREADS"
    else:
        threads_by = "default"
    return {
        "wait_policy": policy,
        "wait_policy_set_by": _applied.get("wait_policy")
        or ("user" if policy is not None else "default"),
        "intra_op_threads": torch.get_num_threads(),
        "threads_set_by": threads_by,
        "cores": available_cores(),
        "local_world_size": local_world_size(os.environ),
    }


def describe(info: dict) -> str:
    """``collect()``'s dict as ``simda env``'s line."""
    if info["wait_policy"] is None:
        wait = "OpenMP's default (threads spin before they sleep)"
    else:
        wait = f"{info['wait_policy']} (set by {info['wait_policy_set_by']})"
    world = info["local_world_size"]
    why = {
        "torchrun split": f"{info['cores']} cores / {world} processes, set by simda",
        "default": "torch's default",
    }.get(info["threads_set_by"], info["threads_set_by"])
    return (
        f"CPU: {info['cores']} cores available, local world size {world}; "
        f"{info['intra_op_threads']} intra-op threads ({why}); OpenMP wait policy: {wait}"
    )
