"""`ffsecure audit verify` and `audit report` end every run with a verdict, on any bundle.

A real bundle (tests/audit_fixture.py: real certificates, signed packages, SQLite
store, Merkle ledger, export) is mutated many ways, as a dishonest exporter could:
files deleted, emptied, truncated, replaced by folders, bytes flipped or appended,
JSON values anywhere replaced by hostile ones (huge or negative numbers, wrong types,
deep nesting, control characters), DP claims with absurd accounting parameters. Every
run must end as the documented exit statuses say (docs/auditor-guide.md): a verdict
(VERIFIED, exit 0; FAILED, exit 3) or, for a bundle that cannot be read at all, a typed
`error[E_...]` (exit 1); never an uncaught exception. The mutations come from a fixed
seed, so a failure repeats; the count is bounded to keep the test to seconds.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import traceback
from pathlib import Path

import pytest
import torch

from tests.audit_fixture import AuditLab, standard_history

torch.set_num_threads(1)

MUTATIONS = 300
SEED = 20
HOSTILE_VALUES = [
    None,
    True,
    False,
    -1,
    0,
    1.5,
    10**30,
    -(2**63),
    2**64,
    1e308,
    -1e-300,
    "",
    "x",
    "a" * 5000,
    "0" * 40,
    "\n",
    "\u0000",
    "../../etc/passwd",
    [],
    {},
    [[[[[[]]]]]],
    {"a": {"b": {"c": {}}}},
    [1, "2", None],
]
HOSTILE_DP = [
    {"steps": 1_000_000_000},
    {"steps": 10**30},
    {"steps": "1000"},
    {"steps": -5},
    {"sample_rate": 0.0},
    {"sample_rate": 1e-300},
    {"noise_multiplier": 1e-9},
    {"delta": 0.0},
    {"accountant": "prv", "steps": 1_000_000},
    {"epsilon": None},
    {"noise_multiplier": [1.1]},
    {"reproducible": True},
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-fuzz")
    lab = AuditLab(root)
    standard_history(lab)
    bundle = lab.export("clean")
    ca = root / "ca.pem"
    ca.write_bytes(lab.fed.ca_pem)
    lab.close()
    return bundle, ca


def _files(bundle: Path) -> list[Path]:
    return sorted(p for p in bundle.rglob("*") if p.is_file())


def _json_paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _json_paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _json_paths(value, (*path, i))


def _set(node, path, value):
    if not path:
        return value
    node[path[0]] = _set(node[path[0]], path[1:], value)
    return node


def _edit_json(text: str, rng: random.Random) -> str:
    doc = json.loads(text)
    path = rng.choice(list(_json_paths(doc)))
    doc = _set(doc, path, rng.choice(HOSTILE_VALUES))
    return json.dumps(doc, sort_keys=rng.random() < 0.7, separators=(",", ":"))


def _mutate(bundle: Path, rng: random.Random) -> str:
    """Apply one random mutation to the bundle copy; returns what it did."""
    target = rng.choice(_files(bundle))
    data = target.read_bytes()
    kind = rng.choice(
        [
            "delete",
            "empty",
            "truncate",
            "flip",
            "append",
            "folder",
            "json",
            "json",
            "entry",
            "entry",
            "dp",
            "dp",
            "swap",
        ]
    )
    if kind == "delete":
        target.unlink()
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind == "truncate":
        target.write_bytes(data[: rng.randrange(max(1, len(data)))])
    elif kind == "flip":
        i = rng.randrange(len(data))
        target.write_bytes(data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :])
    elif kind == "append":
        target.write_bytes(
            data + rng.choice([b"\n", b"\x00" * 9, b'{"type":"x"}\n', bytes(range(256))])
        )
    elif kind == "folder":
        target.unlink()
        target.mkdir()
    elif kind == "json" and target.suffix == ".json":
        target.write_text(_edit_json(data.decode(), rng))
    elif kind == "entry":
        target = bundle / "entries.jsonl"
        lines = target.read_text().splitlines()
        i = rng.randrange(len(lines))
        lines[i] = _edit_json(lines[i], rng)
        target.write_text("\n".join(lines) + "\n")
    elif kind == "dp":
        record_path = rng.choice(sorted((bundle / "modules").glob("*.json")))
        record = json.loads(record_path.read_text())
        manifest = record["package"]["manifest"]
        manifest["dp"] = {
            **(manifest.get("dp") or {"epsilon": 4.0, "delta": 1e-5}),
            **rng.choice(HOSTILE_DP),
        }
        record_path.write_text(json.dumps(record, sort_keys=True, separators=(",", ":")))
        return f"dp claim of {record_path.name}"
    else:  # swap two files' contents
        other = rng.choice(_files(bundle))
        target.write_bytes(other.read_bytes())
        other.write_bytes(data)
    return f"{kind} {target.relative_to(bundle)}"


def _invoke(*args):
    from click.testing import CliRunner

    from ffsecure.cli import cli

    return CliRunner().invoke(cli, ["audit", *map(str, args)])


def assert_ends_with_a_verdict(result, what: str, *, report: bool) -> str:
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        pytest.fail(f"{what}: uncaught {type(exc).__name__}\n{tb}")
    assert "Traceback" not in result.stdout + result.stderr, what
    if result.exit_code == 1:
        error = json.loads(result.stderr.strip().splitlines()[-1])["error"]
        assert re.fullmatch(r"E_[A-Z0-9_]+", error["code"]) and error["message"], what
        return "error"
    verdict = json.loads(result.stdout)["verdict"]
    expected = {("VERIFIED", 0), ("FAILED", 0)} if report else {("VERIFIED", 0), ("FAILED", 3)}
    assert (verdict, result.exit_code) in expected, (
        f"{what}: {verdict} with exit {result.exit_code}"
    )
    return verdict


def test_mutated_bundles_always_end_with_a_verdict(world, tmp_path):
    bundle, ca = world
    outcomes: dict[str, int] = {}
    dp_findings = 0
    for n in range(MUTATIONS):
        rng = random.Random(SEED * 100_000 + n)  # each mutation repeats on its own
        copy = tmp_path / f"m{n}"
        shutil.copytree(bundle, copy)
        what = f"mutation {n} ({_mutate(copy, rng)})"
        result = _invoke("verify", copy, "--ca", ca, "--json")
        outcome = assert_ends_with_a_verdict(result, what, report=False)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == "FAILED":
            dp_findings += "E_AUDIT_DP_CLAIM" in result.stdout
        if n % 4 == 0:
            report = _invoke("report", copy, "--ca", ca, "-o", tmp_path / f"r{n}.html", "--json")
            assert_ends_with_a_verdict(report, f"report of {what}", report=True)
        shutil.rmtree(copy)
    # the mutations reached both the verdict and the unreadable-bundle paths, and the DP check
    assert outcomes.get("FAILED", 0) > MUTATIONS // 2 and outcomes.get("error", 0) > 0, outcomes
    assert dp_findings > 0


#: Without these the log cannot be checked at all; the optional parts are judged by other checks.
REQUIRED_PARTS = ("log.vkey", "entries.jsonl", "checkpoints")


@pytest.mark.parametrize(
    "name",
    [
        "log.vkey",
        "entries.jsonl",
        "ca.pem",
        "crl.pem",
        "federation.json",
        "bundle.json",
        "checkpoints",
    ],
)
def test_a_bundle_part_of_the_wrong_kind_gets_a_typed_answer(world, tmp_path, name):
    """A folder where a file belongs (or a file where the checkpoints folder belongs)."""
    bundle, ca = world
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    part = copy / name
    if part.is_dir():
        shutil.rmtree(part)
        part.write_bytes(b"1\n")
    else:
        part.unlink()
        part.mkdir()
    for command in (
        ["verify", copy, "--ca", ca, "--json"],
        ["report", copy, "--ca", ca, "-o", tmp_path / "r.html", "--json"],
    ):
        result = _invoke(*command)
        outcome = assert_ends_with_a_verdict(
            result, f"{command[0]} with {name} of the wrong kind", report=command[0] == "report"
        )
        if name in REQUIRED_PARTS:
            assert outcome in ("error", "FAILED"), (
                f"{command[0]} with {name} of the wrong kind: {outcome}"
            )


def _append_entry(line: bytes):
    def edit(bundle: Path) -> None:
        with open(bundle / "entries.jsonl", "ab") as fh:
            fh.write(line + b"\n")

    return edit


def _replace_first(folder: str, data: bytes):
    def edit(bundle: Path) -> None:
        sorted((bundle / folder).iterdir())[0].write_bytes(data)

    return edit


#: JSON that parses but holds what UTF-8 cannot encode, or nests past any recursion limit.
UNENCODABLE = {
    "a lone surrogate in an entry's type": (
        _append_entry(b'{"type":"\\ud800"}'),
        "E_AUDIT_ENTRY",
    ),
    "a lone surrogate as an entry's key": (_append_entry(b'{"\\udfff":1}'), "E_AUDIT_ENTRY"),
    "an entry nested 60,000 deep": (_append_entry(b"[" * 60_000), "E_AUDIT_ENTRY"),
    "a lone surrogate in a module record": (
        _replace_first("modules", b'{"a":"\\ud800"}\n'),
        "E_AUDIT_MODULE_RECORD",
    ),
}


@pytest.mark.parametrize("case", sorted(UNENCODABLE))
def test_json_no_encoder_can_write_back_is_a_finding_in_verify_and_report(world, tmp_path, case):
    """A lone surrogate escape (\\ud800) decodes to a string UTF-8 cannot encode: the parser
    refuses it at the edge, so verify and report end with FAILED and the finding, never a
    UnicodeEncodeError (or a RecursionError for deep nesting) on the way out."""
    bundle, ca = world
    edit, code = UNENCODABLE[case]
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    edit(copy)
    result = _invoke("verify", copy, "--ca", ca, "--json")
    assert assert_ends_with_a_verdict(result, case, report=False) == "FAILED"
    assert code in {finding["code"] for finding in json.loads(result.stdout)["findings"]}
    report = _invoke("report", copy, "--ca", ca, "-o", tmp_path / "r.html", "--json")
    assert assert_ends_with_a_verdict(report, f"report of {case}", report=True) == "FAILED"
    assert (tmp_path / "r.html").read_text(encoding="utf-8")
