"""C2SP signed notes and tlog checkpoints.

Known answers: the signer/verifier keys and signed note of the Go reference
implementation (golang.org/x/mod/sumdb/note, note_test.go: "PeterNeumann")
and the example of the C2SP signed-note specification ("example.com/foo").
Ed25519 is deterministic, so signing the same text with the same seed must
give the published bytes exactly.
"""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ffsecure.errors import LedgerError
from ffsecure.ledger.checkpoint import (
    EM_DASH,
    Checkpoint,
    encode_signer_key,
    make_vkey,
    open_checkpoint,
    open_note,
    parse_checkpoint_body,
    parse_signer_key,
    parse_vkey,
    sign_checkpoint,
    sign_note,
)

GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n" + EM_DASH + " PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n" + EM_DASH + " example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def test_go_reference_signer_key_gives_the_published_vkey_and_note():
    name, key = parse_signer_key(GO_SKEY)
    assert name == "PeterNeumann"
    assert make_vkey(name, key.public_key()) == GO_VKEY
    assert encode_signer_key(name, key) == GO_SKEY
    assert sign_note(GO_TEXT, name, key) == GO_NOTE
    assert open_note(GO_NOTE, GO_VKEY) == GO_TEXT


def test_spec_example_note_verifies():
    assert open_note(SPEC_NOTE, SPEC_VKEY) == "This is an example message.\n"
    v = parse_vkey(SPEC_VKEY)
    assert (v.name, v.key_hash) == ("example.com/foo", 0x530D903A)


def test_other_signatures_are_ignored_but_one_by_the_key_is_required():
    other = Ed25519PrivateKey.generate()
    cosigned = sign_note(GO_TEXT, "witness.example", other)
    both = GO_NOTE + cosigned.split("\n\n", 1)[1]
    assert open_note(both, GO_VKEY) == GO_TEXT
    with pytest.raises(LedgerError) as info:
        open_note(cosigned, GO_VKEY)
    assert info.value.code == "E_CHECKPOINT_SIGNATURE"


@pytest.mark.parametrize(
    "bad",
    [
        GO_VKEY[:-1],
        GO_VKEY.replace("c74f20a3", "c74f20a4"),
        GO_VKEY.replace("Peter", "Pete"),
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        GO_VKEY.replace("+ARpc", "+AhRpc"),
    ],
)
def test_mangled_vkeys_are_refused(bad):
    with pytest.raises(LedgerError) as info:
        parse_vkey(bad)
    assert info.value.code == "E_CHECKPOINT_FORMAT"


def _log_key():
    key = Ed25519PrivateKey.generate()
    return key, make_vkey("example.org/ffsecure/log", key.public_key())


def test_checkpoint_round_trip_and_format():
    key, vkey = _log_key()
    cp = Checkpoint("example.org/ffsecure/log", 42, bytes(range(32)))
    note = sign_checkpoint(cp, "example.org/ffsecure/log", key)
    lines = note.split("\n")
    assert lines[:4] == [
        "example.org/ffsecure/log",
        "42",
        base64.b64encode(bytes(range(32))).decode(),
        "",
    ]
    assert lines[4].startswith(EM_DASH + " example.org/ffsecure/log ")
    assert open_checkpoint(note, vkey) == cp
    with_ext = Checkpoint(cp.origin, 0, bytes(32), ("ext line",))
    assert open_checkpoint(sign_checkpoint(with_ext, cp.origin, key), vkey) == with_ext


def test_checkpoint_of_another_origin_is_refused():
    key, vkey = _log_key()
    note = sign_checkpoint(
        Checkpoint("other.example/log", 1, bytes(32)), "example.org/ffsecure/log", key
    )
    with pytest.raises(LedgerError) as info:
        open_checkpoint(note, vkey)
    assert info.value.code == "E_CHECKPOINT_SIGNATURE"
    assert open_checkpoint(note, vkey, origin="other.example/log").size == 1


def test_flipping_any_byte_of_a_checkpoint_is_detected():
    key, vkey = _log_key()
    note = sign_checkpoint(
        Checkpoint("example.org/ffsecure/log", 7, bytes(range(32))), "example.org/ffsecure/log", key
    ).encode()
    for i in range(len(note)):
        for mask in (0x01, 0x20):
            bad = bytearray(note)
            bad[i] ^= mask
            with pytest.raises(LedgerError) as info:
                open_checkpoint(bytes(bad), vkey)
            assert info.value.code in {"E_CHECKPOINT_FORMAT", "E_CHECKPOINT_SIGNATURE"}, (i, mask)
            assert info.value.message


@pytest.mark.parametrize(
    "body",
    [
        "log\n07\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "log\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "log\n1\nAAAA\n",
        "log\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "log\n1\n",
        "\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "log\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n",
    ],
)
def test_malformed_checkpoint_bodies_are_refused(body):
    with pytest.raises(LedgerError) as info:
        parse_checkpoint_body(body)
    assert info.value.code == "E_CHECKPOINT_FORMAT"


def test_signing_refuses_text_that_would_not_parse():
    key, _ = _log_key()
    for text in ("no newline", "blank\n\nline\n", "ctrl\x07\n"):
        with pytest.raises(LedgerError):
            sign_note(text, "n", key)
    with pytest.raises(LedgerError):
        sign_note("ok\n", "bad+name", key)


def test_signature_with_changed_unused_base64_bits_is_refused():
    # 4-byte key hash + 64-byte signature = 68 bytes: the last base64 group
    # before '=' has two unused bits, so a lenient decoder would accept a
    # changed character there as the same signature.
    key, vkey = _log_key()
    note = sign_checkpoint(
        Checkpoint("example.org/ffsecure/log", 7, bytes(range(32))), "example.org/ffsecure/log", key
    )
    body, sig_line = note[:-1].rsplit("\n", 1)
    b64 = sig_line.rsplit(" ", 1)[1]
    assert b64.endswith("=") and not b64.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = alphabet[alphabet.index(b64[-2]) ^ 1]
    changed = b64[:-2] + twin + "="
    assert base64.b64decode(changed) == base64.b64decode(b64)
    bad = note.replace(b64, changed)
    with pytest.raises(LedgerError) as info:
        open_checkpoint(bad, vkey)
    assert info.value.code == "E_CHECKPOINT_FORMAT"
