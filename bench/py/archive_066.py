"""Times the microsandbox 0.6.6 release's snapshot export and import
in-process, on the artifact `bench-archive` made for it (Case A with
0.6.6's integrity algorithm recorded). Prints one JSON line.

usage: python archive_066.py ARTIFACT_DIR ARCHIVE_OUT IMPORT_DEST
"""

import asyncio
import json
import os
import sys
import time

from microsandbox import Snapshot


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


async def main(artifact: str, out: str, dest: str) -> None:
    t = time.perf_counter()
    await Snapshot.export(artifact, out)
    export_s = time.perf_counter() - t
    t = time.perf_counter()
    handle = await Snapshot.import_(out, dest=dest)
    import_s = time.perf_counter() - t
    path = getattr(handle, "path", None)
    path = path() if callable(path) else path
    digest = getattr(handle, "digest", None)
    digest = digest() if callable(digest) else digest
    upper = os.path.join(str(path), "upper.ext4")
    print(json.dumps({
        "export_ms": export_s * 1e3,
        "archive_bytes": os.path.getsize(out),
        "import_ms": import_s * 1e3,
        "imported_allocated": allocated(upper),
        "digest": digest,
    }))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
