#!/usr/bin/env bash
# Installs secantusdb (PyPI), the MongoDB wire-protocol server the MongoDB tasks are tested
# against (`swoop_testkit::mongo`), into a virtualenv in the cache folder (`$SWOOP_CACHE`,
# default ~/.cache/swoop-ci). Idempotent. Prints the venv's python path (the fixture runs
# `python -m secantus`; `SWOOP_SECANTUS_PYTHON` may point at another one).
set -euo pipefail
version=0.7.0b3
venv=$("$(dirname "$0")/install-pypi-venv.sh" secantus "$version" "secantusdb==$version")
echo "$venv/bin/python"
