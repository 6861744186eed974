"""The ``dicom:`` source: pixel pipeline, layouts, refusals, limits, and no identifier in errors.

Every DICOM file here is written by pydicom (tests/dicom_fixture.py) and carries
distinctive patient names, ids, study UID and file names; every refusal is
checked to name the file by ordinal and class and to quote none of them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.uid import JPEGBaseline8Bit, JPEGLSLossless

from ffsecure import data, dicom
from ffsecure.errors import DataError
from site_node.training import map_labels
from tests import dicom_fixture as fx

SHAPE = (1, 16, 16)


def ramp(unit_max: float = 1.0) -> np.ndarray:
    """An 8x8 image of multiples of 1/16 from 0 to ``unit_max``."""
    return (np.arange(64).reshape(8, 8) % 17 / 16.0 * unit_max).astype(np.float32)


def two_classes(root: Path, n: int = 3) -> Path:
    for cls in ("normal", "pneumonia"):
        for i in range(n):
            fx.save(
                fx.dicom_dataset(fx.stored_values(ramp())), root / cls / f"{fx.FILE_TAG}-{i}.dcm"
            )
    return root


def refusal(spec: str, code: str) -> DataError:
    with pytest.raises(DataError) as info:
        data.load_dataset(spec, image_shape=SHAPE)
    err = info.value
    assert err.code == code, err
    text = f"{err.message} {err.hint}"
    assert not fx.found_identifiers({"error": text.encode()}), text
    return err


def item(path: Path) -> dicom.DicomItem:
    return dicom.DicomItem(path, 0, "file #1 in class 'normal'")


# ------------------------------------------------------------------------- pixel pipeline


def test_dicom_digits_load_bit_for_bit_like_an_npz_of_the_same_images(tmp_path):
    digits = fx.write_digits_dicom(tmp_path / "dcm", per_class=12)
    ds = data.load_dataset(f"dicom:{digits.root}", image_shape=SHAPE, seed=3)
    tr, te = fx.split_like_dicom(digits, 3)
    npz = fx.write_npz_like(digits, tmp_path / "same.npz", tr, te)
    ref = data.load_dataset(f"npz:{npz}", image_shape=SHAPE)
    assert ds.class_names == [str(i) for i in range(10)] and ds.name == "dicom"
    assert torch.equal(ds.train_x, ref.train_x) and torch.equal(ds.test_x, ref.test_x)
    assert torch.equal(ds.train_y, ref.train_y) and torch.equal(ds.test_y, ref.test_y)
    assert ds.source == {"kind": "dicom", "layout": "folders", "seed": 3, "split": "hash-v2"}


def test_rescale_and_window_are_applied_and_clip_outside_the_window(tmp_path):
    stored = fx.stored_values(ramp())  # HU = 128 v - 1024 for v = 0..16
    ds = fx.dicom_dataset(stored)
    ds.WindowCenter, ds.WindowWidth = 256.5, 1025.0  # LINEAR: HU -256 .. 768
    got = dicom.read_pixels(item(fx.save(ds, tmp_path / "a.dcm")))
    hu = stored.astype(np.float64) * fx.SLOPE + fx.INTERCEPT
    want = np.clip((hu + 256.0) / 1024.0, 0.0, 1.0)
    assert got.dtype == np.float32 and got.shape == (8, 8)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    assert got.min() == 0.0 and got.max() == 1.0  # both ends of the window clip


def test_without_a_window_the_stored_bit_range_through_the_rescale_is_the_display_range(tmp_path):
    stored = np.full((8, 8), 65535, dtype=np.uint16)
    stored[0, 0] = 0
    got = dicom.read_pixels(item(fx.save(fx.dicom_dataset(stored, window=False), tmp_path / "a")))
    assert got[0, 0] == 0.0 and got[1, 1] == 1.0


def test_a_modality_lut_sequence_maps_the_stored_range_without_a_window(tmp_path):
    from pydicom.dataset import Dataset

    stored = (np.arange(64, dtype=np.uint16) * 4).reshape(8, 8)  # 0..252
    ds = fx.dicom_dataset(stored, window=False)
    del ds.RescaleSlope, ds.RescaleIntercept
    lut = Dataset()
    lut.add_new(0x00283002, "US", [256, 0, 16])  # LUT Descriptor: entries, first, bits
    lut.add_new(0x00283006, "US", [16 * i for i in range(256)])  # LUT Data: 0..4080
    ds.ModalityLUTSequence = [lut]
    got = dicom.read_pixels(item(fx.save(ds, tmp_path / "lut.dcm")))
    np.testing.assert_array_equal(got, (stored * 16 / 4080.0).astype(np.float32))


def test_monochrome1_is_inverted_and_loads_like_its_monochrome2_twin(tmp_path):
    image = ramp()
    mono2 = fx.save(fx.dicom_dataset(fx.stored_values(image)), tmp_path / "m2.dcm")
    inverted = fx.stored_values(image, monochrome1=True)
    assert not np.array_equal(inverted, fx.stored_values(image))
    mono1 = fx.save(fx.dicom_dataset(inverted, photometric="MONOCHROME1"), tmp_path / "m1.dcm")
    got1, got2 = dicom.read_pixels(item(mono1)), dicom.read_pixels(item(mono2))
    np.testing.assert_array_equal(got1, got2)
    np.testing.assert_array_equal(got2, image)


def test_rgb_is_read_over_its_bit_range_and_becomes_gray_by_the_luma_rule(tmp_path):
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red
    ds = fx.dicom_dataset(np.zeros((8, 8), dtype=np.uint16), window=False)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    del ds.RescaleSlope, ds.RescaleIntercept
    ds.PixelData = rgb.tobytes()
    root = tmp_path / "rgb"
    for cls in ("a", "b"):
        for name in ("x.dcm", "y.dcm"):
            fx.save(ds, root / cls / name)
    loaded = data.load_dataset(f"dicom:{root}", image_shape=(1, 8, 8))
    assert torch.allclose(loaded.train_x, torch.full_like(loaded.train_x, 0.299 * 2 - 1))


# --------------------------------------------------------------------------- refusals


def test_a_multi_frame_file_is_refused_by_ordinal_and_class(tmp_path):
    root = two_classes(tmp_path / "d")
    frames = np.stack([fx.stored_values(ramp())] * 3)
    fx.save(fx.dicom_dataset(frames, frames=3), root / "pneumonia" / f"{fx.FILE_TAG}-9.dcm")
    err = refusal(f"dicom:{root}", "E_DICOM")
    assert "file #4 in class 'pneumonia' is a multi-frame image" in err.message


def test_a_file_without_pixel_data_is_refused(tmp_path):
    root = two_classes(tmp_path / "d")
    ds = fx.dicom_dataset(fx.stored_values(ramp()))
    del ds.PixelData
    fx.save(ds, root / "normal" / f"{fx.FILE_TAG}-0a.dcm")
    err = refusal(f"dicom:{root}", "E_DICOM")
    assert "file #2 in class 'normal' holds no pixel data" in err.message


def test_a_non_dicom_file_named_dcm_is_refused_by_ordinal(tmp_path):
    root = two_classes(tmp_path / "d")
    (root / "normal" / f"{fx.FILE_TAG}-{fx.PATIENT_ID}.dcm").write_bytes(b"PNG? no. " * 50)
    err = refusal(f"dicom:{root}", "E_DICOM")
    assert "file #4 in class 'normal' is not a readable DICOM file" in err.message


def test_a_compressed_syntax_without_a_decoder_is_refused_with_the_export_fix(tmp_path):
    root = two_classes(tmp_path / "d")
    ds = fx.jpeg_dataset(np.zeros((8, 8), dtype=np.uint16), JPEGLSLossless)
    fx.save(ds, root / "normal" / f"{fx.FILE_TAG}-1a.dcm")
    err = refusal(f"dicom:{root}", "E_DICOM_COMPRESSED")
    assert "file #3 in class 'normal'" in err.message and "no installed decoder" in err.message
    assert "Explicit VR Little Endian" in str(err.hint)


def test_a_jpeg_file_that_does_not_decode_is_refused_as_compressed(tmp_path):
    root = two_classes(tmp_path / "d")
    ds = fx.jpeg_dataset(np.zeros((8, 8), dtype=np.uint16), JPEGBaseline8Bit)
    fx.save(ds, root / "pneumonia" / f"{fx.FILE_TAG}-0.dcm")
    err = refusal(f"dicom:{root}", "E_DICOM_COMPRESSED")
    assert "file #1 in class 'pneumonia' could not be decompressed" in err.message
    assert "Explicit VR Little Endian" in str(err.hint)


def test_a_class_folder_outside_the_name_rule_is_refused_without_its_name(tmp_path):
    root = two_classes(tmp_path / "d")
    (root / f"{fx.PATIENT_NAME}\n").mkdir()
    err = refusal(f"dicom:{root}", "E_DATA_FORMAT")
    assert "data folder #1 (in sorted order) is not a class name" in err.message


def test_a_class_folder_outside_the_label_space_is_named_by_ordinal_only():
    local = ["normal", fx.PATIENT_ID, "pneumonia"]
    with pytest.raises(DataError) as info:
        map_labels(local, ["normal", "pneumonia"], "name", show_names=False)
    assert info.value.code == "E_DATA_LABELS" and "local classes #2 (in sorted order)" in str(
        info.value
    )
    assert not fx.found_identifiers({"error": str(info.value).encode()})


@pytest.mark.parametrize(
    "limit,value,what",
    [
        ("MAX_FILES", 5, "more than 5 files"),
        ("MAX_FILE_BYTES", 200, r"file #\d in class 'normal' is larger than"),
        ("MAX_ROWS_COLS", 4, r"file #\d in class 'normal' has no image size"),
    ],
)
def test_limits_are_enforced_before_pixels_are_decoded(tmp_path, monkeypatch, limit, value, what):
    root = two_classes(tmp_path / "d")
    monkeypatch.setattr(dicom, limit, value)
    err = refusal(f"dicom:{root}", "E_DICOM_LIMIT")
    # the first file read (the first that trains) is refused, named by ordinal and class
    assert re.search(what, err.message), err.message


# ------------------------------------------------------------------------------ CSV labels


def test_a_labels_csv_maps_relative_paths_to_classes(tmp_path):
    root = two_classes(tmp_path / "export")
    rows = ["file,class"] + [
        f"{cls}/{fx.FILE_TAG}-{i}.dcm,{cls}" for cls in ("normal", "pneumonia") for i in range(3)
    ]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    by_csv = data.load_dataset(f"dicom:{root / 'labels.csv'}", image_shape=SHAPE)
    by_folder = data.load_dataset(f"dicom:{root}", image_shape=SHAPE)
    assert by_csv.class_names == ["normal", "pneumonia"] and by_csv.source["layout"] == "csv"
    assert torch.equal(by_csv.train_y, by_folder.train_y)
    assert torch.equal(by_csv.train_x, by_folder.train_x)


@pytest.mark.parametrize(
    "row,message",
    [
        (f"../{fx.FILE_TAG}.dcm,normal", "row #1 of the labels file: the file cell"),
        (f"/{fx.FILE_TAG}.dcm,normal", "row #1 of the labels file: the file cell"),
        (f"normal/{fx.FILE_TAG}-0.dcm,{fx.PATIENT_NAME}\x07", "the class of row #1"),
        (f"normal/{fx.FILE_TAG}-0.dcm,normal,{fx.PATIENT_ID}", "row #1 of the labels file has 3"),
    ],
)
def test_a_labels_csv_row_is_refused_by_its_number_never_its_cells(tmp_path, row, message):
    root = two_classes(tmp_path / "export")
    (root / "labels.csv").write_text(f"file,class\n{row}\n")
    err = refusal(f"dicom:{root / 'labels.csv'}", "E_DATA_FORMAT")
    assert message in err.message


def test_a_labels_csv_naming_a_missing_file_is_refused(tmp_path):
    root = two_classes(tmp_path / "export")
    (root / "labels.csv").write_text(f"file,class\nnormal/{fx.FILE_TAG}-77.dcm,normal\n")
    err = refusal(f"dicom:{root / 'labels.csv'}", "E_DATA_MISSING")
    assert "row #1 of the labels file names a file that does not exist" in err.message


@pytest.mark.parametrize("kind", ["a symbolic link", "a folder"])
def test_a_labels_csv_row_naming_no_regular_file_says_what_it_names(tmp_path, kind):
    root = two_classes(tmp_path / "export")
    target = root / "normal" / "extra.dcm"
    if kind == "a symbolic link":
        target.symlink_to(next((root / "normal").glob("*.dcm")))
    else:
        target.mkdir()
    (root / "labels.csv").write_text("file,class\nnormal/extra.dcm,normal\n")
    err = refusal(f"dicom:{root / 'labels.csv'}", "E_DATA_FORMAT")
    assert f"row #1 of the labels file names {kind}, not a regular file" in err.message
    assert "a link to a file is not followed" in err.hint


@pytest.mark.parametrize("how", ["same path", "linked folder", "hard link"])
def test_one_file_named_twice_by_a_labels_csv_is_refused_by_row_number(tmp_path, how):
    """Two rows naming one file (as text, through a linked folder, or by a hard link) would
    make it two training examples: files are compared by device and inode, and the error
    names rows, never a path."""
    root = two_classes(tmp_path / "export")
    rows = ["file,class"] + [
        f"{cls}/{fx.FILE_TAG}-{i}.dcm,{cls}" for cls in ("normal", "pneumonia") for i in range(3)
    ]
    if how == "same path":
        rows.append(f"normal/{fx.FILE_TAG}-0.dcm,pneumonia")
    elif how == "linked folder":
        (root / "alias").symlink_to(root / "normal", target_is_directory=True)
        rows.append(f"alias/{fx.FILE_TAG}-0.dcm,normal")
    else:
        (root / "normal" / "copy.dcm").hardlink_to(root / "normal" / f"{fx.FILE_TAG}-0.dcm")
        rows.append("normal/copy.dcm,normal")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    err = refusal(f"dicom:{root / 'labels.csv'}", "E_DATA_FORMAT")
    assert err.message.startswith("row #1 of the labels file (class 'normal') and row #7 ")
    assert "are the same file" in err.message


@pytest.mark.parametrize("how", ["hard link", "linked class folder"])
def test_one_file_reached_twice_in_a_dicom_folder_is_refused_by_ordinal(tmp_path, how):
    root = two_classes(tmp_path / "export")
    if how == "hard link":
        (root / "pneumonia" / "copy.dcm").hardlink_to(root / "normal" / f"{fx.FILE_TAG}-0.dcm")
        named = "file #1 in class 'normal' and file #4 in class 'pneumonia'"
    else:
        (root / "zlinked").symlink_to(root / "normal", target_is_directory=True)
        named = "file #1 in class 'normal' and file #1 in class 'zlinked'"
    err = refusal(f"dicom:{root}", "E_DATA_FORMAT")
    assert err.message.startswith(named) and "are the same file" in err.message


def test_a_link_to_a_file_in_a_dicom_class_folder_is_skipped(tmp_path):
    root = two_classes(tmp_path / "export")
    (root / "pneumonia" / "link.dcm").symlink_to(root / "normal" / f"{fx.FILE_TAG}-0.dcm")
    listing = dicom.list_source(root)
    assert len(listing.train) == 6


# ----------------------------------------------------------------------------- site config


def test_site_config_takes_a_dicom_source_relative_to_the_config(tmp_path):
    from site_node.config import parse_config

    text = '[site]\nfederation_id = "fed"\nsite_id = "st-a"\n[data]\nsource = "dicom:pacs"\n'
    cfg = parse_config(text, tmp_path / "site.toml")
    assert cfg.data_source == f"dicom:{(tmp_path / 'pacs').resolve()}"
