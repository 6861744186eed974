"""The train/test split of a site's own files: each example placed by its own hash.

A site's DP claim protects one training example: two holdings that differ by
one image (or, in patient mode, one patient) must give training sets that
differ by at most that example. A seeded shuffle of the whole list, such as a
stratified split, breaks this: one file more or less reshuffles which *other*
files train. So every site source without a fixed split (``folder:`` without
``train/`` and ``test/``, ``dicom:`` in image and in patient mode) splits by
this one rule, named :data:`SPLIT_RULE` in the dataset's ``source``:

* an example's point (:func:`split_point`) is the first 8 bytes of
  SHA-256 over ``ffsecure/<domain>/v1``, the seed and the example's path
  below the source root (``/``-separated, the file name's own bytes), read
  big-endian and divided by 2**64: a value in [0, 1) that depends on that
  file and the seed alone;
* an example whose point is below ``test_fraction`` goes to test, any other
  to train. The split is therefore only about ``test_fraction``, not exact,
  and copying or moving the whole source folder leaves it unchanged;
* the fallback (:func:`hash_split`): every class, of any size, none of whose
  examples falls below the fraction sends its example of lowest point to test.
  There is no other rule (none keeps an example in train). It reads that
  class's own points only, no seeded shuffle.

Why the bound is exact. Take a holding and the same holding less one example
``x`` of class ``c`` (adding is the same pair read the other way). Other
classes are untouched: the fallback reads its own class alone. In ``c``:

* if ``x`` was the fallback's test example (no example of ``c`` below the
  fraction, ``x`` the lowest), the next-lowest moves from train to test and
  ``x`` was not training: one training example changes;
* if ``x`` was the only example below the fraction, it was test (not training)
  and the fallback now sends the lowest of the rest to test: one changes;
* otherwise whether the fallback fires, and for which example, is the same
  with and without ``x``: only ``x`` itself leaves training, if it trained.

So two holdings that differ by one example give training sets that differ by
at most one example, in every case. The cost: a class of one example never
trains, and a class all of whose ``n`` examples fall below the fraction does
not train (probability ``f**n`` for test fraction ``f``); :func:`hash_split`
logs a warning naming the class indices (never a path) left without a training
example, so the site knows why a module does not cover them.

One file, one example (:func:`check_distinct_files`): the bound counts files,
so a file listed twice (a hard link, a link to a file, a linked folder, or a
labels CSV naming it by two paths) would be two training examples, possibly
of two classes, and removing it would change two. Every ``folder:`` and
``dicom:`` listing, train and test together, is therefore refused when two of
its entries are the same file (same ``st_dev`` and ``st_ino`` after following
links). A link to a file listed once is one example like any other.

The domain tag separates this hash from the project's other per-file hashes
(``patient-pick``, which image a patient keeps). Image sources use
:data:`SPLIT_DOMAIN`; patient mode uses ``patient-split``, the tag of its split
before this module held the rule, so a kept file's point is unchanged. Its
fallback is not: it was one per site (a site with no file below the fraction
sent its lowest to test, one with every file there kept its highest in train)
and is now this module's, per class.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ffsecure.errors import DataError

__all__ = [
    "SPLIT_DOMAIN",
    "SPLIT_RULE",
    "check_distinct_files",
    "example_digest",
    "hash_split",
    "relative_key",
    "split_point",
]

log = logging.getLogger(__name__)

#: What ``Dataset.source["split"]`` says of a split made here (bump on any change).
SPLIT_RULE = "hash-v2"
#: The domain tag of the image sources' split points.
SPLIT_DOMAIN = "split"


def relative_key(path: Path, root: Path) -> str:
    """``path`` below ``root``, ``/``-separated: what names an example in its hashes."""
    return path.relative_to(root).as_posix()


def check_distinct_files(paths: Sequence[Path], name: Callable[[int], str]) -> None:
    """Refuse a listing in which two entries are the same file (``E_DATA_FORMAT``).

    Files are compared by ``(st_dev, st_ino)`` of :func:`os.stat`, which follows links.
    ``name(i)`` says how the error names entry ``i``: a ``dicom:`` source names files by
    ordinal and class, never by path.
    """
    first_of: dict[tuple[int, int], int] = {}
    for index, path in enumerate(paths):
        info = os.stat(path)
        first = first_of.setdefault((info.st_dev, info.st_ino), index)
        if first != index:
            raise DataError(
                f"{name(first)} and {name(index)} are the same file (same device and inode), "
                "which would make it two examples",
                hint="list each file once: remove the extra labels CSV row, link, linked folder "
                "or hard link",
                code="E_DATA_FORMAT",
            )


def example_digest(domain: str, seed: int, relative: str) -> bytes:
    """SHA-256 over the domain tag, the seed and an example's path below the source root:
    a value that depends on that example alone. Undecodable name bytes hash as they are."""
    text = f"ffsecure/{domain}/v1\x00{seed}\x00{relative}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def split_point(relative: str, seed: int, *, domain: str = SPLIT_DOMAIN) -> float:
    """Where an example falls in [0, 1): below the test fraction is test."""
    digest = example_digest(domain, seed, relative)
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_split(
    relatives: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    seed: int,
    test_fraction: float,
    *,
    domain: str = SPLIT_DOMAIN,
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train_idx, test_idx)`` of the examples: each by its :func:`split_point`,
    then the per-class fallback of the module docstring (one example more or less changes
    at most one training example, the removed one or one of its class)."""
    classes = np.asarray(labels, dtype=np.int64)
    if len(relatives) != classes.shape[0]:
        raise ValueError(f"{len(relatives)} paths for {classes.shape[0]} labels")
    points = np.asarray([split_point(r, seed, domain=domain) for r in relatives], dtype=np.float64)
    test = points < test_fraction
    untrained = []
    for label in np.unique(classes):
        members = np.flatnonzero(classes == label)
        if not test[members].any():
            test[members[np.argmin(points[members])]] = True
        if test[members].all():
            untrained.append(int(label))
    if untrained:
        log.warning(
            "class index(es) %s have no training example: the split sends each class's "
            "lowest file to test when none falls there, so a class of one file, or one whose "
            "files all fall in the test range, does not train; add files of those classes, or "
            "give the source train/ and test/ folders",
            untrained,
            extra={"event": "split_untrained", "classes": untrained},
        )
    return np.flatnonzero(~test), np.flatnonzero(test)
