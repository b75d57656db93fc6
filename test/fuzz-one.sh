#!/usr/bin/env bash
# Fuzzes one target for FUZZTIME: `test/fuzz-one.sh PKG TARGET FUZZTIME`
# (make fuzz runs each target through it).
#
# A run that ends in Go 1.26's fuzztime race (see test/fuzz-race.sh) is
# tried once more; any other failure, and any run that wrote a failing
# input, fails at once.
set -uo pipefail
. "$(dirname "$0")/fuzz-race.sh"
pkg=$1 name=$2 fuzztime=$3
GO="${GO:-go}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for try in 1 2; do
  "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  ((rc == 0)) && exit 0
  if ((try == 1)) && fuzztime_race "$log"; then
    echo "fuzz: ${name} ended in Go's fuzztime race (go.dev/issue/75804; no failing input); once more"
    continue
  fi
  exit "$rc"
done
