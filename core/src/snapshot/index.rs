//! The local snapshot index: one row per known artifact (keyed by its
//! directory), with its digest, name alias, parent, image, format, size,
//! creation time and indexed child count. The artifacts are the source of
//! truth; this table is a cache that [`reindex`] rebuilds from them at any
//! time, so a failed index write never fails the operation that caused it.

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use rusqlite::types::{FromSqlError, Type};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::manifest::is_content_digest;
use super::{Snapshot, SnapshotFormat};
use crate::control::Control;
use crate::db;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::{MsbHome, is_bare_name};

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

    /// Open the underlying artifact (same as `Snapshot::open(self.path())`).
    pub async fn open(&self) -> MicrosandboxResult<Snapshot> {
        let path = self.path().to_path_buf();
        crate::blocking(move || Snapshot::open_dir(&path)).await
    }

    /// Remove this snapshot (same as `Snapshot::remove(self.digest(), force)`).
    pub async fn remove(&self, force: bool) -> MicrosandboxResult<()> {
        let (home, path) = (MsbHome::resolve()?, self.path_str().to_string());
        crate::blocking(move || remove(&home, &path, force)).await
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
            .finish()
    }
}

const COLUMNS: &str =
    "digest, name, parent_digest, image_ref, format, size_bytes, created_epoch, path, child_count";

fn handle_from_row(row: &Row<'_>) -> rusqlite::Result<SnapshotHandle> {
    // Text is copied straight from SQLite's row into the handle's one buffer.
    let name = optional_text(row, 1)?;
    let parent = optional_text(row, 2)?;
    let fields = [
        required_text(row, 0)?,
        name.unwrap_or_default(),
        parent.unwrap_or_default(),
        required_text(row, 3)?,
    ];
    let path = required_text(row, 7)?;
    let mut text =
        String::with_capacity(fields.iter().map(|f| f.len()).sum::<usize>() + path.len());
    let mut ends = [0; 4];
    for (end, field) in ends.iter_mut().zip(fields) {
        text.push_str(field);
        // SQLite caps a value at 1e9 bytes, so four of them fit in a u32.
        *end = text.len() as u32;
    }
    text.push_str(path);
    // The epoch column (not the RFC 3339 text) so listing thousands of rows
    // does no date parsing.
    let created_epoch: f64 = row.get(6)?;
    Ok(SnapshotHandle {
        text: text.into_boxed_str(),
        ends,
        has_name: name.is_some(),
        has_parent: parent.is_some(),
        format: if required_text(row, 4)? == "qcow2" {
            SnapshotFormat::Qcow2
        } else {
            SnapshotFormat::Raw
        },
        size_bytes: row.get::<_, Option<i64>>(5)?.map(|s| s as u64),
        created_at:
            chrono::DateTime::from_timestamp_millis((created_epoch * 1000.0).round() as i64)
                .map(|t| t.naive_utc())
                .unwrap_or_default(),
        child_count: row.get::<_, i64>(8)? as u64,
    })
}

/// Column `idx` as text borrowed from the row (`None` for NULL), failing as
/// `row.get::<_, Option<String>>(idx)` would.
fn optional_text<'r>(row: &'r Row<'_>, idx: usize) -> rusqlite::Result<Option<&'r str>> {
    let value = row.get_ref(idx)?;
    value.as_str_or_null().map_err(|err| match err {
        FromSqlError::InvalidType => invalid_type(row, idx, value.data_type()),
        FromSqlError::Other(err) => {
            rusqlite::Error::FromSqlConversionFailure(idx, value.data_type(), err)
        }
        err => rusqlite::Error::FromSqlConversionFailure(idx, value.data_type(), Box::new(err)),
    })
}

/// Column `idx` as text, failing on NULL as `row.get::<_, String>(idx)` would.
fn required_text<'r>(row: &'r Row<'_>, idx: usize) -> rusqlite::Result<&'r str> {
    optional_text(row, idx)?.ok_or_else(|| invalid_type(row, idx, Type::Null))
}

fn invalid_type(row: &Row<'_>, idx: usize, found: Type) -> rusqlite::Error {
    let name = row.as_ref().column_name(idx).unwrap_or_default();
    rusqlite::Error::InvalidColumnType(idx, name.to_string(), found)
}

fn parse_time(rfc3339: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(rfc3339).ok()
}

fn sql_error(home: &MsbHome) -> impl Fn(rusqlite::Error) -> MicrosandboxError + '_ {
    move |e| db::db_error(&db::db_path(home), e)
}

/// Where an artifact's row points: its canonical path, and its name alias
/// (its directory name when it lives in the default snapshots directory).
pub(crate) struct RowKey {
    pub(crate) path: PathBuf,
    pub(crate) name: Option<String>,
}

/// Resolves [`RowKey`]s, canonicalizing each directory once rather than
/// once per artifact (a reindex keys thousands of siblings).
pub(crate) struct RowKeys {
    default_dir: Option<PathBuf>,
    last_parent: Option<(PathBuf, PathBuf)>,
}

impl RowKeys {
    pub(crate) fn new(home: &MsbHome) -> Self {
        Self {
            default_dir: home.snapshots_dir().canonicalize().ok(),
            last_parent: None,
        }
    }

    pub(crate) fn key(&mut self, artifact: &Path) -> RowKey {
        let (Some(parent), Some(file_name)) = (artifact.parent(), artifact.file_name()) else {
            return RowKey {
                path: canonical(artifact),
                name: None,
            };
        };
        let canonical_parent = match &self.last_parent {
            Some((raw, resolved)) if raw == parent => resolved.clone(),
            _ => {
                let resolved = canonical(parent);
                self.last_parent = Some((parent.to_path_buf(), resolved.clone()));
                resolved
            }
        };
        let name = (self.default_dir.as_deref() == Some(canonical_parent.as_path()))
            .then(|| file_name.to_str().map(str::to_string))
            .flatten();
        RowKey {
            path: canonical_parent.join(file_name),
            name,
        }
    }
}

/// Absolute, symlink-free form of an artifact path (the row key).
pub(crate) fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// Insert or refresh the row of `snap` under `key`.
pub(crate) fn upsert(
    home: &MsbHome,
    conn: &Connection,
    snap: &Snapshot,
    key: &RowKey,
) -> MicrosandboxResult<()> {
    let epoch = parse_time(snap.created_at()).map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0);
    conn.prepare_cached(
        "INSERT INTO snapshots (path, digest, name, parent_digest, image_ref, format, size_bytes, created_at, created_epoch, child_count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0)
         ON CONFLICT(path) DO UPDATE SET digest = ?2, name = ?3, parent_digest = ?4, image_ref = ?5,
             format = ?6, size_bytes = ?7, created_at = ?8, created_epoch = ?9",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            key.path.to_string_lossy(),
            snap.digest(),
            key.name,
            snap.parent(),
            snap.image_ref(),
            snap.format().as_str(),
            snap.size_bytes() as i64,
            snap.created_at(),
            epoch,
        ])
    })
    .map_err(sql_error(home))?;
    Ok(())
}

/// Index `snap` after a create or import, recomputing its parent's child
/// count. Failures are logged, never returned: the artifact is the truth.
pub(crate) fn record_best_effort(home: &MsbHome, snap: &Snapshot) {
    let result = db::open(home).and_then(|conn| {
        upsert(home, &conn, snap, &RowKeys::new(home).key(snap.path()))?;
        if let Some(parent) = snap.parent() {
            recount_children(home, &conn, Some(parent))?;
        }
        Ok(())
    });
    if let Err(e) = result {
        log::warn!(
            "snapshot {} created but not indexed: {e}",
            snap.path().display()
        );
    }
}

/// Index every artifact of `snaps` in one transaction (an import), and
/// recount the children of their parents.
pub(crate) fn record_all(home: &MsbHome, snaps: &[Snapshot]) -> MicrosandboxResult<()> {
    let mut conn = db::open(home)?;
    let tx = conn.transaction().map_err(sql_error(home))?;
    let mut keys = RowKeys::new(home);
    for snap in snaps {
        upsert(home, &tx, snap, &keys.key(snap.path()))?;
    }
    for parent in snaps.iter().filter_map(Snapshot::parent) {
        recount_children(home, &tx, Some(parent))?;
    }
    tx.commit().map_err(sql_error(home))
}

/// Recompute child counts: of `parent` only, or of every row.
fn recount_children(
    home: &MsbHome,
    conn: &Connection,
    parent: Option<&str>,
) -> MicrosandboxResult<()> {
    let sql = "UPDATE snapshots SET child_count =
                 (SELECT COUNT(*) FROM snapshots AS c WHERE c.parent_digest = snapshots.digest)";
    match parent {
        Some(digest) => conn.execute(&format!("{sql} WHERE digest = ?1"), params![digest]),
        None => conn.execute(sql, []),
    }
    .map_err(sql_error(home))?;
    Ok(())
}

/// The handle for a name, a digest or a path.
pub(crate) fn get(home: &MsbHome, key: &str) -> MicrosandboxResult<SnapshotHandle> {
    let conn = db::open(home)?;
    let (sql, arg) = if is_content_digest(key) {
        ("digest = ?1", key.to_string())
    } else if is_bare_name(key) {
        ("name = ?1", key.to_string())
    } else {
        (
            "path = ?1",
            canonical(Path::new(key)).to_string_lossy().into_owned(),
        )
    };
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM snapshots WHERE {sql} ORDER BY created_epoch DESC LIMIT 1"),
        params![arg],
        handle_from_row,
    )
    .optional()
    .map_err(sql_error(home))?
    .ok_or_else(|| MicrosandboxError::SnapshotNotFound {
        what: format!("{key} (not in the index; `msb snapshot reindex` rebuilds it)"),
    })
}

/// Every indexed snapshot, newest first (then by path).
pub(crate) fn list(home: &MsbHome) -> MicrosandboxResult<Vec<SnapshotHandle>> {
    let mut handles = Vec::new();
    for_each(home, &mut |handle| {
        handles.push(handle);
        true
    })?;
    Ok(handles)
}

/// Hand every indexed snapshot to `visit`, newest first (then by path),
/// until it returns `false`. Nothing is kept between rows, so a listing of
/// any size runs in constant memory.
pub(crate) fn for_each(
    home: &MsbHome,
    visit: &mut dyn FnMut(SnapshotHandle) -> bool,
) -> MicrosandboxResult<()> {
    let conn = db::open(home)?;
    // Served by the covering `snapshots_listing` index, in order.
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM snapshots ORDER BY created_epoch DESC, path"
        ))
        .map_err(sql_error(home))?;
    let mut rows = stmt.query([]).map_err(sql_error(home))?;
    while let Some(row) = rows.next().map_err(sql_error(home))? {
        if !visit(handle_from_row(row).map_err(sql_error(home))?) {
            break;
        }
    }
    Ok(())
}

/// Upsert every artifact of `dir`, drop rows whose artifacts are gone, and
/// recount children in one pass. Returns how many artifacts were indexed.
pub(crate) fn reindex(home: &MsbHome, dir: &Path, control: &Control) -> MicrosandboxResult<usize> {
    crate::publish::remove_abandoned_staging(dir);
    let found = super::list_dir_blocking(dir)?;
    control.check()?;
    let mut conn = db::open(home)?;
    let tx = conn.transaction().map_err(sql_error(home))?;
    let mut keys = RowKeys::new(home);
    for snap in &found {
        upsert(home, &tx, snap, &keys.key(snap.path()))?;
    }
    let paths: Vec<String> = tx
        .prepare("SELECT path FROM snapshots")
        .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect())
        .map_err(sql_error(home))?;
    for path in paths {
        if !Path::new(&path)
            .join(super::manifest::MANIFEST_FILE)
            .is_file()
        {
            tx.execute("DELETE FROM snapshots WHERE path = ?1", params![path])
                .map_err(sql_error(home))?;
        }
    }
    recount_children(home, &tx, None)?;
    // Dropping the transaction rolls it back: a cancelled reindex changes nothing.
    control.check()?;
    tx.commit().map_err(sql_error(home))?;
    Ok(found.len())
}

/// Remove an artifact (by name, digest or path) and its row.
pub(crate) fn remove(home: &MsbHome, key: &str, force: bool) -> MicrosandboxResult<()> {
    let (path, digest, parent) = match get(home, key) {
        Ok(h) => (
            h.path().to_path_buf(),
            h.digest().to_string(),
            h.parent_digest().map(str::to_string),
        ),
        Err(_) => {
            // Not indexed: an artifact on disk can still be removed.
            let dir = home.snapshot_location(key)?;
            let snap = Snapshot::open_dir(&dir)?;
            (
                canonical(&dir),
                snap.digest().to_string(),
                snap.parent().map(str::to_string),
            )
        }
    };
    let conn = db::open(home)?;
    let children: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM snapshots WHERE parent_digest = ?1",
            params![digest],
            |r| r.get(0),
        )
        .map_err(sql_error(home))?;
    if children > 0 && !force {
        return Err(MicrosandboxError::SnapshotHasChildren {
            digest,
            children: children as u64,
        });
    }
    crate::publish::remove_dir_atomically(&path)?;
    conn.execute(
        "DELETE FROM snapshots WHERE path = ?1",
        params![path.to_string_lossy()],
    )
    .map_err(sql_error(home))?;
    if let Some(parent) = parent {
        recount_children(home, &conn, Some(&parent))?;
    }
    Ok(())
}
