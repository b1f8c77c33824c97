"""The typical flow as a user of the installed wheel runs it (the packaging
test copies this file into a fresh project outside the checkout): no
MSB_KERNEL_DIR, no Rust toolchain; the guest assets come from the wheel.
The snapshot then goes through the registry REGISTRY into a third home.

    python packaging_flow.py HOME_ROOT REGISTRY
"""

from __future__ import annotations

import asyncio
import pathlib
import sys

import microsandbox as msb


async def main(root: pathlib.Path, registry: str) -> None:
    shipped = pathlib.Path(msb.__file__).parent / "microsandbox-guest"
    assert (shipped / "msb-guest-init").is_file(), f"no guest assets in the wheel at {shipped}"
    first, second = root / "home-1", root / "home-2"
    archive = root / "export" / "snap.tar.zst"

    with msb.use_config(msb.Config(home=first)):
        await msb.Image.build_busybox(root / "busybox.tar", reference="local/busybox:pkg")
        await msb.Image.load(root / "busybox.tar")
        try:
            async with await msb.Sandbox.create("pkg", image="local/busybox:pkg") as sb:
                out = await sb.exec("sh", ["-c", "echo from-the-wheel > /root/file.txt && sync"])
                assert out.exit_code == 0, out.stderr
                # A full snapshot of the running sandbox, resumed; a fork of it runs.
                full = await sb.snapshot()
                assert full.kind == "full"
                await sb.resume()
                fork = await full.restore("pkg-fork")
                out = await fork.exec("cat", ["/root/file.txt"])
                assert out.stdout == b"from-the-wheel\n", out
                assert (await fork.exec("hostname")).stdout == b"pkg-fork\n"
            snap = await msb.Snapshot.create("pkg", name="pkg-snap", record_integrity=True)
            report = await snap.verify()
            assert report["upper"]["kind"] == "verified", report
            await msb.Snapshot.export("pkg-snap", archive, with_image=True)
        finally:
            for handle in await msb.Sandbox.list():
                await handle.remove()

    with msb.use_config(msb.Config(home=second)):
        handle = await msb.Snapshot.import_(archive)
        assert handle.digest == snap.digest
        try:
            async with await msb.Sandbox.create("back", from_snapshot="pkg-snap") as sb:
                out = await sb.exec("cat", ["/root/file.txt"])
                assert out.stdout == b"from-the-wheel\n", out
        finally:
            for sandbox in await msb.Sandbox.list():
                await sandbox.remove()

    ref = f"{registry}/snaps/pkg-snap:1"
    with msb.use_config(msb.Config(home=first)):
        await msb.Snapshot.push("pkg-snap", ref)
    with msb.use_config(msb.Config(home=root / "home-3")):
        pulled = await msb.Snapshot.pull(ref)
        assert pulled.digest == snap.digest, (pulled.digest, snap.digest)
    print("packaging flow: ok (guest assets from", shipped, "; snapshot through", ref, ")")


if __name__ == "__main__":
    asyncio.run(main(pathlib.Path(sys.argv[1]), sys.argv[2]))
