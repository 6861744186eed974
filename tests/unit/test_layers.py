"""Layers point one way and a rule has one home: checked on the source, so a regression fails here.

* The store interface returns a snapshot and never imports an exporter.
* Protocol and role code never imports research code (simulate, baselines,
  demo); only their own CLI commands do (docs/decisions.md, "Research code").
* torch's thread count is changed only through ffsecure.torchutil.torch_threads.
* The RFC 3339 format string is written only in ffsecure.timefmt.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("ffsecure", "aggregator", "site_node")
RESEARCH = ("ffsecure.simulate", "ffsecure.baselines", "ffsecure.demo")
RESEARCH_FILES = ("ffsecure/simulate.py", "ffsecure/baselines.py", "ffsecure/demo/")
RESEARCH_COMMANDS = ("ffsecure/commands/simulate.py", "ffsecure/commands/demo.py")


def _product_files() -> Iterator[tuple[str, ast.Module]]:
    for top in PRODUCT:
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if not rel.startswith("ffsecure/v1/"):
                yield rel, ast.parse(path.read_text(encoding="utf-8"))


def _imported_modules(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_the_store_interface_never_imports_an_exporter():
    importers = [
        rel
        for rel, tree in _product_files()
        if rel.startswith("aggregator/store/")
        and any(m.startswith("aggregator.export") for m in _imported_modules(tree))
    ]
    assert importers == []


def test_protocol_and_role_code_never_imports_research_code():
    offenders = sorted(
        f"{rel} imports {module}"
        for rel, tree in _product_files()
        if not rel.startswith(RESEARCH_FILES) and rel not in RESEARCH_COMMANDS
        for module in _imported_modules(tree)
        if module.startswith(RESEARCH)
    )
    assert offenders == []


def _calls(tree: ast.Module, attribute: str) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == attribute
    ]


def test_the_torch_thread_count_is_changed_only_by_torch_threads():
    setters = {
        rel: lines
        for rel, tree in _product_files()
        if rel != "ffsecure/torchutil.py" and (lines := _calls(tree, "set_num_threads"))
    }
    assert setters == {}


def test_the_rfc3339_format_is_written_only_in_timefmt():
    holders = sorted(
        rel
        for rel, tree in _product_files()
        if rel != "ffsecure/timefmt.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value == "%Y-%m-%dT%H:%M:%SZ"
    )
    assert holders == []
