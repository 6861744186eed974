"""DICOM files written by pydicom itself (no downloads), for the ``dicom:`` source tests.

:func:`write_digits_dicom` turns scikit-learn's digits into a folder of
MONOCHROME2 16-bit files, one sub-folder per class, whose stored values,
rescale (slope 0.5, intercept -1024) and window (center 0.5, width 2049, i.e.
-1024..1024 after the LINEAR function's half-pixel shift) map back onto the
digits' ``v / 16`` exactly: every step is exact binary arithmetic, so the
loaded images equal an ``npz:`` of the same images bit for bit.

Every file carries :data:`PATIENT_NAME`, :data:`PATIENT_ID` and
:data:`STUDY_UID`, and its file name starts with :data:`FILE_TAG`, so a test can
grep the state directory and the logs for them (:func:`assert_no_identifiers`).
:func:`patient_ids` gives files distinct patients whose ids all contain
:data:`PATIENT_ID`, so the same grep finds any of them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from ffsecure.split import hash_split, relative_key

PATIENT_NAME = "ZZPATIENT^SEVENSEVEN-7731"
PATIENT_ID = "ZZPID-55219"
STUDY_UID = "1.2.826.0.1.3680043.77310.55219"
FILE_TAG = "ZZFILE-4411"
#: every distinctive string a test greps for (the name as pydicom writes it, and its parts)
IDENTIFIERS = (PATIENT_NAME, "ZZPATIENT", "SEVENSEVEN-7731", PATIENT_ID, STUDY_UID, FILE_TAG)
SLOPE, INTERCEPT = 0.5, -1024.0
CENTER, WIDTH = 0.5, 2049.0  # LINEAR: -1024..1024, exact in binary


@dataclass(frozen=True)
class DigitsDicom:
    """What :func:`write_digits_dicom` wrote, in the loader's order (class, then file name)."""

    root: Path
    images: np.ndarray  # float32 (N,8,8) in [0,1]: the digits' v / 16
    labels: np.ndarray  # int64 (N,)
    paths: list[Path]


def stored_values(unit: np.ndarray, *, monochrome1: bool = False) -> np.ndarray:
    """The uint16 stored values whose rescale and window give back ``unit`` (multiples of 1/16)."""
    v = np.rint(np.asarray(unit, dtype=np.float64) * 16.0)
    if monochrome1:
        v = 16.0 - v
    return (v * 256.0).astype(np.uint16)  # HU = 0.5 * 256 v - 1024 = 128 v - 1024


def dicom_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    frames: int = 1,
    window: bool = True,
    syntax: UID = ExplicitVRLittleEndian,
) -> Dataset:
    """A Secondary Capture dataset around uint16 ``pixels`` (``(H,W)``, or ``(F,H,W)``)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = generate_uid()
    ds.InstitutionName = "ZZPATIENT General Hospital"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
    if window:
        ds.WindowCenter, ds.WindowWidth = CENTER, WIDTH
    if frames != 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def jpeg_dataset(pixels: np.ndarray, syntax: UID) -> Dataset:
    """A dataset that claims a compressed ``syntax`` around bytes no decoder can read."""
    ds = dicom_dataset(pixels, syntax=syntax)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xdb" + b"\x00" * 64 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    return ds


def digits_images(
    per_class: int | None = None, classes: Sequence[int] = tuple(range(10))
) -> tuple[np.ndarray, np.ndarray]:
    """Digits in [0,1] (``v / 16``) and their labels, class-major; ``per_class`` caps each class."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    order = np.argsort(bunch.target, kind="stable")
    images = (bunch.images[order] / 16.0).astype(np.float32)
    labels = bunch.target[order].astype(np.int64)
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in classes])
    images, labels = images[keep], labels[keep]
    return images, labels


def patient_ids(n: int, per_patient: int) -> list[str]:
    """``n`` files' PatientIDs, ``per_patient`` consecutive files per patient (each contains
    :data:`PATIENT_ID`, so :func:`assert_no_identifiers` finds any of them)."""
    return [f"{PATIENT_ID}-{i // per_patient:04d}" for i in range(n)]


def write_digits_dicom(
    root: Path,
    *,
    per_class: int | None = None,
    classes: Sequence[int] = tuple(range(10)),
    patients: Sequence[str | None] | None = None,
) -> DigitsDicom:
    """Write the digits as ``root/<digit>/ZZFILE-4411-<n>.dcm``; returns them in loader order.

    ``patients`` gives each image's PatientID in that order (None: the tag is left out);
    without it every file is :data:`PATIENT_ID`'s.
    """
    images, labels = digits_images(per_class, classes)
    paths = []
    counts: dict[int, int] = {}
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        n = counts[int(label)] = counts.get(int(label), 0) + 1
        path = root / str(int(label)) / f"{FILE_TAG}-{n:05d}.dcm"
        ds = dicom_dataset(stored_values(image))
        if patients is not None and patients[index] is None:
            del ds.PatientID
        elif patients is not None:
            ds.PatientID = patients[index]
        paths.append(save(ds, path))
    return DigitsDicom(root, images, labels, paths)


def write_npz_like(digits: DigitsDicom, path: Path, train_idx, test_idx) -> Path:
    """The same images as an ``npz:`` file in the MedMNIST layout, split as given."""
    np.savez(
        path,
        train_images=digits.images[train_idx],
        train_labels=digits.labels[train_idx],
        test_images=digits.images[test_idx],
        test_labels=digits.labels[test_idx],
    )
    return path


def split_like_dicom(digits: DigitsDicom, seed: int, test_fraction: float = 0.2):
    """The (train, test) indices of ``digits`` that ``dicom:ROOT`` in image mode gives at
    ``seed``: each file by its own hash (:func:`ffsecure.split.hash_split`)."""
    relatives = [relative_key(path, digits.root) for path in digits.paths]
    return hash_split(relatives, digits.labels, seed, test_fraction)


def found_identifiers(blobs: dict[str, bytes]) -> list[tuple[str, str]]:
    """Every (where, identifier) pair such that the identifier occurs in the bytes."""
    hits = []
    for where, blob in blobs.items():
        for ident in IDENTIFIERS:
            if ident.encode() in blob or ident.lower().encode() in blob.lower():
                hits.append((where, ident))
    return hits


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (names included), for :func:`found_identifiers`."""
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out[f"name:{dirpath}/{name}"] = name.encode()
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file():
                out[str(path)] = path.read_bytes()
    return out


def assert_no_identifiers(blobs: dict[str, bytes]) -> None:
    """Fail, naming where, if any patient name, id, study UID or file name leaked."""
    hits = found_identifiers(blobs)
    assert not hits, hits
    assert blobs, "nothing was searched"


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tests.dicom_fixture OUT [--per-class N] [--npz FILE --seed S]``: write the
    digits DICOM folder (and an ``npz:`` of the same images, split as ``dicom:OUT`` is at S)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.dicom_fixture")
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=None)
    parser.add_argument("--npz", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    digits = write_digits_dicom(args.out, per_class=args.per_class)
    print(f"wrote {len(digits.paths)} DICOM files under {args.out}")
    if args.npz is not None:
        train_idx, test_idx = split_like_dicom(digits, args.seed)
        write_npz_like(digits, args.npz, train_idx, test_idx)
        print(f"wrote the same images to {args.npz} (split as dicom: at seed {args.seed})")


if __name__ == "__main__":
    main()
