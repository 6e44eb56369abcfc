"""Deliberately broken kernels (tests/cuda_emulator/mutants.py) fail the emulator checks that
are meant to catch them, and an unbroken copy built the same way passes them all."""

import pytest
import torch

from tests.cuda_emulator import mutants
from tests.test_temporal_adapter import check, emulated, layouts, nan_empty  # noqa: F401

pytestmark = pytest.mark.usefixtures("nan_empty")  # outputs start as NaN


@pytest.fixture(scope="module")
def module():
    from tests import cuda_emulator

    if cuda_emulator.cuda_include_dir() is None:
        pytest.skip("the CUDA emulator needs the CUDA headers (a toolkit or torch's nvidia wheels)")
    return mutants.load()


def run(kernels, scenario: mutants.Scenario):
    x = layouts(*scenario.shape, getattr(torch, scenario.dtype), "cpu")[scenario.layout]
    check(x, "gelu", emulated(kernels, 0, scenario.frames_per_block, scenario.smem_limit))


def test_every_snippet_occurs_once():
    for name in mutants.MUTANTS:
        mutants._patched_headers(name)


@pytest.mark.parametrize("name", sorted(mutants.MUTANTS))
def test_broken_kernel_fails(module, name):
    with pytest.raises((AssertionError, RuntimeError)):
        run(getattr(module, name), mutants.MUTANTS[name].scenario)


def test_unbroken_copy_passes_every_scenario(module):
    for scenario in sorted({m.scenario for m in mutants.MUTANTS.values()}, key=repr):
        run(getattr(module, mutants.CONTROL), scenario)
