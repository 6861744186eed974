"""``aggregator publish``: make a trained classifier the one sites fetch (GetClassifier).

Idempotent: the classifier already current is answered with its entry, exit 0.
"""

from __future__ import annotations

import click

from aggregator.commands.context import dir_option, json_option, open_operations, operator_actor
from ffsecure.clitools import echo_json


@click.command("publish")
@dir_option
@click.argument("classifier_id", required=False)
@click.option("--actor", default=None, help="Operator name for the ledger [default: login name].")
@json_option
@click.pass_context
def publish(
    ctx: click.Context, home_dir: str, classifier_id: str | None, actor: str | None, as_json: bool
) -> None:
    """Publish CLASSIFIER_ID (default: the newest active one); appends classifier.published.

    Publishing the classifier that is already the current one changes nothing and exits 0.
    """
    ctx.ensure_object(dict)["json"] = as_json
    with open_operations(
        home_dir, evaluation=False, actor=operator_actor(actor) if actor else None
    ) as ops:
        done = ops.publish(classifier_id)
    cid, index = done.classifier_id, done.appended.index
    if as_json:
        echo_json({"classifier_id": cid, "index": index, "already_published": done.already})
    elif done.already:
        click.echo(f"already published as {cid} (ledger entry {index}); nothing changed")
    else:
        click.echo(f"published {cid} (ledger entry {index}); sites fetch it with GetClassifier")
