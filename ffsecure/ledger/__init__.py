"""Transparency ledger: RFC 9162 Merkle log, C2SP signed checkpoints, entries, offline verification."""
