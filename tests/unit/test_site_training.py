"""The site's training rules: DP policy (tighten, never loosen), label mapping, class filter, data
fingerprint."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ffsecure import dicom
from ffsecure.errors import ConfigError, DataError
from site_node.config import DEFAULT_TOML, parse_config
from site_node.training import (
    class_filter,
    data_fingerprint,
    load_site_data,
    map_labels,
    resolve_dp,
)
from tests.dicom_fixture import write_digits_dicom

REQUIRED = {"required": True, "max_epsilon": 8.0, "delta": 1e-5}
OPTIONAL = {"required": False, "max_epsilon": None, "delta": None}


def dp(**kw):
    base = {
        "enabled": None,
        "target_epsilon": 0.0,
        "delta": 0.0,
        "max_grad_norm": 1.0,
        "accountant": "prv",
    }
    return {**base, **kw}


def test_no_dp_when_neither_policy_nor_config_asks():
    assert resolve_dp(dp(), OPTIONAL, 1000) is None


def test_required_policy_trains_at_its_bound_by_default():
    cfg = resolve_dp(dp(), REQUIRED, 1000)
    assert cfg.target_epsilon == 8.0 and cfg.delta == min(1e-5, 1 / 10_000)


def test_config_may_tighten_the_policy():
    cfg = resolve_dp(dp(target_epsilon=2.0, delta=1e-6, accountant="rdp"), REQUIRED, 1000)
    assert (cfg.target_epsilon, cfg.delta, cfg.accountant) == (2.0, 1e-6, "rdp")


@pytest.mark.parametrize(
    "settings, key",
    [
        (dp(target_epsilon=9.0), "dp.target_epsilon"),
        (dp(delta=1e-4), "dp.delta"),
        (dp(enabled=False), "dp.enabled"),
    ],
)
def test_config_can_never_loosen_the_policy(settings, key):
    with pytest.raises(ConfigError) as err:
        resolve_dp(settings, REQUIRED, 1000)
    assert key in err.value.message and "never loosen" in (err.value.hint or "") + err.value.message


def test_site_may_ask_for_dp_the_federation_does_not_require():
    assert resolve_dp(dp(target_epsilon=4.0), OPTIONAL, 500).target_epsilon == 4.0
    assert (
        resolve_dp(dp(enabled=True, target_epsilon=3.0), OPTIONAL, 500).delta is None
    )  # library default
    # no target and no federation bound: the site's own ceiling is the target
    assert resolve_dp(dp(enabled=True), OPTIONAL, 500).target_epsilon == 8.0
    assert resolve_dp(dp(enabled=True, max_epsilon=2.0), OPTIONAL, 500).target_epsilon == 2.0


HOSTILE = {"required": True, "max_epsilon": 100.0, "delta": 1e-5}


def test_a_federation_epsilon_above_the_site_s_ceiling_is_not_adopted():
    """Red team: with the template's [dp] (target 0), an operator-chosen max_epsilon = 100
    became the site's target. The site trains at the lower of the policy's bound and its own
    ceiling (dp.max_epsilon, 8 by default; the total dp.max_total_epsilon too when lower)."""
    template = parse_config(DEFAULT_TOML, Path("/srv/site.toml")).dp
    assert resolve_dp(template, HOSTILE, 270).target_epsilon == 8.0
    assert resolve_dp(dp(), HOSTILE, 270).target_epsilon == 8.0  # a [dp] without the keys
    assert resolve_dp(dp(max_epsilon=4.0), HOSTILE, 270).target_epsilon == 4.0
    assert resolve_dp(dp(max_total_epsilon=2.0), HOSTILE, 270).target_epsilon == 2.0
    # a policy below the ceiling still binds: a site may tighten, never loosen
    assert resolve_dp(dp(), {**HOSTILE, "max_epsilon": 1.0}, 270).target_epsilon == 1.0
    # a site that raised its own ceiling knowingly trains up to it
    assert resolve_dp(dp(max_epsilon=20.0), HOSTILE, 270).target_epsilon == 20.0


@pytest.mark.parametrize(
    "settings, key",
    [
        (dp(target_epsilon=10.0), "dp.max_epsilon"),
        (dp(target_epsilon=5.0, max_epsilon=4.0), "dp.max_epsilon"),
        (dp(target_epsilon=5.0, max_total_epsilon=4.0), "dp.max_total_epsilon"),
    ],
)
def test_a_target_above_the_site_s_own_ceiling_is_a_config_error(settings, key):
    for policy in (HOSTILE, OPTIONAL):
        with pytest.raises(ConfigError) as err:
            resolve_dp(settings, policy, 270)
        assert "dp.target_epsilon" in err.value.message and key in err.value.message
        assert "knowingly" in (err.value.hint or "")


def test_label_mapping_by_name_and_by_index():
    space = ["normal", "pneumonia", "other"]
    assert map_labels(["pneumonia", "normal"], space, "name") == [1, 0]
    assert map_labels(["a", "b"], space, "index") == [0, 1]
    with pytest.raises(DataError) as err:
        map_labels(["normal", "covid"], space, "name")
    assert err.value.code == "E_DATA_LABELS" and "label_match" in err.value.hint
    with pytest.raises(DataError):
        map_labels(["a", "b", "c", "d"], space, "index")


def _dicom_site(tmp_path, source: str, label_match: str):
    text = (
        f'[site]\nfederation_id = "f"\nsite_id = "s"\n[data]\nsource = "dicom:{source}"\n'
        f'label_match = "{label_match}"\n'
    )
    return parse_config(text, tmp_path / "site.toml")


def test_a_dicom_labels_csv_is_refused_by_index_before_any_file_is_read(tmp_path, monkeypatch):
    """By index, a CSV's classes are its class cells in sorted order: deleting the one row of
    class 'a' would move every file of 'b' and 'c' to another label. Refused (E_CONFIG); by
    name, that deletion changes at most one training example (here none: 'a' is a class of
    one file, which is test only)."""
    written = write_digits_dicom(tmp_path / "pacs", per_class=8, classes=(0, 1, 2))
    rels = [path.relative_to(written.root).as_posix() for path in written.paths]
    cells = {"0": "b", "1": "c", "2": "c"}
    rows = ["file,class", f"{rels[0]},a"] + [f"{rel},{cells[rel[0]]}" for rel in rels[1:]]
    csv = written.root / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    fed = SimpleNamespace(image_shape=(1, 8, 8), label_space=["a", "b", "c"])

    def no_read(item):
        raise AssertionError("a file was read before the refusal")

    with monkeypatch.context() as patch:
        patch.setattr(dicom, "read_pixels", no_read)
        with pytest.raises(ConfigError) as err:
            load_site_data(_dicom_site(tmp_path, str(csv), "index"), fed)
    assert err.value.code == "E_CONFIG" and "data.label_match" in err.value.message
    assert 'label_match = "name"' in (err.value.hint or "")

    def training(csv_rows):
        csv.write_text("\n".join(csv_rows) + "\n")
        site = load_site_data(_dicom_site(tmp_path, str(csv), "name"), fed)
        pairs = zip(site.train_x, site.train_y, strict=True)
        return Counter((x.numpy().tobytes(), int(y)) for x, y in pairs)

    full, fewer = training(rows), training([rows[0], *rows[2:]])
    assert not fewer - full and sum((full - fewer).values()) <= 1
    # a folder per class lists its folders, which no file removes: index stays allowed
    site = load_site_data(_dicom_site(tmp_path, str(written.root), "index"), fed)
    assert site.train_y.numel() > 0


def test_class_filter_takes_names_or_indices():
    space = ["normal", "pneumonia", "other"]
    assert class_filter([], space) is None
    assert class_filter(["pneumonia", 2], space) == {1, 2}
    with pytest.raises(ConfigError, match="data.classes"):
        class_filter([3], space)
    with pytest.raises(ConfigError, match="data.classes"):
        class_filter(["covid"], space)


def _npz(path, seed):
    rng = np.random.default_rng(seed)
    np.savez(
        path,
        train_images=rng.integers(0, 255, (8, 16, 16), dtype=np.uint8),
        train_labels=rng.integers(0, 2, (8, 1)),
        test_images=rng.integers(0, 255, (4, 16, 16), dtype=np.uint8),
        test_labels=rng.integers(0, 2, (4, 1)),
    )


def test_fingerprint_changes_with_the_data_and_the_data_settings(tmp_path):
    _npz(tmp_path / "d.npz", 0)
    text = '[site]\nfederation_id = "f"\nsite_id = "s"\n[data]\nsource = "npz:d.npz"\n'
    cfg = parse_config(text, tmp_path / "site.toml")
    first = data_fingerprint(cfg)
    assert data_fingerprint(cfg) == first
    filtered = parse_config(text + "classes = [1]\n", tmp_path / "site.toml")
    assert data_fingerprint(filtered) != first
    _npz(tmp_path / "d.npz", 1)  # new data arrived
    assert data_fingerprint(cfg) != first
    (tmp_path / "d.npz").unlink()
    with pytest.raises(DataError):
        data_fingerprint(cfg)


def test_folder_fingerprint_sees_a_new_image(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.new("L", (16, 16), 10).save(tmp_path / "imgs" / cls / "1.png")
    cfg = parse_config(
        '[site]\nfederation_id = "f"\nsite_id = "s"\n[data]\nsource = "folder:imgs"\n',
        tmp_path / "site.toml",
    )
    first = data_fingerprint(cfg)
    Image.new("L", (16, 16), 200).save(tmp_path / "imgs" / "b" / "2.png")
    assert data_fingerprint(cfg) != first


def test_folder_fingerprint_sees_data_behind_a_linked_class_folder(tmp_path):
    """The loaders read a class folder that is a link; so does the fingerprint, once per
    real folder (a link back up does not loop)."""
    from PIL import Image

    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    Image.new("L", (16, 16), 10).save(tmp_path / "imgs" / "a" / "1.png")
    Image.new("L", (16, 16), 10).save(tmp_path / "elsewhere" / "1.png")
    (tmp_path / "imgs" / "b").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere" / "loop").symlink_to(tmp_path / "imgs", target_is_directory=True)
    cfg = parse_config(
        '[site]\nfederation_id = "f"\nsite_id = "s"\n[data]\nsource = "folder:imgs"\n',
        tmp_path / "site.toml",
    )
    first = data_fingerprint(cfg)
    assert data_fingerprint(cfg) == first
    Image.new("L", (16, 16), 200).save(tmp_path / "elsewhere" / "1.png")  # behind the link
    assert data_fingerprint(cfg) != first


def test_the_mechanism_is_auto_unless_the_site_or_the_federation_picks_one():
    assert resolve_dp(dp(), REQUIRED, 1000).mechanism == "auto"
    assert resolve_dp(dp(mechanism="dp-sgd"), REQUIRED, 1000).mechanism == "dp-sgd"
    pinned = {**REQUIRED, "mechanism": "mean-embedding"}
    assert resolve_dp(dp(), pinned, 1000).mechanism == "mean-embedding"
    assert resolve_dp(dp(mechanism="auto"), pinned, 1000).mechanism == "mean-embedding"
    with pytest.raises(ConfigError, match="dp.mechanism"):
        resolve_dp(dp(mechanism="dp-sgd"), pinned, 1000)


def test_a_site_per_image_is_refused_under_a_federation_that_pins_patient_dp():
    """Before any training, as a pinned mechanism: the aggregator would refuse the module."""
    pinned = {**REQUIRED, "privacy_unit": "patient"}
    with pytest.raises(ConfigError) as info:
        resolve_dp(dp(), pinned, 1000, privacy_unit="image")
    assert "data.privacy_unit: 'image'" in info.value.message and "'patient'" in info.value.message
    assert 'privacy_unit = "patient"' in (info.value.hint or "")
    assert resolve_dp(dp(), pinned, 1000, privacy_unit="patient").target_epsilon == 8.0
    # the pin binds DP runs only: a site that trains without DP under required = false is not
    # asked for patients, and one that asks for DP is
    optional = {**OPTIONAL, "privacy_unit": "patient"}
    assert resolve_dp(dp(), optional, 1000, privacy_unit="image") is None
    with pytest.raises(ConfigError, match="data.privacy_unit"):
        resolve_dp(dp(target_epsilon=2.0), optional, 1000, privacy_unit="image")
    # a federation that pins nothing, or "image", takes either unit
    for policy in (REQUIRED, {**REQUIRED, "privacy_unit": "image"}):
        for unit in ("image", "patient"):
            assert resolve_dp(dp(), policy, 1000, privacy_unit=unit) is not None


def test_declared_classes_are_the_signed_classes_or_the_load_is_refused(tmp_path):
    """With data.classes set, the module's classes are the declared ones: a declared class the
    training split lacks is refused, not silently left out of the signed list (which would say
    which declared classes the site lacks)."""
    from types import SimpleNamespace

    from site_node.training import load_site_data

    _npz(tmp_path / "d.npz", 0)  # labels 0 and 1 only
    federation = SimpleNamespace(image_shape=(1, 16, 16), label_space=["x", "y", "z"])
    text = (
        '[site]\nfederation_id = "f"\nsite_id = "s"\n[data]\nsource = "npz:d.npz"\n'
        'label_match = "index"\n'
    )
    held = load_site_data(
        parse_config(text + "classes = [0, 1]\n", tmp_path / "s.toml"), federation
    )
    assert held.classes == [0, 1]
    declared = parse_config(text + 'classes = ["x", "y", "z"]\n', tmp_path / "s.toml")
    with pytest.raises(DataError) as info:
        load_site_data(declared, federation)
    assert info.value.code == "E_DATA_EMPTY" and "'z' (0 in the test split)" in info.value.message
    assert "remove them from data.classes" in info.value.hint
