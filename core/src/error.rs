//! The one error type of the SDK. Every failure is a [`MicrosandboxError`]
//! whose [`kind`](MicrosandboxError::kind) is a stable string that bindings
//! map to their own idiom (Go sentinels, a TS `.kind`, Python subclasses).
//! Kinds never change once published; messages may improve.

use std::path::{Path, PathBuf};

/// Result alias used across the SDK.
pub type MicrosandboxResult<T> = Result<T, MicrosandboxError>;

/// Every error the SDK returns.
#[derive(Debug, thiserror::Error)]
pub enum MicrosandboxError {
    /// A snapshot destination already exists and `force` was not set.
    #[error("snapshot already exists at {path}; pass force to overwrite it")]
    SnapshotAlreadyExists {
        /// The destination that exists.
        path: PathBuf,
    },

    /// No artifact (or index entry) matches the given name, digest or path.
    #[error("snapshot not found: {what}")]
    SnapshotNotFound {
        /// What was looked for, and where.
        what: String,
    },

    /// A snapshot was requested of a sandbox that is still running.
    #[error("sandbox '{name}' is running; stop it before taking a snapshot")]
    SnapshotSandboxRunning {
        /// The sandbox.
        name: String,
    },

    /// The artifact's content disagrees with its manifest: a recorded digest
    /// that does not match, an upper file of the wrong size, or a missing upper.
    #[error("snapshot integrity check failed for {path}: {reason}")]
    SnapshotIntegrity {
        /// The artifact directory.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },

    /// The manifest cannot be parsed or breaks a rule of the format.
    #[error("invalid snapshot manifest {path}: {reason}")]
    ManifestInvalid {
        /// The manifest file.
        path: PathBuf,
        /// The rule it breaks.
        reason: String,
    },

    /// The manifest names an integrity algorithm this build does not implement.
    #[error(
        "unsupported upper integrity algorithm '{algorithm}' in {path} (supported: {supported})"
    )]
    IntegrityAlgorithmUnsupported {
        /// The manifest naming it.
        path: PathBuf,
        /// The algorithm named.
        algorithm: String,
        /// The algorithms this build implements.
        supported: String,
    },

    /// A snapshot archive is malformed, truncated or hostile.
    #[error("invalid snapshot archive {path}: {reason}")]
    ArchiveInvalid {
        /// The archive file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A snapshot still has indexed children and `force` was not set.
    #[error("snapshot {digest} has {children} indexed children; pass force to remove it anyway")]
    SnapshotHasChildren {
        /// The snapshot's digest.
        digest: String,
        /// How many indexed snapshots name it as parent.
        children: u64,
    },

    /// The caller's configuration is incomplete or contradictory.
    #[error("invalid configuration: {0}")]
    InvalidConfig(
        /// What is wrong and how to fix it.
        String,
    ),

    /// No sandbox has the given name.
    #[error("sandbox not found: {name}")]
    SandboxNotFound {
        /// The name looked for.
        name: String,
    },

    /// A sandbox with the given name already exists.
    #[error("sandbox '{name}' already exists; remove it first or pick another name")]
    SandboxAlreadyExists {
        /// The name taken.
        name: String,
    },

    /// The operation needs a running sandbox and this one is stopped or crashed.
    #[error("sandbox '{name}' is {state}, not running; start it first")]
    SandboxNotRunning {
        /// The sandbox.
        name: String,
        /// Its state (`stopped` or `crashed`).
        state: String,
    },

    /// `resume` was asked of a sandbox that is not paused.
    #[error(
        "sandbox '{name}' is {state}, not paused; only a sandbox paused by a full snapshot resumes"
    )]
    SandboxNotPaused {
        /// The sandbox.
        name: String,
        /// Its state.
        state: String,
    },
    /// A full snapshot's saved VM state cannot run here: another QEMU
    /// version, accelerator, CPU model, device layout or guest protocol.
    #[error("snapshot {path} cannot be restored here: {reason}")]
    SnapshotIncompatible {
        /// The artifact directory.
        path: PathBuf,
        /// What differs, and how.
        reason: String,
    },
    /// No image matches the given reference or digest.
    #[error("image not found: {reference}")]
    ImageNotFound {
        /// The reference or digest looked for.
        reference: String,
    },

    /// An image cannot be removed: a snapshot pins it (by manifest digest)
    /// or a sandbox was created from it, and no other reference keeps it.
    #[error("image {reference} is in use by {users}; remove them first")]
    ImageInUse {
        /// The image's reference or digest, as asked for.
        reference: String,
        /// Who uses it (`snapshot <name or path>`, `sandbox <name>`, …).
        users: String,
    },

    /// A registry could not give an image: the connection failed or
    /// dropped (after a retry), it refused the credentials, or what it sent
    /// breaks a rule (a blob that does not match its digest, a manifest over
    /// the size limit, no linux/amd64 manifest). An unknown reference is
    /// `ImageNotFound` instead.
    #[error("registry error for {reference}: {reason}")]
    Registry {
        /// The (normalised) image reference.
        reference: String,
        /// What failed.
        reason: String,
    },

    /// The VM or its tooling failed.
    #[error("runtime error: {0}")]
    Runtime(
        /// What failed, with the VM's console tail where there is one.
        String,
    ),

    /// The call was cancelled (its future dropped or its
    /// [`CancellationToken`](crate::CancellationToken) fired) and what it had
    /// staged was removed.
    #[error("the operation was cancelled")]
    Cancelled,

    /// A filesystem or OS call failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl MicrosandboxError {
    /// The stable kind string of this error, identical in every SDK.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SnapshotAlreadyExists { .. } => "SnapshotAlreadyExists",
            Self::SnapshotNotFound { .. } => "SnapshotNotFound",
            Self::SnapshotSandboxRunning { .. } => "SnapshotSandboxRunning",
            Self::SnapshotIntegrity { .. } => "SnapshotIntegrity",
            Self::ManifestInvalid { .. } => "ManifestInvalid",
            Self::IntegrityAlgorithmUnsupported { .. } => "IntegrityAlgorithmUnsupported",
            Self::ArchiveInvalid { .. } => "ArchiveInvalid",
            Self::SnapshotHasChildren { .. } => "SnapshotHasChildren",
            Self::InvalidConfig(_) => "InvalidConfig",
            Self::SandboxNotFound { .. } => "SandboxNotFound",
            Self::SandboxAlreadyExists { .. } => "SandboxAlreadyExists",
            Self::SandboxNotRunning { .. } => "SandboxNotRunning",
            Self::SandboxNotPaused { .. } => "SandboxNotPaused",
            Self::SnapshotIncompatible { .. } => "SnapshotIncompatible",
            Self::ImageNotFound { .. } => "ImageNotFound",
            Self::ImageInUse { .. } => "ImageInUse",
            Self::Registry { .. } => "Registry",
            Self::Runtime(_) => "Runtime",
            Self::Cancelled => "Cancelled",
            Self::Io { .. } => "Io",
        }
    }

    /// Every kind string, for bindings that generate one class or sentinel each.
    pub const KINDS: &'static [&'static str] = &[
        "SnapshotAlreadyExists",
        "SnapshotNotFound",
        "SnapshotSandboxRunning",
        "SnapshotIntegrity",
        "ManifestInvalid",
        "IntegrityAlgorithmUnsupported",
        "ArchiveInvalid",
        "SnapshotHasChildren",
        "InvalidConfig",
        "SandboxNotFound",
        "SandboxAlreadyExists",
        "SandboxNotRunning",
        "SandboxNotPaused",
        "SnapshotIncompatible",
        "ImageNotFound",
        "ImageInUse",
        "Registry",
        "Runtime",
        "Cancelled",
        "Io",
    ];

    /// An I/O failure on `path`; a cancellation that travelled through I/O
    /// code (see [`control`](crate::control)) comes out as `Cancelled`.
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        if is_cancelled_io(&source) {
            return Self::Cancelled;
        }
        Self::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub(crate) fn manifest_invalid(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Self::ManifestInvalid {
            path: path.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn integrity(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Self::SnapshotIntegrity {
            path: path.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// Marks an `io::Error` as a cancellation rather than a failure.
#[derive(Debug)]
struct CancelledMarker;

impl std::fmt::Display for CancelledMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cancelled")
    }
}

impl std::error::Error for CancelledMarker {}

/// An `io::Error` that [`MicrosandboxError::io`] turns into `Cancelled`.
/// Not of kind `Interrupted`: `read_exact`, `io::copy` and zstd retry those.
pub(crate) fn cancelled_io() -> std::io::Error {
    std::io::Error::other(CancelledMarker)
}

/// Whether `err` is a cancellation (see [`cancelled_io`]).
pub(crate) fn is_cancelled_io(err: &std::io::Error) -> bool {
    err.get_ref()
        .is_some_and(|inner| inner.is::<CancelledMarker>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample per variant; the match below stops compiling when a
    /// variant is added without a sample here (and so without a check that
    /// `KINDS` lists it).
    fn one_of_each() -> Vec<MicrosandboxError> {
        use MicrosandboxError as E;
        let samples = vec![
            E::SnapshotAlreadyExists { path: "/x".into() },
            E::SnapshotNotFound { what: "x".into() },
            E::SnapshotSandboxRunning { name: "x".into() },
            E::integrity("/x", "x"),
            E::manifest_invalid("/x", "x"),
            E::IntegrityAlgorithmUnsupported {
                path: "/x".into(),
                algorithm: "x".into(),
                supported: "y".into(),
            },
            E::ArchiveInvalid {
                path: "/x".into(),
                reason: "x".into(),
            },
            E::SnapshotHasChildren {
                digest: "x".into(),
                children: 1,
            },
            E::InvalidConfig("x".into()),
            E::SandboxNotFound { name: "x".into() },
            E::SandboxAlreadyExists { name: "x".into() },
            E::SandboxNotRunning {
                name: "x".into(),
                state: "stopped".into(),
            },
            E::SandboxNotPaused {
                name: "x".into(),
                state: "running".into(),
            },
            E::SnapshotIncompatible {
                path: "/x".into(),
                reason: "x".into(),
            },
            E::ImageNotFound {
                reference: "x".into(),
            },
            E::ImageInUse {
                reference: "x".into(),
                users: "sandbox y".into(),
            },
            E::Registry {
                reference: "x".into(),
                reason: "y".into(),
            },
            E::Runtime("x".into()),
            E::Cancelled,
            E::io("/x", std::io::Error::other("x")),
        ];
        for e in &samples {
            match e {
                E::SnapshotAlreadyExists { .. }
                | E::SnapshotNotFound { .. }
                | E::SnapshotSandboxRunning { .. }
                | E::SnapshotIntegrity { .. }
                | E::ManifestInvalid { .. }
                | E::IntegrityAlgorithmUnsupported { .. }
                | E::ArchiveInvalid { .. }
                | E::SnapshotHasChildren { .. }
                | E::InvalidConfig(_)
                | E::SandboxNotFound { .. }
                | E::SandboxAlreadyExists { .. }
                | E::SandboxNotRunning { .. }
                | E::SandboxNotPaused { .. }
                | E::SnapshotIncompatible { .. }
                | E::ImageNotFound { .. }
                | E::ImageInUse { .. }
                | E::Registry { .. }
                | E::Runtime(_)
                | E::Cancelled
                | E::Io { .. } => {}
            }
        }
        samples
    }

    #[test]
    fn every_variant_has_its_own_listed_kind() {
        let samples = one_of_each();
        let mut seen: Vec<&str> = samples.iter().map(MicrosandboxError::kind).collect();
        assert_eq!(
            seen,
            MicrosandboxError::KINDS,
            "KINDS must list every kind, in order"
        );
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen.len(),
            MicrosandboxError::KINDS.len(),
            "kinds must be distinct"
        );
    }
}
