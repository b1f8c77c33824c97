//! The one way a snapshot key ("name, digest or path", as users type it)
//! becomes an artifact. Every entry point that takes such a key resolves it
//! here, in this order:
//!
//! 1. An empty key is `InvalidConfig`.
//! 2. A content digest (`sha256:` + 64 or `sha512:` + 128 lowercase hex):
//!    the newest index row with that manifest digest. A digest names no
//!    directory, so there is no step on disk: not indexed is
//!    `SnapshotNotFound`.
//! 3. A bare name (no `/`, not starting with `.` or `~`): the index row
//!    with that name, else the artifact directory `<home>/snapshots/<name>`.
//! 4. Anything else is a path: the index row of that directory (compared in
//!    canonical form), else the artifact directory at that path.
//!
//! Only `SnapshotNotFound` from the index falls through to the disk; any
//! other failure of the index (an unreadable database, a corrupt row) is
//! returned as it is, never taken for "not indexed". The index answers
//! first because it is cheap and knows digests; the disk answers for
//! artifacts the index has not seen (copied in by hand, booted by path).
//! The order is also written in `docs/json.md` ("Snapshot keys").

use std::path::PathBuf;

use super::manifest::is_content_digest;
use super::{Snapshot, SnapshotHandle, index};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::{MsbHome, is_bare_name};

/// Where a key led: an index row, or an artifact found on disk only.
#[derive(Debug)]
pub(crate) enum Resolved {
    /// The key matched an index row.
    Indexed(SnapshotHandle),
    /// The key matched no row, but an artifact directory (opened).
    OnDisk(Box<Snapshot>),
}

/// What kind of key a string is (steps 2–4 of the order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Digest,
    Name,
    Path,
}

impl KeyKind {
    pub(crate) fn of(key: &str) -> MicrosandboxResult<Self> {
        if key.is_empty() {
            Err(MicrosandboxError::InvalidConfig(
                "a snapshot name, digest or path must not be empty".into(),
            ))
        } else if is_content_digest(key) {
            Ok(Self::Digest)
        } else if is_bare_name(key) {
            Ok(Self::Name)
        } else {
            Ok(Self::Path)
        }
    }
}

impl Resolved {
    /// The opened artifact (opening the indexed directory if needed).
    pub(crate) fn open(self) -> MicrosandboxResult<Snapshot> {
        match self {
            Self::Indexed(handle) => Snapshot::open_dir(handle.path()),
            Self::OnDisk(snap) => Ok(*snap),
        }
    }
}

/// Resolve `key` in the documented order: the index, then the disk.
pub(crate) fn resolve(home: &MsbHome, key: &str) -> MicrosandboxResult<Resolved> {
    let kind = KeyKind::of(key)?;
    match index::lookup(home, kind, key) {
        Ok(handle) => Ok(Resolved::Indexed(handle)),
        Err(MicrosandboxError::SnapshotNotFound { .. }) if kind != KeyKind::Digest => {
            Snapshot::open_dir(&on_disk(home, kind, key)).map(|s| Resolved::OnDisk(Box::new(s)))
        }
        Err(e) => Err(e),
    }
}

/// Resolve `key` in the index only (steps 1–4 without the disk): what
/// [`Snapshot::get`] answers.
pub(crate) fn resolve_indexed(home: &MsbHome, key: &str) -> MicrosandboxResult<SnapshotHandle> {
    index::lookup(home, KeyKind::of(key)?, key)
}

/// The directory a name or path key designates on disk.
fn on_disk(home: &MsbHome, kind: KeyKind, key: &str) -> PathBuf {
    match kind {
        KeyKind::Name => home.snapshots_dir().join(key),
        KeyKind::Digest | KeyKind::Path => PathBuf::from(key),
    }
}
