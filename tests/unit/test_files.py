"""Secret files: created 0600, replaced atomically, never overwritten when a key must not be."""

from __future__ import annotations

import stat

import pytest

from aggregator.home import write_private_file
from ffsecure.errors import ConfigError
from ffsecure.files import write_secret_file


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_a_secret_file_is_0600_and_a_rewrite_replaces_it_whole(tmp_path):
    path = tmp_path / "key.pem"
    write_secret_file(path, b"first")
    assert path.read_bytes() == b"first" and _mode(path) == 0o600
    write_secret_file(path, b"second, longer")
    assert path.read_bytes() == b"second, longer" and _mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]  # no temporary file left


def test_without_overwrite_an_existing_file_is_left_as_it_was(tmp_path):
    path = tmp_path / "key.pem"
    write_secret_file(path, b"original", overwrite=False)
    with pytest.raises(FileExistsError):
        write_secret_file(path, b"replacement", overwrite=False)
    assert path.read_bytes() == b"original" and _mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


def test_an_aggregator_key_is_never_overwritten(tmp_path):
    path = tmp_path / "log.key"
    write_private_file(path, b"secret")
    with pytest.raises(ConfigError) as info:
        write_private_file(path, b"other")
    assert info.value.code == "E_KEY_EXISTS" and "never overwritten" in info.value.message
    assert path.read_bytes() == b"secret"


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_secret_file(tmp_path / "missing-dir" / "key.pem", b"x")
    assert list(tmp_path.iterdir()) == []
