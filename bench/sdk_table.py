"""The one table of `make bench-sdk`: each SDK's medians (the JSON that
bench/go, bench/ts and bench/python write with --json) beside Rust's from
the same run, with SDK.md's "Speed" targets. The target applies to the
sequential measures; the concurrent one is extra information.

    python3 bench/sdk_table.py FILE...   (a missing FILE is reported as not run)
"""

from __future__ import annotations

import json
import pathlib
import sys

MEASURES = [
    ("open + verify Case A", "verify_case_a_ms", 1.1),
    ("list() of 10,000 (+ conversion)", "list_10000_ms", 1.5),
    ("1,000 get by name, sequential", "get_1000_ms", 1.5),
    ("1,000 get by name, concurrent", "get_1000_concurrent_ms", None),
]


def main(files: list[str]) -> int:
    print(f"{'SDK':<11} {'measure':<33} {'SDK ms':>9} {'Rust ms':>9} {'ratio':>7} {'target':>7}  met")
    missed = 0
    for name in files:
        path = pathlib.Path(name)
        if not path.exists():
            print(f"{path.stem:<11} (not run: {path} missing)")
            missed += 1
            continue
        result = json.loads(path.read_text())
        for what, key, target in MEASURES:
            ours, rust = result["sdk_ms"][key], result["rust_ms"][key]
            ratio = ours / rust
            if target is None:
                met, shown = "n/a (throughput, no target)", "-"
            else:
                met, shown = ("yes" if ratio <= target else "NO"), f"{target:.1f}x"
                missed += ratio > target
            print(f"{result['sdk']:<11} {what:<33} {ours:>9.2f} {rust:>9.2f} {ratio:>6.2f}x {shown:>7}  {met}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
