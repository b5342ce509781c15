#!/usr/bin/env bash
# Builds the book (docs/) into target/book with mdBook from crates.io
# (installed into .peers/mdbook the first time), then checks every link
# of it: a page that is not there, or an anchor no page has, fails.
#
#   ./scripts/book.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

MDBOOK_VERSION="${MDBOOK_VERSION:-0.5.4}"
mdbook="$root/.peers/mdbook/bin/mdbook"
if ! "$mdbook" --version 2>/dev/null | grep -q "v$MDBOOK_VERSION"; then
    echo "book: installing mdbook $MDBOOK_VERSION into .peers/mdbook"
    cargo install mdbook --version "$MDBOOK_VERSION" --locked --quiet \
        --root "$root/.peers/mdbook" --no-default-features --features search
fi
"$mdbook" build docs
python3 scripts/check-links.py target/book
