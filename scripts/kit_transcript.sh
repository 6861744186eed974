#!/usr/bin/env bash
# A site installed from a startup kit on a clean state directory, every role by its own CLI:
#   CA: pki init, federation init/create, pki kit (aggregator, then the site from its CSR)
#   aggregator: init --host (step 1), install-kit, serve (loopback, mTLS 1.3)
#   site: init, enroll, install-kit with a WRONG fingerprint (refused, nothing written),
#         install-kit with the right one, check (no FAIL), check with data.source on a
#         missing folder (FAIL, exit 5), site.toml restored, run --once -> registered module
#   operator: aggregator modules list
#
# Usage: scripts/kit_transcript.sh [WORKDIR]   (default: a new temporary folder)
# PYTHON names the interpreter (default: python3 with the checkout on PYTHONPATH).
# Digits data (shipped with scikit-learn), the tiny cvae for one epoch: about a minute
# on two CPU cores. Every command is echoed with "$ " before its output.
set -euo pipefail
exec 2>&1  # one transcript: every command's errors and logs in order with its output

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="${1:-$(mktemp -d -t ffsecure-kit-XXXXXX)}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
if [ -n "$(ls -A "$WORK")" ]; then
    echo "error: $WORK is not empty" >&2
    exit 2
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
cd "$WORK"

ffsecure() { "$PYTHON" -m ffsecure "$@"; }
aggregator() { "$PYTHON" -m aggregator "$@"; }
site-node() { "$PYTHON" -m site_node "$@"; }
show() {  # echo a command, run it, keep going whatever it returns; its status in $rc
    echo "\$ $*"
    set +e
    "$@"
    rc=$?
    set -e
    [ "$rc" -eq 0 ] || echo "(exit status $rc)"
}
must() { show "$@"; [ "$rc" -eq 0 ] || { echo "transcript: '$1 $2' failed" >&2; exit 1; }; }

PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
echo "# workdir $WORK, aggregator port $PORT"

echo; echo "## CA operator: the CA"
must ffsecure pki init --federation-id kit-demo --ca-dir ca --no-passphrase
FP="$(ffsecure pki fingerprint ca/ca.pem --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["sha256_colon"])')"

echo; echo "## aggregator operator: step 1 (keys; the host name goes into the CSR)"
must aggregator init --dir agg --federation-id kit-demo --host localhost --host 127.0.0.1

echo; echo "## CA operator: the federation manifest and the aggregator's kit"
must ffsecure federation init --config ca/federation.toml --ca-dir ca \
    --public-keys agg/public-keys.json --endpoint "127.0.0.1:$PORT"
"$PYTHON" - ca/federation.toml <<'EOF'
import sys
from pathlib import Path
from ffsecure import templates
path = Path(sys.argv[1])
text = path.read_text()
for table, key, value in (
    (None, "label_space", [str(i) for i in range(10)]),
    (None, "image_shape", [1, 8, 8]),
    ("generator", "size", "tiny"),
    ("dp_policy", "required", False),
):
    text = templates.fill(text, table, key, value)
path.write_text(text)
EOF
echo "(federation.toml edited: digits labels 0-9, 1x8x8 images, tiny cvae, DP not required)"
must ffsecure federation create --config ca/federation.toml --ca-dir ca --out ca/federation.json
must ffsecure pki kit --aggregator --csr agg/aggregator.csr --ca-dir ca \
    --federation ca/federation.json --out ca/aggregator.kit

echo; echo "## aggregator operator: step 2 from the kit, then serve"
must aggregator install-kit ca/aggregator.kit --dir agg --expect-ca-fingerprint "$FP" \
    --listen "127.0.0.1:$PORT"
# the interpreter itself in the background, not the shell function: $! must be the server's
# pid, or the EXIT trap kills a subshell and leaves the server running
"$PYTHON" -m aggregator serve --dir agg >serve.log 2>&1 &
SERVE=$!
trap 'kill "$SERVE" 2>/dev/null || true; wait "$SERVE" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do [ -s agg/serve.port ] && break; sleep 0.1; done
[ -s agg/serve.port ] || { cat serve.log; exit 1; }
echo "(aggregator serve listening on 127.0.0.1:$(cat agg/serve.port), pid $SERVE)"

echo; echo "## site IT: clean state directory, key and CSR (the key never leaves the site)"
mkdir site
must site-node enroll --federation-id kit-demo --site-id site-1 \
    --key site/state/keys/site.key --csr site/site-1.csr --no-passphrase
ls -la site/state

echo; echo "## CA operator: the site's kit, from its CSR"
must ffsecure pki kit --site-id site-1 --csr site/site-1.csr --ca-dir ca \
    --federation ca/federation.json --out site/site-1.kit
show tar -tvf site/site-1.kit

echo; echo "## site IT: install-kit with a wrong fingerprint is refused, nothing written"
WRONG="$(printf '%064d' 0)"
show site-node install-kit site/site-1.kit --config site/site.toml --expect-ca-fingerprint "$WRONG"
[ "$rc" -ne 0 ] || { echo "transcript: a wrong fingerprint was accepted" >&2; exit 1; }
show ls site/state
[ ! -e site/site.toml ] || { echo "transcript: site.toml was written" >&2; exit 1; }

echo; echo "## site IT: install-kit with the fingerprint read out of band (openssl's form)"
must site-node install-kit site/site-1.kit --config site/site.toml --expect-ca-fingerprint "$FP"
"$PYTHON" - site/site.toml <<'EOF'
import sys
from pathlib import Path
from ffsecure import templates
path = Path(sys.argv[1])
text = path.read_text()
for table, key, value in (
    ("aggregator", "server_name", "localhost"),
    ("data", "classes", ["0", "1", "2"]),
    ("train", "size", "tiny"),
    ("train", "epochs", 1),
):
    text = templates.fill(text, table, key, value)
path.write_text(text)
EOF
echo "(site.toml edited: classes 0-2 of digits, tiny schedule, 1 epoch)"

echo; echo "## site IT: pre-flight check (WARN lines allowed, no FAIL)"
must site-node check --config site/site.toml

echo; echo "## site IT: a data folder that is not there fails the check (exit 5)"
cp -p site/site.toml site/site.toml.good
"$PYTHON" - site/site.toml "$WORK/site/missing-images" <<'EOF'
import sys
from pathlib import Path
from ffsecure import templates
path = Path(sys.argv[1])
path.write_text(templates.fill(path.read_text(), "data", "source", f"folder:{sys.argv[2]}"))
EOF
echo "(site.toml edited: data.source = \"folder:$WORK/site/missing-images\")"
show site-node check --config site/site.toml
[ "$rc" -eq 5 ] || { echo "transcript: check did not exit 5 on a FAIL" >&2; exit 1; }
mv site/site.toml.good site/site.toml
echo "(site.toml restored)"

echo; echo "## site IT: one cycle"
must site-node status --config site/site.toml --offline
must site-node run --once --config site/site.toml

echo; echo "## aggregator operator: the registered module"
must aggregator modules list --dir agg
echo; echo "# done: $WORK"
