#!/usr/bin/env bash
# Installs secantusdb (PyPI), the MongoDB wire-protocol server the MongoDB tasks are tested
# against (`swoop_testkit::mongo`), into a virtualenv in the cache folder (`$SWOOP_CACHE`,
# default ~/.cache/swoop-ci). Idempotent. Prints the venv's python path (the fixture runs
# `python -m secantus`; `SWOOP_SECANTUS_PYTHON` may point at another one).
set -euo pipefail
version=0.7.0b3
cache="${SWOOP_CACHE:-$HOME/.cache/swoop-ci}"
venv="$cache/secantus-$version"
if [ ! -f "$venv/.installed" ]; then
    echo "installing secantusdb $version into $venv" >&2
    mkdir -p "$cache"
    rm -rf "$venv"
    python3 -m venv "$venv"
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "secantusdb==$version" >&2; then
        rm -rf "$venv"
        exit 1
    fi
    touch "$venv/.installed"
fi
echo "$venv/bin/python"
