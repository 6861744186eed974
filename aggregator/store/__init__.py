"""The aggregator's module store and transparency ledger (interface + SQLite backend)."""

from aggregator.home import (
    AggregatorHome,
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
from aggregator.store.sqlite import SQLiteStore

__all__ = [
    "ArtifactRow",
    "EvaluationRow",
    "SiteActivityRow",
    "LedgerSnapshot",
    "ModuleRow",
    "Store",
    "SQLiteStore",
    "check_module_id",
    "open_home_store",
]


def open_home_store(home, *, origin: str | None = None, create: bool = False) -> SQLiteStore:
    """Open the store of an aggregator home with its own keys (created when ``create``)."""
    h = home if isinstance(home, AggregatorHome) else AggregatorHome.at(home)
    if create:
        kek, signer = load_or_create_kek(h), load_or_create_log_key(h, origin)
    else:
        kek, signer = load_kek(h), load_log_key(h)
    return SQLiteStore.open(h, origin=signer.name, kek=kek, log_signer=signer)
