"""A sample that uses the whole public API, for `mypy --strict` (run by
`make test-python`; it is type-checked, not executed)."""

from __future__ import annotations

import asyncio
import datetime
import pathlib
import signal

import microsandbox as msb
from microsandbox import (
    Config,
    ExecOutput,
    Image,
    ImageInfo,
    MicrosandboxError,
    ProgressEvent,
    Sandbox,
    SandboxHandle,
    Snapshot,
    SnapshotHandle,
    SnapshotVerifyReport,
)


def on_progress(event: ProgressEvent) -> None:
    phase: str = event.phase
    done: int = event.done_bytes
    total: int = event.total_bytes
    print(phase, done, total)


async def images(tmp: pathlib.Path) -> ImageInfo:
    await Image.build_busybox(tmp / "busybox.tar", reference="local/busybox:latest")
    info = await Image.load(tmp / "busybox.tar", reference="local/busybox:latest", progress=on_progress)
    again: ImageInfo = await Image.get(info.manifest_digest)
    every: list[ImageInfo] = await Image.list()
    env: list[str] = again.env
    lower: pathlib.Path = again.lower_path
    print(every, env, lower, again.reference, again.config_digest, again.working_dir, again.loaded_at)
    return info


async def sandboxes(image: str) -> SandboxHandle:
    async with await Sandbox.create(
        "typed", image=image, memory_mib=256, cpus=1, env={"K": "V"}
    ) as sb:
        out: ExecOutput = await sb.exec("ls", ["-l"], env={"A": "b"}, cwd="/", timeout=5.0, output_limit=1 << 20)
        code: int = out.exit_code + out.code
        sig: int | None = out.signal
        data: bytes = out.stdout + out.stderr
        flags: bool = out.timed_out or out.stdout_truncated or out.stderr_truncated
        print(code, sig, data, flags, sb.name)

        proc = await sb.exec_stream("sh", ["-c", "cat"], env=None, cwd=None, timeout=None)
        await proc.stdin.write(b"data")
        await proc.stdin.close()
        proc.signal(signal.SIGINT)
        async for ev in proc:
            if ev.kind == "exit":
                print(ev.code, ev.signal, ev.timed_out)
            else:
                chunk: bytes = ev.data
                print(chunk)
        status = await proc.wait()
        print(status.code, status.signal, status.timed_out)
        handle: SandboxHandle = sb.handle
    await sb.stop()
    print(handle.name, handle.state, handle.image_ref, handle.path, handle.created_at, await handle.status())
    got = await Sandbox.get("typed")
    listed: list[SandboxHandle] = await Sandbox.list()
    print(listed, (await got.exec("true")).code)
    restarted: Sandbox = await got.start()
    await restarted.stop()
    await got.stop()
    served = await Sandbox.create("served", image=image, network="public", allow=["10.0.0.0/8"], ports={8080: 80})
    offline = await Sandbox.create("offline", image=image, network="none", ports=[(8081, 81)])
    await served.stop()
    await offline.stop()
    return got


async def snapshots(handle: SandboxHandle, tmp: pathlib.Path) -> None:
    snap: Snapshot = await Snapshot.create(
        handle.name, name="typed", labels={"k": "v"}, force=True, record_integrity=True
    )
    other: Snapshot = await Snapshot.create(handle.name, path=tmp / "snap")
    by_name: Snapshot = await handle.snapshot("typed-2")
    by_path: Snapshot = await handle.snapshot_to(tmp / "snap-2")
    report: SnapshotVerifyReport = await snap.verify(progress=on_progress)
    if report["upper"]["kind"] == "verified":
        print(report["upper"].get("algorithm"), report["upper"].get("digest"))
    print(report["digest"], report["path"])
    size: int = snap.size_bytes
    labels: dict[str, str] = snap.labels
    print(
        snap.path, snap.digest, size, snap.image_ref, snap.image_manifest_digest, snap.format,
        snap.fstype, snap.parent, snap.created_at, labels, snap.source_sandbox, other, by_name, by_path,
    )
    opened: Snapshot = await Snapshot.open("typed")
    h: SnapshotHandle = await Snapshot.get(opened.digest)
    when: datetime.datetime = h.created_at
    hsize: int | None = h.size_bytes
    print(h.digest, h.name, h.parent_digest, h.image_ref, h.format, hsize, when, h.path)
    print((await h.open()).digest)
    every: list[SnapshotHandle] = await Snapshot.list()
    in_dir: list[Snapshot] = await Snapshot.list_dir(tmp)
    count: int = await Snapshot.reindex() + await Snapshot.reindex(tmp)
    print(every, in_dir, count)
    await Snapshot.export("typed", tmp / "a.tar.zst", with_parents=True, with_image=True, plain_tar=False, progress=on_progress)
    imported: SnapshotHandle = await Snapshot.import_(tmp / "a.tar.zst", dest=tmp / "in", progress=on_progress)
    await imported.remove(force=True)
    await Snapshot.remove("typed-2", force=False)
    await Sandbox.remove(handle.name)
    await handle.remove()


def smaller(b: msb.RestoreBuilder) -> msb.RestoreBuilder:
    return b.memory_mib(128)


async def full_snapshots(image: str) -> None:
    sb = await Sandbox.create("full", image=image, instant=False)
    snap: Snapshot = await sb.snapshot()
    state: msb.SandboxState = (await Sandbox.get("full")).state
    kind: msb.SnapshotKind = snap.kind
    await sb.resume()
    fork: Sandbox = await snap.restore("fork-1")
    other: Sandbox = await snap.restore_with(
        "fork-2", lambda b: b.memory_mib(128).cpus(1).env("K", "V")
    )
    await snap.save_named("kept")
    h: SnapshotHandle = await Snapshot.get("kept")
    hkind: msb.SnapshotKind = h.kind
    again: Sandbox = await h.restore("fork-3")
    more: Sandbox = await h.restore_with("fork-4", lambda b: b.env("A", "b"))
    last: Sandbox = await snap.restore_with("fork-5", smaller)
    await Snapshot.delete("kept")
    paused: type[MicrosandboxError] = msb.SandboxNotPausedError
    incompatible: type[MicrosandboxError] = msb.SnapshotIncompatibleError
    print(state, kind, fork, hkind, again, more, last, paused, incompatible, await sb.status())


async def registries(tmp: pathlib.Path) -> None:
    full: str = msb.normalise_reference("python")
    pulled: ImageInfo = await Image.pull(full, progress=on_progress)
    origin: str | None = pulled.origin
    digest: str = await Snapshot.push("base", "127.0.0.1:5000/snaps/base:1", progress=on_progress)
    again: str = await Snapshot.push(tmp / "base", "127.0.0.1:5000/snaps/base:1")
    handle: SnapshotHandle = await Snapshot.pull("127.0.0.1:5000/snaps/base:1", dest=tmp, progress=on_progress)
    elsewhere: SnapshotHandle = await Snapshot.pull("127.0.0.1:5000/snaps/base:1")
    pushed: str = await Image.push(full, "127.0.0.1:5000/app:1", progress=on_progress)
    print(pushed)
    await Image.save(full, tmp / "saved.tar", progress=on_progress)
    await Image.save(pulled.manifest_digest, tmp / "again.tar")
    try:
        await Image.remove(full)
    except msb.ImageInUseError as err:
        print(err.kind)
    try:
        await Image.pull("127.0.0.1:1/none:1")
    except msb.RegistryError as err:
        print(err.kind)
    print(origin, digest, again, handle.digest, elsewhere.path)


async def configuration(tmp: pathlib.Path) -> None:
    msb.set_default_config(Config(home=tmp, guest_assets_dir=tmp / "guest", accel="auto"))
    with msb.use_config(Config(home=tmp / "other", accel="tcg")) as cfg:
        print(cfg.home, cfg.guest_assets_dir, cfg.accel, msb.current_config())
        await asyncio.wait_for(Snapshot.list(), timeout=1)


async def errors() -> None:
    try:
        await Snapshot.open("missing")
    except msb.SnapshotNotFoundError as err:
        kind: str = err.kind
        print(kind, err.message)
    except MicrosandboxError as err:
        print(err.kind)
    kinds: list[str] = msb.kinds()
    table: dict[str, type[MicrosandboxError]] = msb.ERRORS_BY_KIND
    print(kinds, table, msb.IoError, msb.RuntimeError, msb.CancelledError)
    task = asyncio.create_task(Snapshot.list())
    task.cancel()
