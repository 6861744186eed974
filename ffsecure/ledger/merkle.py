"""RFC 9162 Merkle tree hashing, inclusion and consistency proofs.

Hashing (RFC 9162 section 2.1.1): the empty tree hashes to SHA-256 of the
empty string, a leaf to SHA-256(0x00 || entry) and an interior node to
SHA-256(0x01 || left || right); a tree of n > 1 leaves splits at k, the
largest power of two smaller than n.

Proofs are built from *perfect subtree* hashes: node (level, index) covers
leaves [index * 2**level, (index + 1) * 2**level). Such a node never changes
once its last leaf is appended, so a log keeps them (in memory here, in
SQLite in the aggregator's store) and answers any root or proof with
O(log n) node reads instead of rehashing the log. The verifiers follow the
algorithms of RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by step.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Protocol

from ffsecure.errors import LedgerError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 || entry): the hash of one log entry."""
    return hashlib.sha256(b"\x00" + bytes(entry)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k with k < n <= 2k, for n > 1."""
    return 1 << ((n - 1).bit_length() - 1)


class NodeReader(Protocol):
    """Source of perfect-subtree hashes: ``node(level, index)``."""

    def node(self, level: int, index: int) -> bytes: ...


def subtree_hash(reader: NodeReader, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range that is a perfect subtree or ends at a tree edge.

    Every range that RFC 9162's PATH and SUBPROOF visit has this shape: it
    starts on a multiple of a power of two and is either that power of two
    long or the right edge of the tree. O(log n) node reads.
    """
    n = end - start
    if n <= 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and start % n == 0:
        return reader.node(n.bit_length() - 1, start // n)
    k = _largest_power_of_two_below(n)
    return node_hash(subtree_hash(reader, start, start + k), subtree_hash(reader, start + k, end))


def root_from(reader: NodeReader, size: int) -> bytes:
    """The root hash of the first ``size`` leaves."""
    return subtree_hash(reader, 0, size)


def inclusion_proof_from(reader: NodeReader, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 section 2.1.3.1, leaf side first."""
    if not 0 <= index < size:
        raise LedgerError(
            f"leaf index {index} is outside a tree of size {size}",
            code="E_PROOF",
            hint="ask for an index below the tree size",
        )
    path: list[bytes] = []
    start, end = 0, size
    # Walk down from the root, recording the sibling at each split; the RFC
    # lists them from the leaf up, so reverse at the end.
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if index < start + k:
            path.append(subtree_hash(reader, start + k, end))
            end = start + k
        else:
            path.append(subtree_hash(reader, start, start + k))
            start = start + k
    path.reverse()
    return path


def consistency_proof_from(reader: NodeReader, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) of RFC 9162 section 2.1.4.1."""
    if not 0 <= old_size <= new_size:
        raise LedgerError(
            f"cannot prove consistency from size {old_size} to size {new_size}",
            code="E_PROOF",
            hint="the old size must be between 0 and the new size",
        )
    if old_size == 0 or old_size == new_size:
        return []
    proof: list[bytes] = []
    m, start, end, complete = old_size, 0, new_size, True
    # SUBPROOF(m, D[start:end], complete), unrolled; also recorded root side
    # first and reversed at the end.
    while m != end - start:
        k = _largest_power_of_two_below(end - start)
        if m <= k:
            proof.append(subtree_hash(reader, start + k, end))
            end = start + k
        else:
            proof.append(subtree_hash(reader, start, start + k))
            m -= k
            start += k
            complete = False
    if not complete:
        proof.append(subtree_hash(reader, start, end))
    proof.reverse()
    return proof


class MemoryTree:
    """An append-only Merkle tree held in memory (perfect-subtree hashes by level)."""

    def __init__(self, leaf_hashes: Sequence[bytes] = ()):
        self._levels: list[list[bytes]] = [[]]
        for h in leaf_hashes:
            self.append_hash(h)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def node(self, level: int, index: int) -> bytes:
        return self._levels[level][index]

    def append(self, entry: bytes) -> int:
        """Append an entry's bytes; returns its index."""
        return self.append_hash(leaf_hash(entry))

    def append_hash(self, h: bytes) -> int:
        """Append a leaf hash; completes the perfect subtrees it closes."""
        index = self.size
        for level, _idx, value in new_nodes(self, index, h):
            if level == len(self._levels):
                self._levels.append([])
            self._levels[level].append(value)
        return index

    def root(self, size: int | None = None) -> bytes:
        return root_from(self, self.size if size is None else self._check_size(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof_from(
            self, index, self.size if size is None else self._check_size(size)
        )

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        size = self.size if new_size is None else self._check_size(new_size)
        return consistency_proof_from(self, old_size, size)

    def _check_size(self, size: int) -> int:
        if not 0 <= size <= self.size:
            raise LedgerError(
                f"tree size {size} is larger than the log ({self.size} entries)",
                code="E_PROOF",
                hint="ask for a size the log has reached",
            )
        return size


def new_nodes(reader: NodeReader, index: int, h: bytes) -> list[tuple[int, int, bytes]]:
    """Nodes (level, index, hash) to store when leaf ``index`` with hash ``h`` is appended.

    The leaf itself, plus one parent for every perfect subtree it completes
    (amortised two hashes per append, at most log2(n)).
    """
    out = [(0, index, h)]
    level, idx, value = 0, index, h
    while idx & 1:
        value = node_hash(reader.node(level, idx - 1), value)
        level, idx = level + 1, idx >> 1
        out.append((level, idx, value))
    return out


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes (``leaf_hash(entry)`` of each entry)."""
    return MemoryTree(leaf_hashes).root()


def compute_inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The inclusion proof of leaf ``index`` in the tree of all ``leaf_hashes``."""
    return MemoryTree(leaf_hashes).inclusion_proof(index)


def compute_consistency_proof(
    leaf_hashes: Sequence[bytes], old_size: int, new_size: int | None = None
) -> list[bytes]:
    """The consistency proof from ``old_size`` to ``new_size`` (default: all leaves)."""
    return MemoryTree(leaf_hashes).consistency_proof(old_size, new_size)


def _fail(message: str) -> LedgerError:
    return LedgerError(
        message,
        code="E_PROOF",
        hint="the log or the proof was altered, or the wrong tree size or root was used",
    )


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != HASH_SIZE:
        raise _fail(f"{what} is not a {HASH_SIZE}-byte SHA-256 hash")


def root_from_inclusion_proof(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes]
) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 section 2.1.3.2, steps 1-4)."""
    _check_hash(leaf, "leaf hash")
    if not 0 <= index < tree_size:
        raise _fail(f"leaf index {index} is not below the tree size {tree_size}")
    fn, sn, r = index, tree_size - 1, bytes(leaf)
    for i, p in enumerate(proof):
        _check_hash(p, f"inclusion proof element {i}")
        if sn == 0:
            raise _fail(
                f"inclusion proof has {len(proof)} elements, "
                f"more than a tree of size {tree_size} needs"
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise _fail(
            f"inclusion proof has {len(proof)} elements, "
            f"fewer than a tree of size {tree_size} needs"
        )
    return r


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` (a leaf hash) is entry ``index`` of the tree with ``root``.

    Raises :class:`LedgerError` ``E_PROOF`` when it is not.
    """
    _check_hash(root, "root hash")
    computed = root_from_inclusion_proof(leaf, index, tree_size, proof)
    if not hmac.compare_digest(computed, bytes(root)):
        raise _fail(
            f"inclusion proof for entry {index} does not lead to the root of tree size {tree_size}"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (new_size, new_root) extends (old_size, old_root).

    RFC 9162 section 2.1.4.2. Raises :class:`LedgerError` ``E_PROOF`` when it
    does not. Size 0 is consistent with every tree (with an empty proof); equal
    sizes need equal roots and an empty proof.
    """
    _check_hash(old_root, "old root hash")
    _check_hash(new_root, "new root hash")
    if not 0 <= old_size <= new_size:
        raise _fail(f"old tree size {old_size} is larger than new tree size {new_size}")
    if old_size == new_size or old_size == 0:
        if proof:
            raise _fail("a consistency proof between these sizes must be empty")
        if old_size == new_size and not hmac.compare_digest(bytes(old_root), bytes(new_root)):
            raise _fail(f"two different roots for the same tree size {old_size}")
        return
    # Step 1.
    if not proof:
        raise _fail("consistency proof is empty")
    for i, p in enumerate(proof):
        _check_hash(p, f"consistency proof element {i}")
    path = [bytes(p) for p in proof]
    # Step 2.
    if old_size & (old_size - 1) == 0:
        path.insert(0, bytes(old_root))
    # Steps 3-4.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:
            raise _fail("consistency proof has more elements than these tree sizes need")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise _fail("consistency proof has fewer elements than these tree sizes need")
    if not hmac.compare_digest(fr, bytes(old_root)):
        raise _fail(f"consistency proof does not lead to the old root (tree size {old_size})")
    if not hmac.compare_digest(sr, bytes(new_root)):
        raise _fail(f"consistency proof does not lead to the new root (tree size {new_size})")
