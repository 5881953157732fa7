"""Fixtures and pytest hooks shared by every test file; the helpers they import are in ``helpers.py``.

- Checks of the shipped option files under ``options/`` live in ``tests/test_option_files.py``.
- Tests that take more than about 5 s on a 2-core machine are marked ``slow``: ``python -m pytest -q tests -m "not
  slow"`` is the quick run (about a minute); the README's command runs everything.
"""
from pathlib import Path
from typing import Dict

import pytest

from helpers import make_pairs


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than about 5 s (deselect with -m "not slow")')
    config.addinivalue_line('markers', 'cuda: exercises a CUDA-only path; skips without a GPU (scripts/gpu_check.sh)')


@pytest.fixture(autouse=True)
def one_thread():
    """In-process tests use tiny tensors: one intra-op thread is faster, and far faster on a shared, loaded machine."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def toy_data(tmp_path: Path) -> Dict[str, str]:
    return make_pairs(tmp_path / 'data')
