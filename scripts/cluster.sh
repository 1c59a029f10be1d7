#!/usr/bin/env bash
# Starts a three-node Sfumato cluster on this machine: one Redis (Debian's redis-server, in
# memory, on a loopback port) and three nodes on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (all of
# 127/8 is loopback), port 8080 each. Open one node's demo page per participant; Ctrl-C stops
# everything.
#
#   bash scripts/cluster.sh            # three nodes
#   NODES=2 bash scripts/cluster.sh    # two
#   REDIS_PORT=6390 bash scripts/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=${NODES:-3}
redis_port=${REDIS_PORT:-6390}
if ! command -v redis-server >/dev/null; then
  echo "cluster.sh: needs Debian's redis-server (apt-get install redis-server)" >&2
  exit 1
fi
cargo build --release
pids=()
stop() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning &
pids+=($!)
sleep 0.5
for i in $(seq 1 "$nodes"); do
  target/release/sfumato --listen "127.0.0.$i:8080" --redis "redis://127.0.0.1:$redis_port" &
  pids+=($!)
done
sleep 1
echo
echo "A $nodes-node cluster is up. One room, each participant on another node:"
names=(alice bob carol dave erin)
for i in $(seq 1 "$nodes"); do
  echo "  http://127.0.0.$i:8080/?room=demo&name=${names[$(( (i - 1) % 5 ))]}"
done
echo "The nodes: http://127.0.0.1:8080/api/nodes   The room: http://127.0.0.1:8080/api/rooms/demo"
echo "Ctrl-C stops the cluster."
wait
