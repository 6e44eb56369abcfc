"""The CPU thread policy (simda.cpu): its rules, the Python API, and what a fresh ``simda``
process and a plain ``import simda`` leave in force, read back from OpenMP itself."""

import glob
import json
import os
import re
import subprocess
import sys
import warnings

import pytest
import torch

from simda import cpu
from simda.errors import SimDAError

#: the variables the policy reads; removed from every child process's environment
POLICY_VARS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "SIMDA_CPU_THREADS", "LOCAL_WORLD_SIZE")
CORES = cpu.available_cores()


@pytest.mark.parametrize(
    "environ, cores, expected",
    [
        ({}, 8, (None, "")),
        ({"OMP_NUM_THREADS": "1"}, 8, (None, "")),  # one process: the 1 is the user's
        ({"LOCAL_WORLD_SIZE": "1", "OMP_NUM_THREADS": "1"}, 8, (None, "")),
        ({"LOCAL_WORLD_SIZE": "4", "OMP_NUM_THREADS": "1"}, 8, (2, "torchrun split")),
        ({"LOCAL_WORLD_SIZE": "3"}, 8, (2, "torchrun split")),
        ({"LOCAL_WORLD_SIZE": "16", "OMP_NUM_THREADS": " 1"}, 8, (1, "torchrun split")),
        ({"LOCAL_WORLD_SIZE": "4", "OMP_NUM_THREADS": "3"}, 8, (None, "")),  # the user's 3
        ({"SIMDA_CPU_THREADS": "1", "LOCAL_WORLD_SIZE": "4"}, 8, (1, "SIMDA_CPU_THREADS")),
        ({"SIMDA_CPU_THREADS": "5", "OMP_NUM_THREADS": "2"}, 8, (5, "SIMDA_CPU_THREADS")),
    ],
)
def test_planned_threads(environ, cores, expected):
    assert cpu.planned_threads(environ, cores) == expected


@pytest.mark.parametrize("name", ["SIMDA_CPU_THREADS", "LOCAL_WORLD_SIZE"])
@pytest.mark.parametrize("value", ["0", "-2", "two", ""])
def test_bad_counts_in_the_environment_are_named(name, value):
    with pytest.raises(SimDAError, match=f"{name}='{value}': expected a positive integer"):
        cpu.planned_threads({name: value}, 8)


@pytest.mark.parametrize(
    "threads, error", [(0, ValueError), (-1, ValueError), (2.0, TypeError), (True, TypeError)]
)
def test_bad_thread_arguments_are_named(threads, error):
    with pytest.raises(error, match="threads"):
        cpu.cpu_threads(threads)


@pytest.fixture
def fresh_policy(monkeypatch):
    """This process with no policy applied and none in the environment; torch's thread count
    restored afterwards."""
    for name in POLICY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cpu, "_applied", {})
    threads = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(threads)


def test_after_torch_is_imported_it_warns_and_sets_the_threads_only(fresh_policy):
    target = 1 if torch.get_num_threads() > 1 else 2
    with pytest.warns(UserWarning, match="wait policy is fixed"):
        cpu.cpu_threads(target)
    assert torch.get_num_threads() == target
    assert "OMP_WAIT_POLICY" not in os.environ  # the environment still says what is in force
    info = cpu.collect()
    assert info["wait_policy"] is None and info["wait_policy_set_by"] == "default"
    assert info["threads_set_by"] == "cpu_threads(threads=...)"


def test_a_users_wait_policy_is_kept_without_a_warning(fresh_policy):
    fresh_policy.setenv("OMP_WAIT_POLICY", "active")
    fresh_policy.setenv("LOCAL_WORLD_SIZE", "2")
    fresh_policy.setenv("OMP_NUM_THREADS", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cpu.cpu_threads()
    info = cpu.collect()
    assert info["wait_policy"] == "active" and info["wait_policy_set_by"] == "user"
    assert info["intra_op_threads"] == max(1, CORES // 2) == torch.get_num_threads()
    assert info["threads_set_by"] == "torchrun split" and info["local_world_size"] == 2


def _child_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in POLICY_VARS}
    # libgomp prints what it read, GOMP_SPINCOUNT included, when torch loads it
    return {**env, "OMP_DISPLAY_ENV": "VERBOSE", **extra}


def _openmp(stderr: str) -> dict:
    """OpenMP's own report of its settings (empty where the runtime prints none)."""
    return dict(re.findall(r"^\s+(\w+) = '([^']*)'", stderr, re.MULTILINE))


def _simda_env(**extra: str) -> tuple[dict, dict]:
    result = subprocess.run(
        [sys.executable, "-m", "simda.cli", "env", "--json"],
        env=_child_env(**extra),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)["cpu"], _openmp(result.stderr)


def _plain_import() -> tuple[list, dict]:
    probe = (
        "import os, sys\n"
        "import simda, simda.cli\n"
        "simda.SimDAPipeline\n"  # loads torch
        "print([os.environ.get(n) for n in ('OMP_WAIT_POLICY', 'OMP_NUM_THREADS')],"
        " 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split(), _openmp(result.stderr)


def test_a_fresh_command_runs_passive_and_a_plain_import_changes_nothing():
    plain, plain_openmp = _plain_import()
    assert plain == ["[None,", "None]", "True"]
    info, openmp = _simda_env()
    assert info["wait_policy"] == "PASSIVE" and info["wait_policy_set_by"] == "simda"
    assert info["threads_set_by"] == "default" and info["local_world_size"] == 1
    if "GOMP_SPINCOUNT" not in plain_openmp:
        pytest.skip("torch's OpenMP runtime is not libgomp: it does not report its spin count")
    assert plain_openmp["GOMP_SPINCOUNT"] != "0"  # the default: spin, then sleep
    assert openmp["GOMP_SPINCOUNT"] == "0"  # passive: sleep at once


def test_a_fresh_command_keeps_the_users_settings():
    info, openmp = _simda_env(OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1")
    assert info["wait_policy"] == "ACTIVE" and info["wait_policy_set_by"] == "user"
    assert info["intra_op_threads"] == 1 and info["threads_set_by"] == "OMP_NUM_THREADS"
    assert openmp.get("OMP_WAIT_POLICY", "ACTIVE") == "ACTIVE"


@pytest.mark.parametrize(
    "extra, threads, set_by",
    [
        ({"OMP_NUM_THREADS": "1"}, max(1, CORES // 2), "torchrun split"),
        ({"OMP_NUM_THREADS": "1", "SIMDA_CPU_THREADS": "1"}, 1, "SIMDA_CPU_THREADS"),
        ({"OMP_NUM_THREADS": "2"}, min(2, CORES), "OMP_NUM_THREADS"),
    ],
)
def test_a_fresh_command_as_one_of_two_local_ranks(extra, threads, set_by):
    info, _ = _simda_env(LOCAL_WORLD_SIZE="2", **extra)
    assert info["intra_op_threads"] == threads and info["threads_set_by"] == set_by
    assert info["local_world_size"] == 2 and info["wait_policy"] == "PASSIVE"


def test_a_bad_override_is_a_one_line_error():
    result = subprocess.run(
        [sys.executable, "-m", "simda.cli", "env"],
        env=_child_env(SIMDA_CPU_THREADS="0"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "simda env: error: SIMDA_CPU_THREADS='0': expected a positive integer (a thread count)"
    ]


def test_under_torchrun_each_rank_takes_its_share_of_the_cores(tmp_path):
    """torchrun sets OMP_NUM_THREADS=1 and LOCAL_WORLD_SIZE (the rule's premise); each rank of
    a `simda` command then runs cores / 2 threads."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "--log-dir",
            str(tmp_path),
            "--redirects",
            "1",
            "-m",
            "simda.cli",
            "env",
            "--json",
        ],
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    logs = sorted(glob.glob(str(tmp_path / "**" / "stdout.log"), recursive=True))
    assert len(logs) == 2, logs
    for log in logs:
        info = json.loads(open(log).read())["cpu"]
        assert info["threads_set_by"] == "torchrun split" and info["local_world_size"] == 2
        assert info["intra_op_threads"] == max(1, CORES // 2)
        assert info["wait_policy"] == "PASSIVE" and info["wait_policy_set_by"] == "simda"
