#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests
# need (real proxies for the end-to-end tests), then every unit,
# integration, example, bench (in test mode) and doc test.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x scripts/install-peers.sh ]; then
    ./scripts/install-peers.sh
fi

cargo test --workspace --all-targets
cargo test --workspace --doc
