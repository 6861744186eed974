#!/bin/sh
# Make sure the PostgreSQL server binaries are available for the PostgreSQL
# store tests (tests/pg_fixture.py starts a throwaway server with initdb and
# pg_ctl). Installs Debian's `postgresql` package with apt-get when they are
# missing and this user may install packages; otherwise prints what to do.
# Exit status: 0 when initdb and pg_ctl are available afterwards, 1 if not.
set -eu

found() {
    for dir in $(echo "$PATH" | tr ':' ' ') /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "postgresql: $dir/initdb ($("$dir/initdb" --version 2>/dev/null | head -n 1))"
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
        echo "postgresql is missing: installing Debian's postgresql package with apt-get" >&2
        $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq || echo "apt-get update failed; trying the package lists already on this machine" >&2
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends postgresql
        if found; then
            exit 0
        fi
        echo "apt-get finished but no initdb was found" >&2
        exit 1
    fi
fi

cat >&2 <<'MSG'
the PostgreSQL server binaries (initdb, pg_ctl) are not installed and cannot be installed from here.
  Debian/Ubuntu (as root):  apt-get install --no-install-recommends postgresql
  Other systems:            install PostgreSQL 13 or later and put initdb and pg_ctl on the PATH
Without them the PostgreSQL store tests are skipped; the SQLite store needs nothing.
MSG
exit 1
