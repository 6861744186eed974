"""Run the benchmarks and regenerate ``benchmarks/RESULTS.md`` from their JSON results.

``make bench`` runs this module. Each benchmark writes
``<out>/results/<name>.json`` (with the machine, date, git commit and
settings of the run) and ``<name>.md``; RESULTS.md is then assembled from
every result file present under ``<out>/results`` (including the per-part
benchmarks' files, e.g. ``privacy.json`` and ``unlearning.json``, which are
not rerun here), so a partial run keeps the other sections of the page.

    python -m benchmarks.run_all                 # everything, CPU plan (hours on a small CPU)
    python -m benchmarks.run_all --quick         # tiny settings, seconds: checks the machinery only
    python -m benchmarks.run_all --only systems,dp
    python -m benchmarks.run_all --render-only   # rebuild RESULTS.md from the JSON already there
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks import common, dp, scaling, systems, utility
from ffsecure.timefmt import now_rfc3339

BENCHMARKS = ("utility", "dp", "scaling", "systems")
# Result files of the per-part benchmarks, shown in RESULTS.md when present (section title, file
# stem).
PART_RESULTS = (
    ("cvae sampling temperature", "temperature-*"),
    ("Privacy attacks", "privacy"),
    ("Membership attack without a generator (control)", "mia_control"),
    ("Membership attack: the manifest's sampler against the worst", "mia_samplers"),
    ("DP mechanism by site size (digits)", "dp_size"),
    ("Mean-embedding release without noise (diagnosis)", "dp_ceiling"),
    ("Exact unlearning", "unlearning"),
    ("Fault runs", "faults"),
    ("Scale: 10 to 1,000 sites", "scale"),
)
PAPER_FF, PAPER_CENTRAL = 0.889, 0.901  # FederatedFactory paper, MedMNIST (accuracy)
SHORT_OF_PAPER = 0.90  # a FederatedFactory / centralized ratio below this falls short of the paper


def run_benchmarks(
    only: list[str],
    *,
    quick: bool,
    out: Path,
    plan: str,
    threads: int,
    device: str,
    budget_min: float | None = None,
) -> None:
    if "utility" in only:
        utility.run(
            "quick" if quick else plan,
            out=out,
            threads=threads,
            device=device,
            budget_min=budget_min,
        )
    if "dp" in only:
        dp.run(
            quick=quick,
            epsilons=(8.0, math.inf) if quick else dp.EPSILONS,
            out=out,
            threads=threads,
            device=device,
        )
    if "scaling" in only:
        scaling.run(
            sites=[10, 20] if quick else [10, 50, 100],
            quick=quick,
            out=out,
            threads=threads,
            device=device,
        )
    if "systems" in only:
        systems.run(quick=quick, out=out, threads=threads)


def _body(markdown: str) -> str:
    """A result page without its title, headings pushed one level down."""
    lines = markdown.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(("#" + ln) if ln.startswith("#") else ln for ln in lines).strip()


def headline(results: dict[str, dict[str, Any] | None]) -> list[str]:
    """The closing note: headline rows quoted from the results, and what falls short of the
    paper."""
    lines = ["## Closing note", ""]
    u = results.get("utility")
    paper_ratio = PAPER_FF / PAPER_CENTRAL
    lines.append(
        f"The paper reports FederatedFactory at {PAPER_FF * 100:.1f}% against "
        f"{PAPER_CENTRAL * 100:.1f}% centralized on MedMNIST (ratio {paper_ratio:.3f}), and FedAvg "
        "collapsing to 11.36% on CIFAR-10 with 100 one-class clients."
    )
    lines.append("")
    if not u:
        lines += [
            "No utility result is present: run `python -m benchmarks.run_all --only utility`.",
            "",
        ]
        u = {"meta": {}, "rows": []}
    if u["meta"].get("quick"):
        lines += [
            "**These figures come from `--quick` settings (tiny models, one epoch): they check the "
            "machinery and say nothing about utility.**",
            "",
        ]
    measured = [r for r in u["rows"] if r.get("status") == "measured"]
    short, held = [], []

    latest = utility.latest_commit(u)
    for r in measured:
        text = (
            f"{r['dataset']}, {r['split']}, {r['generator']} ({r['generator_size']}): "
            f"FederatedFactory {common.f3(r['federatedfactory']['accuracy'])} vs centralized "
            f"{common.f3(r['centralized']['accuracy'])} (ratio "
            f"{common.f3(r['ratio_vs_centralized'])}), FedAvg {common.f3(r['fedavg']['accuracy'])}"
        )
        if utility.pipeline_changed(utility._commit(r), latest, r["generator"]):
            text += " † (earlier simulation code, not comparable)"
        (held if (r["ratio_vs_centralized"] or 0) >= SHORT_OF_PAPER else short).append(text)
    if held:
        lines += [f"Rows at or above {SHORT_OF_PAPER:.2f} of centralized (the paper's level):", ""]
        lines += [f"- {t}" for t in held] + [""]
    if short:
        lines += [
            f"Rows that fall short of the paper (below {SHORT_OF_PAPER:.2f} of centralized):",
            "",
        ]
        lines += [f"- {t}" for t in short] + [""]
        lines += [
            "Why, as far as these runs show: the generators are the CPU-sized defaults of "
            "`ffsecure simulate` (small cvae, minutes per site on a shared 2-core machine; the "
            "`ddpm` family at full size needs a GPU and was not measured here), the classifier is "
            "a small CNN trained for a few epochs, and each figure is one seed on one kind of "
            "host (a host with other CPU kernels moves a cell by a few points, like another seed: "
            "benchmarks/README.md). The paper trains diffusion generators on a GPU. On MedMNIST "
            "the classifier trained on synthetic images transfers poorly to real ones when every "
            "class comes from one site's generator (generator-specific texture is perfectly "
            "correlated with the label); docs/simulate.md gives the diagnosis.",
            "",
        ]
    seeded = []
    for t in results.get("temperature") or []:
        st = t["meta"]["settings"]
        row = next(
            (x for x in t.get("summary") or [] if x["temperature"] == st["default_temperature"]),
            None,
        )
        if row and row["seeds"] > 1:
            seeded.append(
                f"{st['dataset']} {common.f3(row['ratio'])} (FederatedFactory "
                f"{common.f3(row['accuracy_mean'])} ± {common.f3(row['accuracy_sd'])} vs "
                f"centralized {common.f3(row['centralized_mean'])}, {row['seeds']} seeds)"
            )
    if seeded:
        lines += [
            "Over several seeds (same generators; synthesis and classifier seeds varied; cvae "
            "sampling temperature study, pathological split, default temperature): "
            + "; ".join(seeded)
            + ".",
            "",
        ]
    fed = [r for r in measured if r["partition"] == "pathological"]
    if fed:
        worst = min(fed, key=lambda r: r["fedavg"]["accuracy"])
        lines += [
            "FedAvg under the pathological split: as low as "
            f"{common.f3(worst['fedavg']['accuracy'])} ({worst['dataset']}), the collapse the "
            "paper reports (11.36% on CIFAR-10).",
            "",
        ]
    not_run = [r for r in u["rows"] if r.get("status") != "measured"]
    if not_run:
        lines += [
            f"{len(not_run)} cells of the utility grid were not run (listed in the utility "
            "section); no figure is given for them.",
            "",
        ]
    d = results.get("dp")
    if d:
        families: dict[tuple, list] = {}
        for c in d["curves"]:
            families.setdefault(
                (c["dataset"], c["generator"], c.get("generator_size", "default")), []
            ).append(c)
        for (dataset, generator, size), curves in families.items():
            for c in curves:
                pts = ", ".join(
                    f"epsilon {p['epsilon']}: {common.f3(p['ratio_vs_centralized'])}"
                    for p in c["points"]
                )
                lines.append(
                    f"Privacy-utility, {dataset} {generator}"
                    + ("" if size == "default" else f" {size}")
                    + f", {c.get('mechanism', 'dp-sgd')}"
                    + f" ({dp.epochs_of(c, d)} generator epochs at every point): ratio {pts}."
                )
            same = [
                r
                for r in measured
                if r["dataset"] == dataset
                and r["generator"] == generator
                and r.get("generator_size", "default") == size
                and r["partition"] == "pathological"
            ]
            if same:
                full = same[0]["ratio_vs_centralized"]
                text = (
                    f"Without DP and with the default image-epoch budget the same pipeline reaches "
                    f"{common.f3(full)} (utility table)"
                )
                no_dp = [
                    p["ratio_vs_centralized"]
                    for c in curves
                    for p in c["points"]
                    if p["epsilon"] == "inf" and p.get("ratio_vs_centralized") is not None
                ]
                if no_dp and full is not None and full > max(no_dp):
                    text += (
                        ": part of the DP curve's drop is the shorter fit that DP-SGD needs to "
                        "keep its noise per step low"
                    )
                lines.append(text + ".")
        lines.append("")
    sc = results.get("scaling")
    if sc and sc["rows"]:
        rows = sc["rows"]
        lines.append(
            "Scaling, "
            + "; ".join(
                f"{r['sites']} sites: aggregator {common.f1(r['aggregator_s'])} s, FF "
                f"{common.f3(r['accuracy']['federatedfactory'])} vs FedAvg "
                f"{common.f3(r['accuracy']['fedavg'])}, {common.human_bytes(r['ff_total_bytes'])} "
                f"uploaded vs FedAvg {common.human_bytes(r['fedavg_total_bytes'])} over "
                f"{r['fedavg_rounds']} rounds"
                for r in rows
            )
            + "."
        )
        lines.append("")
    lines += systems_headline(results.get("systems"))
    return lines


def systems_headline(sy: dict[str, Any] | None) -> list[str]:
    """The systems figures of the closing note, each beside what it is compared with."""
    if not sy:
        return []
    parts = []
    env = sy.get("envelope") or []
    if env:
        ratios = [r["ratio"] for r in env]
        parts.append(
            f"HPKE seal + open runs at {min(ratios):.2f}-{max(ratios):.2f} of plain AES-256-GCM's "
            f"throughput on the same bytes ({len(env)} size/suite pairs, "
            f"{min(r['overhead_bytes'] for r in env)}-{max(r['overhead_bytes'] for r in env)} "
            "bytes of envelope overhead)"
        )
    large = (sy.get("upload") or {}).get("large")
    if large:
        parts.append(
            f"a {large['bytes'] / common.MB:.1f} MB module uploads over mTLS end to end at "
            f"{large['mtls_upload_mb_per_s']:.1f} MB/s against {large['socket_file_mb_per_s']:.1f} "
            "MB/s for a plain loopback socket into a file (ratio "
            f"{large['ratio_upload_vs_socket_file']:.3f})"
        )
    cc = (sy.get("upload") or {}).get("concurrent")
    if cc:
        parts.append(
            f"{cc.get('completed')} of {cc.get('sites')} sites uploaded at once with "
            f"{cc.get('errors')} errors (p99 latency {cc.get('latency_p99_s', 0):.2f} s)"
        )
    ledger_rows = (sy.get("ledger") or {}).get("rows") or []
    if ledger_rows:
        big = max(ledger_rows, key=lambda r: r["entries"])
        parts.append(
            f"a ledger of {big['entries']:,} entries takes {big['sqlite_durable_appends_per_s']:,} "
            f"durable appends/s and gives {big['inclusion_proofs_per_s']:,} inclusion proofs/s of "
            f"{big['inclusion_proof_bytes_max']} bytes, verified at "
            f"{big['inclusion_verifications_per_s']:,}/s"
        )
    a = sy.get("audit")
    if a and a.get("cli_rc") == 0:
        parts.append(
            f"`ffsecure audit verify` checks a {a['entries']:,}-entry bundle in "
            f"{a['cli_verify_s']:.1f} s (the library's log verifier alone: "
            f"{a['library_verify_s']:.1f} s)"
        )
    if not parts:
        return []
    return ["Systems: " + "; ".join(parts) + ".", ""]


def render(out: Path) -> Path:
    """Write ``<out>/RESULTS.md`` from the result files under ``<out>/results``."""
    out = Path(out)
    results = {name: common.read_result(out, name) for name in BENCHMARKS}
    rdir = out / "results"
    results["temperature"] = [
        json.loads(p.read_text()) for p in sorted(rdir.glob("temperature-*.json"))
    ]
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python -m benchmarks.run_all` from the JSON files in `benchmarks/results/` "
        f"(regenerated {now_rfc3339()}); do not edit by hand. Every section names the machine, "
        "date, git commit and settings of its run; the paper's figures stand beside ours. See "
        "benchmarks/README.md for how to rerun each figure.",
        "",
    ]
    titles = {
        "utility": "Utility (the FederatedFactory table)",
        "dp": "Privacy-utility",
        "scaling": "Scaling in sites",
        "systems": "Systems",
    }
    for name in BENCHMARKS:
        lines += [f"## {titles[name]}", ""]
        md_path = rdir / f"{name}.md"
        if results[name] is None or not md_path.is_file():
            lines += [f"Not measured yet: run `python -m benchmarks.run_all --only {name}`.", ""]
            continue
        body = _body(md_path.read_text())
        if name == "dp":
            body = body.replace("](dp.png)", "](results/dp.png)")
        lines += [body, ""]
    for title, pattern in PART_RESULTS:
        for md_path in sorted(rdir.glob(f"{pattern}.md")):
            module = pattern.removesuffix("-*")
            lines += [
                f"## {title}"
                + (f" ({md_path.stem[len(module) + 1 :]})" if pattern.endswith("*") else ""),
                "",
                f"From `benchmarks/results/{md_path.name}` (its own benchmark, "
                f"`python -m benchmarks.{module}`; not rerun by run_all).",
                "",
                _body(md_path.read_text()),
                "",
            ]
    lines += headline(results)
    path = out / "RESULTS.md"
    tmp = path.with_name(".RESULTS.md.tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds); for tests and CI")
    p.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of {','.join(BENCHMARKS)}",
    )
    p.add_argument(
        "--plan",
        default="cpu",
        choices=("cpu", "full"),
        help="utility grid plan (see benchmarks.utility)",
    )
    p.add_argument(
        "--budget-min",
        type=float,
        default=None,
        help=(
            "utility: start no new grid cell after this many minutes "
            "(the rest are listed as not run)"
        ),
    )
    p.add_argument(
        "--render-only", action="store_true", help="only rebuild RESULTS.md from the JSON present"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--out", default=str(common.DEFAULT_OUT), help="directory holding results/ and RESULTS.md"
    )
    a = p.parse_args(argv)
    only = [x.strip() for x in a.only.split(",") if x.strip()]
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        print(
            f"error: unknown benchmark(s) {', '.join(unknown)}; choose from "
            f"{', '.join(BENCHMARKS)}",
            file=sys.stderr,
        )
        return 2
    out = Path(a.out)
    if not a.render_only:
        run_benchmarks(
            only,
            quick=a.quick,
            out=out,
            plan=a.plan,
            threads=a.threads,
            device=a.device,
            budget_min=a.budget_min,
        )
    path = render(out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
