"""Build real audit bundles for the auditor's tests.

``AuditLab`` drives a real federation (tests/federation_fixture.py: CA, site
certificates, signed and sealed tiny-cvae packages) and a real SQLite store on
disk: modules are registered through ``Store.register_module`` with the
entries the aggregator writes, after the ``federation.loaded`` that
``aggregator serve`` records at start (:meth:`AuditLab.start`: the home's
``federation.json``, unless it is the last one recorded, so a test that
installs another manifest before registering gets it recorded as a restart
would), datasets and classifiers through
``Store.put_artifact`` with the lineage facts of the aggregator, deletions
through ``Store.delete_module``; ``export()`` writes the bundle the same way
``aggregator ledger export`` does (federation.json and the kept ``federations/`` included).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
from pathlib import Path

from aggregator.crl_ledger import CrlRecorder
from aggregator.export import write_bundle
from aggregator.federation_ledger import export_federations, keep_federation, record_federation
from aggregator.store import open_home_store
from ffsecure import canonical, pki
from ffsecure.federation import verify_federation_json
from ffsecure.package import build_manifest, package_meta, sign_package
from ffsecure.records.entries import make_entry
from ffsecure.records.receipts import Receipt
from tests.federation_fixture import build_federation, generator_weights


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class AuditLab:
    """``records_federation=False``: an aggregator from before ``federation.loaded`` existed."""

    def __init__(self, root: Path, *, records_federation: bool = True, **fed_kwargs):
        self.root = Path(root)
        self.records_federation = records_federation
        self.fed = build_federation(self.root / "fed", **fed_kwargs)
        self.store = open_home_store(self.fed.home)
        self.weights: dict[str, str] = {}
        self.receipts: dict[str, Receipt] = {}  # what each site was handed at registration
        self.exports = 0

    def close(self) -> None:
        self.store.close()

    def start(self) -> int | None:
        """What `aggregator serve` does at start: record the home's federation.json
        (federation.loaded) unless it is the last one recorded; the new index or None."""
        if not self.records_federation:
            return None
        data = self.fed.home.federation.read_bytes()
        signed = verify_federation_json(data, self.fed.ca.cert)
        keep_federation(self.fed.home, data, signed)
        return record_federation(self.store, signed)

    # -- modules -----------------------------------------------------------
    def register(
        self,
        site: str,
        classes=(0, 1),
        *,
        seed: int = 0,
        dp: dict | None = None,
        privacy_report: dict | None = None,
        created_at: str | None = None,
    ) -> str:
        self.start()
        fed = self.fed
        weights = generator_weights(
            fed.manifest.generator["family"], canonical.dumps(fed.manifest.generator["config"])
        )
        manifest = build_manifest(
            federation=fed.manifest,
            site_id=site,
            weights=weights,
            classes=list(classes),
            seed=seed,
            dp=dp,
            privacy_report=privacy_report,
            created_at=created_at,
        )
        creds = fed.sites[site]
        pkg = sign_package(manifest, weights, creds.key, creds.cert)
        m = pkg.manifest
        facts = {
            "module_id": m.module_id,
            "site_id": site,
            "manifest_sha256": sha(pkg.manifest_bytes),
            "weights_sha256": m.weights_sha256,
            "weights_bytes": m.weights_bytes,
            "cert_fingerprint": pki.cert_fingerprint(creds.cert),
            "generator_family": "cvae",
            "classes": list(m.classes),
            "dp_epsilon": (dp or {}).get("epsilon"),
        }
        receipt = self.store.register_module(
            module_id=m.module_id,
            site_id=site,
            manifest_bytes=pkg.manifest_bytes,
            package_meta=package_meta(pkg),
            weights=pkg.weights,
            entry=make_entry("module.registered", f"site:{site}", facts),
        )
        # the site keeps it with its module id, as the server sends it (Receipt.from_pb)
        self.receipts[m.module_id] = dataclasses.replace(receipt, module_id=m.module_id)
        self.weights[m.module_id] = m.weights_sha256
        return m.module_id

    def lineage(self, module_ids) -> list[dict]:
        return [
            {"module_id": mid, "weights_sha256": self.weights[mid]} for mid in sorted(module_ids)
        ]

    # -- artifacts ---------------------------------------------------------
    def dataset(self, dataset_id: str, module_ids, *, per_class: int = 100, seed: int = 1) -> int:
        blob = os.urandom(64)
        counts = {"0": per_class, "1": per_class}
        facts = {
            "dataset_id": dataset_id,
            "sha256": sha(blob),
            "modules": self.lineage(module_ids),
            "seed": seed,
            "per_class": per_class,
            "counts": counts,
            "recipe": {"v": 1, "seed": seed},
        }
        return self.store.put_artifact(
            "dataset",
            dataset_id,
            {"per_class": per_class},
            blob,
            make_entry("dataset.synthesized", "operator:alice", facts),
        )[0]

    def classifier(
        self, classifier_id: str, dataset_id: str, module_ids, *, accuracy: float = 0.9
    ) -> int:
        blob = os.urandom(64)
        facts = {
            "classifier_id": classifier_id,
            "dataset_id": dataset_id,
            "sha256": sha(blob),
            "modules": self.lineage(module_ids),
            "config": {"epochs": 3, "seed": 7},
            "metrics": {"accuracy": accuracy, "auroc": 0.95},
        }
        return self.store.put_artifact(
            "classifier",
            classifier_id,
            {},
            blob,
            make_entry("classifier.trained", "operator:alice", facts),
        )[0]

    def publish(self, classifier_id: str) -> int:
        return self.store.set_artifact_status(
            "classifier",
            classifier_id,
            "published",
            make_entry("classifier.published", "operator:alice", {"classifier_id": classifier_id}),
        )[0]

    def retire(
        self, kind: str, artifact_id: str, module_id: str, reason: str = "module deleted"
    ) -> int:
        key = "dataset_id" if kind == "dataset" else "classifier_id"
        return self.store.set_artifact_status(
            kind,
            artifact_id,
            "retired",
            make_entry(
                f"{kind}.retired",
                "aggregator",
                {key: artifact_id, "reason": reason, "module_id": module_id},
            ),
        )[0]

    # -- deletions, revocations --------------------------------------------
    def request_deletion(
        self, module_id: str, site: str, reason: str = "site withdrew consent"
    ) -> int:
        return self.store.append(
            make_entry(
                "module.deletion_requested",
                f"site:{site}",
                {"module_id": module_id, "reason": reason},
            )
        )[0]

    def delete(
        self, module_id: str, site: str | None = None, reason: str = "site withdrew consent"
    ) -> int:
        req = (
            make_entry(
                "module.deletion_requested",
                f"site:{site}",
                {"module_id": module_id, "reason": reason},
            )
            if site
            else None
        )
        out = self.store.delete_module(
            module_id,
            actor="operator:alice" if not site else f"site:{site}",
            reason=reason,
            request_entry=req,
        )
        return out[-1][0]

    def revoke(self, site: str, reason: str, *, at: dt.datetime | None = None) -> int:
        cert = self.fed.sites[site].cert
        crl = self.fed.ca.revoke(cert, reason, at=at)
        pki.write_public_file(self.fed.home.crl, crl)
        return self.store.append(
            make_entry(
                "cert.revoked",
                "operator:ca",
                {"serial": pki.serial_hex(cert.serial_number), "reason": reason},
            )
        )[0]

    def record_crl(self) -> int | None:
        """What `aggregator serve` does on loading the CRL: append crl.loaded if it is new
        (after the federation.loaded of its start)."""
        self.start()
        crl = pki.load_crl(self.fed.home.crl.read_bytes(), self.fed.ca.cert)
        return CrlRecorder(self.store, self.fed.ca.cert).record(crl)

    def checkpoint(self) -> bytes:
        return self.store.checkpoint().encode()

    def export(self, name: str | None = None, *, history: bool = True) -> Path:
        """``history=False``: as an aggregator from before ``federations/`` existed exports."""
        self.exports += 1
        out = self.root / (name or f"bundle-{self.exports}")
        home = self.fed.home
        snap = self.store.snapshot()
        federation_json = home.federation.read_bytes()
        documents, _ = export_federations(home, snap.entries, federation_json, self.fed.ca_pem)
        return write_bundle(
            snap,
            out,
            ca_cert_pem=home.ca_cert.read_bytes(),
            crl_pem=home.crl.read_bytes(),
            federation_json=federation_json,
            federation_documents=documents if history else None,
        )


def dp_parameters(noise_multiplier: float) -> dict:
    """A DP record's accounting parameters, as the training report writes them (RDP: at
    noise 1.1 they spend epsilon 0.96, at 0.8 epsilon 2.19, below the claims made with them)."""
    return {
        "delta": 1e-5,
        "noise_multiplier": noise_multiplier,
        "sample_rate": 0.01,
        "steps": 100,
        "accountant": "rdp",
    }


def standard_history(lab: AuditLab) -> dict:
    """A federation's life: three modules, a dataset and classifier, one deletion done right, a
    retrain.

    Returns the entry indices of interest by name.
    """
    idx: dict = {}
    a = lab.register(
        "st-mary",
        (0, 1),
        seed=1,
        dp={"epsilon": 3.9, **dp_parameters(1.1)},
        privacy_report={
            "v": 1,
            "membership_auroc": 0.52,
            "membership_tpr_at_1pct_fpr": 0.012,
            "memorization_ratio": 1.31,
            "near_copy_fraction": 0.0,
        },
    )
    b = lab.register("st-john", (1, 2), seed=2, dp={"epsilon": 7.5, **dp_parameters(0.8)})
    c = lab.register("st-mary", (2, 3), seed=3)
    idx.update(a=a, b=b, c=c)
    idx["ds1"] = lab.dataset("ds-1", [a, b, c])
    idx["clf1"] = lab.classifier("clf-1", "ds-1", [a, b, c])
    idx["pub1"] = lab.publish("clf-1")
    idx["deleted_c"] = lab.delete(c, site="st-mary")
    idx["request_c"] = idx["deleted_c"] - 1
    idx["retire_ds1"] = lab.retire("dataset", "ds-1", c)
    idx["retire_clf1"] = lab.retire("classifier", "clf-1", c)
    idx["ds2"] = lab.dataset("ds-2", [a, b])
    idx["clf2"] = lab.classifier("clf-2", "ds-2", [a, b], accuracy=0.88)
    idx["pub2"] = lab.publish("clf-2")
    return idx


def resign_checkpoints(bundle: Path, signer) -> None:
    """Re-sign every checkpoint over the bundle's current entries (what an operator holding the
    log key can do); ``signer`` has ``name`` and ``key``."""
    from ffsecure.ledger.checkpoint import Checkpoint, sign_checkpoint
    from ffsecure.ledger.merkle import MemoryTree, leaf_hash

    lines = (bundle / "entries.jsonl").read_bytes()[:-1].split(b"\n")
    tree = MemoryTree([leaf_hash(e) for e in lines])
    for p in (bundle / "checkpoints").iterdir():
        size = int(p.name)
        if size <= len(lines):
            p.write_text(
                sign_checkpoint(
                    Checkpoint(signer.name, size, tree.root(size)), signer.name, signer.key
                )
            )
