"""Fixtures shared by the suites: a temporary home per test (the process
default configuration while the test runs; outside a test the default home
is unusable, so a call that escapes fails loudly instead of touching ~), the
busybox image, and a guard that removes every sandbox a test created and
fails the test if a QEMU process outlives it."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

import microsandbox as msb
from helpers import BUSYBOX_REF, REPO, guest_assets_dir, processes_mentioning

UNSCOPED_HOME = "/proc/self/msb-test-call-outside-a-test-home"


@pytest.fixture(autouse=True, scope="session")
def _forbid_unscoped_calls() -> None:
    msb.set_default_config(msb.Config(home=UNSCOPED_HOME))


@pytest.fixture
def home() -> Iterator[pathlib.Path]:
    """A temporary home (under $TMPDIR), the process default for the test."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="msb-py-"))
    msb.set_default_config(msb.Config(home=path, guest_assets_dir=guest_assets_dir()))
    try:
        yield path
    finally:
        msb.set_default_config(msb.Config(home=UNSCOPED_HOME))
        leftovers = processes_mentioning(str(path))
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(path, ignore_errors=True)
        assert not leftovers, f"QEMU processes outlived the test: {leftovers}"


@pytest.fixture
async def busybox(home: pathlib.Path) -> AsyncIterator[str]:
    """The busybox image loaded into the test's home; every sandbox left in
    the home is removed afterwards."""
    archive = home / "busybox.tar"
    await msb.Image.build_busybox(archive, reference=BUSYBOX_REF)
    events: list[msb.ProgressEvent] = []
    await msb.Image.load(archive, progress=events.append)
    # The load's progress: phase "load", in order, the last at the total.
    assert len(events) >= 2 and all(e.phase == "load" for e in events)
    assert all(a.done_bytes <= b.done_bytes for a, b in zip(events, events[1:]))
    assert events[-1].done_bytes == events[-1].total_bytes > 0
    try:
        yield BUSYBOX_REF
    finally:
        for handle in await msb.Sandbox.list():
            await handle.remove()


__all__ = ["REPO"]
