"""Classifier: bit-identical training for a seed, metrics, safetensors round trip."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ffsecure import classifier as C
from ffsecure import data
from ffsecure.errors import ConfigError, FormatError


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits")


def _tiny_train(ds, seed=0, n=200, augment=True):
    cfg = C.model_config("cnn", image_shape=ds.image_shape, num_classes=10, width=8)
    settings = C.TrainConfig(epochs=2, batch_size=64, seed=seed, augment=augment)
    return C.train_classifier(cfg, ds.train_x[:n], ds.train_y[:n], settings)


def test_training_is_bit_identical_for_a_seed(digits):
    torch.set_num_threads(2)
    a = _tiny_train(digits, seed=5)
    b = _tiny_train(digits, seed=5)
    c = _tiny_train(digits, seed=6)
    ba, bb, bc = (C.to_safetensors(r.model, r.config) for r in (a, b, c))
    assert hashlib.sha256(ba).digest() == hashlib.sha256(bb).digest()
    assert ba != bc
    assert a.losses == b.losses
    assert not torch.are_deterministic_algorithms_enabled()  # restored afterwards


def test_trained_cnn_learns_digits(digits):
    cfg = C.model_config("cnn", image_shape=digits.image_shape, num_classes=10, width=16)
    # min_steps: the 1,347 training images give 11 steps per epoch, 110 steps at least
    res = C.train_classifier(
        cfg,
        digits.train_x,
        digits.train_y,
        C.TrainConfig(epochs=4, min_steps=110, seed=0, augment=False),
    )
    assert len(res.losses) == 10
    ev = C.evaluate(res.model, digits.test_x, digits.test_y, 10)
    assert ev.accuracy > 0.85 and ev.auroc > 0.97
    assert res.losses[-1] < res.losses[0]
    cm = np.array(ev.confusion)
    assert cm.sum() == ev.n == digits.test_y.numel()
    assert np.isclose(np.trace(cm) / cm.sum(), ev.accuracy)
    assert all(np.isclose(ev.per_class_recall[i], cm[i, i] / cm[i].sum()) for i in range(10))


def test_metrics_against_sklearn():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    assert C.auroc(y, p, 2) == pytest.approx(roc_auc_score(y, p[:, 1]))
    y3 = np.array([0, 1, 2, 2, 1, 0])
    p3 = np.random.default_rng(0).dirichlet(np.ones(3), size=6)
    assert C.auroc(y3, p3, 3) == pytest.approx(
        roc_auc_score(y3, p3, multi_class="ovr", average="macro")
    )
    assert C.auroc(np.zeros(4, int), np.full((4, 3), 1 / 3), 3) is None


def test_evaluate_reports_absent_class_recall_as_none():
    cfg = C.model_config("cnn", image_shape=(1, 8, 8), num_classes=3, width=4)
    model = C.build_model(cfg, seed=0)
    x = torch.zeros(4, 1, 8, 8)
    y = torch.tensor([0, 0, 1, 1])
    ev = C.evaluate(model, x, y, 3)
    assert ev.per_class_recall[2] is None and len(ev.confusion) == 3


def test_resnet18_adapted_to_28x28():
    cfg = C.model_config("resnet18", image_shape=(3, 28, 28), num_classes=5, norm="batch")
    model = C.build_model(cfg).net
    assert isinstance(model.bn1, torch.nn.BatchNorm2d)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 5)


def test_norm_and_lowpass_front_end():
    cnn = C.build_model(C.model_config("cnn", image_shape=(1, 16, 16), num_classes=3, width=16))
    assert C.DEFAULT_NORM == "group"
    assert any(isinstance(m, torch.nn.GroupNorm) for m in cnn.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in cnn.modules())
    # the filter is part of the config, not of the weights
    assert not any("lowpass" in k for k in cnn.state_dict())
    x = torch.randn(2, 1, 16, 16)
    blurred = cnn.lowpass(x)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    assert torch.allclose(
        cnn.lowpass(torch.ones(1, 1, 16, 16)), torch.ones(1, 1, 16, 16), atol=1e-6
    )
    plain = C.build_model(
        C.model_config(
            "cnn", image_shape=(1, 16, 16), num_classes=3, width=16, norm="batch", input_blur=0.0
        )
    )
    assert torch.equal(plain.lowpass(x), x)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    for bad in ({"norm": "layer"}, {"input_blur": -1.0}, {"input_blur": 9.0}, {"input_blur": True}):
        cfg = C.model_config("cnn", image_shape=(1, 16, 16), num_classes=3, width=16)
        with pytest.raises(ConfigError):
            C.validate_config({**cfg, **bad})


def test_min_steps_extends_small_training_sets(digits):
    cfg = C.model_config("cnn", image_shape=digits.image_shape, num_classes=10, width=4)
    res = C.train_classifier(
        cfg,
        digits.train_x[:64],
        digits.train_y[:64],
        C.TrainConfig(epochs=1, batch_size=32, min_steps=6, seed=0),
    )
    assert len(res.losses) == 3  # 2 steps per epoch -> 3 epochs
    with pytest.raises(ConfigError):
        C.train_classifier(
            cfg, digits.train_x[:64], digits.train_y[:64], C.TrainConfig(min_steps=-1)
        )


def test_safetensors_round_trip(tmp_path, digits):
    res = _tiny_train(digits, n=128)
    path = tmp_path / "clf.safetensors"
    digest = C.save_classifier(path, res.model, res.config)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    model, cfg = C.load_classifier(path)
    assert cfg == res.config
    x = digits.test_x[:32]
    assert torch.equal(C.predict_proba(model, x), C.predict_proba(res.model, x))
    assert b"pickle" not in path.read_bytes()[:8]


def test_safetensors_refusals(digits):
    res = _tiny_train(digits, n=64)
    blob = C.to_safetensors(res.model, res.config)
    other = C.model_config("cnn", image_shape=(1, 16, 16), num_classes=10, width=16)
    with pytest.raises(FormatError) as err:
        C.from_safetensors(blob, other)
    assert err.value.code == "E_TENSOR_SHAPE"
    with pytest.raises(FormatError) as err:
        C.from_safetensors((1 << 40).to_bytes(8, "little") + blob[8:])
    assert err.value.code == "E_SAFETENSORS_HEADER"
    with pytest.raises(FormatError):
        C.from_safetensors(b"\x01")


def test_config_and_data_refusals():
    with pytest.raises(ConfigError):
        C.model_config("vgg", image_shape=(1, 28, 28), num_classes=2)
    with pytest.raises(ConfigError):
        C.validate_config(
            {
                "arch": "cnn",
                "in_channels": 1,
                "image_size": [28, 28],
                "num_classes": 2,
                "width": 10**6,
                "norm": "group",
                "input_blur": 1.0,
            }
        )
    cfg = C.model_config("cnn", image_shape=(1, 16, 16), num_classes=3, width=4)
    with pytest.raises(ConfigError):
        C.train_classifier(cfg, torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ConfigError):
        C.train_classifier(cfg, torch.zeros(4, 1, 16, 16), torch.full((4,), 3))


def test_fedavg_weighted_average_of_states():
    from ffsecure.baselines import average_states

    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(10)}
    b = {"w": torch.tensor([4.0, 8.0]), "n": torch.tensor(20)}
    avg = average_states([a, b], [1.0, 2.0])
    assert torch.allclose(avg["w"], torch.tensor([3.0, 6.0]))
    assert avg["n"].dtype == torch.int64 and int(avg["n"]) == 17
    with pytest.raises(ConfigError):
        average_states([], [])
