#!/bin/sh
# Make sure headless Chromium is available for the audit report test
# (tests/integration/test_audit_report.py). Installs Debian's `chromium` package
# with apt-get when it is missing and this user may install packages; otherwise
# prints what to do. Exit status: 0 when chromium is available afterwards, 1 if not.
set -eu

found() {
    for name in chromium chromium-browser; do
        if command -v "$name" >/dev/null 2>&1; then
            echo "chromium: $(command -v "$name") ($("$name" --version 2>/dev/null | head -n 1))"
            return 0
        fi
    done
    return 1
}

if found; then
    exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        SUDO="none"
    fi
    if [ "$SUDO" != "none" ]; then
        echo "chromium is missing: installing Debian's chromium package with apt-get" >&2
        $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq || echo "apt-get update failed; trying the package lists already on this machine" >&2
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends chromium
        if found; then
            exit 0
        fi
        echo "apt-get finished but no chromium command was found" >&2
        exit 1
    fi
fi

cat >&2 <<'MSG'
chromium is not installed and cannot be installed from here.
  Debian/Ubuntu (as root):  apt-get install --no-install-recommends chromium
  Other systems:            install Chromium or Google Chrome and put `chromium` on the PATH
Without it the browser test of the audit report is skipped; `ffsecure audit report`
itself needs no browser.
MSG
exit 1
