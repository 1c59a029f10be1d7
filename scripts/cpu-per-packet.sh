#!/usr/bin/env bash
# A first, simple load figure: one WHIP publisher (looped VP8 ~300 kbps + Opus) and N WHEP
# viewers (all `sfumato-client`, str0m, real ICE/DTLS/SRTP) against a release server on
# loopback; prints server CPU time divided by packets forwarded. The real benchmark is
# crates/bench (issue 3).
#
#   cargo build --release --workspace --bins
#   scripts/cpu-per-packet.sh [viewers=10] [seconds=20] [workers=2]
set -euo pipefail
cd "$(dirname "$0")/.."
viewers=${1:-10}
secs=${2:-20}
workers=${3:-2}
port=18080
bin=target/release/sfumato
client=target/release/sfumato-client

"$bin" --listen 127.0.0.1:$port --rtc-port 48000 --workers "$workers" --placement spread >/tmp/cpp-server.log 2>&1 &
server=$!
trap 'kill $server $(jobs -p) 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fs http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done

"$client" whip --url http://127.0.0.1:$port/whip/load --duration-secs $((secs + 10)) >/dev/null &
sleep 1
for _ in $(seq "$viewers"); do
  "$client" whep --url http://127.0.0.1:$port/whep/load --duration-secs $((secs + 8)) >/dev/null &
done
sleep 4 # connected and flowing

ticks() { awk '{print $14 + $15}' /proc/$server/stat; }
forwarded() { curl -fs http://127.0.0.1:$port/api/workers | python3 -c 'import json,sys; print(sum(w["packets_forwarded"] for w in json.load(sys.stdin)["workers"]))'; }
t0=$(ticks); f0=$(forwarded)
sleep "$secs"
t1=$(ticks); f1=$(forwarded)
hz=$(getconf CLK_TCK)
python3 - "$t0" "$t1" "$f0" "$f1" "$hz" "$secs" "$viewers" "$workers" <<'PY'
import sys
t0, t1, f0, f1, hz, secs, viewers, workers = map(float, sys.argv[1:])
cpu = (t1 - t0) / hz
pkts = f1 - f0
print(f"workers={int(workers)} viewers={int(viewers)} seconds={secs:.0f}")
print(f"forwarded={pkts:.0f} packets ({pkts/secs:.0f}/s), server cpu={cpu:.2f} s ({100*cpu/secs:.1f}% of a core)")
print(f"cpu_per_forwarded_packet_us={1e6*cpu/pkts:.1f}" if pkts else "no packets forwarded")
PY
