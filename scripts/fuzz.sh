#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ and runs each for a bounded time from its committed seed
# corpus (fuzz/corpus/TARGET) and regression inputs (fuzz/regressions/TARGET, each a crash
# once found: replayed first, every run). A crash fails the run and leaves its input in
# fuzz/artifacts/TARGET.
#
#   scripts/fuzz.sh                  # every target, FUZZ_SECONDS (default 15) each
#   FUZZ_SECONDS=600 scripts/fuzz.sh link wire
#
# Stable Rust: the targets are built with the coverage flags cargo-fuzz passes
# (`cargo fuzz build --sanitizer none`), so cargo-fuzz and nightly are not needed; with
# them, `cargo fuzz run TARGET` works in fuzz/ as well. Runs go into a scratch copy of the
# corpus, so the committed corpus changes only when someone copies inputs back on purpose.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-15}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(datagram payload dd signal answer wire link whip data engine)
fi

export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target}"
# With an explicit target, RUSTFLAGS reach the targets' code but not build scripts and
# proc macros (which must not be instrumented), as with cargo-fuzz.
triple="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --locked --bins --target "$triple"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
  bin="$CARGO_TARGET_DIR/$triple/release/$t"
  mkdir -p "artifacts/$t" "$work/$t" "corpus/$t"
  if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
    echo "== fuzz $t: regression inputs"
    "$bin" "regressions/$t"/* >"$work/$t.log" 2>&1 || { tail -n 40 "$work/$t.log"; exit 1; }
  fi
  echo "== fuzz $t: ${seconds} s"
  if ! "$bin" -max_total_time="$seconds" -print_final_stats=1 -max_len=4096 \
    -artifact_prefix="artifacts/$t/" "$work/$t" "corpus/$t" >"$work/$t.log" 2>&1; then
    tail -n 60 "$work/$t.log"
    echo "fuzz $t: failed; the input is in fuzz/artifacts/$t" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|INITED|DONE' "$work/$t.log" | tail -n 4
done
