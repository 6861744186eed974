"""``site.toml``: the site node's configuration, parsed once into a typed record.

Every path is explicit (relative paths are taken from the folder holding the
config file); every secret has a named location. Unknown keys are refused
(they are usually typos) and a bad value names the key and the fix
(``E_CONFIG``). The reference table of keys and defaults is in
``docs/site-operator.md``; :data:`DEFAULT_TOML` (the shipped template
``ffsecure/templates/site.toml``) is the file ``site-node init`` writes, and
the test suite checks that the two agree.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffsecure import templates
from ffsecure.errors import ConfigError
from ffsecure.ids import parse_port
from ffsecure.records.fields import is_int, is_number

DEFAULT_TOML = templates.read("site.toml")


def _cfg_error(key: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"site.toml key {key}: {problem}", hint=fix)


# key -> (type, default) per table; types: str, float, int, bool, list, "opt_bool"
SCHEMA: dict[str, dict[str, tuple[str, Any]]] = {
    "site": {
        "federation_id": ("str", None),
        "site_id": ("str", None),
        "state_dir": ("str", "state"),
    },
    "pki": {"key": ("str", ""), "passphrase_file": ("str", ""), "csr": ("str", "")},
    "aggregator": {
        "endpoint": ("str", ""),
        "server_name": ("str", ""),
        "timeout_s": ("float", 30.0),
        "upload_timeout_s": ("float", 600.0),
        "chunk_bytes": ("int", 1 << 20),
        "max_upload_bytes_per_s": ("int", 0),
        "max_attempts": ("int", 8),
        "base_delay_s": ("float", 0.2),
        "max_delay_s": ("float", 10.0),
    },
    "data": {
        "source": ("str", None),
        "root": ("str", ""),
        "classes": ("list", []),
        "label_match": ("str", "name"),
        "split_seed": ("int", 0),
    },
    "train": {
        "size": ("str", "default"),
        "epochs": ("int", 0),
        "batch_size": ("int", 0),
        "lr": ("float", 0.0),
        "seed": ("int", 0),
        "device": ("str", "cpu"),
        "threads": ("int", 1),
    },
    "dp": {
        "enabled": ("opt_bool", None),
        "target_epsilon": ("float", 0.0),
        "delta": ("float", 0.0),
        "max_grad_norm": ("float", 1.0),
        "accountant": ("str", "prv"),
    },
    "daemon": {
        "poll_interval_s": ("float", 300.0),
        "retry_interval_s": ("float", 60.0),
        "trigger_file": ("str", ""),
    },
}
REQUIRED_TABLES = {"site", "data"}


@dataclass(frozen=True)
class SiteConfig:
    """The parsed ``site.toml``; paths are absolute."""

    path: Path
    federation_id: str
    site_id: str
    state_dir: Path
    key_path: Path
    passphrase_file: Path | None
    csr_path: Path
    endpoint: str
    server_name: str
    timeout_s: float
    upload_timeout_s: float
    chunk_bytes: int
    max_upload_bytes_per_s: int
    max_attempts: int
    base_delay_s: float
    max_delay_s: float
    data_source: str
    data_root: Path | None
    classes: tuple = ()
    label_match: str = "name"
    split_seed: int = 0
    train: dict = field(default_factory=dict)
    dp: dict = field(default_factory=dict)
    poll_interval_s: float = 300.0
    retry_interval_s: float = 60.0
    trigger_file: Path | None = None

    def passphrase(self) -> bytes | None:
        """The site key's passphrase file: ``pki.passphrase_file``, else
        ``$FFSECURE_SITE_PASSPHRASE_FILE``."""
        from ffsecure.commands.pki import SITE_PASSPHRASE_ENV, read_passphrase

        if self.passphrase_file is None:
            return read_passphrase(os.environ.get(SITE_PASSPHRASE_ENV))
        return read_passphrase(str(self.passphrase_file))


def _typed(table: str, key: str, kind: str, value: Any) -> Any:
    name = f"{table}.{key}"
    if kind == "str":
        if not isinstance(value, str):
            raise _cfg_error(
                name, f"must be a string, got {type(value).__name__}", f'write {key} = "..."'
            )
        return value
    if kind == "opt_bool":
        if not isinstance(value, bool):
            raise _cfg_error(
                name, "must be true or false", f"write {key} = true, or remove the line"
            )
        return value
    if kind == "int":
        if not is_int(value) or value < 0:
            raise _cfg_error(
                name, f"must be a non-negative integer, got {value!r}", f"write {key} = 0 or more"
            )
        return value
    if kind == "float":
        if not is_number(value) or value < 0:
            raise _cfg_error(
                name, f"must be a non-negative number, got {value!r}", f"write {key} = 0.0 or more"
            )
        return float(value)
    if kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) or is_int(v) for v in value):
            raise _cfg_error(
                name, "must be a list of class names or indices", f'write {key} = ["normal"] or [0]'
            )
        return tuple(value)
    raise AssertionError(kind)


def parse_config(text: str, path: Path) -> SiteConfig:
    """Parse the text of ``site.toml`` (at ``path``, whose folder anchors relative paths)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}", hint="fix the syntax at the position shown"
        ) from None
    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        raise _cfg_error(
            f"[{unknown[0]}]",
            "is not a known table",
            f"use only {sorted(SCHEMA)}; see docs/site-operator.md",
        )
    for table in sorted(REQUIRED_TABLES - set(raw)):
        raise _cfg_error(f"[{table}]", "is missing", "add the table (see docs/site-operator.md)")
    values: dict[str, dict[str, Any]] = {}
    for table, keys in SCHEMA.items():
        given = raw.get(table, {})
        if not isinstance(given, dict):
            raise _cfg_error(table, "must be a table", f"write [{table}] on its own line")
        bad = sorted(set(given) - set(keys))
        if bad:
            raise _cfg_error(
                f"{table}.{bad[0]}",
                "is not a known key",
                f"remove it; [{table}] takes {sorted(keys)}",
            )
        out = {}
        for key, (kind, default) in keys.items():
            if key in given:
                out[key] = _typed(table, key, kind, given[key])
            elif default is None and kind != "opt_bool":
                raise _cfg_error(f"{table}.{key}", "is required", f"add {key} = ... to [{table}]")
            else:
                out[key] = default
        values[table] = out
    return _build(values, path)


def _build(v: dict[str, dict[str, Any]], path: Path) -> SiteConfig:
    from ffsecure import pki

    base = path.parent.resolve()

    def resolve(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else (base / q)

    site = v["site"]
    for key in ("federation_id", "site_id"):
        try:
            pki.check_id(site[key], key.replace("_", " "))
        except Exception as exc:  # noqa: BLE001 - re-raised as a config error naming the key
            raise _cfg_error(
                f"site.{key}",
                getattr(exc, "message", str(exc)),
                "use lowercase letters, digits and dashes, as in the certificate",
            ) from None
    if not site["state_dir"]:
        raise _cfg_error("site.state_dir", "is empty", 'write state_dir = "/var/lib/ffsecure-site"')
    state = resolve(site["state_dir"])
    pk = v["pki"]
    agg = v["aggregator"]
    if agg["endpoint"]:
        host, _, port = agg["endpoint"].rpartition(":")
        if not host or not parse_port(port):
            raise _cfg_error(
                "aggregator.endpoint",
                f"{agg['endpoint']!r} is not host:port",
                'write endpoint = "aggregator.example.org:8443"',
            )
    if agg["chunk_bytes"] < 1024 or agg["chunk_bytes"] > 16 << 20:
        raise _cfg_error(
            "aggregator.chunk_bytes",
            f"{agg['chunk_bytes']} is outside 1 KiB .. 16 MiB",
            "use e.g. 1048576",
        )
    if agg["max_attempts"] < 1:
        raise _cfg_error("aggregator.max_attempts", "must be at least 1", "use e.g. 8")
    for key in ("timeout_s", "upload_timeout_s"):
        if agg[key] <= 0:
            raise _cfg_error(f"aggregator.{key}", "must be above 0", "use e.g. 30.0")
    data = v["data"]
    source = data["source"]
    if not (
        source == "digits" or source.startswith(("npz:", "folder:", "medmnist:"))
    ) or source.endswith(":"):
        raise _cfg_error(
            "data.source",
            f"{source!r} is not a known data source",
            'use "npz:PATH", "folder:PATH", "digits" or "medmnist:NAME"',
        )
    if source.startswith(("npz:", "folder:")):
        kind, _, rest = source.partition(":")
        source = f"{kind}:{resolve(rest)}"
    if data["label_match"] not in ("name", "index"):
        raise _cfg_error(
            "data.label_match",
            f"{data['label_match']!r} is not name or index",
            'write label_match = "name" (or "index")',
        )
    train = dict(v["train"])
    if train["size"] not in ("tiny", "default", "full"):
        raise _cfg_error(
            "train.size",
            f"{train['size']!r} is not tiny, default or full",
            'write size = "default"',
        )
    if train["device"] not in ("cpu", "cuda") and not train["device"].startswith("cuda:"):
        raise _cfg_error(
            "train.device", f"{train['device']!r} is not cpu or cuda", 'write device = "cpu"'
        )
    if train["threads"] < 1:
        raise _cfg_error("train.threads", "must be at least 1", "write threads = 1")
    dp = dict(v["dp"])
    if dp["accountant"] not in ("prv", "rdp"):
        raise _cfg_error(
            "dp.accountant", f"{dp['accountant']!r} is not prv or rdp", 'write accountant = "prv"'
        )
    if dp["delta"] >= 1:
        raise _cfg_error("dp.delta", "must be below 1", "use e.g. 1e-5, or 0 for the default")
    if dp["max_grad_norm"] <= 0:
        raise _cfg_error("dp.max_grad_norm", "must be above 0", "use e.g. 1.0")
    daemon = v["daemon"]
    if daemon["poll_interval_s"] <= 0 or daemon["retry_interval_s"] <= 0:
        raise _cfg_error(
            "daemon.poll_interval_s"
            if daemon["poll_interval_s"] <= 0
            else "daemon.retry_interval_s",
            "must be above 0",
            "use e.g. 300.0 and 60.0",
        )
    return SiteConfig(
        path=path.resolve(),
        federation_id=site["federation_id"],
        site_id=site["site_id"],
        state_dir=state,
        key_path=resolve(pk["key"]) if pk["key"] else state / "keys" / "site.key",
        passphrase_file=resolve(pk["passphrase_file"]) if pk["passphrase_file"] else None,
        csr_path=resolve(pk["csr"]) if pk["csr"] else state / "site.csr",
        endpoint=agg["endpoint"],
        server_name=agg["server_name"],
        timeout_s=agg["timeout_s"],
        upload_timeout_s=agg["upload_timeout_s"],
        chunk_bytes=agg["chunk_bytes"],
        max_upload_bytes_per_s=agg["max_upload_bytes_per_s"],
        max_attempts=agg["max_attempts"],
        base_delay_s=agg["base_delay_s"],
        max_delay_s=agg["max_delay_s"],
        data_source=source,
        data_root=resolve(data["root"]) if data["root"] else None,
        classes=data["classes"],
        label_match=data["label_match"],
        split_seed=data["split_seed"],
        train=train,
        dp=dp,
        poll_interval_s=daemon["poll_interval_s"],
        retry_interval_s=daemon["retry_interval_s"],
        trigger_file=resolve(daemon["trigger_file"])
        if daemon["trigger_file"]
        else state / "train.now",
    )


def load_config(path: str | Path) -> SiteConfig:
    """Read and check ``site.toml``; raises ConfigError (E_CONFIG) naming the key and the fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist",
            hint="write one (docs/site-operator.md has a complete example)",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read {path}: {exc}", hint="check the path and its permissions"
        ) from None
    return parse_config(text, path)
