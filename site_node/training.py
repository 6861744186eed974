"""Train this site's generator module: local data -> generator (DP when due) -> signed package.

The pure parts are separate and unit-tested: :func:`resolve_dp` (the config
may tighten the federation's DP policy, never loosen it), :func:`map_labels`
(local class names onto the federation's label space, and the optional class
filter), :func:`data_fingerprint` (what `run` compares to notice new data),
:func:`patient_warning` (what DP per image means for patients with several
images; ``site-node check`` shows the same line).

The unit of privacy (``data.privacy_unit``) is signed: a DP record carries
``privacy_unit`` (``image`` or ``patient``), so the aggregator and auditors read
what the epsilon protects.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ffsecure import canonical, pki, timefmt
from ffsecure.dp import (
    MAX_DELTA,
    SITE_MAX_EPSILON,
    DPBudgetError,
    DPConfig,
    default_delta,
    group_claim,
    meets_privacy_unit,
    pinned_privacy_unit,
    plan_mean_embedding,
    resolve_mechanism,
)
from ffsecure.dp import plan as dp_plan
from ffsecure.errors import ConfigError, DataError, DPError, TransientError
from ffsecure.federation import FederationManifest
from ffsecure.package import (
    ModuleManifest,
    build_manifest,
    check_policy,
    sign_package,
    verify_package,
)
from site_node.budget import check_plan, check_release
from site_node.config import DPLimits, SiteConfig
from site_node.privacy import gate
from site_node.state import ModuleRecord, StateDir, refusal

if TYPE_CHECKING:  # annotations only: torch is imported when data is loaded
    import torch

    from ffsecure.dicom import PatientCensus
    from ffsecure.generators import TrainSettings
    from ffsecure.privacy.policy import PolicyVerdict
    from site_node.state import StateDir

log = logging.getLogger("site_node.training")

# progress(epoch, total_epochs, loss, epsilon_or_None)
Progress = Callable[[int, int, float, "float | None"], None]


class TrainingStopped(TransientError):
    """Work was interrupted on request (SIGTERM) before it finished; nothing was written."""

    code = "E_STOPPED"


# ------------------------------------------------------------------ DP policy


def resolve_dp(dp_cfg: dict, policy: dict, n: int | None, *, privacy_unit: str = "image"):
    """The :class:`ffsecure.dp.DPConfig` to train with, or None; refuses a config that loosens the
    policy or its own ceiling.

    ``dp_cfg`` is site.toml's ``[dp]`` (``enabled`` None = follow the policy;
    ``target_epsilon`` 0 = the lower of the policy's ``max_epsilon`` and the site's own
    ceiling, :class:`site_node.config.DPLimits`; ``delta`` 0 = the policy's bound), ``policy``
    the federation manifest's ``dp_policy``, ``privacy_unit`` site.toml's ``data.privacy_unit``
    (a run with DP under a policy that pins another unit is refused, as a pinned mechanism is).
    The site's ceiling binds whatever the manifest says: an operator who gets the CA to sign
    ``max_epsilon = 100`` does not make the site train at 100. ``n`` is the number of training
    examples, which only the default delta reads: None before the data is read, to make every
    refusal first (the delta then stays None).
    """

    required = bool(policy.get("required"))
    enabled = dp_cfg.get("enabled")
    target = float(dp_cfg.get("target_epsilon") or 0.0)
    if enabled is False and required:
        raise ConfigError(
            "site.toml key dp.enabled: false, but the federation requires DP training",
            hint="remove `enabled = false` (a site may tighten the DP policy, never loosen it)",
        )
    use = required or enabled is True or (enabled is None and target > 0)
    if not use:
        return None
    _check_privacy_unit(privacy_unit, policy)
    max_eps = policy.get("max_epsilon")
    target = _target_epsilon(target, max_eps, DPLimits.from_table(dp_cfg))
    max_delta = policy.get("delta")
    delta = float(dp_cfg.get("delta") or 0.0) or None
    if delta is not None and max_delta is not None and delta > max_delta:
        raise ConfigError(
            f"site.toml key dp.delta: {delta} is above the federation's delta {max_delta}",
            hint=f"use at most {max_delta}, or 0 for the default; a site may tighten the DP "
            "policy, never loosen it",
        )
    if delta is None and max_delta is not None and n is not None:
        delta = min(float(max_delta), default_delta(n))
    return DPConfig(
        target_epsilon=target,
        delta=delta,
        max_grad_norm=float(dp_cfg.get("max_grad_norm", 1.0)),
        accountant=dp_cfg.get("accountant", "prv"),
        mechanism=_mechanism(dp_cfg, policy),
    )


def _target_epsilon(target: float, max_eps: float | None, limits: DPLimits) -> float:
    """site.toml's ``dp.target_epsilon`` (0: the lower of the federation's ``max_epsilon`` and
    the site's ceiling), refused above either of them."""
    ceiling = limits.per_release
    if target == 0:
        return ceiling if max_eps is None else min(float(max_eps), ceiling)
    if max_eps is not None and target > max_eps:
        raise ConfigError(
            f"site.toml key dp.target_epsilon: {target} is above the federation's "
            f"max_epsilon {max_eps}",
            hint=f"use at most {max_eps}; a site may tighten the DP policy, never loosen it",
        )
    if target > ceiling:
        raise ConfigError(
            f"site.toml key dp.target_epsilon: {target} is above this site's own ceiling "
            f"{ceiling:g} ({limits.per_release_key})",
            hint=f"use at most {ceiling:g}, or 0 for the default; raise "
            f"{limits.per_release_key} only knowingly: above {SITE_MAX_EPSILON:g} DP promises "
            'little (docs/site-operator.md, "DP: the config may tighten the policy")',
        )
    return target


def planned_dp_record(
    dp: DPConfig | None, family: str, n: int, settings: TrainSettings | None = None
) -> dict | None:
    """The DP record a run would sign, as far as it is known before training (for the check).

    Mean-embedding: the release's noise multiplier and delta, at the target epsilon (the
    achieved one is at most that). DP-SGD: the target epsilon and delta only. With the run's
    ``settings`` the whole record the run will sign, at the target epsilon (the feature map of
    the release; DP-SGD's plan: noise multiplier, sample rate and steps), which the site's
    budget composes before training (:func:`site_node.budget.check_plan`).
    """
    if dp is None:
        return None
    mechanism = resolve_mechanism(dp.mechanism, family, n, dp.target_epsilon)
    if mechanism == "mean-embedding":
        plan = plan_mean_embedding(dp, n=n)
        record = {**plan.report(plan.target_epsilon), "mechanism": mechanism}
        if settings is not None:
            # heavy: torch, only when about to train; the cvae's release uses the default map
            from ffsecure.dp_embedding import DEFAULT_FEATURES

            record.update(DEFAULT_FEATURES.record())
        return record
    if settings is not None:
        sgd = dp_plan(dp, n=n, batch_size=settings.batch_size, epochs=settings.epochs)
        return {**sgd.report(sgd.target_epsilon), "mechanism": mechanism}
    delta = dp.delta if dp.delta is not None else default_delta(n)
    return {"epsilon": dp.target_epsilon, "delta": delta, "mechanism": mechanism}


def _mechanism(dp_cfg: dict, policy: dict) -> str:
    """site.toml's ``dp.mechanism`` unless the federation pins one; a different pin is refused."""
    wanted = dp_cfg.get("mechanism", "auto")
    pinned = policy.get("mechanism", "auto")
    if pinned == "auto":
        return str(wanted)
    if wanted not in ("auto", pinned):
        raise ConfigError(
            f"site.toml key dp.mechanism: {wanted!r}, but the federation pins {pinned!r}",
            hint=f'write mechanism = "{pinned}" or "auto" (the signed manifest decides)',
        )
    return str(pinned)


def _check_privacy_unit(unit: str, policy: dict) -> None:
    """site.toml's ``data.privacy_unit`` must meet the unit the federation pins (the
    aggregator's rule, :func:`ffsecure.dp.meets_privacy_unit`), or the module would be refused."""
    pinned = pinned_privacy_unit(policy)
    if not meets_privacy_unit(unit, pinned):
        raise ConfigError(
            f"site.toml key data.privacy_unit: {unit!r}, but the federation requires DP per "
            f"{pinned!r}",
            hint=f'write privacy_unit = "{pinned}" in [data], with a dicom: source (one image '
            'per patient; docs/privacy.md, "Unit of privacy")',
        )


# --------------------------------------------------------------------- data


def map_labels(
    local_names: Sequence[str], label_space: Sequence[str], how: str, *, show_names: bool = True
) -> list[int]:
    """Global label index of each local class (``how`` = ``name`` or ``index``).

    ``show_names=False`` names unknown classes by their ordinal in sorted order
    only: a DICOM export's folder that is not a label may be named after a patient.
    """
    if how == "index":
        if len(local_names) > len(label_space):
            raise DataError(
                f"the data has {len(local_names)} classes, the federation {len(label_space)}",
                code="E_DATA_LABELS",
                hint='use label_match = "name", or data with fewer classes',
            )
        return list(range(len(local_names)))
    index = {name: i for i, name in enumerate(label_space)}
    unknown = [n for n in local_names if n not in index]
    if unknown:
        shown = (
            repr(unknown[:5])
            if show_names
            else "#"
            + ", #".join(str(i) for i, n in enumerate(local_names, 1) if n not in index)
            + " (in sorted order)"
        )
        raise DataError(
            f"local classes {shown} are not in the federation's label space "
            f"{list(label_space)[:10]}",
            code="E_DATA_LABELS",
            hint="rename the class folders to the federation labels, or set data.label_match = "
            '"index"',
        )
    return [index[n] for n in local_names]


def check_label_match(cfg: SiteConfig) -> None:
    """Refuse ``data.label_match = "index"`` for a ``dicom:`` labels CSV, before a file is read.

    Index mode maps the source's classes by their place in its sorted class list. Folder
    layouts list their class folders, which no file adds or removes; a labels CSV lists the
    class cells of its rows, so deleting a class's only row would shift the index of every
    class sorted after it: one file would relabel other files' training examples, and the
    DP claim per image would not hold. Name mode maps each cell by its name.
    """
    if cfg.label_match != "index" or not cfg.data_source.startswith("dicom:"):
        return
    # heavy: pydicom and numpy (through ffsecure.dicom), only when data is loaded or scanned
    from ffsecure.dicom import is_labels_csv

    if is_labels_csv(cfg.data_source.removeprefix("dicom:")):
        raise ConfigError(
            'site.toml key data.label_match: "index" maps classes by their place in the '
            "source's class list, and a dicom: labels CSV's list is its class cells, so "
            "removing one file could change the labels of others",
            hint='write label_match = "name" and class cells that name the federation\'s '
            "labels, or lay the files out in a folder per class (dicom:DIR)",
        )


def class_filter(classes: Sequence[str | int], label_space: Sequence[str]) -> set[int] | None:
    """site.toml ``data.classes`` (names or global indices) as a set of global indices; None =
    all."""
    if not classes:
        return None
    out = set()
    for c in classes:
        if isinstance(c, int):
            if not 0 <= c < len(label_space):
                raise ConfigError(
                    f"site.toml key data.classes: index {c} is outside the label space",
                    hint=f"use indices 0..{len(label_space) - 1} or label names",
                )
            out.add(c)
        elif c in label_space:
            out.add(list(label_space).index(c))
        else:
            raise ConfigError(
                f"site.toml key data.classes: {c!r} is not a federation label",
                hint=f"use names from {list(label_space)[:10]}",
            )
    return out


@dataclass
class SiteData:
    train_x: torch.Tensor
    train_y: torch.Tensor  # global labels
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[int]
    name: str
    # the source's validation split, when it has one (the privacy check's non-members)
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    # dicom: how the training files fell into patients (counts only), before any grouping
    patients: PatientCensus | None = None


def patient_warning(patients: PatientCensus | None, dp: dict | None, unit: str) -> str | None:
    """What DP per image means for this site's patients; None in patient mode, without DP,
    or when no patient holds more than one image.

    ``dp`` is a DP record (the signed one, or the one a plan would sign); ``unit`` is
    ``data.privacy_unit``. Only counts are shown, never a patient.
    """
    if unit != "image" or patients is None or patients.largest < 2 or dp is None:
        return None
    k = patients.largest
    head = (
        f"{patients.several} of {patients.patients} patients hold more than one training "
        f"image (at most k = {k})"
    )
    epsilon = float(dp["epsilon"])
    try:
        group_epsilon, group_delta, exact = group_claim(dp, k)
    except DPError:
        figure = "at an epsilon not computed here (beyond the accounting bounds)"
    else:
        if exact:
            figure = (
                f"at epsilon {group_epsilon:.2f} (delta {group_delta:.2g}), the release's own "
                "accounting at noise multiplier sigma / k"
            )
        elif group_delta < MAX_DELTA:
            figure = (
                f"only by group privacy: epsilon at most {group_epsilon:.3g} at delta "
                f"{group_delta:.2g} (no tighter figure is computed for DP-SGD)"
            )
        else:  # k e^((k-1) eps) delta is no probability bound: nothing is promised
            figure = (
                f"by no meaningful bound: group privacy gives delta {group_delta:.2g} "
                "(a probability bound above any usable delta)"
            )
    return (
        f"{head}; DP is per image (epsilon {epsilon:.3g}), so a patient with {k} images is "
        f'protected {figure}; set data.privacy_unit = "patient" to keep one image per patient'
    )


def _spec(cfg: SiteConfig) -> str:
    return (
        cfg.data_source[len("medmnist:") :]
        if cfg.data_source.startswith("medmnist:")
        else cfg.data_source
    )


def load_site_data(cfg: SiteConfig, federation: FederationManifest) -> SiteData:
    """Load the configured source at the federation's image shape, in its label space, filtered."""
    # heavy: torch, only when loading data or training (keeps --help fast)
    import torch

    from ffsecure.data import load_dataset

    check_label_match(cfg)
    ds = load_dataset(
        _spec(cfg),
        image_shape=federation.image_shape,
        root=cfg.data_root,
        seed=cfg.split_seed,
        privacy_unit=cfg.privacy_unit,
    )
    show_names = not cfg.data_source.startswith("dicom:")
    mapping = torch.tensor(
        map_labels(ds.class_names, federation.label_space, cfg.label_match, show_names=show_names),
        dtype=torch.int64,
    )
    keep = class_filter(cfg.classes, federation.label_space)

    def select(x, y):
        g = mapping[y]
        if keep is None:
            return x, g
        mask = torch.tensor([int(v) in keep for v in g], dtype=torch.bool)
        return x[mask], g[mask]

    train_x, train_y = select(ds.train_x, ds.train_y)
    test_x, test_y = select(ds.test_x, ds.test_y)
    if train_x.shape[0] == 0:
        raise DataError(
            f"no training images left in {cfg.data_source} after the class filter",
            code="E_DATA_EMPTY",
            hint="check data.classes and data.source",
        )
    present = {int(v) for v in train_y}
    if keep is not None and keep - present:
        # the signed classes are what the site declared, never what its data happens to hold
        lacking = sorted(keep - present)
        in_test = {c: int((test_y == c).sum()) for c in lacking}
        named = ", ".join(
            f"{federation.label_space[c]!r} ({in_test[c]} in the test split)" for c in lacking[:10]
        )
        raise DataError(
            f"data.classes declares {named} but the training split holds no image of "
            f"{'it' if len(lacking) == 1 else 'them'}: the module's signed classes would say "
            "which declared classes this site lacks (a class of one image, or one whose images "
            "all fall in the test range, gives its images to the test split)",
            code="E_DATA_EMPTY",
            hint="remove them from data.classes, or add images of them",
        )
    val_x, val_y = (None, None) if ds.val_x is None else select(ds.val_x, ds.val_y)
    return SiteData(
        train_x,
        train_y,
        test_x,
        test_y,
        sorted(present),
        ds.name,
        val_x=val_x,
        val_y=val_y,
        patients=ds.patients,
    )


def _sha256_file(path: Path, h) -> None:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)


def _sha256_tree(root: Path, h) -> None:
    """Every file's relative path and bytes below ``root``, in sorted order (names only hashed).

    Linked folders are walked as the loaders read them (a linked class folder is data), each
    real folder once, so that a link back up cannot loop.
    """
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            h.update(str(p.relative_to(root)).encode() + b"\x00")
            _sha256_file(p, h)


def data_fingerprint(cfg: SiteConfig) -> str:
    """SHA-256 over the data source's bytes and the data settings: changes when new data appears."""
    h = hashlib.sha256(b"ffsecure/site-data/v1\x00")
    settings = {
        "source": cfg.data_source,
        "classes": list(cfg.classes),
        "label_match": cfg.label_match,
        "split_seed": cfg.split_seed,
    }
    if cfg.privacy_unit != "image":  # the default leaves the fingerprints of earlier releases
        settings["privacy_unit"] = cfg.privacy_unit
    h.update(canonical.dumps(settings))
    src = cfg.data_source
    if src == "digits":
        # heavy: sklearn, only to fingerprint its bundled digits set
        import sklearn

        h.update(f"sklearn-digits/{sklearn.__version__}".encode())
    elif src.startswith("npz:"):
        path = Path(src[4:])
        if not path.is_file():
            raise DataError(
                f"data file {path} does not exist", code="E_DATA_MISSING", hint="check data.source"
            )
        _sha256_file(path, h)
    elif src.startswith(("folder:", "dicom:")):
        kind, _, rest = src.partition(":")
        root = Path(rest)
        if kind == "dicom" and root.is_file():
            root = root.parent  # a labels CSV: its folder holds the CSV and every file it names
        if not root.is_dir():
            raise DataError(
                f"{'image' if kind == 'folder' else 'DICOM'} folder {root} does not exist",
                code="E_DATA_MISSING",
                hint="check data.source",
            )
        _sha256_tree(root, h)
    else:
        # heavy: torch, only when loading data or training (keeps --help fast)
        from ffsecure.data import default_root

        flag = _spec(cfg).lower()
        path = Path(cfg.data_root or default_root()) / f"{flag}.npz"
        if path.is_file():
            _sha256_file(path, h)
    return h.hexdigest()


# --------------------------------------------------------------------- train


def train_settings(cfg: SiteConfig, family: str):
    # heavy: torch, only when loading data or training (keeps --help fast)
    from ffsecure.generators import default_train_settings

    t = cfg.train
    s = default_train_settings(family, t["size"], seed=t["seed"], device=t["device"])
    if t["epochs"]:
        s.epochs = t["epochs"]
    if t["batch_size"]:
        s.batch_size = t["batch_size"]
    if t["lr"]:
        s.lr = t["lr"]
    return s


def train_module(
    cfg: SiteConfig,
    trust,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
):
    """Train, build the manifest, check it against the federation's policy, sign, self-verify,
    store.

    The privacy check runs and its report is judged before signing
    (:func:`site_node.privacy.gate`): before every module by default, and whenever the
    federation requires a report, at the stricter of the federation's and the site's limits.
    Under DP the planned module is composed with the site's earlier modules (its releases,
    and every DP module it trained, discarded ones too) before training
    (:func:`site_node.budget.check_plan`: ``E_DP_BUDGET`` raised, nothing trained or written),
    and the new module's DP record after it (:func:`site_node.budget.check_release`).
    Returns the new :class:`site_node.state.ModuleRecord`: status ``trained``,
    or ``refused`` (``error.by = "site"``) when the report fails a privacy limit or
    the module would take the site over its DP budget; a refused module is
    kept for inspection and never sealed or sent. Nothing is written unless
    every step succeeded.
    """

    # heavy: torch, only when loading data or training (keeps --help fast)
    from ffsecure import generators
    from ffsecure.torchutil import torch_threads

    state = StateDir(cfg.state_dir).ensure()
    fed = trust.federation
    # a config the policy refuses is refused before any data is hashed or read
    resolve_dp(cfg.dp, fed.dp_policy, None, privacy_unit=cfg.privacy_unit)
    fingerprint = data_fingerprint(cfg)
    data = load_site_data(cfg, fed)
    n = int(data.train_x.shape[0])
    dp_cfg = resolve_dp(cfg.dp, fed.dp_policy, n, privacy_unit=cfg.privacy_unit)
    family, gconfig = fed.generator["family"], fed.generator["config"]
    settings = train_settings(cfg, family)
    if dp_cfg is not None:  # a module the budget refuses is not trained
        check_plan(
            state,
            fed.dp_policy,
            cfg.dp_limits,
            site_id=cfg.site_id,
            plan=lambda: planned_dp_record(dp_cfg, family, n, settings),
        )

    def on_epoch(epoch, total, loss, eps):
        if should_stop is not None and should_stop():
            raise TrainingStopped(
                "training stopped on request before it finished",
                hint="nothing was written; the next `train` starts over",
            )
        if progress is not None:
            progress(epoch, total, loss, eps)

    log.info(
        "training %s on %d images of classes %s (%d epochs, DP %s)",
        family,
        n,
        data.classes,
        settings.epochs,
        "on" if dp_cfg else "off",
        extra={
            "event": "train_start",
            "n_train": n,
            "classes": data.classes,
            "epochs": settings.epochs,
            "dp": dp_cfg is not None,
        },
    )
    with torch_threads(cfg.train["threads"]):
        gen = generators.build(family, gconfig)
        t0 = time.perf_counter()
        report = gen.fit(data.train_x, data.train_y, settings, dp=dp_cfg, progress=on_epoch)
        weights = generators.to_safetensors(gen)
    dp_record = None if report.dp is None else {**report.dp, "privacy_unit": cfg.privacy_unit}
    _warn_patients(data.patients, dp_record, cfg.privacy_unit)
    manifest = build_manifest(
        federation=fed,
        site_id=cfg.site_id,
        weights=weights,
        classes=data.classes,
        seed=settings.seed,
        dp=dp_record,
    )
    check_policy(manifest, fed)
    manifest, verdict = _privacy_gate(cfg, manifest, weights, data, fed, settings.seed, state)
    pkg = sign_package(manifest, weights, trust.key, trust.cert)
    verify_package(pkg, federation=fed, ca_cert=trust.ca_cert)  # what the aggregator will check
    record = ModuleRecord(
        module_id=manifest.module_id,
        status="trained",
        created_at=manifest.created_at,
        classes=data.classes,
        n_train=n,
        data_fingerprint=fingerprint,
        train={
            "family": family,
            "epochs": report.epochs,
            "steps": report.steps,
            "final_loss": report.final_loss,
            "seconds": round(time.perf_counter() - t0, 3),
            "dp": dp_record,
            "privacy_unit": cfg.privacy_unit,
            "batch_size": settings.batch_size,
            "lr": settings.lr,
            "seed": settings.seed,
            "package_bytes": pkg.size,
            "weights_sha256": manifest.weights_sha256,
        },
    )
    refused = None
    if verdict is not None and not verdict.passes:
        refused = refusal(verdict.problems[0], by="site")
    else:
        try:
            check_release(
                state,
                fed.dp_policy,
                cfg.dp_limits,
                site_id=cfg.site_id,
                module_id=record.module_id,
                dp=dp_record,
            )
        except DPBudgetError as exc:
            refused = refusal(exc, by="site")
    if refused is not None:
        record.status, record.error = "refused", refused
    d = state.module_dir(record.module_id)
    d.mkdir(parents=True, exist_ok=True)
    pki.write_public_file(state.package_path(record.module_id), pkg.to_bytes())
    state.save_module(record)
    state.write_data(
        {
            "fingerprint": fingerprint,
            "module_id": record.module_id,
            "time": timefmt.now_rfc3339(),
        }
    )
    log.info(
        "module %s trained and signed",
        record.module_id,
        extra={
            "event": "module_trained",
            "module_id": record.module_id,
            # under DP the training loss is measured on private data without noise: not logged
            "final_loss": report.final_loss if report.dp is None else None,
            "epsilon": (report.dp or {}).get("epsilon"),
            "privacy_unit": cfg.privacy_unit,
        },
    )
    if refused is not None:
        log.error(
            "module %s refused by this site's %s: %s",
            record.module_id,
            "privacy check" if refused["code"] != DPBudgetError.code else "DP budget",
            refused["message"],
            extra={
                "event": "module_refused",
                "module_id": record.module_id,
                "by": "site",
                "code": refused["code"],
            },
        )
    return record


def _warn_patients(patients: PatientCensus | None, dp: dict | None, unit: str) -> None:
    """Log :func:`patient_warning` (counts only) when there is one."""
    warning = patient_warning(patients, dp, unit)
    if warning is not None and patients is not None:  # a warning needs a census
        log.warning(
            "%s",
            warning,
            extra={
                "event": "patients_per_image",
                "patients_with_several_images": patients.several,
                "max_images_per_patient": patients.largest,
            },
        )


def _privacy_gate(
    cfg: SiteConfig,
    manifest: ModuleManifest,
    weights: bytes,
    data: SiteData,
    fed: FederationManifest,
    seed: int,
    state: StateDir,
) -> tuple[ModuleManifest, PolicyVerdict | None]:
    """:func:`site_node.privacy.gate` on the site's threads; on failure nothing is left behind."""
    # heavy: torch, only when loading data or training (keeps --help fast)
    from ffsecure.torchutil import torch_threads

    out_dir = state.module_dir(manifest.module_id)
    try:
        with torch_threads(cfg.train["threads"]):
            return gate(
                manifest,
                weights,
                data,
                fed,
                seed=seed,
                out_dir=out_dir,
                max_epsilon=cfg.dp_limits.max_epsilon,
                privacy=cfg.privacy,
            )
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)  # a fresh module id: only the check wrote here
        raise


def fingerprint_changed(cfg: SiteConfig) -> bool:

    last = StateDir(cfg.state_dir).read_data()
    return last is None or last.get("fingerprint") != data_fingerprint(cfg)
