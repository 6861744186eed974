"""``site-node upload``: seal and send every trained module, resuming interrupted uploads."""

from __future__ import annotations

import click

from ffsecure.clitools import echo_json
from site_node.commands._common import config_option, json_option, start, upload_progress


@click.command("upload")
@config_option
@click.option("--module", "module_id", help="Only this module (default: every module not yet registered).")
@json_option
@click.pass_context
def upload(ctx, config_path, module_id, as_json):
    """Seal to the aggregator's HPKE key, upload with retries (backoff + jitter), verify the receipt.

    An interrupted upload resumes where the aggregator's durable offset stands
    (same envelope, same upload id). Success is reported only after the
    receipt's checkpoint signature, its inclusion proof and its consistency
    with the site's stored checkpoint have been verified.
    """
    from site_node import sync
    from site_node import trust as trustlib
    from site_node.state import StateDir

    cfg = start(ctx, config_path, as_json)
    state = StateDir(cfg.state_dir)
    results = []
    with state.locked():
        t = trustlib.load(cfg)
        todo = [state.load_module(module_id)] if module_id else sync.pending(state)
        with trustlib.make_client(cfg, t) as client, upload_progress(not as_json) as progress:
            for record in todo:
                if record.status in ("registered", "deleted", "refused"):
                    results.append({"module_id": record.module_id, "status": record.status, "skipped": True})
                    continue
                results.append(sync.upload_module(state, client, t, record,
                                                  progress=progress(record.module_id) if progress else None))
    if as_json:
        echo_json({"uploaded": results})
    elif not results:
        click.echo("nothing to upload (train a module first: site-node train)")
    else:
        for r in results:
            if r.get("skipped"):
                click.echo(f"module {r['module_id']}: already {r['status']}")
            else:
                how = "already registered" if r["existing"] else "registered"
                click.echo(f"module {r['module_id']}: {how} at ledger index {r['index']} (tree size "
                           f"{r['tree_size']}); receipt verified; {r['attempts']} attempt(s)")
