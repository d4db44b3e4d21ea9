#!/usr/bin/env bash
# `make test`: both phases at once, each on its own real stack.
#
#   polite      every test that shares the stack politely, in parallel (pytest-xdist), on the
#               stack `lakehook stack up` started (ports 8000, 8080, 9083, 5432, 5000, 3000);
#   disruptive  the tests that stop a component for 60 s or restart the whole stack, one after
#               the other, on a second stack built by the same scripts: its own data, logs
#               and ports (18000, 18080, 19083, 15432, 15000, 13000), the first stack's
#               installed builds (linked, nothing is installed twice).
#
# The disruptive tests mostly wait (a 60 s outage each) while the polite ones keep the two
# cores busy, so together they take about as long as the polite phase alone. The second stack
# is stopped at the end. Exit status: the first failing phase's.
set -uo pipefail

BIN="${BIN:-.venv/bin}"
WORKERS="${TEST_WORKERS:-4}"
FILTER="${PYTEST_FILTER:-}"
shared="${LAKEHOOK_STACK_DIR:-$HOME/.cache/lakehook/stack}"
own="${LAKEHOOK_DISRUPTIVE_STACK_DIR:-${shared%/}-disruptive}"
log="$(mktemp -t lakehook-disruptive.XXXXXX.log)"

mkdir -p "$own"
for part in bin build dist downloads; do
    ln -sfn "$shared/$part" "$own/$part"
done

disruptive() {
    export LAKEHOOK_STACK_DIR="$own" \
        LAKEHOOK_LAKEFS_URL=http://127.0.0.1:18000 \
        LAKEHOOK_TRINO_URL=http://127.0.0.1:18080 \
        LAKEHOOK_HMS_URI=thrift://127.0.0.1:19083 \
        LAKEHOOK_POSTGRES_PORT=15432 \
        LAKEHOOK_MARQUEZ_URL=http://127.0.0.1:15000 \
        LAKEHOOK_MARQUEZ_WEB_URL=http://127.0.0.1:13000
    "$BIN/lakehook" stack up || return
    "$BIN/pytest" -m "${FILTER}disruptive" -p no:cacheprovider --basetemp "$(mktemp -d)"
    local status=$?
    "$BIN/lakehook" stack down >/dev/null 2>&1
    return "$status"
}

echo "== disruptive phase: on its own stack ($own), log: $log"
disruptive >"$log" 2>&1 &
second=$!

echo "== polite phase: $WORKERS workers on the stack at $shared"
"$BIN/pytest" -n "$WORKERS" --dist loadfile --durations=15 -m "${FILTER}not disruptive"
first=$?

wait "$second"
other=$?
echo "== disruptive phase (exit $other):"
cat "$log"
if [ "$first" -ne 0 ]; then exit "$first"; fi
exit "$other"
