#!/usr/bin/env bash
# Installs what the tests need and is not a Rust crate: a C compiler, the servers the realtime
# sources are tested against (Debian packages, started by the tests themselves on loopback), and
# the Kafka-compatible broker tansu (built from crates.io into a cache folder, see
# install-tansu.sh). Idempotent: installs only what is missing. Prints tansu's path last.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
[ -x /usr/sbin/nats-server ] || need+=(nats-server)
[ -x /usr/sbin/rabbitmq-server ] || need+=(rabbitmq-server)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${need[*]}" >&2
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
"$here/install-tansu.sh"
