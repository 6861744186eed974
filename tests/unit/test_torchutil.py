"""torch_threads: a block runs on the count it asks for, and the caller's count comes back."""

from __future__ import annotations

import pytest
import torch

from ffsecure.torchutil import torch_threads


def test_the_count_is_set_inside_and_restored_after_the_block():
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with torch_threads(wanted):
        assert torch.get_num_threads() == wanted
    assert torch.get_num_threads() == before


def test_the_count_is_restored_when_the_block_raises():
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with pytest.raises(RuntimeError, match="boom"), torch_threads(wanted):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_none_keeps_the_current_count():
    before = torch.get_num_threads()
    with torch_threads(None):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before
