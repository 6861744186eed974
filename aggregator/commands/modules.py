"""``aggregator modules``: list, show and delete (exact unlearning) registered modules.

``list`` and ``show`` include the module manifest's signed ``privacy_report``
as the site signed it (null when the module has none); ``show`` also re-runs
the federation's privacy policy check on it (pure, see
:func:`ffsecure.privacy.policy.check_module`) under the policy in force now.
A module with a DP claim signs no measured figure: where the federation bounds
every DP claim (``dp_policy`` sets ``max_epsilon`` and ``delta``) its thresholds
show as covered by the DP claim (``DP`` in the table); where it bounds none, a DP
claim covers nothing and a missing figure shows as a dash and fails the policy.
"""

from __future__ import annotations

import click

from aggregator.commands.context import (
    confirm,
    dir_option,
    json_option,
    open_operations,
    operator_actor,
    print_entries,
    yes_option,
)
from aggregator.store.base import check_module_id
from ffsecure.clitools import echo_json
from ffsecure.errors import StoreError
from ffsecure.package import ModuleManifest
from ffsecure.privacy.policy import evaluate, strongest
from ffsecure.privacy.report import dp_covers


def _summary(row, label_space: list[str]) -> dict:
    m = ModuleManifest.from_bytes(row.manifest)
    return {
        "module_id": row.module_id,
        "site_id": row.site_id,
        "status": "live" if row.status == "active" else "deleted",
        "classes": [label_space[k] for k in m.classes],
        "generator": m.generator["family"],
        "dp_epsilon": m.dp.get("epsilon") if isinstance(m.dp, dict) else None,
        "registered_at": row.created,
        "registered_index": row.registered_index,
        "deleted_at": row.deleted,
        "deleted_index": row.deleted_index,
        "weights_sha256": row.weights_sha256,
        "weights_bytes": row.weights_size,
        "privacy_report": m.privacy_report,
    }


NO_VALUE = (
    "\u2014"  # em dash: the module's report does not state this figure (or there is no report)
)


def _fmt(value: float | None, covered: bool = False) -> str:
    if value is None:
        return "DP" if covered else NO_VALUE  # DP: not released, the DP claim covers it
    return f"{value:.3f}"


def _privacy_policy(row, policy: dict | None, dp_policy: dict) -> dict:
    """Whether the federation's privacy policy requires a report, and whether this module passes it.

    ``policy`` in the result is the policy in force (defaults applied), as registration applies it.
    """
    m = ModuleManifest.from_bytes(row.manifest)
    dp = m.dp if isinstance(m.dp, dict) else None
    verdict = evaluate(m.privacy_report, dp, policy, dp_policy=dp_policy)
    return {
        "policy": verdict.policy,
        "required": verdict.required,
        "passes": verdict.passes,
        "reason": verdict.problems[0].message if verdict.problems else None,
        "covered_by_dp": verdict.to_dict()["covered_by_dp"],
    }


@click.group("modules")
def modules() -> None:
    """Registered generator modules: list, show, delete."""


@modules.command("list")
@dir_option
@click.option(
    "--status", type=click.Choice(["live", "deleted"]), default=None, help="Only these modules."
)
@json_option
@click.pass_context
def list_cmd(ctx: click.Context, home_dir: str, status: str | None, as_json: bool) -> None:
    """Table of modules: id, site, classes, generator, DP epsilon, privacy, registered at, status.

    The privacy columns come from the module's signed privacy_report: the
    membership-inference AUROC (the stronger of the plain and the calibrated
    attack) and the near-copy fraction; a dash when the module has no report,
    DP when its DP claim covers the figure (not released; only where the
    federation bounds DP claims, :func:`ffsecure.privacy.report.dp_covers`).
    """
    ctx.ensure_object(dict)["json"] = as_json
    with open_operations(home_dir, evaluation=False) as ops:
        rows = ops.store.list_modules({"live": "active", "deleted": "deleted", None: None}[status])
        out = [_summary(r, ops.label_space) for r in rows]
        dp_policy = ops.federation.dp_policy
        covers = [dp_covers(ModuleManifest.from_bytes(r.manifest).dp, dp_policy) for r in rows]
    if as_json:
        echo_json(out)
        return
    # rich only for the table: keeps `aggregator modules --help` and --json fast
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(out)} module(s)")
    table.add_column("module id", no_wrap=True, min_width=32)
    for col in (
        "site",
        "classes",
        "generator",
        "DP eps",
        "MIA AUROC",
        "near-copy",
        "registered at",
        "status",
    ):
        table.add_column(col)
    for m, covered in zip(out, covers, strict=True):
        eps = "-" if m["dp_epsilon"] is None else f"{m['dp_epsilon']:.2f}"
        report = m["privacy_report"]
        covered = covered and report is not None
        auroc = strongest(report, "membership_auroc", "membership_calibrated_auroc")
        near = report.get("near_copy_fraction") if report else None
        table.add_row(
            m["module_id"],
            m["site_id"],
            ",".join(m["classes"]),
            m["generator"],
            eps,
            _fmt(auroc, covered),
            _fmt(near, covered),
            m["registered_at"],
            m["status"],
        )
    console = Console()
    if (
        not console.is_terminal
    ):  # piped or captured: no terminal width to fit, so do not truncate cells
        console = Console(width=max(console.width, 160))
    console.print(table)


@modules.command("show")
@dir_option
@click.argument("module_id")
@json_option
@click.pass_context
def show_cmd(ctx: click.Context, home_dir: str, module_id: str, as_json: bool) -> None:
    """Everything stored about one module (never its weights), and the artifacts built from it.

    Includes the signed privacy_report in full and whether the federation's
    privacy policy requires one and the module passes it (re-checked now).
    """
    ctx.ensure_object(dict)["json"] = as_json

    check_module_id(module_id)
    with open_operations(home_dir, evaluation=False) as ops:
        row = ops.store.get_module(module_id)
        info = _summary(row, ops.label_space)
        fed = ops.federation
        info["privacy_policy"] = _privacy_policy(row, fed.privacy_policy, fed.dp_policy)
        info["used_by"] = [
            {"kind": kind, "id": a.artifact_id, "status": a.status}
            for kind in ("dataset", "classifier")
            for a in ops.store.list_artifacts(kind)
            if module_id in {m["module_id"] for m in a.meta["modules"]}
        ]
    if as_json:
        echo_json(info)
        return
    report, check = info.pop("privacy_report"), info.pop("privacy_policy")
    for key, value in info.items():
        click.echo(f"{key}: {value}")
    if report is None:
        click.echo(f"privacy_report: {NO_VALUE} (none)")
    else:
        click.echo("privacy_report:")
        for key, value in report.items():
            click.echo(f"  {key}: {value}")
    verdict = (
        "none set"
        if not check["policy"]
        else "report required"
        if check["required"]
        else "report optional"
    )
    # without a policy check_module still refuses a malformed report or an inconsistent DP epsilon
    verdict += (
        ("" if not check["policy"] else "; passes")
        if check["passes"]
        else f"; FAILS: {check['reason']}"
    )
    if check["covered_by_dp"]:
        verdict += f"; covered by the DP claim (not released): {', '.join(check['covered_by_dp'])}"
    click.echo(f"privacy_policy: {verdict}")


@modules.command("delete")
@dir_option
@click.argument("module_id")
@click.option("--reason", required=True, help="Why the module must go (recorded in the ledger).")
@click.option(
    "--no-retrain",
    is_flag=True,
    help="Only delete and retire; retrain later with `aggregator retrain`.",
)
@click.option("--actor", default=None, help="Operator name for the ledger [default: login name].")
@yes_option
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show progress bars."
)
@json_option
@click.pass_context
def delete_cmd(
    ctx: click.Context,
    home_dir: str,
    module_id: str,
    reason: str,
    no_retrain: bool,
    actor: str | None,
    yes: bool,
    progress: bool,
    as_json: bool,
) -> None:
    """Crypto-shred a module, retire what was built from it, and retrain without it.

    The module's data key and blob are destroyed (module.deleted), every
    dataset and classifier whose lineage holds it is retired, and unless
    --no-retrain each retired live classifier is rebuilt from the remaining
    modules with its recorded seeds and settings (a published one is
    republished). Prints the appended ledger entries and the new accuracy
    when [evaluation] is configured.
    """
    ctx.ensure_object(dict)["json"] = as_json

    check_module_id(module_id)
    reason = reason.strip()
    if not reason or len(reason) > 500 or not reason.isprintable():
        raise click.BadParameter(
            "give a printable reason of 1..500 characters", param_hint="--reason"
        )
    with open_operations(
        home_dir, progress=progress and not as_json, actor=operator_actor(actor) if actor else None
    ) as ops:
        row = ops.store.get_module(module_id)
        if row.status == "deleted":
            raise StoreError(
                f"module {module_id} is already deleted",
                code="E_MODULE_DELETED",
                hint="nothing left to delete; see `aggregator modules show`",
            )
        confirm(
            yes,
            f"Delete module {module_id} of site {row.site_id} for good "
            f"(its data key is destroyed; this cannot be undone)?",
        )
        outcome = ops.delete(module_id, reason)
        retrain = None if no_retrain else ops.retrain()
    appended = outcome.appended + (retrain.appended if retrain else [])
    if as_json:
        echo_json(
            {
                "module_id": module_id,
                "retired_datasets": outcome.retired_datasets,
                "retired_classifiers": outcome.retired_classifiers,
                "entries": [a.to_dict() for a in appended],
                "retrained": None
                if retrain is None
                else {
                    "seconds": round(retrain.seconds, 3),
                    "datasets": [d.dataset_id for d in retrain.datasets],
                    "classifiers": [
                        {"classifier_id": c.classifier_id, "sha256": c.sha256, "metrics": c.metrics}
                        for c in retrain.classifiers
                    ],
                    "skipped": [{"classifier_id": c, "why": w} for c, w in retrain.skipped],
                },
            }
        )
        return
    click.echo(f"deleted module {module_id}; appended {len(appended)} ledger entries:")
    print_entries(appended)
    if retrain is not None:
        for c in retrain.classifiers:
            acc = f", accuracy {c.metrics['accuracy']:.4f}" if c.metrics else ""
            click.echo(f"retrained {c.classifier_id} (sha256 {c.sha256[:16]}...){acc}")
        for cid, why in retrain.skipped:
            click.echo(f"could not retrain {cid}: {why}")
        click.echo(f"retraining took {retrain.seconds:.1f} s")
    elif outcome.retired_classifiers:
        click.echo("not retrained (--no-retrain); run `aggregator retrain` when ready")
