"""Witness cosignatures must be recent, and one witness key counts once (red team rt-audit).

Two holes the witness check let through, each once VERIFIED:

* rollback: the log fails today's audit (a deletion request never carried out), so the
  exporter hands over the bundle of 90 days ago with the witness cosignature of then; the
  quorum counted a cosignature of any age (``E_AUDIT_WITNESS_STALE`` now);
* one key, two names: a cosignature does not commit to the witness's name, so with the
  same Ed25519 key listed under two names the exporter re-labels one line and meets a
  quorum of two (``E_WITNESS_KEY_REUSED`` now, and a quorum counts public keys).

A real federation (tests/audit_fixture.py) and a real witness
(``ffsecure.ledger.witness.cosign_checkpoint``, its clock injected); the audit's clock is
injected with ``now=``, the CLI's is the real one (the cosignatures are dated from it).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ffsecure.audit import audit_bundle, load_bundle
from ffsecure.audit.witnesses import DEFAULT_MAX_AGE, WitnessStatus, witness_policy
from ffsecure.cli import cli as ffsecure_cli
from ffsecure.errors import ConfigError
from ffsecure.ledger.checkpoint import key_hash, split_note
from ffsecure.ledger.cosign import (
    ALG_COSIGNATURE_V1,
    WitnessKeyReusedError,
    parse_witness_vkey,
    witness_verdicts,
    witness_vkey,
)
from ffsecure.ledger.merkle import MemoryTree, leaf_hash
from ffsecure.ledger.witness import _load_key, cosign_checkpoint, init_witness
from ffsecure.timefmt import CLOCK_SKEW, rfc3339, utcnow
from tests.audit_fixture import AuditLab

torch.set_num_threads(1)

DAY = 86400


def ffsecure(*args: object) -> tuple[int, str, str]:
    r = CliRunner().invoke(ffsecure_cli, [str(a) for a in args], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def _latest(bundle: Path) -> Path:
    return max((bundle / "checkpoints").iterdir(), key=lambda p: int(p.name))


def _cosign(bundle: Path, witness_dir: Path, when: int) -> None:
    """The witness checks the bundle's latest checkpoint and cosigns it at ``when``; the line
    goes into the bundle as an export carries it."""
    lines = (bundle / "entries.jsonl").read_bytes()[:-1].split(b"\n")
    latest = _latest(bundle)
    vkey = (bundle / "log.vkey").read_text().strip()
    tree = MemoryTree([leaf_hash(e) for e in lines])
    latest.write_text(
        cosign_checkpoint(witness_dir, latest.read_bytes(), vkey, tree, now=when).note
    )


class Rollback:
    """``old``: the log 90 days ago, cosigned by w1 then; ``new``: today's, with a deletion
    request never carried out, cosigned by w1 today. ``now`` is today."""

    def __init__(self, root: Path):
        self.root = root
        self.now = utcnow()
        self.t_now = int(self.now.timestamp())
        self.t_old = self.t_now - 90 * DAY
        self.lab = AuditLab(root / "lab")
        self.ca = root / "ca.pem"
        self.ca.write_bytes(self.lab.fed.ca_pem)
        self.w1 = init_witness(root / "w1", "w1.example/witness")
        self.w2 = init_witness(root / "w2", "w2.example/witness")
        a = self.lab.register("st-mary", (0, 1), seed=1)
        b = self.lab.register("st-john", (2, 3), seed=2)
        self.lab.dataset("ds-1", [a, b])
        self.lab.classifier("clf-1", "ds-1", [a, b])
        self.lab.publish("clf-1")
        self.old = self.lab.export("old")
        _cosign(self.old, root / "w1", self.t_old)
        self.lab.request_deletion(b, "st-john")  # and the operator never deletes it
        self.lab.checkpoint()
        self.new = self.lab.export("new")
        _cosign(self.new, root / "w1", self.t_now)

    def audit(self, bundle: Path, *keys: str, now: dt.datetime | None = None, **policy):
        return audit_bundle(
            load_bundle(bundle),
            ca_pem=self.lab.fed.ca_pem,
            witnesses=witness_policy(list(keys), **policy),
            now=self.now if now is None else now,
        )

    def at(self, seconds: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(seconds, dt.UTC)


@pytest.fixture(scope="module")
def rollback(tmp_path_factory):
    world = Rollback(tmp_path_factory.mktemp("witness-rollback"))
    yield world
    world.lab.close()


def _codes(result) -> set[str]:
    return {f.code for f in result.errors}


def test_a_bundle_rolled_back_to_an_old_cosigned_checkpoint_fails_as_stale(rollback):
    today = rollback.audit(rollback.new, rollback.w1)
    assert _codes(today) == {"E_AUDIT_DELETION_MISSING"}, "today's log is the one that fails"

    result = rollback.audit(rollback.old, rollback.w1)
    assert result.verdict == "FAILED", "a 90-day-old cosigned checkpoint read VERIFIED"
    assert _codes(result) == {"E_AUDIT_WITNESS_STALE"}
    (finding,) = result.errors
    old_time = rfc3339(rollback.at(rollback.t_old))
    assert f"w1.example/witness cosigned {old_time} (90d ago)" in finding.message
    assert finding.checkpoint == int(_latest(rollback.old).name)
    assert result.witnesses is not None
    (row,) = result.witnesses.rows
    assert (row.status, row.time, row.age) == (WitnessStatus.STALE, rollback.t_old, 90 * DAY)


def test_the_default_bound_is_a_week_to_the_second(rollback):
    assert dt.timedelta(days=7) == DEFAULT_MAX_AGE
    edge = rollback.t_old + 7 * DAY
    fresh = rollback.audit(rollback.old, rollback.w1, now=rollback.at(edge))
    assert fresh.verdict == "VERIFIED", [f.to_dict() for f in fresh.findings]
    check = next(c for c in fresh.checks if c.name == "witnesses")
    assert check.status == "ok"
    assert "1 of 1 witnesses cosigned checkpoint" in check.detail and "within 7d" in check.detail
    assert rfc3339(rollback.at(rollback.t_old)) + " (7d ago)" in check.detail
    stale = rollback.audit(rollback.old, rollback.w1, now=rollback.at(edge + 1))
    assert _codes(stale) == {"E_AUDIT_WITNESS_STALE"}


def test_the_auditor_s_bound_replaces_the_default(rollback):
    wide = rollback.audit(rollback.old, rollback.w1, max_age=dt.timedelta(days=91))
    assert wide.verdict == "VERIFIED", "an auditor auditing an archived bundle widens the bound"
    tight = rollback.audit(
        rollback.old,
        rollback.w1,
        now=rollback.at(rollback.t_old + 2 * 3600),
        max_age=dt.timedelta(hours=1),
    )
    assert _codes(tight) == {"E_AUDIT_WITNESS_STALE"}
    with pytest.raises(ConfigError, match="not positive"):
        witness_policy([rollback.w1], max_age=dt.timedelta(0))


def test_a_cosignature_dated_past_the_auditor_s_clock_does_not_count(rollback):
    skew = int(CLOCK_SKEW.total_seconds())
    within = rollback.audit(rollback.old, rollback.w1, now=rollback.at(rollback.t_old - skew))
    assert within.verdict == "VERIFIED", "5 minutes of clock skew are allowed"
    ahead = rollback.audit(rollback.old, rollback.w1, now=rollback.at(rollback.t_old - skew - 1))
    assert _codes(ahead) == {"E_AUDIT_WITNESS_STALE"}
    assert ahead.witnesses is not None
    assert ahead.witnesses.rows[0].status == WitnessStatus.FUTURE
    assert "ahead)" in ahead.errors[0].message


def test_a_quorum_counts_only_the_fresh_cosignatures(tmp_path, rollback):
    bundle = Path(shutil.copytree(rollback.old, tmp_path / "old-recosigned"))
    # w2 was never shown today's checkpoint: it cosigns the old one yesterday
    _cosign(bundle, rollback.root / "w2", rollback.t_now - DAY)
    both = rollback.audit(bundle, rollback.w1, rollback.w2)
    assert _codes(both) == {"E_AUDIT_WITNESS_STALE"}
    assert "w1.example/witness cosigned" in both.errors[0].message
    assert "w2.example/witness cosigned" not in both.errors[0].message
    assert both.witnesses is not None and both.witnesses.fresh == 1
    one = rollback.audit(bundle, rollback.w1, rollback.w2, quorum=1)
    assert one.verdict == "VERIFIED", "the limit the docs state: a witness sees what it is shown"


def test_audit_verify_applies_the_default_bound_and_the_option(rollback):
    args = ["audit", "verify", rollback.old, "--ca", rollback.ca, "--witness-key", rollback.w1]
    code, out, err = ffsecure(*args, "--json")
    assert code == 3, err
    result = json.loads(out)
    assert {f["code"] for f in result["findings"]} == {"E_AUDIT_WITNESS_STALE"}
    (row,) = result["witnesses"]["witnesses"]
    assert row["status"] == "stale" and row["time"] == rollback.t_old
    assert result["witnesses"]["max_age"] == "7d"

    code, out, err = ffsecure(*args, "--witness-max-age", "91d", "--json")
    assert code == 0 and json.loads(out)["verdict"] == "VERIFIED", err
    code, _out, _err = ffsecure(*args, "--witness-max-age", "89d23h")
    assert code == 3


@pytest.mark.parametrize("bad", ["7", "7 days", "-1d", "1w", "0s", "1h2d", "1234567d", ""])
def test_a_bad_witness_max_age_is_an_option_error_naming_the_form(rollback, bad):
    code, _out, err = ffsecure(
        "audit",
        "verify",
        rollback.old,
        "--ca",
        rollback.ca,
        "--witness-key",
        rollback.w1,
        "--witness-max-age",
        bad,
    )
    assert code == 1 and "E_CONFIG" in err and "7d" in err, err


def test_witness_max_age_without_a_witness_key_is_a_usage_error(rollback):
    code, _out, err = ffsecure(
        "audit", "verify", rollback.old, "--ca", rollback.ca, "--witness-max-age", "7d"
    )
    assert code == 2 and "--witness-key" in err


def test_the_report_shows_the_cosignature_times_and_fails_a_stale_quorum(tmp_path, rollback):
    out = tmp_path / "report.html"
    code, stdout, err = ffsecure(
        "audit",
        "report",
        rollback.old,
        "--ca",
        rollback.ca,
        "-o",
        out,
        "--witness-key",
        rollback.w1,
        "--witness-max-age",
        "30d",
    )
    assert code == 0, err
    assert stdout.startswith("FAILED") and "E_AUDIT_WITNESS_STALE" in stdout
    html = out.read_text()
    assert "<h2>Witnesses</h2>" in html and "within 30d" in html
    assert rfc3339(rollback.at(rollback.t_old)) in html and ">stale<" in html


# ---------------------------------------------------------------- one key, two names


def _relabelled(tmp_path: Path, lab: AuditLab) -> tuple[Path, str, str]:
    """A bundle whose latest checkpoint w1 cosigned, plus the exporter's copy of that line
    re-labelled as w2's (same key, second name); the two vkeys."""
    init_witness(tmp_path / "w1", "w1.example/witness")
    name, key = _load_key(tmp_path / "w1")
    vk1, vk2 = witness_vkey(name, key), witness_vkey("w2.example/witness", key)
    bundle = lab.export("relabelled")
    _cosign(bundle, tmp_path / "w1", int(utcnow().timestamp()))
    cp = _latest(bundle)
    note = cp.read_text()
    _body, sigs = split_note(note)
    line = next(s for s in sigs if s.name == name)
    kh2 = key_hash("w2.example/witness", key.public_key(), ALG_COSIGNATURE_V1)
    blob = kh2.to_bytes(4, "big") + line.signature
    cp.write_text(note + "— w2.example/witness " + base64.b64encode(blob).decode() + "\n")
    return bundle, vk1, vk2


def test_one_witness_key_under_two_names_is_refused_never_counted_twice(tmp_path, rollback):
    bundle, vk1, vk2 = _relabelled(tmp_path, rollback.lab)
    with pytest.raises(WitnessKeyReusedError) as refused:
        audit_bundle(
            load_bundle(bundle),
            ca_pem=rollback.lab.fed.ca_pem,
            witnesses=witness_policy([vk1, vk2], quorum=2),
        )
    assert refused.value.code == "E_WITNESS_KEY_REUSED"
    assert "w1.example/witness" in refused.value.message and refused.value.hint

    code, _out, err = ffsecure(
        "audit",
        "verify",
        bundle,
        "--ca",
        rollback.ca,
        "--witness-key",
        vk1,
        "--witness-key",
        vk2,
        "--witness-quorum",
        "2",
    )
    assert code == 1 and "E_WITNESS_KEY_REUSED" in err, err

    # the same key given twice under one name is one witness, so a quorum of two is unmeetable
    with pytest.raises(ConfigError, match="quorum of 2 cannot be met by 1"):
        witness_policy([vk1, vk1], quorum=2)
    # below the parser too, a quorum counts public keys: both lines verify, one verdict
    note = _latest(bundle).read_text()
    verdicts = witness_verdicts(note, [parse_witness_vkey(vk1), parse_witness_vkey(vk2)])
    assert [(v.name, v.valid) for v in verdicts] == [("w1.example/witness", True)]
    relabelled_alone = witness_verdicts(note, [parse_witness_vkey(vk2)])
    assert relabelled_alone[0].valid, "the re-labelled line verifies: why names cannot count"
