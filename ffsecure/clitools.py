"""Shared helpers for the three command-line programs (ffsecure, site-node, aggregator).

Commands live in small modules and are imported only when invoked, so that
``--help`` is quick and a broken optional dependency of one command does not
break the others. Every :class:`~ffsecure.errors.FFSecureError` that escapes a
command is printed as ``error[CODE]: message`` plus a hint, and turned into a
non-zero exit status (2 for a :class:`~ffsecure.errors.UsageError`, as click's own
usage errors, else 1); with ``--json`` it is printed as a JSON object instead.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ffsecure import __version__, templates
from ffsecure.errors import ConfigError, FFSecureError, UsageError
from ffsecure.logjson import JsonFormatter
from ffsecure.preflight import EXIT_CHECK_FAILED, Check, CheckLine, Status, run_checks

EXIT_ERROR = 1
EXIT_USAGE = 2
MAX_KEY_FILE = 4096

#: The levels ``--log-level`` takes (any case); anything else is a usage error (exit 2).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class LazyGroup(click.Group):
    """A click group whose sub-commands are ``"module:attribute"`` strings."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx)) | set(self._lazy)
        return sorted(n for n in names if self.get_command(ctx, n) is not None)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self._lazy:
            module_name, attr = self._lazy[name].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name == module_name:  # the command is not part of this build
                    return None
                raise
            return getattr(module, attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FFSecureError as exc:
            report_error(exc, as_json=bool((ctx.obj or {}).get("json")))
            ctx.exit(EXIT_USAGE if isinstance(exc, UsageError) else EXIT_ERROR)


def program_group(
    prog_name: str,
    commands: dict[str, str],
    help_text: str,
    *,
    log_level: str = "INFO",
    docs: tuple[str, ...] = (),
) -> LazyGroup:
    """The root group of one of the programs: its lazy sub-commands, ``--version``
    and the logging options.

    All three programs take ``--log-level`` and ``--log-json/--human-logs`` before the
    sub-command and answer ``-h``; only the name, the sub-commands, the help line and the default
    level differ. The long-running commands (``aggregator serve``, ``site-node run``) take the
    same pair (:func:`log_format_option`) and log JSON unless told otherwise. The epilog of
    ``--help`` names where this installation's documentation pages are.
    """

    @click.group(
        name=prog_name,
        cls=LazyGroup,
        lazy=commands,
        help=help_text,
        epilog=templates.docs_hint(*docs) if docs else None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    @click.version_option(__version__, prog_name=prog_name)
    @click.option(
        "--log-level",
        default=log_level,
        show_default=True,
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        help="Logging level.",
    )
    @log_format_option
    @click.pass_context
    def group(ctx: click.Context, log_level: str, log_json: bool | None) -> None:
        obj = ctx.ensure_object(dict)
        obj["log_level"], obj["log_json"] = log_level.upper(), log_json
        setup_logging(log_level, json_lines=bool(log_json))

    return group


def log_format_option(f):
    """``--log-json/--human-logs``: on the programs, and on the long-running commands."""
    return click.option(
        "--log-json/--human-logs",
        "log_json",
        default=None,
        help="One JSON object per log line, or readable lines "
        "[default: readable; JSON for serve and run].",
    )(f)


def setup_command_logging(ctx: click.Context, log_json: bool | None) -> None:
    """Re-configure logging for a long-running command: JSON lines unless ``--human-logs``.

    The command's own flag wins, then the program's (``aggregator --human-logs serve``), then
    the default (JSON, what a service manager's journal wants). The level is the program's.
    """
    obj = ctx.find_object(dict) or {}
    chosen = log_json if log_json is not None else obj.get("log_json")
    level = obj.get("log_level") or logging.getLevelName(logging.getLogger().level)
    setup_logging(str(level), json_lines=True if chosen is None else bool(chosen))


def report_error(exc: FFSecureError, *, as_json: bool = False) -> None:
    logging.getLogger("ffsecure").debug("command failed: %s", exc)
    if as_json:
        click.echo(json.dumps({"error": exc.to_dict()}), err=True)
        return
    click.secho(f"error[{exc.code}]: {exc.message}", fg="red", err=True)
    if exc.hint:
        click.echo(f"  hint: {exc.hint}", err=True)


def setup_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    """Configure logging: human lines on stderr, or one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def read_key_arg(value: str, what: str) -> str:
    """A verifier key given on the command line: the key itself or the path of a file holding it.

    A path that exists wins; otherwise the value must look like a key
    (``name+hash+base64``). Only the shape is checked here; the key's parser
    checks the rest.
    """
    path = Path(value)
    if path.is_file():
        if path.stat().st_size > MAX_KEY_FILE:
            raise ConfigError(f"{what} file {value} is larger than {MAX_KEY_FILE} bytes")
        return path.read_text("utf-8", "replace").strip()
    if value.count("+") < 2:
        raise ConfigError(
            f"{what} {value!r} is neither a file nor a verifier key",
            code="E_CONFIG",
            hint="pass the key (name+hash+base64) or the path of the file that holds it",
        )
    return value.strip()


def renamed_option(value: str | None, old_value: str | None, name: str, old_name: str) -> str:
    """The value of an option that was renamed, given by its new or (deprecated) old name."""
    if value and old_value:
        raise click.UsageError(f"{old_name} is the old name of {name}; give only {name}")
    if not value and not old_value:
        raise click.UsageError(f"missing option {name}")
    if old_value:
        click.echo(f"warning: {old_name} is deprecated; use {name}", err=True)
    return value or old_value or ""


def run_check_command(ctx: click.Context, checks: Sequence[Check], *, as_json: bool) -> None:
    """Run pre-flight ``checks`` for ``site-node check`` / ``aggregator check`` and exit.

    Text: one coloured line per finding as it is made (a note on stderr before a slow
    step when stderr is a terminal) and the summary; ``--json``: the report at the end.
    Exit status 0 without a FAIL, :data:`~ffsecure.preflight.EXIT_CHECK_FAILED` with one.
    """

    def announce(check: Check) -> None:
        click.echo(f"... checking {check.name}", err=True)

    def show(line: CheckLine) -> None:
        color = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "red"}[line.status]
        click.secho(line.text(), fg=color)

    report = run_checks(
        checks,
        on_line=None if as_json else show,
        on_start=announce if not as_json and sys.stderr.isatty() else None,
    )
    if as_json:
        echo_json(report.as_dict())
    else:
        click.echo(report.summary_text())
    if report.verdict is Status.FAIL:
        ctx.exit(EXIT_CHECK_FAILED)
