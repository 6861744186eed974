"""Shared bits of the site-node commands: the --config option and the training progress bar."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from ffsecure.privacy.policy import MINIMA, THRESHOLDS, LimitSource, effective_policy
from site_node.config import load_config
from site_node.refusals import is_contradicted

config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The site's site.toml (see docs/site-operator.md).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def start(ctx: click.Context, config_path: str, as_json: bool = False):
    """Record --json for error reporting, then load the config."""

    ctx.ensure_object(dict)["json"] = as_json
    return load_config(config_path)


@contextlib.contextmanager
def training_progress(enabled: bool) -> Iterator:
    """A rich progress bar (epoch, loss, epsilon spent so far) on stderr; yields the callback."""
    if not enabled:
        yield None
        return
    # heavy: rich, only when a bar is drawn (keeps --help fast)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("train"),
        BarColumn(),
        TextColumn("epoch {task.completed:>3.0f}/{task.fields[epochs]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("ε {task.fields[eps]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task = progress.add_task("train", total=None, epochs="?", loss="-", eps="-")

    def on_epoch(epoch: int, total: int, loss: float, eps: float | None) -> None:
        progress.update(
            task,
            completed=epoch,
            total=total,
            epochs=total,
            loss=f"{loss:.4f}",
            eps="-" if eps is None else f"{eps:.3f}",
        )

    with progress:
        yield on_epoch


@contextlib.contextmanager
def upload_progress(enabled: bool) -> Iterator:
    """Yields ``for_module(module_id) -> callback(sent, total)`` drawing one rich bar per module, or
    None."""
    if not enabled:
        yield None
        return
    # heavy: rich, only when a bar is drawn (keeps --help fast)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("upload {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )

    def for_module(module_id: str):
        task = progress.add_task(module_id[:12], total=None)

        def update(sent: int, total: int) -> None:
            progress.update(task, completed=sent, total=total)

        return update

    with progress:
        yield for_module


def policy_lines(policy: dict | None) -> list[str]:
    """The federation's privacy policy in force, for a person: each limit, defaults marked."""

    effective = effective_policy(policy)
    if policy is None or effective is None:
        return ["privacy policy: none (no privacy report required, no limits)"]
    lines = ["privacy policy: report required"]
    for key, (what, _plain, _calibrated) in THRESHOLDS.items():
        if effective.get(key) is not None:
            source = " (default)" if key not in policy else ""
            lines.append(f"  {what} at most {effective[key]:g}: {key}{source}")
    for key, (_report_key, what) in MINIMA.items():
        source = " (default)" if key not in policy else ""
        lines.append(f"  measured on at least {effective[key]} {what}: {key}{source}")
    return lines


def verdict_lines(verdict) -> list[str]:
    """A :class:`ffsecure.privacy.policy.PolicyVerdict` for a person: PASS/FAIL per threshold."""
    if verdict.policy is None and verdict.thresholds:
        head = "privacy policy: none set by the federation; this site's own limits"
    elif verdict.policy is None:
        head = "privacy policy: none set"
    else:
        head = f"privacy policy (report {'required' if verdict.required else 'optional'})"
    lines = [f"{head}: {'PASS' if verdict.passes else 'FAIL'}"]
    for check in verdict.thresholds:
        source = ", default" if check.default else ""
        if check.source is LimitSource.SITE:
            source = ", this site's own limit (site.toml [privacy])"
        if check.covered_by_dp:
            lines.append(
                f"  PASS  {check.what} not released: covered by the DP claim "
                f"(limit {check.limit:g}, {check.key}{source})"
            )
            continue
        if check.measurement is not None:
            lines.append(
                f"  FAIL  {check.what} {check.value:g} does not count "
                f"(limit {check.limit:g}, {check.key}{source}): {check.measurement}"
            )
            continue
        value = "not stated" if check.value is None else f"{check.value:g}"
        sign = "<=" if check.passes else ">"
        lines.append(
            f"  {'PASS' if check.passes else 'FAIL'}  {check.what} {value} {sign} "
            f"{check.limit:g} ({check.key}{source})"
        )
    threshold_failures = sum(1 for check in verdict.thresholds if not check.passes)
    # the threshold problems come last; the others (no report, epsilon mismatch) are listed here
    for problem in verdict.problems[: len(verdict.problems) - threshold_failures]:
        lines.append(f"  FAIL  {problem.message}")
    lines += [f"  WARN  {warning}" for warning in verdict.warnings]
    return lines


def refusal_lines(module_id: str, error: dict) -> list[str]:
    """A refused module's stored ``error`` for a person. The aggregator's message and hint are
    shown as its own words (untrusted), beside this site's re-check of them; where that
    re-check contradicts them it is an ALARM, and the aggregator's hint is not shown as advice.
    """
    if is_contradicted(error):
        claimed = error.get("aggregator") or {}
        return [
            f"ALARM  module {module_id}: {error['message']} ({error['code']})",
            f"  the aggregator claimed (its words, untrusted, not advice): "
            f"[{claimed.get('code')}] {claimed.get('message')}",
            f"  {error['hint']}",
        ]
    if error.get("by") == "site":
        lines = [
            f"module {module_id}: REFUSED by this site's DP budget ({error['code']}): "
            f"{error['message']}; marked refused, never sent again"
        ]
        return lines + ([f"  hint: {error['hint']}"] if error.get("hint") else [])
    lines = [
        f"module {module_id}: REFUSED by the aggregator ({error['code']}); marked refused, "
        "never sent again",
        f"  the aggregator says (its words, untrusted): {error['message']}",
    ]
    if error.get("hint"):
        lines.append(f"  the aggregator's hint (its words, untrusted): {error['hint']}")
    recheck = error.get("recheck")
    if recheck:
        lines.append(f"  this site's re-check ({recheck['verdict']}): {recheck['finding']}")
    return lines
