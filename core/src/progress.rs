//! Progress reporting for long operations (verify, export, import, image
//! load, image pull).
//! A progress callback is a plain `Fn(ProgressEvent)` that any binding can
//! forward to its own language: the event is `Copy` and holds no borrows.
//! The events are produced by the tracker in [`control`](crate::control),
//! which is also where long loops check for cancellation.

use std::sync::Arc;

/// What a long operation is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProgressPhase {
    /// Hashing an upper layer to check or record its integrity.
    Hash,
    /// Writing an archive (bytes of snapshot data and image files stored).
    Export,
    /// Reading an archive (bytes of the archive file consumed).
    Import,
    /// Loading an image: bytes of its layer blobs applied to its root.
    Load,
    /// Pulling an image from a registry: bytes of its blobs downloaded
    /// (blobs already in the store count as done at once).
    Pull,
    /// Pushing to a registry: bytes of blobs uploaded (blobs the registry
    /// has already count as done).
    Push,
}

impl ProgressPhase {
    /// Stable name of the phase, identical in every SDK.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hash => "hash",
            Self::Export => "export",
            Self::Import => "import",
            Self::Load => "load",
            Self::Pull => "pull",
            Self::Push => "push",
        }
    }
}

/// One progress report: `done_bytes` of `total_bytes` are finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressEvent {
    /// What the operation is doing.
    pub phase: ProgressPhase,
    /// Bytes finished so far.
    pub done_bytes: u64,
    /// Bytes in all (the last event has `done_bytes == total_bytes`).
    pub total_bytes: u64,
}

/// A progress sink. Called from worker threads, possibly concurrently.
pub type ProgressCallback = Arc<dyn Fn(ProgressEvent) + Send + Sync>;
