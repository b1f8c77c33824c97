"""The SDK's exceptions: :class:`MicrosandboxError` and one subclass per
kind of the core's ``MicrosandboxError::KINDS`` (``kinds()`` returns that
list from the native module). The native module raises the subclass
registered here for an error's kind, so ``except SnapshotNotFoundError``
works and ``err.kind`` is the stable kind string."""

from __future__ import annotations

from microsandbox import _native


class MicrosandboxError(Exception):
    """Every error the SDK raises. ``kind`` is the core's stable kind string."""

    kind: str = ""

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind

    @property
    def message(self) -> str:
        """The core's message (names the thing and, where there is one, the fix)."""
        return str(self.args[0]) if self.args else ""


class SnapshotAlreadyExistsError(MicrosandboxError):
    """A snapshot destination already exists and ``force`` was not set."""

    kind = "SnapshotAlreadyExists"


class SnapshotNotFoundError(MicrosandboxError):
    """No artifact (or index entry) matches the given name, digest or path."""

    kind = "SnapshotNotFound"


class SnapshotSandboxRunningError(MicrosandboxError):
    """A snapshot was requested of a sandbox that is still running."""

    kind = "SnapshotSandboxRunning"


class SnapshotIntegrityError(MicrosandboxError):
    """The artifact's content disagrees with its manifest."""

    kind = "SnapshotIntegrity"


class ManifestInvalidError(MicrosandboxError):
    """The manifest cannot be parsed or breaks a rule of the format."""

    kind = "ManifestInvalid"


class IntegrityAlgorithmUnsupportedError(MicrosandboxError):
    """The manifest names an integrity algorithm this build does not implement."""

    kind = "IntegrityAlgorithmUnsupported"


class ArchiveInvalidError(MicrosandboxError):
    """A snapshot archive is malformed, truncated or hostile."""

    kind = "ArchiveInvalid"


class SnapshotHasChildrenError(MicrosandboxError):
    """A snapshot still has indexed children and ``force`` was not set."""

    kind = "SnapshotHasChildren"


class InvalidConfigError(MicrosandboxError):
    """The configuration is incomplete or contradictory."""

    kind = "InvalidConfig"


class SandboxNotFoundError(MicrosandboxError):
    """No sandbox has the given name."""

    kind = "SandboxNotFound"


class SandboxAlreadyExistsError(MicrosandboxError):
    """A sandbox with the given name already exists."""

    kind = "SandboxAlreadyExists"


class SandboxNotRunningError(MicrosandboxError):
    """The operation needs a running sandbox."""

    kind = "SandboxNotRunning"


class SandboxNotPausedError(MicrosandboxError):
    """``resume`` needs a sandbox paused by a full snapshot."""

    kind = "SandboxNotPaused"


class SnapshotIncompatibleError(MicrosandboxError):
    """A full snapshot's saved state does not fit this machine (QEMU
    version, machine, accelerator, CPU model, memory, vCPUs, devices or
    guest agent protocol differ)."""

    kind = "SnapshotIncompatible"


class ImageNotFoundError(MicrosandboxError):
    """No image matches the given reference or digest."""

    kind = "ImageNotFound"


class ImageInUseError(MicrosandboxError):
    """An image cannot be removed: a snapshot pins it or a sandbox was created
    from it, and no other reference keeps it (the message names them)."""

    kind = "ImageInUse"


class RegistryError(MicrosandboxError):
    """A registry could not give an image or snapshot: connection, credentials,
    or content that breaks a rule (a digest mismatch, an oversized manifest)."""

    kind = "Registry"


class RuntimeError(MicrosandboxError):  # noqa: A001  (kind `Runtime`; lives in this namespace)
    """The VM or its tooling failed (also: a panic caught at the boundary)."""

    kind = "Runtime"


class CancelledError(MicrosandboxError):
    """The core call was cancelled through its token. Cancelling the asyncio
    task raises ``asyncio.CancelledError`` instead."""

    kind = "Cancelled"


class IoError(MicrosandboxError):
    """A filesystem or OS call failed."""

    kind = "Io"


ERRORS_BY_KIND: dict[str, type[MicrosandboxError]] = {
    cls.kind: cls for cls in MicrosandboxError.__subclasses__()
}
"""The exception class of each kind; the native module raises from it."""


def kinds() -> list[str]:
    """Every error kind of the core, in its order (from the native module)."""
    return _native.kinds()


__all__ = [
    "ERRORS_BY_KIND",
    "MicrosandboxError",
    "kinds",
    "SnapshotAlreadyExistsError",
    "SnapshotNotFoundError",
    "SnapshotSandboxRunningError",
    "SnapshotIntegrityError",
    "ManifestInvalidError",
    "IntegrityAlgorithmUnsupportedError",
    "ArchiveInvalidError",
    "SnapshotHasChildrenError",
    "InvalidConfigError",
    "SandboxNotFoundError",
    "SandboxAlreadyExistsError",
    "SandboxNotRunningError",
    "SandboxNotPausedError",
    "SnapshotIncompatibleError",
    "ImageNotFoundError",
    "ImageInUseError",
    "RegistryError",
    "RuntimeError",
    "CancelledError",
    "IoError",
]
