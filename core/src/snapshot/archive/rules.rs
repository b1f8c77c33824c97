//! The rules an archive's own description must follow, checked before
//! anything it describes is trusted: `msb-archive.json` must describe a
//! well-formed archive on its own, entry names get precise messages when
//! they are hostile, and the 0.6.6 layout (no index, `sha256-<16 hex>/`
//! directories) is recognised by name.

use std::collections::HashSet;
use std::path::Path;

use super::{ARCHIVE_FORMAT, ArchiveIndex, INDEX_ENTRY};
use crate::error::MicrosandboxResult;
use crate::home::is_bare_name;
use crate::snapshot::manifest::is_sha256_digest;

/// What import calls the layout of the 0.6.6 release's archives.
pub(super) const LEGACY_FORMAT: &str = "microsandbox-0.6.6";

/// `(16 hex digits, file)` for a 0.6.6 artifact entry `sha256-<hex>/<file>`.
pub(super) fn legacy_dir(name: &str) -> Option<(&str, &str)> {
    let (dir, file) = name.split_once('/')?;
    let prefix = dir.strip_prefix("sha256-")?;
    let is_prefix = prefix.len() == 16
        && prefix
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    is_prefix.then_some((prefix, file))
}

/// `msb-archive.json` must describe a well-formed archive on its own.
pub(super) fn check_index(archive: &Path, index: &ArchiveIndex) -> MicrosandboxResult<()> {
    let bad = |reason: String| {
        Err(super::import::invalid(
            archive,
            format!("{INDEX_ENTRY}: {reason}"),
        ))
    };
    if index.format != ARCHIVE_FORMAT {
        return bad(format!(
            "format {:?} is not {ARCHIVE_FORMAT:?} (written by a newer microsandbox?)",
            index.format
        ));
    }
    if index.snapshots.is_empty() {
        return bad("lists no snapshot".into());
    }
    let mut digests = HashSet::new();
    let mut names = HashSet::new();
    for snap in &index.snapshots {
        if !is_sha256_digest(&snap.digest) || !digests.insert(&snap.digest) {
            return bad(format!("bad or repeated snapshot digest {:?}", snap.digest));
        }
        if !is_bare_name(&snap.name) || !names.insert(&snap.name) {
            return bad(format!("bad or repeated snapshot name {:?}", snap.name));
        }
    }
    if let Some(image) = &index.image {
        let mut blobs = HashSet::new();
        for blob in &image.blobs {
            if !is_sha256_digest(blob) || !blobs.insert(blob) {
                return bad(format!("bad or repeated blob digest {blob:?}"));
            }
        }
        if !blobs.contains(&image.manifest_digest) || !blobs.contains(&image.config_digest) {
            return bad("the image's manifest or config blob is not listed".into());
        }
        if !is_sha256_digest(&image.lower_digest) || image.reference.is_empty() {
            return bad("the image's reference or root disk digest is invalid".into());
        }
    }
    Ok(())
}

/// Names are compared against the layout exactly; these checks only give
/// hostile names a precise message.
pub(super) fn check_entry_name(archive: &Path, name: &str) -> MicrosandboxResult<()> {
    let bad = |reason: String| Err(super::import::invalid(archive, reason));
    if name.starts_with('/') {
        return bad(format!("entry {name} has an absolute path"));
    }
    if name
        .split('/')
        .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return bad(format!(
            "entry {name} has a '..', '.' or empty path component"
        ));
    }
    Ok(())
}
