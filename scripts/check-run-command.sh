#!/usr/bin/env bash
# Runs the README's run command exactly as a newcomer types it (the first `cargo run` line of
# the README's code blocks), waits for the server, and checks GET /healthz and GET / (the demo
# page) on the address the README sends people to; then stops it with SIGTERM and checks that
# it exits. Inside a private network namespace when root, so that the default ports are free.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" != "--inside" ] && [ "$(id -u)" -eq 0 ] && [ -z "${SFUMATO_E2E_NO_NETNS:-}" ]; then
  exec unshare --net bash -c 'ip link set lo up && exec bash scripts/check-run-command.sh --inside'
fi

run=$(awk '/^```/{f=!f;next} f' README.md | sed 's/^\$ //' | grep -E '^cargo run' | head -n 1)
if [ -z "$run" ]; then
  echo "check-run-command: no \`cargo run\` line in the README's code blocks" >&2
  exit 1
fi
page=$(grep -oE 'http://127\.0\.0\.1:[0-9]+/' README.md | head -n 1)
page=${page:-http://127.0.0.1:8080/}
echo "== README run command: $run (then GET ${page}healthz and GET $page)"

log=$(mktemp)
# Its own process group, so that cargo and the server it starts stop together.
setsid bash -c "exec $run" >"$log" 2>&1 &
pid=$!
stop() {
  kill -TERM -- "-$pid" 2>/dev/null || true
}
trap stop EXIT

ok=""
for _ in $(seq 1 600); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "check-run-command: \`$run\` exited before serving:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  if curl -fsS --max-time 2 "${page}healthz" >/dev/null 2>&1; then
    ok=1
    break
  fi
  sleep 0.5
done
if [ -z "$ok" ]; then
  echo "check-run-command: no answer on ${page}healthz after 5 minutes:" >&2
  tail -n 30 "$log" >&2
  exit 1
fi
body=$(curl -fsS --max-time 5 "$page")
if ! grep -qi '<html' <<<"$body"; then
  echo "check-run-command: GET $page did not return the demo page: ${body:0:200}" >&2
  exit 1
fi

kill -TERM -- "-$pid"
for _ in $(seq 1 40); do
  kill -0 -- "-$pid" 2>/dev/null || break
  sleep 0.25
done
if kill -0 -- "-$pid" 2>/dev/null; then
  echo "check-run-command: the server did not exit within 10 s of SIGTERM" >&2
  tail -n 20 "$log" >&2
  exit 1
fi
trap - EXIT
echo "check-run-command: ok (/healthz and the demo page answered; SIGTERM stopped it)"
rm -f "$log"
