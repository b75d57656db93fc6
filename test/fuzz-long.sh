#!/usr/bin/env bash
# Runs every fuzz target in the tree for FUZZTIME each (`make fuzz-long`,
# default 10m) and prints, per target, the executions, the new coverage
# ("new interesting" inputs found in this run, and the corpus total) and
# whether it crashed. The targets are found in the sources, not listed by
# hand, so a new one is never left out. Exit status 1 if any target failed.
set -uo pipefail
cd "$(dirname "$0")/.."
. test/fuzz-race.sh
FUZZTIME="${FUZZTIME:-10m}"
GO="${GO:-go}"
LOG_DIR="${LOG_DIR:-bin/fuzz-long}"
mkdir -p "$LOG_DIR"
# go test's own -timeout (10m by default) would stop a 10-minute run inside
# its last input: give each run its fuzz time plus ten minutes (a target
# that hangs still ends).
case "$FUZZTIME" in
  *h) timeout="$(( ${FUZZTIME%h} * 60 + 10 ))m" ;;
  *m) timeout="$(( ${FUZZTIME%m} + 10 ))m" ;;
  *s) timeout="$(( ${FUZZTIME%s} + 600 ))s" ;;
  *)  timeout=60m ;; # a count of executions (1000x)
esac

# package:Target for every `func FuzzX(f *testing.F)` in a _test.go file.
mapfile -t targets < <(grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' . \
  | sed -E 's#^(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*#\1:\2#' | sort)
if ((${#targets[@]} == 0)); then echo "fuzz-long: no fuzz targets found" >&2; exit 1; fi
echo "fuzz-long: ${#targets[@]} targets, ${FUZZTIME} each (logs in ${LOG_DIR}/)"

# Every package's test binary is built first, with the fuzzing
# instrumentation (-fuzz at build time), and each target runs from it: an
# hour and more of fuzzing must not depend on the tree staying as it was
# (a target built later from a tree being edited failed to compile).
bin_dir="$(cd "$LOG_DIR" && pwd)/bin"
mkdir -p "$bin_dir"
module=$("$GO" list -m)
cache=$("$GO" env GOCACHE)
declare -A built=()
for t in "${targets[@]}"; do
  pkg="${t%%:*}" name="${t#*:}"
  [[ -n "${built[$pkg]:-}" ]] && continue
  bin="${bin_dir}/$(echo "${pkg#./}" | tr / _).test"
  if ! "$GO" test -c -fuzz "^${name}\$" -o "$bin" "$pkg"; then
    echo "fuzz-long: ${pkg} does not build" >&2
    exit 1
  fi
  built[$pkg]="$bin"
done

rows=() failed=0
for t in "${targets[@]}"; do
  pkg="${t%%:*}" name="${t#*:}"
  log="${LOG_DIR}/$(echo "${pkg#./}" | tr / _)_${name}.log"
  echo "fuzz-long: ${name} in ${pkg} for ${FUZZTIME}"
  start=$(date +%s)
  # As go test runs it: in the package's directory (its testdata/fuzz
  # corpus), with the go command's cache of generated inputs.
  for try in 1 2; do
    (cd "$pkg" && "${built[$pkg]}" -test.run '^$' -test.fuzz "^${name}\$" -test.fuzztime "$FUZZTIME" \
      -test.timeout "$timeout" -test.fuzzcachedir "${cache}/fuzz/${module}/${pkg#./}") >"$log" 2>&1
    rc=$?
    # Go's fuzztime race (test/fuzz-race.sh): the fuzzing happened, only
    # its ending failed. Run once more; the first log is kept beside.
    if ((rc != 0 && try == 1)) && fuzztime_race "$log"; then
      mv "$log" "${log%.log}.race.log"
      echo "fuzz-long: ${name} ended in Go's fuzztime race (go.dev/issue/75804; no failing input); once more"
      continue
    fi
    break
  done
  secs=$(( $(date +%s) - start ))
  # The last progress line carries the totals:
  # "fuzz: elapsed: 10m0s, execs: 123456 (205/sec), new interesting: 3 (total: 57)"
  last=$(grep -E '^fuzz: elapsed: .*execs: ' "$log" | tail -1)
  execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")
  newi=$(sed -nE 's/.*new interesting: ([0-9]+) \(total: ([0-9]+)\).*/\1 (corpus \2)/p' <<<"$last")
  if ((rc == 0)); then
    result="ok"
  else
    failed=1
    crash=$(grep -Eo 'testdata/fuzz/[^ ]+' "$log" | tail -1)
    result="FAILED (exit ${rc}${crash:+, input ${pkg#./}/${crash}}; see ${log})"
  fi
  rows+=("$(printf '%-22s %-18s %12s  %-20s %5ss  %s' "${pkg#./}" "$name" "${execs:-?}" "${newi:-?}" "$secs" "$result")")
done

echo
printf '%-22s %-18s %12s  %-20s %6s  %s\n' package target executions "new interesting" time result
printf '%s\n' "${rows[@]}"
exit "$failed"
