"""GetClassifier over real mTLS: metadata first, then the safetensors bytes; typed refusals."""

from __future__ import annotations

import hashlib
import time

import grpc
import pytest
import torch

from aggregator.store import open_home_store
from ffsecure import canonical
from ffsecure.classifier import build_model, model_config, to_safetensors
from ffsecure.ledger import make_entry
from ffsecure.v1 import aggregator_pb2 as pb
from ffsecure.v1 import aggregator_pb2_grpc as pb_grpc
from site_node.client import AggregatorError, RetryPolicy
from tests.federation_fixture import IMAGE_SHAPE, LABELS, build_federation

torch.set_num_threads(1)


def _put_classifier(
    fed, classifier_id: str, *, publish: bool, seed: int = 0, width: int = 8
) -> bytes:
    cfg = model_config("cnn", image_shape=IMAGE_SHAPE, num_classes=len(LABELS), width=width)
    blob = to_safetensors(build_model(cfg, seed=seed), cfg)
    sha = hashlib.sha256(blob).hexdigest()
    modules = [{"module_id": "ab" * 16, "weights_sha256": "cd" * 32}]
    config = {
        "architecture": "cnn",
        "num_classes": len(LABELS),
        "image_shape": list(IMAGE_SHAPE),
        "class_names": list(LABELS),
        "model": cfg,
    }
    meta = {
        "classifier_id": classifier_id,
        "dataset_id": "ds-1",
        "sha256": sha,
        "modules": modules,
        "config": config,
    }
    with open_home_store(fed.home) as store:
        store.put_artifact(
            "classifier",
            classifier_id,
            meta,
            blob,
            make_entry(
                "classifier.trained",
                "operator:test",
                {
                    "classifier_id": classifier_id,
                    "dataset_id": "ds-1",
                    "sha256": sha,
                    "modules": modules,
                },
            ),
        )
        if publish:
            store.set_artifact_status(
                "classifier",
                classifier_id,
                "published",
                make_entry(
                    "classifier.published", "operator:test", {"classifier_id": classifier_id}
                ),
            )
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
        assert got.config["class_names"] == LABELS and got.config["image_shape"] == list(
            IMAGE_SHAPE
        )
        assert got.dataset_id == "ds-1" and got.module_ids == ["ab" * 16]
        with open_home_store(fed.home) as store:
            assert store.entry(got.trained_index) == got.trained_entry
            published = canonical.loads(store.entry(got.published_index))
        assert (
            published["type"] == "classifier.published"
            and published["facts"]["classifier_id"] == "clf-1"
        )
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


def test_server_deadline_cuts_a_download_that_stops_reading(tmp_path, caplog):
    """A client that opens GetClassifier on a classifier far larger than the HTTP/2 flow-control
    window and then stops reading blocks the server's sending worker; the server cancels the
    stream at ``server.download_deadline_s`` (whatever deadline the client set), logs E_DEADLINE
    with the peer identity, and the worker serves the next call. With one worker thread, the
    next fetch can only complete once the stalled stream has been cut."""
    fed = build_federation(tmp_path, max_workers=1, download_deadline_s=1.5)
    big = _put_classifier(fed, "clf-big", publish=True, width=192)
    assert (
        len(big) > 16 << 20
    )  # several times what the server may push to a client that reads nothing
    small = _put_classifier(fed, "clf-small", publish=False, seed=1)
    c = fed.sites["st-mary"]
    creds = grpc.ssl_channel_credentials(
        root_certificates=fed.ca_pem, private_key=c.key_pem, certificate_chain=c.cert_pem
    )
    with fed.serve() as srv:
        channel = grpc.secure_channel(
            srv.address, creds, options=[("grpc.ssl_target_name_override", "localhost")]
        )
        try:
            with caplog.at_level("WARNING", logger="aggregator.refusal"):
                t0 = time.monotonic()
                stalled = pb_grpc.AggregatorStub(channel).GetClassifier(
                    pb.GetClassifierRequest(), timeout=30
                )
                first = next(stalled)  # the metadata; then the client reads nothing more
                assert first.info.classifier_id == "clf-big" and first.info.size == len(big)
                with fed.client(
                    "st-mary", srv.address, timeout_s=8, retry=RetryPolicy(max_attempts=1)
                ) as client:
                    got = client.fetch_classifier(
                        "clf-small", timeout_s=8
                    )  # waits for the only worker
                waited = time.monotonic() - t0
                assert got.weights == small
                assert 1.0 < waited < 8, f"the next call waited {waited:.1f} s"
                with pytest.raises(grpc.RpcError) as err:
                    for _ in stalled:  # what was buffered before the cut, then the cancellation
                        pass
                assert err.value.code() == grpc.StatusCode.CANCELLED
                time.sleep(2.0)  # past the deadline of the completed fetch: its timer was cancelled
        finally:
            channel.close()
    refusals = [r for r in caplog.records if getattr(r, "event", None) == "refusal"]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    r = refusals[0]
    assert (
        r.code == "E_DEADLINE"
        and r.method == "GetClassifier"
        and r.grpc_status == "DEADLINE_EXCEEDED"
    )
    assert r.peer_identity.endswith("/site/st-mary")
