"""Real trained modules for the operator tests: tiny cvae generators fit on digits, signed, sealed, registered.

``register_trained(fed, store, site_id, classes, seed)`` trains a tiny cvae on
the scikit-learn digits of ``classes`` (a couple of epochs, about a second),
builds and signs the package with the site's key, seals it with HPKE to the
aggregator and registers it through the aggregator's real Registrar (every
check a gRPC upload runs). ``trained_package`` returns the sealed bytes for
tests that upload over gRPC instead.
"""

from __future__ import annotations

import functools

import torch

from ffsecure import canonical, envelope, pki

DIGITS_EPOCHS = 2


@functools.lru_cache(maxsize=None)
def _digits(image_shape: tuple[int, int, int]):
    from ffsecure.data import load_digits

    return load_digits(image_shape=image_shape, seed=0)


@functools.lru_cache(maxsize=32)
def trained_weights(family: str, config_json: bytes, classes: tuple[int, ...], seed: int,
                    epochs: int = DIGITS_EPOCHS) -> bytes:
    """Safetensors of a generator fit on the digits of ``classes`` (deterministic per seed)."""
    from ffsecure import generators

    config = canonical.loads(config_json)
    ds = _digits(tuple(config["image_shape"]))
    mask = torch.isin(ds.train_y, torch.tensor(classes))
    gen = generators.build(family, config)
    settings = generators.default_train_settings(family, "tiny", seed=seed)
    settings.epochs = epochs
    with torch.random.fork_rng(devices=[]):
        gen.fit(ds.train_x[mask], ds.train_y[mask], settings)
    return generators.to_safetensors(gen)


def trained_package(fed, site_id: str, classes, seed: int, *, module_id: str | None = None):
    """``(sealed, SignedPackage)`` of a generator trained on the site's classes."""
    from ffsecure.package import build_manifest, sign_package

    gen = fed.manifest.generator
    weights = trained_weights(gen["family"], canonical.dumps(gen["config"]), tuple(sorted(classes)), seed)
    manifest = build_manifest(federation=fed.manifest, site_id=site_id, weights=weights, classes=list(classes),
                              seed=seed, module_id=module_id)
    creds = fed.sites[site_id]
    pkg = sign_package(manifest, weights, creds.key, creds.cert)
    sealed = envelope.seal(pkg.to_bytes(), fed.manifest.hpke_public_key, federation_id=fed.federation_id,
                           key_id=fed.manifest.hpke_key_id, suite=fed.manifest.hpke_suite)
    return sealed, pkg


def registrar(fed, store):
    from aggregator.registration import Registrar

    suite, private, kid = envelope.read_key_file(fed.home.hpke_key)
    crl = pki.load_crl(fed.home.crl.read_bytes(), fed.ca.cert)
    return Registrar(store=store, federation=fed.manifest, ca_cert=fed.ca.cert, crl=lambda: crl,
                     hpke_private_key=private, hpke_key_id=kid)


def peer(fed, site_id: str):
    from aggregator.auth import Peer

    cert = fed.sites[site_id].cert
    return Peer(identity=pki.identity_of(cert), cert=cert, fingerprint=pki.cert_fingerprint(cert))


def register_trained(fed, store, site_id: str, classes, seed: int) -> str:
    """Register a trained module through the real Registrar; returns its module id."""
    sealed, pkg = trained_package(fed, site_id, classes, seed)
    return registrar(fed, store).register(sealed, peer(fed, site_id)).module_id
