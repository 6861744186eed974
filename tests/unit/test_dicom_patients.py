"""The unit of privacy: one image per patient from a ``dicom:`` source, and what image mode means.

Real DICOM files written by pydicom (tests/dicom_fixture.py); every patient id contains the
fixture's PATIENT_ID, so one grep finds any that leaks into a log line, an error or a record.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil

import numpy as np
import pytest

from ffsecure import dicom
from ffsecure import dp as dpmod
from ffsecure.data import PrivacyUnitError, load_dataset, scan_dataset
from site_node.config import parse_config
from site_node.training import data_fingerprint, patient_warning
from tests.dicom_fixture import (
    PATIENT_ID,
    assert_no_identifiers,
    digits_images,
    patient_ids,
    write_digits_dicom,
)

SHAPE = (1, 8, 8)


def _kept_patients(kept, written, ids) -> list[str]:
    index = {path: i for i, path in enumerate(written.paths)}
    return [ids[index[item.path]] for item in kept]


def test_patient_mode_keeps_exactly_one_image_of_each_patient(tmp_path):
    # 2 classes x 6 files, 4 files per patient: patient 1 has two files in each class
    ids = patient_ids(12, per_patient=4)
    written = write_digits_dicom(tmp_path / "pacs", per_class=6, classes=(0, 1), patients=ids)
    listing = dicom.list_source(written.root)
    kept, census = dicom.one_per_patient(listing.train, root=listing.root, seed=0)
    assert len(kept) == 3
    assert sorted(_kept_patients(kept, written, ids)) == sorted(set(ids))
    assert census == dicom.PatientCensus(images=12, patients=3, several=3, largest=4, unnamed=0)
    loaded = load_dataset(f"dicom:{written.root}", image_shape=SHAPE, privacy_unit="patient")
    assert loaded.train_y.numel() + loaded.test_y.numel() == 3
    image_mode = load_dataset(f"dicom:{written.root}", image_shape=SHAPE)
    assert image_mode.train_y.numel() + image_mode.test_y.numel() == 12


def test_which_image_a_patient_keeps_does_not_depend_on_the_other_patients(tmp_path):
    """One patient removed changes one example, never another patient's choice."""
    ids = patient_ids(20, per_patient=5)
    written = write_digits_dicom(tmp_path / "pacs", per_class=10, classes=(0, 1), patients=ids)
    listing = dicom.list_source(written.root)
    before, _ = dicom.one_per_patient(listing.train, root=listing.root, seed=7)
    gone = [p for p, pid in zip(written.paths, ids, strict=True) if pid == ids[5]]
    for path in gone:
        path.unlink()
    listing = dicom.list_source(written.root)
    after, _ = dicom.one_per_patient(listing.train, root=listing.root, seed=7)
    assert [item.path for item in after] == [item.path for item in before if item.path not in gone]
    assert len(after) == 3


@pytest.mark.parametrize("missing", [None, "   "])
def test_a_file_without_a_patient_id_is_refused_in_patient_mode_by_ordinal(tmp_path, missing):
    ids: list[str | None] = list(patient_ids(8, per_patient=2))
    ids[6] = missing
    written = write_digits_dicom(tmp_path / "pacs", per_class=4, classes=(0, 1), patients=ids)
    with pytest.raises(dicom.DicomPatientError) as info:
        load_dataset(f"dicom:{written.root}", image_shape=SHAPE, privacy_unit="patient")
    assert info.value.code == "E_DICOM_PATIENT"
    assert "file #3 in class '1'" in info.value.message and "PatientID" in info.value.message
    hint = info.value.hint or ""
    assert "pseudonym" in hint
    assert_no_identifiers({"message": str(info.value).encode(), "hint": hint.encode()})
    # image mode reads the same files: the unnamed file counts as a patient of its own
    scan = scan_dataset(f"dicom:{written.root}", image_shape=SHAPE)
    assert scan.patients is not None and scan.patients.unnamed == 1


@pytest.mark.parametrize("spec", ["digits", "npz:{npz}", "folder:{root}", "pneumoniamnist"])
def test_a_source_without_patient_ids_is_refused_in_patient_mode(tmp_path, spec):
    images, labels = digits_images(4, classes=(0, 1))
    npz = tmp_path / "d.npz"
    np.savez(npz, train_images=images, train_labels=labels, test_images=images, test_labels=labels)
    spec = spec.format(npz=npz, root=tmp_path)
    for call in (load_dataset, scan_dataset):
        with pytest.raises(PrivacyUnitError) as info:
            call(spec, image_shape=SHAPE, privacy_unit="patient")
        assert info.value.code == "E_DATA_PRIVACY_UNIT"
        assert "no patient id" in info.value.message and "dicom:" in (info.value.hint or "")


def test_no_patient_id_reaches_a_log_line_or_the_loaded_record(tmp_path, caplog, capsys):
    ids = patient_ids(12, per_patient=3)
    written = write_digits_dicom(tmp_path / "pacs", per_class=6, classes=(0, 1), patients=ids)
    caplog.set_level(logging.DEBUG)
    loaded = load_dataset(f"dicom:{written.root}", image_shape=SHAPE, privacy_unit="patient")
    scan = scan_dataset(f"dicom:{written.root}", image_shape=SHAPE)
    assert loaded.patients is not None and loaded.patients.largest == 3
    out = capsys.readouterr()
    blobs = {
        "log": "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records).encode(),
        "stdout": out.out.encode(),
        "stderr": out.err.encode(),
        "record": repr((loaded.summary(), loaded.source, loaded.patients, scan)).encode(),
    }
    assert caplog.records  # the loader logs: the search covers real lines
    assert_no_identifiers(blobs)


def test_image_mode_counts_patients_with_several_images_and_the_largest(tmp_path):
    ids = patient_ids(20, per_patient=1)
    ids[0:4] = [ids[0]] * 4  # one patient of 4 images
    ids[10:12] = [ids[10]] * 2  # one of 2
    written = write_digits_dicom(tmp_path / "pacs", per_class=10, classes=(0, 1), patients=ids)
    scan = scan_dataset(f"dicom:{written.root}", image_shape=SHAPE)
    assert scan.patients == dicom.PatientCensus(
        images=20, patients=16, several=2, largest=4, unnamed=0
    )
    assert sum(scan.counts) == 20
    patient = scan_dataset(f"dicom:{written.root}", image_shape=SHAPE, privacy_unit="patient")
    assert sum(patient.counts) == 16


def test_the_release_epsilon_of_a_patient_with_k_images_is_the_accountant_at_sigma_over_k():
    """The red team's case: signed 0.993 at delta 1e-5; the exact analytic Gaussian mechanism
    (Balle and Wang 2018, computed independently) gives 2.118, 4.661, 10.689 at k = 2, 4, 8;
    the PRV accountant is at most its eps_error above, never below."""
    plan = dpmod.plan_mean_embedding(dpmod.DPConfig(target_epsilon=1.0, delta=1e-5), n=2000)
    record = {**plan.report(0.993), "mechanism": "mean-embedding"}
    for k, analytic in ((2, 2.118), (4, 4.661), (8, 10.689)):
        epsilon, delta, exact = dpmod.group_claim(record, k)
        assert exact and delta == 1e-5
        assert analytic <= epsilon <= analytic + 0.02
    assert dpmod.group_claim(record, 1)[0] == 0.993


def test_dp_sgd_is_only_bounded_by_group_privacy():
    record = {"epsilon": 1.0, "delta": 1e-5, "mechanism": "dp-sgd"}
    epsilon, delta, exact = dpmod.group_claim(record, 4)
    assert not exact and epsilon == 4.0 and delta == pytest.approx(4 * np.exp(3) * 1e-5)


def test_the_warning_gives_k_and_the_patient_epsilon_and_is_silent_when_not_due():
    census = dicom.PatientCensus(images=100, patients=60, several=25, largest=4, unnamed=0)
    plan = dpmod.plan_mean_embedding(dpmod.DPConfig(target_epsilon=1.0, delta=1e-5), n=2000)
    record = {**plan.report(0.993), "mechanism": "mean-embedding"}
    expected = dpmod.release_group_epsilon(plan.noise_multiplier, 1e-5, 4)
    text = patient_warning(census, record, "image")
    assert text is not None
    assert "25 of 60 patients" in text and "k = 4" in text
    assert f"epsilon {expected:.2f}" in text and 4.6 < expected < 4.75
    assert 'privacy_unit = "patient"' in text
    sgd = patient_warning(census, {"epsilon": 1.0, "delta": 1e-5, "mechanism": "dp-sgd"}, "image")
    assert sgd is not None and "group privacy: epsilon at most 4 " in sgd
    # at epsilon 8 the lemma's delta is k e^(3 * 8) 1e-5, about 1e6: no bound at all
    loose = patient_warning(census, {"epsilon": 8.0, "delta": 1e-5, "mechanism": "dp-sgd"}, "image")
    assert loose is not None and "no meaningful bound" in loose and "at most 32" not in loose
    assert patient_warning(census, record, "patient") is None
    assert patient_warning(census, None, "image") is None
    single = dicom.PatientCensus(images=60, patients=60, several=0, largest=1, unnamed=0)
    assert patient_warning(single, record, "image") is None


def test_a_dp_record_states_its_unit_and_an_unknown_one_is_refused():
    plan = dpmod.plan_mean_embedding(dpmod.DPConfig(target_epsilon=1.0, delta=1e-5), n=2000)
    record = {**plan.report(0.993), "mechanism": "dp-sgd"}
    for unit in (None, "image", "patient"):
        claim_record = dict(record) if unit is None else {**record, "privacy_unit": unit}
        assert dpmod.DPClaim.from_record(claim_record, require_parameters=True) is not None
        assert dpmod.record_privacy_unit(claim_record) == (unit or "image")
    with pytest.raises(dpmod.DPClaimError, match="unknown privacy unit 'study'"):
        dpmod.DPClaim.from_record({**record, "privacy_unit": "study"}, require_parameters=True)


def test_the_dicom_fixture_still_copies_cleanly(tmp_path):
    """shutil copies keep the patient grouping (paths below the root rank the choice)."""
    ids = patient_ids(8, per_patient=2)
    written = write_digits_dicom(tmp_path / "a", per_class=4, classes=(0, 1), patients=ids)
    shutil.copytree(written.root, tmp_path / "b")
    first = dicom.list_source(tmp_path / "a")
    second = dicom.list_source(tmp_path / "b")
    kept_a, _ = dicom.one_per_patient(first.train, root=first.root, seed=3)
    kept_b, _ = dicom.one_per_patient(second.train, root=second.root, seed=3)
    assert [i.path.relative_to(tmp_path / "a") for i in kept_a] == [
        i.path.relative_to(tmp_path / "b") for i in kept_b
    ]


def test_a_labels_csv_patient_column_names_the_patients_and_a_blank_cell_is_refused(tmp_path):
    # every file's header says PATIENT_ID; the CSV's column names three patients instead
    written = write_digits_dicom(tmp_path / "pacs", per_class=3, classes=(0, 1))
    cells = patient_ids(6, per_patient=2)
    rows = [
        f"{path.relative_to(written.root).as_posix()},{label},{cell}"
        for path, label, cell in zip(written.paths, written.labels, cells, strict=True)
    ]
    csv = written.root / "labels.csv"
    csv.write_text("\n".join(["file,class,patient", *rows]) + "\n")
    listing = dicom.list_source(csv)
    assert PATIENT_ID not in repr(listing)  # the cells stay out of every repr (paths do not)
    kept, census = dicom.one_per_patient(listing.train, root=listing.root, seed=0)
    assert len(kept) == 3 and census.largest == 2 and census.patients == 3
    rows[4] = rows[4].rsplit(",", 1)[0] + ", "
    csv.write_text("\n".join(["file,class,patient", *rows]) + "\n")
    with pytest.raises(dicom.DicomPatientError) as info:
        load_dataset(f"dicom:{csv}", image_shape=SHAPE, privacy_unit="patient")
    assert "row #5 of the labels file" in info.value.message
    assert_no_identifiers({"message": str(info.value).encode()})


def test_changing_the_unit_counts_as_new_data_for_run(tmp_path):
    written = write_digits_dicom(tmp_path / "pacs", per_class=2, classes=(0, 1))
    text = f'[site]\nfederation_id = "f"\nsite_id = "s"\n[data]\nsource = "dicom:{written.root}"\n'
    cfg = parse_config(text, tmp_path / "site.toml")
    assert cfg.privacy_unit == "image"
    patient = dataclasses.replace(cfg, privacy_unit="patient")
    assert data_fingerprint(patient) != data_fingerprint(cfg)
    assert parse_config(text + 'privacy_unit = "patient"\n', tmp_path / "site.toml") == patient


def test_removing_one_patient_changes_at_most_one_training_example(tmp_path):
    """Patient-level DP needs neighbouring holdings to give neighbouring training sets: each
    patient's split comes from its own file, and the per-class fallback moves at most one
    other (a seeded shuffle of the whole list moves many when one file goes)."""
    ids = patient_ids(60, per_patient=2)
    written = write_digits_dicom(tmp_path / "pacs", per_class=30, classes=(0, 1), patients=ids)

    def training_set(root):
        ds = load_dataset(f"dicom:{root}", image_shape=SHAPE, privacy_unit="patient")
        return {(x.numpy().tobytes(), int(y)) for x, y in zip(ds.train_x, ds.train_y, strict=True)}

    full = training_set(written.root)
    assert 15 <= len(full) <= 30  # 30 patients, about 80% train
    gone = ids[0]
    smaller = tmp_path / "smaller"
    shutil.copytree(written.root, smaller)
    for path, pid in zip(written.paths, ids, strict=True):
        if pid == gone:
            (smaller / path.relative_to(written.root)).unlink()
    fewer = training_set(smaller)
    assert fewer <= full and len(full - fewer) <= 1
