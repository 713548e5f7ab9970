#!/usr/bin/env bash
# Installs the SQL servers the JDBC tests start themselves on loopback (swoop-testkit's
# `postgres` and `mariadb` fixtures): the Debian packages `postgresql` (when no
# /usr/lib/postgresql/<version>/bin/initdb exists) and `mariadb-server` (when `mariadbd` is
# missing). Neither service is left running: the fixtures create their own data directories.
# Idempotent and quiet: prints nothing when all is there.
set -euo pipefail
need=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server mariadb-client)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${need[*]}" >&2
$sudo apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The packages start their services; the tests do not use them.
for service in postgresql mariadb; do
    $sudo service "$service" stop >/dev/null 2>&1 || true
done
