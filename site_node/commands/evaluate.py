"""``site-node evaluate``: download the federation's published classifier, test it on local data
and, with ``--send``, send the aggregate metrics back (ReportEvaluation)."""

from __future__ import annotations

import click

from ffsecure.clitools import echo_json
from site_node import trust as trustlib
from site_node.commands._common import config_option, json_option, start
from site_node.evaluation import evaluate_published, send_metrics
from site_node.state import StateDir


@click.command("evaluate")
@config_option
@click.option("--classifier", "classifier_id", help="A classifier id (default: the published one).")
@click.option(
    "--send",
    is_flag=True,
    default=False,
    help="Send the aggregate metrics (n, accuracy, AUROC, per-class recall) to the aggregator.",
)
@click.option(
    "--include-confusion",
    is_flag=True,
    default=False,
    help="With --send: also send the confusion-matrix counts.",
)
@json_option
@click.pass_context
def evaluate(ctx, config_path, classifier_id, send, include_confusion, as_json):
    """Fetch the classifier (hash and ledger entry verified) and report metrics on the local test
    split.

    The metrics are printed and stored (STATE/classifiers/<id>/evaluation.json). Nothing
    is sent back unless --send: then only the aggregate numbers go to the aggregator,
    which records a salted commitment to them in its ledger (classifier.evaluated) and
    answers with a receipt that is checked and kept in evaluation.json.
    """

    if include_confusion and not send:
        raise click.UsageError("--include-confusion only makes sense with --send")
    cfg = start(ctx, config_path, as_json)
    state = StateDir(cfg.state_dir)
    with state.locked():
        t = trustlib.load(cfg)
        with trustlib.make_client(cfg, t) as client:
            result = evaluate_published(cfg, t, state, client, classifier_id)
            result["report"] = (
                send_metrics(cfg, state, client, result, include_confusion=include_confusion)
                if send
                else {"sent": False}
            )
    if as_json:
        echo_json(result)
        return
    m = result["metrics"]
    click.echo(
        f"classifier {result['classifier_id']} (trained on dataset {result['dataset_id']} from "
        f"{len(result['module_ids'])} modules) on {result['n_test']} local test images:"
    )
    click.echo(f"  accuracy: {m['accuracy']:.4f}")
    click.echo(f"  AUROC: {'-' if m['auroc'] is None else format(m['auroc'], '.4f')}")
    recall = ", ".join("-" if r is None else f"{r:.3f}" for r in m["per_class_recall"])
    click.echo(f"  per-class recall: {recall}")
    rep = result["report"]
    if not rep["sent"]:
        click.echo("  not sent to the aggregator (use --send to send the aggregate metrics)")
    else:
        how = "already recorded by an earlier send" if rep["existing"] else "recorded"
        click.echo(
            f"  sent to the aggregator ({', '.join(rep['fields'])}): {how} as ledger entry "
            f"{rep['index']}, proven in checkpoint {rep['tree_size']} (commitment "
            f"{rep['report_sha256'][:16]}...)"
        )
