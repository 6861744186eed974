"""Receipts: the proof an aggregator hands back that an entry is in its log.

One record, :class:`Receipt`, is what the store returns, what travels as
``ffsecure.v1.Receipt`` and what a site keeps: the entry's index, its exact
bytes, the tree size and signed checkpoint note it was proven against, the
RFC 9162 inclusion proof, whether the entry existed before the call, and,
for a ``module.registered`` entry, the module id. :class:`EvaluationReceipt`
composes a receipt with what the site's evaluation adds (classifier id, the
salt and the report commitment it checked).

Kept form (site state, ``STATE/modules/<id>/module.json`` and
``evaluation.json``): a JSON object with the bytes in standard base64
(``to_dict``); an upload receipt has exactly the keys ``module_id``,
``index``, ``entry``, ``tree_size``, ``checkpoint``, ``inclusion_proof`` and
``existing``, as files written before this module existed do.
:meth:`Receipt.from_dict` reads it strictly: every key present with its JSON
type (no bool for an integer) and base64 that is canonical (the unused bits
of the last character are zero), so damage is an error the caller names,
never a receipt that differs from the one kept. A receipt says nothing until
it is verified (``site_node.client.verify_receipt``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ffsecure.canonical import b64decode_canonical
from ffsecure.v1 import aggregator_pb2 as pb

__all__ = ["EvaluationReceipt", "Receipt"]

#: The kept keys of an upload receipt and the JSON type each must have.
_KEPT_TYPES: dict[str, type] = {
    "module_id": str,
    "index": int,
    "entry": str,
    "tree_size": int,
    "checkpoint": str,
    "inclusion_proof": list,
    "existing": bool,
}
_SAID = {str: "a string", int: "an integer", list: "a list", bool: "true or false"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class Receipt:
    """Proof that ``entry`` is leaf ``index`` of the tree the ``checkpoint`` note signs."""

    index: int
    entry: bytes
    tree_size: int
    checkpoint: str
    inclusion_proof: list[bytes]
    existing: bool
    module_id: str | None = None  # set on the receipt of a module.registered entry

    def to_dict(self) -> dict[str, Any]:
        """The kept JSON form (bytes in base64); ``module_id`` only when the receipt has one."""
        kept: dict[str, Any] = {} if self.module_id is None else {"module_id": self.module_id}
        kept.update(
            index=self.index,
            entry=_b64(self.entry),
            tree_size=self.tree_size,
            checkpoint=self.checkpoint,
            inclusion_proof=[_b64(h) for h in self.inclusion_proof],
            existing=self.existing,
        )
        return kept

    @classmethod
    def from_dict(cls, kept: Any, *, damaged: Callable[[str], Exception]) -> Receipt:
        """Read an upload receipt kept by :meth:`to_dict`; raise ``damaged(why)`` if it is not."""
        if not isinstance(kept, dict):
            raise damaged("it is not a JSON object")
        for name, kind in _KEPT_TYPES.items():
            if name not in kept:
                raise damaged(f"it has no {name}")
            value = kept[name]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise damaged(f"its {name} is not {_SAID[kind]}")

        def unb64(name: str, text: Any) -> bytes:
            raw = b64decode_canonical(text)
            if raw is None:
                raise damaged(f"its {name} is not canonical base64")
            return raw

        proof = [unb64("inclusion_proof", h) for h in kept["inclusion_proof"]]
        return cls(
            index=kept["index"],
            entry=unb64("entry", kept["entry"]),
            tree_size=kept["tree_size"],
            checkpoint=kept["checkpoint"],
            inclusion_proof=proof,
            existing=kept["existing"],
            module_id=kept["module_id"],
        )

    @classmethod
    def from_pb(cls, message: pb.Receipt) -> Receipt:
        """The receipt of an upload as the aggregator sent it (not yet verified)."""
        return cls(
            module_id=message.module_id,
            index=message.index,
            entry=bytes(message.entry),
            tree_size=message.tree_size,
            checkpoint=message.checkpoint,
            inclusion_proof=[bytes(h) for h in message.inclusion_proof],
            existing=message.existing,
        )

    def to_pb(self) -> pb.Receipt:
        """The ``ffsecure.v1.Receipt`` of this receipt (``module_id`` empty when it has none)."""
        return pb.Receipt(
            module_id=self.module_id or "",
            index=self.index,
            entry=self.entry,
            tree_size=self.tree_size,
            checkpoint=self.checkpoint,
            inclusion_proof=list(self.inclusion_proof),
            existing=self.existing,
        )


@dataclass(frozen=True)
class EvaluationReceipt:
    """The receipt of a site's ``classifier.evaluated`` entry, checked against its report."""

    classifier_id: str
    salt: str
    receipt: Receipt
    report_sha256: str

    @property
    def index(self) -> int:
        return self.receipt.index

    @property
    def entry(self) -> bytes:
        return self.receipt.entry

    @property
    def tree_size(self) -> int:
        return self.receipt.tree_size

    @property
    def checkpoint(self) -> str:
        return self.receipt.checkpoint

    @property
    def inclusion_proof(self) -> list[bytes]:
        return self.receipt.inclusion_proof

    @property
    def existing(self) -> bool:
        return self.receipt.existing

    def to_dict(self) -> dict[str, Any]:
        """The kept JSON form: the receipt's keys plus classifier_id, salt and report_sha256."""
        return {
            "classifier_id": self.classifier_id,
            "salt": self.salt,
            **self.receipt.to_dict(),
            "report_sha256": self.report_sha256,
        }
