"""DICOM files as a data source (``dicom:PATH``): listing, per-file pixel pipeline, limits.

Layout (one string, the same in ``site.toml`` and ``ffsecure simulate``):

* ``dicom:DIR``: ``DIR/<class>/...`` holds each class's files (any depth below
  the class folder, any file name, hidden entries skipped), or
  ``DIR/train/<class>/...`` and ``DIR/test/<class>/...`` for a fixed split;
* ``dicom:FILE.csv``: a UTF-8 CSV whose header is ``file,class`` (or
  ``file,class,patient``) and whose rows map a file path relative to the CSV's
  folder onto a class name (and a patient).

Class folder names and CSV cells must ``fullmatch`` :data:`CLASS_NAME` /
:data:`REL_PATH`; class names are the label space, never patient data.

Links: a class folder may be a link; below it, a link to a file is skipped and
a linked folder is not entered; a CSV row naming a link to a file is refused
(a path through a linked folder is read). Whatever the layout, two entries
that are the same file (a hard link, a linked class folder, two CSV paths) are
refused (:func:`ffsecure.split.check_distinct_files`): one file, one example.

Per file (:func:`read_pixels`): the size is bounded before reading; pydicom
parses it (never ``force``); a file without pixel data, with several frames,
beyond :data:`MAX_ROWS_COLS`, in a photometric interpretation other than
MONOCHROME1, MONOCHROME2 or RGB, or compressed in a transfer syntax that no
installed pixel handler decodes is refused. Grayscale pixels go through the
Modality LUT (rescale slope/intercept) and the VOI LUT or window, are scaled to
``[0,1]`` over the display range (what the VOI transform maps the lowest and
highest inputs to; without one, the stored bit range through the Modality
LUT), and MONOCHROME1 is inverted so that bright always means high signal.
RGB is scaled over its stored bit range. :func:`ffsecure.data.fit_images`
then brings each image to the federation's shape.

The identifier invariant: nothing read from a file (tags, file names, paths
below the data folder, pydicom's messages and warnings, which may quote tag
values) reaches an error, a log line or a returned record. Errors name a file
by its 1-based ordinal in the sorted listing and its class (``file #17 in
class 'pneumonia'``); pydicom's warnings are discarded and its log records
kept from the process's handlers while a file is read. Pixels are copied as
they are: text burned into the image is not removed.

Patients (:func:`group_patients`, :func:`one_per_patient`). A file's patient is
its PatientID (0010,0020), read from the header alone, or the ``patient`` cell
of its labels CSV row when the CSV has that column. The id is patient data:
it is kept only as an HMAC-SHA-256 under a key drawn fresh for each grouping
(so the digests match nothing outside one call and are never written), and
only counts leave this module (:class:`PatientCensus`). Keeping one image per
patient makes the DP unit one patient (docs/privacy.md, "Unit of privacy"):
which image is kept depends on that patient's own files alone (the smallest
SHA-256 over the seed and the file's path below the source), so removing one
patient never changes another patient's choice. A file without a PatientID is
refused there (:class:`DicomPatientError`), never guessed.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import io
import logging
import os
import re
import secrets
import stat
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

from ffsecure.errors import DataError
from ffsecure.files import file_kind
from ffsecure.split import check_distinct_files, example_digest, hash_split, relative_key

__all__ = [
    "CLASS_NAME",
    "DicomCompressedError",
    "DicomError",
    "DicomItem",
    "DicomLimitError",
    "DicomListing",
    "DicomPatientError",
    "PatientCensus",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_ROWS_COLS",
    "REL_PATH",
    "census",
    "group_patients",
    "is_labels_csv",
    "list_source",
    "one_per_patient",
    "read_pixels",
]

MAX_FILES = 100_000  # files in one source
MAX_FILE_BYTES = 128 << 20  # one file, checked before it is read
MAX_ROWS_COLS = 8192  # rows and columns of one image
MAX_CSV_BYTES = 16 << 20
#: A class folder name or CSV class cell: the characters of MedMNIST's label names.
CLASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ,()_+.-]{0,127}")
#: A CSV file cell: a relative path of plain components (no '.', '..', hidden or absolute).
REL_PATH = re.compile(
    r"[A-Za-z0-9_+-][A-Za-z0-9 ._+-]{0,254}(/[A-Za-z0-9_+-][A-Za-z0-9 ._+-]{0,254})*"
)
MAX_REL_PATH = 1024
CSV_HEADER = ["file", "class"]
#: Patient mode's split domain (:mod:`ffsecure.split`): a kept file's point is the one it had
#: before that module held the rule (the fallback changed: per site then, per class now).
PATIENT_SPLIT_DOMAIN = "patient-split"
CSV_PATIENT = "patient"  # an optional third column: who the file's patient is
MAX_PATIENT_CELL = 256
SPLIT_DIRS = ("train", "test")
PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB")
UNCOMPRESSED_HINT = (
    "export uncompressed (Explicit VR Little Endian) from PACS, or convert the files "
    "(e.g. `gdcmconv --raw IN OUT` or `dcmdjpeg IN OUT`)"
)


class DicomError(DataError):
    """A DICOM file is not a single-frame image this loader reads (named by ordinal, not name)."""

    code = "E_DICOM"


class DicomCompressedError(DicomError):
    """A file's compressed transfer syntax has no installed decoder, or failed to decode."""

    code = "E_DICOM_COMPRESSED"


class DicomLimitError(DicomError):
    """A DICOM source is beyond a bound: file count, file size or image size."""

    code = "E_DICOM_LIMIT"


class DicomPatientError(DicomError):
    """Images are grouped by patient but a file names no patient (no or an empty PatientID)."""

    code = "E_DICOM_PATIENT"


@dataclass(frozen=True)
class DicomItem:
    """One file to read: its path (never shown), its class index, and how errors name it.

    ``patient`` is the labels CSV's patient cell when it has the column (patient data:
    never shown, left out of ``repr``); None means the file's PatientID names the patient.
    """

    path: Path
    label: int
    where: str
    patient: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DicomListing:
    """What a ``dicom:`` source holds: class names, and the files of each split."""

    class_names: list[str]
    train: list[DicomItem]
    test: list[DicomItem] | None  # None: no fixed split; the caller splits ``train``
    layout: str  # "folders", "presplit" or "csv"
    root: Path  # the folder the files' paths are taken below (the CSV's folder for "csv")


def _layout_error(message: str, hint: str) -> DataError:
    return DataError(message, hint=hint, code="E_DATA_FORMAT")


# ------------------------------------------------------------------------------ listing


def _check_class(name: str, what: str) -> str:
    if not CLASS_NAME.fullmatch(name):
        raise _layout_error(
            f"{what} is not a class name (letters, digits, space and , ( ) _ + . -, "
            "at most 128 characters, starting with a letter or digit)",
            hint="name class folders (or CSV classes) by the federation's labels",
        )
    return name


def _class_dirs(root: Path, what: str) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for i, d in enumerate(dirs, 1):
        _check_class(d.name, f"{what} folder #{i} (in sorted order)")
    if len(dirs) < 2:
        raise _layout_error(
            f"the DICOM {what} folder holds {len(dirs)} class folder(s); at least two are needed",
            hint="put each class's files in its own sub-folder, e.g. DATA/normal/, DATA/pneumonia/",
        )
    return dirs


def _files_below(folder: Path) -> list[Path]:
    """Every regular, non-hidden file below ``folder`` (links not followed), sorted by path."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = Path(dirpath) / name
            if not name.startswith(".") and path.is_file() and not path.is_symlink():
                found.append(path)
        if len(found) > MAX_FILES:
            break
    return sorted(found)


def _count_check(n: int) -> None:
    if n > MAX_FILES:
        raise DicomLimitError(
            f"the DICOM source holds more than {MAX_FILES} files",
            hint="use a subset of the studies, or split the export",
        )


def _items(base: Path, names: Sequence[str], split: str | None) -> list[DicomItem]:
    items: list[DicomItem] = []
    suffix = f" ({split})" if split else ""
    for label, name in enumerate(names):
        folder = base / name
        files = _files_below(folder) if folder.is_dir() else []
        _count_check(len(items) + len(files))
        items += [
            DicomItem(path, label, f"file #{i} in class {name!r}{suffix}")
            for i, path in enumerate(files, 1)
        ]
    return items


def _list_folders(root: Path) -> DicomListing:
    presplit = all((root / s).is_dir() for s in SPLIT_DIRS)
    if not presplit:
        names = [d.name for d in _class_dirs(root, "data")]
        return DicomListing(names, _items(root, names, None), None, "folders", root)
    names = [d.name for d in _class_dirs(root / "train", "train")]
    test_names = [d.name for d in _class_dirs(root / "test", "test")]
    if set(test_names) - set(names):
        raise _layout_error(
            "the test folder has classes that the train folder lacks",
            hint="give train/ a folder for every class in test/",
        )
    train = _items(root / "train", names, "train")
    test = _items(root / "test", names, "test")
    _count_check(len(train) + len(test))
    return DicomListing(names, train, test, "presplit", root)


def _csv_rows(path: Path) -> list[list[str]]:
    if path.stat().st_size > MAX_CSV_BYTES:
        raise DicomLimitError(
            f"the labels file is larger than {MAX_CSV_BYTES >> 20} MiB",
            hint="one row per file (file,class) is far smaller; check the file",
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        raise _layout_error(
            "the labels file is not readable UTF-8 text", hint="save it as UTF-8 CSV"
        ) from None
    try:
        return list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error:
        raise _layout_error(
            "the labels file is not valid CSV", hint="write one `file,class` pair per line"
        ) from None


def _csv_path(root: Path, cell: str, row: int) -> Path:
    if len(cell) > MAX_REL_PATH or not REL_PATH.fullmatch(cell):
        raise _layout_error(
            f"row #{row} of the labels file: the file cell is not a plain relative path",
            hint="use paths relative to the CSV's folder, '/'-separated, of letters, digits, "
            "space and . _ + - (no '..', no leading '.' or '/')",
        )
    path = root / cell
    try:
        mode = path.lstat().st_mode
    except OSError:
        raise DataError(
            f"row #{row} of the labels file names a file that does not exist",
            hint="fix the row or add the file (paths are relative to the CSV's folder)",
            code="E_DATA_MISSING",
        ) from None
    if not stat.S_ISREG(mode):
        raise _layout_error(
            f"row #{row} of the labels file names {file_kind(mode)}, not a regular file",
            hint="name the DICOM file itself: a link to a file is not followed (copy the "
            "file into the export)",
        )
    return path


def _list_csv(csv_file: Path) -> DicomListing:
    rows = _csv_rows(csv_file)
    header = [c.strip() for c in rows[0]] if rows else []
    if header not in (CSV_HEADER, [*CSV_HEADER, CSV_PATIENT]):
        raise _layout_error(
            "the labels file does not start with the header `file,class` (or `file,class,patient`)",
            hint="write `file,class` (or `file,class,patient`) as the first line",
        )
    body = [r for r in rows[1:] if r]
    _count_check(len(body))
    root = csv_file.parent
    pairs: list[tuple[Path, str]] = []
    patients: list[str | None] = []
    for row, cells in enumerate(body, 1):
        if len(cells) != len(header):
            raise _layout_error(
                f"row #{row} of the labels file has {len(cells)} cells, not {len(header)}",
                hint=f"write one `{','.join(header)}` row per line",
            )
        name = _check_class(cells[1], f"the class of row #{row} of the labels file")
        pairs.append((_csv_path(root, cells[0], row), name))
        patients.append(_patient_cell(cells[2], row) if len(cells) == 3 else None)
    names = sorted({n for _, n in pairs})
    if len(names) < 2:
        raise _layout_error(
            f"the labels file names {len(names)} class(es); at least two are needed",
            hint="label files of at least two classes",
        )
    index = {n: i for i, n in enumerate(names)}
    items = [
        DicomItem(p, index[n], f"row #{row} of the labels file (class {n!r})", patient)
        for row, ((p, n), patient) in enumerate(zip(pairs, patients, strict=True), 1)
    ]
    return DicomListing(names, items, None, "csv", root)


def _patient_cell(cell: str, row: int) -> str:
    """A CSV patient cell, bounded; blank is kept as blank (no patient: refused where needed)."""
    if len(cell) > MAX_PATIENT_CELL:
        raise _layout_error(
            f"row #{row} of the labels file: the patient cell is longer than "
            f"{MAX_PATIENT_CELL} characters",
            hint="name each patient by a short pseudonym",
        )
    return cell


def is_labels_csv(path: str | os.PathLike) -> bool:
    """Whether a ``dicom:`` source's path names a labels CSV (else a folder of class folders).

    A CSV's classes are the set of its class cells: one row can add or remove a class."""
    p = Path(path)
    return p.is_file() and p.suffix.lower() == ".csv"


def list_source(path: str | os.PathLike) -> DicomListing:
    """List a ``dicom:`` source: a folder of class folders, or a ``.csv`` labels file; two
    entries that are one file are refused (:func:`ffsecure.split.check_distinct_files`)."""
    p = Path(path)
    if is_labels_csv(p):
        listing = _list_csv(p)
    elif p.is_dir():
        listing = _list_folders(p)
    else:
        raise DataError(
            f"DICOM source {p} is neither a folder nor a .csv labels file",
            hint="give dicom:DIR (one sub-folder per class) or dicom:FILE.csv (file,class rows)",
            code="E_DATA_MISSING",
        )
    items = listing.train + (listing.test or [])
    check_distinct_files([item.path for item in items], lambda i: items[i].where)
    return listing


# --------------------------------------------------------------------------- one file


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Keep pydicom's warnings and log records (which may quote tag values) out of every log."""
    pydicom_log = logging.getLogger("pydicom")
    before = pydicom_log.propagate
    pydicom_log.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pydicom_log.propagate = before


def _read_dataset(path: Path, where: str, *, tags: Sequence[str] | None = None) -> pydicom.Dataset:
    """The whole file, or with ``tags`` its header's named tags alone (no pixel data)."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DicomLimitError(
            f"{where} is larger than {MAX_FILE_BYTES >> 20} MiB",
            hint="export a smaller image, or remove the file",
        )
    try:
        if tags is not None:
            return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(tags))
        return pydicom.dcmread(path)
    except Exception:  # noqa: BLE001 - an untrusted parser; its message may quote tag values
        raise DicomError(
            f"{where} is not a readable DICOM file",
            hint="remove the file, or export it again from PACS as DICOM Part 10",
        ) from None


def _check_image(ds: pydicom.Dataset, where: str) -> None:
    """Refuse what this loader does not read, before any pixel is decoded."""
    if "PixelData" not in ds:
        raise DicomError(
            f"{where} holds no pixel data",
            hint="remove the file (a report, DICOMDIR or structured report is not an image)",
        )
    frames = ds.get("NumberOfFrames", 1)
    if not isinstance(frames, int) or frames != 1:
        raise DicomError(
            f"{where} is a multi-frame image; one 2D image per file is read",
            hint="export single-frame images (one file per image), or remove the file",
        )
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not all(isinstance(v, int) and 1 <= v <= MAX_ROWS_COLS for v in (rows, cols)):
        raise DicomLimitError(
            f"{where} has no image size between 1 and {MAX_ROWS_COLS} rows and columns",
            hint="export a smaller image, or remove the file",
        )
    photometric = ds.get("PhotometricInterpretation")
    samples = ds.get("SamplesPerPixel")
    if photometric not in PHOTOMETRIC or samples != (3 if photometric == "RGB" else 1):
        raise DicomError(
            f"{where} is not a MONOCHROME1, MONOCHROME2 or RGB image",
            hint="export grayscale (MONOCHROME2) or RGB images",
        )
    if ds.get("BitsAllocated") not in (8, 16) or not 1 <= int(ds.get("BitsStored") or 0) <= 16:
        raise DicomError(
            f"{where} does not store 8- or 16-bit pixels",
            hint="export 8- or 16-bit integer pixels",
        )


def _decodable(ds: pydicom.Dataset, where: str) -> bool:
    """Whether the file is compressed; refuses a syntax no installed handler decodes."""
    syntax = getattr(ds, "file_meta", pydicom.Dataset()).get("TransferSyntaxUID")
    if syntax is None:
        raise DicomError(f"{where} names no transfer syntax", hint=UNCOMPRESSED_HINT)
    if not syntax.is_compressed:
        return False
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise DicomCompressedError(
            f"{where} is compressed in a transfer syntax no installed decoder reads",
            hint=UNCOMPRESSED_HINT,
        )
    return True


def _stored_range(ds: pydicom.Dataset) -> tuple[int, int]:
    bits = int(ds.BitsStored)
    if ds.get("PixelRepresentation", 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _has_window(ds: pydicom.Dataset) -> bool:
    return ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None


def _monochrome(arr: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """Modality LUT, VOI LUT or window, scale to [0,1] over the display range, MONOCHROME1."""
    ends = np.asarray(_stored_range(ds), dtype=np.int64)  # a Modality LUT indexes by integer
    values = apply_modality_lut(arr, ds)
    if _has_window(ds):  # the window's output range: what it maps -inf and +inf to
        values = apply_voi_lut(values, ds, prefer_lut=False)
        ends = apply_voi_lut(np.array([-np.inf, np.inf]), ds, prefer_lut=False)
    elif ds.get("VOILUTSequence"):
        values = apply_voi_lut(values, ds)
        ends = np.array([0.0, float((1 << int(ds.VOILUTSequence[0].LUTDescriptor[2])) - 1)])
    else:
        ends = apply_modality_lut(ends, ds)
    lo, hi = sorted(float(v) for v in np.asarray(ends, dtype=np.float64))
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError("empty display range")
    unit = np.clip((np.asarray(values, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        unit = 1.0 - unit
    return unit


def _pixels(ds: pydicom.Dataset, where: str, compressed: bool) -> np.ndarray:
    try:
        arr = ds.pixel_array
    except Exception:  # noqa: BLE001 - pixel handlers raise many types; messages may quote tags
        if compressed:
            raise DicomCompressedError(
                f"{where} could not be decompressed", hint=UNCOMPRESSED_HINT
            ) from None
        raise DicomError(
            f"{where} has pixel data that does not match its image size",
            hint="remove the file, or export it again",
        ) from None
    want = (int(ds.Rows), int(ds.Columns)) + ((3,) if ds.PhotometricInterpretation == "RGB" else ())
    if arr.shape != want:
        raise DicomError(f"{where} decodes to an unexpected shape", hint="remove the file")
    return arr


def read_pixels(item: DicomItem) -> np.ndarray:
    """One file's image as ``float32 (H,W)`` (grayscale) or ``(H,W,3)`` (RGB) in ``[0,1]``."""
    where = item.where
    with _quiet_pydicom():
        ds = _read_dataset(item.path, where)
        try:
            _check_image(ds, where)
            arr = _pixels(ds, where, _decodable(ds, where))
            if ds.PhotometricInterpretation == "RGB":
                lo, hi = _stored_range(ds)
                unit = np.clip((arr.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)
            else:
                unit = _monochrome(arr, ds)
        except DataError:
            raise
        except Exception:  # noqa: BLE001 - header, LUT and window values come from the file
            raise DicomError(
                f"{where} has a header value, rescale, LUT or window that cannot be applied",
                hint="export the image again with a valid window (center/width) or none",
            ) from None
    return unit.astype(np.float32)


# ----------------------------------------------------------------------------- patients


@dataclass(frozen=True)
class PatientCensus:
    """How a list of files falls into patients: counts only, never an id.

    ``unnamed`` files name no patient; each is counted as a patient of its own.
    """

    images: int
    patients: int
    several: int  # patients holding more than one image
    largest: int  # the most images of one patient (k)
    unnamed: int


def _patient_id(item: DicomItem) -> str | None:
    """The CSV's patient cell or else the file's PatientID, stripped; None when absent or
    blank. Never logged or returned."""
    if item.patient is not None:
        return item.patient.strip() or None
    with _quiet_pydicom():
        ds = _read_dataset(item.path, item.where, tags=("PatientID",))
        value = ds.get("PatientID")
    text = "" if value is None else str(value).strip()
    return text or None


def group_patients(items: Sequence[DicomItem]) -> tuple[list[list[int]], list[int]]:
    """Indices of ``items`` per patient (in first-seen order), and the indices naming none.

    Ids are compared as HMAC-SHA-256 digests under a key drawn for this call alone.
    """
    key = secrets.token_bytes(32)
    groups: dict[bytes, list[int]] = {}
    unnamed: list[int] = []
    for index, item in enumerate(items):
        patient = _patient_id(item)
        if patient is None:
            unnamed.append(index)
            continue
        digest = hmac.new(key, patient.encode("utf-8", "backslashreplace"), hashlib.sha256)
        groups.setdefault(digest.digest(), []).append(index)
    return list(groups.values()), unnamed


def census(groups: Sequence[Sequence[int]], unnamed: Sequence[int]) -> PatientCensus:
    """The counts of :func:`group_patients`' result."""
    sizes = [len(group) for group in groups] + [1] * len(unnamed)
    return PatientCensus(
        images=sum(sizes),
        patients=len(sizes),
        several=sum(1 for size in sizes if size > 1),
        largest=max(sizes, default=0),
        unnamed=len(unnamed),
    )


def _pick_key(item: DicomItem, root: Path, seed: int) -> bytes:
    """The rank of a file within its patient: depends on the seed and that file alone."""
    return example_digest("patient-pick", seed, relative_key(item.path, root))


def patient_split(
    items: Sequence[DicomItem], root: Path, seed: int, test_fraction: float
) -> tuple[list[DicomItem], list[DicomItem]]:
    """Train and test files of patient mode: the kept files split by the one per-file rule
    (:func:`ffsecure.split.hash_split`, domain ``patient-split``), so one patient more or less
    changes at most one training example: that patient's own, or, where the per-class
    fallback fires, one other file of its class (and then that patient's file was test).
    """
    relatives = [relative_key(item.path, root) for item in items]
    labels = [item.label for item in items]
    train_idx, test_idx = hash_split(
        relatives, labels, seed, test_fraction, domain=PATIENT_SPLIT_DOMAIN
    )
    return [items[i] for i in train_idx], [items[i] for i in test_idx]


def one_per_patient(
    items: Sequence[DicomItem], *, root: Path, seed: int
) -> tuple[list[DicomItem], PatientCensus]:
    """One file per patient, in listing order, and the census of ``items`` before the choice.

    The kept file is the patient's file of smallest :func:`_pick_key`: a pseudo-random choice
    (no bias towards a class or a date that a sorted name would carry) that depends on the
    patient's own files only. A file naming no patient raises :class:`DicomPatientError`.
    """
    groups, unnamed = group_patients(items)
    if unnamed:
        where = items[unnamed[0]].where
        raise DicomPatientError(
            f"{where} names no patient (no PatientID (0010,0020), or a blank patient cell), "
            f'and data.privacy_unit = "patient" groups images by patient '
            f"({len(unnamed)} file(s) name none)",
            hint="export the files with their PatientID (a pseudonym is enough, one per "
            "patient) or fill the labels CSV's patient column, remove the files, or set "
            'privacy_unit = "image" (DP per image)',
        )
    kept = sorted(min(group, key=lambda i: _pick_key(items[i], root, seed)) for group in groups)
    return [items[i] for i in kept], census(groups, unnamed)
