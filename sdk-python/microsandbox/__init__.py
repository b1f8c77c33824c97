"""microsandbox: run untrusted code in microVM sandboxes and capture a
stopped sandbox's disk as a content-addressed snapshot.

Every call that does work is ``async``; the work runs off the event loop in
the Rust core (the GIL is released) and cancelling the asyncio task cancels
it. Errors are :class:`MicrosandboxError` subclasses, one per kind.
"""

from microsandbox._native import (
    CancelToken,
    Config,
    ExecEvent,
    ExecOutput,
    ExecProcess,
    ExecStdin,
    ExitStatus,
    Image,
    ImageInfo,
    ProgressEvent,
    Sandbox,
    SandboxHandle,
    Snapshot,
    SnapshotHandle,
    set_default_config,
)
from microsandbox._support import current_config, use_config
from microsandbox.errors import (
    ERRORS_BY_KIND,
    ArchiveInvalidError,
    CancelledError,
    ImageNotFoundError,
    IntegrityAlgorithmUnsupportedError,
    InvalidConfigError,
    IoError,
    ManifestInvalidError,
    MicrosandboxError,
    RuntimeError,
    SandboxAlreadyExistsError,
    SandboxNotFoundError,
    SandboxNotRunningError,
    SnapshotAlreadyExistsError,
    SnapshotHasChildrenError,
    SnapshotIntegrityError,
    SnapshotNotFoundError,
    SnapshotSandboxRunningError,
    kinds,
)
from microsandbox.types import SnapshotVerifyReport, UpperVerifyStatus

__all__ = [
    "ArchiveInvalidError",
    "CancelToken",
    "CancelledError",
    "Config",
    "ERRORS_BY_KIND",
    "ExecEvent",
    "ExecOutput",
    "ExecProcess",
    "ExecStdin",
    "ExitStatus",
    "Image",
    "ImageInfo",
    "ImageNotFoundError",
    "IntegrityAlgorithmUnsupportedError",
    "InvalidConfigError",
    "IoError",
    "ManifestInvalidError",
    "MicrosandboxError",
    "ProgressEvent",
    "RuntimeError",
    "Sandbox",
    "SandboxAlreadyExistsError",
    "SandboxHandle",
    "SandboxNotFoundError",
    "SandboxNotRunningError",
    "Snapshot",
    "SnapshotAlreadyExistsError",
    "SnapshotHandle",
    "SnapshotHasChildrenError",
    "SnapshotIntegrityError",
    "SnapshotNotFoundError",
    "SnapshotSandboxRunningError",
    "SnapshotVerifyReport",
    "UpperVerifyStatus",
    "current_config",
    "kinds",
    "set_default_config",
    "use_config",
]
