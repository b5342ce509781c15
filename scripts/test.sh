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

# The tower layer alone: no check server, no client, no TLS.
cargo clippy -q -p authchain-http --no-default-features --features axum -- -D warnings
if cargo tree -p authchain-http --no-default-features --features axum -e normal | grep -qiE 'rustls|aws-lc|webpki'; then
    echo "test.sh: authchain-http without its default features pulls in TLS" >&2
    exit 1
fi
