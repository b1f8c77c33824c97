"""Registries, against a real docker-registry on 127.0.0.1 (started by
scripts/test-registry.sh for this module) and real VMs: a snapshot pushed
from one home is pulled into another and boots with its file; an image
pushed by us (and one seeded by skopeo) is pulled with its origin; save,
remove; and the errors a registry call can end in, cancellation included."""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

import microsandbox as msb
from helpers import REPO, guest_assets_dir, processes_mentioning

SCRIPT = REPO / "scripts" / "test-registry.sh"


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    """A registry for this module's tests; its host:port."""
    with tempfile.TemporaryDirectory(prefix="msb-py-registry-") as directory:
        host = subprocess.run(
            [str(SCRIPT), "start", directory], check=True, capture_output=True, text=True
        ).stdout.strip()
        # Credentials come from here only, never the user's ~/.docker.
        previous = os.environ.get("DOCKER_CONFIG")
        os.environ["DOCKER_CONFIG"] = directory
        try:
            yield host
        finally:
            if previous is None:
                del os.environ["DOCKER_CONFIG"]
            else:
                os.environ["DOCKER_CONFIG"] = previous
            subprocess.run([str(SCRIPT), "stop", directory], check=True)


def skopeo_push(archive: pathlib.Path, target: str) -> str:
    """Copy an OCI archive into the registry; the manifest digest it holds."""
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci-archive:{archive}", f"docker://{target}"],
        check=True,
    )
    return subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", f"docker://{target}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def phases(events: list[msb.ProgressEvent]) -> list[str]:
    """The phases seen, in order, each once; each phase's events ordered and
    ending at its total."""
    seen: list[str] = []
    for i, event in enumerate(events):
        previous = events[i - 1] if i else None
        if previous is None or previous.phase != event.phase:
            if previous is not None:
                assert previous.done_bytes == previous.total_bytes, f"{previous.phase} ended short"
            seen.append(event.phase)
        else:
            assert event.done_bytes >= previous.done_bytes, f"event {i} goes backwards"
    assert events and events[-1].done_bytes == events[-1].total_bytes
    return seen


def closed_port() -> str:
    """A loopback address nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_normalise_reference() -> None:
    assert msb.normalise_reference("python") == "docker.io/library/python:latest"
    assert msb.normalise_reference("127.0.0.1:5000/snaps/a:2") == "127.0.0.1:5000/snaps/a:2"
    with pytest.raises(msb.InvalidConfigError):
        msb.normalise_reference("Not A Reference!")


async def test_a_snapshot_and_an_image_through_a_registry(
    registry: str, home: pathlib.Path, busybox: str
) -> None:
    assets = guest_assets_dir()
    loaded = await msb.Image.get(busybox)
    assert loaded.origin is None

    # The image, pushed (its digest kept), pulled into another home with its origin.
    image_push_events: list[msb.ProgressEvent] = []
    seeded = await msb.Image.push(busybox, f"{registry}/busybox:1", progress=image_push_events.append)
    assert seeded == loaded.manifest_digest
    assert phases(image_push_events) == ["push"]
    with tempfile.TemporaryDirectory(prefix="msb-py-img-") as other:
        with msb.use_config(msb.Config(home=other, guest_assets_dir=assets)):
            events: list[msb.ProgressEvent] = []
            pulled = await msb.Image.pull(f"{registry}/busybox:1", progress=events.append)
            assert pulled.manifest_digest == seeded
            assert pulled.config_digest == loaded.config_digest
            assert pulled.origin == f"{registry}/busybox:1"
            assert phases(events) == ["pull", "load"]
            # Nothing pins it there: it goes, and a second remove finds nothing.
            await msb.Image.remove(f"{registry}/busybox:1")
            with pytest.raises(msb.ImageNotFoundError):
                await msb.Image.remove(f"{registry}/busybox:1")
            assert await msb.Image.list() == []

    # A snapshot with a file, pushed, then pushed again to the same digest.
    async with await msb.Sandbox.create("writer", image=busybox) as sb:
        out = await sb.exec("sh", ["-c", "echo through the registry > /root/note.txt"])
        assert out.exit_code == 0, out.stderr
        await sb.stop()
    snap = await msb.Snapshot.create("writer", name="noted", record_integrity=True)
    ref = f"{registry}/snaps/noted:1"
    push_events: list[msb.ProgressEvent] = []
    digest = await msb.Snapshot.push("noted", ref, progress=push_events.append)
    assert digest.startswith("sha256:") and len(digest) == 71
    assert phases(push_events)[-1] == "push"
    assert await msb.Snapshot.push(snap.path, ref) == digest

    # The image a snapshot pins cannot be removed; saved, it loads elsewhere
    # with its digest.
    with pytest.raises(msb.ImageInUseError):
        await msb.Image.remove(busybox)
    saved = home / "saved.tar"
    save_events: list[msb.ProgressEvent] = []
    await msb.Image.save(busybox, saved, progress=save_events.append)
    assert phases(save_events) == ["export"]
    with tempfile.TemporaryDirectory(prefix="msb-py-saved-") as other:
        with msb.use_config(msb.Config(home=other, guest_assets_dir=assets)):
            assert (await msb.Image.load(saved)).manifest_digest == loaded.manifest_digest

    # Pulled into a second home: it verifies and boots with the file.
    with tempfile.TemporaryDirectory(prefix="msb-py-home2-") as second:
        with msb.use_config(msb.Config(home=second, guest_assets_dir=assets)):
            pull_events: list[msb.ProgressEvent] = []
            handle = await msb.Snapshot.pull(ref, progress=pull_events.append)
            assert handle.digest == snap.digest and handle.name == "noted"
            assert phases(pull_events) == ["pull", "import"]
            report = await (await handle.open()).verify()
            assert report["upper"]["kind"] == "verified"
            try:
                async with await msb.Sandbox.create("reader", from_snapshot="noted") as reader:
                    read = await reader.exec("cat", ["/root/note.txt"])
                    assert read.stdout == b"through the registry\n"
            finally:
                for h in await msb.Sandbox.list():
                    await h.remove()
            assert not processes_mentioning(second)

    # Into a directory of one's choosing.
    with tempfile.TemporaryDirectory(prefix="msb-py-home3-") as third:
        with msb.use_config(msb.Config(home=third)):
            dest = pathlib.Path(third) / "elsewhere"
            there = await msb.Snapshot.pull(ref, dest=dest)
            assert there.path.is_relative_to(dest), there.path


async def test_registry_errors_and_a_cancelled_pull(registry: str, home: pathlib.Path) -> None:
    with pytest.raises(msb.ImageNotFoundError):
        await msb.Image.pull(f"{registry}/nothing-here:1")
    with pytest.raises(msb.ImageNotFoundError):
        await msb.Snapshot.pull(f"{registry}/snaps/nothing:1")
    with pytest.raises(msb.RegistryError):
        await msb.Image.pull(f"{closed_port()}/busybox:1")
    with pytest.raises(msb.InvalidConfigError):
        await msb.Image.pull("Not A Reference!")
    with pytest.raises(msb.SnapshotNotFoundError):
        await msb.Snapshot.push("no-such-snapshot", f"{registry}/snaps/x:1")

    # Cancelled at its first progress event: CancelledError, nothing in the home.
    with tempfile.TemporaryDirectory(prefix="msb-py-src-") as scratch:
        archive = pathlib.Path(scratch) / "busybox.tar"
        await msb.Image.build_busybox(archive, reference="busybox:2")
        skopeo_push(archive, f"{registry}/busybox:2")
    started = asyncio.Event()
    task = asyncio.create_task(
        msb.Image.pull(f"{registry}/busybox:2", progress=lambda _: started.set())
    )
    await asyncio.wait_for(started.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for sub in ("blobs/sha256", "lower", "tmp"):
        directory = home / "images" / sub
        assert not (directory.is_dir() and any(directory.iterdir())), f"images/{sub} is not empty"
    assert await msb.Image.list() == []
