"""What every benchmark result carries, and the writers for its JSON and markdown.

Each result file ``benchmarks/results/<name>.json`` holds a ``meta`` block:
the machine (CPU model, cores, load average, torch version, device), the UTC
date, the git commit (and whether the tree had uncommitted changes), the exact
command and the settings. ``<name>.md`` is the same result as a page of
markdown tables. ``RESULTS.md`` is assembled from the JSON files only
(``benchmarks.run_all``), so every number in it can be traced to a run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ffsecure.timefmt import now_rfc3339

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks"
MB = 1_000_000


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# benchmark outputs: a run that follows another finds these rewritten, which says nothing about its
# code
RESULT_PATHS = ("benchmarks/results", "benchmarks/RESULTS.md")


def git_commit(repo: Path = REPO) -> dict[str, Any]:
    """The commit the benchmark ran on and whether tracked files (other than results) differed from
    it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(
            git(
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                *(f":(exclude){p}" for p in RESULT_PATHS),
            )
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def cpu_capability() -> str:
    """The CPU kernel path of this torch build on this host (``AVX512``, ``AVX2``, ...)."""
    # heavy: torch, only when this part runs (results render without it)
    from ffsecure.synthesis import host_facts

    return host_facts()["cpu_capability"]


def machine(device: str = "cpu") -> dict[str, Any]:
    # heavy: torch, only when this part runs (results render without it)
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "cpu_model": cpu_model(),
        # the SIMD kernels torch picked: the same code and seed give slightly different
        # floats (and so accuracies) on hosts where this differs
        "cpu_capability": cpu_capability(),
        "cores": os.cpu_count(),
        "load_average_1m": round(load[0], 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "gpu": torch.cuda.get_device_name(0)
        if device.startswith("cuda") and torch.cuda.is_available()
        else None,
    }


def meta(
    benchmark: str, settings: dict[str, Any], *, device: str = "cpu", quick: bool = False
) -> dict[str, Any]:
    """The ``meta`` block of a result: machine, date, commit, command and settings."""
    return {
        "benchmark": benchmark,
        "date": now_rfc3339(),
        "git": git_commit(),
        "machine": machine(device),
        "command": " ".join([Path(sys.executable).name, *sys.argv])
        if sys.argv and sys.argv[0]
        else None,
        "quick": quick,
        "settings": settings,
    }


def machine_line(m: dict[str, Any]) -> str:
    """One line naming the machine of a ``meta['machine']`` block."""
    dev = m.get("device", "cpu")
    gpu = f" ({m['gpu']})" if m.get("gpu") else ""
    isa = f" ({m['cpu_capability']} kernels)" if m.get("cpu_capability") else ""
    return (
        f"{m.get('cpu_model')}{isa}, {m.get('cores')} cores (load {m.get('load_average_1m')} at "
        f"start), torch {m.get('torch')}, {m.get('torch_threads')} torch thread(s), device "
        f"{dev}{gpu}"
    )


def meta_line(md: dict[str, Any]) -> str:
    """``date, commit, machine`` of a result, for a markdown page."""
    git = md.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + (
        " (uncommitted changes)" if git.get("dirty") else ""
    )
    return f"Run {md.get('date')} at commit `{commit}` on {machine_line(md.get('machine', {}))}."


def write_result(out: Path, name: str, result: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``<out>/results/<name>.json`` and ``.md`` (atomically: temp file then rename)."""
    d = Path(out) / "results"
    d.mkdir(parents=True, exist_ok=True)
    paths = (d / f"{name}.json", d / f"{name}.md")
    for path, text in zip(
        paths,
        (json.dumps(result, indent=2, sort_keys=True, default=_json_default) + "\n", markdown),
        strict=True,
    ):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return paths


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None below two values) of a point's seeds."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def simulate_timed(prefix: str, **settings: Any) -> tuple[dict[str, Any], float]:
    """One ``ffsecure simulate`` run of ``settings`` in a temporary folder, on the CPU with one
    torch thread and no plots or fidelity unless ``settings`` say otherwise; its results
    and wall seconds."""
    # heavy: torch, only when a benchmark runs
    import tempfile
    import time

    from ffsecure.simulate import SimulationConfig, run_simulation

    defaults = {"threads": 1, "device": "cpu", "plots": False, "fidelity": False}
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        cfg = SimulationConfig(**{**defaults, **settings, "out": tmp})
        t0 = time.perf_counter()
        res = run_simulation(cfg)
        return res, time.perf_counter() - t0


def run_pool(
    fn: Callable[..., dict[str, Any]], jobs: Sequence[Sequence[Any]], workers: int
) -> list[dict[str, Any]]:
    """``fn(*job)`` for every job in ``workers`` processes, each point printed as it ends.

    Each worker is its own process, so what a run patches (a research switch) stays in it;
    give every run one torch thread and record ``workers`` in the settings.
    """
    import concurrent.futures

    points = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        for fut in concurrent.futures.as_completed([pool.submit(fn, *job) for job in jobs]):
            points.append(fut.result())
            print(points[-1], flush=True)
    return points


def pool_meta(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """:func:`meta` for a :func:`run_pool` benchmark: one torch thread per run."""
    out = meta(name, settings)
    out["machine"]["torch_threads"] = 1  # each worker's (SimulationConfig(threads=1))
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_result(out: Path, name: str) -> dict[str, Any] | None:
    """``<out>/results/<name>.json`` parsed, or None when absent."""
    path = Path(out) / "results" / f"{name}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A markdown table; ``align`` is one character per column: l or r."""
    align = align or "l" * len(headers)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    for row in rows:
        lines.append("| " + " | ".join("" if v is None else str(v) for v in row) + " |")
    return "\n".join(lines)


def f3(v: Any) -> str:
    """A metric with 3 decimals, or an em dash when it was not measured."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.3f}"


def f1(v: Any) -> str:
    if v is None:
        return "—"
    return f"{v:,.1f}"


def human_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1000
    return f"{n} B"
