#!/usr/bin/env bash
# Installs the Kafka-compatible test broker `tansu` (from crates.io) into a cache folder that
# later runs reuse, and prints the binary's path. About 11 minutes on 2 cores the first time;
# instant afterwards. Override the folder with SWOOP_CACHE.
set -euo pipefail
version=0.6.0
root="${SWOOP_CACHE:-$HOME/.cache/swoop-ci}/tansu-$version"
bin="$root/bin/tansu"
if [ ! -x "$bin" ]; then
    mkdir -p "$(dirname "$root")"
    echo "installing tansu $version into $root (first time only; ~11 min on 2 cores)" >&2
    cargo install tansu --version "$version" --locked --features libsql --root "$root" >"$root.log" 2>&1 || {
        cat "$root.log" >&2
        exit 1
    }
fi
echo "$bin"
