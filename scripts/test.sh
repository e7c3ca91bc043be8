#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine, set-up included.
# Installs the real peers the tests talk to (mosquitto, dnsmasq, nftables, conntrack,
# iproute2), then runs the quality gates and every test. Needs root (apt-get, network
# namespaces); a missing peer fails the tests, it never skips them.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(mosquitto mosquitto-clients dnsmasq-base nftables conntrack iproute2 ca-certificates procps
          chromium jq python3 python3-venv python3-pip)
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
# The Debian package may start a system broker; the tests start their own on free
# loopback ports, so a running one does no harm.

# Python for the fleet tests and benchmark, in a venv (Debian's pip refuses system
# installs): chDB runs the ClickHouse SQL in-process (tests/fleet_clickhouse.rs),
# DuckDB is the benchmark's reference. tests find it at target/fleet-venv or in
# HUBPROBE_FLEET_PYTHON.
venv=target/fleet-venv
if ! "$venv/bin/python" -c "import chdb, duckdb" 2>/dev/null; then
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q chdb==4.4.0 duckdb==2.0.1
fi

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets
