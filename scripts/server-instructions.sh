#!/usr/bin/env bash
# Instructions per request of one of the load harness's servers, as a whole
# process behind a real socket: the server runs under callgrind, wrk drives
# it (warm-up, then a measured stretch whose counts start from zero), and
# the user-space instructions of that stretch are divided by the requests
# wrk made. Unlike rps or CPU time, the figure does not drift with the
# machine's load, so two builds (or two servers) compare to a few tenths
# of a percent.
#
#   scripts/server-instructions.sh [FLAG] [PATH]
#
# FLAG is a child flag of the harness's http group (--serve-check, the
# check server as nginx calls it, by default; --serve-check-envoy, as Envoy
# does, with PATH /check:bench/api/x; --serve-allow-all, --serve-app,
# --serve-layered-app, --serve-wrapped-app, --serve-floor-app: the app with
# a hand-written layer that does only the bench chain's work, the floor of
# any layer doing it); PATH what wrk asks for (/check:bench by default;
# /api/x for the apps). The headers are those nginx forwards in
# the harness. Needs valgrind and wrk; builds the harness (bin `load`)
# first, in $CARGO_TARGET_DIR if set. LOAD_BIN=path (or its old name,
# LOAD_HTTP) runs another build of it.
#
# CACHE_SIM=1 also simulates the caches and branch predictors and prints
# their misses per request (L1 instruction, L1 data read and write,
# mispredicted conditional and indirect branches): what a change to code
# size or stack use costs, which the instruction count does not show. The
# simulation runs both worker threads through one simulated cache, so
# these figures vary from run to run by about a tenth: compare several.
set -euo pipefail

flag=${1:---serve-check}
path=${2:-/check:bench}
cd "$(dirname "$0")/.."
for tool in valgrind callgrind_control wrk curl; do
    command -v "$tool" >/dev/null || {
        echo "server-instructions: $tool not found (apt-get install valgrind wrk curl)" >&2
        exit 1
    }
done
LOAD_BIN=${LOAD_BIN:-${LOAD_HTTP:-}}
if [[ -z "$LOAD_BIN" ]]; then
    cargo build --release -q -p authchain-benches --bin load
    LOAD_BIN=${CARGO_TARGET_DIR:-target}/release/load
fi

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sim=()
if [[ -n "${CACHE_SIM:-}" ]]; then
    sim=(--cache-sim=yes --branch-sim=yes)
fi
valgrind --tool=callgrind "${sim[@]}" --callgrind-out-file="$work/out.%p" \
    "$LOAD_BIN" "$flag" "$port" >"$work/log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT

load() {
    wrk -t1 -c8 -d"$1" -H "my-header: foo" -H "X-Original-URI: /api/x" \
        -H "X-Original-Method: GET" "http://127.0.0.1:$port$path"
}

for _ in $(seq 120); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    kill -0 $server 2>/dev/null || { cat "$work/log" >&2; exit 1; }
    sleep 0.5
done
load 3s >/dev/null
callgrind_control -z $server >/dev/null 2>&1
requests=$(load 6s | awk '/requests in/ {print $1}')
callgrind_control -d $server >/dev/null 2>&1
sleep 1
dump=$(ls "$work"/out.*.* | tail -1)
totals=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", ""); print}')
total=$(awk '{print $1}' <<<"$totals")
echo "$flag $path: $requests requests, $((total / requests)) instructions per request"
if [[ -n "${CACHE_SIM:-}" ]]; then
    # Events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim, each
    # followed by its share.
    awk -v n="$requests" '{
        printf "  per request: %.0f I1 misses, %.0f D1 read and %.0f D1 write misses, %.0f conditional and %.0f indirect branches mispredicted\n",
            $7 / n, $9 / n, $11 / n, $21 / n, $25 / n
    }' <<<"$totals"
fi
