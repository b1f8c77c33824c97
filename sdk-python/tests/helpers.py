"""Helpers of the suites: where the repository's files are, artifacts made
without a VM (a manifest and a sparse upper written directly), and the
process scan that proves no VM outlived a test."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[2]
BUSYBOX_REF = "local/busybox:test"
IMAGE_DIGEST = "sha256:" + "ab" * 32


def guest_assets_dir() -> str | None:
    """The guest assets `make test` installs (MSB_KERNEL_DIR), else target/runtime."""
    explicit = os.environ.get("MSB_KERNEL_DIR")
    if explicit:
        return explicit
    runtime = REPO / "target" / "runtime"
    return str(runtime) if runtime.is_dir() else None


def msb_cli() -> pathlib.Path:
    """The `msb` CLI built by cargo (for recording integrity digests)."""
    for profile in ("debug", "release"):
        path = REPO / "target" / profile / "msb"
        if path.is_file():
            return path
    raise FileNotFoundError("target/debug/msb is missing: run `cargo build -p msb-cli`")


def upper_digest(upper: pathlib.Path, algorithm: str) -> str:
    out = subprocess.run(
        [str(msb_cli()), "--json", "upper", "digest", "--algorithm", algorithm, str(upper)],
        check=True,
        capture_output=True,
    ).stdout
    digest = json.loads(out)["digest"]
    assert isinstance(digest, str)
    return digest


def write_manifest(
    directory: pathlib.Path,
    size: int,
    *,
    algorithm: str | None = None,
    parent: str | None = None,
    labels: dict[str, str] | None = None,
    created_at: str = "2026-11-20T10:00:00Z",
) -> None:
    """Write the manifest of the artifact in `directory` (its upper exists)."""
    integrity: dict[str, Any] | None = None
    if algorithm is not None:
        integrity = {
            "algorithm": algorithm,
            "digest": upper_digest(directory / "upper.ext4", algorithm),
        }
    manifest = {
        "schema": 1,
        "format": "raw",
        "fstype": "ext4",
        "image": {"ref": "local/busybox:test", "manifest_digest": IMAGE_DIGEST},
        "parent": parent,
        "created_at": created_at,
        "labels": labels if labels is not None else {"origin": "test"},
        "upper": {"file": "upper.ext4", "size_bytes": size, "integrity": integrity},
        "source_sandbox": "api",
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))


def make_artifact(
    directory: pathlib.Path,
    *,
    size: int = 1 << 20,
    data: bytes = b"microsandbox",
    **manifest: Any,
) -> pathlib.Path:
    """A small sparse artifact: `data` at 4 KiB, the rest a hole."""
    directory.mkdir(parents=True, exist_ok=True)
    upper = directory / "upper.ext4"
    with open(upper, "wb") as f:
        f.truncate(size)
        if data:
            f.seek(4096)
            f.write(data)
    write_manifest(directory, size, **manifest)
    return directory


def make_case_a(directory: pathlib.Path) -> pathlib.Path:
    """Case A: a 4 GiB sparse ext4 upper made by `mkfs.ext4 -d` over 8 MiB
    of random content, recorded with `msb-sparse-sha256-v1`."""
    directory.mkdir(parents=True, exist_ok=True)
    content = directory.parent / (directory.name + ".content")
    content.mkdir(exist_ok=True)
    (content / "random.bin").write_bytes(os.urandom(8 << 20))
    upper = directory / "upper.ext4"
    with open(upper, "wb") as f:
        f.truncate(4 << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(content), str(upper)], check=True)
    write_manifest(directory, 4 << 30, algorithm="msb-sparse-sha256-v1")
    return directory


def tree(root: pathlib.Path) -> list[str]:
    """Every path under `root`, sorted, to prove a call left nothing behind."""
    return sorted(str(p) for p in root.rglob("*"))


def processes_mentioning(needle: str) -> list[int]:
    """Live, non-zombie processes whose command line contains `needle`."""
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        zombie = stat.rsplit(")", 1)[-1].strip().startswith("Z")
        if not zombie and needle.encode() in cmdline:
            pids.append(int(entry.name))
    return pids
