"""Errors: every kind of the core's KINDS list (read from the native module
at run time) raises its own subclass with `.kind` equal to the kind, through
the same conversion real errors take; panics become kind `Runtime`; and real
failures raise the right subclass."""

from __future__ import annotations

import pathlib

import pytest

import microsandbox as msb
from microsandbox import _native
from helpers import make_artifact


async def test_every_core_kind_raises_its_own_subclass() -> None:
    kinds = msb.kinds()
    assert len(kinds) >= 16 and len(set(kinds)) == len(kinds)
    seen: set[type[msb.MicrosandboxError]] = set()
    for kind in kinds:
        with pytest.raises(msb.MicrosandboxError) as caught:
            await _native.fail_with_kind_for_test(kind)
        err = caught.value
        assert err.kind == kind
        assert type(err) is msb.ERRORS_BY_KIND[kind], kind
        assert type(err) is not msb.MicrosandboxError, kind
        assert type(err).__name__ == ("IoError" if kind == "Io" else f"{kind}Error")
        assert isinstance(err, Exception) and str(err)
        seen.add(type(err))
    assert len(seen) == len(kinds), "two kinds share a class"
    assert set(msb.ERRORS_BY_KIND) == set(kinds), "a class for a kind the core lacks"


async def test_a_panic_in_async_work_is_a_runtime_error() -> None:
    with pytest.raises(msb.errors.RuntimeError) as caught:
        await _native.panic_for_test()
    assert caught.value.kind == "Runtime"
    assert "panic" in str(caught.value)


def test_a_panic_in_a_synchronous_call_is_a_runtime_error() -> None:
    with pytest.raises(msb.errors.RuntimeError) as caught:
        _native.panic_sync_for_test()
    assert caught.value.kind == "Runtime"


async def test_real_failures_raise_their_subclass(home: pathlib.Path) -> None:
    with pytest.raises(msb.SnapshotNotFoundError) as nf:
        await msb.Snapshot.open("no-such-snapshot")
    assert nf.value.kind == "SnapshotNotFound" and "no-such-snapshot" in str(nf.value)

    bad = home / "bad"
    make_artifact(bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(msb.ManifestInvalidError):
        await msb.Snapshot.open(bad)

    with pytest.raises(msb.InvalidConfigError):
        msb.Config(accel="warp")  # type: ignore[arg-type]

    with pytest.raises(msb.SandboxNotFoundError):
        await msb.Sandbox.get("nobody")
    with pytest.raises(msb.ImageNotFoundError):
        await msb.Image.get("local/none:1")
    with pytest.raises(msb.InvalidConfigError):
        await msb.Sandbox.create("both", image="x", from_snapshot="y")

    with pytest.raises(msb.IoError) as io:
        await msb.Snapshot.import_(home / "missing.tar")
    assert io.value.kind == "Io" and "missing.tar" in str(io.value)

    archive = home / "junk.tar.zst"
    archive.write_bytes(b"\x28\xb5\x2f\xfd" + b"garbage" * 100)
    with pytest.raises(msb.ArchiveInvalidError):
        await msb.Snapshot.import_(archive)
