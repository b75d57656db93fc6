# Sourced by test/fuzz-one.sh and test/fuzz-long.sh.
#
# Go 1.26's fuzzing coordinator can fail a target with a bare "context
# deadline exceeded" when -fuzztime runs out while a worker is mid-input
# (go.dev/issue/75804, fixed in Go 1.27): no failing input is written and
# nothing is wrong with the code. fuzztime_race LOG says whether a failed
# run's log is exactly that, and nothing else (no failing input, no panic).
fuzztime_race() {
  grep -q '^    context deadline exceeded$' "$1" &&
    ! grep -qE 'Failing input written|^panic:' "$1"
}
