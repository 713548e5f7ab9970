#!/usr/bin/env bash
# Installs what the tests need and is not a Rust crate: a C compiler, the servers the realtime
# sources and the tasks are tested against (Debian packages, started by the tests themselves on
# loopback: Redis, mosquitto, NATS, RabbitMQ, PostgreSQL, MariaDB), moto's SQS-compatible server
# and secantusdb's MongoDB-compatible one (PyPI, into a cache folder, see install-moto.sh and
# install-secantus.sh), Chromium and the browser tests' npm packages (install-ui-test-deps.sh)
# and the
# Kafka-compatible broker tansu (built from crates.io into a cache folder, see
# install-tansu.sh). The Pub/Sub emulator comes with the Google Cloud SDK, preinstalled on
# these machines (no package registry here has it): it is only checked. Idempotent: installs
# only what is missing. Prints tansu's path last.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev pkg-config) # librdkafka's TLS (Event Hubs)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
[ -x /usr/sbin/nats-server ] || need+=(nats-server)
[ -x /usr/sbin/rabbitmq-server ] || need+=(rabbitmq-server)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3 python3-venv)
[ -x /usr/bin/chromium ] || need+=(chromium) # the web UI's browser tests
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${need[*]}" >&2
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
emulator="${SWOOP_PUBSUB_EMULATOR:-/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator}"
if [ ! -x "$emulator" ] || ! command -v java >/dev/null 2>&1; then
    echo "warning: the Pub/Sub emulator ($emulator) or java is missing: the Pub/Sub tests will fail; install the Google Cloud SDK's pubsub-emulator component, or set SWOOP_PUBSUB_EMULATOR" >&2
fi
"$here/install-sql-servers.sh" >&2
"$here/install-moto.sh" >&2
"$here/install-secantus.sh" >&2
"$here/install-pulsar-lite.sh" >&2
"$here/install-ui-test-deps.sh" >&2
"$here/install-tansu.sh"
