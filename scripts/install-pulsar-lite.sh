#!/usr/bin/env bash
# Installs pulsar-lite (PyPI; a Pulsar-compatible broker on RocksDB inside the wheel), the
# broker the Pulsar trigger is tested against, into a virtualenv in the cache folder
# (`$SWOOP_CACHE`, default ~/.cache/swoop-ci). Idempotent. Prints the broker binary's path. The
# official Python client, `pulsar-client`, comes with it as a dependency.
set -euo pipefail
version=0.2.0
venv=$("$(dirname "$0")/install-pypi-venv.sh" pulsar-lite "$version" "pulsar-lite==$version")
# The broker is a binary inside the wheel (the package has no console script for it).
"$venv/bin/python" -c 'from pulsar_lite.binary_finder import find_pulsar_lite_binary as f; print(f())'
