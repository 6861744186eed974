"""The demo's phases, each through the real CLIs as separate processes.

CA operator (``ffsecure pki`` / ``ffsecure federation``), aggregator operator
(``aggregator init|serve|synthesize|train|publish|status|ledger export``),
one ``site-node`` process per site and step, and the auditor
(``ffsecure audit verify|report``). Only the centralized and FedAvg baselines
run in this process (``ffsecure.baselines``, as ``ffsecure simulate`` does):
they need every site's raw images in one place, which no role of a real
federation has.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from ffsecure import classifier, data, partition
from ffsecure.baselines import FedAvgConfig, centralized, fedavg
from ffsecure.data import default_root
from ffsecure.demo import layout
from ffsecure.demo.pictures import accuracy_chart
from ffsecure.demo.procs import DemoError, Supervisor, parallel, sigterm_as_interrupt
from ffsecure.demo.summary import build_summary
from ffsecure.dp import resolve_mechanism
from ffsecure.errors import ConfigError
from ffsecure.generators import default_train_settings
from ffsecure.partition import Partition
from ffsecure.torchutil import torch_threads

log = logging.getLogger(__name__)

FEDERATION_ID = "demo"
DELETION_REASON = "consent withdrawn (demo)"
#: serve's Prometheus endpoint on a free loopback port (the bound port goes to metrics.port)
METRICS_TOML = '\n[metrics]\nlisten = "127.0.0.1:0"\n'


@dataclass
class DemoConfig:
    """Every knob of the demo; ``None`` means the default chosen for the data set (``resolve``)."""

    workdir: str = "demo-out"
    dataset: str | None = None  # None: pneumoniamnist when its file is present, else digits
    data_root: str | None = None
    partition: str = "pathological"
    alpha: float = 0.5
    classes_per_site: int | None = None
    sites: int | None = None
    generator: str = "cvae"
    generator_size: str = "default"
    epochs: int | None = None
    dp_epsilon: float | None = None
    dp_mechanism: str = "auto"  # pinned in the manifest's dp_policy unless auto
    samples_per_class: int | None = None
    classifier_epochs: int = 5
    classifier_width: int = 16
    classifier_min_steps: int = 150
    fedavg_rounds: int = 5
    fedavg_local_epochs: int = 1
    parallel: int = 2
    forget_site: str | None = None  # default: the last site
    seed: int = 0
    baselines: bool = True
    image_shape: tuple[int, int, int] | None = None
    port: int = 0  # 0: a free loopback port

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["image_shape"] is not None:
            d["image_shape"] = list(d["image_shape"])
        return d


def medmnist_available(flag: str, root: str | None) -> bool:
    return (Path(root) if root else default_root()).joinpath(f"{flag}.npz").is_file()


_T = TypeVar("_T")


def _resolved(value: _T | None, name: str) -> _T:
    """A setting :func:`resolve` fills; None here is a bug, not a user error."""
    if value is None:
        raise RuntimeError(f"the demo setting {name} is used before resolve() filled it")
    return value


def resolve(cfg: DemoConfig) -> DemoConfig:
    """Fill the data-set-dependent defaults (documented in README.md, "What the demo runs")."""
    c = DemoConfig(**asdict(cfg))
    if c.dataset is None:
        c.dataset = (
            "pneumoniamnist" if medmnist_available("pneumoniamnist", c.data_root) else "digits"
        )
    digits = c.dataset == "digits"
    if c.classes_per_site is None:
        # digits: 10 sites x 2 classes puts every class at two sites;
        # pneumoniamnist: 2 sites per class.
        c.classes_per_site = 2 if digits and c.partition == "pathological" else 1
    if c.dp_mechanism != "auto" and c.dp_epsilon is None:
        raise ConfigError(
            f"--dp-mechanism {c.dp_mechanism} needs --dp-epsilon",
            hint="add --dp-epsilon 8 (or leave --dp-mechanism at auto)",
        )
    if c.dp_epsilon is not None:
        # E_DP for a mechanism the family cannot run (mean-embedding with ddpm), before any file
        ran = resolve_mechanism(c.dp_mechanism, c.generator, 0, c.dp_epsilon)
        if c.epochs is None and ran == "dp-sgd":
            # DP-SGD at the family's own schedule, the one its DP figures were measured at
            # (docs/privacy.md), not the demo's short non-DP fit
            c.epochs = default_train_settings(c.generator, c.generator_size, seed=0).epochs
    if c.epochs is None:
        c.epochs = 30 if digits else 6
    if c.samples_per_class is None:
        c.samples_per_class = 300 if digits else 500
    if c.parallel < 1:
        raise ConfigError("--parallel must be at least 1", hint="1 or 2 on a 2-core machine")
    if c.epochs < 1 or c.samples_per_class < 1 or c.classifier_epochs < 1 or c.fedavg_rounds < 1:
        raise ConfigError(
            "epochs, samples per class, classifier epochs and FedAvg rounds must be >= 1",
            hint="see `ffsecure demo --help`",
        )
    return c


def default_sites(num_classes: int, classes_per_site: int, partition: str) -> int:
    """Every class at two sites (pathological), so forgetting one site leaves its
    classes covered."""
    if partition == "pathological":
        return max(2, math.ceil(2 * num_classes / classes_per_site))
    return max(2, num_classes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Phases:
    """Wall time of each phase, and a line on the progress display as each starts and ends."""

    def __init__(self, ui):
        self.ui = ui
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str, what: str):
        self.ui.start(name, what)
        t0 = time.perf_counter()
        try:
            yield
        except BaseException:
            self.ui.fail(name)
            raise
        self.seconds[name] = round(time.perf_counter() - t0, 2)
        self.ui.done(name, self.seconds[name])


class Demo:
    """One run: ``run()`` returns the summary (also written to WORKDIR/summary.json)."""

    def __init__(self, cfg: DemoConfig, ui):
        self.cfg = resolve(cfg)
        self.ui = ui
        self.work = Path(self.cfg.workdir).resolve()
        self.ca_dir = self.work / "ca"
        self.agg_dir = self.work / "aggregator"
        self.sites_dir = self.work / "sites"
        self.ca_fingerprint = ""  # set by `pki init`; every install-kit pins it
        self.phases = Phases(ui)
        self.facts: dict[str, Any] = {
            "sites": {},
            "accuracy": {"before": {}, "after": {}},
            "site_evaluation": {},
        }
        self.sup: Supervisor | None = None
        self.serve: subprocess.Popen[bytes] | None = None
        self.serve_log: Path | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def supervisor(self) -> Supervisor:
        """The process supervisor, which :meth:`run` starts before any phase."""
        if self.sup is None:
            raise RuntimeError("the demo's supervisor is used before run() started it")
        return self.sup

    def cli(self, tool: str, *args: Any, name: str | None = None, timeout: float = 900.0):
        return self.supervisor.run(tool, *args, name=name, timeout=timeout)

    def cli_json(self, tool: str, *args: Any, name: str | None = None, timeout: float = 900.0):
        return self.cli(tool, *args, "--json", name=name, timeout=timeout).json()

    def site_cfg(self, sid: str) -> Path:
        return self.sites_dir / sid / "site.toml"

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        if self.work.exists() and any(self.work.iterdir()):
            raise ConfigError(
                f"the workdir {self.work} is not empty",
                code="E_EXISTS",
                hint="remove it or pass another --workdir",
            )
        t_all = time.perf_counter()
        t0 = time.perf_counter()
        self.load_data()  # every check that can refuse the options runs before anything is written
        self._load_s = time.perf_counter() - t0
        self.work.mkdir(parents=True, exist_ok=True)
        self.sup = Supervisor(self.work / "logs")
        try:
            with sigterm_as_interrupt(), torch_threads(1):  # the baselines run in this process
                self._run()
        finally:
            self.stop_serve()
            self.sup.stop_all()
        self.phases.seconds["total"] = round(time.perf_counter() - t_all, 2)
        summary = build_summary(self.cfg, self.facts, self.phases.seconds, self.work)
        (self.work / "summary.json").write_text(
            json.dumps(summary, indent=2, sort_keys=True) + "\n"
        )
        return summary

    def _run(self) -> None:
        P = self.phases.phase
        with P("data", "write each site's data file"):
            self.write_data()
        self.phases.seconds["data"] = round(self.phases.seconds["data"] + self._load_s, 2)
        with P("pki", "CA, aggregator keys, federation manifest, certificates"):
            self.setup_pki_and_aggregator()
        with P("serve", "start `aggregator serve` (mTLS, loopback)"):
            self.start_serve()
        with P("enroll", "sites: enroll, CA makes each site's kit, install-kit"):
            parallel(
                [functools.partial(self.enroll_site, s) for s in self.specs],
                workers=self.cfg.parallel,
                on_error=self.supervisor.stop_all,
            )
        with P("sites", "sites: train, sign, seal, upload, verify receipts"):
            parallel(
                [functools.partial(self.train_upload_site, s) for s in self.specs],
                workers=self.cfg.parallel,
                on_error=self.supervisor.stop_all,
            )
        with P("monitoring", "scrape the aggregator's metrics; sites write their textfiles"):
            self.monitoring()
        with P("aggregate", "aggregator: synthesize, train, publish"):
            self.aggregate()
        with P("evaluate", "sites: evaluate the published classifier locally"):
            self.evaluate_sites("before")
        if self.cfg.baselines:
            with P("baselines", "centralized and FedAvg on the same split"):
                self.baselines("before", exclude=None)
        with P("forget", f"{self.forgotten.site_id}: forget its module; retrain without it"):
            self.forget()
        with P("evaluate_after", "sites: evaluate the retrained classifier"):
            self.evaluate_sites("after")
        if self.cfg.baselines:
            with P("baselines_after", "baselines without the forgotten site's data"):
                self.baselines("after", exclude=self.forgotten.index)
        with P("audit", "export the bundle, audit verify, audit report"):
            self.stop_serve()
            self.audit()
        with P("pictures", "sample grid and accuracy chart"):
            self.pictures()

    # ------------------------------------------------------------------ phases
    def load_data(self) -> None:
        c = self.cfg
        dataset = _resolved(c.dataset, "dataset")
        classes_per_site = _resolved(c.classes_per_site, "classes_per_site")
        self.ds = data.load_dataset(
            dataset, image_shape=c.image_shape, root=c.data_root, seed=c.seed
        )
        k = self.ds.num_classes
        if c.sites is None:
            c.sites = default_sites(k, classes_per_site, c.partition)
        self.part = partition.make_partition(
            c.partition,
            self.ds.train_y,
            num_classes=k,
            num_sites=c.sites,
            alpha=c.alpha,
            classes_per_site=classes_per_site,
            seed=c.seed,
        )
        ids = layout.site_ids(self.part.num_sites)
        forget = c.forget_site or ids[-1]
        if forget not in ids:
            raise ConfigError(
                f"--forget-site {forget!r} is not one of the sites ({', '.join(ids)})",
                hint=f"pick one of {', '.join(ids)}",
            )
        self.forget_index = ids.index(forget)

    def write_data(self) -> None:
        self.specs = layout.write_site_shards(self.ds, self.part, self.sites_dir, self.cfg.seed)
        self.forgotten = self.specs[self.forget_index]
        self.facts["dataset"] = {
            "name": self.ds.name,
            "classes": list(self.ds.class_names),
            "image_shape": list(self.ds.image_shape),
            "train": int(self.ds.train_y.numel()),
            "test": int(self.ds.test_y.numel()),
        }
        for s in self.specs:
            self.facts["sites"][s.site_id] = {
                "classes": s.classes,
                "n_train": s.n_train,
                "n_test": s.n_test,
            }
        self.ui.note(
            f"{self.ds.name}: {len(self.specs)} sites, "
            + ", ".join(
                f"{s.site_id}={'+'.join(self.ds.class_names[k] for k in s.classes)}({s.n_train})"
                for s in self.specs
            )
        )

    def setup_pki_and_aggregator(self) -> None:
        c = self.cfg
        self.port = c.port or free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        # A throwaway federation on one machine: its keys are unencrypted on purpose (docs/pki.md).
        created = self.cli_json(
            "ffsecure",
            "pki",
            "init",
            "--federation-id",
            FEDERATION_ID,
            "--ca-dir",
            self.ca_dir,
            "--no-passphrase",
        )
        # the CA operator reads this to every participant out of band; they pin it at install-kit
        self.ca_fingerprint = created["fingerprint"]
        self.cli_json(
            "aggregator",
            "init",
            "--dir",
            self.agg_dir,
            "--federation-id",
            FEDERATION_ID,
            "--host",
            "localhost",
        )
        # The aggregator operator sends public-keys.json and aggregator.csr to the CA operator.
        shutil.copy(self.agg_dir / "public-keys.json", self.ca_dir / "public-keys.json")
        shutil.copy(self.agg_dir / "aggregator.csr", self.ca_dir / "aggregator.csr")
        fed_toml = self.ca_dir / "federation.toml"
        fed_toml.write_text(
            layout.federation_toml(
                federation_id=FEDERATION_ID,
                label_space=list(self.ds.class_names),
                image_shape=self.ds.image_shape,
                generator=c.generator,
                generator_size=c.generator_size,
                endpoint=self.endpoint,
                public_keys="public-keys.json",
                dp_epsilon=c.dp_epsilon,
                dp_mechanism=c.dp_mechanism,
            )
        )
        self.federation = self.ca_dir / "federation.json"
        self.cli_json(
            "ffsecure",
            "federation",
            "create",
            "--config",
            fed_toml,
            "--ca-dir",
            self.ca_dir,
            "--out",
            self.federation,
        )
        agg_kit = self.ca_dir / "aggregator.kit"
        self.cli_json(
            "ffsecure",
            "pki",
            "kit",
            "--aggregator",
            "--csr",
            self.ca_dir / "aggregator.csr",
            "--ca-dir",
            self.ca_dir,
            "--federation",
            self.federation,
            "--out",
            agg_kit,
        )
        self.cli_json(
            "aggregator",
            "install-kit",
            agg_kit,
            "--dir",
            self.agg_dir,
            "--expect-ca-fingerprint",
            self.ca_fingerprint,
            "--listen",
            self.endpoint,
        )
        with open(self.agg_dir / "aggregator.toml", "a", encoding="utf-8") as fh:
            fh.write(METRICS_TOML)
            fh.write(
                layout.evaluation_toml(
                    _resolved(c.dataset, "dataset"),
                    root=c.data_root if c.dataset != "digits" else None,
                    seed=c.seed,
                )
            )

    def start_serve(self) -> None:
        port_file = self.agg_dir / "serve.port"
        port_file.unlink(missing_ok=True)
        serve, serve_log = self.supervisor.popen(
            "aggregator",
            ["serve", "--dir", self.agg_dir],
            name="aggregator-serve",
        )
        self.serve, self.serve_log = serve, serve_log
        deadline = time.monotonic() + 120
        while not port_file.exists():
            if serve.poll() is not None:
                raise DemoError(
                    f"aggregator serve exited with status {serve.returncode}",
                    hint=f"see {serve_log}",
                )
            if time.monotonic() > deadline:
                raise DemoError(
                    "aggregator serve did not listen within 120 s",
                    code="E_DEMO_TIMEOUT",
                    hint=f"see {serve_log}",
                )
            time.sleep(0.1)
        self.ui.note(f"aggregator serve (pid {serve.pid}) listens on {self.endpoint}, mTLS")

    def stop_serve(self) -> None:
        if self.serve is not None and self.sup is not None:
            self.sup.stop(self.serve)
            self.serve = None

    def enroll_site(self, s: layout.SiteSpec) -> None:
        c = self.cfg
        cfg = self.site_cfg(s.site_id)
        cfg.write_text(
            layout.site_toml(
                federation_id=FEDERATION_ID,
                site_id=s.site_id,
                endpoint=self.endpoint,
                data_path=s.data_path,
                epochs=_resolved(c.epochs, "epochs"),
                size=c.generator_size,
                seed=c.seed * 1000 + s.index,
                dp_epsilon=c.dp_epsilon,
                textfile_dir=self.textfile_dir(s.site_id),
            )
        )
        self.textfile_dir(s.site_id).mkdir(exist_ok=True)
        out = self.cli_json(
            "site_node", "enroll", "--config", cfg, "--no-passphrase", name=f"{s.site_id}-enroll"
        )
        kit = self.sites_dir / s.site_id / f"site-{s.site_id}.kit"
        self.cli_json(
            "ffsecure",
            "pki",
            "kit",
            "--site-id",
            s.site_id,
            "--csr",
            out["csr"],
            "--ca-dir",
            self.ca_dir,
            "--federation",
            self.federation,
            "--out",
            kit,
            name=f"{s.site_id}-kit",
        )
        self.cli_json(
            "site_node",
            "install-kit",
            kit,
            "--config",
            cfg,
            "--expect-ca-fingerprint",
            self.ca_fingerprint,
            name=f"{s.site_id}-install-kit",
        )
        self.ui.tick("enroll", s.site_id)

    def train_upload_site(self, s: layout.SiteSpec) -> None:
        cfg = self.site_cfg(s.site_id)
        t0 = time.perf_counter()
        trained = self.cli_json("site_node", "train", "--config", cfg, name=f"{s.site_id}-train")
        t1 = time.perf_counter()
        up = self.cli_json("site_node", "upload", "--config", cfg, name=f"{s.site_id}-upload")
        t2 = time.perf_counter()
        uploaded = up["uploaded"]
        if len(uploaded) != 1 or not uploaded[0].get("receipt_verified"):
            raise DemoError(
                f"{s.site_id}: the upload did not end with a verified receipt",
                code="E_DEMO_RECEIPT",
                hint=f"see {self.work / 'logs'}",
            )
        rec = uploaded[0]
        facts = self.facts["sites"][s.site_id]
        facts.update(
            module_id=trained["module_id"],
            train_s=round(t1 - t0, 2),
            upload_s=round(t2 - t1, 2),
            bytes_sent=_bytes_sent(rec),
            ledger_index=rec.get("index", rec.get("ledger_index")),
            epsilon=trained.get("epsilon"),
            dp_mechanism=trained.get("dp_mechanism"),
        )
        self.ui.tick("sites", s.site_id)

    def textfile_dir(self, sid: str) -> Path:
        return self.sites_dir / sid / "textfile"

    def monitoring(self) -> None:
        """Each site runs one `site-node run --once` cycle (nothing is due: it writes its
        node-exporter textfile); then one scrape of serve's metrics goes to WORKDIR/metrics.txt."""
        parallel(
            [
                functools.partial(
                    self.cli,
                    "site_node",
                    "run",
                    "--config",
                    self.site_cfg(s.site_id),
                    "--once",
                    name=f"{s.site_id}-run-once",
                )
                for s in self.specs
            ],
            workers=self.cfg.parallel,
            on_error=self.supervisor.stop_all,
        )
        port = int((self.agg_dir / "metrics.port").read_text())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            scrape = resp.read().decode()
        (self.work / "metrics.txt").write_text(scrape)
        first = self.specs[0].site_id
        self.ui.note(
            f"metrics scraped from http://127.0.0.1:{port}/metrics into "
            f"{self.work / 'metrics.txt'}; site textfiles in "
            f"{self.textfile_dir(first) / 'ffsecure_site.prom'} and its peers"
        )

    def aggregate(self) -> None:
        c = self.cfg
        syn = self.cli_json(
            "aggregator",
            "synthesize",
            "--dir",
            self.agg_dir,
            "--per-class",
            c.samples_per_class,
            "--seed",
            c.seed,
            "--no-progress",
        )
        self.dataset_id = syn["dataset_id"]
        clf = self.cli_json(
            "aggregator",
            "train",
            "--dir",
            self.agg_dir,
            "--dataset",
            self.dataset_id,
            "--classifier",
            "cnn",
            "--epochs",
            c.classifier_epochs,
            "--width",
            c.classifier_width,
            "--min-steps",
            c.classifier_min_steps,
            "--seed",
            c.seed,
            "--threads",
            1,
            "--no-progress",
        )
        self.classifier_id = clf["classifier_id"]
        self.cli_json("aggregator", "publish", "--dir", self.agg_dir, self.classifier_id)
        self.facts["before"] = {
            "dataset_id": self.dataset_id,
            "classifier_id": self.classifier_id,
            "modules": clf["modules"],
            "metrics": clf.get("metrics"),
        }
        self.facts["accuracy"]["before"]["federatedfactory"] = _metric(clf.get("metrics"))
        samples = self.agg_dir / "runs" / f"{self.dataset_id}-samples.png"
        if samples.is_file():
            shutil.copy(samples, self.work / "samples.png")

    def evaluate_sites(self, when: str) -> None:
        def one(s: layout.SiteSpec) -> tuple[str, Any]:
            out = self.cli_json(
                "site_node",
                "evaluate",
                "--config",
                self.site_cfg(s.site_id),
                name=f"{s.site_id}-evaluate-{when}",
            )
            self.ui.tick(f"evaluate {when}", s.site_id)
            return s.site_id, out

        results = parallel(
            [functools.partial(one, s) for s in self.specs],
            workers=self.cfg.parallel,
            on_error=self.supervisor.stop_all,
        )
        self.facts["site_evaluation"][when] = {sid: _site_metrics(out) for sid, out in results}

    def baselines(self, when: str, exclude: int | None) -> None:
        c, ds = self.cfg, self.ds
        k = ds.num_classes
        part = self.part
        if exclude is not None:
            keep = [i for i in range(part.num_sites) if i != exclude]
            part = Partition(
                part.scheme,
                part.seed,
                part.num_classes,
                [part.indices[i] for i in keep],
                dict(part.params),
            )
        idx = torch.as_tensor(sorted(int(i) for ix in part.indices for i in ix), dtype=torch.int64)
        clf_config = classifier.model_config(
            "cnn", image_shape=ds.image_shape, num_classes=k, width=c.classifier_width
        )
        settings = classifier.TrainConfig(
            epochs=c.classifier_epochs, min_steps=c.classifier_min_steps, seed=c.seed, device="cpu"
        )
        cen = centralized(clf_config, ds.train_x[idx], ds.train_y[idx], settings)
        self.facts["accuracy"][when]["centralized"] = _metric(
            classifier.evaluate(cen.model, ds.test_x, ds.test_y, k).to_dict()
        )
        fa = fedavg(
            clf_config,
            ds.train_x,
            ds.train_y,
            part,
            FedAvgConfig(
                rounds=c.fedavg_rounds,
                local_epochs=c.fedavg_local_epochs,
                seed=c.seed,
                device="cpu",
            ),
        )
        self.facts["accuracy"][when]["fedavg"] = _metric(
            classifier.evaluate(fa.model, ds.test_x, ds.test_y, k).to_dict()
        )

    def forget(self) -> None:
        s = self.forgotten
        mid = self.facts["sites"][s.site_id]["module_id"]
        out = self.cli_json(
            "site_node",
            "forget",
            "--config",
            self.site_cfg(s.site_id),
            "--module",
            mid,
            "--reason",
            DELETION_REASON,
            "--yes",
            name=f"{s.site_id}-forget",
        )
        if not out.get("verified"):
            raise DemoError(
                f"{s.site_id}: the deletion entries did not verify",
                code="E_DEMO_DELETION",
                hint=f"see {self.work / 'logs'}",
            )
        # serve retrains in its background worker; wait until the replacement is published.
        deadline = time.monotonic() + 900
        while True:
            status = self.cli_json(
                "aggregator", "status", "--dir", self.agg_dir, name="aggregator-status"
            )
            cur = status.get("current_classifier")
            if (
                cur
                and not status["pending_retrains"]
                and cur["classifier_id"] != self.classifier_id
                and mid not in cur["modules"]
            ):
                break
            if self.serve is not None and self.serve.poll() is not None:
                raise DemoError(
                    "aggregator serve stopped while retraining", hint=f"see {self.serve_log}"
                )
            if time.monotonic() > deadline:
                raise DemoError(
                    "the retrained classifier did not appear within 900 s",
                    code="E_DEMO_TIMEOUT",
                    hint="run `aggregator retrain --dir WORKDIR/aggregator`",
                )
            time.sleep(2.0)
        self.facts["deletion"] = {
            "site_id": s.site_id,
            "module_id": mid,
            "reason": DELETION_REASON,
            "entries": [e.get("type") for e in out.get("entries", [])],
        }
        self.facts["after"] = {
            "dataset_id": cur["dataset_id"],
            "classifier_id": cur["classifier_id"],
            "modules": cur["modules"],
            "metrics": cur["metrics"],
            "replaces": cur.get("replaces"),
        }
        self.facts["accuracy"]["after"]["federatedfactory"] = _metric(cur["metrics"])
        self.facts["status_after"] = {
            "modules": status["modules"],
            "classes_uncovered": status["classes_uncovered"],
            "ledger_size": status["ledger"]["size"],
        }

    def audit(self) -> None:
        bundle = self.work / "audit-bundle"
        self.cli_json("aggregator", "ledger", "export", "--dir", self.agg_dir, "--out", bundle)
        ca = self.ca_dir / "ca.pem"
        receipts: list[Any] = []
        for s in self.specs:  # what each site hands the auditor: `site-node receipts export`
            exported = self.cli_json(
                "site_node",
                "receipts",
                "export",
                "--config",
                self.site_cfg(s.site_id),
                "--out",
                self.work / "receipts" / s.site_id,
                name=f"{s.site_id}-receipts",
            )
            for path in exported["trusted_checkpoints"]:
                receipts += ["--trusted-checkpoint", path]
        res = self.supervisor.run(
            "ffsecure",
            "audit",
            "verify",
            bundle,
            "--ca",
            ca,
            *receipts,
            "--json",
            name="audit-verify",
            check=False,
        )
        if res.returncode not in (0, 3):
            raise DemoError(
                f"ffsecure audit verify exited with status {res.returncode}", hint=f"see {res.log}"
            )
        verdict = res.json()
        self.facts["audit"] = {
            "exit_status": res.returncode,
            "verdict": verdict.get("verdict"),
            "ok": res.returncode == 0,
            "checks": verdict.get("checks"),
            "findings": verdict.get("findings", []),
            "trusted_checkpoints": len(receipts) // 2,
        }
        self.supervisor.run(
            "ffsecure",
            "audit",
            "report",
            bundle,
            "--ca",
            ca,
            *receipts,
            "-o",
            self.work / "report.html",
            name="audit-report",
        )

    def pictures(self) -> None:
        accuracy_chart(
            self.work / "accuracy.png",
            self.facts["accuracy"],
            title=f"{self.ds.name}: accuracy before and after "
            f"{self.forgotten.site_id} is forgotten",
        )


def _metric(m: dict | None) -> dict | None:
    if not m:
        return None
    return {"accuracy": m.get("accuracy"), "auroc": m.get("auroc")}


def _site_metrics(out: dict) -> dict:
    m = out.get("metrics") or {}
    return {
        "classifier_id": out.get("classifier_id"),
        "accuracy": m.get("accuracy"),
        "auroc": m.get("auroc"),
        "n_test": out.get("n_test"),
        "module_ids": out.get("module_ids"),
    }


def _bytes_sent(rec: dict) -> int | None:
    """The bytes the site streamed for its module (the sealed envelope), as
    `site-node upload` reports them."""
    sent = rec.get("bytes_sent")
    return sent if isinstance(sent, int) else None
