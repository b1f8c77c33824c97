"""Every case of tests/conformance/cases/*.json through the public API (the
format is in tests/conformance/README.md), one pytest case each, with one
temporary home for the whole run, as the Rust runner does."""

from __future__ import annotations

import json
import pathlib
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

import microsandbox as msb
from helpers import REPO

CASES_DIR = REPO / "tests" / "conformance" / "cases"


def load_cases() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for path in sorted(CASES_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        assert doc["format"] == "microsandbox-conformance-v1"
        for case in doc["cases"]:
            cases.append((f"{doc['suite']}/{case['name']}", case))
    return cases


CASES = load_cases()


def test_every_case_file_is_loaded() -> None:
    assert len(list(CASES_DIR.glob("*.json"))) >= 3
    assert len(CASES) >= 58, f"only {len(CASES)} cases"


@pytest.fixture(scope="module")
def shared_home() -> Iterator[pathlib.Path]:
    with tempfile.TemporaryDirectory(prefix="msb-py-conformance-") as home:
        yield pathlib.Path(home)


def pattern_bytes(write: dict[str, Any]) -> bytes:
    pattern = write["pattern"].encode()
    length = int(write["len"])
    return (pattern * (length // max(len(pattern), 1) + 1))[:length]


def write_at(path: pathlib.Path, write: dict[str, Any]) -> None:
    with open(path, "r+b") as f:
        f.seek(int(write["offset"]))
        f.write(pattern_bytes(write))


def materialize(artifact: dict[str, Any], directory: pathlib.Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if artifact.get("manifest_bytes") is not None:
        (directory / "manifest.json").write_bytes(artifact["manifest_bytes"].encode())
    upper = artifact.get("upper")
    if upper is not None:
        path = directory / "upper.ext4"
        with open(path, "wb") as f:
            f.truncate(int(upper["size"]))
        for write in upper["writes"]:
            write_at(path, write)


def check_error(where: str, err: msb.MicrosandboxError, expect: dict[str, Any]) -> None:
    assert "error" in expect, f"{where}: unexpected error {err.kind}: {err}"
    assert err.kind == expect["error"], f"{where}: expected {expect['error']}, got {err.kind}: {err}"
    assert type(err) is msb.ERRORS_BY_KIND[err.kind]


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=[n for n, _ in CASES])
async def test_case(case: dict[str, Any], shared_home: pathlib.Path, tmp_path: pathlib.Path) -> None:
    artifact = case["artifact"]
    location = (artifact or {}).get("location") or {}
    if location.get("name") is not None:
        directory = shared_home / "snapshots" / location["name"]
    else:
        directory = tmp_path / "artifact"
    if artifact is not None:
        materialize(artifact, directory)

    opened: msb.Snapshot | None = None
    with msb.use_config(msb.Config(home=shared_home)):
        for i, step in enumerate(case["steps"]):
            where = f"{case['name']} step {i}"
            expect = step.get("expect", {})
            op = step["op"]
            if op == "open":
                target = step["target"] if "target" in step else str(directory)
                try:
                    snap = await msb.Snapshot.open(target)
                except msb.MicrosandboxError as err:
                    check_error(where, err, expect)
                    return
                assert "ok" in expect, f"{where}: expected an error, open succeeded"
                ok = expect["ok"]
                if "digest" in ok:
                    assert snap.digest == ok["digest"], where
                if "size_bytes" in ok:
                    assert snap.size_bytes == ok["size_bytes"], where
                opened = snap
            elif op == "verify":
                assert opened is not None, f"{where}: verify needs a successful open first"
                try:
                    report = await opened.verify()
                except msb.MicrosandboxError as err:
                    check_error(where, err, expect)
                    continue
                assert "ok" in expect, f"{where}: expected an error, verify succeeded"
                assert dict(report["upper"]) == expect["ok"]["upper"], where
                assert report["digest"] == opened.digest
            elif op == "write_upper":
                write_at(directory / "upper.ext4", step)
            elif op == "delete_upper":
                (directory / "upper.ext4").unlink()
            else:
                pytest.fail(f"{case['name']}: unknown op {op}")
