"""Reference implementations of the upper-integrity algorithms, written
straight from docs/integrity.md with no shared code, so that the Rust core
(and every SDK) is checked against an independent reading of the definition.
Slow by design: clarity over speed. Works on an in-memory description of a
sparse file: (size, [(offset, bytes), ...]).
"""

import hashlib
import struct

LEAF_SIZE = 64 * 1024


def materialize(size, writes):
    data = bytearray(size)
    for offset, chunk in writes:
        data[offset:offset + len(chunk)] = chunk
    return bytes(data)


def sparse_sha256_v1(data):
    h = hashlib.sha256()
    h.update(b"msb-sparse-sha256-v1\0")
    h.update(struct.pack("<Q", len(data)))
    h.update(data)
    return "sha256:" + h.hexdigest()


def _leaf(block):
    return hashlib.sha256(b"\x00" + block).digest()


def _node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_sha256_v1(data):
    n = len(data)
    leaves = max(1, -(-n // LEAF_SIZE))
    width = 1
    while width < leaves:
        width *= 2
    zero_leaf = _leaf(bytes(LEAF_SIZE))
    # Only leaves that hold data are materialized; the rest are zero subtrees.
    level = {}
    for i in range(leaves):
        block = data[i * LEAF_SIZE:(i + 1) * LEAF_SIZE].ljust(LEAF_SIZE, b"\0")
        if any(block):
            level[i] = _leaf(block)
    zero = zero_leaf
    while width > 1:
        parents = {}
        for i in sorted(level):
            p = i // 2
            if p in parents:
                continue
            left = level.get(2 * p, zero)
            right = level.get(2 * p + 1, zero)
            parents[p] = _node(left, right)
        level = parents
        zero = _node(zero, zero)
        width //= 2
    root = level.get(0, zero)
    h = hashlib.sha256()
    h.update(b"msb-merkle-sha256-v1\0")
    h.update(struct.pack("<Q", n))
    h.update(root)
    return "sha256:" + h.hexdigest()


ALGORITHMS = {
    "msb-sparse-sha256-v1": sparse_sha256_v1,
    "msb-merkle-sha256-v1": merkle_sha256_v1,
}
