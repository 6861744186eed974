"""Partitions: counts, seeds, coverage, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from ffsecure import partition as P
from ffsecure.errors import ConfigError

LABELS = np.repeat(np.arange(5), [40, 30, 20, 50, 10])
K = 5


def _assert_disjoint_cover(part: P.Partition, n: int):
    allidx = np.concatenate(part.indices)
    assert len(allidx) == n and len(np.unique(allidx)) == n


def test_pathological_one_class_per_site():
    part = P.make_partition("pathological", LABELS, num_classes=K, seed=3)
    assert part.num_sites == K
    counts = P.count_table(part, LABELS)
    assert counts.tolist() == np.diag([40, 30, 20, 50, 10]).tolist()
    _assert_disjoint_cover(part, len(LABELS))
    assert part.site_classes(LABELS) == [[c] for c in range(K)]


def test_pathological_more_sites_than_classes_splits_each_class():
    part = P.pathological(LABELS, num_classes=K, num_sites=10, seed=0)
    counts = P.count_table(part, LABELS)
    assert all((row > 0).sum() == 1 for row in counts)
    assert counts.sum(axis=0).tolist() == [40, 30, 20, 50, 10]
    assert counts[0, 0] == 20 and counts[5, 0] == 20
    _assert_disjoint_cover(part, len(LABELS))


def test_pathological_k_classes_per_site_covers_every_class():
    for seed in range(5):
        part = P.pathological(LABELS, num_classes=K, num_sites=3, classes_per_site=2, seed=seed)
        counts = P.count_table(part, LABELS)
        assert all((row > 0).sum() == 2 for row in counts)
        assert (counts.sum(axis=0) == np.bincount(LABELS)).all()  # every class assigned
        _assert_disjoint_cover(part, len(LABELS))


def test_pathological_refusals():
    with pytest.raises(ConfigError):
        P.pathological(LABELS, num_classes=K, num_sites=4, classes_per_site=1)
    with pytest.raises(ConfigError):
        P.pathological(LABELS, num_classes=K, num_sites=2, classes_per_site=6)
    with pytest.raises(ConfigError):
        P.pathological(LABELS, num_classes=K, num_sites=0)
    with pytest.raises(ConfigError) as err:
        P.pathological(LABELS, num_classes=4)  # label 4 is outside the label space
    assert err.value.code == "E_CONFIG"


def test_dirichlet_seeded_and_skewed():
    a = P.dirichlet(LABELS, num_classes=K, num_sites=4, alpha=0.3, seed=7)
    b = P.dirichlet(LABELS, num_classes=K, num_sites=4, alpha=0.3, seed=7)
    c = P.dirichlet(LABELS, num_classes=K, num_sites=4, alpha=0.3, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a.indices, b.indices, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a.indices, c.indices, strict=True))
    _assert_disjoint_cover(a, len(LABELS))
    assert min(a.sizes()) >= P.DIRICHLET_MIN_SIZE
    counts = P.count_table(a, LABELS)
    assert (counts.sum(axis=0) == np.bincount(LABELS)).all()
    # Strong skew: sites' class mixes differ far more than under IID.
    skew = np.abs(counts / counts.sum(1, keepdims=True) - np.bincount(LABELS) / len(LABELS)).sum()
    i = P.iid(LABELS, num_classes=K, num_sites=4, seed=7)
    ci = P.count_table(i, LABELS)
    skew_iid = np.abs(ci / ci.sum(1, keepdims=True) - np.bincount(LABELS) / len(LABELS)).sum()
    assert skew > 2 * skew_iid


def test_dirichlet_refusals():
    for alpha in (0, -1.0, float("nan")):
        with pytest.raises(ConfigError):
            P.dirichlet(LABELS, num_classes=K, num_sites=3, alpha=alpha)
    with pytest.raises(ConfigError):
        P.dirichlet(LABELS[:5], num_classes=K, num_sites=4, alpha=1.0)


def test_iid_sizes_and_seed():
    a = P.iid(LABELS, num_classes=K, num_sites=3, seed=1)
    assert sorted(a.sizes()) == [50, 50, 50]
    _assert_disjoint_cover(a, len(LABELS))
    b = P.iid(LABELS, num_classes=K, num_sites=3, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a.indices, b.indices, strict=True))
    with pytest.raises(ConfigError):
        P.make_partition("unknown", LABELS, num_classes=K)


def test_tables():
    part = P.make_partition("pathological", LABELS, num_classes=K)
    text = P.format_table(part, LABELS, ["a", "b", "c", "d", "e"])
    lines = text.splitlines()
    assert lines[0].split() == ["site", "a", "b", "c", "d", "e", "total"]
    assert lines[-1].split() == ["total", "40", "30", "20", "50", "10", "150"]
    table = P.render_table(part, LABELS)
    assert table.row_count == K + 1
    d = part.to_dict(LABELS)
    assert d["counts"][3][3] == 50 and d["sizes"] == [40, 30, 20, 50, 10]
