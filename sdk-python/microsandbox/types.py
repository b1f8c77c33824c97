"""Typed shapes of the plain data the SDK returns."""

from __future__ import annotations

import pathlib
from typing import Literal, TypedDict

SnapshotKind = Literal["disk", "full"]
"""``disk``: a stopped sandbox's upper disk (restoring boots cold);
``full``: RAM, CPU and device state plus disk (restoring forks)."""

SandboxState = Literal["running", "paused", "stopped", "crashed"]
"""A sandbox's state; ``paused`` after a full snapshot, until ``resume``."""


class _UpperKind(TypedDict):
    kind: Literal["not_recorded", "verified"]


class UpperVerifyStatus(_UpperKind, total=False):
    """What the upper-layer check found: ``not_recorded`` (the manifest
    records no integrity) or ``verified`` (with ``algorithm`` and
    ``digest``)."""

    algorithm: str
    digest: str


class SnapshotVerifyReport(TypedDict):
    """Result of ``Snapshot.verify()``."""

    digest: str
    path: pathlib.Path
    upper: UpperVerifyStatus
