"""Utility benchmark: FederatedFactory against a centralized upper bound and FedAvg.

For each data set available offline (the MedMNIST files in the shared data
root, and scikit-learn's digits), each split (pathological one class per
site, Dirichlet alpha 0.1 and 0.5) and each generator family, it runs
``ffsecure.simulate.run_simulation`` with the library's defaults (only the
data set, split, family, seed, thread count and device are set here) and
records accuracy and macro AUROC on the real test set for

- ``centralized``: the same classifier trained on all real training data,
- ``fedavg``: FedAvg over the same split,
- ``federatedfactory``: the classifier trained on the synthetic data of the
  sites' generators alone,

and the FederatedFactory / centralized accuracy ratio. The centralized and
FedAvg figures of a (data set, split) come from the first family's run and
are shared with the other family's row (they do not depend on the generator).

Plans (``--plan``):

- ``cpu`` (default): the whole grid on a CPU: ``cvae`` at its default size
  and ``ddpm`` at its ``tiny`` size, every data set, every split (the
  pathological split of every data set first). ``ddpm`` at its default size
  is listed as not run, with the reason.
- ``full``: the whole grid (``ddpm`` at its ``default`` size: meant for a GPU).
- ``quick``: digits only, tiny settings (seconds): for tests and CI; its
  numbers say nothing about utility.

Writes ``<out>/results/utility.json`` and ``utility.md``.

    python -m benchmarks.utility [--plan cpu|full|quick] [--datasets digits,breastmnist] [--device
    cpu]
"""

from __future__ import annotations

import argparse
import ast
import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import common
from ffsecure.timefmt import now_rfc3339

log = logging.getLogger(__name__)

MEDMNIST = ("breastmnist", "pneumoniamnist", "retinamnist")
SPLITS = (("pathological", None), ("dirichlet", 0.1), ("dirichlet", 0.5))
FAMILIES = ("cvae", "ddpm")

# Settings that make a run take seconds: for tests only.
QUICK = {
    "generator_size": "tiny",
    "epochs": 1,
    "samples_per_class": 8,
    "classifier_epochs": 1,
    "fedavg_rounds": 1,
}

# Published figures set beside ours. FederatedFactory: accuracy (%) reported by the
# paper; MedMNIST v2 (Yang et al., Scientific Data 10:41, 2023, Table 3): the official
# ResNet-18 (28) test accuracy and AUC, a sanity check of our centralized column.
PAPER = {
    "federatedfactory": [
        {
            "setting": "MedMNIST, one-shot, label-skewed sites",
            "method": "FederatedFactory",
            "accuracy": 0.889,
            "shown": "88.9%",
        },
        {
            "setting": "MedMNIST, centralized reference",
            "method": "centralized",
            "accuracy": 0.901,
            "shown": "90.1%",
        },
        {
            "setting": "CIFAR-10, 100 one-class clients",
            "method": "FedAvg",
            "accuracy": 0.1136,
            "shown": "11.36%",
        },
    ],
    "medmnist_v2_resnet18_28": {
        "breastmnist": {"accuracy": 0.863, "auroc": 0.901},
        "pneumoniamnist": {"accuracy": 0.854, "auroc": 0.944},
        "retinamnist": {"accuracy": 0.524, "auroc": 0.717},
    },
}


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: a data set, a split and a generator family."""

    dataset: str
    partition: str
    alpha: float | None
    generator: str
    generator_size: str = "default"

    @property
    def split(self) -> str:
        return "pathological" if self.partition == "pathological" else f"dirichlet {self.alpha}"

    @property
    def group(self) -> tuple[str, str, float | None]:
        return (self.dataset, self.partition, self.alpha)


def available_datasets(data_root: str | None = None) -> list[str]:
    """digits plus every MedMNIST file found in the data root (nothing is downloaded)."""
    # heavy: torch, only when this part runs (results render without it)
    from ffsecure import data

    root = Path(data_root) if data_root else data.default_root()
    found = [name for name in MEDMNIST if (Path(root) / f"{name}.npz").is_file()]
    return ["digits", *found]


def plan_cells(plan: str, datasets: list[str]) -> tuple[list[Cell], list[tuple[Cell, str]]]:
    """(cells to run, [(cell, reason)] not run) for a plan over the given data sets."""
    full = [Cell(d, p, a, g, "default") for d in datasets for (p, a) in SPLITS for g in FAMILIES]
    if plan == "full":
        return full, []
    if plan == "quick":
        run = [
            Cell("digits", "pathological", None, "cvae", "tiny"),
            Cell("digits", "pathological", None, "ddpm", "tiny"),
        ]
        return run, []
    if plan != "cpu":
        raise ValueError(f"unknown plan {plan!r}")
    # most important first: a run stopped by its time budget keeps the headline rows
    size = {"cvae": "default", "ddpm": "tiny"}
    run = [Cell(d, "pathological", None, g, size[g]) for d in datasets for g in FAMILIES]
    run += [Cell(d, p, a, g, size[g]) for d in datasets for (p, a) in SPLITS[1:] for g in FAMILIES]
    skipped = [
        (
            Cell(d, p, a, "ddpm", "default"),
            "ddpm at its default size needs a GPU (not measured: no GPU in this run; the tiny "
            "size is)",
        )
        for d in datasets
        for (p, a) in SPLITS
    ]
    return run, skipped


def shard_cells(cells: list[Cell], shard: tuple[int, int]) -> list[Cell]:
    """Cells of shard ``(i, n)``: groups (data set, split) ``i, i+n, ...`` in plan order.

    A group's cells stay in one process, so its centralized and FedAvg baselines are
    measured once and shared by both generator families.
    """
    groups: list[tuple] = []
    for c in cells:
        if c.group not in groups:
            groups.append(c.group)
    mine = set(groups[shard[0] :: shard[1]])
    return [c for c in cells if c.group in mine]


def run_cell(
    cell: Cell, *, baselines: bool, quick: bool, threads: int, device: str, seed: int
) -> dict[str, Any]:
    """One simulation; returns the row (metrics, ratio, settings, timings)."""
    # heavy: torch, only when this part runs (results render without it)
    from ffsecure.simulate import SimulationConfig, run_simulation

    overrides: dict[str, Any] = dict(QUICK) if quick else {}
    overrides["generator_size"] = cell.generator_size
    with tempfile.TemporaryDirectory(prefix="ffbench-utility-") as tmp:
        cfg = SimulationConfig(
            dataset=cell.dataset,
            partition=cell.partition,
            alpha=cell.alpha if cell.alpha is not None else SimulationConfig.alpha,
            generator=cell.generator,
            seed=seed,
            threads=threads,
            device=device,
            out=tmp,
            baselines=baselines,
            plots=False,
            **overrides,
        )
        t0 = time.perf_counter()
        res = run_simulation(cfg)
        wall = time.perf_counter() - t0
    row: dict[str, Any] = {
        "dataset": cell.dataset,
        "partition": cell.partition,
        "alpha": cell.alpha,
        "split": cell.split,
        "generator": cell.generator,
        "generator_size": cell.generator_size,
        "status": "measured",
        "date": now_rfc3339(),
        "device": res["settings"]["device"],
        "sites": res["settings"]["sites"],
        "settings": {k: v for k, v in res["settings"].items() if k not in ("out",)},
        "timings": res["timings"],
        "wall_s": round(wall, 1),
        "site_generator_s": [s["wall_s"] for s in res["sites"]],
        "federatedfactory": _metrics(res["federatedfactory"]),
    }
    if baselines:
        row["centralized"] = _metrics(res["centralized"])
        row["fedavg"] = _metrics(res["fedavg"])
    return row


def _metrics(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "accuracy": r["accuracy"],
        "auroc": r["auroc"],
        "per_class_recall": r.get("per_class_recall"),
        "train_s": r.get("train_s"),
    }


def run(
    plan: str = "cpu",
    *,
    datasets: list[str] | None = None,
    out: Path = common.DEFAULT_OUT,
    threads: int = 1,
    device: str = "cpu",
    seed: int = 0,
    budget_min: float | None = None,
    shard: tuple[int, int] | None = None,
    families: list[str] | None = None,
    progress=print,
) -> dict[str, Any]:
    """Run the plan's cells in order; with ``budget_min``, cells not started in time are listed as
    not run.

    ``shard=(i, n)`` runs only the (data set, split) groups ``i, i+n, i+2n, ...`` of the plan
    (several processes on one machine; combine their ``--out`` directories with :func:`merge`).
    ``families`` keeps only those generator families' cells; the others are listed as not run.
    """
    # heavy: torch, only when this part runs (results render without it)
    import torch

    torch.set_num_threads(threads)
    datasets = datasets or available_datasets()
    cells, skipped = plan_cells(plan, datasets)
    if shard is not None:
        cells, skipped = shard_cells(cells, shard), []
    if families is not None:
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown:
            raise ValueError(
                f"unknown generator famil{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(unknown)}; choose from {', '.join(FAMILIES)}"
            )
        skipped += [
            (c, f"not in this run's families ({', '.join(families)})")
            for c in cells
            if c.generator not in families
        ]
        cells = [c for c in cells if c.generator in families]
    quick = plan == "quick"
    deadline = time.monotonic() + budget_min * 60 if budget_min else None
    md = common.meta(
        "utility",
        {
            "plan": plan,
            "datasets": datasets,
            "threads": threads,
            "seed": seed,
            "budget_min": budget_min,
            "shard": list(shard) if shard else None,
            "families": families,
            "overrides": QUICK if quick else "none (ffsecure.simulate defaults)",
        },
        device=device,
        quick=quick,
    )
    rows: list[dict[str, Any]] = []
    baseline_of: dict[tuple, dict[str, Any]] = {}
    result = {"meta": md, "rows": rows, "paper": PAPER}
    for i, cell in enumerate(cells):
        if deadline is not None and time.monotonic() > deadline:
            skipped = [
                (c, f"time budget of {budget_min:g} min spent before this cell started")
                for c in cells[i:]
            ] + skipped
            break
        progress(
            f"[utility {i + 1}/{len(cells)}] {cell.dataset} {cell.split} {cell.generator} "
            f"({cell.generator_size})"
        )
        base = baseline_of.get(cell.group)
        row = run_cell(
            cell, baselines=base is None, quick=quick, threads=threads, device=device, seed=seed
        )
        row["git"] = md["git"]  # the code this process loaded at its start
        if base is None:
            baseline_of[cell.group] = row
            row["baselines_from"] = "this run"
        else:
            row["centralized"], row["fedavg"] = base["centralized"], base["fedavg"]
            row["baselines_from"] = (
                f"{base['generator']} run of the same data set and split (same seed)"
            )
        cen = row["centralized"]["accuracy"]
        row["ratio_vs_centralized"] = (
            round(row["federatedfactory"]["accuracy"] / cen, 4) if cen else None
        )
        rows.append(row)
        progress(
            f"    FF {row['federatedfactory']['accuracy']:.3f} / centralized {cen:.3f} / FedAvg "
            f"{row['fedavg']['accuracy']:.3f}  ratio {row['ratio_vs_centralized']}  "
            f"({row['wall_s']} s)"
        )
        common.write_result(
            out, "utility", result, to_markdown(result)
        )  # keep finished rows if stopped
    for cell, reason in skipped:
        rows.append(
            {
                "dataset": cell.dataset,
                "partition": cell.partition,
                "alpha": cell.alpha,
                "split": cell.split,
                "generator": cell.generator,
                "generator_size": cell.generator_size,
                "status": "not run",
                "reason": reason,
            }
        )
    common.write_result(out, "utility", result, to_markdown(result))
    return result


def merge(shard_dirs: list[Path], out: Path = common.DEFAULT_OUT) -> dict[str, Any]:
    """Combine the results of ``--shard`` runs into one ``utility.json`` in plan order.

    Every cell of the plan that no shard measured is listed as not run, with the reason
    the plan or the shard gave (or that its shard did not reach it).
    """
    parts = [common.read_result(Path(d), "utility") for d in shard_dirs]
    missing = [str(d) for d, p in zip(shard_dirs, parts, strict=True) if p is None]
    if missing:
        raise FileNotFoundError(f"no results/utility.json in {', '.join(missing)}")
    first = parts[-1][
        "meta"
    ]  # the newest part's meta heads the page; the plan covers every part's data sets
    plan = first["settings"]["plan"]
    # a part that is itself a merge names only its newest part's data sets: its rows name the rest
    datasets = [
        d
        for d in ("digits", *MEDMNIST)
        if any(
            d in p["meta"]["settings"]["datasets"] or any(r["dataset"] == d for r in p["rows"])
            for p in parts
        )
    ]
    cells, plan_skipped = plan_cells(plan, datasets)

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["dataset"], r["partition"], r["alpha"], r["generator"], r.get("generator_size"))

    measured, source = {}, {}
    for i, p in enumerate(parts):  # a later part's measurement of a cell replaces an earlier one's
        for r in p["rows"]:
            if r.get("status") == "measured":
                measured[key(r)], source[key(r)] = r, i
    reasons = {
        key(r): r["reason"] for p in parts for r in p["rows"] if r.get("status") != "measured"
    }
    rows: list[dict[str, Any]] = []
    not_run = []
    used: set[int] = set()
    for c in cells:
        k = (c.dataset, c.partition, c.alpha, c.generator, c.generator_size)
        if k in measured:
            rows.append(measured[k])
            used.add(source[k])
        else:
            not_run.append(
                (
                    c,
                    reasons.get(
                        k,
                        "no finished measurement: its process was stopped at the end of "
                        "this run's time budget (2-core CPU shared with other work)",
                    ),
                )
            )
    for c, reason in not_run + plan_skipped:
        rows.append(
            {
                "dataset": c.dataset,
                "partition": c.partition,
                "alpha": c.alpha,
                "split": c.split,
                "generator": c.generator,
                "generator_size": c.generator_size,
                "status": "not run",
                "reason": reason,
            }
        )
    md = dict(first)
    md["settings"] = {
        **first["settings"],
        "shard": None,
        "datasets": datasets,
        "merged_from": [p["meta"]["settings"]["shard"] for p in parts],
    }
    # a part that is itself a merge contributes its own processes, not one; a part whose
    # every measured cell a later part measured again contributes none
    superseded = {
        i
        for i, p in enumerate(parts)
        if i not in used and any(r.get("status") == "measured" for r in p["rows"])
    }
    md["shards"] = [
        sh
        for i, p in enumerate(parts)
        if i not in superseded
        for sh in (
            p["meta"].get("shards")
            or [
                {
                    "date": p["meta"]["date"],
                    "git": p["meta"]["git"],
                    "machine": p["meta"]["machine"],
                    "shard": p["meta"]["settings"]["shard"],
                }
            ]
        )
    ]
    result = {"meta": md, "rows": rows, "paper": PAPER}
    common.write_result(out, "utility", result, to_markdown(result))
    return result


def _cell(row: dict[str, Any] | None, key: str = "federatedfactory") -> str:
    if row is None or row.get("status") != "measured":
        return "not run"
    m = row[key]
    return f"{common.f3(m['accuracy'])} / {common.f3(m['auroc'])}"


def _commit(row: dict[str, Any]) -> str:
    return ((row.get("git") or {}).get("commit") or "?")[:10]


def latest_commit(result: dict[str, Any]) -> str | None:
    """The commit of the most recently finished measured row."""
    measured = [r for r in result["rows"] if r.get("status") == "measured"]
    return _commit(max(measured, key=lambda r: r.get("date") or "")) if measured else None


PIPELINE = (
    "ffsecure/simulate.py",
    "ffsecure/generators",
    "ffsecure/classifier.py",
    "ffsecure/baselines.py",
    "ffsecure/synthesis.py",
    "ffsecure/partition.py",
    "ffsecure/data.py",
)


# Commits that changed PIPELINE code without changing what it computes, each with how
# that was checked. Only a change whose equivalence was shown belongs here.
REFACTORS = {
    "e53fe84bdc7b0c33a77e44226465a486b72aa1e0": (
        "site_train_seed(seed, site) names the expression seed * 1000 + site it replaced"
    ),
    "eaf9aad7d630068a88e437a447ba2cfd8d42d135": (
        "train_site_generator holds simulate's per-site fit; same generator weights (SHA-256) "
        "and accuracy before and after for cvae and ddpm, pathological and Dirichlet "
        "(BreastMNIST, seed 3)"
    ),
    "fd14f80293dfe763cf11f306a8d55fdeede09ae5": (
        "the synthesis recipe records the host kind and a mismatch names it; same synthetic "
        "dataset hash, classifier SHA-256 and accuracy before and after for cvae and ddpm, "
        "pathological and Dirichlet (digits, tiny, seed 3)"
    ),
}


def code_of(source: str) -> str | None:
    """A Python module's code with docstrings, comments and layout left out (None: it does not
    parse)."""

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _git(*args: str) -> str | None:

    proc = subprocess.run(
        ["git", *args], cwd=common.REPO, capture_output=True, text=True, timeout=30
    )
    return proc.stdout if proc.returncode == 0 else None


# Code a figure does not run: a cvae cell runs no ddpm code and the reverse; the
# centralized and FedAvg baselines (explicitly seeded) run no generator or synthesis code.
NOT_RUN_BY = {
    "cvae": ("ffsecure/generators/ddpm.py",),
    "ddpm": ("ffsecure/generators/cvae.py",),
    "baselines": ("ffsecure/generators/", "ffsecure/synthesis.py"),
}


def _changes_code(commit: str, ignore: tuple[str, ...] = ()) -> bool:
    """Whether ``commit`` changed PIPELINE code beyond docstrings and comments (True when unknown).

    Paths starting with one of ``ignore`` do not count.
    """
    names = _git(
        "diff-tree", "--no-commit-id", "--name-only", "-r", f"{commit}^", commit, "--", *PIPELINE
    )
    if names is None:
        return True
    for path in names.split():
        if path.startswith(ignore):
            continue
        before, after = _git("show", f"{commit}^:{path}"), _git("show", f"{commit}:{path}")
        if before is None or after is None or not path.endswith(".py"):
            return True  # added, removed, or not Python
        old, new = code_of(before), code_of(after)
        if old is None or old != new:
            return True
    return False


def pipeline_changed(a: str | None, b: str | None, figure: str | None = None) -> bool:
    """Whether the simulation code computes differently at two commits (True when unknown).

    Every commit between them that touched PIPELINE counts, except those that changed
    only docstrings and comments, those listed in :data:`REFACTORS`, and, for a
    ``figure`` ("cvae", "ddpm" or "baselines"), those that changed only code it does
    not run (:data:`NOT_RUN_BY`).
    """
    if not a or not b or "?" in (a, b):
        return True
    if a == b:
        return False
    commits = _git("rev-list", f"{a}...{b}", "--", *PIPELINE)
    if commits is None:
        return True
    ignore = NOT_RUN_BY.get(figure or "", ())
    return any(c not in REFACTORS and _changes_code(c, ignore) for c in commits.split())


def main_table(result: dict[str, Any]) -> str:
    """The paper-shaped table: one line per (data set, split), one column per method."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in result["rows"]:
        by_gen = groups.setdefault((r["dataset"], r["split"]), {})
        if (
            by_gen.get(r["generator"], {}).get("status") != "measured"
        ):  # a measured size wins over a skipped one
            by_gen[r["generator"]] = r
    lines = []
    latest = latest_commit(result)
    for (ds, split), by_gen in groups.items():
        measured = [r for r in by_gen.values() if r.get("status") == "measured"]
        ref = measured[0] if measured else None
        cv, dd = by_gen.get("cvae"), by_gen.get("ddpm")

        def ratio(r):
            return (
                common.f3(r["ratio_vs_centralized"]) if r and r.get("status") == "measured" else "—"
            )

        def stale(r, figure):
            return " †" if r and pipeline_changed(_commit(r), latest, figure) else ""

        def fam(r):
            if r is None or r.get("status") != "measured":
                return "not run"
            size = "" if r["generator_size"] == "default" else f" ({r['generator_size']})"
            return _cell(r) + size + stale(r, r["generator"])

        lines.append(
            [
                ds + stale(ref, "baselines"),
                split,
                ref["sites"] if ref else "—",
                _cell(ref, "centralized"),
                _cell(ref, "fedavg"),
                fam(cv),
                ratio(cv),
                fam(dd),
                ratio(dd),
            ]
        )
    return common.table(
        [
            "data set",
            "split",
            "sites",
            "centralized acc / AUROC",
            "FedAvg acc / AUROC",
            "FF cvae acc / AUROC",
            "FF cvae / centralized",
            "FF ddpm acc / AUROC",
            "FF ddpm / centralized",
        ],
        lines,
        "llrlllrlr",
    )


def reference_tables(result: dict[str, Any]) -> str:
    paper = result["paper"]
    ff = common.table(
        ["setting", "method", "accuracy (paper)"],
        [
            [p["setting"], p["method"], p.get("shown") or common.f3(p["accuracy"])]
            for p in paper["federatedfactory"]
        ],
        "llr",
    )
    ours = {
        r["dataset"]: r["centralized"]
        for r in result["rows"]
        if r.get("status") == "measured" and r["partition"] == "pathological" and "centralized" in r
    }
    rows = []
    for ds, v in paper["medmnist_v2_resnet18_28"].items():
        o = ours.get(ds)
        rows.append(
            [
                ds,
                common.f3(v["accuracy"]),
                common.f3(v["auroc"]),
                common.f3(o["accuracy"]) if o else "not run",
                common.f3(o["auroc"]) if o else "not run",
            ]
        )
    mm = common.table(
        ["data set", "MedMNIST v2 ResNet-18 (28) acc", "AUC", "our centralized acc", "AUROC"],
        rows,
        "lrrrr",
    )
    return (
        "Published figures (FederatedFactory paper):\n\n"
        + ff
        + "\n\nCentralized sanity check against the official MedMNIST v2 benchmark (Yang et al., "
        "*MedMNIST v2*, Scientific Data 10:41, 2023, Table 3: ResNet-18 at 28x28, test set). "
        "Our centralized model is the project's small CNN with the simulate defaults, not "
        "ResNet-18:\n\n" + mm
    )


def to_markdown(result: dict[str, Any]) -> str:
    md = result["meta"]
    measured = [r for r in result["rows"] if r.get("status") == "measured"]
    not_run = [r for r in result["rows"] if r.get("status") != "measured"]
    s = max(measured, key=lambda r: r.get("date") or "")["settings"] if measured else {}
    lines = [
        "# Utility: FederatedFactory vs centralized and FedAvg",
        "",
        "Settings below are those of the most recent row.",
        "",
        common.meta_line(md),
        *(
            [
                f"Measured in {len(md['shards'])} processes on this machine, two or more at a time "
                f"(shards of the plan, started {', '.join(sh['date'] for sh in md['shards'])}); "
                "wall times include the contention."
            ]
            if md.get("shards")
            else []
        ),
        f"Plan `{md['settings']['plan']}`; `ffsecure.simulate` settings: "
        f"{md['settings']['overrides']}; seed {md['settings']['seed']}.",
    ]
    if s:
        lines.append(
            f"Classifier `{s.get('classifier')}` (width {s.get('classifier_width')}, "
            f"{s.get('classifier_epochs')} epochs), {s.get('samples_per_class')} synthetic images "
            f"per class, FedAvg {s.get('fedavg_rounds')} rounds x {s.get('fedavg_local_epochs')} "
            "local epoch(s), generator epochs from the image-epoch budget unless set "
            f"(`epochs`={s.get('epochs')})."
        )
    lines += [
        "",
        "Each cell: test accuracy / macro AUROC (binary: AUROC of the positive class).",
        "",
        main_table(result),
        "",
        reference_tables(result),
        "",
    ]
    if measured:
        commits = {((r.get("git") or {}).get("commit") or "?")[:10] for r in measured}
        if len(commits) > 1:
            lines += [
                f"**The rows ran at {len(commits)} different commits** (last column). Cells marked "
                f"† in the main table ran simulation code ({', '.join(PIPELINE)}) that computes "
                f"differently from that of `{latest_commit(result)}` (a commit between them "
                "changed more than docstrings and comments and is not a refactor shown to give "
                "the same results, `REFACTORS` in benchmarks/utility.py; for example other "
                "`ffsecure.simulate` defaults): they are not comparable with the unmarked cells. "
                "A † on the data set marks the centralized and FedAvg cells of its line.",
                "",
            ]
        lines += [
            "Wall time per run (generators + synthesis + classifier + baselines when run):",
            "",
            common.table(
                [
                    "data set",
                    "split",
                    "generator",
                    "sites",
                    "generator s (sum)",
                    "synthesis s",
                    "classifier s",
                    "total s",
                    "finished",
                    "commit",
                ],
                [
                    [
                        r["dataset"],
                        r["split"],
                        f"{r['generator']} ({r['generator_size']})",
                        r["sites"],
                        common.f1(r["timings"].get("generators_s")),
                        common.f1(r["timings"].get("synthesis_s")),
                        common.f1(r["timings"].get("classifier_s")),
                        common.f1(r["wall_s"]),
                        r.get("date", "—"),
                        f"`{((r.get('git') or {}).get('commit') or '?')[:10]}`",
                    ]
                    for r in measured
                ],
                "lllrrrrrll",
            ),
            "",
        ]
    if not_run:
        lines += ["Not run in this run (no numbers are given for them):", ""]
        lines += [
            f"- {r['dataset']}, {r['split']}, {r['generator']} "
            f"({r.get('generator_size', 'default')}): {r['reason']}"
            for r in not_run
        ]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", default="cpu", choices=("cpu", "full", "quick"))
    p.add_argument(
        "--datasets",
        default=None,
        help="comma-separated (default: digits + every MedMNIST file found)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--budget-min",
        type=float,
        default=None,
        help="start no new cell after this many minutes (the rest are listed as not run)",
    )
    p.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="run only the (data set, split) groups I, I+N, ... of the plan",
    )
    p.add_argument(
        "--families", default=None, help="comma-separated generator families to run (default: all)"
    )
    p.add_argument(
        "--merge",
        default=None,
        metavar="DIR,DIR,...",
        help="combine the --out directories of --shard runs into --out (runs nothing)",
    )
    p.add_argument("--out", default=str(common.DEFAULT_OUT))
    a = p.parse_args(argv)
    if a.merge:
        return merge([Path(d) for d in a.merge.split(",")], Path(a.out))
    shard = tuple(int(v) for v in a.shard.split("/")) if a.shard else None
    if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
        p.error("--shard must be I/N with 0 <= I < N")
    return run(
        a.plan,
        datasets=a.datasets.split(",") if a.datasets else None,
        out=Path(a.out),
        threads=a.threads,
        device=a.device,
        seed=a.seed,
        budget_min=a.budget_min,
        shard=shard,
        families=a.families.split(",") if a.families else None,
    )


if __name__ == "__main__":
    main()
