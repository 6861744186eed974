"""RFC 9162 Merkle hashing and proofs.

Two independent references:
- known-answer vectors: the 8 leaves and per-size roots (and some proofs) of
  the RFC 6962 test suite used by Certificate Transparency and Trillian
  (as published in github.com/transparency-dev/merkle, proof/verify_test.go);
- a straightforward recursive transcription of RFC 9162 section 2.1 (MTH,
  PATH, PROOF/SUBPROOF) written here, against which every tree of size
  1..64 is checked.
"""

from __future__ import annotations

import hashlib

import pytest

from ffsecure.errors import LedgerError
from ffsecure.ledger import merkle
from ffsecure.ledger.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    compute_consistency_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# --- reference: RFC 9162 section 2.1, transcribed literally -----------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


# --- known answers (RFC 6962 / CT / Trillian test vectors) ------------------

KAT_LEAVES = [
    bytes.fromhex(x)
    for x in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
KAT_ROOTS = [
    bytes.fromhex(x)
    for x in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
# (leaf index, tree size, proof)
KAT_INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (old size, new size, proof)
KAT_CONSISTENCY = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def _hexes(xs):
    return [bytes.fromhex(x) for x in xs]


def test_empty_tree_root_is_sha256_of_empty_string():
    assert root_hash([]) == EMPTY_ROOT
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert MemoryTree().root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_known_roots_per_size(size):
    hashes = [leaf_hash(x) for x in KAT_LEAVES[:size]]
    assert root_hash(hashes) == KAT_ROOTS[size - 1]
    assert ref_mth(KAT_LEAVES[:size]) == KAT_ROOTS[size - 1]


@pytest.mark.parametrize("index, size, proof", KAT_INCLUSION)
def test_known_inclusion_proofs(index, size, proof):
    tree = MemoryTree([leaf_hash(x) for x in KAT_LEAVES])
    assert tree.inclusion_proof(index, size) == _hexes(proof)
    verify_inclusion(leaf_hash(KAT_LEAVES[index]), index, size, _hexes(proof), KAT_ROOTS[size - 1])


@pytest.mark.parametrize("old, new, proof", KAT_CONSISTENCY)
def test_known_consistency_proofs(old, new, proof):
    hashes = [leaf_hash(x) for x in KAT_LEAVES]
    assert compute_consistency_proof(hashes[:new], old) == _hexes(proof)
    verify_consistency(old, new, KAT_ROOTS[old - 1], KAT_ROOTS[new - 1], _hexes(proof))


def _entries(n: int) -> list[bytes]:
    return [f"entry-{i}".encode() * (i % 3 + 1) for i in range(n)]


def test_roots_and_proofs_match_reference_for_every_size_up_to_64():
    data = _entries(64)
    tree = MemoryTree()
    for n in range(1, 65):
        tree.append(data[n - 1])
        root = ref_mth(data[:n])
        assert tree.root() == root, n
        for m in range(n):
            proof = tree.inclusion_proof(m, n)
            assert proof == ref_path(m, data[:n]), (m, n)
            verify_inclusion(leaf_hash(data[m]), m, n, proof, root)
        for m in range(1, n + 1):
            proof = tree.consistency_proof(m, n)
            assert proof == (ref_proof(m, data[:n]) if m < n else []), (m, n)
            verify_consistency(m, n, ref_mth(data[:m]), root, proof)


def test_proofs_for_older_sizes_from_a_larger_tree():
    data = _entries(64)
    tree = MemoryTree([leaf_hash(x) for x in data])
    for n in (1, 5, 17, 33, 63):
        for m in range(n):
            assert tree.inclusion_proof(m, n) == ref_path(m, data[:n])
        for m in range(1, n):
            assert tree.consistency_proof(m, n) == ref_proof(m, data[:n])


def test_proof_size_is_logarithmic():
    tree = MemoryTree([leaf_hash(i.to_bytes(4, "big")) for i in range(1000)])
    assert max(len(tree.inclusion_proof(i)) for i in range(0, 1000, 7)) <= 10
    assert max(len(tree.consistency_proof(m)) for m in range(1, 1000, 13)) <= 2 * 10


def _flip(b: bytes, bit: int = 3) -> bytes:
    return bytes([b[0] ^ (1 << bit)]) + b[1:]


@pytest.mark.parametrize("n", [2, 3, 7, 8, 13, 32, 33])
def test_corrupted_inclusion_proofs_fail(n):
    data = _entries(n)
    tree = MemoryTree([leaf_hash(x) for x in data])
    root = tree.root()
    some = hashlib.sha256(b"some").digest()
    for m in range(n):
        leaf, proof = leaf_hash(data[m]), tree.inclusion_proof(m)
        probes = [
            (leaf, m + 1, n, proof, root),
            (leaf, m ^ 2, n, proof, root),
            (leaf, m, n * 2, proof, root),
            (leaf, m, n // 2, proof, root),
            (leaf_hash(b"wrong"), m, n, proof, root),
            (leaf, m, n, proof, EMPTY_ROOT),
            (leaf, m, n, proof + [root], root),
            (leaf, m, n, [root] + proof, root),
            (leaf, m, n, proof[:-1], root),
            (leaf, m, n, proof + [b""], root),
        ]
        if m > 0:
            probes.append((leaf, m - 1, n, proof, root))
        if len(proof) > 1:
            probes.append((leaf, m, n, [proof[0], some] + proof[1:], root))
        probes += [
            (leaf, m, n, proof[:i] + [_flip(proof[i])] + proof[i + 1 :], root)
            for i in range(len(proof))
        ]
        for leaf_p, m_p, n_p, proof_p, root_p in probes:
            if (m_p, n_p) == (m, n) and proof_p == proof and root_p == root and leaf_p == leaf:
                continue
            with pytest.raises(LedgerError) as info:
                verify_inclusion(leaf_p, m_p, n_p, proof_p, root_p)
            assert info.value.code == "E_PROOF"


@pytest.mark.parametrize("old, new", [(1, 2), (2, 5), (3, 7), (4, 8), (6, 8), (7, 13), (16, 33)])
def test_corrupted_consistency_proofs_fail(old, new):
    data = _entries(new)
    tree = MemoryTree([leaf_hash(x) for x in data])
    r1, r2 = tree.root(old), tree.root(new)
    proof = tree.consistency_proof(old, new)
    verify_consistency(old, new, r1, r2, proof)
    probes = [
        (old - 1, new, r1, r2, proof),
        (old + 1, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof),
        (old, new // 2, r1, r2, proof),
        (old, new, r2, r1, proof),
        (old, new, EMPTY_ROOT, r2, proof),
        (old, new, r1, EMPTY_ROOT, proof),
        (old, new, r1, r2, []),
        (old, new, r1, r2, proof + [r1]),
        (old, new, r1, r2, [r2] + proof),
        (old, new, r1, r2, [proof[0]] + proof),
        (old, new, r1, r2, proof[:-1]),
        (new, old, r2, r1, proof),
    ]
    probes += [
        (old, new, r1, r2, proof[:i] + [_flip(proof[i], 4)] + proof[i + 1 :])
        for i in range(len(proof))
    ]
    for probe in probes:
        if probe[0] == 0:
            continue  # size 0 is consistent with everything by definition
        with pytest.raises(LedgerError):
            verify_consistency(probe[0], probe[1], probe[2], probe[3], probe[4])


def test_trivial_consistency_cases():
    r = root_hash([leaf_hash(b"a")])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 1, EMPTY_ROOT, r, [])
    verify_consistency(1, 1, r, r, [])
    with pytest.raises(LedgerError):
        verify_consistency(1, 1, r, EMPTY_ROOT, [])
    with pytest.raises(LedgerError):
        verify_consistency(1, 1, r, r, [r])
    with pytest.raises(LedgerError):
        verify_consistency(2, 1, r, r, [])


def test_appending_does_not_rehash_the_log():
    """Appends store O(1) amortised nodes; proofs read O(log n) of them."""

    class CountingTree(MemoryTree):
        reads = 0

        def node(self, level, index):
            CountingTree.reads += 1
            return super().node(level, index)

    tree = CountingTree()
    for i in range(4096):
        tree.append(i.to_bytes(4, "big"))
    assert CountingTree.reads < 2 * 4096
    CountingTree.reads = 0
    tree.append(b"x")
    tree.inclusion_proof(1234)
    tree.consistency_proof(1000)
    assert CountingTree.reads <= 4 * 13
    assert merkle.root_from(tree, 4097) == tree.root()
