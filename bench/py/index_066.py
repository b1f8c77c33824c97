"""Times the microsandbox 0.6.6 release's snapshot index in-process, on the
same artifacts as `bench-index`: reindex, list(), list_dir() and get() by
name. Run by bench-index with MSB_HOME set to a home whose `snapshots` holds
the generated artifacts. Prints one JSON line.

usage: python index_066.py SNAPSHOTS_DIR GET_SAMPLES
"""

import asyncio
import json
import random
import statistics
import sys
import time

from microsandbox import Snapshot


async def main(snapshots_dir: str, get_samples: int) -> None:
    t = time.perf_counter()
    count = await Snapshot.reindex(snapshots_dir)
    reindex_s = time.perf_counter() - t

    list_times = []
    for _ in range(5):
        t = time.perf_counter()
        handles = await Snapshot.list()
        list_times.append(time.perf_counter() - t)
    list_dir_times = []
    for _ in range(3):
        t = time.perf_counter()
        found = await Snapshot.list_dir(snapshots_dir)
        list_dir_times.append(time.perf_counter() - t)
    names = [h.name for h in handles if getattr(h, "name", None)]
    if not names:
        names = [f"snap-{i:05d}" for i in range(count)]
    rng = random.Random(7)
    get_times = []
    for name in rng.sample(names, min(get_samples, len(names))):
        t = time.perf_counter()
        await Snapshot.get(name)
        get_times.append(time.perf_counter() - t)
    print(json.dumps({
        "indexed": count,
        "listed": len(handles),
        "list_dir_found": len(found),
        "reindex_ms": reindex_s * 1e3,
        "list_ms": statistics.median(list_times) * 1e3,
        "list_dir_ms": statistics.median(list_dir_times) * 1e3,
        "get_ms": statistics.median(get_times) * 1e3,
        "get_ms_max": max(get_times) * 1e3,
    }))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
