#!/bin/sh
# Builds the Debian package from a clean checkout: the release binary, the assets
# generated from it (completions, manual pages: packaging/generate-assets.sh), then
# `cargo deb --no-build`. Extra arguments go to cargo deb (e.g. --output DIR).
# The .deb lands in target/debian/ (or $CARGO_TARGET_DIR/debian/).
set -eu
cd "$(dirname "$0")/.."
cargo build --release --locked
packaging/generate-assets.sh
cargo deb --no-build --locked "$@"
