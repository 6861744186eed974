"""``site-node upload``: seal and send every trained module, resuming interrupted uploads."""

from __future__ import annotations

import click

from ffsecure.clitools import echo_json
from site_node import sync
from site_node import trust as trustlib
from site_node.commands._common import (
    config_option,
    json_option,
    refusal_lines,
    start,
    upload_progress,
)
from site_node.exitcodes import EXIT_ALARM, EXIT_REFUSED
from site_node.state import PENDING, StateDir


@click.command("upload")
@config_option
@click.option(
    "--module", "module_id", help="Only this module (default: every module not yet registered)."
)
@json_option
@click.pass_context
def upload(ctx, config_path, module_id, as_json):
    """Seal to the aggregator's HPKE key, upload with retries (backoff + jitter), verify the
    receipt.

    An interrupted upload resumes where the aggregator's durable offset stands
    (same envelope, same upload id). Success is reported only after the
    receipt's checkpoint signature, its inclusion proof and its consistency
    with the site's stored checkpoint have been verified. A module the
    aggregator refuses for good is marked `refused` and the next one is sent;
    exit status 4 then. The aggregator's reason is its own word: where this
    site can re-run its check on the package sent, it does, and a refusal that
    check contradicts is an ALARM (E_REFUSAL_CONTRADICTED, exit status 3) that
    stops the queue. Modules `refused` or `discarded` are never sent.
    """

    cfg = start(ctx, config_path, as_json)
    state = StateDir(cfg.state_dir)
    results = []
    with state.locked():
        t = trustlib.load(cfg)
        todo = [state.load_module(module_id)] if module_id else state.pending()
        results = [
            {"module_id": r.module_id, "status": r.status, "skipped": True}
            for r in todo
            if r.status not in PENDING
        ]
        todo = [r for r in todo if r.status in PENDING]
        if todo:
            with trustlib.make_client(cfg, t) as client, upload_progress(not as_json) as progress:
                results += sync.upload_queue(
                    state,
                    client,
                    t,
                    todo,
                    defer_transient=False,
                    limits=cfg.dp_limits,
                    progress=progress,
                )
    _render(results, as_json)
    if any(r.get("outcome") == "contradicted" for r in results):
        ctx.exit(EXIT_ALARM)
    if any(r.get("outcome") == "refused" for r in results):
        ctx.exit(EXIT_REFUSED)


def _render(results: list[dict], as_json: bool) -> None:
    if as_json:
        echo_json({"uploaded": results})
        return
    if not results:
        click.echo("nothing to upload (train a module first: site-node train)")
    for r in results:
        if r.get("skipped"):
            click.echo(f"module {r['module_id']}: {r['status']}, not sent")
        elif r["outcome"] in ("refused", "contradicted"):
            for line in refusal_lines(r["module_id"], r["error"]):
                click.echo(line)
        else:
            how = "already registered" if r["existing"] else "registered"
            click.echo(
                f"module {r['module_id']}: {how} at ledger index {r['index']} (tree size "
                f"{r['tree_size']}); receipt verified; {r['attempts']} attempt(s)"
            )
