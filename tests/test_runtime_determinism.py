"""runtime: seeding changes no global mode; deterministic kernels only where asked for, and undone."""
from __future__ import annotations

import os

import pytest
import torch

from mmcourse import runtime


@pytest.fixture
def restored():
    before = runtime.deterministic_state()
    yield before
    runtime.restore_deterministic(before)


def test_seed_everything_leaves_global_modes_alone(restored):
    runtime.seed_everything(3)
    assert runtime.deterministic_state() == restored


def test_deterministic_block_is_undone_after_it(restored):
    assert not torch.are_deterministic_algorithms_enabled()  # the suite's default: nothing leaked in
    with runtime.deterministic():
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert "CUBLAS_WORKSPACE_CONFIG" in os.environ
    assert runtime.deterministic_state() == restored


def test_deterministic_block_is_undone_after_an_error(restored):
    with pytest.raises(ZeroDivisionError), runtime.deterministic():
        1 / 0
    assert runtime.deterministic_state() == restored


def test_explicit_process_wide_switch_can_be_put_back(restored):
    previous = runtime.set_deterministic(True)
    assert torch.are_deterministic_algorithms_enabled() and previous == restored
    runtime.restore_deterministic(previous)
    assert runtime.deterministic_state() == restored
