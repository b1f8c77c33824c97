#!/usr/bin/env python3
"""Writes the conformance case files in cases/ from vectors/manifest-v066.json
and the reference algorithms in reference/. Run it after changing either;
`generate.py --check` (run by `make test`) fails if a committed case file is
stale. The case format is described in README.md beside this file.
"""

import hashlib
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent / "reference"))
import msb_integrity as ref  # noqa: E402

HERE = pathlib.Path(__file__).parent
FORMAT = "microsandbox-conformance-v1"
IMAGE = {
    "ref": "docker.io/library/python:3.12",
    "manifest_digest": "sha256:" + "ab" * 32,
}
SMALL_DENSE = {"size": 4096, "writes": [{"offset": 0, "pattern": "microsandbox", "len": 4096}]}

# Kind of error each rejected vector must produce, and where. Two vectors the
# 0.6.6 release accepted (bad-created-at, bad-image-digest) are malformed; we
# reject them at open, the stricter behaviour the vectors prefer.
INVALID_EXPECT = {
    "invalid/schema-2": ("open", "ManifestInvalid"),
    "invalid/unknown-field": ("open", "ManifestInvalid"),
    "invalid/missing-parent-field": ("open", "ManifestInvalid"),
    "invalid/missing-integrity-field": ("open", "ManifestInvalid"),
    "invalid/size-mismatch": ("open", "SnapshotIntegrity"),
    "invalid/upper-file-traversal": ("open", "ManifestInvalid"),
    "invalid/bad-format": ("open", "ManifestInvalid"),
    "invalid/bad-created-at": ("open", "ManifestInvalid"),
    "invalid/bad-image-digest": ("open", "ManifestInvalid"),
    "invalid/integrity-mismatch": ("verify", "SnapshotIntegrity"),
    "invalid/unknown-integrity-algorithm": ("verify", "IntegrityAlgorithmUnsupported"),
    "invalid/parent-not-digest": ("open", "ManifestInvalid"),
    "invalid/duplicate-key": ("open", "ManifestInvalid"),
}


def pattern_bytes(write):
    p = write["pattern"].encode()
    return (p * (write["len"] // len(p) + 1))[: write["len"]]


def upper_data(upper):
    return ref.materialize(upper["size"], [(w["offset"], pattern_bytes(w)) for w in upper["writes"]])


def canonical(manifest):
    return json.dumps(manifest, separators=(",", ":"), ensure_ascii=False)


def digest_of(text):
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def manifest(upper_size, integrity=None, labels=None):
    return {
        "schema": 1,
        "format": "raw",
        "fstype": "ext4",
        "image": IMAGE,
        "parent": None,
        "created_at": "2026-07-15T10:20:30Z",
        "labels": dict(sorted((labels or {}).items())),
        "upper": {"file": "upper.ext4", "size_bytes": upper_size, "integrity": integrity},
        "source_sandbox": "api",
    }


def open_ok(digest, size):
    return {"op": "open", "expect": {"ok": {"digest": digest, "size_bytes": size}}}


def verify_ok(upper):
    return {"op": "verify", "expect": {"ok": {"upper": upper}}}


def fail(op, kind):
    return {"op": op, "expect": {"error": kind}}


def format_suite(vectors):
    cases = []
    for v in vectors["cases"]:
        upper = v.get("upper", SMALL_DENSE)
        case = {
            "name": v["name"],
            "artifact": {"manifest_bytes": v["manifest_bytes"], "upper": upper},
        }
        expected = v.get("expected_upper", {})
        if expected.get("kind") == "verified":
            # The reference must agree with the release before we trust it elsewhere.
            assert ref.sparse_sha256_v1(upper_data(upper)) == expected["digest"], v["name"]
        if "expected_digest" in v:
            case["steps"] = [open_ok(v["expected_digest"], upper["size"]), verify_ok(v["expected_upper"])]
        elif v["result"].get("accepted"):
            case["steps"] = [open_ok(v["result"]["digest"], upper["size"]), verify_ok({"kind": "not_recorded"})]
        else:
            stage, kind = INVALID_EXPECT[v["name"]]
            steps = [fail("open", kind)] if stage == "open" else [{"op": "open", "expect": {"ok": {}}}, fail("verify", kind)]
            case["steps"] = steps
            case["note"] = "0.6.6: " + json.dumps(v["result"], ensure_ascii=False)
        cases.append(case)
    return cases


# Upper shapes for the integrity suite: (name, upper). The first ones mirror
# the 0.6.6 vectors; the rest cross leaf and tree boundaries.
SHAPES = [
    ("empty", {"size": 0, "writes": []}),
    ("small-dense", SMALL_DENSE),
    ("sparse-1mib", {"size": 1048576, "writes": [
        {"offset": 0, "pattern": "A", "len": 100},
        {"offset": 65536, "pattern": "BC", "len": 4096},
        {"offset": 1048566, "pattern": "Z", "len": 10}]}),
    ("all-hole-64mib", {"size": 67108864, "writes": []}),
    ("unaligned", {"size": 1000003, "writes": [
        {"offset": 999990, "pattern": "tail", "len": 13},
        {"offset": 12345, "pattern": "mid", "len": 777}]}),
    ("one-leaf-plus-one", {"size": 65537, "writes": [{"offset": 65536, "pattern": "x", "len": 1}]}),
    ("multi-leaf-dense-3mib", {"size": 3 << 20, "writes": [{"offset": 0, "pattern": "0123456789abcdef", "len": 3 << 20}]}),
    ("zeros-written-equal-hole", {"size": 1048576, "writes": [
        {"offset": 0, "pattern": "A", "len": 100},
        {"offset": 65536, "pattern": "BC", "len": 4096},
        {"offset": 1048566, "pattern": "Z", "len": 10},
        {"offset": 200000, "pattern": "\u0000", "len": 300000}]}),
    ("sparse-256mib-far-apart", {"size": 256 << 20, "writes": [
        {"offset": 7, "pattern": "first", "len": 5},
        {"offset": (200 << 20) + 3, "pattern": "later", "len": 70000}]}),
]


def integrity_suite():
    cases = []
    for algorithm, fn in ref.ALGORITHMS.items():
        for shape, upper in SHAPES:
            data = upper_data(upper)
            upper_digest = fn(data)
            m = manifest(upper["size"], {"algorithm": algorithm, "digest": upper_digest})
            text = canonical(m)
            cases.append({
                "name": f"{algorithm}/{shape}",
                "artifact": {"manifest_bytes": text, "upper": upper},
                "steps": [
                    open_ok(digest_of(text), upper["size"]),
                    verify_ok({"kind": "verified", "algorithm": algorithm, "digest": upper_digest}),
                ],
            })
        # Tampering: the same artifact after a flipped data byte, a non-zero
        # byte in a former hole, and zeros written over a hole (still valid).
        upper = {"size": 4 << 20, "writes": [
            {"offset": 4096, "pattern": "payload", "len": 8192},
            {"offset": 3 << 20, "pattern": "more", "len": 100}]}
        upper_digest = fn(upper_data(upper))
        text = canonical(manifest(upper["size"], {"algorithm": algorithm, "digest": upper_digest}))
        verified = {"kind": "verified", "algorithm": algorithm, "digest": upper_digest}
        for label, write, expect in [
            ("flipped-data-byte", {"offset": 4100, "pattern": "#", "len": 1}, fail("verify", "SnapshotIntegrity")),
            ("byte-in-former-hole", {"offset": 2 << 20, "pattern": "\u0001", "len": 1}, fail("verify", "SnapshotIntegrity")),
            ("zeros-over-hole", {"offset": 1 << 20, "pattern": "\u0000", "len": 65536}, verify_ok(verified)),
            ("byte-past-recorded-size", {"offset": 4 << 20, "pattern": "x", "len": 1}, fail("verify", "SnapshotIntegrity")),
        ]:
            cases.append({
                "name": f"{algorithm}/tamper/{label}",
                "artifact": {"manifest_bytes": text, "upper": upper},
                "steps": [open_ok(digest_of(text), upper["size"]), verify_ok(verified), {"op": "write_upper", **write}, expect],
            })
    return cases


def location_suite():
    upper = SMALL_DENSE
    text = canonical(manifest(upper["size"]))
    digest = digest_of(text)
    art = {"manifest_bytes": text, "upper": upper}
    return [
        {"name": "open-by-bare-name", "artifact": {**art, "location": {"name": "baseline"}},
         "steps": [{"op": "open", "target": "baseline", "expect": {"ok": {"digest": digest, "size_bytes": 4096}}}]},
        {"name": "open-by-path", "artifact": art,
         "steps": [open_ok(digest, 4096), verify_ok({"kind": "not_recorded"})]},
        {"name": "missing-bare-name", "artifact": None,
         "steps": [{"op": "open", "target": "no-such-snapshot", "expect": {"error": "SnapshotNotFound"}}]},
        {"name": "empty-name", "artifact": None,
         "steps": [{"op": "open", "target": "", "expect": {"error": "InvalidConfig"}}]},
        {"name": "directory-without-manifest", "artifact": {"upper": upper},
         "steps": [fail("open", "SnapshotNotFound")]},
        {"name": "missing-upper", "artifact": {"manifest_bytes": text},
         "steps": [fail("open", "SnapshotIntegrity")]},
        {"name": "upper-deleted-after-open", "artifact": art,
         "steps": [open_ok(digest, 4096), {"op": "delete_upper"}, fail("verify", "SnapshotIntegrity")]},
        {"name": "manifest-not-json", "artifact": {"manifest_bytes": "not json", "upper": upper},
         "steps": [fail("open", "ManifestInvalid")]},
    ]


def render(suite, description, cases):
    doc = {"format": FORMAT, "suite": suite, "description": description, "cases": cases}
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def main():
    vectors = json.loads((HERE / "vectors" / "manifest-v066.json").read_text())
    files = {
        "format-v066.json": render("format-v066", "The 24 manifest vectors of the 0.6.6 release, with the error kind each rejected one must produce.", format_suite(vectors)),
        "integrity.json": render("integrity", "Golden vectors of both integrity algorithms (docs/integrity.md), computed by reference/msb_integrity.py, and tampering that verify must catch.", integrity_suite()),
        "locations.json": render("locations", "Bare names, paths and incomplete artifacts.", location_suite()),
    }
    check = "--check" in sys.argv
    stale = []
    for name, text in files.items():
        path = HERE / "cases" / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        sys.exit(f"stale conformance cases: {', '.join(stale)}; run tests/conformance/generate.py")


if __name__ == "__main__":
    main()
