"""Real VMs (QEMU; TCG here): the typical flow of the reference end to end,
the sandbox entry points, and exec (buffered and streaming, stdin, signals,
timeouts, output limits, cancellation). Every sandbox is removed by the
`busybox` fixture, even on failure."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import tempfile
import time

import pytest

import microsandbox as msb
from helpers import guest_assets_dir, processes_mentioning


async def test_typical_flow_end_to_end(home: pathlib.Path, busybox: str) -> None:
    async with await msb.Sandbox.create("worker", image=busybox, memory_mib=256, cpus=1) as sb:
        out = await sb.exec("sh", ["-c", "echo hello > /root/note.txt && sync"])
        assert out.exit_code == 0, out.stderr
    assert (await msb.Sandbox.get("worker")).state == "stopped"

    snap = await msb.Snapshot.create(
        "worker", name="after-note", labels={"stage": "note", "a": "1"}, record_integrity=True
    )
    assert snap.labels == {"a": "1", "stage": "note"}
    assert list(snap.labels) == ["a", "stage"]
    assert snap.source_sandbox == "worker" and snap.image_ref == busybox
    report = await snap.verify()
    assert report["upper"]["kind"] == "verified"

    archive = home / "out" / "after-note.tar.zst"
    phases: list[msb.ProgressEvent] = []
    await msb.Snapshot.export("after-note", archive, with_image=True, progress=phases.append)
    assert archive.is_file()
    assert phases and phases[-1].done_bytes == phases[-1].total_bytes
    assert {e.phase for e in phases} == {"export"}

    with tempfile.TemporaryDirectory(prefix="msb-py-home2-") as second:
        with msb.use_config(msb.Config(home=second, guest_assets_dir=guest_assets_dir())):
            imported_events: list[msb.ProgressEvent] = []
            handle = await msb.Snapshot.import_(archive, progress=imported_events.append)
            assert handle.digest == snap.digest
            assert imported_events[-1].done_bytes == imported_events[-1].total_bytes
            assert (await msb.Image.get(busybox)).reference == busybox
            assert [h.digest for h in await msb.Snapshot.list()] == [snap.digest]
            try:
                async with await msb.Sandbox.create("restored", from_snapshot="after-note") as sb2:
                    out = await sb2.exec("cat", ["/root/note.txt"])
                    assert out.stdout == b"hello\n"
            finally:
                for h in await msb.Sandbox.list():
                    await h.remove()
            assert not processes_mentioning(second)
        # Outside the scope, the first home is back in force.
        assert [h.name for h in await msb.Sandbox.list()] == ["worker"]


async def test_sandbox_lifecycle_and_errors(home: pathlib.Path, busybox: str) -> None:
    sb = await msb.Sandbox.create("life", image=busybox, env={"GREETING": "hi"})
    with pytest.raises(msb.SandboxAlreadyExistsError):
        await msb.Sandbox.create("life", image=busybox)
    handle = await msb.Sandbox.get("life")
    assert handle.state == "running" and await handle.status() == "running"
    assert [h.name for h in await msb.Sandbox.list()] == ["life"]
    with pytest.raises(msb.SnapshotSandboxRunningError):
        await handle.snapshot("too-early")

    out = await handle.exec("sh", ["-c", "echo $GREETING-$EXTRA; pwd"], env={"EXTRA": "x"}, cwd="/tmp")
    assert out.stdout == b"hi-x\n/tmp\n" and out.code == 0

    await sb.stop()
    with pytest.raises(msb.SandboxNotRunningError):
        await sb.exec("true")
    to_path = await handle.snapshot_to(home / "elsewhere" / "snap")
    assert to_path.path == home / "elsewhere" / "snap"
    by_name = await handle.snapshot("by-name")
    assert by_name.path == home / "snapshots" / "by-name"
    with pytest.raises(msb.SnapshotAlreadyExistsError):
        await handle.snapshot("by-name")

    again = await handle.start()
    assert (await again.exec("echo", ["back"])).stdout == b"back\n"
    await msb.Sandbox.remove("life")
    assert await msb.Sandbox.list() == []
    assert not processes_mentioning(str(home))


async def test_exec_buffered_and_streaming(home: pathlib.Path, busybox: str) -> None:
    async with await msb.Sandbox.create("exec", image=busybox) as sb:
        out = await sb.exec("sh", ["-c", "head -c 100000 /dev/zero; echo err >&2; exit 3"], output_limit=1000)
        assert out.exit_code == 3 and out.signal is None and not out.timed_out
        assert len(out.stdout) == 1000 and out.stdout_truncated
        assert out.stderr == b"err\n" and not out.stderr_truncated

        slow = await sb.exec("sleep", ["30"], timeout=0.5)
        assert slow.timed_out and slow.signal == signal.SIGKILL

        # Streaming: stdin in, chunks out, then exactly one exit.
        proc = await sb.exec_stream("sh", ["-c", "cat; echo done >&2"])
        await proc.stdin.write(b"data " * 1000)
        await proc.stdin.close()
        stdout, stderr, exits = b"", b"", []
        async for ev in proc:
            if ev.kind == "stdout":
                stdout += ev.data
            elif ev.kind == "stderr":
                stderr += ev.data
            else:
                exits.append((ev.code, ev.signal, ev.timed_out))
        assert stdout == b"data " * 1000 and stderr == b"done\n"
        assert exits == [(0, None, False)]

        # Writing to the stdin of a command that exited is a broken pipe.
        proc = await sb.exec_stream("true")
        assert (await proc.wait()).code == 0
        with pytest.raises(msb.IoError):
            await proc.stdin.write(b"late")

        # A signal reaches the process group while another task reads.
        proc = await sb.exec_stream("sh", ["-c", "echo ready; sleep 30"])
        first = await proc.__anext__()
        assert first.data == b"ready\n"
        waiter = asyncio.create_task(proc.wait())
        await asyncio.sleep(0.2)
        proc.signal(signal.SIGINT)
        status = await asyncio.wait_for(waiter, timeout=10)
        assert status.signal == signal.SIGINT and status.code == 128 + signal.SIGINT

        # Cancelling the task of a buffered exec kills the command.
        task = asyncio.create_task(sb.exec("sh", ["-c", "sleep 30"]))
        await asyncio.sleep(0.5)
        started = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.perf_counter() - started < 1.0
        ps = await sb.exec("ps")
        assert b"sleep 30" not in ps.stdout, ps.stdout


async def test_cancelling_a_boot_leaves_no_vm_and_no_sandbox(home: pathlib.Path, busybox: str) -> None:
    task = asyncio.create_task(msb.Sandbox.create("half-booted", image=busybox))
    await asyncio.sleep(0.8)  # QEMU is up, the guest is still booting
    assert not task.done()
    cancelled_at = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    latency = time.perf_counter() - cancelled_at
    assert latency < 0.5, f"a cancelled boot took {latency * 1000:.0f} ms to stop"
    assert not processes_mentioning(str(home)), "the half-booted VM survived"
    assert await msb.Sandbox.list() == []
    # The name is free again.
    async with await msb.Sandbox.create("half-booted", image=busybox) as sb:
        assert (await sb.exec("true")).code == 0
