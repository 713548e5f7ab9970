#!/usr/bin/env bash
# Installs one PyPI package spec into its own virtualenv in the cache folder (`$SWOOP_CACHE`,
# default ~/.cache/swoop-ci) as `<name>-<version>`, once; prints the venv's folder.
# Usage: install-pypi-venv.sh NAME VERSION SPEC   (e.g. moto 5.2.5 'moto[server]==5.2.5')
set -euo pipefail
name=$1 version=$2 spec=$3
cache="${SWOOP_CACHE:-$HOME/.cache/swoop-ci}"
venv="$cache/$name-$version"
if [ ! -f "$venv/.installed" ]; then
    echo "installing $spec into $venv" >&2
    mkdir -p "$cache"
    rm -rf "$venv"
    python3 -m venv "$venv"
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2; then
        rm -rf "$venv"
        exit 1
    fi
    touch "$venv/.installed"
fi
echo "$venv"
