#!/usr/bin/env bash
# Installs moto's server (`moto[server]` from PyPI), the SQS-compatible server the SQS trigger is
# tested against, into a virtualenv in the cache folder (`$SWOOP_CACHE`, default
# ~/.cache/swoop-ci). Idempotent. Prints moto_server's path.
set -euo pipefail
version=5.2.5
cache="${SWOOP_CACHE:-$HOME/.cache/swoop-ci}"
venv="$cache/moto-$version"
if [ ! -f "$venv/.installed" ]; then
    echo "installing moto[server] $version into $venv" >&2
    mkdir -p "$cache"
    rm -rf "$venv"
    python3 -m venv "$venv"
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$version" >&2; then
        rm -rf "$venv"
        exit 1
    fi
    touch "$venv/.installed"
fi
echo "$venv/bin/moto_server"
