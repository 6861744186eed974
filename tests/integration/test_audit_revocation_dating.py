"""A revocation "after registration" is taken from the witnesses' clocks, not the exporter's.

The audit excuses one failed signature as a warning: a deleted module whose recorded
certificate the CA revoked after the module was registered (the aggregator could not
have known). The registration's entry time is the aggregator's own clock, so an
aggregator that took a module of an already revoked key could date the entry before the
revocation, delete the module and retire what it built, and the bundle read VERIFIED.
Now the registration must have been seen by the revocation date by a quorum of the
auditor's witnesses (their cosignatures on a checkpoint holding the entry); without
witnesses, or when they saw it only later, the failure is an error.

Real federation, store and export (tests/audit_fixture.py), a real witness
(``ffsecure.ledger.witness.cosign_checkpoint``, its clock injected).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import torch

from ffsecure import canonical
from ffsecure.audit import audit_bundle, load_bundle, render_html
from ffsecure.audit.witnesses import witness_policy
from ffsecure.ledger.merkle import MemoryTree, leaf_hash
from ffsecure.ledger.witness import cosign_checkpoint, init_witness
from tests.audit_fixture import AuditLab

torch.set_num_threads(1)

HOUR = 3600


def _cosign(bundle: Path, witness: Path, size: int, when: int) -> None:
    """The witness checks the bundle's checkpoint of ``size`` and cosigns it at ``when``."""
    path = bundle / "checkpoints" / str(size)
    lines = (bundle / "entries.jsonl").read_bytes()[:-1].split(b"\n")[:size]
    vkey = (bundle / "log.vkey").read_text().strip()
    tree = MemoryTree([leaf_hash(e) for e in lines])
    path.write_text(cosign_checkpoint(witness, path.read_bytes(), vkey, tree, now=when).note)


def _latest(bundle: Path) -> int:
    return max(int(p.name) for p in (bundle / "checkpoints").iterdir())


class Revoked:
    """One deleted module of st-john, whose key the CA revokes for key compromise at
    ``revoked``, an hour after the module's entry time; the audit runs three hours on.

    ``honest``: the CA revokes after the registration (log order too); ``backdated``: the
    CA revoked first, and the aggregator registered the module anyway, its entry dated
    before the revocation date (its clock is its own). The entries are alike: only the
    witnesses, who saw the log when they cosigned, can tell them apart."""

    def __init__(self, root: Path, kind: str):
        start = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.revoked = start + dt.timedelta(hours=1)
        self.now = start + dt.timedelta(hours=3)
        self.lab = lab = AuditLab(root / "lab")
        try:
            good = lab.register("st-mary", (0,), seed=1)
            if kind == "backdated":
                lab.revoke("st-john", "key_compromise", at=self.revoked)
            self.module = lab.register("st-john", (1,), seed=2)
            self.held = int(lab.checkpoint().split(b"\n")[1])  # the tree holding it
            lab.dataset("ds-1", [good, self.module])
            lab.classifier("clf-1", "ds-1", [good, self.module])
            lab.publish("clf-1")
            if kind == "honest":
                lab.revoke("st-john", "key_compromise", at=self.revoked)
            lab.delete(self.module, reason="signing key compromised")
            lab.retire("dataset", "ds-1", self.module)
            lab.retire("classifier", "clf-1", self.module)
            lab.checkpoint()
            self.bundle = lab.export()
        finally:
            lab.close()
        self.vkey = init_witness(root / "w1", "w1.example/witness")
        self.witness_dir = root / "w1"

    def cosign(self, held_at: int) -> None:
        """w1 cosigns the checkpoint holding the registration at ``held_at``, and the
        latest one now (what the witness check asks of the latest checkpoint)."""
        _cosign(self.bundle, self.witness_dir, self.held, held_at)
        _cosign(self.bundle, self.witness_dir, _latest(self.bundle), int(self.now.timestamp()))

    def audit(self, *, witnesses: bool):
        policy = witness_policy([self.vkey]) if witnesses else None
        return audit_bundle(
            load_bundle(self.bundle), ca_pem=self.lab.fed.ca_pem, witnesses=policy, now=self.now
        )

    def finding(self, result):
        (f,) = [f for f in result.findings if f.module_id == self.module]
        return f


@pytest.fixture
def honest(tmp_path):
    return Revoked(tmp_path, "honest")


@pytest.fixture
def backdated(tmp_path):
    return Revoked(tmp_path, "backdated")


def test_witnesses_who_saw_the_registration_before_the_revocation_excuse_it(honest):
    honest.cosign(int(honest.revoked.timestamp()) - HOUR)
    result = honest.audit(witnesses=True)
    assert result.verdict == "VERIFIED", [f.message for f in result.errors]
    f = honest.finding(result)
    assert (f.code, f.severity) == ("E_AUDIT_MODULE_REVOKED", "warning")
    assert not result.modules[honest.module].signature_ok


def test_without_witnesses_the_aggregators_clock_alone_excuses_nothing(honest):
    result = honest.audit(witnesses=False)
    assert result.verdict == "FAILED"
    f = honest.finding(result)
    assert (f.code, f.severity) == ("E_AUDIT_MODULE_REVOKED", "error")
    assert "aggregator's own clock" in f.message and "--witness-key" in f.message


def test_witnesses_who_saw_the_registration_only_after_the_revocation_do_not_excuse_it(honest):
    honest.cosign(int(honest.revoked.timestamp()) + 1)
    result = honest.audit(witnesses=True)
    assert result.verdict == "FAILED"
    f = honest.finding(result)
    assert (f.code, f.severity) == ("E_AUDIT_MODULE_REVOKED", "error")
    assert "after the revocation" in f.message


def test_a_backdated_registration_of_a_revoked_key_fails_with_or_without_witnesses(backdated):
    # the entry says an hour before the revocation; the witness saw it only after it
    backdated.cosign(int(backdated.revoked.timestamp()) + HOUR)
    for witnesses in (False, True):
        result = backdated.audit(witnesses=witnesses)
        assert result.verdict == "FAILED", witnesses
        f = backdated.finding(result)
        assert (f.code, f.severity) == ("E_AUDIT_MODULE_REVOKED", "error"), witnesses
        assert "at or after its registration" in f.message  # what the entry time claims


def test_a_quorum_of_two_needs_both_witnesses_to_have_seen_it_in_time(honest, tmp_path):
    second = init_witness(tmp_path / "w2", "w2.example/witness")
    honest.cosign(int(honest.revoked.timestamp()) - HOUR)  # w1 in time
    _cosign(honest.bundle, tmp_path / "w2", _latest(honest.bundle), int(honest.now.timestamp()))
    policy = witness_policy([honest.vkey, second], quorum=2)
    result = audit_bundle(
        load_bundle(honest.bundle), ca_pem=honest.lab.fed.ca_pem, witnesses=policy, now=honest.now
    )
    # w2 first saw a tree holding it now, after the revocation: the quorum's time is w2's
    f = honest.finding(result)
    assert (f.code, f.severity) == ("E_AUDIT_MODULE_REVOKED", "error")
    assert "quorum of your witnesses first cosigned" in f.message


def test_the_report_headline_counts_the_signatures_that_verify(honest):
    honest.cosign(int(honest.revoked.timestamp()) - HOUR)
    html = render_html(honest.audit(witnesses=True))
    # VERIFIED with the excused module's warning: one of the two signatures does not verify
    assert "1 of 2 module signatures verify" in html
    assert "Skipped: trusted-checkpoints, dp-claims." in html and "Every check passed" not in html


def test_the_report_shows_the_unsigned_export_time_as_the_exporters_word(honest):
    summary = honest.bundle / "bundle.json"
    claim = "2027-06-30T09:00:00Z (today) - all 3 witnesses cosigned this export"
    for stated, shown in ((claim, False), ("2027-06-30T09:00:00Z", True)):
        record = canonical.loads(summary.read_bytes())
        summary.write_bytes(canonical.dumps({**record, "exported": stated}) + b"\n")
        html = render_html(honest.audit(witnesses=False))
        assert "witnesses cosigned this export" not in html
        assert (
            "unsigned bundle.json says exported 2027-06-30T09:00:00Z (the exporter's word" in html
        ) is shown


def test_a_witness_time_past_the_year_9999_is_after_the_revocation_not_a_crash(honest):
    # a witness signs a u64 time: one past 9999 (a broken clock) must not stop the audit
    _cosign(honest.bundle, honest.witness_dir, honest.held, 2**40)
    result = honest.audit(witnesses=True)
    f = honest.finding(result)
    assert (f.code, f.severity) == ("E_AUDIT_MODULE_REVOKED", "error")
    assert f"first cosigned a checkpoint holding its entry at POSIX time {2**40}" in f.message
