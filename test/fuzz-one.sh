#!/usr/bin/env bash
# Fuzzes one target for FUZZTIME: `test/fuzz-one.sh PKG TARGET FUZZTIME`
# (make fuzz runs each target through it).
#
# Go 1.26's fuzzing coordinator can fail a target with a bare "context
# deadline exceeded" when -fuzztime runs out while a worker is mid-input
# (go.dev/issue/75804, fixed in Go 1.27): no failing input is written and
# nothing is wrong with the code. Such a run is tried once more; any other
# failure, and any run that wrote a failing input, fails at once.
set -uo pipefail
pkg=$1 name=$2 fuzztime=$3
GO="${GO:-go}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for try in 1 2; do
  "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  ((rc == 0)) && exit 0
  if ((try == 1)) && grep -q '^    context deadline exceeded$' "$log" &&
     ! grep -qE 'Failing input written|^panic:' "$log"; then
    echo "fuzz: ${name} ended in Go's fuzztime race (go.dev/issue/75804; no failing input); once more"
    continue
  fi
  exit "$rc"
done
