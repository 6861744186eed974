"""Shared plumbing of the operator commands: options, opening a home, progress, confirmation."""

from __future__ import annotations

import contextlib
import functools
import getpass
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from aggregator.config import load_config
from aggregator.home import AggregatorHome
from aggregator.store import home_has_store, open_home_store
from ffsecure import canonical, pki
from ffsecure.errors import ConfigError
from ffsecure.federation import load_signed_manifest

if TYPE_CHECKING:  # annotations only: Operations imports torch
    from aggregator.operations import Operations


def _home_of(home_dir: str | None, config_file: str | None) -> str:
    """The home that ``--dir DIR`` or the older ``--config DIR/aggregator.toml`` names."""
    if config_file is None:
        if home_dir is None:
            raise click.UsageError("give --dir DIR, the aggregator home directory")
        return home_dir
    click.get_current_context().ensure_object(dict)["config_file"] = config_file
    from_config = Path(config_file).resolve().parent
    if home_dir is not None and Path(home_dir).resolve() != from_config:
        raise click.UsageError(
            f"--dir {home_dir} and --config {config_file} name different homes; give --dir only"
        )
    return str(from_config)


def dir_option(f):
    """``--dir DIR`` (the aggregator home); ``--config DIR/aggregator.toml`` is a hidden alias.

    Every operator command, ``serve`` included, names the home the same way; the alias keeps
    the spelling ``serve`` used to take (its file's directory is the home).
    """

    @click.option(
        "--dir",
        "dir_arg",
        default=None,
        type=click.Path(file_okay=False, exists=True),
        help="The aggregator home directory.",
    )
    @click.option(
        "--config",
        "config_arg",
        default=None,
        hidden=True,
        type=click.Path(dir_okay=False, exists=True),
    )
    @functools.wraps(f)
    def wrapper(*args, dir_arg: str | None, config_arg: str | None, **kwargs):
        return f(*args, home_dir=_home_of(dir_arg, config_arg), **kwargs)

    return wrapper


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(f)


def yes_option(f):
    return click.option("--yes", is_flag=True, help="Do not ask for confirmation.")(f)


def operator_actor(name: str | None = None) -> str:
    """``operator:<name>`` for ledger entries (default: the login name, sanitised)."""
    if name is None:
        try:
            name = getpass.getuser()
        except Exception:  # noqa: BLE001 - no login name (containers)
            name = "operator"
    name = re.sub(r"[^A-Za-z0-9._@-]", "-", name)[:64].lstrip("._@-") or "operator"
    return f"operator:{name}"


def confirm(yes: bool, question: str) -> None:
    if not yes and not click.confirm(question, default=False, err=True):
        raise click.Abort()


def rich_progress(enabled: bool):
    """(context manager, factory) for Operations.progress: one rich bar per step, on stderr."""
    if not enabled:
        return contextlib.nullcontext(), None
    # rich only when a bar is drawn: this module is imported by `aggregator --help`
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )

    def factory(description: str, total: int):
        task = progress.add_task(description, total=total)
        return lambda done: progress.update(task, completed=done)

    return progress, factory


@contextlib.contextmanager
def open_operations(
    home_dir: str, *, progress: bool = False, actor: str | None = None, evaluation: bool = True
) -> Iterator[Operations]:
    """Open an aggregator home (federation, store, optional test set) as :class:`Operations`."""
    # heavy: both import torch, needed only once a command opens a home (not for --help)
    from aggregator.evaluation import load_evaluation
    from aggregator.operations import Operations

    home = AggregatorHome.at(home_dir)
    for path, what in (
        (home.federation, "federation manifest"),
        (home.ca_cert, "CA certificate"),
        (home.store_db, "store"),
    ):
        if not (path.is_file() or (path == home.store_db and home_has_store(home))):
            raise ConfigError(
                f"{home.root} has no {what} ({path.name} is missing)",
                code="E_CONFIG",
                hint="point --dir at an aggregator home created by `aggregator init`",
            )
    federation = load_signed_manifest(
        home.federation.read_bytes(), pki.load_cert(home.ca_cert.read_bytes())
    )
    eval_set = None
    if evaluation and home.config.is_file():
        cfg = load_config(home.config)
        eval_set = load_evaluation(
            cfg.evaluation,
            label_space=federation.label_space,
            image_shape=federation.image_shape,
        )
    bar_ctx, factory = rich_progress(progress)
    with open_home_store(home) as store, bar_ctx:
        yield Operations(
            store,
            federation,
            actor=actor or operator_actor(),
            runs_dir=Path(home.root) / "runs",
            evaluation=eval_set,
            progress=factory,
        )


def print_entries(appended) -> None:
    for a in appended:
        e = canonical.loads(a.entry)
        facts = e["facts"]
        what = next(
            (facts[k] for k in ("module_id", "classifier_id", "dataset_id") if k in facts), ""
        )
        click.echo(f"  [{a.index}] {e['type']} {what}")
