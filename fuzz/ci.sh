#!/usr/bin/env bash
# CI fuzz pass: builds every target once with ASan (stable toolchain, RUSTC_BOOTSTRAP=1), then
# runs each for FUZZ_SECONDS (default 60) on its committed corpus and past findings, two at a
# time. Fails on any crash, panic, leak, timeout or OOM; prints each target's executions.
#
#   FUZZ_SECONDS=60 FUZZ_PARALLEL=2 bash fuzz/ci.sh
#
# New inputs go to a scratch directory, never into fuzz/corpus/: the committed corpus only
# changes by hand (see fuzz/README.md). A failing target's log and input are kept under
# $FUZZ_OUT (default fuzz/ci-out, ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."

export FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
FUZZ_PARALLEL="${FUZZ_PARALLEL:-2}"
export FUZZ_OUT="${FUZZ_OUT:-$PWD/fuzz/ci-out}"
export RUSTC_BOOTSTRAP=1
started=$SECONDS
phase() { echo "== fuzz: $1 (at ${SECONDS}s)"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  phase "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

phase "ASan build of every target"
cargo fuzz build -s address
triple="$(rustc -vV | sed -n 's/^host: //p')"
export FUZZ_BIN="$PWD/fuzz/target/$triple/release"

rm -rf "$FUZZ_OUT"
mkdir -p "$FUZZ_OUT"

# One target: scratch corpus first (libFuzzer writes new inputs to the first directory), then
# the committed corpus and regressions, which are only read.
run_one() {
  local target="$1" dict=() dirs=()
  for d in "fuzz/$target.dict" "fuzz/${target%_*}.dict"; do
    if [ -f "$d" ]; then dict=("-dict=$d"); break; fi
  done
  for d in "fuzz/corpus/$target" "fuzz/regressions/$target"; do
    if [ -d "$d" ]; then dirs+=("$d"); fi
  done
  mkdir -p "$FUZZ_OUT/$target/new"
  if "$FUZZ_BIN/$target" "$FUZZ_OUT/$target/new" "${dirs[@]}" "${dict[@]}" \
    -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$FUZZ_OUT/$target/" >"$FUZZ_OUT/$target/log" 2>&1; then
    echo "ok"
  else
    echo "FAILED"
  fi >"$FUZZ_OUT/$target/result"
}
export -f run_one

targets="$(cargo fuzz list)"
phase "$(echo "$targets" | wc -l) targets, ${FUZZ_SECONDS}s each, $FUZZ_PARALLEL at a time"
echo "$targets" | xargs -P "$FUZZ_PARALLEL" -I{} bash -c 'run_one "$1"' _ {}

failed=0
for target in $targets; do
  log="$FUZZ_OUT/$target/log"
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  cov="$(grep -aoE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)"
  result="$(cat "$FUZZ_OUT/$target/result" 2>/dev/null || echo FAILED)"
  printf '%-16s %-6s execs %-10s %s\n' "$target" "$result" "${execs:-?}" "$cov"
  if [ "$result" != ok ]; then
    failed=1
    echo "---- $target: last lines of $log"
    tail -n 40 "$log"
    ls "$FUZZ_OUT/$target"/crash-* "$FUZZ_OUT/$target"/timeout-* \
      "$FUZZ_OUT/$target"/oom-* "$FUZZ_OUT/$target"/leak-* 2>/dev/null || true
  fi
done
phase "done in $((SECONDS - started))s"
exit "$failed"
