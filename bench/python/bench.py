"""Speed of the Python SDK beside the same work done from Rust in the same
run (SDK.md "Speed"), on the same data (`bench-sdk-baseline prepare`):
open + verify of Case A (target <= 1.1x Rust), list() of 10,000 snapshots
including conversion to Python objects (<= 1.5x), 1,000 get by name one
after another (<= 1.5x: sequential latency), and beside it the same 1,000
get issued at once with asyncio.gather (concurrent throughput; no target,
extra information). It also prints asyncio's own floor for a call kept
off the event loop (1,000 no-op `run_in_executor` round trips), the bound
under the sequential get. Rounds alternate between `bench-sdk-baseline measure`
and this process, so both see the same machine load. Run by
`make bench-python` against the release wheel.

    python bench/python/bench.py --baseline BIN --data DIR [--runs 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import microsandbox as msb

INDEXED = 10_000
GETS = 1_000
PER_ROUND = 3
"""Timed calls of each measure per round (after one warm-up), as the Rust side."""

ROWS = [
    ("open + verify Case A", "verify_case_a_ms", 1.1),
    (f"list() of {INDEXED:,} (+ conversion)", "list_10000_ms", 1.5),
    ("1,000 get by name (sequential)", "get_1000_ms", 1.5),
    ("1,000 get by name (concurrent, no target)", "get_1000_concurrent_ms", None),
]


def get_name(i: int) -> str:
    """The name of the i-th lookup, as on the Rust side."""
    return f"snap-{i * (INDEXED // GETS):05}"


async def timed_after_warmup(work: Callable[[], Awaitable[object]]) -> float:
    """Median of PER_ROUND timed calls of ``work`` after one untimed call."""
    await work()
    times = []
    for _ in range(PER_ROUND):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


async def python_round(data: pathlib.Path) -> dict[str, float]:
    """One round of the measures through the Python SDK, in milliseconds."""
    case_a = data / "case-a"

    async def verify() -> None:
        report = await (await msb.Snapshot.open(case_a)).verify()
        assert report["upper"]["kind"] == "verified"

    async def listing() -> None:
        assert len(await msb.Snapshot.list()) == INDEXED

    async def gets() -> None:
        for i in range(GETS):
            await msb.Snapshot.get(get_name(i))

    async def executor_floor() -> None:
        # asyncio's own cost of one worker-thread round trip, doing nothing:
        # the least any lookup that stays off the event loop can take.
        loop = asyncio.get_running_loop()
        for _ in range(GETS):
            await loop.run_in_executor(None, int)

    async def gets_concurrent() -> None:
        await asyncio.gather(*(msb.Snapshot.get(get_name(i)) for i in range(GETS)))

    with msb.use_config(msb.Config(home=data / "home")):
        return {
            "verify_case_a_ms": await timed_after_warmup(verify),
            "list_10000_ms": await timed_after_warmup(listing),
            "get_1000_ms": await timed_after_warmup(gets),
            "get_1000_concurrent_ms": await timed_after_warmup(gets_concurrent),
            "executor_floor_1000_ms": await timed_after_warmup(executor_floor),
        }


def rust_round(baseline: pathlib.Path, data: pathlib.Path) -> dict[str, float]:
    """The same round from Rust, in its own process."""
    out = subprocess.run(
        [str(baseline), "measure", "--data", str(data), "--runs", str(PER_ROUND), "--warmup", "1"],
        check=True, capture_output=True, text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=pathlib.Path, required=True)
    parser.add_argument("--data", type=pathlib.Path, required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(args.baseline), "prepare", "--data", str(args.data)], check=True, stdout=sys.stderr)
    rust, ours = [], []
    for _ in range(args.runs):
        rust.append(rust_round(args.baseline, args.data))
        ours.append(await python_round(args.data))

    def medians(side: list[dict[str, float]]) -> dict[str, float]:
        return {key: statistics.median(x[key] for x in side) for _, key, _ in ROWS}

    py_ms, rust_ms = medians(ours), medians(rust)
    print(f"Python SDK beside Rust, same data: {args.runs} alternating rounds of {PER_ROUND} timed calls "
          "per measure and side; medians")
    print(f"{'what':<42} {'Python':>11} {'Rust':>11} {'ratio':>7} target")
    for what, key, target in ROWS:
        ratio = py_ms[key] / rust_ms[key]
        verdict = "-" if target is None else f"{target:.1f}x {'ok' if ratio <= target else 'OVER'}"
        print(f"{what:<42} {py_ms[key]:>8.2f} ms {rust_ms[key]:>8.2f} ms {ratio:>6.2f}x {verdict}")
    floor = statistics.median(x["executor_floor_1000_ms"] for x in ours)
    print(f"for reference, 1,000 no-op loop.run_in_executor(None, int) round trips: {floor:.2f} ms "
          f"(asyncio's floor for work kept off the event loop; {floor / rust_ms['get_1000_ms']:.2f}x Rust's gets)")
    if args.json:
        args.json.write_text(json.dumps({"sdk": "Python", "sdk_ms": py_ms, "rust_ms": rust_ms}) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
