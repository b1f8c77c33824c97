"""Snapshot entry points on artifacts written without a VM: open and the
accessors, the index (reindex, list, get, remove with children), list_dir,
export and import with progress, exact sizes above 2**53, and a listing of
10,000 handles that comes back whole."""

from __future__ import annotations

import datetime
import os
import pathlib
import tempfile
import time

import pytest

import microsandbox as msb
from helpers import IMAGE_DIGEST, make_artifact, write_manifest


async def test_open_and_accessors(home: pathlib.Path) -> None:
    path = make_artifact(
        home / "snapshots" / "base",
        labels={"zeta": "1", "alpha": "ünïcode", "mid": "x"},
        algorithm="msb-merkle-sha256-v1",
    )
    snap = await msb.Snapshot.open("base")
    assert snap.path == path
    assert snap.digest.startswith("sha256:") and len(snap.digest) == 71
    assert snap.size_bytes == 1 << 20 and isinstance(snap.size_bytes, int)
    assert snap.image_ref == "local/busybox:test"
    assert snap.image_manifest_digest == IMAGE_DIGEST
    assert snap.format == "raw" and snap.fstype == "ext4"
    assert snap.parent is None and snap.source_sandbox == "api"
    assert snap.created_at == "2026-11-20T10:00:00Z"
    assert list(snap.labels.items()) == [("alpha", "ünïcode"), ("mid", "x"), ("zeta", "1")]
    assert (await msb.Snapshot.open(path)).digest == snap.digest
    assert (await msb.Snapshot.open(str(path))).digest == snap.digest
    report = await snap.verify()
    assert report == {
        "digest": snap.digest,
        "path": path,
        "upper": {"kind": "verified", "algorithm": "msb-merkle-sha256-v1", "digest": report["upper"]["digest"]},
    }
    with open(path / "upper.ext4", "r+b") as f:
        f.seek(4096)
        f.write(b"X")
    with pytest.raises(msb.SnapshotIntegrityError):
        await snap.verify()


async def test_index_reindex_list_get_remove(home: pathlib.Path) -> None:
    snaps = home / "snapshots"
    make_artifact(snaps / "parent", created_at="2026-11-20T10:00:00Z")
    parent = await msb.Snapshot.open("parent")
    make_artifact(snaps / "child", data=b"child", parent=parent.digest, created_at="2026-11-21T10:00:00Z")
    child = await msb.Snapshot.open("child")
    assert child.parent == parent.digest

    assert await msb.Snapshot.reindex() == 2
    listed = await msb.Snapshot.list()
    assert [h.name for h in listed] == ["child", "parent"], "newest first"
    handle = await msb.Snapshot.get("parent")
    assert handle.digest == parent.digest and handle.path == parent.path
    assert handle.size_bytes == 1 << 20 and handle.format == "raw"
    assert handle.image_ref == "local/busybox:test" and handle.parent_digest is None
    assert handle.created_at == datetime.datetime(2026, 11, 20, 10, 0, tzinfo=datetime.timezone.utc)
    assert handle.created_at.tzinfo is not None
    assert (await msb.Snapshot.get(child.digest)).parent_digest == parent.digest
    assert (await handle.open()).digest == parent.digest

    with pytest.raises(msb.SnapshotHasChildrenError):
        await msb.Snapshot.remove("parent")
    with pytest.raises(msb.SnapshotHasChildrenError):
        await handle.remove()
    await msb.Snapshot.remove("child")
    await handle.remove()
    assert await msb.Snapshot.list() == []
    with pytest.raises(msb.SnapshotNotFoundError):
        await msb.Snapshot.get("parent")

    make_artifact(snaps / "p2")
    p2 = await msb.Snapshot.open("p2")
    make_artifact(snaps / "c2", parent=p2.digest)
    assert await msb.Snapshot.reindex(snaps) == 2
    await msb.Snapshot.remove(p2.path, force=True)
    assert [h.name for h in await msb.Snapshot.list()] == ["c2"]


async def test_list_dir_skips_what_is_not_an_artifact(home: pathlib.Path) -> None:
    elsewhere = home / "elsewhere"
    make_artifact(elsewhere / "one")
    make_artifact(elsewhere / "two", data=b"two")
    (elsewhere / "not-one").mkdir()
    (elsewhere / ".hidden").mkdir()
    found = await msb.Snapshot.list_dir(elsewhere)
    assert sorted(s.path.name for s in found) == ["one", "two"]
    assert await msb.Snapshot.list() == [], "list_dir never touches the index"


async def test_export_import_with_progress(home: pathlib.Path) -> None:
    make_artifact(home / "snapshots" / "shipped", size=64 << 20, data=os.urandom(3 << 20))
    snap = await msb.Snapshot.open("shipped")
    for plain in (False, True):
        out = home / "out" / ("a.tar" if plain else "a.tar.zst")
        events: list[msb.ProgressEvent] = []
        await msb.Snapshot.export("shipped", out, plain_tar=plain, progress=events.append)
        assert out.is_file()
        assert events[-1].done_bytes == events[-1].total_bytes > 0
        assert [e.done_bytes for e in events] == sorted(e.done_bytes for e in events)

        with tempfile.TemporaryDirectory(prefix="msb-py-import-") as second:
            with msb.use_config(msb.Config(home=second)):
                imported: list[msb.ProgressEvent] = []
                handle = await msb.Snapshot.import_(out, progress=imported.append)
                assert handle.digest == snap.digest
                assert {e.phase for e in imported} == {"import"}
                assert imported[-1].done_bytes == imported[-1].total_bytes == out.stat().st_size
                again = await handle.open()
                assert (await again.verify())["digest"] == snap.digest
            dest = pathlib.Path(second) / "custom"
            with msb.use_config(msb.Config(home=second)):
                moved = await msb.Snapshot.import_(out, dest=dest)
                assert moved.path.parent == dest
    with pytest.raises(msb.SnapshotNotFoundError):
        await msb.Snapshot.export("nothing", home / "x.tar")


async def test_sizes_at_the_2_pow_53_edge_stay_exact(home: pathlib.Path) -> None:
    # The manifest format caps sizes at 2**53 - 1 (docs/manifest.md: what
    # every SDK language reads exactly), so that is the largest size that can
    # reach the SDK; one more is the core's ManifestInvalid. Sizes are Python
    # ints converted from u64, never floats.
    largest = (1 << 53) - 1
    # ext4 stops at 16 TiB; tmpfs holds a sparse file of this apparent size.
    with tempfile.TemporaryDirectory(prefix="msb-py-huge-", dir="/dev/shm") as scratch:
        directory = pathlib.Path(scratch) / "huge"
        directory.mkdir()
        with open(directory / "upper.ext4", "wb") as f:
            f.truncate(largest)
        write_manifest(directory, largest)
        snap = await msb.Snapshot.open(directory)
        assert type(snap.size_bytes) is int and snap.size_bytes == largest
        assert (await snap.verify())["upper"] == {"kind": "not_recorded"}
        assert await msb.Snapshot.reindex(scratch) == 1
        handle = await msb.Snapshot.get(snap.digest)
        assert type(handle.size_bytes) is int and handle.size_bytes == largest

        over = pathlib.Path(scratch) / "over"
        over.mkdir()
        with open(over / "upper.ext4", "wb") as f:
            f.truncate(largest + 2)
        write_manifest(over, largest + 2)
        with pytest.raises(msb.ManifestInvalidError, match="2\\^53"):
            await msb.Snapshot.open(over)
        await msb.Snapshot.remove(directory)


async def test_a_listing_of_10000_comes_back_whole(home: pathlib.Path) -> None:
    snaps = home / "snapshots"
    count = 10_000
    started = time.perf_counter()
    for i in range(count):
        d = snaps / f"s{i:05}"
        d.mkdir(parents=True)
        with open(d / "upper.ext4", "wb") as f:
            f.truncate(4096)
        write_manifest(d, 4096, created_at=f"2026-01-01T{i // 3600 % 24:02}:{i // 60 % 60:02}:{i % 60:02}Z")
    assert await msb.Snapshot.reindex() == count
    listed = await msb.Snapshot.list()
    assert len(listed) == count
    assert len({h.digest for h in listed}) == count
    names = {h.name for h in listed}
    assert names == {f"s{i:05}" for i in range(count)}
    print(f"10,000 artifacts written, indexed and listed in {time.perf_counter() - started:.1f} s")
