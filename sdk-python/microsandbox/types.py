"""Typed shapes of the plain data the SDK returns."""

from __future__ import annotations

import pathlib
from typing import Literal, TypedDict


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
