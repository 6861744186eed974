"""``site-node evaluate``: download the federation's published classifier and test it on local data."""

from __future__ import annotations

import click

from ffsecure.clitools import echo_json
from site_node.commands._common import config_option, json_option, start


@click.command("evaluate")
@config_option
@click.option("--classifier", "classifier_id", help="A classifier id (default: the published one).")
@json_option
@click.pass_context
def evaluate(ctx, config_path, classifier_id, as_json):
    """Fetch the classifier (hash and ledger entry verified) and report metrics on the local test split.

    Only the metrics are printed and stored (STATE/classifiers/<id>/evaluation.json);
    nothing is sent back to the aggregator.
    """
    from site_node import trust as trustlib
    from site_node.evaluation import evaluate_published
    from site_node.state import StateDir

    cfg = start(ctx, config_path, as_json)
    state = StateDir(cfg.state_dir)
    with state.locked():
        t = trustlib.load(cfg)
        with trustlib.make_client(cfg, t) as client:
            result = evaluate_published(cfg, t, state, client, classifier_id)
    if as_json:
        echo_json(result)
        return
    m = result["metrics"]
    click.echo(f"classifier {result['classifier_id']} (trained on dataset {result['dataset_id']} from "
               f"{len(result['module_ids'])} modules) on {result['n_test']} local test images:")
    click.echo(f"  accuracy: {m['accuracy']:.4f}")
    click.echo(f"  AUROC: {'-' if m['auroc'] is None else format(m['auroc'], '.4f')}")
    recall = ", ".join("-" if r is None else f"{r:.3f}" for r in m["per_class_recall"])
    click.echo(f"  per-class recall: {recall}")
