"""Sites' evaluation reports (``evaluations`` table), for every SQL backend.

One row per (site, classifier): the canonical report (``ffsecure.evalreport``),
the salt the aggregator drew, the commitment in the ledger and the index of
the ``classifier.evaluated`` entry, written in the transaction that appends
the entry. A mixin of :class:`aggregator.store.sql.SQLStore`: it uses that
class's transactions and ledger internals, and the SQL both databases share.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from aggregator.store.base import EvaluationRow, check_artifact
from ffsecure import canonical
from ffsecure.errors import FFSecureError, FormatError, LedgerError, NotFoundError, StoreError
from ffsecure.evalreport import EvaluationReport, commitment
from ffsecure.ledger.merkle import NodeReader, inclusion_proof_from
from ffsecure.records.entries import EntryType, entry_bytes
from ffsecure.records.ids import SITE_ID
from ffsecure.records.receipts import Receipt

if TYPE_CHECKING:  # the connection protocol, defined next to the class this mixin serves
    from aggregator.store.sql import Conn

log = logging.getLogger("aggregator.store")


_COLS = "site_id, classifier_id, report, report_sha256, salt, entry_index, created"


def _row(r: tuple) -> EvaluationRow:
    return EvaluationRow(r[0], r[1], canonical.loads(bytes(r[2])), r[3], r[4], r[5], r[6])


class EvaluationsMixin:
    """``put_evaluation`` / ``list_evaluations`` and their share of ``verify_integrity``."""

    if TYPE_CHECKING:  # what the mixin uses of SQLStore, declared for the type checker only

        def _write(self) -> AbstractContextManager[Conn]: ...
        def _read(self) -> AbstractContextManager[Conn]: ...
        def _append_locked(self, conn: Conn, data: bytes, kind: str) -> int: ...
        def _checkpoint_locked(self, conn: Conn) -> tuple[int, str]: ...
        @staticmethod
        def _nodes(conn: Conn) -> NodeReader: ...

    def put_evaluation(
        self, *, site_id: str, report: bytes, salt: str, entry: dict
    ) -> tuple[EvaluationRow, Receipt]:
        if not SITE_ID.matches(site_id):
            raise FormatError(f"site id {site_id!r} is not {SITE_ID.rule}", code="E_SITE_ID")
        rep = EvaluationReport.from_dict(canonical.loads_canonical(bytes(report)))
        check_artifact("classifier", rep.classifier_id)
        data = entry_bytes(entry)
        facts = entry["facts"]
        expected = {
            "type": EntryType.CLASSIFIER_EVALUATED,
            "actor": f"site:{site_id}",
            "classifier_id": rep.classifier_id,
            "site_id": site_id,
            "report_sha256": commitment(rep, salt),
        }
        got = {
            "type": entry["type"],
            "actor": entry["actor"],
            **{k: facts.get(k) for k in list(expected)[2:]},
        }
        wrong = [k for k in expected if got[k] != expected[k]]
        if wrong:
            raise LedgerError(
                "the classifier.evaluated entry does not match the report: "
                f"{', '.join(wrong)} differ",
                code="E_ENTRY",
                hint="build the entry with ffsecure.evalreport.ledger_facts",
            )
        with self._write() as conn:
            row = conn.execute(
                "SELECT status FROM artifacts WHERE kind = 'classifier' AND artifact_id = ?",
                (rep.classifier_id,),
            ).fetchone()
            if row is None:
                raise NotFoundError(
                    f"no classifier {rep.classifier_id}",
                    code="E_NO_CLASSIFIER",
                    hint="report on a classifier fetched with GetClassifier",
                )
            if row[0] == "retired":
                raise StoreError(
                    f"classifier {rep.classifier_id} was retired",
                    code="E_CLASSIFIER_RETIRED",
                    hint="evaluate the classifier published now",
                )
            prev = conn.execute(
                f"SELECT {_COLS} FROM evaluations WHERE site_id = ? AND classifier_id = ?",
                (site_id, rep.classifier_id),
            ).fetchone()
            if prev is not None:
                if not hmac.compare_digest(bytes(prev[2]), bytes(report)):
                    raise StoreError(
                        f"site {site_id} already reported other metrics for classifier "
                        f"{rep.classifier_id} (entry {prev[5]})",
                        code="E_EVALUATION_EXISTS",
                        hint="a site reports once per classifier; evaluate the next one",
                    )
                index, existing, stored = prev[5], True, _row(prev)
                data = bytes(
                    conn.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()[0]
                )
            else:
                index, existing = (
                    self._append_locked(conn, data, EntryType.CLASSIFIER_EVALUATED),
                    False,
                )
                conn.execute(
                    f"INSERT INTO evaluations({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        site_id,
                        rep.classifier_id,
                        bytes(report),
                        expected["report_sha256"],
                        salt,
                        index,
                        entry["time"],
                    ),
                )
                stored = EvaluationRow(
                    site_id,
                    rep.classifier_id,
                    rep.to_dict(),
                    expected["report_sha256"],
                    salt,
                    index,
                    entry["time"],
                )
            size, note = self._checkpoint_locked(conn)
            proof = inclusion_proof_from(self._nodes(conn), index, size)
        if not existing:
            log.info(
                "evaluation of %s by site %s recorded as entry %d",
                rep.classifier_id,
                site_id,
                index,
            )
        return stored, Receipt(index, data, size, note, proof, existing=existing)

    def list_evaluations(self, classifier_id: str | None = None) -> list[EvaluationRow]:
        with self._read() as conn:
            if classifier_id is None:
                rows = conn.execute(
                    f"SELECT {_COLS} FROM evaluations ORDER BY entry_index"
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_COLS} FROM evaluations WHERE classifier_id = ? ORDER BY entry_index",
                    (classifier_id,),
                ).fetchall()
        return [_row(r) for r in rows]

    def _check_evaluations(
        self, conn: Conn, evaluated: dict[int, dict], corrupt: Callable[[str], StoreError]
    ) -> int:
        """Every row has its entry (same site, classifier, commitment) and every entry its row."""
        rows = conn.execute(f"SELECT {_COLS} FROM evaluations").fetchall()
        for r in rows:
            e = evaluated.get(r[5])
            f = e["facts"] if e else {}
            if (
                e is None
                or (f.get("site_id"), f.get("classifier_id"), f.get("report_sha256"))
                != (r[0], r[1], r[3])
                or e["actor"] != f"site:{r[0]}"
            ):
                raise corrupt(
                    f"evaluation of {r[1]} by {r[0]} has no matching classifier.evaluated entry"
                )
            try:
                ok = (
                    commitment(
                        EvaluationReport.from_dict(canonical.loads_canonical(bytes(r[2]))), r[4]
                    )
                    == r[3]
                )
            except FFSecureError:
                ok = False
            if not ok:
                raise corrupt(
                    f"the stored evaluation of {r[1]} by {r[0]} "
                    "does not hash to its ledger commitment"
                )
        if len(rows) != len(evaluated):
            raise corrupt("a classifier.evaluated entry has no stored evaluation")
        return len(rows)
