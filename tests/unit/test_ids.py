"""Every id parser accepts its ids and nothing holding a control or non-ASCII character.

A parser is any function that decides whether untrusted text is an id: the
rules of ``ffsecure.records.ids`` and the edge functions that apply them (package,
pki, upload staging, store, ledger entries, evaluation reports). Each is
driven with ids drawn from its own rule, then with the same ids after one
control character (``\\n``, ``\\r``, ``\\x00``, ``\\t``, any other of Unicode
category Cc) or one non-ASCII character was put at any position, the end
included: the first must pass, the second must be refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.store import base as store_base
from aggregator.uploads import check_upload_id
from ffsecure import evalreport, package, pki
from ffsecure.errors import FFSecureError
from ffsecure.records import ids
from ffsecure.records.entries import check_entry

H = "ab" * 32
MID = "0f" * 16
LINE_ENDS = ["\n", "\r", "\x00", "\t"]
FORBIDDEN_EXAMPLES = [
    "\x0b",
    "\x0c",
    "\x1f",
    "\x7f",
    "\x85",
    "\xa0",
    "\u2028",
    "\u0660",
    "\uff11",
    "\u0131",
    "\U0001f600",
]
EXAMPLES = {
    ids.MODULE_ID: MID,
    ids.MODULE_ID_PREFIX: MID[:8],
    ids.UPLOAD_ID: MID,
    ids.SALT: MID,
    ids.SHA256_HEX: H,
    ids.KEY_ID: H,
    ids.SITE_ID: "st-mary",
    ids.FEDERATION_ID: "fed-test",
    ids.ARTIFACT_ID: "ds-1",
    ids.OPERATOR_NAME: "alice",
    ids.ACTOR: "site:st-mary",
    ids.HOST: "localhost",
    ids.TREE_SIZE: "42",
    ids.PORT: "8443",
}
bad_chars = st.one_of(
    st.sampled_from(LINE_ENDS),
    st.sampled_from(FORBIDDEN_EXAMPLES),
    st.characters(categories=["Cc"]),
    st.characters(min_codepoint=0x80),
)


def _valid(rule: ids.IdRule) -> st.SearchStrategy[str]:
    values = st.from_regex(rule.pattern, fullmatch=True).filter(lambda v: len(v) <= rule.max_len)
    if rule is ids.TREE_SIZE:
        values = values.filter(lambda v: int(v) <= ids.MAX_TREE_SIZE)
    if rule is ids.PORT:
        values = values.filter(lambda v: int(v) <= 65535)
    return values


def _accepts(parse: Callable[[str], Any], value: str) -> bool:
    try:
        result = parse(value)
    except FFSecureError:
        return False
    return result is not None and result is not False


def _entry(actor: str = "aggregator", **facts: Any) -> dict:
    base = {"module_id": MID, "site_id": "st-mary", "manifest_sha256": H, "weights_sha256": H}
    return {
        "v": 1,
        "type": "module.registered",
        "time": "2026-11-22T12:00:00Z",
        "actor": actor,
        "facts": {**base, **facts},
    }


def _checked(check: Callable[..., Any]) -> Callable[..., bool]:
    def run(*args: Any) -> bool:
        check(*args)
        return True

    return run


#: (name, rule whose ids it takes, parser) for every parser of untrusted ids.
PARSERS: list[tuple[str, ids.IdRule, Callable[[str], Any]]] = [
    *[(f"ids.{rule.name}", rule, rule.matches) for rule in ids.RULES],
    ("ids.check_module_id", ids.MODULE_ID, ids.check_module_id),
    (
        "ids.resolve_module_id",
        ids.MODULE_ID_PREFIX,
        lambda v: ids.resolve_module_id(v, [v + "0" * (32 - len(v))]),
    ),
    ("ids.check_id", ids.SITE_ID, ids.check_id),
    ("ids.check_host", ids.HOST, ids.check_host),
    ("ids.check_artifact_id", ids.ARTIFACT_ID, ids.check_artifact_id),
    ("ids.parse_tree_size", ids.TREE_SIZE, ids.parse_tree_size),
    ("ids.parse_port", ids.PORT, lambda v: ids.parse_port(v) is not None),
    ("package.check_module_id", ids.MODULE_ID, package.check_module_id),
    ("pki.check_id", ids.SITE_ID, pki.check_id),
    (
        "pki.Identity.parse (site id)",
        ids.SITE_ID,
        lambda v: pki.Identity.parse(f"ffsecure://fed-test/site/{v}"),
    ),
    (
        "pki.Identity.parse (federation id)",
        ids.FEDERATION_ID,
        lambda v: pki.Identity.parse(f"ffsecure://{v}/aggregator"),
    ),
    ("uploads.check_upload_id", ids.UPLOAD_ID, check_upload_id),
    ("store.check_module_id", ids.MODULE_ID, store_base.check_module_id),
    (
        "store.check_artifact",
        ids.ARTIFACT_ID,
        _checked(lambda v: store_base.check_artifact("dataset", v)),
    ),
    ("entries.actor", ids.ACTOR, _checked(lambda v: check_entry(_entry(actor=v)))),
    ("entries.module_id", ids.MODULE_ID, _checked(lambda v: check_entry(_entry(module_id=v)))),
    ("entries.site_id", ids.SITE_ID, _checked(lambda v: check_entry(_entry(site_id=v)))),
    ("entries.sha256", ids.SHA256_HEX, _checked(lambda v: check_entry(_entry(weights_sha256=v)))),
    ("evalreport.salt", ids.SALT, _checked(lambda v: evalreport.commitment(_report(), v))),
]


def _report() -> evalreport.EvaluationReport:
    return evalreport.EvaluationReport(
        classifier_id="c1", n_test=2, accuracy=0.5, auroc=None, per_class_recall=(0.5, 0.5)
    )


@pytest.mark.parametrize("name,rule,parse", PARSERS, ids=[p[0] for p in PARSERS])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_no_id_parser_accepts_a_control_or_non_ascii_character(name, rule, parse, data):
    value = data.draw(_valid(rule), label="id")
    assert _accepts(parse, value), f"{name} refuses its own id {value!r}"
    bad = data.draw(bad_chars, label="character")
    at = data.draw(st.one_of(st.just(len(value)), st.integers(0, len(value))), label="position")
    hostile = value[:at] + bad + value[at:]
    assert not _accepts(parse, hostile), f"{name} accepts {hostile!r}"


@pytest.mark.parametrize("name,rule,parse", PARSERS, ids=[p[0] for p in PARSERS])
def test_a_trailing_newline_never_passes(name, rule, parse):
    value = EXAMPLES[rule]
    assert _accepts(parse, value)
    for tail in ("\n", "\r\n", "\x00", "\t", " "):
        assert not _accepts(parse, value + tail), f"{name} accepts {value + tail!r}"


def test_every_rule_is_a_parser_case():
    assert {rule for _, rule, _ in PARSERS} == set(ids.RULES) == set(EXAMPLES)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("0", 0),
        ("65535", 65535),
        ("65536", None),
        ("08443", None),
        ("\uff18443", None),
        ("\u00b2", None),
        ("", None),
        ("8443\n", None),
        (8443, None),
    ],
)
def test_ports_are_ascii_decimal_and_in_range(value, expected):
    assert ids.parse_port(value) == expected


@pytest.mark.parametrize(
    "value,expected",
    [
        ("0", 0),
        (str(ids.MAX_TREE_SIZE), ids.MAX_TREE_SIZE),
        (str(ids.MAX_TREE_SIZE + 1), None),
        ("01", None),
        ("1\n", None),
        ("\u0661", None),
    ],
)
def test_tree_sizes_are_bounded(value, expected):
    assert ids.parse_tree_size(value) == expected


def test_errors_are_typed_and_name_the_rule():
    with pytest.raises(ids.ModuleIdError) as err:
        ids.check_module_id(MID + "\n")
    assert err.value.code == "E_MODULE_ID" and "'" + MID + "\\n'" in err.value.message
    with pytest.raises(ids.IdentityError) as err:
        ids.check_id("site-b\n", "site id")
    assert err.value.code == "E_IDENTITY" and err.value.hint.startswith("use 1-63 characters")
    with pytest.raises(ids.ArtifactIdError) as err:
        ids.check_artifact_id("ds-1\n", "dataset id")
    assert err.value.code == "E_ARTIFACT_ID"
    assert package.ModuleIdError is ids.ModuleIdError and pki.IdentityError is ids.IdentityError


def test_a_module_id_prefix_of_eight_digits_names_one_known_module_or_says_why_not():
    a, b, c = "0123456789abcdef" * 2, "01234567" + "f" * 24, "fedcba98" + "0" * 24
    known = [a, b, c]
    assert ids.resolve_module_id("fedcba98", known) == c
    assert ids.resolve_module_id("0123456789", known) == a
    assert ids.resolve_module_id(a, []) == a  # a whole id needs no local record
    with pytest.raises(ids.ModuleIdAmbiguousError) as ambiguous:
        ids.resolve_module_id("01234567", known)
    assert ambiguous.value.code == "E_MODULE_ID_AMBIGUOUS"
    assert a in ambiguous.value.message and b in ambiguous.value.message
    with pytest.raises(ids.ModuleIdError):
        ids.resolve_module_id("0123456", known)  # 7 digits are too few
    with pytest.raises(ids.ModuleIdError):
        ids.resolve_module_id("FEDCBA98", known)
    with pytest.raises(FFSecureError) as unknown:
        ids.resolve_module_id("aaaaaaaa", known)
    assert unknown.value.code == "E_NOT_FOUND" and "32-digit" in (unknown.value.hint or "")
