#!/usr/bin/env python3
"""Pools the rounds of several load-http runs into one verdict.

    cargo run --release -p authchain-benches --bin load-http -- 2 80 > run1.txt
    cargo run --release -p authchain-benches --bin load-http -- 2 80 > run2.txt
    scripts/pool-load-http.py run1.txt run2.txt

Each run prints one line per scenario per round (the nine scenarios of a
round in some order). This script pairs the scenarios of every round as
load-http does, and prints each run's medians of the per-round ratios and
those of all the runs' rounds together, with the same distribution-free 95%
interval as load-http's `median_interval`. The lines are rounded (rps to
a whole number, CPU to 0.1 µs), so a run's medians here can differ from
the ones load-http printed in the third decimal. Pool only runs of the
same build: rounds of different builds measure different things.
"""

import math
import re
import sys

SCENARIOS = 9
PAIRS = {
    "nginx c/b": ("(c) nginx + authchain-http, 3-step chain", "(b) nginx + allow-all hyper server"),
    "envoy c/b": ("(c) envoy + authchain-http, 3-step chain", "(b) envoy + allow-all hyper server"),
    "axum with/without": ("axum app + AuthChainLayer (3 steps)", "axum app"),
    "axum wrapped/without": ("AuthChainLayer around the axum app", "axum app"),
}
LINE = re.compile(r"^(.*): (\d+) rps, .* CPU per request ([\d.]+) µs")


def rounds(path):
    runs = [LINE.match(line) for line in open(path, encoding="utf-8")]
    runs = [(m.group(1), float(m.group(2)), float(m.group(3))) for m in runs if m]
    if not runs or len(runs) % SCENARIOS:
        sys.exit(f"{path}: {len(runs)} scenario lines, not whole rounds of {SCENARIOS}")
    out = []
    for start in range(0, len(runs), SCENARIOS):
        round_ = {name: (rps, cpu) for name, rps, cpu in runs[start : start + SCENARIOS]}
        if len(round_) != SCENARIOS:
            sys.exit(f"{path}: round {start // SCENARIOS + 1} repeats a scenario")
        out.append(round_)
    return out


def median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def interval(values):
    values = sorted(values)
    n = len(values)
    half_width = 1.96 * math.sqrt(n) / 2
    low = min(max(math.ceil(n / 2 - half_width), 1), n)
    high = min(max(math.floor(n / 2 + 1 + half_width), 1), n)
    return values[low - 1], values[high - 1]


def report(label, rounds_):
    print(f"{label}: {len(rounds_)} rounds")
    for what, (numerator, denominator) in PAIRS.items():
        rps = [r[numerator][0] / r[denominator][0] for r in rounds_]
        cpu = [r[denominator][1] / r[numerator][1] for r in rounds_]
        lo, hi = interval(rps)
        clo, chi = interval(cpu)
        print(
            f"  {what:22} rps {median(rps):.3f} [{lo:.3f}, {hi:.3f}]"
            f"   CPU {median(cpu):.3f} [{clo:.3f}, {chi:.3f}]"
        )


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    runs = {path: rounds(path) for path in sys.argv[1:]}
    for path, rounds_ in runs.items():
        report(path, rounds_)
    if len(runs) > 1:
        report("all runs", [r for rounds_ in runs.values() for r in rounds_])


main()
