"""scripts/check_lock.py: an environment that differs from the lock is named, line by line."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("check_lock", REPO / "scripts" / "check_lock.py")
check_lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_lock)


def test_lock_pins_are_read_with_normalized_names(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "grpcio-tools==1.85.4 \\\n    --hash=sha256:ab\n    # via x\nTyping_Extensions==4.16.0 \\\n"
    )
    assert check_lock.read_lock(lock) == {"grpcio-tools": "1.85.4", "typing-extensions": "4.16.0"}


def test_every_kind_of_drift_is_reported():
    lock = {"torch": "2.14.1", "numpy": "2.4.6", "rich": "15.0.0"}
    have = {"torch": "2.14.1", "numpy": "2.4.5", "extra-pkg": "1.0", "ffsecure": "0.1.0"}
    assert check_lock.differences(lock, have) == [
        "wrong version: numpy==2.4.5 (lock: 2.4.6)",
        "missing: rich==15.0.0",
        "not in the lock: extra-pkg==1.0",
    ]
    assert check_lock.differences(lock, {**lock, "ffsecure": "0.1.0"}) == []


def test_the_committed_lock_pins_pytorch_and_hashes_every_package():
    lines = (REPO / "requirements" / "lock.txt").read_text().splitlines()
    pins = check_lock.read_lock(REPO / "requirements" / "lock.txt")
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    starts = [i for i, line in enumerate(lines) if line and not line.startswith((" ", "#"))]
    assert len(starts) == len(pins)  # nothing but pins (no -e, no bare names, no URLs)
    for start, end in zip(starts, [*starts[1:], len(lines)], strict=True):
        assert "==" in lines[start], lines[start]
        hashes = [line for line in lines[start:end] if "--hash=sha256:" in line]
        assert hashes, f"{lines[start]} has no hash"
