"""Loaders: generated fixtures for every format, error codes for bad input."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ffsecure import data
from ffsecure.errors import DataError


def _npz_arrays(n_train=20, n_test=8, hw=(28, 28), rgb=False, classes=3, seed=0, val=True):
    rng = np.random.default_rng(seed)
    shape = hw + ((3,) if rgb else ())
    out = {}
    for split, n in (("train", n_train), ("val", 6), ("test", n_test)):
        if split == "val" and not val:
            continue
        out[f"{split}_images"] = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
        out[f"{split}_labels"] = (np.arange(n) % classes).astype(np.uint8).reshape(n, 1)
    return out


def _write_npz(path: Path, arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _check_pipeline(ds: data.Dataset, shape):
    assert ds.image_shape == tuple(shape)
    for x, y in ((ds.train_x, ds.train_y), (ds.test_x, ds.test_y)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert tuple(x.shape[1:]) == tuple(shape)
        assert x.shape[0] == y.shape[0]
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
        assert int(y.min()) >= 0 and int(y.max()) < ds.num_classes


# ------------------------------------------------------------------ npz


def test_npz_gray_roundtrip_values(tmp_path):
    arrays = _npz_arrays()
    path = _write_npz(tmp_path / "site.npz", arrays)
    ds = data.load_dataset(f"npz:{path}")
    _check_pipeline(ds, (1, 28, 28))
    assert ds.num_classes == 3 and ds.val_x is not None and ds.val_x.shape[0] == 6
    expected = torch.from_numpy(arrays["train_images"]).float() / 127.5 - 1.0
    assert torch.allclose(ds.train_x[:, 0], expected, atol=1e-6)
    assert ds.train_y.tolist() == (np.arange(20) % 3).tolist()
    assert ds.source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_npz_rgb_to_gray_and_gray_to_rgb_and_resize(tmp_path):
    rgb = _write_npz(tmp_path / "rgb.npz", _npz_arrays(rgb=True))
    gray = _write_npz(tmp_path / "gray.npz", _npz_arrays(val=False))
    ds = data.load_dataset(f"npz:{rgb}", image_shape=(1, 16, 16))
    _check_pipeline(ds, (1, 16, 16))
    ds3 = data.load_dataset(f"npz:{gray}", image_shape=(3, 32, 32))
    _check_pipeline(ds3, (3, 32, 32))
    assert torch.equal(ds3.train_x[:, 0], ds3.train_x[:, 2])
    assert ds3.val_x is None
    # Luma weights as PIL's convert("L"): a pure red image maps to 0.299.
    red = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    red[..., 0] = 255
    x = data.to_pipeline_images(red, (1, 8, 8))
    assert torch.allclose(x, torch.full_like(x, 0.299 * 2 - 1), atol=1e-6)


def test_npz_corrupt_file(tmp_path):
    good = _write_npz(tmp_path / "good.npz", _npz_arrays())
    bad = tmp_path / "bad.npz"
    raw = good.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as err:
        data.load_dataset(f"npz:{bad}")
    assert err.value.code == "E_DATA_FORMAT" and str(bad) in err.value.message
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all" * 10)
    with pytest.raises(DataError) as err:
        data.load_dataset(f"npz:{junk}")
    assert err.value.code == "E_DATA_FORMAT"


def test_npz_refuses_pickled_object_arrays(tmp_path):
    arrays = _npz_arrays()
    arrays["train_labels"] = np.array([{"x": 1}] * 20, dtype=object)
    path = tmp_path / "obj.npz"
    np.savez(path, **arrays)  # object arrays are stored pickled
    with pytest.raises(DataError) as err:
        data.load_dataset(f"npz:{path}")
    assert err.value.code == "E_DATA_FORMAT"


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda a: a.pop("test_labels"), "missing arrays test_labels"),
        (lambda a: a.update(train_labels=a["train_labels"][:5]), "5 labels for 20 images"),
        (lambda a: a.update(train_labels=a["train_labels"].astype(np.float32)), "dtype float32"),
        (lambda a: a.update(train_images=a["train_images"].astype(np.int16)), "dtype int16"),
        (
            lambda a: a.update(train_images=np.zeros((20, 28, 28, 2), np.uint8)),
            "shape (20, 28, 28, 2)",
        ),
        (lambda a: a.update(test_images=np.zeros((8, 20, 20), np.uint8)), "different image shapes"),
        (lambda a: a.update(train_labels=np.zeros((20, 14), np.uint8)), "multi-label"),
        (lambda a: a.update(train_labels=np.full((20, 1), -1, np.int64)), "labels range over [-1"),
        (lambda a: a.pop("val_labels"), "val_images and val_labels"),
    ],
)
def test_npz_validation_errors(tmp_path, mutate, words):
    arrays = _npz_arrays()
    mutate(arrays)
    path = _write_npz(tmp_path / "x.npz", arrays)
    with pytest.raises(DataError) as err:
        data.load_dataset(f"npz:{path}")
    assert err.value.code == "E_DATA_FORMAT"
    assert words in err.value.message or words in (err.value.hint or "")


def test_npz_missing_file(tmp_path):
    with pytest.raises(DataError) as err:
        data.load_dataset(f"npz:{tmp_path / 'nope.npz'}")
    assert err.value.code == "E_DATA_MISSING"


def test_bad_image_shape_refused(tmp_path):
    path = _write_npz(tmp_path / "x.npz", _npz_arrays())
    for shape in [(2, 28, 28), (1, 30, 28), (1, 4, 4), (1, 68, 68)]:
        with pytest.raises(DataError) as err:
            data.load_dataset(f"npz:{path}", image_shape=shape)
        assert err.value.code == "E_DATA_SHAPE"


# ------------------------------------------------------------------ MedMNIST (local root)


def test_medmnist_missing_file_names_file_and_place(tmp_path):
    with pytest.raises(DataError) as err:
        data.load_dataset("breastmnist", root=tmp_path)
    assert err.value.code == "E_DATA_MISSING"
    assert "breastmnist.npz" in err.value.message and str(tmp_path) in err.value.message
    assert str(tmp_path / "breastmnist.npz") in err.value.hint and "zenodo" in err.value.hint


def test_medmnist_wrong_md5(tmp_path):
    _write_npz(tmp_path / "breastmnist.npz", _npz_arrays(classes=2))
    with pytest.raises(DataError) as err:
        data.load_dataset("breastmnist", root=tmp_path)
    assert err.value.code == "E_DATA_CHECKSUM"
    assert "750601b1f35ba3300ea97c75c52ff8f6" in err.value.message


def test_medmnist_local_file_with_matching_md5(tmp_path):
    # A generated file whose MD5 is supplied as the expected one goes through the
    # medmnist package's reader and the same validation as real files.
    path = _write_npz(tmp_path / "breastmnist.npz", _npz_arrays(classes=2))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    ds = data.load_medmnist("breastmnist", root=tmp_path, expected_md5=md5)
    _check_pipeline(ds, (1, 28, 28))
    assert ds.class_names == ["malignant", "normal, benign"]
    assert ds.source["md5"] == md5


def test_medmnist_unknown_and_unsupported_flags(tmp_path):
    for flag, code in (
        ("notamnist", "E_DATA_SPEC"),
        ("organmnist3d", "E_DATA_SPEC"),
        ("chestmnist", "E_DATA_SPEC"),
    ):
        with pytest.raises(DataError) as err:
            data.load_dataset(flag, root=tmp_path)
        assert err.value.code == code


def test_default_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FFSECURE_DATA", str(tmp_path))
    assert data.default_root() == tmp_path
    monkeypatch.delenv("FFSECURE_DATA")
    expected = (
        data.SHARED_MEDMNIST if data.SHARED_MEDMNIST.is_dir() else Path("~/.medmnist").expanduser()
    )
    assert data.default_root() == expected


def test_real_medmnist_files(medmnist_root):
    ds = data.load_dataset("retinamnist", root=medmnist_root)
    _check_pipeline(ds, (3, 28, 28))
    assert (ds.train_y.numel(), ds.val_y.numel(), ds.test_y.numel()) == (1080, 120, 400)
    assert ds.num_classes == 5
    ds = data.load_dataset("breastmnist", root=medmnist_root, image_shape=(3, 32, 32))
    _check_pipeline(ds, (3, 32, 32))
    assert ds.train_y.numel() == 546


# ------------------------------------------------------------------ digits


def test_digits_default_shape_and_split():
    ds = data.load_dataset("digits")
    _check_pipeline(ds, (1, 16, 16))
    assert ds.num_classes == 10
    assert ds.train_y.numel() + ds.test_y.numel() == 1797
    assert torch.bincount(ds.test_y, minlength=10).min() >= 40  # stratified
    again = data.load_dataset("digits")
    assert torch.equal(ds.train_x, again.train_x) and torch.equal(ds.test_y, again.test_y)
    other = data.load_dataset("digits", seed=1)
    assert not torch.equal(ds.test_y, other.test_y) or not torch.equal(ds.test_x, other.test_x)
    big = data.load_dataset("digits", image_shape=(3, 28, 28))
    _check_pipeline(big, (3, 28, 28))


# ------------------------------------------------------------------ image folder


def _make_folder(root: Path, classes=("cat", "dog"), n=5, size=(20, 24), mode="L"):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            shape = size[::-1] + ((3,) if mode == "RGB" else ())
            arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
            ext = ".png" if i % 2 == 0 else ".jpg"
            Image.fromarray(arr, mode=mode).save(root / c / f"img{i}{ext}")


def test_folder_seeded_split(tmp_path):
    _make_folder(tmp_path / "data", n=10)
    ds = data.load_dataset(f"folder:{tmp_path / 'data'}")
    _check_pipeline(ds, (1, 28, 28))
    assert ds.class_names == ["cat", "dog"]
    assert ds.train_y.numel() + ds.test_y.numel() == 20 and 1 <= ds.test_y.numel() <= 10
    # each file by its own hash (ffsecure.split); every class keeps a train and a test image
    assert torch.bincount(ds.test_y, minlength=2).min() >= 1
    assert torch.bincount(ds.train_y, minlength=2).min() >= 1
    assert ds.source["split"] == "hash-v2"
    again = data.load_dataset(f"folder:{tmp_path / 'data'}")
    assert torch.equal(ds.test_x, again.test_x)


@pytest.mark.parametrize("how", ["file link", "hard link", "linked class folder", "train+test"])
def test_a_folder_image_reached_twice_is_refused(tmp_path, how):
    """One image, one example: a link, a hard link or a linked folder would make one file two
    training examples (even of two classes), and its removal would change two."""
    root = tmp_path / "data"
    if how == "train+test":
        _make_folder(root / "train", n=4)
        _make_folder(root / "test", n=2)
        (root / "test" / "dog" / "img1.jpg").unlink()
        (root / "test" / "dog" / "img1.jpg").hardlink_to(root / "train" / "cat" / "img1.jpg")
    else:
        _make_folder(root, n=4)
    if how == "file link":
        (root / "dog" / "link.png").symlink_to(root / "cat" / "img0.png")
    elif how == "hard link":
        (root / "dog" / "copy.png").hardlink_to(root / "cat" / "img0.png")
    elif how == "linked class folder":
        (root / "fox").symlink_to(root / "cat", target_is_directory=True)
    for load in (data.load_dataset, data.scan_dataset):
        with pytest.raises(DataError) as info:
            load(f"folder:{root}", image_shape=(1, 8, 8))
        assert info.value.code == "E_DATA_FORMAT" and "are the same file" in info.value.message


def test_a_folder_link_to_an_image_outside_the_source_is_one_example(tmp_path):
    _make_folder(tmp_path / "data", n=4)
    outside = tmp_path / "elsewhere.png"
    (tmp_path / "data" / "dog" / "img3.jpg").rename(outside)
    (tmp_path / "data" / "dog" / "img3.png").symlink_to(outside)
    ds = data.load_dataset(f"folder:{tmp_path / 'data'}", image_shape=(1, 8, 8))
    assert ds.train_y.numel() + ds.test_y.numel() == 8


def test_folder_presplit_rgb(tmp_path):
    _make_folder(tmp_path / "d" / "train", classes=("a", "b", "c"), n=4, mode="RGB")
    _make_folder(tmp_path / "d" / "test", classes=("a", "b", "c"), n=2, mode="RGB")
    ds = data.load_dataset(f"folder:{tmp_path / 'd'}")
    _check_pipeline(ds, (3, 28, 28))
    assert ds.train_y.numel() == 12 and ds.test_y.numel() == 6
    gray = data.load_dataset(f"folder:{tmp_path / 'd'}", image_shape=(1, 16, 16))
    _check_pipeline(gray, (1, 16, 16))


def test_folder_errors(tmp_path):
    with pytest.raises(DataError) as err:
        data.load_dataset(f"folder:{tmp_path / 'none'}")
    assert err.value.code == "E_DATA_MISSING"
    _make_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(DataError) as err:
        data.load_dataset(f"folder:{tmp_path / 'one'}")
    assert err.value.code == "E_DATA_FORMAT"
    _make_folder(tmp_path / "bad")
    (tmp_path / "bad" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError) as err:
        data.load_dataset(f"folder:{tmp_path / 'bad'}")
    assert err.value.code == "E_DATA_FORMAT" and "broken.png" in err.value.message
    _make_folder(tmp_path / "empty")
    shutil.rmtree(tmp_path / "empty" / "dog")
    (tmp_path / "empty" / "dog").mkdir()
    with pytest.raises(DataError) as err:
        data.load_dataset(f"folder:{tmp_path / 'empty'}")
    assert err.value.code == "E_DATA_FORMAT" and "no PNG or JPEG" in err.value.message
