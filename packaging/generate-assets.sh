#!/bin/sh
# Writes the generated package assets into target/assets/ (where
# [package.metadata.deb] assets in Cargo.toml take them from), by running the
# built binary: the bash, zsh and fish completion scripts and the manual pages,
# all generated from the clap definitions. Usage: packaging/generate-assets.sh [BINARY]
# (default: the release binary of $CARGO_TARGET_DIR, else target/).
# The old directory is replaced whole, so a removed subcommand leaves no page behind.
set -eu
cd "$(dirname "$0")/.."
bin=${1:-${CARGO_TARGET_DIR:-target}/release/hubprobe}
if [ ! -x "$bin" ]; then
    echo "generate-assets: no executable $bin (cargo build --release first)" >&2
    exit 1
fi
# The pages' date: the last commit's, so that the same commit makes the same files.
if [ -z "${SOURCE_DATE_EPOCH:-}" ] && git rev-parse --git-dir >/dev/null 2>&1; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
    export SOURCE_DATE_EPOCH
fi
out=target/assets
new=target/assets.new
rm -rf "$new"
mkdir -p "$new/completions"
"$bin" completions bash > "$new/completions/hubprobe"
"$bin" completions zsh > "$new/completions/_hubprobe"
"$bin" completions fish > "$new/completions/hubprobe.fish"
"$bin" man --out-dir "$new/man"
rm -rf "$out"
mv "$new" "$out"
