#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine, set-up included.
# Installs the real peers the tests talk to (mosquitto, dnsmasq, nftables, conntrack,
# iproute2, promtool from prometheus, prometheus-node-exporter), the packaging
# tools (systemd-analyze, dpkg, cargo-deb, shellcheck, strace) and what checks the
# generated completions and manual pages (bash-completion, zsh, fish, mandoc,
# man-db), then runs the quality
# gates and every test. Needs root (apt-get, network namespaces, dpkg -i); a missing
# peer fails the tests, it never skips them.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(mosquitto mosquitto-clients dnsmasq-base nftables conntrack iproute2 ca-certificates procps
          prometheus prometheus-node-exporter systemd dpkg adduser shellcheck strace
          chromium jq python3 python3-venv python3-pip bsdutils
          bash bash-completion zsh fish mandoc man-db
          squid tinyproxy dante-server openssl passwd
          chrony faketime
          rabbitmq-server python3-qpid-proton websockify)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The Debian packages may start a system broker or node_exporter (:9100); the tests start
# their own on free loopback ports, so a running one does no harm.

# cargo-deb for the packaging test (tests/packaging.rs builds the .deb with it).
# Compiling it takes about 2 min 15 s on 2 cores.
cargo_deb_version=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]; then
    cargo install cargo-deb --locked --version "$cargo_deb_version"
fi

# Python for the fleet tests and benchmark, in a venv (Debian's pip refuses system
# installs): chDB runs the ClickHouse SQL in-process (tests/fleet_clickhouse.rs),
# DuckDB is the benchmark's reference, fastavro writes the Avro files IoT Hub routing
# and Event Hubs Capture write (tests/fleet_avro.rs), azure-iot-device makes the reference
# DPS SAS tokens (tests/dps_sas.rs). Tests find it at target/fleet-venv or in
# HUBPROBE_FLEET_PYTHON.
venv=target/fleet-venv
if ! "$venv/bin/python" -c "import chdb, duckdb, fastavro, azure.iot.device" 2>/dev/null; then
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q chdb==4.4.0 duckdb==2.0.1 fastavro==1.13.1 azure-iot-device==2.14.0
fi

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets
