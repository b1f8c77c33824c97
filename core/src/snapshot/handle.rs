//! [`SnapshotHandle`], the lightweight view of one index row, and its JSON
//! shape (`docs/json.md`). The handle is packed: listings build thousands
//! of them, so its text lives in one allocation. Reading rows is the index's
//! business ([`super::index`]); this file owns the layout and the accessors.

use std::fmt;
use std::path::Path;

use chrono::{Datelike, NaiveDateTime, Timelike};
use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::{Snapshot, SnapshotFormat, SnapshotKind};
use crate::error::MicrosandboxResult;
use crate::home::MsbHome;

/// A lightweight handle backed by an index row.
#[derive(Clone, PartialEq, Eq)]
pub struct SnapshotHandle {
    /// Digest, name, parent digest, image reference and path back to back:
    /// one allocation per handle instead of five, as listings build
    /// thousands of them.
    text: Box<str>,
    /// Where the first four of those end in `text` (the path runs to its end).
    ends: [u32; 4],
    has_name: bool,
    has_parent: bool,
    format: SnapshotFormat,
    size_bytes: Option<u64>,
    created_at: NaiveDateTime,
    child_count: u64,
    kind: SnapshotKind,
}

/// The fields of a handle, borrowed from wherever they were read.
pub(crate) struct HandleFields<'a> {
    pub(crate) digest: &'a str,
    pub(crate) name: Option<&'a str>,
    pub(crate) parent_digest: Option<&'a str>,
    pub(crate) image_ref: &'a str,
    pub(crate) path: &'a str,
    pub(crate) format: SnapshotFormat,
    pub(crate) size_bytes: Option<u64>,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) child_count: u64,
    pub(crate) kind: SnapshotKind,
}

impl SnapshotHandle {
    /// Manifest digest (`sha256:<hex>`), the canonical identity.
    pub fn digest(&self) -> &str {
        self.field(0)
    }

    /// Name alias, `None` for artifacts outside the default snapshots directory.
    pub fn name(&self) -> Option<&str> {
        self.has_name.then(|| self.field(1))
    }

    /// The parent snapshot's digest, `None` for a root.
    pub fn parent_digest(&self) -> Option<&str> {
        self.has_parent.then(|| self.field(2))
    }

    /// Image reference the snapshot was taken from.
    pub fn image_ref(&self) -> &str {
        self.field(3)
    }

    /// On-disk format of the upper layer.
    pub fn format(&self) -> SnapshotFormat {
        self.format
    }

    /// Apparent size of the upper file at index time.
    pub fn size_bytes(&self) -> Option<u64> {
        self.size_bytes
    }

    /// Creation time from the manifest (UTC).
    pub fn created_at(&self) -> NaiveDateTime {
        self.created_at
    }

    /// Local artifact directory.
    pub fn path(&self) -> &Path {
        Path::new(self.path_str())
    }

    /// Indexed snapshots whose parent is this one.
    pub fn child_count(&self) -> u64 {
        self.child_count
    }

    /// Disk-only, or the whole VM.
    pub fn kind(&self) -> SnapshotKind {
        self.kind
    }

    /// Open the underlying artifact (same as `Snapshot::open(self.path())`).
    pub async fn open(&self) -> MicrosandboxResult<Snapshot> {
        let path = self.path().to_path_buf();
        crate::control::blocking(move || Snapshot::open_dir(&path)).await
    }

    /// Remove this snapshot (same as `Snapshot::remove(self.digest(), force)`).
    pub async fn remove(&self, force: bool) -> MicrosandboxResult<()> {
        let (home, path) = (MsbHome::resolve()?, self.path_str().to_string());
        crate::control::blocking(move || super::index::remove(&home, &path, force)).await
    }

    /// Pack `fields` into a handle (one copy of the text).
    pub(crate) fn pack(fields: HandleFields<'_>) -> Self {
        let parts = [
            fields.digest,
            fields.name.unwrap_or_default(),
            fields.parent_digest.unwrap_or_default(),
            fields.image_ref,
        ];
        let mut text =
            String::with_capacity(parts.iter().map(|f| f.len()).sum::<usize>() + fields.path.len());
        let mut ends = [0; 4];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            // Index values are SQLite text, capped at 1e9 bytes, so four of
            // them fit in a u32.
            *end = text.len() as u32;
        }
        text.push_str(fields.path);
        Self {
            text: text.into_boxed_str(),
            ends,
            has_name: fields.name.is_some(),
            has_parent: fields.parent_digest.is_some(),
            format: fields.format,
            size_bytes: fields.size_bytes,
            created_at: fields.created_at,
            child_count: fields.child_count,
            kind: fields.kind,
        }
    }

    /// Field `i` of `text`: digest, name, parent digest, image reference.
    fn field(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start as usize..self.ends[i] as usize]
    }

    fn path_str(&self) -> &str {
        &self.text[self.ends[3] as usize..]
    }
}

impl fmt::Debug for SnapshotHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotHandle")
            .field("digest", &self.digest())
            .field("name", &self.name())
            .field("parent_digest", &self.parent_digest())
            .field("image_ref", &self.image_ref())
            .field("format", &self.format)
            .field("size_bytes", &self.size_bytes)
            .field("created_at", &self.created_at)
            .field("path", &self.path())
            .field("child_count", &self.child_count)
            .field("kind", &self.kind)
            .finish()
    }
}

/// The shape documented in `docs/json.md` ("SnapshotHandle").
impl Serialize for SnapshotHandle {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut time = [0u8; 24];
        let mut s = serializer.serialize_struct("SnapshotHandle", 10)?;
        s.serialize_field("digest", self.digest())?;
        s.serialize_field("name", &self.name())?;
        s.serialize_field("parent_digest", &self.parent_digest())?;
        s.serialize_field("image_ref", self.image_ref())?;
        s.serialize_field("format", &self.format)?;
        s.serialize_field("size_bytes", &self.size_bytes)?;
        s.serialize_field("created_at", rfc3339_utc(self.created_at, &mut time))?;
        s.serialize_field("path", self.path_str())?;
        s.serialize_field("child_count", &self.child_count)?;
        s.serialize_field("kind", &self.kind)?;
        s.end()
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SS[.mmm]Z` (milliseconds only when not zero),
/// the digits written directly: a listing formats thousands of these.
/// Years outside 0..=9999 are clamped (RFC 3339 has four-digit years).
pub(crate) fn rfc3339_utc(t: NaiveDateTime, buf: &mut [u8; 24]) -> &str {
    let fields = [
        (t.year().clamp(0, 9999) as u32, 4, b'-'),
        (t.month(), 2, b'-'),
        (t.day(), 2, b'T'),
        (t.hour(), 2, b':'),
        (t.minute(), 2, b':'),
        (t.second().min(59), 2, b'.'),
    ];
    let mut at = 0;
    for (mut n, width, separator) in fields {
        for digit in buf[at..at + width].iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
        buf[at + width] = separator;
        at += width + 1;
    }
    let mut millis = (t.nanosecond() / 1_000_000).min(999);
    if millis == 0 {
        at -= 1;
    } else {
        for digit in buf[at..at + 3].iter_mut().rev() {
            *digit = b'0' + (millis % 10) as u8;
            millis /= 10;
        }
        at += 3;
    }
    buf[at] = b'Z';
    // Only ASCII digits and separators were written.
    std::str::from_utf8(&buf[..=at]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(name: Option<&str>, parent: Option<&str>, millis: i64) -> SnapshotHandle {
        SnapshotHandle::pack(HandleFields {
            digest: "sha256:aa",
            name,
            parent_digest: parent,
            image_ref: "docker.io/library/python:3.12",
            path: "/msb/snapshots/base",
            format: SnapshotFormat::Raw,
            size_bytes: Some(1 << 40),
            created_at: chrono::DateTime::from_timestamp_millis(millis)
                .unwrap()
                .naive_utc(),
            child_count: 2,
            kind: SnapshotKind::Disk,
        })
    }

    #[test]
    fn the_packed_fields_read_back() {
        let h = handle(Some("base"), None, 0);
        assert_eq!(h.digest(), "sha256:aa");
        assert_eq!(h.name(), Some("base"));
        assert_eq!(h.parent_digest(), None);
        assert_eq!(h.image_ref(), "docker.io/library/python:3.12");
        assert_eq!(h.path(), Path::new("/msb/snapshots/base"));
        let h = handle(None, Some(""), 0);
        assert_eq!((h.name(), h.parent_digest()), (None, Some("")));
    }

    #[test]
    fn the_json_shape_is_the_documented_one() {
        let v = serde_json::to_value(handle(Some("base"), Some("sha256:bb"), 1_767_225_600_000))
            .unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "digest": "sha256:aa", "name": "base", "parent_digest": "sha256:bb",
                "image_ref": "docker.io/library/python:3.12", "format": "raw",
                "size_bytes": 1u64 << 40, "created_at": "2026-01-01T00:00:00Z",
                "path": "/msb/snapshots/base", "child_count": 2, "kind": "disk",
            })
        );
        let v = serde_json::to_value(handle(None, None, 1_767_225_600_042)).unwrap();
        assert_eq!(v["name"], serde_json::Value::Null);
        assert_eq!(v["parent_digest"], serde_json::Value::Null);
        assert_eq!(v["created_at"], "2026-01-01T00:00:00.042Z");
    }

    #[test]
    fn times_match_chrono() {
        let mut buf = [0; 24];
        for millis in [
            0,
            1,
            999,
            86_399_999,
            1_767_225_600_000,
            253_402_300_799_000,
        ] {
            let t = chrono::DateTime::from_timestamp_millis(millis).unwrap();
            let expected = t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            assert_eq!(rfc3339_utc(t.naive_utc(), &mut buf), expected, "{millis}");
        }
    }
}
