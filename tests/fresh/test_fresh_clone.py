"""A clone of HEAD installs from the lock alone and its programs start (scripts/check_fresh.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_a_fresh_clone_installs_from_the_lock_and_runs():
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_fresh.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "check-fresh: passed" in done.stdout
