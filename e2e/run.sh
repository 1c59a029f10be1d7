#!/usr/bin/env bash
# Runs the browser end-to-end tests against a built server, inside a private network
# namespace that nothing leaves: `lo` up, and a veth pair whose two ends both stay in the
# namespace, one of them with 192.0.2.1/24 (TEST-NET-1, RFC 5737, a documentation range) and
# the default route (via 192.0.2.2, which nobody answers for). Firefox starts no ICE
# gathering where loopback is the only interface; with that address it gathers 192.0.2.1
# (and reaches a server that announces it: tests/firefox.test.js). The other tests' servers
# bind and announce 127.0.0.1; packets between two local addresses go through `lo` whichever
# link holds them (e2e/README.md, "The network namespace").
#
#   cargo build --release --workspace --bins  # first: the namespace has no registry access
#   e2e/run.sh                     # all tests
#   e2e/run.sh tests/whep.test.js  # some tests (paths relative to e2e/)
#
# Env: SFUMATO_BIN (default target/release/sfumato), SFUMATO_CLIENT_BIN (default
# target/release/sfumato-client), both relative to the repo root; SFUMATO_ARGS (extra server
# flags); CHROMIUM_BIN (default /usr/bin/chromium); FIREFOX_BIN (default /usr/bin/firefox-esr);
# SFUMATO_E2E_NO_NETNS=1 to run without the namespace (e.g. when not root).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"

export SFUMATO_BIN="$(realpath -m "${SFUMATO_BIN:-target/release/sfumato}")"
export SFUMATO_CLIENT_BIN="$(realpath -m "${SFUMATO_CLIENT_BIN:-target/release/sfumato-client}")"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1

chromium="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "run.sh: $chromium missing, installing Debian's chromium" >&2
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
fi
firefox="${FIREFOX_BIN:-/usr/bin/firefox-esr}"
if [ ! -x "$firefox" ]; then
  echo "run.sh: $firefox missing, installing Debian's firefox-esr" >&2
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends firefox-esr
fi

if [ ! -x "$SFUMATO_BIN" ]; then
  echo "run.sh: server binary $SFUMATO_BIN not found; build it first (cargo build --release --workspace --bins)" >&2
  exit 1
fi

cd "$here"
npm ci --no-audit --no-fund --loglevel=error

if [ "$#" -gt 0 ]; then
  tests=("$@")
else
  tests=(tests/*.test.js)
fi

# One test file at a time: each starts a server and several Chromium contexts.
cmd=(node --test --test-concurrency=1 --test-timeout=180000 "${tests[@]}")

if [ -n "${SFUMATO_E2E_NO_NETNS:-}" ]; then
  exec "${cmd[@]}"
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "run.sh: the network namespace needs root (or set SFUMATO_E2E_NO_NETNS=1)" >&2
  exit 1
fi
# No IPv6 link-local addresses on the veth ends (addrgenmode none): 192.0.2.1 is the one
# address besides loopback that a browser can gather.
netns_setup='
set -e
ip link set lo up
ip link add sfumato0 type veth peer name sfumato1
ip link set sfumato0 addrgenmode none
ip link set sfumato1 addrgenmode none
ip addr add 192.0.2.1/24 dev sfumato0
ip link set sfumato0 up
ip link set sfumato1 up
ip route add default via 192.0.2.2 dev sfumato0
exec "$@"'
exec unshare --net bash -c "$netns_setup" run.sh "${cmd[@]}"
