"""The split of a site's own files (ffsecure.split): each file by its own hash.

The DP claim per image needs neighbouring holdings (one image more or less) to give
training sets that differ by at most that image; these tests remove one file from a
``folder:`` and a ``dicom:`` source and compare what trains, by pixels and label.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ffsecure import data
from ffsecure.split import SPLIT_RULE, hash_split, split_point
from tests import dicom_fixture as fx

SHAPE = (1, 8, 8)


def training_examples(spec: str, seed: int = 0) -> Counter[tuple[bytes, int]]:
    """What trains, as a multiset of (pixels, label)."""
    ds = data.load_dataset(spec, image_shape=SHAPE, seed=seed)
    return Counter(
        (x.numpy().tobytes(), int(y)) for x, y in zip(ds.train_x, ds.train_y, strict=True)
    )


def trained(relatives: list[str], labels: list[int], seed: int, fraction: float) -> set[str]:
    """The names that :func:`hash_split` puts in train."""
    train, _ = hash_split(relatives, labels, seed, fraction)
    return {relatives[i] for i in train}


def assert_one_removal_changes_at_most_that_example(full, fewer) -> None:
    assert not fewer - full, "an example that did not train before trains now"
    assert sum((full - fewer).values()) <= 1, "more than the removed example left training"


def write_folder(root: Path, per_class: int = 12) -> list[Path]:
    """Two classes of distinct random 8x8 gray PNGs."""
    rng = np.random.default_rng(5)
    paths = []
    for cls in ("benign", "malignant"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            path = root / cls / f"img{i:02d}.png"
            Image.fromarray(rng.integers(0, 256, size=(8, 8), dtype=np.uint8)).save(path)
            paths.append(path)
    return paths


# ------------------------------------------------------------------------------ the rule


def test_a_point_is_sha256_over_the_domain_the_seed_and_the_path_below_the_root():
    digest = hashlib.sha256(b"ffsecure/split/v1\x007\x00benign/img03.png").digest()
    assert split_point("benign/img03.png", 7) == int.from_bytes(digest[:8], "big") / 2.0**64
    assert split_point("benign/img03.png", 7, domain="patient-split") != split_point(
        "benign/img03.png", 7
    )
    assert SPLIT_RULE == "hash-v2"


def test_an_example_below_the_fraction_is_test_and_the_split_is_about_that_fraction():
    relatives = [f"c{i % 2}/f{i:04d}" for i in range(2000)]
    labels = [i % 2 for i in range(2000)]
    train, test = hash_split(relatives, labels, 3, 0.2)
    points = [split_point(r, 3) for r in relatives]
    assert sorted([*train, *test]) == list(range(2000))
    assert all(points[i] < 0.2 for i in test) and all(points[i] >= 0.2 for i in train)
    assert 0.17 < len(test) / 2000 < 0.23


def test_the_split_is_the_same_for_a_seed_and_changes_with_the_seed():
    relatives = [f"c/f{i}" for i in range(200)]
    labels = [0] * 200
    first = hash_split(relatives, labels, 0, 0.2)
    again = hash_split(list(relatives), list(labels), 0, 0.2)
    other = hash_split(relatives, labels, 1, 0.2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_every_class_gets_a_test_example_and_a_class_of_one_never_trains(n):
    """The fallback has one rule: a class with no example below the fraction sends its lowest
    to test, whatever its size. Nothing is kept in train, so a class of one is test only: a
    rule that kept it training would let its removal, or a second file, move it (two
    examples)."""
    for seed in range(40):
        # class 0 is large; class 1 holds n examples
        relatives = [f"a/{i}" for i in range(50)] + [f"b/{i}" for i in range(n)]
        labels = [0] * 50 + [1] * n
        train, test = hash_split(relatives, labels, seed, 0.2)
        points = {i: split_point(relatives[i], seed) for i in range(50, 50 + n)}
        below = {i for i, p in points.items() if p < 0.2}
        assert {i for i in test if labels[i] == 1} == (below or {min(points, key=points.get)})
        assert {i for i in train if labels[i] == 1} == set(points) - (
            below or {min(points, key=points.get)}
        )
        if n == 1:
            assert [i for i in train if labels[i] == 1] == []


def test_the_fallback_reads_only_its_own_class():
    """Removing an example of one class never moves an example of another class, even
    where the small class's fallback fires."""
    for seed in range(30):
        relatives = [f"a/{i}" for i in range(20)] + [f"b/{i}" for i in range(3)]
        labels = [0] * 20 + [1] * 3
        _, test = hash_split(relatives, labels, seed, 0.2)
        keep = list(range(20, 23)) + list(range(1, 20))  # class 0 loses a/0
        _, fewer_test = hash_split(
            [relatives[i] for i in keep], [labels[i] for i in keep], seed, 0.2
        )
        small_before = {relatives[i] for i in test if labels[i] == 1}
        small_after = {relatives[keep[i]] for i in fewer_test if labels[keep[i]] == 1}
        assert small_before == small_after


def test_every_one_file_removal_changes_the_training_set_by_at_most_one_example():
    """The bound the DP claim needs, by brute force: many random small classes (one to six
    files, beside a large class), every single-file removal, test fractions that make the
    fallback and the all-test case common. Adding a file is the same pair read backwards."""
    for fraction in (0.2, 0.5):
        for seed in range(150):
            for n in range(1, 7):
                relatives = [f"big/{i}" for i in range(8)] + [f"small/{seed}-{i}" for i in range(n)]
                labels = [0] * 8 + [1] * n
                full = trained(relatives, labels, seed, fraction)
                for gone in range(len(relatives)):
                    keep = [i for i in range(len(relatives)) if i != gone]
                    fewer = trained(
                        [relatives[i] for i in keep], [labels[i] for i in keep], seed, fraction
                    )
                    assert len(full ^ fewer) <= 1, (fraction, seed, n, sorted(full ^ fewer))


def test_deleting_the_training_file_of_a_two_file_class_does_not_move_the_test_file():
    """The review's case: one file of the class trains, the other is test. Deleting the
    training file must not move the test file into training (the old keep-in-train rule did:
    two examples changed, with no warning)."""
    k = next(
        k
        for k in range(10000)
        if split_point(f"c0/x{k}.png", 0) >= 0.2 and split_point(f"c0/y{k}.png", 0) < 0.2
    )
    x, y = f"c0/x{k}.png", f"c0/y{k}.png"
    others = [f"c1/z{i}.png" for i in range(30)]
    full = trained([x, y, *others], [0, 0] + [1] * 30, 0, 0.2)
    fewer = trained([y, *others], [0] + [1] * 30, 0, 0.2)
    assert x in full and y not in full
    assert full ^ fewer == {x}


def test_a_class_left_without_a_training_file_is_logged_by_index_only(caplog):
    """A class of one file (or one whose files all fall in the test range) does not train:
    the site is told which class indices, never a path; nothing is logged when all train."""
    relatives = [f"a/{i}" for i in range(40)] + ["b/0"] + [f"c/{i}" for i in range(40)]
    labels = [0] * 40 + [1] + [2] * 40
    with caplog.at_level(logging.WARNING, logger="ffsecure.split"):
        train, _ = hash_split(relatives, labels, 0, 0.2)
    [record] = caplog.records
    assert record.event == "split_untrained" and record.classes == [1]
    assert "b/" not in record.getMessage() and 40 not in train
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ffsecure.split"):
        hash_split(relatives[:40] + relatives[41:], labels[:40] + labels[41:], 0, 0.2)
    assert caplog.records == []


# ------------------------------------------------------------------------ site sources


def test_removing_one_folder_image_changes_the_training_set_by_at_most_that_image(tmp_path):
    paths = write_folder(tmp_path / "full")
    full = training_examples(f"folder:{tmp_path / 'full'}", seed=4)
    for k, gone in enumerate(paths[::5]):
        smaller = tmp_path / f"smaller-{k}"
        shutil.copytree(tmp_path / "full", smaller)
        (smaller / gone.relative_to(tmp_path / "full")).unlink()
        fewer = training_examples(f"folder:{smaller}", seed=4)
        assert_one_removal_changes_at_most_that_example(full, fewer)


def test_removing_one_dicom_image_changes_the_training_set_by_at_most_that_image(tmp_path):
    written = fx.write_digits_dicom(tmp_path / "full", per_class=12, classes=(0, 1))
    full = training_examples(f"dicom:{written.root}", seed=4)
    for k, gone in enumerate(written.paths[::5]):
        smaller = tmp_path / f"smaller-{k}"
        shutil.copytree(written.root, smaller)
        (smaller / gone.relative_to(written.root)).unlink()
        fewer = training_examples(f"dicom:{smaller}", seed=4)
        assert_one_removal_changes_at_most_that_example(full, fewer)


def test_a_site_source_records_the_split_rule_and_keeps_its_split_when_copied(tmp_path):
    write_folder(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    first = data.load_dataset(f"folder:{tmp_path / 'a'}", image_shape=SHAPE, seed=2)
    copied = data.load_dataset(f"folder:{tmp_path / 'b'}", image_shape=SHAPE, seed=2)
    other_seed = data.load_dataset(f"folder:{tmp_path / 'a'}", image_shape=SHAPE, seed=3)
    assert first.source["split"] == SPLIT_RULE == "hash-v2"
    assert first.test_x.equal(copied.test_x) and first.train_y.equal(copied.train_y)
    assert not (
        first.test_x.shape == other_seed.test_x.shape and first.test_x.equal(other_seed.test_x)
    )
    written = fx.write_digits_dicom(tmp_path / "pacs", per_class=4, classes=(0, 1))
    by_dicom = data.load_dataset(f"dicom:{written.root}", image_shape=SHAPE)
    assert by_dicom.source == {"kind": "dicom", "layout": "folders", "seed": 0, "split": "hash-v2"}
    assert data.load_dataset("digits").source["split"] == "stratified"
