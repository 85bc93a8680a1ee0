#!/usr/bin/env bash
# CI's check, repeated: clone this repository into a fresh directory, check out COMMIT and run
# `bash .ci/run` (install + the README's test command) RUNS times in a row (default 3), stopping
# at the first failure. One line per run in $OUT (default /tmp/ci-loop.txt): commit, exit code,
# seconds, pytest's summary; each run's full log in /tmp/ci-N.log. docs/reliability.md has the
# record. Run it on an otherwise idle machine: CI runs alone.
#
#   bash scripts/ci-loop.sh "$(git rev-parse HEAD)" [RUNS]
set -uo pipefail
commit=${1:?usage: ci-loop.sh COMMIT [RUNS]}
runs=${2:-3}
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out=${OUT:-/tmp/ci-loop.txt}
for i in $(seq 1 "$runs"); do
  dir=$(mktemp -d /tmp/ci-clone-XXXX)
  git clone -q "$repo" "$dir" && git -C "$dir" checkout -q "$commit" || exit 2
  t0=$(date +%s)
  (cd "$dir" && bash .ci/run) > "/tmp/ci-$i.log" 2>&1
  rc=$?
  summary=$(grep -E '[0-9]+ (passed|failed)' "/tmp/ci-$i.log" | tail -1)
  echo "run $i commit $commit rc=$rc seconds=$(( $(date +%s) - t0 )) $summary" | tee -a "$out"
  rm -rf "$dir"
  [ "$rc" -eq 0 ] || exit "$rc"
done
