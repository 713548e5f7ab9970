#!/usr/bin/env bash
# Runs `swoop bench kafka-drain` N times, each run on a freshly started tansu (an empty
# `tansu.db`: tansu slows down as its SQLite file grows), and prints each run's figures. Give
# several binaries to alternate them run by run (an A/B in the same minutes):
#   scripts/bench-kafka-drain.sh 8 target/release/swoop
#   scripts/bench-kafka-drain.sh 6 /tmp/swoop-before target/release/swoop
# Extra arguments for the bench go in BENCH_ARGS (e.g. BENCH_ARGS=--swoop-only). Needs tansu
# (scripts/install-tansu.sh) and release builds; the broker listens on 127.0.0.1:19092.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 RUNS SWOOP_BINARY [SWOOP_BINARY ...]" >&2; exit 2; }
runs=$1
shift
tansu=$("$(dirname "$0")/install-tansu.sh")
dir=$(mktemp -d)
pid=
stop_tansu() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; pid=; }
trap 'stop_tansu; rm -rf "$dir"' EXIT
for run in $(seq "$runs"); do
    for bin in "$@"; do
        stop_tansu
        rm -f "$dir"/tansu.db*
        (cd "$dir" && exec "$tansu" broker --listener-url tcp://127.0.0.1:19092 \
            --advertised-listener-url tcp://127.0.0.1:19092 --storage-engine sqlite://tansu.db) \
            >"$dir/tansu.log" 2>&1 &
        pid=$!
        for _ in $(seq 100); do
            (echo >/dev/tcp/127.0.0.1/19092) 2>/dev/null && break
            sleep 0.1
        done
        echo "== run $run: $bin"
        # shellcheck disable=SC2086
        "$bin" bench kafka-drain --bootstrap 127.0.0.1:19092 --records 20000 ${BENCH_ARGS:-} \
            | grep -v '^\s*$'
    done
done
