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
* the small-class fallback (:func:`hash_split`): per class, if no example of a
  class of at least two falls below the fraction, the one of lowest point
  goes to test; if every example of a class does, the one of highest point
  stays in train. So a class keeps a training example (the classes a module
  covers are its training labels) and, with two or more, a test example, as
  the stratified split did. The fallback reads that class's own points only,
  no seeded shuffle. **Only there may one example move another**, and only
  one of its own class: a class whose fallback fires (probability about
  ``(1 - f)**n + f**n`` for ``n`` examples) may give neighbouring holdings
  training sets that differ in two of its examples (one in, one out).

The domain tag separates this hash from the project's other per-file hashes
(``patient-pick``, which image a patient keeps). Image sources use
:data:`SPLIT_DOMAIN`; patient mode keeps ``patient-split``, so its kept files
fall where they did before this module held the rule.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "SPLIT_DOMAIN",
    "SPLIT_RULE",
    "example_digest",
    "hash_split",
    "relative_key",
    "split_point",
]

log = logging.getLogger(__name__)

#: What ``Dataset.source["split"]`` says of a split made here (bump on any change).
SPLIT_RULE = "hash-v1"
#: The domain tag of the image sources' split points.
SPLIT_DOMAIN = "split"


def relative_key(path: Path, root: Path) -> str:
    """``path`` below ``root``, ``/``-separated: what names an example in its hashes."""
    return path.relative_to(root).as_posix()


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
    then the per-class fallback of the module docstring (the only place where one example
    may move another of its class between the splits)."""
    classes = np.asarray(labels, dtype=np.int64)
    if len(relatives) != classes.shape[0]:
        raise ValueError(f"{len(relatives)} paths for {classes.shape[0]} labels")
    points = np.asarray([split_point(r, seed, domain=domain) for r in relatives], dtype=np.float64)
    test = points < test_fraction
    moved = []
    for label in np.unique(classes):
        members = np.flatnonzero(classes == label)
        before = test[members].copy()
        if members.size >= 2 and not test[members].any():
            test[members[np.argmin(points[members])]] = True
        if test[members].all():
            test[members[np.argmax(points[members])]] = False
        if (test[members] != before).any():
            moved.append(int(label))
    if moved:
        log.warning(
            "the split's small-class fallback placed one file of class index(es) %s: for those "
            "classes one image more or less may change two training examples, so the DP "
            "guarantee per image holds there as for two images; add images of those classes, "
            "or give the source train/ and test/ folders",
            moved,
            extra={"event": "split_fallback", "classes": moved},
        )
    return np.flatnonzero(~test), np.flatnonzero(test)
