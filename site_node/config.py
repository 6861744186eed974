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
from enum import StrEnum
from pathlib import Path
from typing import Any

from ffsecure import pki, templates
from ffsecure.commands.pki import SITE_PASSPHRASE_ENV, read_passphrase
from ffsecure.dp import (
    MAX_CLAIMED_EPSILON,
    MAX_DELTA,
    MECHANISM_CHOICES,
    PRIVACY_UNITS,
    SITE_MAX_EPSILON,
)
from ffsecure.errors import ConfigError
from ffsecure.privacy.policy import POLICY_FIELDS, THRESHOLDS, SiteLimits
from ffsecure.records import fields
from ffsecure.records.ids import parse_port

DEFAULT_TOML = templates.read("site.toml")


def _cfg_error(key: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"site.toml key {key}: {problem}", hint=fix)


_STR = fields.Str()
_COUNT = fields.Int(0)  # a non-negative integer, never a bool
_SECONDS = fields.Float(0.0)  # a non-negative finite number, never a bool
_CLASSES = fields.List(fields.AnyOf((fields.Str(), fields.Int())))


def _f(spec: fields.Spec, default: Any = fields.MISSING) -> fields.Field:
    return fields.Field(spec, default)


class PrivacyCheck(StrEnum):
    """When the site runs its own privacy check (site.toml ``privacy.check``)."""

    ALWAYS = "always"  # before every module is signed, whatever the federation's manifest says
    FEDERATION = "federation"  # only when the federation's manifest requires a privacy report


def _privacy_table() -> dict[str, fields.Field]:
    """``[privacy]``: when the check runs, and a limit of the site's own on each figure the
    federation's policy knows (the range of the federation's key; the default of
    :class:`ffsecure.privacy.policy.SiteLimits`, absent: no limit of the site's)."""
    table = {"check": _f(fields.Str(options=tuple(PrivacyCheck)), str(PrivacyCheck.ALWAYS))}
    for key in THRESHOLDS:
        _kind, low, high = POLICY_FIELDS[key]
        default = SiteLimits().get(key)
        table[key] = _f(fields.Float(low, high), fields.OMIT if default is None else default)
    return table


#: table -> key -> field spec and default (no default: the key is required). The ranges beyond
#: "not negative" and the paths are checked by ``_build``, which names the key and the fix.
SCHEMA: dict[str, dict[str, fields.Field]] = {
    "site": {"federation_id": _f(_STR), "site_id": _f(_STR), "state_dir": _f(_STR, "state")},
    "pki": {"key": _f(_STR, ""), "passphrase_file": _f(_STR, ""), "csr": _f(_STR, "")},
    "aggregator": {
        "endpoint": _f(_STR, ""),
        "server_name": _f(_STR, ""),
        "timeout_s": _f(_SECONDS, 30.0),
        "upload_timeout_s": _f(_SECONDS, 600.0),
        "chunk_bytes": _f(_COUNT, 1 << 20),
        "max_upload_bytes_per_s": _f(_COUNT, 0),
        "max_attempts": _f(_COUNT, 8),
        "base_delay_s": _f(_SECONDS, 0.2),
        "max_delay_s": _f(_SECONDS, 10.0),
    },
    "data": {
        "source": _f(_STR),
        "root": _f(_STR, ""),
        "classes": _f(_CLASSES, ()),
        "label_match": _f(_STR, "name"),
        "split_seed": _f(_COUNT, 0),
        "privacy_unit": _f(fields.Str(options=PRIVACY_UNITS), "image"),
    },
    "train": {
        "size": _f(_STR, "default"),
        "epochs": _f(_COUNT, 0),
        "batch_size": _f(_COUNT, 0),
        "lr": _f(_SECONDS, 0.0),
        "seed": _f(_COUNT, 0),
        "device": _f(_STR, "cpu"),
        "threads": _f(_COUNT, 1),
    },
    "dp": {
        "enabled": _f(fields.Bool(), None),
        "target_epsilon": _f(_SECONDS, 0.0),
        "max_epsilon": _f(_SECONDS, SITE_MAX_EPSILON),
        "max_total_epsilon": _f(_SECONDS, 0.0),
        "delta": _f(_SECONDS, 0.0),
        "max_grad_norm": _f(_SECONDS, 1.0),
        "accountant": _f(_STR, "prv"),
        "mechanism": _f(fields.Str(options=MECHANISM_CHOICES), "auto"),
    },
    "daemon": {
        "poll_interval_s": _f(_SECONDS, 300.0),
        "retry_interval_s": _f(_SECONDS, 60.0),
        "trigger_file": _f(_STR, ""),
    },
    "privacy": _privacy_table(),
    "monitoring": {"textfile_dir": _f(_STR, "")},
}
REQUIRED_TABLES = {"site", "data"}
#: The whole file: an exact set of tables (the optional ones filled with their defaults).
SITE_SPEC = fields.Table(
    {
        table: fields.Field(
            fields.Table(keys), default=fields.MISSING if table in REQUIRED_TABLES else {}
        )
        for table, keys in SCHEMA.items()
    }
)


@dataclass(frozen=True)
class DPLimits:
    """This site's own epsilon ceilings (site.toml ``[dp]``), whatever the federation allows.

    ``max_epsilon`` bounds one release, ``max_total_epsilon`` every DP module trained on the
    site's data composed, released or not (:mod:`site_node.budget`). A release never exceeds
    the total either, so :attr:`per_release` is the smaller of the two. The default of both is
    :data:`ffsecure.dp.SITE_MAX_EPSILON` (8): by default the whole life of the site's data stays
    within the epsilon of one release at the ceiling.
    """

    max_epsilon: float = SITE_MAX_EPSILON
    max_total_epsilon: float = SITE_MAX_EPSILON

    @classmethod
    def from_table(cls, dp: dict[str, Any]) -> DPLimits:
        """From site.toml's ``[dp]`` (as parsed; a key left out takes its default, and
        ``max_total_epsilon = 0`` means ``max_epsilon``)."""
        ceiling = float(dp.get("max_epsilon") or SITE_MAX_EPSILON)
        return cls(ceiling, float(dp.get("max_total_epsilon") or ceiling))

    @property
    def per_release(self) -> float:
        """The largest epsilon one release may be trained at."""
        return min(self.max_epsilon, self.max_total_epsilon)

    @property
    def per_release_key(self) -> str:
        """The site.toml key that sets :attr:`per_release`."""
        if self.max_total_epsilon < self.max_epsilon:
            return "dp.max_total_epsilon"
        return "dp.max_epsilon"


@dataclass(frozen=True)
class SitePrivacy:
    """This site's own privacy check (site.toml ``[privacy]``), whatever the federation asks.

    ``check`` says when it runs (by default before every module); ``limits`` are the site's
    own limits on the measured figures, which the federation's policy may tighten, never
    loosen (:func:`ffsecure.privacy.policy.limits_in_force`), as ``[dp]`` bounds epsilon.
    """

    check: PrivacyCheck = PrivacyCheck.ALWAYS
    limits: SiteLimits = SiteLimits()

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> SitePrivacy:
        """From site.toml's ``[privacy]`` as parsed (defaults filled in, ranges checked)."""
        limits = {key: table.get(key) for key in THRESHOLDS}
        return cls(PrivacyCheck(table["check"]), SiteLimits(**limits))

    def runs(self, required: bool) -> bool:
        """Whether the check runs, ``required``: the federation requires a privacy report."""
        return required or self.check is PrivacyCheck.ALWAYS


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
    privacy_unit: str = "image"  # ffsecure.dp.PRIVACY_UNITS; "patient" needs a dicom: source
    train: dict = field(default_factory=dict)
    dp: dict = field(default_factory=dict)
    poll_interval_s: float = 300.0
    retry_interval_s: float = 60.0
    trigger_file: Path | None = None
    textfile_dir: Path | None = None  # node-exporter textfile collector folder (site_node.textfile)
    privacy: SitePrivacy = SitePrivacy()  # the site's own privacy check ([privacy])

    @property
    def dp_limits(self) -> DPLimits:
        """This site's own epsilon ceilings (``[dp]`` ``max_epsilon``, ``max_total_epsilon``)."""
        return DPLimits.from_table(self.dp)

    def passphrase(self) -> bytes | None:
        """The site key's passphrase file: ``pki.passphrase_file``, else
        ``$FFSECURE_SITE_PASSPHRASE_FILE``."""

        if self.passphrase_file is None:
            return read_passphrase(os.environ.get(SITE_PASSPHRASE_ENV))
        return read_passphrase(str(self.passphrase_file))


def _leaf_error(table: str, key: str, value: Any) -> ConfigError:
    name, spec = f"{table}.{key}", SCHEMA[table][key].spec
    if isinstance(spec, fields.Str) and spec.options is not None and isinstance(value, str):
        choices = " | ".join(spec.options)
        return _cfg_error(
            name, f"{value!r} is not one of {choices}", f'write {key} = "{spec.options[0]}"'
        )
    if isinstance(spec, fields.Str):
        got = type(value).__name__
        return _cfg_error(name, f"must be a string, got {got}", f'write {key} = "..."')
    if isinstance(spec, fields.Bool):
        return _cfg_error(name, "must be true or false", f"write {key} = true, or remove the line")
    if isinstance(spec, fields.Int):
        return _cfg_error(
            name, f"must be a non-negative integer, got {value!r}", f"write {key} = 0 or more"
        )
    if isinstance(spec, fields.Float) and spec.lo is not None and spec.hi is not None:
        return _cfg_error(
            name,
            f"must be {spec.describe()}, got {value!r}",
            f"write {key} = a number from {spec.lo:g} to {spec.hi:g} (docs/site-operator.md)",
        )
    if isinstance(spec, fields.Float):
        return _cfg_error(
            name, f"must be a non-negative number, got {value!r}", f"write {key} = 0.0 or more"
        )
    return _cfg_error(
        name, "must be a list of class names or indices", f'write {key} = ["normal"] or [0]'
    )


def _site_error(exc: fields.FieldError) -> ConfigError:
    """The E_CONFIG message of a spec failure: it names the key (or table) and the fix."""
    table, _, rest = exc.key.partition(".")
    key = rest.partition("[")[0]
    if not table:  # the file holds a table it does not know
        return _cfg_error(
            f"[{exc.keys[0]}]",
            "is not a known table",
            f"use only {sorted(SCHEMA)}; see docs/site-operator.md",
        )
    if not key and exc.problem is fields.Problem.MISSING:
        return _cfg_error(f"[{table}]", "is missing", "add the table (see docs/site-operator.md)")
    if not key and exc.problem is fields.Problem.UNKNOWN:
        return _cfg_error(
            f"{table}.{exc.keys[0]}",
            "is not a known key",
            f"remove it; [{table}] takes {sorted(SCHEMA[table])}",
        )
    if not key:
        return _cfg_error(table, "must be a table", f"write [{table}] on its own line")
    if exc.problem is fields.Problem.MISSING:
        return _cfg_error(f"{table}.{key}", "is required", f"add {key} = ... to [{table}]")
    value = exc.value if key == rest else None  # a list item: name the list
    return _leaf_error(table, key, value)


def parse_config(text: str, path: Path) -> SiteConfig:
    """Parse the text of ``site.toml`` (at ``path``, whose folder anchors relative paths)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}", hint="fix the syntax at the position shown"
        ) from None
    values = fields.check(SITE_SPEC, raw, error=_site_error)
    values["data"]["classes"] = tuple(values["data"]["classes"])
    return _build(values, path)


def _build(v: dict[str, dict[str, Any]], path: Path) -> SiteConfig:

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
        source == "digits" or source.startswith(("npz:", "folder:", "dicom:", "medmnist:"))
    ) or source.endswith(":"):
        raise _cfg_error(
            "data.source",
            f"{source!r} is not a known data source",
            'use "npz:PATH", "folder:PATH", "dicom:PATH", "digits" or "medmnist:NAME"',
        )
    if source.startswith(("npz:", "folder:", "dicom:")):
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
    if dp["delta"] > MAX_DELTA:
        raise _cfg_error(
            "dp.delta",
            f"must be at most {MAX_DELTA:g} (every verifier refuses a larger one)",
            "use e.g. 1e-5, or 0 for the default",
        )
    if dp["max_grad_norm"] <= 0:
        raise _cfg_error("dp.max_grad_norm", "must be above 0", "use e.g. 1.0")
    _check_epsilon_limits(dp)
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
        privacy_unit=data["privacy_unit"],
        train=train,
        dp=dp,
        poll_interval_s=daemon["poll_interval_s"],
        retry_interval_s=daemon["retry_interval_s"],
        trigger_file=resolve(daemon["trigger_file"])
        if daemon["trigger_file"]
        else state / "train.now",
        textfile_dir=resolve(v["monitoring"]["textfile_dir"])
        if v["monitoring"]["textfile_dir"]
        else None,
        privacy=SitePrivacy.from_table(v["privacy"]),
    )


def _check_epsilon_limits(dp: dict[str, Any]) -> None:
    """``dp.max_epsilon`` in (0, MAX_CLAIMED_EPSILON]; ``dp.max_total_epsilon`` at most that too
    (0 = ``max_epsilon``). How a target compares with them is ``training.resolve_dp``'s rule."""
    if not 0 < dp["max_epsilon"] <= MAX_CLAIMED_EPSILON:
        raise _cfg_error(
            "dp.max_epsilon",
            f"must be above 0 and at most {MAX_CLAIMED_EPSILON:g}",
            f"use e.g. {SITE_MAX_EPSILON:g} (the default; docs/site-operator.md)",
        )
    if dp["max_total_epsilon"] > MAX_CLAIMED_EPSILON:
        raise _cfg_error(
            "dp.max_total_epsilon",
            f"must be at most {MAX_CLAIMED_EPSILON:g}",
            "use e.g. 0 (= dp.max_epsilon, the default)",
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
