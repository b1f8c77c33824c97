"""Guest networking through the Python SDK (docs/network.md) on real VMs: a
sandbox under ``none`` has only ``lo``, a published port answers from the
host's loopback, and bad network options fail before any VM starts, leaving
no sandbox behind. The `busybox` fixture removes every sandbox."""

from __future__ import annotations

import asyncio
import socket

import pytest

import microsandbox as msb


def free_port() -> int:
    """A host port nothing listens on: bound on port 0, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def read_answer(port: int) -> bytes:
    """Connect to 127.0.0.1:port and read until the peer closes (b"" when refused)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            chunks = []
            while chunk := conn.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks)
    except OSError:
        return b""


async def test_network_none_has_only_lo(busybox: str) -> None:
    sb = await msb.Sandbox.create("offline", image=busybox, network="none")
    out = await sb.exec("sh", ["-c", "tail -n +3 /proc/net/dev | cut -d: -f1"])
    assert out.exit_code == 0, out.stderr
    assert out.stdout.split() == [b"lo"]


async def test_published_port_answers_from_the_host(busybox: str) -> None:
    host_port = free_port()
    sb = await msb.Sandbox.create("server", image=busybox, network="public", ports={host_port: 8080})
    started = await sb.exec(
        "sh", ["-c", "setsid nc -ll -p 8080 -e echo hi-from-guest </dev/null >/dev/null 2>&1 &"]
    )
    assert started.exit_code == 0, started.stderr
    # Until the server listens, msb-netd closes the connection with nothing read.
    answer = b""
    for attempt in range(30):
        if attempt:
            await asyncio.sleep(0.2)
        answer = await asyncio.to_thread(read_answer, host_port)
        if answer:
            break
    assert answer == b"hi-from-guest\n"


async def test_bad_network_options_fail_before_any_vm(busybox: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        cases = {
            "unknown-policy": {"network": "everything"},
            "host-bits-set": {"allow": ["10.0.0.1/8"]},
            "taken-port": {"ports": [(taken_port, 8080)]},
            "port-out-of-range": {"ports": {70000: 8080}},
            "port-zero": {"ports": {0: 8080}},
        }
        for name, options in cases.items():
            with pytest.raises(msb.InvalidConfigError):
                await msb.Sandbox.create(name, image=busybox, **options)  # type: ignore[arg-type]
            with pytest.raises(msb.SandboxNotFoundError):
                await msb.Sandbox.get(name)
    assert await msb.Sandbox.list() == []
