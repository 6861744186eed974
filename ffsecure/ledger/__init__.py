"""Transparency ledger: RFC 9162 Merkle log, C2SP signed checkpoints, entries, offline verification.

Everything here is pure logic (no database, no network) so that sites and
auditors can verify receipts and exported bundles without the aggregator.
"""

from ffsecure.ledger.checkpoint import (
    Checkpoint,
    make_vkey,
    open_checkpoint,
    open_note,
    parse_signer_key,
    parse_vkey,
    sign_checkpoint,
    sign_note,
)
from ffsecure.ledger.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    compute_consistency_proof,
    compute_inclusion_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from ffsecure.ledger.verify import LogReport, verify_bundle_log, verify_log
from ffsecure.records.entries import ENTRY_TYPES, entry_bytes, make_entry, validate_entry

__all__ = [
    "Checkpoint",
    "make_vkey",
    "open_checkpoint",
    "open_note",
    "parse_signer_key",
    "parse_vkey",
    "sign_checkpoint",
    "sign_note",
    "ENTRY_TYPES",
    "entry_bytes",
    "make_entry",
    "validate_entry",
    "EMPTY_ROOT",
    "MemoryTree",
    "compute_consistency_proof",
    "compute_inclusion_proof",
    "leaf_hash",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
    "LogReport",
    "verify_bundle_log",
    "verify_log",
]
