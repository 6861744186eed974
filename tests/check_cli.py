"""Running ``site-node check`` / ``aggregator check`` as real processes, for their tests.

:func:`run_check` runs the command with ``--json`` and, with ``text_too``, again
without it, and asserts that the two agree: the same exit status, every JSON
line shown in the text (the disk line by its status only: free space moves
between the runs) and the verdict on the last text line.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, cli_env


def run_check(
    args: list[str], *, text_too: bool = False
) -> tuple[subprocess.CompletedProcess, dict]:
    """``python -m <args> --json`` (and the text run with ``text_too``): (process, report)."""

    def run(*extra):
        return subprocess.run(
            [sys.executable, "-m", *args, *extra],
            cwd=REPO,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    as_json = run("--json")
    assert "Traceback" not in as_json.stderr, as_json.stderr
    report = json.loads(as_json.stdout)
    if not text_too:
        return as_json, report
    text = run()
    assert text.returncode == as_json.returncode, (text.stdout, as_json.stdout)
    for line in report["checks"]:
        shown = f"{line['status']:<4}  {line['check']}: {line['detail']}"
        if line["check"] == "disk":
            shown = shown.partition(" GiB")[0].rpartition(" ")[0]
        assert shown in text.stdout
    assert text.stdout.strip().splitlines()[-1].startswith(report["summary"]["verdict"])
    return text, report


def not_passed(report: dict) -> dict[str, dict]:
    """The WARN and FAIL lines of a report, by check name."""
    return {c["check"]: c for c in report["checks"] if c["status"] != "PASS"}
