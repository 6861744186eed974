"""site-node on a platform without fcntl (Windows) stops with E_PLATFORM, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from site_node.platforms import UnsupportedPlatformError, check_platform
from tests.conftest import REPO, cli_env

# Windows, as far as site-node can tell: fcntl cannot be imported and sys.platform says so
# (set after click is imported, which picks its own Windows code by sys.platform)
AS_WINDOWS = """
import sys
sys.modules["fcntl"] = None
from site_node.cli import main
sys.platform = "win32"
sys.argv = ["site-node", *sys.argv[1:]]
main()
"""


def test_linux_and_macos_pass_and_windows_is_named():
    check_platform("linux")
    check_platform("darwin")
    with pytest.raises(UnsupportedPlatformError) as refused:
        check_platform("win32")
    assert refused.value.code == "E_PLATFORM" and "Windows" in refused.value.message
    assert "WSL" in (refused.value.hint or "") and "Linux" in (refused.value.hint or "")


@pytest.mark.parametrize("json_output", [False, True])
def test_site_node_on_windows_exits_with_a_typed_error_before_importing_fcntl(
    json_output, tmp_path
):
    args = ["status", "--config", str(tmp_path / "site.toml"), *(["--json"] if json_output else [])]
    done = subprocess.run(
        [sys.executable, "-c", AS_WINDOWS, *args],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    if json_output:
        assert '"code": "E_PLATFORM"' in done.stderr
    else:
        assert "error[E_PLATFORM]: site-node does not run on Windows" in done.stderr
        assert "hint:" in done.stderr
