"""Full-VM snapshots on real VMs (docs/full-snapshots.md): capture leaves the
sandbox paused and resume continues it; forks continue a counter kept only
in guest memory, diverge, and get their own identity; save_named, get,
list, restore from a handle and delete; restore_with overrides; the errors
of bad input (stopped, not paused, tampered RAM) and cancelled capture and
restore. Two cold boots in all, the rest are forks; the `busybox` fixture
removes every sandbox, even on failure."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import time

import pytest

import microsandbox as msb
from helpers import processes_mentioning

# A counter that lives only in a process's memory; USR1 makes it print.
START_COUNTER = (
    "mkfifo /tmp/count.fifo; setsid sh -c 'n=0; trap \"echo \\$n > /tmp/count.fifo\" USR1; "
    "while :; do n=$((n+1)); sleep 0.1; done' </dev/null >/dev/null 2>&1 & "
    "echo $! > /tmp/count.pid"
)
READ_COUNTER = "kill -USR1 $(cat /tmp/count.pid); cat /tmp/count.fifo"


async def sh(sb: msb.SandboxHandle, script: str) -> str:
    """Run `script` with `sh -c`; its stdout, after checking it succeeded."""
    out = await sb.exec("sh", ["-c", script], timeout=20)
    assert out.exit_code == 0, (script, out.stdout, out.stderr)
    return out.stdout.decode().strip()


async def count(sb: msb.SandboxHandle) -> int:
    return int(await sh(sb, READ_COUNTER))


async def mem_total_kb(sb: msb.SandboxHandle, *, below: int) -> int:
    """The guest's MemTotal, waiting (up to 20 s) for it to drop `below`:
    the core waits 5 s for the balloon, then returns while it keeps
    inflating, which a loaded host (TCG, shared cores) can need."""
    deadline = time.monotonic() + 20
    while True:
        kb = int((await sh(sb, "grep MemTotal /proc/meminfo")).split()[1])
        if kb < below or time.monotonic() > deadline:
            return kb
        await asyncio.sleep(0.2)


async def test_forks_continue_the_in_memory_counter_and_diverge(
    home: pathlib.Path, busybox: str
) -> None:
    sb = await msb.Sandbox.create("origin", image=busybox)
    await sh(sb, START_COUNTER)
    await asyncio.sleep(0.5)
    c0 = await count(sb)
    assert c0 > 0

    snap = await sb.snapshot()
    assert snap.kind == "full" and snap.source_sandbox == "origin"
    assert (await msb.Sandbox.get("origin")).state == "paused"
    assert await sb.status() == "paused"
    with pytest.raises(msb.SandboxNotRunningError):
        await sb.exec("true")
    await sb.resume()
    assert await sb.status() == "running"
    with pytest.raises(msb.SandboxNotPausedError):
        await sb.resume()
    await asyncio.sleep(0.3)
    assert await count(sb) > c0, "the original stopped counting after resume"

    digest = snap.digest
    fork1 = await snap.restore("fork-1")
    fork2 = await snap.restore("fork-2")
    assert fork1.state == "running" and fork1.name == "fork-1"
    firsts = [await count(fork1), await count(fork2)]
    for first in firsts:
        assert c0 <= first < c0 + 30, (c0, firsts)
    await asyncio.sleep(0.5)
    later = [await count(fork1), await count(fork2)]
    assert later[0] > firsts[0] and later[1] > firsts[1], (firsts, later)

    await sh(fork1, "echo mine > /root/only-in-fork-1 && sync")
    assert (await fork2.exec("test", ["-e", "/root/only-in-fork-1"])).exit_code != 0
    assert await sh(fork1, "cat /root/only-in-fork-1") == "mine"

    random = "head -c 16 /dev/urandom | od -An -tx1"
    assert await sh(fork1, random) != await sh(fork2, random)
    assert await sh(fork1, "hostname") == "fork-1"
    assert await sh(fork2, "hostname") == "fork-2"
    assert abs(int(await sh(fork1, "date +%s")) - time.time()) <= 5

    report = await snap.verify()
    assert report["digest"] == digest
    assert report["upper"]["kind"] == "verified"
    assert (await msb.Snapshot.open(snap.path)).digest == digest


async def test_named_full_snapshot_restore_with_and_bad_input(
    home: pathlib.Path, busybox: str
) -> None:
    sb = await msb.Sandbox.create("src", image=busybox, env={"FROM": "source"}, instant=False)

    # A capture whose task is cancelled before its first step (the core
    # work has started with the call) still stops: the sandbox runs on.
    task = asyncio.create_task(sb.snapshot())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await sb.status() == "running"
    assert await sh(sb, "echo alive") == "alive"

    # A capture cancelled mid-way (staging under way) resumes the sandbox
    # and leaves no artifact.
    task = asyncio.create_task(sb.snapshot())
    staging = sb.path / "snapshots"
    deadline = time.monotonic() + 30
    while not (staging.is_dir() and any(staging.iterdir())) and not task.done():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)
    assert not task.done(), "the capture finished before it could be cancelled"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await sb.status() == "running"
    assert await sh(sb, "echo alive") == "alive"
    assert await msb.Snapshot.list_dir(staging) == [] and list(staging.iterdir()) == []

    snap = await sb.snapshot()

    # Kept under a name: found by name with its kind, listed, restorable.
    await snap.save_named("kept")
    handle = await msb.Snapshot.get("kept")
    assert handle.kind == "full" and handle.name == "kept" and handle.digest == snap.digest
    assert [(h.name, h.kind) for h in await msb.Snapshot.list()] == [("kept", "full")]
    with pytest.raises(msb.SnapshotAlreadyExistsError):
        await snap.save_named("kept")
    from_handle = await handle.restore("from-handle")
    assert await sh(from_handle, "hostname") == "from-handle"
    await msb.Sandbox.remove("from-handle")

    # Overrides: env added to the source's; memory and CPUs only go down.
    small = await handle.restore_with(
        "small", lambda b: b.memory_mib(128).cpus(1).env("ADDED", "yes")
    )
    env = await sh(small, "env")
    assert "ADDED=yes" in env.splitlines() and "FROM=source" in env.splitlines()
    assert await mem_total_kb(small, below=140000) < 140000
    # The balloon gave memory back without touching the shared snapshot.
    assert (await snap.verify())["digest"] == snap.digest
    await msb.Sandbox.remove("small")
    with pytest.raises(msb.InvalidConfigError):
        await snap.restore_with("too-big", lambda b: b.memory_mib(512))
    with pytest.raises(msb.InvalidConfigError):
        await snap.restore_with("too-many", lambda b: b.cpus(2))
    with pytest.raises(TypeError):
        await snap.restore_with("not-a-builder", lambda b: None)  # type: ignore[arg-type,return-value]

    # A tampered RAM file (in a copy of the artifact) never reaches QEMU.
    copy = home / "tampered"
    subprocess.run(["cp", "-a", "--sparse=always", str(snap.path), str(copy)], check=True)
    with open(copy / "vm.ram", "r+b") as f:
        offset = os.lseek(f.fileno(), 0, os.SEEK_DATA)
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    tampered = await msb.Snapshot.open(copy)
    with pytest.raises(msb.SnapshotIntegrityError):
        await tampered.restore("from-tampered")

    # A restore cancelled mid-way (its sandbox directory claimed, the VM on
    # its way) leaves no sandbox and no VM.
    restoring = asyncio.create_task(snap.restore("cancelled"))
    claimed = home / "sandboxes" / "cancelled"
    deadline = time.monotonic() + 30
    while not claimed.exists() and not restoring.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    assert claimed.exists() and not restoring.done(), "the restore never got under way"
    restoring.cancel()
    with pytest.raises(asyncio.CancelledError):
        await restoring
    names = {h.name for h in await msb.Sandbox.list()}
    assert names == {"src"}, names
    assert not (home / "sandboxes" / "cancelled").exists()
    for gone in ("from-tampered", "too-big", "too-many", "cancelled"):
        with pytest.raises(msb.SandboxNotFoundError):
            await msb.Sandbox.get(gone)

    # Wrong states: a running sandbox is not paused; a stopped one cannot
    # be captured whole.
    with pytest.raises(msb.SandboxNotRunningError):
        await sb.exec("true")
    await sb.resume()
    with pytest.raises(msb.SandboxNotPausedError):
        await sb.resume()
    await sb.stop()
    with pytest.raises(msb.SandboxNotRunningError):
        await sb.snapshot()
    with pytest.raises(msb.SandboxNotPausedError):
        await sb.resume()

    # Deleted by name: gone from the index and the snapshots directory; the
    # unnamed original still opens by path until its sandbox is removed.
    await msb.Snapshot.delete("kept")
    with pytest.raises(msb.SnapshotNotFoundError):
        await msb.Snapshot.get("kept")
    assert await msb.Snapshot.list() == []
    assert not (home / "snapshots" / "kept").exists()
    assert (await msb.Snapshot.open(snap.path)).kind == "full"
    await msb.Sandbox.remove("src")
    assert not processes_mentioning(str(home / "sandboxes"))
