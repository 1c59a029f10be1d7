#!/usr/bin/env bash
# Runs every test of Sfumato on a fresh Debian machine: installs what is missing (Debian's
# chromium, firefox-esr, iproute2, curl and redis-server, playwright-core, puppeteer-core and typescript from npm), checks formatting and lints, runs the
# Rust unit and integration tests, runs each fuzz target briefly, then the browser end-to-end tests in a private network
# namespace. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v unshare >/dev/null || missing+=(util-linux)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/firefox-esr ] || missing+=(firefox-esr)
command -v npm >/dev/null || missing+=(nodejs npm)
command -v curl >/dev/null || missing+=(curl)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "== [$(date +%T)] cargo fmt"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
echo "== [$(date +%T)] cargo clippy"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== [$(date +%T)] cargo build"
cargo build --release --workspace --bins
echo "== [$(date +%T)] cargo test"
cargo test --release --workspace
echo "== [$(date +%T)] fuzzing: every target from its seed corpus, 12 s each (scripts/fuzz.sh)"
FUZZ_SECONDS=12 bash scripts/fuzz.sh
echo "== [$(date +%T)] the README's run command"
bash scripts/check-run-command.sh
echo "== [$(date +%T)] benchmark smoke test (5 s, 3 participants, against sfumato)"
target/release/sfumato-bench smoke --out target/bench-smoke
echo "== [$(date +%T)] soak (2 minutes of churn: fails on any leaked gauge or on the steady pair's loss)"
target/release/sfumato-bench soak --seconds 120 --out target/bench-soak
echo "== [$(date +%T)] SDK types: client/index.d.ts checked against a typed example using every call (e2e/types)"
(cd e2e && npm ci --no-audit --no-fund --loglevel=error && node_modules/.bin/tsc -p types/tsconfig.json)
echo "== [$(date +%T)] browser end-to-end tests"
SFUMATO_BIN=target/release/sfumato SFUMATO_CLIENT_BIN=target/release/sfumato-client bash e2e/run.sh
