"""``site-node privacy-check``: measure what a module reveals about its training images, before
upload.

Members are the training images of the classes the module covers, non-members
the same classes' held-out (test split) images, which the module never saw.
The check runs the loss-based membership-inference attack (optionally
calibrated with a reference generator trained on half of the held-out
images), the memorization test on generated samples (these two under the manifest's
sampler and the family's reference samplers, each figure at its worst), and
re-computes the DP epsilon from the manifest's DP record. It writes ``privacy-report.json`` and
``closest-pairs.png``; with ``--attach`` it adds the numbers to the module
manifest and signs the package again. A module with a DP claim signs only the
data-independent figures, whatever the federation: the measured ones stay in the
local report. See docs/privacy.md.

With ``--config`` the report is judged against the federation's privacy
policy (the one the aggregator applies, defaults included): the output shows
PASS/FAIL per threshold, the command exits 4 when the module fails, and with
``--attach`` a failing module is marked ``refused`` (never sent). Under a DP
claim the federation bounds (``dp_policy`` sets ``max_epsilon`` and ``delta``) a
threshold is covered by the claim and a measured figure above it is a WARN line,
not a failure; under a claim it does not bound, the threshold fails.
"""

from __future__ import annotations

import contextlib
import hmac
from pathlib import Path

import click

from ffsecure import pki
from ffsecure.clitools import echo_json
from ffsecure.dp import record_privacy_unit
from ffsecure.errors import ConfigError, FFSecureError
from ffsecure.package import SignedPackage, verify_package
from ffsecure.privacy.attach import attach_report
from ffsecure.privacy.report import DEFAULT_MAX_EXAMPLES, DEFAULT_SAMPLES, NEAR_COPY_FLOOR
from site_node import trust as trustlib
from site_node.commands._common import training_progress, verdict_lines
from site_node.config import load_config
from site_node.exitcodes import EXIT_REFUSED
from site_node.privacy import (
    REPORT_FILE,
    judge,
    members_and_non_members,
    own_limits,
    write_report,
)
from site_node.state import StateDir
from site_node.training import data_fingerprint, load_site_data, train_settings


class PrivacyStateError(FFSecureError):
    code = "E_STATE"


def _from_config(cfg, module_ref):
    """(package, its path, train set, held-out set, train settings, trust, state, record) from
    site.toml."""

    state = StateDir(cfg.state_dir)
    trust = trustlib.load(cfg)
    if module_ref is None:
        trained = [r for r in state.modules() if r.status == "trained"]
        if not trained:
            raise PrivacyStateError(
                f"no module with status 'trained' in {state.modules_dir}",
                hint="run `site-node train` first, or name a module with --module",
            )
        record = trained[-1]
    else:
        record = state.load_module(module_ref)
    # members must be what the module trained on: images added or removed since would blur the
    # figures towards chance, and an attached report would sign them
    if not hmac.compare_digest(data_fingerprint(cfg), record.data_fingerprint):
        raise PrivacyStateError(
            f"site.toml's [data] no longer holds the data module {record.module_id} was trained "
            "on (its fingerprint changed since): its training images cannot be told apart",
            hint="restore the data the module was trained on, or train a new module on the "
            "current data (`site-node train`)",
        )
    path = state.package_path(record.module_id)
    pkg = SignedPackage.from_bytes(path.read_bytes())
    data = load_site_data(cfg, trust.federation)
    settings = train_settings(cfg, pkg.manifest.generator["family"])
    val = None if data.val_x is None or data.val_y is None else (data.val_x, data.val_y)
    train, held_out = (data.train_x, data.train_y), ((data.test_x, data.test_y), val)
    return pkg, path, train, held_out, settings, trust, state, record


def _from_files(module_path, data_spec, data_root, seed):
    # heavy: torch, only when a check runs (keeps --help fast)
    from ffsecure.data import load_dataset
    from ffsecure.generators import default_train_settings

    if module_path is None or data_spec is None:
        raise ConfigError(
            "without --config, give --module PATH (a package.ffpk) and --data SPEC",
            hint="or pass --config site.toml",
        )
    try:
        pkg = SignedPackage.from_bytes(Path(module_path).read_bytes())
    except OSError as exc:
        raise ConfigError(
            f"cannot read {module_path}: {exc.strerror}", hint="check --module"
        ) from None
    m = pkg.manifest
    # the members are what the module was trained on: one image per patient if it says so
    unit = "image" if m.dp is None else record_privacy_unit(m.dp)
    ds = load_dataset(
        data_spec, image_shape=m.image_shape, root=data_root, seed=seed, privacy_unit=unit
    )
    settings = default_train_settings(m.generator["family"], "default", seed=seed)
    val = None if ds.val_x is None or ds.val_y is None else (ds.val_x, ds.val_y)
    held_out = ((ds.test_x, ds.test_y), val)
    return pkg, Path(module_path), (ds.train_x, ds.train_y), held_out, settings


@click.command("privacy-check")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="The site's site.toml: the module comes from its state dir, the data from [data].",
)
@click.option(
    "--module",
    "module_ref",
    help="With --config: a module id (default: the newest module not yet sent). "
    "Without: the path of a signed package file.",
)
@click.option(
    "--data",
    "data_spec",
    help="Without --config: the module's data (digits, npz:PATH, folder:PATH, dicom:PATH "
    "or a MedMNIST name), with labels in the federation's label space.",
)
@click.option(
    "--data-root", type=click.Path(file_okay=False), help="MedMNIST root folder (with --data)."
)
@click.option(
    "--samples",
    default=DEFAULT_SAMPLES,
    show_default=True,
    help="Generated samples for the memorization test.",
)
@click.option(
    "--max-examples",
    default=DEFAULT_MAX_EXAMPLES,
    show_default=True,
    help="Use at most this many members and as many non-members (random subset); the "
    "near-copy search covers every training image of the module's classes.",
)
@click.option(
    "--reference/--no-reference",
    default=False,
    show_default=True,
    help="Also run the calibrated attack: train a reference generator (same schedule, no DP) on "
    "half of the held-out images. Costs one more training run.",
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Near-copy RMS distance; default: the 1% quantile of held-out images' distances, "
    f"those within the floor ({NEAR_COPY_FLOOR:g}) of a training image left out. "
    "A report measured with it states no quantile, and a federation that limits the near-copy "
    "fraction refuses it.",
)
@click.option(
    "--attach", is_flag=True, help="Add the numbers to the manifest and sign the package again."
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False),
    help="Without --config: site key for --attach.",
)
@click.option(
    "--cert",
    "cert_file",
    type=click.Path(dir_okay=False),
    help="Without --config: site certificate for --attach.",
)
@click.option(
    "--output",
    "output",
    type=click.Path(dir_okay=False),
    help="Without --config: where --attach writes the new package (default: replace --module).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Folder for privacy-report.json and closest-pairs.png (default: the module's state "
    "folder, or the current folder without --config).",
)
@click.option(
    "--seed", default=0, show_default=True, help="Seed of the subsets, noise draws and samples."
)
@click.option("--threads", default=1, show_default=True, help="Torch CPU threads.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.pass_context
def privacy_check(
    ctx,
    config_path,
    module_ref,
    data_spec,
    data_root,
    samples,
    max_examples,
    reference,
    threshold,
    attach,
    key_file,
    cert_file,
    output,
    out_dir,
    seed,
    threads,
    as_json,
):
    """Measure membership leakage, memorization and the DP epsilon of a module before it is sent."""

    # heavy: torch, only when a check runs (keeps --help fast)
    from ffsecure import generators
    from ffsecure.privacy.check import run_check, split_holdout
    from ffsecure.torchutil import torch_threads

    ctx.ensure_object(dict)["json"] = as_json
    if samples < 1 or max_examples < 2:
        raise ConfigError("--samples must be >= 1 and --max-examples >= 2", hint="use the defaults")
    if config_path is not None and (data_spec or key_file or cert_file or output):
        raise ConfigError(
            "--data, --key, --cert and --output are for use without --config",
            hint="with --config the data, key and package come from site.toml and its state dir",
        )
    if config_path is None and attach and not (key_file and cert_file):
        raise ConfigError(
            "--attach without --config needs --key and --cert", hint="or use --config"
        )
    record = state = trust = None
    lock: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if config_path is not None:
        cfg = load_config(config_path)
        lock = StateDir(cfg.state_dir).locked()
    with torch_threads(threads), lock:
        if config_path is not None:
            (pkg, pkg_path, train, held_out, settings, trust, state, record) = _from_config(
                cfg, module_ref
            )
            out = Path(out_dir) if out_dir else pkg_path.parent
        else:
            pkg, pkg_path, train, held_out, settings = _from_files(
                module_ref, data_spec, data_root, seed
            )
            out = Path(out_dir or ".")
        if attach and record is not None and record.status != "trained":
            raise PrivacyStateError(
                f"module {record.module_id} is {record.status}: its package was already "
                "sealed or sent, so a report can no longer be attached",
                hint="attach before `site-node upload`, or train a new module",
            )
        m = pkg.manifest
        sets = members_and_non_members(
            train, held_out[0], m.classes, val=held_out[1], max_examples=max_examples, seed=seed
        )
        non_members = sets.non_members
        gen = generators.from_state(m.generator["family"], m.generator["config"], pkg.weights)
        ref_gen = None
        if reference:
            non_members, ref_set = split_holdout(
                *non_members, seed=seed + 2, reference_fraction=0.5
            )

            assert ref_set is not None  # a fraction above 0 always sets a reference set aside
            ref_x, ref_y = ref_set
            ref_gen = generators.build(m.generator["family"], m.generator["config"])
            with training_progress(not as_json) as progress:
                ref_gen.fit(ref_x, ref_y, settings, progress=progress)
        out.mkdir(parents=True, exist_ok=True)
        full = run_check(
            gen,
            members=sets.members,
            non_members=non_members,
            dp=m.dp,
            reference=ref_gen,
            n_generated=samples,
            seed=seed,
            png=out / "closest-pairs.png",
            near_copy_threshold=threshold,
            training_images=sets.training_images,
        )
        full["membership"]["non_member_split"] = sets.split
        full["module_id"] = m.module_id
        report = full["manifest_report"]
        verdict = (
            None
            if trust is None
            else judge(
                full,
                m.dp,
                trust.federation,
                max_epsilon=cfg.dp_limits.max_epsilon,
                limits=own_limits(cfg.privacy, trust.federation),
                report_path=out / REPORT_FILE,
            )
        )
        full["policy"] = None if verdict is None else verdict.to_dict()
        if attach:
            if record is not None and trust is not None:  # --config: the site's own key
                key, cert = trust.key, trust.cert
            else:
                key = pki.load_private_key(key_file)
                cert = pki.load_certs(Path(cert_file).read_bytes(), max_count=1)[0]
            new = attach_report(pkg, report, key, cert)
            if trust is not None:
                verify_package(new, federation=trust.federation, ca_cert=trust.ca_cert)
            target = pkg_path if record is not None or output is None else Path(output)
            pki.write_public_file(target, new.to_bytes())
            full["attached_to"] = str(target)
            failed = [] if verdict is None or verdict.passes else verdict.problems
            if record is not None and state is not None and failed:
                state.refuse_module(record, failed[0], by="site")
                full["status"] = "refused"
        write_report(out / REPORT_FILE, full)
    _render(full, m, out, verdict, as_json)
    if verdict is not None and not verdict.passes:
        ctx.exit(EXIT_REFUSED)


def _render(full, m, out, verdict, as_json) -> None:
    if as_json:
        echo_json(full)
        return
    mia, memo, acct = full["membership"], full["memorization"], full["accounting"]
    click.echo(f"module {m.module_id} ({m.generator['family']}, classes {m.classes})")
    click.echo(
        f"  membership inference: AUROC {mia['auroc']:.3f}, TPR@1%FPR {mia['tpr_at_1pct_fpr']:.3f} "
        f"({mia['members']} members vs {mia['non_members']} held-out "
        f"{mia.get('non_member_split', 'test')} images; strongest attack: "
        f"{mia.get('attack', 'loss')} under the {mia.get('sampler', 'manifest')} sampler)"
    )
    if "calibrated" in mia:
        click.echo(
            f"  calibrated attack:    AUROC {mia['calibrated']['auroc']:.3f}, "
            f"TPR@1%FPR {mia['calibrated']['tpr_at_1pct_fpr']:.3f}"
        )
    click.echo(
        f"  memorization: ratio {memo['ratio']:.3f}, near-copies {memo['near_copy_fraction']:.3%} "
        f"of {memo['generated']} samples (threshold {memo['near_copy_threshold']:.4f} from "
        f"{memo['near_copy_holdout']} of {memo['holdout']} held-out images; nearest of all "
        f"{memo['train']} training images)"
    )
    for line in _sampler_lines(full):
        click.echo(f"  {line}")
    if acct.get("dp"):
        click.echo(
            f"  DP: epsilon {acct['epsilon_recomputed']:.4f} re-computed ({acct['accountant']}), "
            f"claimed {acct['epsilon_claimed']:.4f}, delta {acct['delta']:.2e}"
        )
    else:
        click.echo("  DP: none (no formal guarantee)")
    if full.get("withheld"):
        covered = verdict is not None and verdict.claim_covers
        why = "covered by the DP claim" if covered else "withheld under the DP claim"
        click.echo(
            f"  signed report leaves out (measured here, {why}): " + ", ".join(full["withheld"])
        )
        if not covered:
            click.echo(
                "  a DP module never signs them: only a federation that bounds every DP claim "
                "(dp_policy max_epsilon and delta) lets the claim stand in for them"
            )
    click.echo(
        f"  report: {out / 'privacy-report.json'}; closest pairs: {out / 'closest-pairs.png'}"
    )
    if "attached_to" in full:
        click.echo(f"  attached to the signed package: {full['attached_to']}")
    if verdict is None:
        click.echo(
            "  privacy policy: not judged (without --config the federation's manifest is unknown)"
        )
    else:
        for line in verdict_lines(verdict):
            click.echo(f"  {line}")
    if full.get("status") == "refused":
        click.echo("  the module is marked refused: it will never be sent")


def _sampler_lines(full) -> list[str]:
    """Which samplers the check measured under, and which gave each figure at its worst."""
    samplers, worst = full.get("samplers") or {}, full.get("worst_sampler") or {}
    lines = ["samplers (each figure is judged at its worst over them):"]
    for name, run in samplers.items():
        settings = ", ".join(f"{key} {value}" for key, value in run["settings"].items())
        lines.append(
            f"  {name} ({settings}): AUROC {run['membership']['auroc']:.3f}, near-copies "
            f"{run['memorization']['near_copy_fraction']:.3%}"
        )
    if worst:
        lines.append(
            "  worst: " + ", ".join(f"{key} under {name}" for key, name in sorted(worst.items()))
        )
    return lines
