"""Resumable upload staging: offsets, durability, hashes, limits, one writer per upload."""

from __future__ import annotations

import hashlib
import os

import pytest

from aggregator.grpc_errors import RequestError
from aggregator.uploads import UploadStaging

UID = "0123456789abcdef0123456789abcdef"


def _staging(tmp_path, **kw):
    args = dict(max_upload_bytes=1 << 20, commit_every_bytes=1024, max_parallel_per_site=2)
    args.update(kw)
    return UploadStaging(tmp_path / "uploads", **args)


def _payload(n=5000):
    data = os.urandom(n)
    return data, hashlib.sha256(data).digest()


def test_upload_in_chunks_then_read_verified(tmp_path):
    st = _staging(tmp_path)
    data, sha = _payload()
    with st.open("site-a", UID, total_size=len(data), total_sha256=sha) as up:
        for off in range(0, len(data), 700):
            up.write(off, data[off : off + 700])
        assert up.complete
        assert up.read_verified() == data
        up.mark_registered("f" * 32)
    state = st.status("site-a", UID)
    assert state.registered and state.module_id == "f" * 32
    assert not (tmp_path / "uploads" / "site-a" / UID / "data").exists()


def test_cut_stream_resumes_at_committed_offset(tmp_path):
    st = _staging(tmp_path)
    data, sha = _payload()
    with st.open("site-a", UID, total_size=len(data), total_sha256=sha) as up:
        up.write(0, data[:1800])
    # closing (a cut stream) commits what arrived
    assert st.status("site-a", UID).committed_offset == 1800
    with st.open("site-a", UID, total_size=len(data), total_sha256=sha) as up:
        assert up.offset == 1800
        with pytest.raises(RequestError) as err:
            up.write(0, data[:10])
        assert err.value.code == "E_UPLOAD_OFFSET"
        up.write(1800, data[1800:])
        assert up.read_verified() == data


def test_crash_drops_uncommitted_bytes(tmp_path):
    st = _staging(tmp_path, commit_every_bytes=1000)
    data, sha = _payload()
    up = st.open("site-a", UID, total_size=len(data), total_sha256=sha)
    up.write(0, data[:1200])  # commits at 1200 (>= 1000)
    up.write(1200, data[1200:1500])  # not committed
    up._fh.flush()
    # simulate a crash: no close(); a new process opens the staging directory
    st2 = _staging(tmp_path, commit_every_bytes=1000)
    assert st2.status("site-a", UID).committed_offset == 1200
    with st2.open("site-a", UID, total_size=len(data), total_sha256=sha) as up2:
        assert up2.offset == 1200
        assert os.path.getsize(up2.directory / "data") == 1200
        up2.write(1200, data[1200:])
        assert up2.read_verified() == data


def test_wrong_hash_discards_the_upload(tmp_path):
    st = _staging(tmp_path)
    data, _ = _payload()
    with st.open(
        "site-a", UID, total_size=len(data), total_sha256=hashlib.sha256(b"other").digest()
    ) as up:
        up.write(0, data)
        with pytest.raises(RequestError) as err:
            up.read_verified()
    assert err.value.code == "E_UPLOAD_HASH"
    assert st.status("site-a", UID) is None


def test_limits_and_mismatches(tmp_path):
    st = _staging(tmp_path, max_upload_bytes=4000)
    data, sha = _payload(5000)
    with pytest.raises(RequestError) as err:
        st.open("site-a", UID, total_size=len(data), total_sha256=sha)
    assert err.value.code == "E_TOO_LARGE"
    small, ssha = _payload(100)
    with st.open("site-a", UID, total_size=100, total_sha256=ssha) as up:
        up.write(0, small[:10])
        with pytest.raises(RequestError) as err:
            up.write(10, b"x" * 200)
        assert err.value.code == "E_UPLOAD_MISMATCH"
    with pytest.raises(RequestError) as err:
        st.open("site-a", UID, total_size=99, total_sha256=ssha)
    assert err.value.code == "E_UPLOAD_MISMATCH"
    with pytest.raises(RequestError) as err:
        st.open("site-a", "../../etc", total_size=100, total_sha256=ssha)
    assert err.value.code == "E_UPLOAD_ID"


def test_one_writer_per_upload_and_per_site_quota(tmp_path):
    st = _staging(tmp_path, max_parallel_per_site=2)
    data, sha = _payload(100)
    up = st.open("site-a", UID, total_size=100, total_sha256=sha)
    with pytest.raises(RequestError) as err:
        st.open("site-a", UID, total_size=100, total_sha256=sha)
    assert err.value.code == "E_UPLOAD_BUSY"
    up.close()
    st.open("site-a", "1" * 32, total_size=100, total_sha256=sha).close()
    with pytest.raises(RequestError) as err:
        st.open("site-a", "2" * 32, total_size=100, total_sha256=sha)
    assert err.value.code == "E_UPLOAD_QUOTA"
    # another site is not affected
    st.open("site-b", "2" * 32, total_size=100, total_sha256=sha).close()


def test_cleanup_removes_stale_uploads(tmp_path):
    st = _staging(tmp_path, stale_after_s=10)
    data, sha = _payload(100)
    st.open("site-a", UID, total_size=100, total_sha256=sha).close()
    created = st.status("site-a", UID).created_at
    assert st.cleanup_stale(now=created + 5) == 0
    assert st.cleanup_stale(now=created + 11) == 1
    assert st.status("site-a", UID) is None


def test_staged_uploads_are_private_and_an_open_root_is_tightened(tmp_path, caplog):
    """Every staging directory is 0700 and every staged file 0600, whatever the umask."""
    import stat

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    old_umask = os.umask(0o022)
    try:
        (tmp_path / "uploads").mkdir(mode=0o755)
        with caplog.at_level("WARNING", logger="ffsecure.files"):
            st = _staging(tmp_path)
        data, sha = _payload()
        with st.open("site-a", UID, total_size=len(data), total_sha256=sha) as up:
            up.write(0, data[:2000])
            up.commit()
    finally:
        os.umask(old_umask)
    upload = tmp_path / "uploads" / "site-a" / UID
    assert [mode(p) for p in (tmp_path / "uploads", upload.parent, upload)] == [0o700] * 3
    assert mode(upload / "data") == 0o600 and mode(upload / "state.json") == 0o600
    assert any(getattr(r, "event", None) == "permissions_tightened" for r in caplog.records)
