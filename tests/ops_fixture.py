"""Real trained modules for the operator tests: tiny cvae generators fit on digits, signed, sealed,
registered.

``register_trained(fed, store, site_id, classes, seed)`` trains a tiny cvae on
the scikit-learn digits of ``classes`` (40 images per class, two epochs: under a second),
builds and signs the package with the site's key, seals it with HPKE to the
aggregator and registers it through the aggregator's real Registrar (every
check a gRPC upload runs). ``trained_package`` returns the sealed bytes for
tests that upload over gRPC instead.
"""

from __future__ import annotations

import functools

import torch

from ffsecure import canonical, envelope, pki
from ffsecure.federation import verify_federation_json

DIGITS_EPOCHS = 2
IMAGES_PER_CLASS = 40  # enough for a recognisable tiny generator, fast on a shared CPU


@functools.cache
def _digits(image_shape: tuple[int, int, int]):
    from ffsecure.data import load_digits

    return load_digits(image_shape=image_shape, seed=0)


@functools.lru_cache(maxsize=32)
def trained_weights(
    family: str,
    config_json: bytes,
    classes: tuple[int, ...],
    seed: int,
    epochs: int = DIGITS_EPOCHS,
) -> bytes:
    """Safetensors of a generator fit on the digits of ``classes`` (deterministic per seed)."""
    from ffsecure import generators

    config = canonical.loads(config_json)
    ds = _digits(tuple(config["image_shape"]))
    idx = torch.cat([torch.nonzero(ds.train_y == c).flatten()[:IMAGES_PER_CLASS] for c in classes])
    gen = generators.build(family, config)
    settings = generators.default_train_settings(family, "tiny", seed=seed)
    settings.epochs = epochs
    with torch.random.fork_rng(devices=[]):
        gen.fit(ds.train_x[idx], ds.train_y[idx], settings)
    return generators.to_safetensors(gen)


def trained_package(fed, site_id: str, classes, seed: int, *, module_id: str | None = None):
    """``(sealed, SignedPackage)`` of a generator trained on the site's classes."""
    from ffsecure.package import build_manifest, sign_package

    gen = fed.manifest.generator
    weights = trained_weights(
        gen["family"], canonical.dumps(gen["config"]), tuple(sorted(classes)), seed
    )
    manifest = build_manifest(
        federation=fed.manifest,
        site_id=site_id,
        weights=weights,
        classes=list(classes),
        seed=seed,
        module_id=module_id,
    )
    creds = fed.sites[site_id]
    pkg = sign_package(manifest, weights, creds.key, creds.cert)
    sealed = envelope.seal(
        pkg.to_bytes(),
        fed.manifest.hpke_public_key,
        federation_id=fed.federation_id,
        key_id=fed.manifest.hpke_key_id,
        suite=fed.manifest.hpke_suite,
    )
    return sealed, pkg


def registrar(fed, store):
    from aggregator.registration import Registrar

    suite, private, kid = envelope.read_key_file(fed.home.hpke_key)
    crl = pki.load_crl(fed.home.crl.read_bytes(), fed.ca.cert)
    return Registrar(
        store=store,
        federation=verify_federation_json(fed.home.federation.read_bytes(), fed.ca.cert),
        ca_cert=fed.ca.cert,
        crl=lambda: crl,
        hpke_private_key=private,
        hpke_key_id=kid,
    )


def peer(fed, site_id: str):
    from aggregator.auth import Peer

    cert = fed.sites[site_id].cert
    return Peer(identity=pki.identity_of(cert), cert=cert, fingerprint=pki.cert_fingerprint(cert))


def register_trained(fed, store, site_id: str, classes, seed: int) -> str:
    """Register a trained module through the real Registrar; returns its module id."""
    sealed, pkg = trained_package(fed, site_id, classes, seed)
    return registrar(fed, store).register(sealed, peer(fed, site_id)).module_id


def from_scratch(
    root,
    fed,
    store,
    module_ids,
    *,
    per_class: int,
    seed: int,
    settings,
    width: int | None,
    threads: int,
    sites,
    arch: str = "cnn",
):
    """Synthesize + train on a brand-new store holding only ``module_ids`` (copied from ``store``).

    Returns ``(DatasetResult, ClassifierResult)``: what an aggregator that never
    saw the other modules makes with the same seeds and settings.
    """
    from aggregator.operations import Operations
    from aggregator.store import open_home_store
    from ffsecure.ledger import validate_entry
    from tests.federation_fixture import build_federation

    fresh_fed = build_federation(
        root,
        sites=sites,
        labels=fed.manifest.label_space,
        image_shape=tuple(fed.manifest.image_shape),
    )
    with open_home_store(fresh_fed.home) as fresh:
        for mid in sorted(module_ids):
            r = store.get_module(mid)
            fresh.register_module(
                module_id=r.module_id,
                site_id=r.site_id,
                manifest_bytes=r.manifest,
                package_meta=r.package_meta,
                weights=store.module_weights(mid),
                entry=validate_entry(store.entry(r.registered_index)),
            )
        ops = Operations(fresh, fed.manifest)
        ds = ops.synthesize(per_class=per_class, seed=seed, grid=False)
        clf = ops.train(ds.dataset_id, arch=arch, settings=settings, width=width, threads=threads)
    return ds, clf


def poisoned_weights(weights: bytes, value: float = float("nan")) -> tuple[bytes, str]:
    """``weights`` with the last floating tensor's last value set to ``value`` (NaN, inf).

    Returns (safetensors bytes, tensor name); names, dtypes and shapes are unchanged.
    """
    from safetensors.torch import load, save

    tensors = load(weights)
    name = sorted(k for k, v in tensors.items() if v.is_floating_point())[-1]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[-1] = value
    return save(tensors), name


def register_poisoned(fed, store, site_id: str, classes, seed: int) -> tuple[str, str]:
    """Store a module whose weights hold a NaN, as a release that did not check values did.

    Signed by the site like any module, but written with the store call alone (the
    Registrar of this release refuses it). Returns ``(module_id, poisoned tensor name)``.
    """
    from aggregator.registration import Registrar
    from ffsecure.ledger import make_entry
    from ffsecure.package import build_manifest, package_meta, sign_package, verify_signed_manifest

    gen = fed.manifest.generator
    good = trained_weights(
        gen["family"], canonical.dumps(gen["config"]), tuple(sorted(classes)), seed
    )
    weights, tensor = poisoned_weights(good)
    manifest = build_manifest(
        federation=fed.manifest, site_id=site_id, weights=weights, classes=list(classes), seed=seed
    )
    creds = fed.sites[site_id]
    pkg = sign_package(manifest, weights, creds.key, creds.cert)
    verified = verify_signed_manifest(
        pkg.manifest_bytes, pkg.signature, pkg.cert_chain_pem, ca_cert=fed.ca.cert
    )
    entry = make_entry(
        "module.registered", peer(fed, site_id).actor, Registrar.entry_facts(pkg, verified)
    )
    store.register_module(
        module_id=manifest.module_id,
        site_id=site_id,
        manifest_bytes=pkg.manifest_bytes,
        package_meta=package_meta(pkg),
        weights=weights,
        entry=entry,
    )
    return manifest.module_id, tensor
