"""GetClassifier over real mTLS: metadata first, then the safetensors bytes; typed refusals."""

from __future__ import annotations

import hashlib

import pytest
import torch

from aggregator.store import open_home_store
from ffsecure import canonical
from ffsecure.classifier import build_model, model_config, to_safetensors
from ffsecure.ledger import make_entry
from site_node.client import AggregatorError
from tests.federation_fixture import IMAGE_SHAPE, LABELS, build_federation

torch.set_num_threads(1)


def _put_classifier(fed, classifier_id: str, *, publish: bool, seed: int = 0) -> bytes:
    cfg = model_config("cnn", image_shape=IMAGE_SHAPE, num_classes=len(LABELS), width=8)
    blob = to_safetensors(build_model(cfg, seed=seed), cfg)
    sha = hashlib.sha256(blob).hexdigest()
    modules = [{"module_id": "ab" * 16, "weights_sha256": "cd" * 32}]
    config = {"architecture": "cnn", "num_classes": len(LABELS), "image_shape": list(IMAGE_SHAPE),
              "class_names": list(LABELS), "model": cfg}
    meta = {"classifier_id": classifier_id, "dataset_id": "ds-1", "sha256": sha, "modules": modules,
            "config": config}
    with open_home_store(fed.home) as store:
        store.put_artifact("classifier", classifier_id, meta, blob, make_entry(
            "classifier.trained", "operator:test",
            {"classifier_id": classifier_id, "dataset_id": "ds-1", "sha256": sha, "modules": modules}))
        if publish:
            store.set_artifact_status("classifier", classifier_id, "published",
                                      make_entry("classifier.published", "operator:test",
                                                 {"classifier_id": classifier_id}))
    return blob


def test_fetch_published_classifier_over_mtls(tmp_path):
    fed = build_federation(tmp_path, chunk_bytes=4096)  # several data chunks
    with fed.serve() as srv, fed.client("st-mary", srv.address) as client:
        with pytest.raises(AggregatorError) as err:
            client.fetch_classifier()
        assert err.value.code == "E_NO_CLASSIFIER"
        assert err.value.status.name == "NOT_FOUND"

        first = _put_classifier(fed, "clf-1", publish=True, seed=1)
        unpublished = _put_classifier(fed, "clf-2", publish=False, seed=2)
        got = client.fetch_classifier()
        assert got.classifier_id == "clf-1" and got.published
        assert got.weights == first and got.sha256 == hashlib.sha256(first).hexdigest()
        assert got.config["class_names"] == LABELS and got.config["image_shape"] == list(IMAGE_SHAPE)
        assert got.dataset_id == "ds-1" and got.module_ids == ["ab" * 16]
        with open_home_store(fed.home) as store:
            assert store.entry(got.trained_index) == got.trained_entry
            published = canonical.loads(store.entry(got.published_index))
        assert published["type"] == "classifier.published" and published["facts"]["classifier_id"] == "clf-1"
        model = got.model()
        assert model(torch.zeros(2, *IMAGE_SHAPE)).shape == (2, len(LABELS))

        named = client.fetch_classifier("clf-2")
        assert named.weights == unpublished and not named.published

        with pytest.raises(AggregatorError) as err:
            client.fetch_classifier("nope")
        assert err.value.code == "E_NO_CLASSIFIER"
        with pytest.raises(AggregatorError) as err:
            client.fetch_classifier("../x")
        assert err.value.code == "E_ARTIFACT_ID"
