#!/usr/bin/env bash
# Installs moto's server (`moto[server]` from PyPI), the SQS-compatible server the SQS trigger is
# tested against, into a virtualenv in the cache folder (`$SWOOP_CACHE`, default
# ~/.cache/swoop-ci). Idempotent. Prints moto_server's path.
set -euo pipefail
version=5.2.5
venv=$("$(dirname "$0")/install-pypi-venv.sh" moto "$version" "moto[server]==$version")
echo "$venv/bin/moto_server"
