"""What ``serve`` last saw of each site (``site_activity`` table), for every SQL backend.

One row per site id, never more: the last time the site was heard from (any
call, accepted or refused), and the last refusal (error code, method, time).
Site ids come from certificates that chained to the federation CA (TLS
checked the chain before the call reached the service), so the CA bounds the
number of rows; an id that is not a valid site id is never written. Nothing
here enters the ledger: it is operational state that ``aggregator status``
and the metrics show and a restart keeps, not evidence.

A mixin of :class:`aggregator.store.sql.SQLStore`, as
:mod:`aggregator.store.evaluations` is: it uses that class's transactions and
SQL that SQLite and PostgreSQL read the same way (``INSERT ... ON CONFLICT
... DO UPDATE``, ``?`` placeholders). :data:`SITES_SCHEMA` is the table, the
same text for both backends' schemas (SQLite schema 3, PostgreSQL ``pg-2``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from aggregator.store.base import SiteActivityRow
from ffsecure.errors import FormatError
from ffsecure.records.ids import SITE_ID

if TYPE_CHECKING:  # the connection protocol, defined next to the class this mixin serves
    from aggregator.store.sql import Conn

SITES_SCHEMA = """
CREATE TABLE IF NOT EXISTS site_activity(
    site_id TEXT PRIMARY KEY, last_contact TEXT NOT NULL,
    last_refusal_code TEXT, last_refusal_method TEXT, last_refusal_time TEXT)
"""

_COLS = "site_id, last_contact, last_refusal_code, last_refusal_method, last_refusal_time"


class SitesMixin:
    """``note_site`` / ``list_site_activity`` of :class:`aggregator.store.sql.SQLStore`."""

    if TYPE_CHECKING:  # what the mixin uses of SQLStore, declared for the type checker only

        def _write(self) -> AbstractContextManager[Conn]: ...
        def _read(self) -> AbstractContextManager[Conn]: ...

    def note_site(self, site_id: str, *, at: str, refusal: tuple[str, str] | None = None) -> None:
        if not SITE_ID.matches(site_id):
            raise FormatError(f"site id {site_id!r} is not {SITE_ID.rule}", code="E_SITE_ID")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO site_activity(site_id, last_contact) VALUES (?, ?) "
                "ON CONFLICT(site_id) DO UPDATE SET last_contact = excluded.last_contact",
                (site_id, at),
            )
            if refusal is not None:
                code, method = refusal
                conn.execute(
                    "UPDATE site_activity SET last_refusal_code = ?, last_refusal_method = ?, "
                    "last_refusal_time = ? WHERE site_id = ?",
                    (code, method, at, site_id),
                )

    def list_site_activity(self) -> list[SiteActivityRow]:
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_COLS} FROM site_activity ORDER BY site_id").fetchall()
        return [SiteActivityRow(*r) for r in rows]
