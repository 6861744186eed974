"""Secret files: created 0600, replaced atomically, never overwritten when a key must not be."""

from __future__ import annotations

import os
import stat

import pytest

from aggregator.home import write_private_file
from ffsecure.errors import ConfigError
from ffsecure.files import FileTooLarge, NotRegularFile, read_regular_file, write_secret_file


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


# ------------------------------------------------------------------ bounded reads


def test_a_regular_file_is_read_whole_up_to_its_cap(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_regular_file(path, 10) == b"x" * 10
    with pytest.raises(FileTooLarge):
        read_regular_file(path, 9)


def test_a_symbolic_link_is_refused(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"secret")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(NotRegularFile) as info:
        read_regular_file(link, 100)
    assert info.value.reason == "a symbolic link"
    assert read_regular_file(target, 100) == b"secret"


def test_a_fifo_or_folder_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO"), (tmp_path, "a folder")):
        with pytest.raises(NotRegularFile) as info:
            read_regular_file(path, 100)
        assert info.value.reason == kind


def test_the_cap_holds_when_st_size_understates_the_file():
    """/proc files say st_size 0 and hold more: the cap is on the bytes read, not on stat."""
    path = "/proc/self/maps"
    if not os.path.exists(path) or os.stat(path).st_size != 0:
        pytest.skip("no procfs here")
    with pytest.raises(FileTooLarge):
        read_regular_file(path, 16)
