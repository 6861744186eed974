"""Datasets for federation members and simulations, loaded into one typed record.

Every loader returns a :class:`Dataset` whose images are ``float32`` tensors
``(N, C, H, W)`` in ``[-1, 1]`` with the federation's channel count and size,
and whose labels are ``int64`` indices into ``class_names``.

Sources (``load_dataset`` spec strings):

* a MedMNIST 2D flag (``pneumoniamnist``, ``breastmnist``, ``retinamnist``...):
  read through the ``medmnist`` package from a local root, MD5-checked
  against ``medmnist.INFO[flag]["MD5"]``; downloaded only when asked;
* ``npz:PATH``: any ``.npz`` in the MedMNIST layout (how a hospital brings its
  own data), validated key by key, always read with ``allow_pickle=False``;
* ``folder:PATH``: one sub-folder per class holding PNG/JPEG files, either
  with ``train/`` and ``test/`` sub-folders or split by each file's own hash;
* ``dicom:PATH``: DICOM files, one sub-folder per class (or ``train/`` and
  ``test/``), or a ``file,class`` CSV; read by :mod:`ffsecure.dicom`, which
  never lets a file name or tag value into an error or a log line;
* ``digits``: scikit-learn's 8x8 handwritten digits (shipped with
  scikit-learn, no download), resized bilinearly to ``1x16x16`` by default.

Without a fixed split, a site's files are split by :mod:`ffsecure.split`: each file
by its own seeded hash, with a per-class fallback that gives each class a test file,
so one image more or less changes at most one training example (what the DP claim
per image needs; the argument is there); ``source["split"]`` names the rule
(``hash-v2``), ``fixed`` for a source that brings its split.

Missing files raise ``E_DATA_MISSING``, a wrong checksum ``E_DATA_CHECKSUM``
and malformed content ``E_DATA_FORMAT`` (all :class:`DataError`).

The unit of privacy (``privacy_unit``, :data:`ffsecure.dp.PRIVACY_UNITS`):
``image`` loads every image; ``patient`` keeps one image per patient
(:func:`ffsecure.dicom.one_per_patient`), so that one patient changes at most
one training example. Only ``dicom:`` names patients; any other source in
patient mode is refused (:class:`PrivacyUnitError`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ffsecure import dicom
from ffsecure.dp import PRIVACY_UNITS
from ffsecure.errors import DataError
from ffsecure.records import fields
from ffsecure.split import SPLIT_RULE, check_distinct_files, hash_split, relative_key

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MEDMNIST = REPO_ROOT.parent / "shared" / "data" / "medmnist"
DIGITS_SHAPE = (1, 16, 16)
FOLDER_SIZE = 28  # default height/width for folder datasets when no shape is given
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_IMAGES = 2_000_000  # refuse absurd inputs before allocating float copies
NPZ_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass
class Dataset:
    """A labelled image dataset in the pipeline's tensor conventions."""

    name: str
    class_names: list[str]
    image_shape: tuple[int, int, int]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    source: dict[str, Any] = field(default_factory=dict)
    # dicom: how the training images fall into patients (counts only), before any grouping
    patients: dicom.PatientCensus | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict[str, Any]:
        """Sizes and per-class counts, for logs and results files."""
        out = {
            "name": self.name,
            "class_names": list(self.class_names),
            "image_shape": list(self.image_shape),
            "train": int(self.train_y.numel()),
            "test": int(self.test_y.numel()),
            "train_per_class": torch.bincount(self.train_y, minlength=self.num_classes).tolist(),
        }
        if self.val_y is not None:
            out["val"] = int(self.val_y.numel())
        return out


class PrivacyUnitError(DataError):
    """The unit of privacy asked for cannot be honoured by this source (no patient ids)."""

    code = "E_DATA_PRIVACY_UNIT"


def check_privacy_unit(spec: str, privacy_unit: str) -> None:
    """Refuse a ``privacy_unit`` that ``spec`` cannot honour: ``patient`` needs ``dicom:``."""
    if privacy_unit not in PRIVACY_UNITS:
        raise PrivacyUnitError(
            f"unknown privacy unit {privacy_unit!r}", hint=f"use one of {list(PRIVACY_UNITS)}"
        )
    if privacy_unit == "patient" and not spec.startswith("dicom:"):
        kind = spec.partition(":")[0] if ":" in spec else spec
        raise PrivacyUnitError(
            f"privacy unit 'patient' needs a source that names each image's patient; "
            f"{kind!r} images carry no patient id, so one image per patient cannot be kept",
            hint='use a dicom: source (PatientID in each file), or set privacy_unit = "image" '
            "and export one image per patient yourself",
        )


def _format_error(message: str, hint: str | None = None) -> DataError:
    return DataError(
        message,
        hint=hint or "check the file against the MedMNIST .npz layout",
        code="E_DATA_FORMAT",
    )


# --------------------------------------------------------------------------- shapes


def _shape_error(message: str) -> DataError:
    return DataError(
        message,
        hint="C must be 1 or 3; H and W multiples of 4 between 8 and 64",
        code="E_DATA_SHAPE",
    )


def check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate a federation image shape ``(C, H, W)``: C in {1,3}, H/W multiples of 4 in [8, 64].

    Lenient about the integer type (numpy ints, ``torch.Size``); the rule itself is
    :func:`ffsecure.records.fields.check_image_shape`, raising E_DATA_SHAPE here.
    """
    try:
        c, h, w = (int(v) for v in image_shape)
    except (TypeError, ValueError):
        raise DataError(
            f"image shape {image_shape!r} is not three integers (C, H, W)",
            hint="give the shape as C,H,W, e.g. 1,28,28",
            code="E_DATA_SHAPE",
        ) from None
    return fields.check_image_shape(
        (c, h, w),
        not_three=lambda got: _shape_error(f"image shape {got!r} is not three integers"),
        unsupported=lambda got: _shape_error(f"image shape {got} is not supported"),
    )


def to_pipeline_images(array: np.ndarray, image_shape: Sequence[int]) -> torch.Tensor:
    """Convert images ``(N,H,W)``, ``(N,H,W,1)`` or ``(N,H,W,3)`` (uint8, or float in [0,1])
    into ``float32 (N,C,H,W)`` in ``[-1,1]`` with the requested channels and size.

    Channels and size follow :func:`fit_images`: gray becomes RGB by repetition;
    RGB becomes gray with the ITU-R 601-2 luma weights (as PIL's ``convert("L")``).
    Resizing is bilinear with antialiasing.
    """
    c, h, w = check_image_shape(image_shape)
    arr = np.asarray(array)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise _format_error(f"images have shape {array.shape}; expected (N,H,W) or (N,H,W,1|3)")
    if arr.dtype == np.uint8:
        x = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float32).div_(255.0)
    elif arr.dtype in (np.float32, np.float64):
        if arr.size and (not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0):
            raise _format_error("float images must be finite and lie in [0, 1]")
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    else:
        raise _format_error(f"images have dtype {arr.dtype}; expected uint8 or float in [0,1]")
    x = x.permute(0, 3, 1, 2)  # N,C,H,W
    return fit_images(x, (c, h, w)).mul(2.0).sub(1.0).contiguous()


def fit_images(x: torch.Tensor, image_shape: Sequence[int]) -> torch.Tensor:
    """Bring ``float32 (N,C',H',W')`` images in ``[0,1]`` to ``image_shape``, still in ``[0,1]``.

    The one channel and resize rule of every source (:func:`to_pipeline_images`
    and the per-file DICOM reader): gray becomes RGB by repetition, RGB gray by
    the ITU-R 601-2 luma weights, the size changes bilinearly with antialiasing,
    and the result is clamped to ``[0,1]`` (so applying it twice changes nothing).
    """
    c, h, w = check_image_shape(image_shape)
    if x.shape[1] != c:
        if c == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(1, 3, 1, 1)
            x = (x * weights).sum(dim=1, keepdim=True)
    if tuple(x.shape[2:]) != (h, w) and x.shape[0] > 0:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0)


def _labels(array: np.ndarray, key: str, n: int) -> torch.Tensor:
    arr = np.asarray(array)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise _format_error(
            f"{key} has shape {array.shape}; expected (N,) or (N,1) single-label class indices",
            hint="multi-label data sets are not supported; give one class index per image",
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise _format_error(f"{key} has dtype {arr.dtype}; expected integer class indices")
    if arr.shape[0] != n:
        raise _format_error(f"{key} has {arr.shape[0]} labels for {n} images")
    return torch.from_numpy(arr.astype(np.int64))


# --------------------------------------------------------------------------- npz


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(
            f"data file {path} does not exist",
            hint="check the path; a .npz in the MedMNIST layout is expected",
            code="E_DATA_MISSING",
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {}
            for key in npz.files:
                if key.endswith(("_images", "_labels")):
                    arrays[key] = npz[key]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as exc:
        raise _format_error(
            f"{path} is not a readable .npz archive ({type(exc).__name__}: {exc})",
            hint="the file is corrupt or not a NumPy .npz; fetch it again",
        ) from None
    return arrays


def arrays_to_dataset(
    arrays: dict[str, np.ndarray],
    *,
    name: str,
    image_shape: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    source: dict[str, Any] | None = None,
) -> Dataset:
    """Validate MedMNIST-layout arrays and convert them into a :class:`Dataset`."""
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise _format_error(
            f"{name}: missing arrays {', '.join(missing)}",
            hint="an .npz needs train_images, train_labels, test_images, test_labels "
            "(val_* optional)",
        )
    splits = ["train", "test"]
    if "val_images" in arrays or "val_labels" in arrays:
        if not ("val_images" in arrays and "val_labels" in arrays):
            raise _format_error(f"{name}: val_images and val_labels must come together")
        splits.insert(1, "val")
    raw_shapes = set()
    total = 0
    for split in splits:
        img = arrays[f"{split}_images"]
        if img.ndim not in (3, 4) or (img.ndim == 4 and img.shape[-1] not in (1, 3)):
            raise _format_error(
                f"{name}: {split}_images has shape {img.shape}; expected (N,H,W) or (N,H,W,3)"
            )
        if img.shape[0] == 0 and split != "val":
            raise _format_error(f"{name}: {split}_images is empty")
        raw_shapes.add(tuple(img.shape[1:]) if img.ndim == 4 else tuple(img.shape[1:]) + (1,))
        total += img.shape[0]
    if len(raw_shapes) != 1:
        raise _format_error(f"{name}: splits have different image shapes {sorted(raw_shapes)}")
    if total > MAX_IMAGES:
        raise _format_error(f"{name}: {total} images is more than the limit of {MAX_IMAGES}")
    raw_h, raw_w, raw_c = next(iter(raw_shapes))
    if image_shape is None:
        image_shape = (raw_c, raw_h, raw_w)
    image_shape = check_image_shape(image_shape)

    labels = {
        s: _labels(arrays[f"{s}_labels"], f"{s}_labels", arrays[f"{s}_images"].shape[0])
        for s in splits
    }
    lo = min(int(t.min()) for t in labels.values() if t.numel())
    hi = max(int(t.max()) for t in labels.values() if t.numel())
    if class_names is None:
        class_names = [str(i) for i in range(hi + 1)]
    k = len(class_names)
    if lo < 0 or hi >= k:
        raise _format_error(
            f"{name}: labels range over [{lo}, {hi}] but there are {k} classes",
            hint="labels must be class indices 0..K-1",
        )
    if k < 2:
        raise _format_error(f"{name}: only {k} class; a classifier needs at least two")
    images = {s: to_pipeline_images(arrays[f"{s}_images"], image_shape) for s in splits}
    return Dataset(
        name=name,
        class_names=list(class_names),
        image_shape=image_shape,
        train_x=images["train"],
        train_y=labels["train"],
        test_x=images["test"],
        test_y=labels["test"],
        val_x=images.get("val"),
        val_y=labels.get("val"),
        source=dict(source or {}),
    )


def load_npz(
    path: str | os.PathLike,
    *,
    image_shape: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
) -> Dataset:
    """Load a MedMNIST-layout ``.npz`` (never unpickling anything)."""
    p = Path(path)
    arrays = _read_npz(p)
    return arrays_to_dataset(
        arrays,
        name=p.stem,
        image_shape=image_shape,
        class_names=class_names,
        source={"kind": "npz", "path": str(p), "sha256": sha256_file(p)},
    )


# --------------------------------------------------------------------------- MedMNIST


def default_root() -> Path:
    """``$FFSECURE_DATA``, else ``../shared/data/medmnist`` next to the repo,
    else ``~/.medmnist``."""
    env = os.environ.get("FFSECURE_DATA")
    if env:
        return Path(env).expanduser()
    if SHARED_MEDMNIST.is_dir():
        return SHARED_MEDMNIST
    return Path("~/.medmnist").expanduser()


def _hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def md5_file(path: Path) -> str:
    return _hash_file(path, "md5")


def sha256_file(path: Path) -> str:
    return _hash_file(path, "sha256")


def medmnist_flags() -> list[str]:
    """The 2D single-label MedMNIST flags this loader accepts."""
    # heavy: medmnist, only when a MedMNIST flag is named
    from medmnist import INFO

    return sorted(
        f
        for f, info in INFO.items()
        if not f.endswith("3d") and info["task"] != "multi-label, binary-class"
    )


def load_medmnist(
    flag: str,
    *,
    image_shape: Sequence[int] | None = None,
    root: str | os.PathLike | None = None,
    download: bool = False,
    expected_md5: str | None = None,
) -> Dataset:
    """Load a MedMNIST 2D subset (28x28 file) from ``root`` after checking its official MD5."""
    # heavy: medmnist, only when a MedMNIST subset is loaded
    import medmnist
    from medmnist import INFO

    flag = flag.lower()
    if flag not in INFO:
        raise DataError(
            f"unknown data set {flag!r}",
            hint=f"use a MedMNIST 2D flag ({', '.join(medmnist_flags())}), digits, "
            "npz:PATH, folder:PATH or dicom:PATH",
            code="E_DATA_SPEC",
        )
    if flag not in medmnist_flags():
        raise DataError(
            f"MedMNIST subset {flag!r} is 3D or multi-label, which ffsecure does not support",
            hint=f"use one of {', '.join(medmnist_flags())}",
            code="E_DATA_SPEC",
        )
    info = INFO[flag]
    root_path = Path(root).expanduser() if root is not None else default_root()
    path = root_path / f"{flag}.npz"
    dataset_cls = getattr(medmnist, info["python_class"])
    if download and not path.is_file():
        root_path.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s to %s", flag, root_path)
        try:
            dataset_cls(split="train", root=str(root_path), download=True)
        except Exception as exc:  # the package raises bare RuntimeErrors
            raise DataError(
                f"could not download {flag}.npz into {root_path}: "
                f"{str(exc).strip().splitlines()[0]}",
                hint=f"download {info['url']} by hand and put it at {path}",
                code="E_DATA_DOWNLOAD",
            ) from None
    if not path.is_file():
        raise DataError(
            f"MedMNIST file {path.name} is not in {root_path}",
            hint=(
                f"put {path.name} (from {info['url'].split('?')[0]}) at {path}, set FFSECURE_DATA "
                "to the folder that holds it, or pass --download on a machine with network access"
            ),
            code="E_DATA_MISSING",
        )
    want = (expected_md5 or info["MD5"]).lower()
    got = md5_file(path)
    if not hmac.compare_digest(got, want):
        raise DataError(
            f"{path} has MD5 {got}, not the official {want}",
            hint=f"the file is corrupt or not the official {flag}.npz; replace it",
            code="E_DATA_CHECKSUM",
        )
    # The medmnist package opens the verified file (numpy's default: no pickle).
    try:
        splits = {
            s: dataset_cls(split=s, root=str(root_path), download=False)
            for s in ("train", "val", "test")
        }
        arrays = {}
        for s, ds in splits.items():
            arrays[f"{s}_images"] = np.asarray(ds.imgs)
            arrays[f"{s}_labels"] = np.asarray(ds.labels)
    except (ValueError, OSError, KeyError, RuntimeError, zipfile.BadZipFile) as exc:
        raise _format_error(f"{path} could not be read: {exc}") from None
    class_names = [info["label"][str(i)] for i in range(len(info["label"]))]
    if image_shape is None:
        image_shape = (int(info["n_channels"]), 28, 28)
    return arrays_to_dataset(
        arrays,
        name=flag,
        image_shape=image_shape,
        class_names=class_names,
        source={"kind": "medmnist", "flag": flag, "path": str(path), "md5": got},
    )


# --------------------------------------------------------------------------- digits


def _stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split; returns sorted (train_idx, test_idx).

    For the digits alone: one shuffle per class, so one image more or less moves others
    between the splits; site sources split by :func:`ffsecure.split.hash_split` instead.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(
    *, image_shape: Sequence[int] | None = None, test_fraction: float = 0.25, seed: int = 0
) -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), resized bilinearly.

    The default shape is ``1x16x16``: the smallest multiple-of-4 size above the
    native 8x8 that keeps the strokes legible. Split: stratified, seeded.
    """
    # The digits are public benchmark data, never a site's: they keep the stratified split,
    # which every recorded benchmark was run on (a hash split would change them all).
    # heavy: scikit-learn, only for the digits data set
    from sklearn.datasets import load_digits as sk_digits

    image_shape = check_image_shape(image_shape or DIGITS_SHAPE)
    bunch = sk_digits()
    imgs = (bunch.images / 16.0).astype(np.float32)  # values 0..16 -> [0, 1]
    y = bunch.target.astype(np.int64)
    tr, te = _stratified_split(y, test_fraction, seed)
    arrays = {
        "train_images": imgs[tr],
        "train_labels": y[tr],
        "test_images": imgs[te],
        "test_labels": y[te],
    }
    return arrays_to_dataset(
        arrays,
        name="digits",
        image_shape=image_shape,
        class_names=[str(i) for i in range(10)],
        source={
            "kind": "digits",
            "test_fraction": test_fraction,
            "seed": seed,
            "split": "stratified",
        },
    )


# --------------------------------------------------------------------------- image folder


def _class_dirs(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(dirs) < 2:
        raise _format_error(
            f"{root} holds {len(dirs)} class folder(s); at least two are needed",
            hint="put each class's images in its own sub-folder, "
            "e.g. DATA/normal/*.png, DATA/pneumonia/*.png",
        )
    return dirs


def _image_files(folder: Path) -> list[Path]:
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise _format_error(f"class folder {folder} holds no PNG or JPEG files")
    return files


def _check_distinct_images(files: Sequence[Path]) -> None:
    """One image file, one example: refuse two entries that are the same file."""
    check_distinct_files(files, lambda i: f"image {files[i]}")


def _read_images(files: list[Path], channels: int, size: tuple[int, int]) -> np.ndarray:
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(files), size[0], size[1]) + ((3,) if channels == 3 else ()), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as opened:
                im = opened.convert(mode)
                if im.size != (size[1], size[0]):
                    im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                out[i] = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise _format_error(
                f"image {f} could not be read: {exc}", hint="remove or replace the file"
            ) from None
    return out


def load_folder(
    path: str | os.PathLike,
    *,
    image_shape: Sequence[int] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Load ``PATH/<class>/*.png|jpg`` (hash split) or ``PATH/{train,test}/<class>/...``.

    Links to files and folders are followed; two entries that are the same file are refused
    (:func:`ffsecure.split.check_distinct_files`), so each file is one example.

    Without ``train/`` and ``test/``, each file's split comes from its own hash (seed and
    path below ``PATH``, :func:`ffsecure.split.hash_split`), so that one image more or less
    changes at most one training example. Class names are the sub-folder names in sorted
    order. Without an explicit ``image_shape`` the channels follow the first image (gray or
    RGB) and the size is 28x28.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist", hint="check the path", code="E_DATA_MISSING"
        )
    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    train_root = root / "train" if presplit else root
    class_dirs = _class_dirs(train_root)
    class_names = [d.name for d in class_dirs]
    files = {c: _image_files(d) for c, d in zip(class_names, class_dirs, strict=True)}
    if image_shape is None:
        first = files[class_names[0]][0]
        try:
            with Image.open(first) as im:
                channels = 1 if im.mode in ("1", "L", "I", "I;16", "F") else 3
        except OSError as exc:
            raise _format_error(f"image {first} could not be read: {exc}") from None
        image_shape = (channels, FOLDER_SIZE, FOLDER_SIZE)
    c, h, w = check_image_shape(image_shape)

    def gather(base: Path, names: list[str]) -> tuple[list[Path], np.ndarray]:
        paths, labels = [], []
        for k, name in enumerate(names):
            d = base / name
            fs = _image_files(d) if d.is_dir() else []
            paths += fs
            labels += [k] * len(fs)
        return paths, np.asarray(labels, dtype=np.int64)

    if presplit:
        test_names = [d.name for d in _class_dirs(root / "test")]
        extra = sorted(set(test_names) - set(class_names))
        if extra:
            raise _format_error(f"{root / 'test'} has classes {extra} that {train_root} lacks")
        tr_files, tr_y = gather(train_root, class_names)
        te_files, te_y = gather(root / "test", class_names)
        _check_distinct_images(tr_files + te_files)
    else:
        all_files, all_y = gather(root, class_names)
        _check_distinct_images(all_files)
        relatives = [relative_key(f, root) for f in all_files]
        tr, te = hash_split(relatives, all_y, seed, test_fraction)
        tr_files, tr_y = [all_files[i] for i in tr], all_y[tr]
        te_files, te_y = [all_files[i] for i in te], all_y[te]
    if len(tr_files) + len(te_files) > MAX_IMAGES:
        raise _format_error(f"{root} holds more than {MAX_IMAGES} images")
    arrays = {
        "train_images": _read_images(tr_files, c, (h, w)),
        "train_labels": tr_y,
        "test_images": _read_images(te_files, c, (h, w)),
        "test_labels": te_y,
    }
    return arrays_to_dataset(
        arrays,
        name=root.name,
        image_shape=(c, h, w),
        class_names=class_names,
        source={
            "kind": "folder",
            "path": str(root),
            "presplit": presplit,
            "seed": seed,
            "split": "fixed" if presplit else SPLIT_RULE,
        },
    )


# --------------------------------------------------------------------------- DICOM


def _read_dicom_images(items: Sequence[dicom.DicomItem], image_shape: Sequence[int]) -> np.ndarray:
    """Read DICOM files one by one at ``image_shape``: ``float32 (N,H,W,C)`` in ``[0,1]``."""
    c, h, w = check_image_shape(image_shape)
    out = np.empty((len(items), h, w, c), dtype=np.float32)
    for i, item in enumerate(items):
        unit = dicom.read_pixels(item)
        x = torch.from_numpy(unit if unit.ndim == 3 else unit[..., None]).permute(2, 0, 1)
        out[i] = fit_images(x[None], (c, h, w))[0].permute(1, 2, 0).numpy()
        if (i + 1) % 1000 == 0:
            log.info("read %d of %d DICOM files", i + 1, len(items))
    return out


def _dicom_splits(
    listing: dicom.DicomListing, test_fraction: float, seed: int, privacy_unit: str
) -> tuple[list[dicom.DicomItem], list[dicom.DicomItem], dicom.PatientCensus]:
    """Train and test files, and the census of the training files' patients.

    Without a fixed split each file's split comes from its own hash (:mod:`ffsecure.split`),
    so one image (or patient) more or less changes at most one training example. In patient
    mode one file per patient is kept first, and the kept files are split
    (:func:`ffsecure.dicom.patient_split`), so a patient lands in one split only; with a
    fixed split, one per patient of the train folder.
    """
    items = listing.train
    if privacy_unit == "patient":
        items, patients = dicom.one_per_patient(items, root=listing.root, seed=seed)
    if listing.test is not None:
        train_items, test_items = items, listing.test
    elif privacy_unit == "patient":
        # each patient's split from its own kept file: one patient changes one example at most
        train_items, test_items = dicom.patient_split(items, listing.root, seed, test_fraction)
    else:
        relatives = [relative_key(item.path, listing.root) for item in items]
        labels = [item.label for item in items]
        tr, te = hash_split(relatives, labels, seed, test_fraction)
        train_items, test_items = [items[i] for i in tr], [items[i] for i in te]
    if privacy_unit != "patient":
        patients = dicom.census(*dicom.group_patients(train_items))
    return train_items, test_items, patients


def load_dicom(
    path: str | os.PathLike,
    *,
    image_shape: Sequence[int] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    privacy_unit: str = "image",
) -> Dataset:
    """Load a ``dicom:`` source (see :mod:`ffsecure.dicom`); split like :func:`load_folder`.

    Without an explicit ``image_shape`` the images are ``1x28x28`` (RGB files
    become gray). The record names no path: its name is ``dicom``. ``privacy_unit``
    ``patient`` keeps one image per patient (:func:`_dicom_splits`); the record's
    ``patients`` counts how the training files fell into patients.
    """
    check_privacy_unit("dicom:", privacy_unit)
    listing = dicom.list_source(path)
    c, h, w = check_image_shape(image_shape or (1, FOLDER_SIZE, FOLDER_SIZE))
    train_items, test_items, patients = _dicom_splits(listing, test_fraction, seed, privacy_unit)
    log.info("reading %d DICOM files", len(train_items) + len(test_items))
    arrays = {
        "train_images": _read_dicom_images(train_items, (c, h, w)),
        "train_labels": np.asarray([item.label for item in train_items], dtype=np.int64),
        "test_images": _read_dicom_images(test_items, (c, h, w)),
        "test_labels": np.asarray([item.label for item in test_items], dtype=np.int64),
    }
    dataset = arrays_to_dataset(
        arrays,
        name="dicom",
        image_shape=(c, h, w),
        class_names=listing.class_names,
        source={
            "kind": "dicom",
            "layout": listing.layout,
            "seed": seed,
            "split": "fixed" if listing.test is not None else SPLIT_RULE,
        },
    )
    dataset.patients = patients
    return dataset


# --------------------------------------------------------------------------- bounded scan

#: How many images a scan decodes and converts (the labels are always read in full).
SCAN_SAMPLE = 64


@dataclass(frozen=True)
class DataScan:
    """What a bounded look at a data source found (``site-node check``).

    ``counts`` is per local class, train and test together; ``raw_shape`` is the
    stored ``(C, H, W)`` of the images (None for a built-in source, which is always
    resized); ``sampled`` images were decoded and converted to the requested shape.
    ``patients`` (``dicom:`` only) counts how every listed file falls into patients, before
    any grouping; in patient mode ``counts`` are of the files kept, one per patient.
    """

    name: str
    class_names: list[str]
    counts: list[int]
    raw_shape: tuple[int, int, int] | None
    sampled: int
    patients: dicom.PatientCensus | None = None


def _npz_member_header(zf: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    with zf.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    return shape, dtype, fortran


def scan_npz(path: Path, *, image_shape: Sequence[int], sample: int = SCAN_SAMPLE) -> DataScan:
    """Labels of every split in full, image headers, and ``sample`` images converted."""
    if not path.is_file():
        _read_npz(path)  # raises E_DATA_MISSING with its hint
    try:
        with np.load(path, allow_pickle=False) as npz, zipfile.ZipFile(path) as zf:
            splits = [s for s in ("train", "val", "test") if f"{s}_images" in npz.files]
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise _format_error(f"{path.name}: missing arrays {', '.join(missing)}")
            headers = {s: _npz_member_header(zf, f"{s}_images") for s in splits}
            labels = {
                s: _labels(npz[f"{s}_labels"], f"{s}_labels", headers[s][0][0]) for s in splits
            }
            first = _npz_rows(zf, "train_images", headers["train"], sample)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as exc:
        raise _format_error(
            f"{path} is not a readable .npz archive ({type(exc).__name__}: {exc})",
            hint="the file is corrupt or not a NumPy .npz; fetch it again",
        ) from None
    shape = headers["train"][0]
    to_pipeline_images(first, image_shape)  # E_DATA_FORMAT when it cannot become image_shape
    every = torch.cat([labels[s] for s in splits])
    if every.numel() and int(every.min()) < 0:
        raise _format_error(f"{path.name}: negative labels", hint="labels must be 0..K-1")
    k = int(every.max()) + 1 if every.numel() else 0
    counts = torch.bincount(every, minlength=k).tolist()
    raw = (shape[3] if len(shape) == 4 else 1, shape[1], shape[2])
    return DataScan(path.stem, [str(i) for i in range(k)], counts, raw, len(first))


def _npz_rows(
    zf: zipfile.ZipFile, key: str, header: tuple[tuple[int, ...], np.dtype, bool], n: int
) -> np.ndarray:
    """The first ``n`` rows of member ``key``, reading only their bytes (C order, no objects)."""
    shape, dtype, fortran = header
    if dtype.hasobject or fortran or len(shape) not in (3, 4):
        raise _format_error(
            f"{key} has shape {shape} and dtype {dtype}; expected (N,H,W) or (N,H,W,C) numbers"
        )
    n = min(n, shape[0])
    row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    with zf.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(fh)
        else:
            np.lib.format.read_array_header_2_0(fh)
        data = fh.read(n * row)
    if len(data) != n * row:
        raise _format_error(f"{key} is truncated")
    return np.frombuffer(bytearray(data), dtype=dtype).reshape((n, *shape[1:]))


def scan_folder(root: Path, *, image_shape: Sequence[int], sample: int = SCAN_SAMPLE) -> DataScan:
    """Class folders and their file counts in full, ``sample`` images decoded (spread over
    classes)."""
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist", hint="check the path", code="E_DATA_MISSING"
        )
    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    bases = [root / "train", root / "test"] if presplit else [root]
    names = [d.name for d in _class_dirs(bases[0])]
    files = {
        name: [f for b in bases if (b / name).is_dir() for f in _image_files(b / name)]
        for name in names
    }
    _check_distinct_images([f for name in names for f in files[name]])
    per_class = max(1, sample // len(names))
    picked = [f for name in names for f in files[name][:per_class]]
    c, h, w = check_image_shape(image_shape)
    try:
        with Image.open(picked[0]) as im:
            raw = (1 if im.mode in ("1", "L", "I", "I;16", "F") else 3, im.height, im.width)
    except (OSError, ValueError) as exc:
        raise _format_error(f"image {picked[0]} could not be read: {exc}") from None
    _read_images(picked, c, (h, w))
    return DataScan(root.name, names, [len(files[n]) for n in names], raw, len(picked))


def scan_dicom(
    path: Path,
    *,
    image_shape: Sequence[int],
    sample: int = SCAN_SAMPLE,
    seed: int = 0,
    privacy_unit: str = "image",
) -> DataScan:
    """Every file listed with its class and its header's PatientID read (for the census),
    ``sample`` files decoded (spread over classes) by the same reader as :func:`load_dicom`;
    the record names no path and no patient. In patient mode the files are those kept."""
    check_privacy_unit("dicom:", privacy_unit)
    listing = dicom.list_source(path)
    items = listing.train + (listing.test or [])
    if privacy_unit == "patient":
        kept, patients = dicom.one_per_patient(listing.train, root=listing.root, seed=seed)
        items = kept + (listing.test or [])
    else:
        patients = dicom.census(*dicom.group_patients(items))
    counts = np.bincount(
        np.asarray([item.label for item in items], dtype=np.int64),
        minlength=len(listing.class_names),
    ).tolist()
    per_class = max(1, sample // max(1, len(listing.class_names)))
    by_class: list[list[dicom.DicomItem]] = [[] for _ in listing.class_names]
    for item in items:
        if len(by_class[item.label]) < per_class:
            by_class[item.label].append(item)
    picked = [item for group in by_class for item in group]
    if not picked:
        raise _format_error("the DICOM source lists no file", hint="add files to each class")
    first = dicom.read_pixels(picked[0])
    raw = (3 if first.ndim == 3 else 1, first.shape[0], first.shape[1])
    _read_dicom_images(picked, check_image_shape(image_shape))
    return DataScan("dicom", list(listing.class_names), counts, raw, len(picked), patients)


def scan_dataset(
    spec: str,
    *,
    image_shape: Sequence[int],
    root: str | os.PathLike | None = None,
    seed: int = 0,
    sample: int = SCAN_SAMPLE,
    privacy_unit: str = "image",
) -> DataScan:
    """A bounded look at ``spec`` (as :func:`load_dataset` takes it): every label, few images.

    ``npz:``, ``folder:`` and ``dicom:`` read every label (file counts) but decode only
    ``sample`` images; other sources are small or checksummed, and are loaded in full.
    ``dicom:`` also reads every file's PatientID for :attr:`DataScan.patients`.
    """
    check_privacy_unit(spec, privacy_unit)
    if spec.startswith("npz:"):
        return scan_npz(Path(spec[4:]), image_shape=image_shape, sample=sample)
    if spec.startswith("folder:"):
        return scan_folder(Path(spec[7:]), image_shape=image_shape, sample=sample)
    if spec.startswith("dicom:"):
        return scan_dicom(
            Path(spec[6:]),
            image_shape=image_shape,
            sample=sample,
            seed=seed,
            privacy_unit=privacy_unit,
        )
    ds = load_dataset(spec, image_shape=image_shape, root=root, seed=seed)
    every = torch.cat([ds.train_y, ds.test_y] + ([ds.val_y] if ds.val_y is not None else []))
    counts = torch.bincount(every, minlength=len(ds.class_names)).tolist()
    return DataScan(ds.name, list(ds.class_names), counts, None, int(every.numel()))


# --------------------------------------------------------------------------- entry point


def load_dataset(
    spec: str,
    *,
    image_shape: Sequence[int] | None = None,
    root: str | os.PathLike | None = None,
    download: bool = False,
    seed: int = 0,
    privacy_unit: str = "image",
) -> Dataset:
    """Load ``spec``: a MedMNIST flag, ``digits``, ``npz:PATH``, ``folder:PATH`` or
    ``dicom:PATH``; ``privacy_unit`` ``patient`` is for ``dicom:`` only (module docstring)."""
    if not isinstance(spec, str) or not spec:
        raise DataError(
            "empty data set name",
            hint="e.g. pneumoniamnist, digits, npz:PATH, folder:PATH, dicom:PATH",
            code="E_DATA_SPEC",
        )
    check_privacy_unit(spec, privacy_unit)
    if spec.startswith("npz:"):
        return load_npz(spec[4:], image_shape=image_shape)
    if spec.startswith("folder:"):
        return load_folder(spec[7:], image_shape=image_shape, seed=seed)
    if spec.startswith("dicom:"):
        return load_dicom(spec[6:], image_shape=image_shape, seed=seed, privacy_unit=privacy_unit)
    if spec == "digits":
        return load_digits(image_shape=image_shape, seed=seed)
    return load_medmnist(spec, image_shape=image_shape, root=root, download=download)
