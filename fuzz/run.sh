#!/bin/sh
# fuzz/run.sh TARGET [SECONDS]: one libFuzzer job on one core (run two targets at a time on two
# cores), with the seed corpus (written by seed.py the first time) and the JSON/AKS dictionary.
# Release build with debug assertions and overflow checks, under AddressSanitizer (cargo-fuzz's
# default). A crash lands in artifacts/TARGET/: copy it to regressions/TARGET/ once fixed.
set -eu
cd "$(dirname "$0")"
t=$1
secs=${2:-1200}
[ -d "corpus/$t" ] || python3 seed.py
mkdir -p "artifacts/$t" logs
cargo +nightly fuzz run -O -a "$t" "corpus/$t" -- \
  -dict=json.dict -max_total_time="$secs" -max_len=65536 -rss_limit_mb=4096 -timeout=10 \
  -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"logs/$t.log" 2>&1 || true
grep -E "DONE|Test unit written|panicked|ERROR: |stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)" "logs/$t.log" | tail -20
