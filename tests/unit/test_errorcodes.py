"""The error-code registry is complete, names real classes, and is what docs/errors.md shows.

The product source is scanned with ``ast``: every string constant that is a
code (``E_...``) anywhere in ``ffsecure``, ``aggregator`` and ``site_node`` (as a
``code=`` argument, a class ``code`` attribute, a key of the gRPC status
mapping, an audit finding's code, ...) must be registered; a class that
declares a code, or is called with ``code=...``, must be listed as carrying it;
and no caller may compare ``exc.code`` with a code string (it catches a
subclass instead).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import aggregator
import ffsecure
import site_node
from aggregator import grpc_errors
from ffsecure import errorcodes
from ffsecure.audit.findings import Finding
from ffsecure.errors import FFSecureError, TransientError
from site_node import client

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ffsecure", "aggregator", "site_node")
CODE = re.compile(r"E_[A-Z0-9_]+")
SKIP = {ROOT / "ffsecure" / "errorcodes.py"}  # the registry itself


def _product_files() -> Iterator[Path]:
    """Product modules, less the generated gRPC code and the ``__main__`` entry points
    (importing one runs its CLI; they only call ``main()``)."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            generated = "v1" in path.relative_to(ROOT).parts
            if not generated and path.name != "__main__.py" and path not in SKIP:
                yield path


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _trees() -> Iterator[tuple[Path, ast.Module]]:
    for path in _product_files():
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _resolve(dotted: str) -> object:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _registered_classes(code: str) -> set[object]:
    entry = errorcodes.lookup(code)
    assert entry is not None, code
    return {_resolve(name) for name in entry.raised_as}


def _import_all_product_modules() -> None:
    for package in (ffsecure, aggregator, site_node):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.endswith(("__main__", ".v1")) and ".v1." not in info.name:
                importlib.import_module(info.name)


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_code_string_in_product_code_is_registered():
    unregistered = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            text = _code_text(node)
            if text is not None and errorcodes.lookup(text) is None:
                unregistered.append(f"{path.relative_to(ROOT)}:{node.lineno} {text}")
    assert not unregistered, "register these codes in ffsecure/errorcodes.py: " + str(unregistered)


def _code_text(node: ast.AST) -> str | None:
    """The code a constant is (``"E_X"``), or the code prefix an f-string starts with."""
    if isinstance(node, ast.JoinedStr) and node.values:
        node = node.values[0]  # f"E_RPC_{name}": its leading constant must be a family
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value if CODE.fullmatch(node.value) else None
    return None


def _codes_by_position(tree: ast.Module) -> Iterator[tuple[str, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "code":
            yield "keyword", _code_text(node.value) or ""
        elif isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "code" for t in node.targets
        ):
            yield "attribute", _code_text(node.value) or ""
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add":
            yield "finding", "".join(filter(None, map(_code_text, node.args[:2])))


def test_the_scan_sees_codes_in_every_position_it_claims():
    found: dict[str, set[str]] = {"keyword": set(), "attribute": set(), "finding": set()}
    for _, tree in _trees():
        for position, code in _codes_by_position(tree):
            found[position].add(code)
    assert "E_UPLOAD_QUOTA" in found["keyword"] and "E_CERT_REVOKED" in found["attribute"]
    assert "E_AUDIT_CA_UNPINNED" in found["finding"]
    assert set(grpc_errors._BY_CODE) <= set(errorcodes.REGISTRY)
    for codes in found.values():
        assert all(errorcodes.lookup(code) is not None for code in codes - {""})


def test_a_class_called_with_a_code_is_registered_as_carrying_it():
    wrong = []
    for path, tree in _trees():
        module = importlib.import_module(_module_name(path))
        imported = _imports(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if kw.arg == "code" and isinstance(kw.value, ast.Constant):
                    cls = _callee(module, imported, node.func)
                    if _is_error_class(cls) and cls not in _registered_classes(kw.value.value):
                        wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} {kw.value.value}")
    assert not wrong, "list the raising class in ffsecure/errorcodes.py: " + str(wrong)


def _imports(tree: ast.Module) -> dict[str, str]:
    """Every name any import in the file binds (function-local ones too), to its dotted path."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name
    return names


def _callee(module, imported: dict[str, str], func: ast.expr) -> object:
    if isinstance(func, ast.Name):
        if hasattr(module, func.id):
            return getattr(module, func.id)
        dotted = imported.get(func.id)
        return _resolve(dotted) if dotted and "." in dotted else None
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        base = getattr(module, func.value.id, None)
        if base is None and func.value.id in imported:
            base = importlib.import_module(imported[func.value.id])
        return getattr(base, func.attr, None)
    return None


def _is_error_class(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, FFSecureError)


def test_every_class_that_declares_a_code_is_registered_with_it():
    _import_all_product_modules()
    missing = [
        f"{cls.__module__}.{cls.__qualname__} ({cls.code})"
        for cls in {FFSecureError, *_subclasses(FFSecureError)}
        if cls.__module__.split(".")[0] in PACKAGES
        and "code" in vars(cls)
        and cls not in _registered_classes(cls.code)
    ]
    assert not missing, "register these classes in ffsecure/errorcodes.py: " + str(missing)


def test_every_registered_name_is_a_class_of_its_kind():
    assert len(errorcodes.REGISTRY) > 150
    for code, entry in errorcodes.REGISTRY.items():
        assert entry.code == code and entry.meaning and entry.raised_as
        classes = [_resolve(name) for name in entry.raised_as]
        if entry.kind == errorcodes.FINDING:
            assert code.startswith("E_AUDIT_") and classes == [Finding], code
        else:
            assert entry.kind == errorcodes.ERROR
            assert all(_is_error_class(cls) for cls in classes), code


def test_a_code_cannot_be_registered_twice():
    entry = errorcodes.REGISTRY["E_CONFIG"]
    with pytest.raises(ValueError, match="E_CONFIG"):
        errorcodes._index([entry, entry])


def test_an_rpc_failure_code_resolves_to_its_family():
    family = errorcodes.lookup("E_RPC_UNAVAILABLE")
    assert family is not None and family.code == "E_RPC_<STATUS>"
    assert errorcodes.lookup("E_NO_SUCH_CODE") is None


def test_the_error_page_is_the_rendered_registry():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_error_docs
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    page = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert gen_error_docs.rendered_page(page) == page, "run python scripts/gen_error_docs.py"
    for code in errorcodes.REGISTRY:
        assert f"| `{code}` |" in page


def test_the_guides_link_the_error_page():
    for doc in ("README.md", "docs/grpc.md", "docs/operator-guide.md", "docs/site-operator.md"):
        assert "errors.md" in (ROOT / doc).read_text(encoding="utf-8"), doc


def test_no_caller_compares_an_error_code_with_a_string():
    offenders = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if _compares_code_to_literal(node) or _code_startswith(node):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, "catch a subclass instead of comparing exc.code: " + str(offenders)


def _is_code_attr(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "code"


def _code_literals(node: ast.expr) -> bool:
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return any(
        isinstance(item, ast.Constant) and isinstance(item.value, str) and CODE.match(item.value)
        for item in items
    )


def _compares_code_to_literal(node: ast.AST) -> bool:
    if not isinstance(node, ast.Compare):
        return False
    sides = [node.left, *node.comparators]
    return any(_is_code_attr(side) for side in sides) and any(_code_literals(s) for s in sides)


def _code_startswith(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "startswith"
        and _is_code_attr(node.func.value)
    )


@pytest.mark.parametrize(
    "code, cls, transient",
    [
        ("E_RATE_LIMIT", client.RateLimitedError, True),
        ("E_UPLOAD_BUSY", client.AggregatorBusyError, True),
        # a busy aggregator's accounting pool: the site sends the same envelope again later
        ("E_DP_ACCOUNTING_TIMEOUT", client.AggregatorBusyError, True),
        ("E_RPC_UNAVAILABLE", client.AggregatorBusyError, True),
        ("E_MODULE_DELETED", client.ModuleDeletedRefusal, False),
        ("E_PROOF_RANGE", client.NoProofError, False),
        ("E_NOT_FOUND", client.NoProofError, False),
        ("E_SIGNATURE", client.AggregatorError, False),
    ],
)
def test_the_site_reads_a_servers_code_into_the_class_callers_catch(code, cls, transient):
    err = client.refusal(code, "refused", hint="do this")
    assert type(err) is cls and err.code == code and err.hint == "do this"
    assert isinstance(err, TransientError) is transient
    assert cls is client.AggregatorError or cls in _registered_classes(code)


def test_every_code_the_client_branches_on_lists_the_client_class():
    for code, cls in client._CLASS_BY_CODE.items():
        assert cls in _registered_classes(code), code
