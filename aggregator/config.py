"""``aggregator.toml``: the aggregator's configuration, parsed once into typed records.

The file lives in the aggregator home directory (docs/decisions.md); relative
paths in it are relative to that directory. Every key has a documented
default (``DEFAULT_TOML``, the shipped template
``ffsecure/templates/aggregator.toml``, is the reference, written by
``aggregator init`` and ``aggregator init-config``); an unknown key is an
error naming the key, because it is usually a typo that would otherwise be
silently ignored.

``[store]`` picks the store backend: ``sqlite`` (the default: ``store.sqlite``
in the home) or ``postgres`` with a libpq DSN given inline (``dsn``) or in a
0600 file (``dsn_file``, so that a password stays out of this file). The DSN
is parsed here; its password is never logged.

Limits that the federation fixes (the largest module a site may send) come
from the CA-signed federation manifest; this file can only lower them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from aggregator.home import read_private_file
from ffsecure import templates
from ffsecure.errors import ConfigError
from ffsecure.records import fields
from ffsecure.records.ids import parse_port

MiB = 1 << 20

DEFAULT_TOML = templates.read("aggregator.toml")


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:8443"
    port_file: str = "serve.port"
    max_workers: int = 16
    max_concurrent_rpcs: int = 256
    shutdown_grace_s: float = 30.0
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    min_ping_interval_s: float = 10.0
    upload_deadline_s: float = 600.0
    download_deadline_s: float = 600.0
    request_deadline_s: float = 30.0
    max_concurrent_verifications: int = 2


@dataclass(frozen=True)
class UploadConfig:
    dir: str = "uploads"
    chunk_bytes: int = 1 * MiB
    commit_every_bytes: int = 4 * MiB
    max_parallel_per_site: int = 4
    stale_after_s: float = 86400.0


@dataclass(frozen=True)
class LimitsConfig:
    max_upload_bytes: int = 0


@dataclass(frozen=True)
class RateLimitConfig:
    calls_per_second: float = 20.0
    call_burst: int = 40
    uploads_per_minute: float = 30.0
    upload_burst: int = 10


STORE_BACKENDS = ("sqlite", "postgres")


@dataclass(frozen=True)
class StoreConfig:
    """Where modules and the ledger live: ``sqlite`` in the home, or a PostgreSQL DSN."""

    backend: str = "sqlite"
    dsn: str = ""  # libpq connection string; prefer dsn_file when it holds a password
    dsn_file: str = ""  # a 0600 file holding the DSN (relative to the home)


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint (aggregator.metrics): off while ``listen`` is empty."""

    listen: str = ""
    allow_non_loopback: bool = False
    port_file: str = "metrics.port"


@dataclass(frozen=True)
class AggregatorConfig:
    """The whole file plus where it was read from (``home`` is its directory)."""

    home: Path
    server: ServerConfig = field(default_factory=ServerConfig)
    uploads: UploadConfig = field(default_factory=UploadConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # Optional options for the operator's evaluation step; validated by the commands using them.
    evaluation: dict[str, Any] = field(default_factory=dict)

    def path(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.home / p

    @property
    def uploads_dir(self) -> Path:
        return self.path(self.uploads.dir)

    @property
    def port_file(self) -> Path:
        return self.path(self.server.port_file)

    def store_dsn(self) -> str:
        """The PostgreSQL DSN: ``store.dsn``, or the contents of ``store.dsn_file`` (0600)."""
        if self.store.dsn_file:
            path = self.path(self.store.dsn_file)
            try:
                text = read_private_file(path).decode("utf-8", "replace")
            except ConfigError as exc:
                raise ConfigError(
                    f"store.dsn_file: {exc.message}",
                    code=exc.code,
                    hint=f"write the connection string into {path} and `chmod 600` it",
                ) from None
            return check_dsn(text.strip(), "store.dsn_file")
        return self.store.dsn

    @property
    def metrics_port_file(self) -> Path:
        return self.path(self.metrics.port_file)


_SECTIONS = {
    "server": ServerConfig,
    "uploads": UploadConfig,
    "limits": LimitsConfig,
    "rate_limit": RateLimitConfig,
    "store": StoreConfig,
    "metrics": MetricsConfig,
}

_POSITIVE = {
    "max_workers",
    "max_concurrent_rpcs",
    "keepalive_time_s",
    "keepalive_timeout_s",
    "min_ping_interval_s",
    "upload_deadline_s",
    "download_deadline_s",
    "request_deadline_s",
    "max_concurrent_verifications",
    "chunk_bytes",
    "shutdown_grace_s",
    "commit_every_bytes",
    "max_parallel_per_site",
    "stale_after_s",
    "calls_per_second",
    "call_burst",
    "uploads_per_minute",
    "upload_burst",
}


_STORE_SPECS = {
    "backend": fields.Str(options=STORE_BACKENDS),
    "dsn": fields.Str(max_len=4096, expect="a libpq connection string"),
    "dsn_file": fields.Str(max_len=4096, expect="a path"),
}


def _spec(section: str, name: str, kind: object) -> fields.Spec:
    """The field spec of one key: ``[store]``'s own specs; elsewhere its dataclass type, and
    positive where ``_POSITIVE`` says.

    ``kind`` is the field's annotation, a string such as ``"int"`` (this module postpones
    the evaluation of annotations).
    """
    if section == "store":
        return _STORE_SPECS[name]
    if kind == "str" and name == "listen" and section == "metrics":
        return fields.Str(expect="a string")  # empty: no endpoint
    if kind == "str":
        return fields.Str(min_len=1, expect="a non-empty string")
    if kind == "bool":
        return fields.Bool()
    if kind == "int":
        lo = 1 if name in _POSITIVE else 0 if name == "max_upload_bytes" else None
        return fields.Int(lo, expect="an integer")
    return fields.Float(0.0, above=name in _POSITIVE, expect="a number")


#: Each section as a table of field specs; every key has its dataclass default.
SECTION_SPECS: dict[str, fields.Table] = {
    name: fields.Table(
        {
            f.name: fields.Field(_spec(name, f.name, f.type), default=f.default)
            for f in dc_fields(cls)
        }
    )
    for name, cls in _SECTIONS.items()
}


def _section_error(name: str, exc: fields.FieldError) -> ConfigError:
    known = ", ".join(sorted(SECTION_SPECS[name].fields))
    if exc.problem is fields.Problem.UNKNOWN:
        return ConfigError(
            f"unknown key {name}.{exc.keys[0]} in aggregator.toml",
            hint=f"known keys of [{name}]: {known}",
        )
    if exc.key == name:
        return ConfigError(f"[{name}] must be a table", hint=f"write it as a [{name}] section")
    if name == "store":
        return ConfigError(
            f"{exc.key} must be {exc.expect}, not {exc.value!r}",
            hint='e.g. backend = "postgres" and dsn_file = "store.dsn" (docs/operator-guide.md)',
        )
    if exc.problem is fields.Problem.TYPE and exc.expect == "a non-empty string":
        return ConfigError(f"{exc.key} must be a non-empty string", hint=f'e.g. {exc.key} = "..."')
    if exc.problem is fields.Problem.TYPE and exc.expect == "true or false":
        return ConfigError(f"{exc.key} must be true or false", hint="write true or false")
    if exc.problem is fields.Problem.TYPE:
        whole = "a whole number" if exc.expect == "an integer" else "a number"
        return ConfigError(
            f"{exc.key} must be {exc.expect}, not {exc.value!r}", hint=f"write {whole}"
        )
    if exc.key.endswith(".max_upload_bytes"):
        return ConfigError(f"{exc.key} must be 0 or more", hint="0 means the federation's limit")
    if isinstance(exc.value, str):
        return ConfigError(f"{exc.key} must be a non-empty string", hint=f'e.g. {exc.key} = "..."')
    return ConfigError(
        f"{exc.key} must be greater than 0, not {exc.value!r}", hint="use a positive value"
    )


def _section(name: str, cls: type, table: Any) -> Any:
    values = fields.check(
        SECTION_SPECS[name], table, name, error=lambda exc: _section_error(name, exc)
    )
    return cls(**values)


def _check_listen(listen: str) -> None:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or parse_port(port) is None:
        raise ConfigError(
            f"server.listen {listen!r} is not host:port",
            hint='e.g. listen = "127.0.0.1:8443" (port 0 picks a free one)',
        )


def check_dsn(dsn: str, key: str = "store.dsn") -> str:
    """A DSN libpq can parse (key=value or postgresql:// URI); the error never shows it."""
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ConfigError(
            f"{key} is not a PostgreSQL connection string",
            hint='e.g. "host=db.example dbname=ffsecure user=aggregator '
            'sslmode=verify-full sslrootcert=/etc/ffsecure/db-ca.pem"',
        ) from None
    return dsn


def _check_store(store: StoreConfig) -> None:
    if store.backend == "sqlite":
        if store.dsn or store.dsn_file:
            raise ConfigError(
                "store.dsn and store.dsn_file are for the postgres backend",
                hint='set backend = "postgres", or remove them',
            )
        return
    if bool(store.dsn) == bool(store.dsn_file):
        raise ConfigError(
            "the postgres store needs exactly one of store.dsn and store.dsn_file",
            hint='e.g. dsn_file = "store.dsn" (a 0600 file holding the connection string)',
        )
    if store.dsn:
        check_dsn(store.dsn, "store.dsn")


def parse_config(text: str, *, home: Path) -> AggregatorConfig:
    """Parse the TOML text of an aggregator.toml whose directory is ``home``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"aggregator.toml is not valid TOML: {exc}", hint="fix the syntax at that line"
        ) from None
    parts: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "evaluation":
            if not isinstance(value, dict):
                raise ConfigError(
                    "[evaluation] must be a table", hint="write it as an [evaluation] section"
                )
            parts["evaluation"] = dict(value)
        elif key in _SECTIONS:
            parts[key] = _section(key, _SECTIONS[key], value)
        else:
            raise ConfigError(
                f"unknown key {key!r} in aggregator.toml",
                hint=f"known sections: {', '.join(sorted([*_SECTIONS, 'evaluation']))}",
            )
    cfg = AggregatorConfig(home=Path(home), **parts)
    _check_listen(cfg.server.listen)
    _check_store(cfg.store)
    if cfg.uploads.commit_every_bytes < cfg.uploads.chunk_bytes:
        raise ConfigError(
            "uploads.commit_every_bytes is smaller than uploads.chunk_bytes",
            hint="make commit_every_bytes at least one chunk",
        )
    return cfg


def load_config(path: str | Path) -> AggregatorConfig:
    """Read ``path`` (an aggregator.toml); its directory is the aggregator home."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {p} does not exist",
            hint="create the aggregator home with `aggregator init`, "
            "or pass --config DIR/aggregator.toml",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read {p}: {exc}", hint="check the path and its permissions"
        ) from None
    return parse_config(text, home=p.resolve().parent)


def write_default_config(
    path: str | Path,
    *,
    listen: str | None = None,
    store_backend: str = "sqlite",
    text: str = DEFAULT_TOML,
) -> Path:
    """Write the documented default aggregator.toml, or ``text`` (a startup kit's) after
    checking that it parses, with ``listen`` set when given (refuses to overwrite).

    ``store_backend="postgres"`` selects the PostgreSQL store reading its DSN from
    ``store.dsn`` next to the file (which the operator then creates, 0600).
    """
    p = Path(path)
    if listen is not None:
        _check_listen(listen)
        text = templates.fill(text, "server", "listen", listen)
    if store_backend not in STORE_BACKENDS:
        raise ConfigError(f"store backend {store_backend!r} is not one of {STORE_BACKENDS}")
    if store_backend == "postgres":
        text = text.replace('backend = "sqlite"  ', 'backend = "postgres"', 1)
        text = text.replace('# dsn_file = "store.dsn"', 'dsn_file = "store.dsn"  ', 1)
    parse_config(text, home=p.parent.resolve())
    return templates.write_new(p, text, mode=0o600)
