"""Interpreter exit right after native calls: the binding's workers hand
results back to Python up to the last moment, and one that entered Python
while the interpreter finalized used to crash the process (SIGSEGV or a
fatal `PyGILState_Release` error). Many short processes, each ending right
after a burst of calls, must all exit cleanly."""

from __future__ import annotations

import pathlib
import subprocess
import sys

SCRIPT = """
import asyncio, sys
import microsandbox as msb

async def main():
    with msb.use_config(msb.Config(home=sys.argv[1])):
        await asyncio.gather(*(msb.Snapshot.list() for _ in range(50)))
        pending = [asyncio.ensure_future(msb.Snapshot.list()) for _ in range(20)]
        await pending[0]

asyncio.run(main())
"""


def test_processes_exit_cleanly_right_after_calls(tmp_path: pathlib.Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(tmp_path / f"home-{i}")], stderr=subprocess.PIPE, cwd=tmp_path
        )
        for i in range(24)
    ]
    failures = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=60)
        if proc.returncode != 0:
            failures.append((proc.returncode, stderr.decode(errors="replace")[-500:]))
    assert not failures, failures
