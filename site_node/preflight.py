"""``site-node check``: everything a long training run needs, checked before it starts.

Steps, in order (each yields :class:`ffsecure.preflight.CheckLine` records; a
step whose prerequisite failed is not run and is listed as skipped):

* ``config``: ``site.toml`` parses (:func:`site_node.config.load_config`);
* ``state``: the state directory exists, is writable and 0700; the site key
  exists, is 0600 (the rule of :func:`ffsecure.files.loose_mode`) and loads;
* ``trust``: the installed certificate chains to the pinned CA, is for this
  site and holds its key, is not revoked by ``STATE/crl.pem`` when one is
  present; days left of the certificate, the CA and that CRL
  (:mod:`ffsecure.pki.expiry`: under 30 days WARN, expired FAIL);
* ``federation``: the manifest verifies under the CA; its DP and privacy
  policy, and whether ``[dp]`` satisfies it (the same
  :func:`site_node.training.resolve_dp` that ``run`` applies); a site that trains
  under DP where a privacy report is required and the federation bounds no DP claim
  fails (it would refuse every module it trains);
* ``data``: a bounded scan (:func:`ffsecure.data.scan_dataset`): readable,
  labels mapped onto the label space (:func:`site_node.training.map_labels`),
  count per class, stored image shape against the manifest's; for ``dicom:``,
  how the images fall into patients (counts only) and, in image mode, what the
  DP epsilon is for a patient with several images
  (:func:`site_node.training.patient_warning`: WARN);
* ``aggregator``: a real mTLS call to the health service with the site
  certificate and a short deadline, then the aggregator's signed checkpoint
  checked against the one this site stored (:func:`site_node.sync.check_against_stored`);
* ``device``: ``train.device`` is visible to torch.

Nothing is written: the checkpoint is verified, not stored. Torch is imported
only by the data and device steps.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ffsecure import pki
from ffsecure.dp import pinned_privacy_unit
from ffsecure.errors import ConfigError, FFSecureError
from ffsecure.federation import FederationManifest, load_signed_manifest
from ffsecure.files import loose_mode
from ffsecure.pki.expiry import Expiry, cert_expiry, crl_expiry
from ffsecure.preflight import Check, CheckLine, Status, error_line, expiry_line, fail, passed, warn
from ffsecure.privacy.policy import THRESHOLDS, effective_policy
from ffsecure.privacy.report import bounds_dp_claims
from site_node import sync
from site_node import trust as trustlib
from site_node.client import error_from_rpc
from site_node.config import SiteConfig, load_config
from site_node.privacy import own_limits, report_required
from site_node.state import StateDir
from site_node.training import (
    check_label_match,
    class_filter,
    map_labels,
    patient_warning,
    planned_dp_record,
    resolve_dp,
)

if TYPE_CHECKING:  # annotations only: pydicom is imported by the data step
    from ffsecure.dicom import PatientCensus

#: The deadline of the health call: a pre-flight answers in seconds, not after retries.
HEALTH_TIMEOUT_S = 5.0

RENEW_CERT = (
    "run `site-node enroll --config site.toml`, have the CA operator sign the new CSR "
    "(`ffsecure pki sign-csr`), then `site-node install-cert`"
)
RENEW_CA = "ask the federation CA operator for the renewed ca.pem, then `site-node install-cert`"
RENEW_CRL = "copy the CA operator's newest crl.pem (`ffsecure pki crl`) to STATE/crl.pem"


def crl_path(state: StateDir) -> Path:
    """``STATE/crl.pem``: the federation CRL, optional at a site (the aggregator enforces it)."""
    return state.root / "crl.pem"


def _mode_line(check: str, path: Path, want: int) -> CheckLine:
    mode = loose_mode(path)
    if mode is not None:
        return fail(
            check,
            f"{path} is mode {mode:03o}, open to group or others",
            f"run `chmod {want:o} {path}`",
        )
    return passed(check, f"{path} is mode {os.stat(path).st_mode & 0o777:03o}")


def expiries(state: StateDir) -> list[Expiry]:
    """Days left of the installed certificate, CA and ``STATE/crl.pem`` (``site-node status``);
    an item not installed is left out."""
    out = []
    for path, what in ((state.cert, "site certificate"), (state.ca_cert, "CA certificate")):
        if path.is_file():
            out.append(cert_expiry(pki.load_certs(path.read_bytes(), max_count=1)[0], what))
    if crl_path(state).is_file():
        out.append(crl_expiry(pki.load_crl(crl_path(state).read_bytes())))
    return out


@dataclass
class SitePreflight:
    """The steps of ``site-node check`` for one ``site.toml`` (module docstring)."""

    config_path: Path
    cfg: SiteConfig | None = None
    federation: FederationManifest | None = None

    @property
    def state(self) -> StateDir:
        assert self.cfg is not None
        return StateDir(self.cfg.state_dir)

    def checks(self) -> list[Check]:
        return [
            Check("config", self.check_config),
            Check("state", self.check_state, needs=("config",)),
            Check("trust", self.check_trust, needs=("state",)),
            Check("federation", self.check_federation, needs=("trust",)),
            Check("data", self.check_data, needs=("federation",), slow=True),
            Check("aggregator", self.check_aggregator, needs=("federation",), slow=True),
            Check("device", self.check_device, needs=("config",)),
        ]

    # -- steps -------------------------------------------------------------
    def check_config(self) -> Iterator[CheckLine]:
        self.cfg = load_config(self.config_path)
        yield passed(
            "config",
            f"{self.cfg.path}: site {self.cfg.site_id} of federation {self.cfg.federation_id}",
        )

    def check_state(self) -> Iterator[CheckLine]:
        assert self.cfg is not None
        root = self.cfg.state_dir
        if not root.is_dir():
            yield fail(
                "state directory",
                f"{root} does not exist",
                "run `site-node enroll --config site.toml` (or fix site.state_dir)",
            )
            return
        if not os.access(root, os.W_OK | os.X_OK):
            yield fail(
                "state directory",
                f"{root} is not writable by this user",
                f"run the check as the service user, or `chown` {root} to it",
            )
            return
        yield _mode_line("state directory", root, 0o700)
        key = self.cfg.key_path
        if not key.is_file():
            yield fail(
                "site key", f"{key} does not exist", "run `site-node enroll --config site.toml`"
            )
            return
        line = _mode_line("site key", key, 0o600)
        if line.status == "PASS":
            trustlib.load_key(self.cfg)  # a wrong passphrase or a damaged key is a FAIL
            line = passed("site key", f"{line.detail}; it loads")
        yield line

    def check_trust(self) -> Iterator[CheckLine]:
        assert self.cfg is not None
        self.state.require_installed()
        ca_cert = pki.load_cert(self.state.ca_cert.read_bytes())
        cert = pki.load_certs(self.state.cert.read_bytes(), max_count=1)[0]
        crl = None
        if crl_path(self.state).is_file():
            crl = pki.load_crl(crl_path(self.state).read_bytes(), ca_cert)
        expiries = [
            expiry_line(
                "site certificate expiry", cert_expiry(cert, "site certificate"), RENEW_CERT
            ),
            expiry_line("CA certificate expiry", cert_expiry(ca_cert, "CA certificate"), RENEW_CA),
        ]
        if any(line.status is Status.FAIL for line in expiries):
            yield from expiries  # renewing is the fix; the chain is judged once it is valid
            return
        try:
            trustlib.check_material(
                self.cfg,
                cert_pem=self.state.cert.read_bytes(),
                ca_pem=self.state.ca_cert.read_bytes(),
                manifest_bytes=self.state.federation.read_bytes(),
                key=trustlib.load_key(self.cfg),
                crl=crl,
            )
        except FFSecureError as exc:
            yield error_line("site certificate", exc)
            return
        revocation = (
            "no CRL at the site" if crl is None else f"not on CRL #{pki.crl_info(crl).number}"
        )
        yield passed(
            "site certificate",
            f"chains to the pinned CA (SHA-256 {pki.cert_fingerprint(ca_cert)[:16]}...), "
            f"holds this site's key, {revocation}",
        )
        yield from expiries
        if crl is None:
            yield passed(
                "CRL",
                f"none installed ({crl_path(self.state).name}); the aggregator checks revocation "
                "on every call",
            )
        else:
            yield expiry_line("CRL next update", crl_expiry(crl), RENEW_CRL)

    def check_federation(self) -> Iterator[CheckLine]:
        assert self.cfg is not None
        ca_cert = pki.load_cert(self.state.ca_cert.read_bytes())
        fed = load_signed_manifest(self.state.federation.read_bytes(), ca_cert)
        self.federation = fed
        shape = "x".join(map(str, fed.image_shape))
        yield passed(
            "federation manifest",
            f"signature verifies under the CA; federation {fed.federation_id}, "
            f"{fed.num_classes} labels, images {shape}",
        )
        yield from _dp_lines(self.cfg, fed)
        unmet = _unmet_privacy_policy(self.cfg, fed)
        yield passed("privacy policy", _privacy_detail(self.cfg, fed)) if unmet is None else unmet

    def check_data(self) -> Iterator[CheckLine]:
        assert self.cfg is not None and self.federation is not None
        # heavy: torch (through ffsecure.data), only when the data step runs
        from ffsecure.data import scan_dataset

        cfg, fed = self.cfg, self.federation
        check_label_match(cfg)
        spec = cfg.data_source.removeprefix("medmnist:")
        scan = scan_dataset(
            spec,
            image_shape=fed.image_shape,
            root=cfg.data_root,
            seed=cfg.split_seed,
            privacy_unit=cfg.privacy_unit,
        )
        mapping = map_labels(scan.class_names, fed.label_space, cfg.label_match)
        keep = class_filter(cfg.classes, fed.label_space)
        counts = {
            fed.label_space[g]: n
            for g, n in zip(mapping, scan.counts, strict=True)
            if (keep is None or g in keep) and n > 0
        }
        if not counts:
            yield fail(
                "data",
                f"{cfg.data_source} holds no image of the classes kept by data.classes",
                "check data.source and data.classes in site.toml",
            )
            return
        per_class = ", ".join(f"{name} {n}" for name, n in counts.items())
        yield passed(
            "data",
            f"{cfg.data_source}: {sum(counts.values())} images in {len(counts)} classes of the "
            f"label space ({per_class}); {scan.sampled} decoded",
        )
        yield _shape_line(scan.raw_shape, fed.image_shape)
        if scan.patients is not None:
            yield _patients_line(cfg, fed, scan.patients, sum(counts.values()))

    def check_aggregator(self) -> Iterator[CheckLine]:
        assert self.cfg is not None
        t = trustlib.load(self.cfg)
        endpoint = self.cfg.endpoint or t.federation.aggregator["endpoint"]
        with trustlib.make_client(self.cfg, t) as client:
            try:
                health = health_pb2_grpc.HealthStub(client.channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=HEALTH_TIMEOUT_S
                )
            except grpc.RpcError as exc:
                yield _unreachable(endpoint, exc)
                return
            if health.status != health_pb2.HealthCheckResponse.SERVING:
                yield fail(
                    "aggregator",
                    f"{endpoint} answers mTLS but is not serving (shutting down?)",
                    "retry in a minute; ask the aggregator operator whether `aggregator serve` "
                    "is restarting",
                )
                return
            yield passed("aggregator", f"{endpoint} answers mTLS health with this certificate")
            note, _ = client.get_checkpoint()
            new, stored = sync.check_against_stored(self.state, client, note)
        before = (
            "no checkpoint stored yet"
            if stored is None
            else f"consistent with the stored checkpoint of size {stored.size}"
        )
        yield passed("ledger", f"signed checkpoint of size {new.size} verifies; {before}")

    def check_device(self) -> Iterator[CheckLine]:
        assert self.cfg is not None
        device = self.cfg.train["device"]
        if device == "cpu":
            yield passed("device", 'train.device = "cpu"')
            return
        yield _cuda_line(device)


def _privacy_detail(cfg: SiteConfig, fed: FederationManifest) -> str:
    """Whether the federation requires a privacy report, and whether this site checks on its own
    (site.toml ``[privacy]``) and at which limits."""
    own = own_limits(cfg.privacy, fed)
    if report_required(fed):
        return (
            "privacy report required: `site-node run` measures each module before sealing "
            "and refuses one that breaks the federation's limits or this site's stricter ones "
            "(`site-node privacy-check` shows them)"
        )
    if own is None:
        return (
            "privacy report not required; this site does not check its modules "
            '(site.toml privacy.check = "federation")'
        )
    limits = ", ".join(
        f"{what} at most {value:g}"
        for key, (what, _plain, _calibrated) in THRESHOLDS.items()
        if (value := own.get(key)) is not None
    )
    return (
        "privacy report not required; this site checks every module before signing "
        f"(site.toml [privacy]: {limits or 'no limit set'})"
    )


def _unmet_privacy_policy(cfg: SiteConfig, fed: FederationManifest) -> CheckLine | None:
    """A FAIL line when every module of this site would fail the privacy policy: it trains
    under DP (so it signs no measured figure) and the federation bounds no DP claim that
    could stand in for them (ffsecure.privacy.report.dp_covers). None otherwise."""
    if effective_policy(fed.privacy_policy) is None or bounds_dp_claims(fed.dp_policy):
        return None
    try:
        dp = resolve_dp(cfg.dp, fed.dp_policy, None, privacy_unit=cfg.privacy_unit)
    except ConfigError:
        return None  # the DP policy line reports it
    if dp is None:
        return None
    return fail(
        "privacy policy",
        "a privacy report is required and site.toml's [dp] trains under DP, so no module "
        "signs the figures the policy limits, and the federation bounds no DP claim "
        "(dp_policy sets no max_epsilon and delta) that could stand in for them: the site "
        "would refuse every module it trains",
        "set `enabled = false` in site.toml's [dp] to sign the measured figures, or ask the "
        "federation operator to bound DP claims (dp_policy.max_epsilon and delta, a new "
        "signed manifest)",
    )


def _dp_lines(cfg: SiteConfig, fed: FederationManifest) -> Iterator[CheckLine]:
    dp_policy = fed.dp_policy
    demand = (
        f"DP required, max epsilon {dp_policy.get('max_epsilon')}, delta {dp_policy.get('delta')}"
        if dp_policy.get("required")
        else "DP not required"
    )
    unit = pinned_privacy_unit(dp_policy)
    if unit != "image":
        demand += f", a DP claim must be per {unit}"
    try:
        dp = resolve_dp(cfg.dp, dp_policy, None, privacy_unit=cfg.privacy_unit)
    except ConfigError as exc:
        yield fail("DP policy", f"{demand}; site.toml: {exc.message}", exc.hint or RENEW_CA)
        return
    trains = (
        "without DP"
        if dp is None
        else f"with DP to epsilon {dp.target_epsilon:g} (mechanism {dp.mechanism})"
    )
    limits = cfg.dp_limits
    ceiling = (
        f"; this site's own ceiling: epsilon {limits.max_epsilon:g} per release, "
        f"{limits.max_total_epsilon:g} over all its DP releases"
    )
    yield passed("DP policy", f"{demand}; this site trains {trains}{ceiling}")


def _patients_line(
    cfg: SiteConfig, fed: FederationManifest, patients: PatientCensus, n: int
) -> CheckLine:
    """How the DICOM images fall into patients (counts only), and what DP per image means."""
    counted = f"{patients.images} images of {patients.patients} patients"
    if patients.unnamed:
        counted += f" ({patients.unnamed} files name no patient, each counted as one)"
    if cfg.privacy_unit == "patient":
        return passed("patients", f"{counted}; one image per patient is kept: DP per patient")
    if patients.largest < 2:
        return passed("patients", f"{counted}; no patient holds more than one image")
    try:
        dp = resolve_dp(cfg.dp, fed.dp_policy, n, privacy_unit=cfg.privacy_unit)
        record = planned_dp_record(dp, fed.generator["family"], n)
    except FFSecureError:  # the DP policy line already says what is wrong with [dp]
        record = None
    warning = patient_warning(patients, record, cfg.privacy_unit)
    if warning is None:
        return passed("patients", f"{counted}; DP is off: no image or patient has a guarantee")
    return warn(
        "patients",
        f"{counted}; {warning}",
        'set privacy_unit = "patient" in [data] (one image per patient, so the epsilon is '
        'per patient); see docs/site-operator.md, "The unit of privacy"',
    )


def _shape_line(raw: tuple[int, int, int] | None, want: tuple[int, int, int]) -> CheckLine:
    shape = "x".join(map(str, want))
    if raw is None:
        return passed("image shape", f"built-in source, resized to {shape}")
    if tuple(raw) == tuple(want):
        return passed("image shape", f"stored {shape}, as the manifest says")
    stored = "x".join(map(str, raw))
    return warn(
        "image shape",
        f"images are stored {stored}; training converts them to the manifest's {shape}",
        f"export the images at {shape} (the federation's image_shape) so that training sees "
        "them as they are",
    )


def _unreachable(endpoint: str, exc: grpc.RpcError) -> CheckLine:
    err = error_from_rpc(exc)
    if err.status == grpc.StatusCode.UNAVAILABLE:
        fix = (
            f"check that `aggregator serve` runs at {endpoint} (aggregator.endpoint in site.toml) "
            "and that this host may open an outbound TCP connection to that port"
        )
    else:
        fix = err.hint or "see the aggregator's log"
    return fail("aggregator", f"{endpoint}: [{err.code}] {err.message}", fix)


def _cuda_line(device: str) -> CheckLine:
    # heavy: torch, only when train.device names a GPU
    import torch

    index = int(device.partition(":")[2] or 0)
    fix = (
        "install the NVIDIA driver and a CUDA build of torch; under systemd the unit's "
        "PrivateDevices=yes hides /dev/nvidia* (use the GPU drop-in, docs/site-operator.md); "
        'or set train.device = "cpu"'
    )
    if not torch.cuda.is_available():
        build = torch.version.cuda or "none (a CPU-only build)"
        return fail(
            "device", f'train.device = "{device}" but torch sees no GPU (CUDA {build})', fix
        )
    count = torch.cuda.device_count()
    if index >= count:
        return fail("device", f'train.device = "{device}" but torch sees {count} GPU(s)', fix)
    return passed("device", f'train.device = "{device}": {torch.cuda.get_device_name(index)}')
