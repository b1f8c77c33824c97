"""Cancellation and progress on Case A (a 4 GiB sparse ext4 upper over
8 MiB of random content, recorded with `msb-sparse-sha256-v1`): cancelling
the asyncio task of a verify mid-way raises `CancelledError` within 100 ms
and leaves nothing behind; a full verify reports its progress in order,
ending at the total."""

from __future__ import annotations

import asyncio
import pathlib
import tempfile
import time
from collections.abc import Iterator

import pytest

import microsandbox as msb
from helpers import make_case_a, tree

BOUND = 0.100


@pytest.fixture(scope="module")
def case_a() -> Iterator[pathlib.Path]:
    with tempfile.TemporaryDirectory(prefix="msb-py-case-a-") as scratch:
        yield make_case_a(pathlib.Path(scratch) / "case-a")


async def test_cancelling_a_verify_task_stops_the_core_within_100ms(
    home: pathlib.Path, case_a: pathlib.Path
) -> None:
    snap = await msb.Snapshot.open(case_a)
    before = tree(home) + tree(case_a.parent)
    events: list[msb.ProgressEvent] = []
    mid_way = asyncio.Event()

    def on_progress(event: msb.ProgressEvent) -> None:
        events.append(event)
        if event.done_bytes >= 512 << 20:
            mid_way.set()

    task = asyncio.create_task(snap.verify(progress=on_progress))
    await asyncio.wait_for(mid_way.wait(), timeout=60)
    await asyncio.sleep(0.02)  # somewhere inside the hashing loop
    cancelled_at = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    latency = time.perf_counter() - cancelled_at
    print(f"verify cancel latency: {latency * 1000:.1f} ms")
    assert latency < BOUND, f"cancel took {latency * 1000:.1f} ms"
    assert events[-1].done_bytes < events[-1].total_bytes, "the verify had finished"
    assert tree(home) + tree(case_a.parent) == before, "the cancelled verify left files"
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    # Nothing is stuck: the same verify then runs to the end.
    report = await snap.verify()
    assert report["upper"]["kind"] == "verified"
    assert report["upper"]["algorithm"] == "msb-sparse-sha256-v1"


async def test_a_verify_reports_progress_in_order_to_the_total(
    home: pathlib.Path, case_a: pathlib.Path
) -> None:
    snap = await msb.Snapshot.open(case_a)
    events: list[msb.ProgressEvent] = []
    report = await snap.verify(progress=events.append)
    assert report["digest"] == snap.digest and report["path"] == case_a
    assert len(events) >= 3
    assert {e.phase for e in events} == {"hash"}
    assert all(e.total_bytes == 4 << 30 for e in events)
    done = [e.done_bytes for e in events]
    assert done == sorted(done), "progress went backwards"
    assert done[-1] == 4 << 30


async def test_a_task_cancelled_before_the_call_starts_leaves_nothing(
    home: pathlib.Path, case_a: pathlib.Path
) -> None:
    snap = await msb.Snapshot.open(case_a)
    task = asyncio.create_task(snap.verify())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
