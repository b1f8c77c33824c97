"""Speed of the Python SDK beside the same work done from Rust in the same
run (SDK.md "Speed"): open + verify of Case A (target <= 1.1x Rust), list()
of 10,000 snapshots including conversion to Python objects (<= 1.5x), and
get by name (1,000 calls; <= 1.5x). The Rust figures come from the existing
benchmark binaries (`bench-open-verify` on the same Case A artifacts, rounds
alternating; `bench-index --inproc` on the same home). Run by `make bench-python`
against the release wheel.

    python bench/python/bench.py --rust-bin target/release [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import microsandbox as msb

REPO = pathlib.Path(__file__).resolve().parents[2]
LIST_SIZE = 10_000
GETS = 1_000


def rust_json(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """The last JSON line a Rust benchmark prints."""
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    lines = [line for line in out.splitlines() if line.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def median_ms(runs: int, work: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def generate(snapshots: pathlib.Path, n: int) -> None:
    """`n` artifacts named like bench-index's (`snap-00000`…): 1 MiB sparse
    uppers, 0.6.6-format manifests, creation times a second apart."""
    for i in range(n):
        art = snapshots / f"snap-{i:05}"
        art.mkdir(parents=True)
        with open(art / "upper.ext4", "wb") as f:
            f.truncate(1 << 20)
            f.seek((i * 4096) % (1 << 20))
            f.write(f"artifact {i}".encode())
        manifest = {
            "schema": 1,
            "format": "raw",
            "fstype": "ext4",
            "image": {"ref": "docker.io/library/python:3.12", "manifest_digest": "sha256:" + "ab" * 32},
            "parent": None,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1767225600 + i)),
            "labels": {"i": str(i)},
            "upper": {"file": "upper.ext4", "size_bytes": 1 << 20, "integrity": None},
            "source_sandbox": "bench",
        }
        (art / "manifest.json").write_text(json.dumps(manifest))


def make_case_a(work: pathlib.Path, msb_cli: pathlib.Path) -> list[pathlib.Path]:
    """Case A (as `bench/src/lib.rs::make_case_a`: `mkfs.ext4 -d` over 8 MiB
    of random content in a 4 GiB sparse image), one artifact per integrity
    algorithm around a hard link of the same upper."""
    content = work / "case-a-content"
    content.mkdir()
    (content / "random.bin").write_bytes(os.urandom(8 << 20))
    upper = work / "case-a.ext4"
    with open(upper, "wb") as f:
        f.truncate(4 << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(content), str(upper)], check=True)
    artifacts = []
    for algorithm in ("msb-merkle-sha256-v1", "msb-sparse-sha256-v1"):
        art = work / f"case-a-{algorithm}"
        art.mkdir()
        os.link(upper, art / "upper.ext4")
        digest = json.loads(subprocess.run(
            [str(msb_cli), "--json", "upper", "digest", "--algorithm", algorithm, str(upper)],
            check=True, capture_output=True, text=True,
        ).stdout)["digest"]
        manifest = {
            "schema": 1, "format": "raw", "fstype": "ext4",
            "image": {"ref": "bench/case-a", "manifest_digest": "sha256:" + "0" * 64},
            "parent": None, "created_at": "2026-11-23T00:00:00Z", "labels": {},
            "upper": {"file": "upper.ext4", "size_bytes": 4 << 30,
                      "integrity": {"algorithm": algorithm, "digest": digest}},
            "source_sandbox": None,
        }
        (art / "manifest.json").write_text(json.dumps(manifest))
        artifacts.append(art)
    return artifacts


async def bench_verify(rust_bin: pathlib.Path, work: pathlib.Path, runs: int) -> list[tuple[str, float, float]]:
    """Rounds alternate between the Rust binary and this process, so both
    see the same load (the machine is shared)."""
    artifacts = make_case_a(work, rust_bin / "msb")
    os.sync()
    ours: dict[pathlib.Path, list[float]] = {a: [] for a in artifacts}
    theirs: dict[pathlib.Path, list[float]] = {a: [] for a in artifacts}

    for _ in range(runs):
        rust = rust_json([str(rust_bin / "bench-open-verify"), "--runs", "1", *map(str, artifacts)])
        for result in rust["results"]:
            theirs[pathlib.Path(result["path"])] += result["times_ms"]
        for art in artifacts:
            started = time.perf_counter()
            report = await (await msb.Snapshot.open(art)).verify()
            ours[art].append((time.perf_counter() - started) * 1e3)
            assert report["upper"]["kind"] == "verified"
    return [
        (f"open + verify Case A ({art.name.removeprefix('case-a-')})",
         statistics.median(ours[art]), statistics.median(theirs[art]))
        for art in artifacts
    ]


async def bench_index(rust_bin: pathlib.Path, work: pathlib.Path) -> list[tuple[str, float, float]]:
    home = work / "index-home"
    generate(home / "snapshots", LIST_SIZE)
    os.sync()
    env = dict(os.environ, MSB_HOME=str(home))
    rust = rust_json([str(rust_bin / "bench-index"), "--inproc", str(LIST_SIZE)], env=env)
    with msb.use_config(msb.Config(home=home)):
        assert await msb.Snapshot.reindex() == LIST_SIZE

        async def listing() -> None:
            assert len(await msb.Snapshot.list()) == LIST_SIZE

        async def listing_and_reading() -> None:
            handles = await msb.Snapshot.list()
            assert sum(1 for h in handles if h.name is not None) == LIST_SIZE

        list_ms = await median_ms(15, listing)
        list_read_ms = await median_ms(15, listing_and_reading)
        gets = []
        for k in range(GETS):
            name = f"snap-{(k * 7919) % LIST_SIZE:05}"
            started = time.perf_counter()
            await msb.Snapshot.get(name)
            gets.append((time.perf_counter() - started) * 1e3)
    rust_list, rust_get = float(rust["list_ms"]), float(rust["get_ms"])
    return [
        (f"list() of {LIST_SIZE:,} (to Python objects)", list_ms, rust_list),
        (f"list() of {LIST_SIZE:,} + read .name of each", list_read_ms, rust_list),
        ("get by name, median of 1,000", statistics.median(gets), rust_get),
        ("get by name, 1,000 calls (total; Rust: 1,000 x median)", sum(gets), 1000 * rust_get),
    ]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rust-bin", type=pathlib.Path, default=REPO / "target" / "release")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="msb-py-bench-") as scratch:
        work = pathlib.Path(scratch)
        with msb.use_config(msb.Config(home=work / "home")):
            rows = await bench_verify(args.rust_bin, work, args.runs)
        rows += await bench_index(args.rust_bin, work)
    print(f"{'what':<56} {'python':>10} {'rust':>10} {'ratio':>7}")
    for what, ours, rust in rows:
        print(f"{what:<56} {ours:>7.2f} ms {rust:>7.2f} ms {ours / rust:>6.2f}x")
    print(json.dumps({"bench": "python", "results": [
        {"what": w, "python_ms": o, "rust_ms": r, "ratio": o / r} for w, o, r in rows
    ]}))


if __name__ == "__main__":
    asyncio.run(main())
