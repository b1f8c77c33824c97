//! Snapshot archives: one file that carries a snapshot (optionally its
//! ancestors and its image) from one machine to another. An archive is a
//! tar stream, zstd-compressed unless asked otherwise, whose layout is fixed
//! (`docs/archive.md`):
//!
//! ```text
//! msb-archive.json                    first entry: what the archive holds
//! images/blobs/sha256/<hex>           image blobs (with_image)
//! images/lower/<manifest-hex>.erofs   the image's built root disk (with_image)
//! snapshots/<digest-hex>/manifest.json
//! snapshots/<digest-hex>/<upper>      GNU sparse entry: holes stay holes
//! ```
//!
//! Artifact directories are named by their manifest digest, so an archive
//! commits to every manifest it carries; the names they land under come
//! from `msb-archive.json`. Export lives in [`export`], import (which treats
//! the archive as hostile) in [`import`] with its checks of the index and
//! entry names in [`rules`], the tar dialect in [`tarfmt`]. A snapshot
//! travelling through a registry as separate blobs is written by
//! [`export::write_file_blob`] and joined back for import by [`joined`].

mod export;
mod import;
mod joined;
mod rules;
mod tarfmt;

use serde::{Deserialize, Serialize};

pub(crate) use export::{ancestors_and, archive_names, export_blocking, write_file_blob};
pub(crate) use import::import_blocking;
pub(crate) use joined::{SnapshotBlobs, land_blobs};

/// Options of [`Snapshot::export`](crate::Snapshot::export).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOpts {
    /// Also bundle every ancestor, walking the parent chain.
    pub with_parents: bool,
    /// Also bundle the pinned image (blobs and built root disk), so the
    /// archive boots on a machine that never saw the image.
    pub with_image: bool,
    /// Write a plain `.tar` instead of `.tar.zst`.
    pub plain_tar: bool,
}

/// Value of `format` in `msb-archive.json`.
pub const ARCHIVE_FORMAT: &str = "msb-snapshot-archive-v1";

/// zstd level of exported archives: level 3 (zstd's default) compresses an
/// ext4 upper within a few percent of level 9 at several times the speed;
/// the work is spread over every core.
pub const ZSTD_LEVEL: i32 = 3;

/// Name of the first entry.
const INDEX_ENTRY: &str = "msb-archive.json";

/// Largest `msb-archive.json` accepted.
const INDEX_MAX_BYTES: u64 = 1 << 20;

/// The contents of `msb-archive.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveIndex {
    format: String,
    /// Oldest ancestor first; the last one is the head.
    snapshots: Vec<ArchivedSnapshot>,
    image: Option<ArchivedImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ArchivedSnapshot {
    /// Manifest digest; the artifact's directory in the archive is its hex.
    pub digest: String,
    /// Bare name the artifact lands under.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchivedImage {
    reference: String,
    manifest_digest: String,
    config_digest: String,
    /// Every blob in the archive: manifest, config, layers.
    blobs: Vec<String>,
    /// sha256 of the built root disk, which has no digest of its own.
    lower_digest: String,
    lower_size: u64,
}

use crate::digest::sha256_hex as hex_of;

pub(crate) fn snapshot_dir_entry(digest: &str) -> String {
    format!("snapshots/{}", hex_of(digest))
}

fn blob_entry(digest: &str) -> String {
    format!("images/blobs/sha256/{}", hex_of(digest))
}

fn lower_entry(manifest_digest: &str) -> String {
    format!("images/lower/{}.erofs", hex_of(manifest_digest))
}
