#!/usr/bin/env bash
# A campaign run of one target: ASan libFuzzer, one process, stopped once it has used
# CPU_SECONDS (default 1800) of CPU time (utime+stime from /proc), however loaded the machine
# is, so "30 minutes" means 30 minutes of fuzzing. New inputs go to fuzz/campaign-out/<target>/new
# (ignored by git); fold them into the committed corpus with `-merge=1` (see README.md).
#
#   RUSTC_BOOTSTRAP=1 cargo fuzz build -s address     # once
#   CPU_SECONDS=1800 bash fuzz/campaign.sh client_hello -max_len=16500
set -euo pipefail
cd "$(dirname "$0")/.."
target=$1; shift
cpu_limit=${CPU_SECONDS:-1800}
out=fuzz/campaign-out/$target
mkdir -p "$out/new" "$out/art"
triple="$(rustc -vV | sed -n 's/^host: //p')"
# A copy, so a rebuild during the run doesn't replace the binary under it.
cp "fuzz/target/$triple/release/$target" "$out/bin"
args=("$out/new" "fuzz/corpus/$target")
[ -d "fuzz/regressions/$target" ] && args+=("fuzz/regressions/$target")
for d in "fuzz/$target.dict" "fuzz/${target%_*}.dict"; do
  if [ -f "$d" ]; then args+=("-dict=$d"); break; fi
done
# -timeout is wall-clock: generous, so a starved process isn't taken for a hang.
"$out/bin" "${args[@]}" -timeout=60 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$out/art/" "$@" >"$out/log" 2>&1 &
pid=$!
tick=$(getconf CLK_TCK)
cpu=0
while kill -0 "$pid" 2>/dev/null; do
  read -r -a stat <"/proc/$pid/stat" || break
  cpu=$(((stat[13] + stat[14]) / tick))
  if [ "$cpu" -ge "$cpu_limit" ]; then kill -INT "$pid"; break; fi
  sleep 5
done
rc=0; wait "$pid" || rc=$?
echo "$target: exit $rc, ${cpu}s CPU, $(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log") executions; findings: $(ls "$out/art" | tr '\n' ' ')"
