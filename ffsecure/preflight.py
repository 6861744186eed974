"""Pre-flight check lines, shared by ``site-node check`` and ``aggregator check``.

A check is a named step that yields :class:`CheckLine` records: a status
(``PASS``, ``WARN`` or ``FAIL``), what was found, and for WARN and FAIL one
sentence a person can act on (``fix``). :func:`run_checks` runs the steps in
order and streams each line to a callback as it is made, so a terminal shows
progress on the slow ones (data scan, network). Invariants:

* a step that raises :class:`~ffsecure.errors.FFSecureError` (or OSError) becomes
  one FAIL line (its code and message, its hint as the fix), never a traceback;
* a step names the steps it needs; when one of those did not pass without a
  FAIL, it is not run and is listed under ``skipped`` in the summary (a
  check that cannot run is never shown as PASS);
* the verdict is FAIL when any line is FAIL, else WARN when any is WARN,
  else PASS; the commands exit non-zero exactly on FAIL: both exit with
  :data:`EXIT_CHECK_FAILED` (5), so one alerting rule serves both hosts.

Expiry lines come from :mod:`ffsecure.pki.expiry` (the one rule for days left
and the 30-day threshold): ``ok`` and ``never`` are PASS, ``warn`` is WARN,
``expired`` is FAIL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ffsecure.errors import FFSecureError
from ffsecure.pki.expiry import Expiry

__all__ = [
    "EXIT_CHECK_FAILED",
    "Check",
    "CheckLine",
    "CheckReport",
    "Status",
    "expiry_line",
    "fail",
    "passed",
    "run_checks",
    "warn",
]


#: The exit status of ``site-node check`` and ``aggregator check`` when a line is FAIL.
EXIT_CHECK_FAILED = 5


class Status(StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class CheckLine:
    """One finding: ``check`` names what was checked, ``detail`` what was found."""

    check: str
    status: Status
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": str(self.status),
            "detail": self.detail,
            "fix": self.fix,
        }

    def text(self) -> str:
        """``PASS  name: detail`` and, for WARN/FAIL, an indented ``fix:`` line."""
        head = f"{self.status:<4}  {self.check}: {self.detail}"
        return head if not self.fix else f"{head}\n      fix: {self.fix}"


def passed(check: str, detail: str) -> CheckLine:
    return CheckLine(check, Status.PASS, detail)


def warn(check: str, detail: str, fix: str) -> CheckLine:
    return CheckLine(check, Status.WARN, detail, fix)


def fail(check: str, detail: str, fix: str) -> CheckLine:
    return CheckLine(check, Status.FAIL, detail, fix)


def error_line(check: str, exc: FFSecureError, fix: str | None = None) -> CheckLine:
    """A FAIL line for a typed error: its code and message; the fix is its hint unless given."""
    return fail(check, f"[{exc.code}] {exc.message}", fix or exc.hint or "see docs/errors.md")


def expiry_line(check: str, expiry: Expiry, fix: str) -> CheckLine:
    """PASS/WARN/FAIL for an expiry by the rule of :mod:`ffsecure.pki.expiry`."""
    state = expiry.state
    if state == "expired":
        return fail(check, expiry.line(), fix)
    if state == "warn":
        return warn(check, expiry.line(), fix)
    return passed(check, expiry.line())


Step = Callable[[], Iterable[CheckLine]]


@dataclass(frozen=True)
class Check:
    """A named step; it runs only when every step in ``needs`` ran without a FAIL line."""

    name: str
    step: Step
    needs: tuple[str, ...] = ()
    slow: bool = False  # announce it on a terminal before it runs


@dataclass
class CheckReport:
    """Every line, in order, and the steps that could not run."""

    lines: list[CheckLine] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Status:
        statuses = {line.status for line in self.lines}
        for status in (Status.FAIL, Status.WARN):
            if status in statuses:
                return status
        return Status.PASS

    def count(self, status: Status) -> int:
        return sum(1 for line in self.lines if line.status is status)

    def summary(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "pass": self.count(Status.PASS),
            "warn": self.count(Status.WARN),
            "fail": self.count(Status.FAIL),
            "skipped": list(self.skipped),
        }

    def as_dict(self) -> dict[str, Any]:
        return {"checks": [line.as_dict() for line in self.lines], "summary": self.summary()}

    def summary_text(self) -> str:
        s = self.summary()
        skipped = f"; not run: {', '.join(self.skipped)}" if self.skipped else ""
        return (
            f"{s['verdict']}: {s['pass']} passed, {s['warn']} warnings, {s['fail']} failed{skipped}"
        )


def _lines_of(check: Check) -> Iterator[CheckLine]:
    try:
        yield from check.step()
    except FFSecureError as exc:
        yield error_line(check.name, exc)
    except OSError as exc:  # a file vanished or is unreadable between two steps
        yield fail(check.name, f"cannot read {exc.filename}: {exc.strerror}", "check the path")


def run_checks(
    checks: Sequence[Check],
    *,
    on_line: Callable[[CheckLine], None] | None = None,
    on_start: Callable[[Check], None] | None = None,
) -> CheckReport:
    """Run ``checks`` in order (see the module docstring); stream lines to ``on_line``."""
    report = CheckReport()
    failed: set[str] = set()
    for check in checks:
        if any(need in failed or need in report.skipped for need in check.needs):
            report.skipped.append(check.name)
            continue
        if on_start is not None and check.slow:
            on_start(check)
        for line in _lines_of(check):
            report.lines.append(line)
            if line.status is Status.FAIL:
                failed.add(check.name)
            if on_line is not None:
                on_line(line)
    return report
