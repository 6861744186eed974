"""The operator's work on a store: synthesize, train, publish, delete + retire + retrain.

Everything here takes a :class:`Store` and the federation manifest and does
no console I/O, so it runs the same from the CLI (``aggregator synthesize``
...), from the gRPC service (a site's ``RequestDeletion``) and from tests.

Lineage (what the ledger records, docs/audit-bundle.md):

* ``dataset.synthesized``: ``dataset_id``, ``sha256`` (``ffsecure.synthesis.dataset_hash``),
  ``modules`` (``[{"module_id", "weights_sha256"}]`` sorted by id), ``seed``,
  ``per_class``, ``counts`` (samples per class name) and ``recipe`` (the
  synthesis recipe without its ``assignments``, which
  :func:`recipe_from_facts` recomputes with ``ffsecure.synthesis.plan_assignments``).
  Past ``ffsecure.records.lineage.INLINE_MAX_BYTES`` of facts (about 100
  modules) the entry holds ``lineage`` (count and SHA-256 of the lineage
  document) instead of ``modules``, and a recipe without its modules; the
  artifact's meta keeps the full recipe and the commitment, and the export
  writes the document (``aggregator.export``), so an entry stays bounded.
* ``classifier.trained``: ``classifier_id``, ``dataset_id``, ``sha256`` (of the
  safetensors bytes), ``modules`` or ``lineage`` (its dataset's), ``config``
  (architecture, model config, every training setting incl. ``seed``, the
  torch version and thread count) and, when a test set is configured,
  ``metrics``; a retrained classifier also names the one it ``replaces``.
* ``dataset.retired`` / ``classifier.retired``: the id, ``reason``, the
  ``module_id`` whose deletion caused it and the ``previous_status``.

Datasets are stored as their recipe only (no images): training regenerates
the images from the live modules and refuses a result whose hash differs
from the recorded one. Artifact ids are ``ds-NNNNNN`` / ``clf-NNNNNN``, the
ledger index of the entry that created them.

Exact unlearning. Synthesis and training are pure functions of (modules,
per_class, seed) and (dataset, classifier config, training settings) on the
CPU with deterministic algorithms, the same thread count and the same world
size (``--nproc``, :mod:`ffsecure.distributed`; synthesis does not depend on
it, training does, and it is recorded). Retraining
after a deletion re-runs them with the recorded settings on the remaining
modules, so its safetensors bytes equal those of training from scratch
without the deleted module.

Concurrency: ``lock`` guards every store call (the gRPC service passes its
store lock); sampling and training run outside it. Before an artifact is
written its lineage is re-checked under the lock, so a dataset or
classifier never lands in the store naming a module deleted meanwhile
(``E_LINEAGE_DELETED``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from aggregator.evaluation import EvalSet
from aggregator.store.base import ArtifactRow, Store
from ffsecure import canonical, classifier, generators, synthesis
from ffsecure.classifier import TrainConfig
from ffsecure.errors import ConfigError, NotFoundError, StoreError
from ffsecure.evalreport import summary
from ffsecure.federation import FederationManifest
from ffsecure.generators import Generator
from ffsecure.ledger import make_entry, open_checkpoint
from ffsecure.package import ModuleManifest
from ffsecure.plots import sample_grid
from ffsecure.records.entries import EntryType
from ffsecure.records.lineage import (
    INLINE_MAX_BYTES,
    LineageDocument,
    LineageFormatError,
    inline_fits,
    resolve_lineage,
)
from ffsecure.synthesis import ModuleSource, plan_assignments
from ffsecure.torchutil import torch_threads

log = logging.getLogger("aggregator.operations")

# progress(description, total) -> update(done)
ProgressFactory = Callable[[str, int], Callable[[int], None]]

RETIRE_PREVIOUS = ("active", "published")


@dataclass
class Appended:
    index: int
    entry: bytes

    def to_dict(self) -> dict:
        return {"index": self.index, "entry": canonical.loads(self.entry)}


@dataclass(frozen=True)
class Publication:
    """What ``publish`` did: the classifier now current, its ``classifier.published`` entry,
    and whether it was current already (nothing appended)."""

    classifier_id: str
    appended: Appended
    already: bool


@dataclass
class DatasetResult:
    dataset_id: str
    appended: Appended
    sha256: str
    modules: list[dict]
    counts: dict[str, int]
    recipe: dict
    grid_path: Path | None
    seconds: float
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The images and labels while this result still holds them (``retrain`` drops them)."""
        if self.images is None or self.labels is None:
            return None
        return self.images, self.labels


@dataclass
class ClassifierResult:
    classifier_id: str
    appended: Appended
    sha256: str
    dataset_id: str
    modules: list[dict]
    metrics: dict | None
    seconds: float
    weights: bytes


@dataclass
class DeletionOutcome:
    module_id: str
    appended: list[Appended]
    retired_datasets: list[str]
    retired_classifiers: list[str]


@dataclass
class RetrainOutcome:
    appended: list[Appended] = field(default_factory=list)
    datasets: list[DatasetResult] = field(default_factory=list)
    classifiers: list[ClassifierResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (classifier id, why)
    skipped_modules: list[tuple[str, str]] = field(default_factory=list)  # (module id, why)
    seconds: float = 0.0


def _lineage(modules: list[dict]) -> list[dict]:
    return sorted(
        ({"module_id": m["module_id"], "weights_sha256": m["weights_sha256"]} for m in modules),
        key=lambda m: m["module_id"],
    )


def compact_recipe(recipe: dict, *, committed: bool = False) -> dict:
    """The recipe as the ledger records it: everything but the (recomputable) assignments,
    and without its modules when the lineage is committed (the lineage document has them)."""
    dropped = {"assignments", "modules"} if committed else {"assignments"}
    return {k: v for k, v in recipe.items() if k not in dropped}


def recipe_from_facts(facts: dict, documents: Mapping[str, bytes] | None = None) -> dict:
    """The full synthesis recipe of a ``dataset.synthesized`` entry (assignments recomputed).

    A committed lineage is read from ``documents`` (lineage documents by SHA-256, as an
    audit bundle's ``lineage/`` holds them) through ``resolve_lineage``, which raises a
    ``LineageError`` when the document is absent or not the one the entry commits to.
    """
    lineage = resolve_lineage(facts, documents or {})
    if lineage.recipe_modules is None:
        raise LineageFormatError("the entry's facts hold no recipe modules")
    recipe = dict(facts["recipe"])
    recipe["modules"] = [dict(m) for m in lineage.recipe_modules]
    sources = [
        SimpleNamespace(module_id=m["module_id"], classes=list(m["classes"]))
        for m in recipe["modules"]
    ]
    assignments, _ = plan_assignments(
        # plan_assignments reads only module_id and classes; a recipe names no generator
        sorted(sources, key=lambda s: s.module_id),  # type: ignore[arg-type]
        num_classes=recipe["num_classes"],
        per_class=recipe["per_class"],
        seed=recipe["seed"],
    )
    recipe["assignments"] = assignments
    return recipe


def dataset_lineage_facts(
    facts: dict, recipe: dict, *, inline_max: int = INLINE_MAX_BYTES
) -> tuple[dict, LineageDocument | None]:
    """A dataset's facts with its lineage inline when they fit ``inline_max``, else committed.

    ``facts`` lack the lineage; the answer adds ``modules`` and the compact recipe
    (byte for byte what small federations always logged) or, past the limit, the
    ``lineage`` commitment and a recipe without modules, and returns the document.
    """
    inline = {**facts, "modules": _lineage(recipe["modules"]), "recipe": compact_recipe(recipe)}
    if inline_fits(inline, inline_max):
        return inline, None
    document = LineageDocument.from_modules(recipe["modules"])
    committed = {
        **facts,
        "lineage": document.commitment().to_dict(),
        "recipe": compact_recipe(recipe, committed=True),
    }
    return committed, document


class NoModulesError(ConfigError):
    """No live module to synthesize from (none uploaded yet, or all deleted)."""

    code = "E_NO_MODULES"


def _lineage_error(module_id: str) -> StoreError:
    return StoreError(
        f"module {module_id} was deleted while this artifact was being made",
        code="E_LINEAGE_DELETED",
        hint="run the step again; it uses only the live modules",
    )


class Operations:
    """Synthesize, train, publish and unlearn on one store of one federation."""

    def __init__(
        self,
        store: Store,
        federation: FederationManifest,
        *,
        actor: str = "aggregator",
        lock: threading.RLock | None = None,
        runs_dir: str | Path | None = None,
        evaluation: EvalSet | None = None,
        progress: ProgressFactory | None = None,
        device: str = "cpu",
        lineage_inline_max: int = INLINE_MAX_BYTES,
    ):
        self.store = store
        self.federation = federation
        self.actor = actor
        self.lock = lock or threading.RLock()
        self.runs_dir = Path(runs_dir) if runs_dir is not None else None
        self.evaluation = evaluation
        self.progress = progress
        self.device = device
        self.lineage_inline_max = lineage_inline_max

    # -- helpers ------------------------------------------------------------
    def _bar(self, description: str, total: int) -> Callable[[int], None] | None:
        return self.progress(description, total) if self.progress else None

    @property
    def label_space(self) -> list[str]:
        return list(self.federation.label_space)

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}-{self.store.size():06d}"

    def _check_live(self, modules: list[dict]) -> None:
        for m in modules:
            if self.store.get_module(m["module_id"]).status != "active":
                raise _lineage_error(m["module_id"])

    def live_sources(
        self, module_ids: list[str] | None = None, *, skipped: list[tuple[str, str]] | None = None
    ) -> list:
        """Decrypt live modules (in memory only) into synthesis sources, sorted by id.

        A module whose weights hold NaN or inf (registered before registration checked
        values) raises ``E_TENSOR_VALUE`` naming it; with a ``skipped`` list it is left
        out instead, logged, and recorded there as ``(module_id, why)``.
        """
        with self.lock:
            rows = self.store.list_modules("active")
            if module_ids is not None:
                wanted = set(module_ids)
                rows = [r for r in rows if r.module_id in wanted]
                missing = wanted - {r.module_id for r in rows}
                if missing:
                    raise NotFoundError(
                        f"module(s) {', '.join(sorted(missing))} are not live",
                        hint="a deleted module cannot be used; synthesize from the live ones",
                    )
            weights = {r.module_id: self.store.module_weights(r.module_id) for r in rows}
        sources = []
        for r in sorted(rows, key=lambda r: r.module_id):
            m = ModuleManifest.from_bytes(r.manifest)
            gen = self._generator(m, weights.pop(r.module_id), skipped)
            if gen is not None:
                sources.append(
                    ModuleSource(
                        module_id=r.module_id,
                        generator=gen,
                        classes=list(m.classes),
                        weights_sha256=r.weights_sha256,
                    )
                )
        return sources

    @staticmethod
    def _generator(
        manifest: ModuleManifest, weights: bytes, skipped: list[tuple[str, str]] | None
    ) -> Generator | None:
        """The module's generator, or None when its values are bad and ``skipped`` collects them."""
        try:
            return generators.from_state(
                manifest.generator["family"],
                manifest.generator["config"],
                weights,
                module_id=manifest.module_id,
            )
        except generators.TensorValueError as exc:
            if skipped is None:
                raise
            skipped.append((manifest.module_id, exc.message))
            log.warning(
                "module %s skipped: %s",
                manifest.module_id,
                exc.message,
                extra={
                    "event": "module_skipped",
                    "module_id": manifest.module_id,
                    "code": exc.code,
                },
            )
            return None

    # -- synthesis ----------------------------------------------------------
    def synthesize(
        self,
        *,
        per_class: int,
        seed: int,
        grid: bool = True,
        skipped: list[tuple[str, str]] | None = None,
        nproc: int = 1,
    ) -> DatasetResult:
        """Sample a balanced dataset from every live module; store its recipe; log the lineage.

        A module with non-finite weights fails the step naming it (``E_TENSOR_VALUE``), or,
        given a ``skipped`` list, is left out of the dataset and recorded there.
        """
        start = time.perf_counter()
        sources = self.live_sources(skipped=skipped)
        if not sources:
            raise NoModulesError(
                "no live modules to synthesize from",
                hint="wait for sites to upload modules (`aggregator modules list`)",
            )
        k = len(self.label_space)
        covered = {
            c for src in sources for c in src.classes if 0 <= c < k
        }  # an uncovered class gets none
        bar = self._bar("synthesize", per_class * len(covered))
        syn = synthesis.synthesize(
            sources,
            num_classes=k,
            per_class=per_class,
            seed=seed,
            device=self.device,
            progress=(lambda done, total: bar(done)) if bar else None,
            world_size=nproc,
        )
        del sources
        recipe = syn.recipe
        modules = _lineage(recipe["modules"])
        counts = {name: 0 for name in self.label_space}
        for a in recipe["assignments"]:
            counts[self.label_space[a["class"]]] += a["count"]
        with self.lock:
            self._check_live(modules)
            dataset_id = self._next_id("ds")
            facts, document = dataset_lineage_facts(
                {
                    "dataset_id": dataset_id,
                    "sha256": recipe["dataset_sha256"],
                    "seed": seed,
                    "per_class": per_class,
                    "counts": counts,
                },
                recipe,
                inline_max=self.lineage_inline_max,
            )
            meta = {
                "dataset_id": dataset_id,
                "sha256": recipe["dataset_sha256"],
                "modules": modules,
                "seed": seed,
                "per_class": per_class,
                "counts": counts,
                "recipe": recipe,
            }
            if document is not None:
                meta["lineage"] = facts["lineage"]
            index, data = self.store.put_artifact(
                "dataset",
                dataset_id,
                meta,
                None,
                make_entry(EntryType.DATASET_SYNTHESIZED, self.actor, facts),
            )
        grid_path = self._grid(dataset_id, syn.images, syn.labels) if grid else None
        log.info(
            "dataset %s synthesized from %d modules (%d images), entry %d",
            dataset_id,
            len(modules),
            int(syn.labels.numel()),
            index,
            extra={"event": "dataset_synthesized", "dataset_id": dataset_id},
        )
        return DatasetResult(
            dataset_id,
            Appended(index, data),
            recipe["dataset_sha256"],
            modules,
            counts,
            recipe,
            grid_path,
            time.perf_counter() - start,
            syn.images,
            syn.labels,
        )

    def _grid(self, dataset_id: str, images: torch.Tensor, labels: torch.Tensor) -> Path | None:
        if self.runs_dir is None:
            return None

        self.runs_dir.mkdir(parents=True, exist_ok=True)
        if self.evaluation is not None:
            real_x, real_y = self.evaluation.x, self.evaluation.y
        else:
            real_x, real_y = images[:0], labels[:0]
        return sample_grid(
            self.runs_dir / f"{dataset_id}-samples.png",
            real_x,
            real_y,
            images,
            labels,
            self.label_space,
            title=f"{dataset_id}: real (test set) | synthetic",
        )

    def dataset_tensors(
        self, dataset_id: str, *, nproc: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, ArtifactRow]:
        """Regenerate a live dataset's images from its recipe (hash-checked); ``nproc``
        processes sample (the bytes do not depend on it)."""
        with self.lock:
            row = self.store.get_artifact("dataset", dataset_id)
        if row.status == "retired":
            raise StoreError(
                f"dataset {dataset_id} is retired",
                code="E_DATASET_RETIRED",
                hint="synthesize a new dataset from the live modules",
            )
        recipe = row.meta["recipe"]
        sources = self.live_sources([m["module_id"] for m in row.meta["modules"]])
        bar = self._bar(f"regenerate {dataset_id}", sum(a["count"] for a in recipe["assignments"]))
        syn = synthesis.regenerate(
            recipe,
            sources,
            device=self.device,
            progress=(lambda done, total: bar(done)) if bar else None,
            world_size=nproc,
        )
        return syn.images, syn.labels, row

    # -- training -----------------------------------------------------------
    def train(
        self,
        dataset_id: str,
        *,
        arch: str = "cnn",
        settings: TrainConfig | None = None,
        width: int | None = None,
        threads: int | None = None,
        replaces: str | None = None,
        data: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> ClassifierResult:
        """Train a classifier on a live dataset; store its safetensors; log classifier.trained."""
        start = time.perf_counter()
        settings = settings or TrainConfig()
        if settings.device != "cpu":
            log.warning(
                "training on %s: bit-for-bit retraining is only guaranteed on the CPU",
                settings.device,
            )
        with self.lock:
            row = self.store.get_artifact("dataset", dataset_id)
        if row.status == "retired":
            raise StoreError(
                f"dataset {dataset_id} is retired",
                code="E_DATASET_RETIRED",
                hint="synthesize a new dataset from the live modules",
            )
        if data is None:
            x, y, row = self.dataset_tensors(dataset_id, nproc=settings.world_size)
        else:
            x, y = data
        shape = tuple(self.federation.image_shape)
        model_cfg = classifier.model_config(
            arch, image_shape=shape, num_classes=len(self.label_space), width=width
        )
        threads = int(threads or max(1, torch.get_num_threads() // settings.world_size))
        bar = self._bar(f"train {arch}", settings.epochs)
        with torch_threads(threads):
            result = classifier.train_classifier(
                model_cfg,
                x,
                y,
                settings,
                progress=(lambda e, n, loss: bar(e)) if bar else None,
                threads=threads,
            )
        weights = classifier.to_safetensors(result.model, model_cfg)
        sha = hashlib.sha256(weights).hexdigest()
        metrics = None
        if self.evaluation is not None:
            ev = classifier.evaluate(
                result.model, self.evaluation.x, self.evaluation.y, len(self.label_space)
            )
            metrics = {
                "test_set": self.evaluation.name,
                "accuracy": round(ev.accuracy, 6),
                "auroc": None if ev.auroc is None else round(ev.auroc, 6),
                "n": ev.n,
            }
        modules = row.meta["modules"]
        config = {
            "architecture": arch,
            "model": model_cfg,
            **settings.to_dict(),
            "torch_version": torch.__version__,
            "torch_threads": threads,
            "cpu_capability": synthesis.host_facts()["cpu_capability"],
        }
        served = {
            "architecture": arch,
            "num_classes": len(self.label_space),
            "image_shape": list(shape),
            "class_names": self.label_space,
            "model": model_cfg,
        }
        with self.lock:
            self._check_live(modules)
            if self.store.get_artifact("dataset", dataset_id).status == "retired":
                raise StoreError(
                    f"dataset {dataset_id} was retired during training",
                    code="E_DATASET_RETIRED",
                    hint="synthesize a new dataset from the live modules",
                )
            classifier_id = self._next_id("clf")
            facts = {
                "classifier_id": classifier_id,
                "dataset_id": dataset_id,
                "sha256": sha,
                "config": config,
            }
            # the dataset's lineage, in the form its entry logged it (one document for both)
            if "lineage" in row.meta:
                facts["lineage"] = row.meta["lineage"]
            else:
                facts["modules"] = modules
            if metrics is not None:
                facts["metrics"] = metrics
            if replaces is not None:
                facts["replaces"] = replaces
            meta = {
                "classifier_id": classifier_id,
                "dataset_id": dataset_id,
                "sha256": sha,
                "modules": modules,
                "config": served,
                "train": config,
                "metrics": metrics,
                "replaces": replaces,
            }
            if "lineage" in row.meta:
                meta["lineage"] = row.meta["lineage"]
            index, data_bytes = self.store.put_artifact(
                "classifier",
                classifier_id,
                meta,
                weights,
                make_entry(EntryType.CLASSIFIER_TRAINED, self.actor, facts),
            )
        log.info(
            "classifier %s trained on %s (%s), entry %d%s",
            classifier_id,
            dataset_id,
            arch,
            index,
            f", accuracy {metrics['accuracy']:.4f}" if metrics else "",
            extra={"event": "classifier_trained", "classifier_id": classifier_id},
        )
        return ClassifierResult(
            classifier_id,
            Appended(index, data_bytes),
            sha,
            dataset_id,
            modules,
            metrics,
            time.perf_counter() - start,
            weights,
        )

    @staticmethod
    def settings_from_config(config: dict) -> TrainConfig:
        """The TrainConfig recorded in a classifier.trained entry's ``config``."""
        names = set(TrainConfig.__dataclass_fields__)
        return TrainConfig(**{k: v for k, v in config.items() if k in names})

    # -- publishing ---------------------------------------------------------
    def publish(self, classifier_id: str | None = None) -> Publication:
        """Make a classifier the federation's current one (default: the newest active one).

        Idempotent: publishing the classifier that is already the current one appends
        nothing and answers its ``classifier.published`` entry (``already`` set).
        """
        with self.lock:
            current = self.current_classifier()
            if classifier_id is None:
                rows = self.store.list_artifacts("classifier", "active")
                if not rows and current is not None:
                    return self._already(current)
                if not rows:
                    raise NotFoundError(
                        "no trained classifier to publish",
                        code="E_NO_CLASSIFIER",
                        hint="train one with `aggregator train --dataset ID`",
                    )
                classifier_id = max(rows, key=lambda r: r.entry_index).artifact_id
            row = self.store.get_artifact("classifier", classifier_id)
            if current is not None and current.artifact_id == row.artifact_id:
                return self._already(current)
            if row.status != "active":
                raise StoreError(
                    f"classifier {classifier_id} is {row.status}; "
                    "only an active one can be published",
                    code="E_STATUS",
                    hint="train a new classifier",
                )
            index, data = self.store.set_artifact_status(
                "classifier",
                classifier_id,
                "published",
                make_entry(
                    EntryType.CLASSIFIER_PUBLISHED, self.actor, {"classifier_id": classifier_id}
                ),
            )
        return Publication(classifier_id, Appended(index, data), already=False)

    def _already(self, current: ArtifactRow) -> Publication:
        index = current.updated_index  # its classifier.published entry
        return Publication(
            current.artifact_id, Appended(index, self.store.entry(index)), already=True
        )

    def current_classifier(self) -> ArtifactRow | None:
        with self.lock:
            rows = self.store.list_artifacts("classifier", "published")
        return max(rows, key=lambda r: r.updated_index) if rows else None

    # -- deletion -----------------------------------------------------------
    def delete(
        self,
        module_id: str,
        reason: str,
        *,
        actor: str | None = None,
        request_entry: dict | None = None,
    ) -> DeletionOutcome:
        """Crypto-shred a module, then retire every dataset and classifier whose lineage holds it.

        The shredding and its ``module.deleted`` entry are one store
        transaction; each retirement is its own (``dataset.retired`` /
        ``classifier.retired``). A crash between them leaves artifacts naming
        a deleted module live; :meth:`retire_orphans` (run by every delete and
        by ``aggregator retrain``) finishes the job.
        """
        actor = actor or self.actor
        with self.lock:
            entries = self.store.delete_module(
                module_id, actor=actor, reason=reason, request_entry=request_entry
            )
            appended = [Appended(i, e) for i, e in entries]
            ds, clf, more = self._retire_lineage(module_id, reason)
        appended += more
        log.info(
            "module %s deleted; retired %d dataset(s), %d classifier(s)",
            module_id,
            len(ds),
            len(clf),
            extra={"event": "module_unlearned", "module_id": module_id},
        )
        return DeletionOutcome(module_id, appended, ds, clf)

    def _retire_lineage(
        self, module_id: str, reason: str
    ) -> tuple[list[str], list[str], list[Appended]]:
        appended: list[Appended] = []
        retired: dict[str, list[str]] = {"classifier": [], "dataset": []}
        why = f"module {module_id} deleted: {reason}"[:500]
        for kind, etype, key in (
            ("classifier", EntryType.CLASSIFIER_RETIRED, "classifier_id"),
            ("dataset", EntryType.DATASET_RETIRED, "dataset_id"),
        ):
            for row in self.store.list_artifacts(kind):
                if row.status == "retired" or module_id not in {
                    m["module_id"] for m in row.meta["modules"]
                }:
                    continue
                facts = {
                    key: row.artifact_id,
                    "reason": why,
                    "module_id": module_id,
                    "previous_status": row.status,
                }
                i, e = self.store.set_artifact_status(
                    kind, row.artifact_id, "retired", make_entry(etype, self.actor, facts)
                )
                appended.append(Appended(i, e))
                retired[kind].append(row.artifact_id)
        return retired["dataset"], retired["classifier"], appended

    def retire_orphans(self) -> list[Appended]:
        """Retire live artifacts that still name a deleted module (after a deletion was cut)."""
        out: list[Appended] = []
        with self.lock:
            deleted = {m.module_id: m for m in self.store.list_modules("deleted")}
            names = set()
            for kind in ("classifier", "dataset"):
                for row in self.store.list_artifacts(kind):
                    if row.status != "retired":
                        names |= {m["module_id"] for m in row.meta["modules"]} & set(deleted)
            for mid in sorted(names):
                out += self._retire_lineage(mid, "deletion finished after an interruption")[2]
        return out

    # -- retraining ---------------------------------------------------------
    def pending_retrains(self) -> list[tuple[ArtifactRow, str]]:
        """Classifiers retired by a module deletion while live that no later one replaces."""
        with self.lock:
            rows = self.store.list_artifacts("classifier")
            replaced = {r.meta.get("replaces") for r in rows}
            pending = []
            for r in rows:
                if r.status != "retired" or r.artifact_id in replaced:
                    continue
                facts = canonical.loads(self.store.entry(r.updated_index))["facts"]
                if "module_id" in facts and facts.get("previous_status") in RETIRE_PREVIOUS:
                    pending.append((r, facts["previous_status"]))
        return pending

    def retrain(self, *, skip_bad_modules: bool = False) -> RetrainOutcome:
        """Synthesize and train again, with the recorded settings, for every pending classifier.

        A replacement of a published classifier is published. Datasets are
        re-synthesized once per (per_class, seed) and shared. With ``skip_bad_modules``
        (the background worker) a live module whose weights hold NaN or inf is left out
        and listed in ``skipped_modules`` instead of failing the whole pass.
        """
        start = time.perf_counter()
        out = RetrainOutcome()
        out.appended += self.retire_orphans()
        new_sets: dict[tuple[int, int], DatasetResult] = {}
        for row, previous in self.pending_retrains():
            with self.lock:
                old_ds = self.store.get_artifact("dataset", row.meta["dataset_id"])
            per_class, seed = old_ds.meta["per_class"], old_ds.meta["seed"]
            key = (per_class, seed)
            try:
                if key not in new_sets:
                    ds = self.synthesize(
                        per_class=per_class,
                        seed=seed,
                        skipped=out.skipped_modules if skip_bad_modules else None,
                        nproc=int(row.meta["train"].get("world_size", 1)),
                    )
                    new_sets[key] = ds
                    out.datasets.append(ds)
                    out.appended.append(ds.appended)
                ds = new_sets[key]
                train = row.meta["train"]
                clf = self.train(
                    ds.dataset_id,
                    arch=train["architecture"],
                    settings=self.settings_from_config(train),
                    width=train["model"].get("width"),
                    threads=train["torch_threads"],
                    replaces=row.artifact_id,
                    data=ds.tensors(),
                )
            except NoModulesError as exc:
                out.skipped.append((row.artifact_id, exc.message))
                continue
            out.classifiers.append(clf)
            out.appended.append(clf.appended)
            if previous == "published":
                out.appended.append(self.publish(clf.classifier_id).appended)
        for ds in out.datasets:
            ds.images = ds.labels = None
        out.seconds = time.perf_counter() - start
        return out

    # -- status ---------------------------------------------------------------
    def status(self) -> dict:
        """Modules live/deleted, classes covered, last checkpoint, current classifier, lineage."""
        with self.lock:
            modules = self.store.list_modules()
            note = self.store.latest_checkpoint()
            size = self.store.size()
            datasets = self.store.list_artifacts("dataset")
            classifiers = self.store.list_artifacts("classifier")
        covered: set[int] = set()
        for m in modules:
            if m.status == "active":
                covered |= set(ModuleManifest.from_bytes(m.manifest).classes)
        current = max(
            (r for r in classifiers if r.status == "published"),
            key=lambda r: r.updated_index,
            default=None,
        )
        cp = open_checkpoint(note, self.store.vkey) if note else None
        out = {
            "federation_id": self.federation.federation_id,
            "modules": {
                "live": sum(m.status == "active" for m in modules),
                "deleted": sum(m.status == "deleted" for m in modules),
            },
            "classes_covered": [self.label_space[k] for k in sorted(covered)],
            "classes_uncovered": [n for k, n in enumerate(self.label_space) if k not in covered],
            "ledger": {
                "size": size,
                "checkpoint_size": cp.size if cp else None,
                "checkpoint_root": cp.root_hash.hex() if cp else None,
            },
            "datasets": {s: sum(r.status == s for r in datasets) for s in ("active", "retired")},
            "classifiers": {
                s: sum(r.status == s for r in classifiers)
                for s in ("active", "published", "retired")
            },
            "current_classifier": None,
            "pending_retrains": [r.artifact_id for r, _ in self.pending_retrains()],
        }
        if current is not None:
            out["current_classifier"] = {
                "classifier_id": current.artifact_id,
                "sha256": current.meta["sha256"],
                "dataset_id": current.meta["dataset_id"],
                "modules": [m["module_id"] for m in current.meta["modules"]],
                "architecture": current.meta["config"]["architecture"],
                "metrics": current.meta.get("metrics"),
                "trained_index": current.entry_index,
                "published_index": current.updated_index,
                "replaces": current.meta.get("replaces"),
                "site_evaluations": self.site_evaluations(current.artifact_id),
            }
        return out

    def site_evaluations(self, classifier_id: str) -> list[dict]:
        """What sites reported (ReportEvaluation) for a classifier: a summary per site, by entry."""
        with self.lock:
            rows = self.store.list_evaluations(classifier_id)
        return [
            {
                "site_id": r.site_id,
                "index": r.entry_index,
                "reported_at": r.created,
                **summary(r.report, self.label_space),
            }
            for r in rows
        ]
