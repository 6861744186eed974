"""The aggregator's module store and transparency ledger (interface, SQLite and PostgreSQL).

``aggregator.toml``'s ``[store]`` table picks the backend; :func:`open_home_store`,
:func:`open_store` and :func:`open_store_for_reading` are the one place that reads it.
"""

from aggregator.config import AggregatorConfig, load_config
from aggregator.home import (
    AggregatorHome,
    LogSigner,
    load_kek,
    load_log_key,
    load_or_create_kek,
    load_or_create_log_key,
)
from aggregator.store.base import (
    ArtifactRow,
    EvaluationRow,
    LedgerSnapshot,
    ModuleRow,
    SiteActivityRow,
    Store,
    check_module_id,
)
from aggregator.store.postgres import PostgresStore
from aggregator.store.sql import SQLStore
from aggregator.store.sqlite import SQLiteStore

__all__ = [
    "ArtifactRow",
    "EvaluationRow",
    "SiteActivityRow",
    "LedgerSnapshot",
    "ModuleRow",
    "PostgresStore",
    "SQLStore",
    "Store",
    "SQLiteStore",
    "check_module_id",
    "home_config",
    "home_has_store",
    "open_home_store",
    "open_store",
    "open_store_for_reading",
]


def home_config(home: AggregatorHome) -> AggregatorConfig:
    """The home's aggregator.toml, or the defaults (SQLite) when it has none."""
    if home.config.is_file():
        return load_config(home.config)
    return AggregatorConfig(home=home.root)


def home_has_store(home: AggregatorHome) -> bool:
    """Whether the home's store exists: its ``store.sqlite``, or a PostgreSQL DSN configured."""
    return home_config(home).store.backend == "postgres" or home.store_db.is_file()


def open_store(
    config: AggregatorConfig, *, origin: str, kek: bytes, log_signer: LogSigner
) -> SQLStore:
    """Open the store that ``config.store`` names, in ``config.home``."""
    if config.store.backend == "postgres":
        return PostgresStore.open(config.store_dsn(), origin=origin, kek=kek, log_signer=log_signer)
    return SQLiteStore.open(config.home, origin=origin, kek=kek, log_signer=log_signer)


def open_home_store(home, *, origin: str | None = None, create: bool = False) -> SQLStore:
    """Open the store of an aggregator home with its own keys (created when ``create``)."""
    h = home if isinstance(home, AggregatorHome) else AggregatorHome.at(home)
    if create:
        kek, signer = load_or_create_kek(h), load_or_create_log_key(h, origin)
    else:
        kek, signer = load_kek(h), load_log_key(h)
    return open_store(home_config(h), origin=signer.name, kek=kek, log_signer=signer)


def open_store_for_reading(
    config: AggregatorConfig, *, kek: bytes, log_signer: LogSigner
) -> SQLStore:
    """Open an existing store beside a live ``serve`` without disturbing it (``aggregator check``).

    SQLite: read-only (:meth:`SQLiteStore.open_read_only`: no file lock, no chmod, no
    clean-up). PostgreSQL: the normal open, which takes no file lock and on a store of this
    release changes nothing (its schema statements are ``IF NOT EXISTS``; its advisory lock
    is held for one short transaction).
    """
    if config.store.backend == "postgres":
        return PostgresStore.open(
            config.store_dsn(), origin=log_signer.name, kek=kek, log_signer=log_signer
        )
    return SQLiteStore.open_read_only(
        AggregatorHome.at(config.home), kek=kek, log_signer=log_signer
    )
