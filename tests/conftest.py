"""Shared test fixtures. Tests never touch the network."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDMNIST = REPO.parent / "shared" / "data" / "medmnist"

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def medmnist_root() -> Path:
    if not SHARED_MEDMNIST.is_dir():
        pytest.skip("shared MedMNIST files are not present")
    return SHARED_MEDMNIST


def cli_env() -> dict[str, str]:
    """Environment for child processes: the repo on the path, no network data."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("MPLBACKEND", "Agg")
    return env


PYTHON = sys.executable


# The session's PostgreSQL server (tests/pg_fixture.py), for the PostgreSQL store tests.
from tests.pg_fixture import pg_cluster, pg_dsn  # noqa: E402, F401
