//! The local snapshot index: one row per known artifact (keyed by its
//! directory), with its digest, name alias, parent, image, format, size,
//! creation time and indexed child count. The artifacts are the source of
//! truth; this table is a cache that [`reindex`] rebuilds from them at any
//! time, so a failed index write never fails the operation that caused it.
//!
//! What is indexed: every artifact this home creates or imports, wherever
//! it is written (an explicit path gets a row with no name), and whatever
//! [`reindex`] finds; not artifacts only opened or booted by path. So
//! `list()` answers "what was made here" (`docs/json.md`, "What `list()`
//! shows"). Keys are resolved by [`super::resolve`]; the packed handle a
//! row becomes lives in [`super::handle`].

use std::path::{Path, PathBuf};

use rusqlite::types::{FromSqlError, Type};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::handle::HandleFields;
use super::resolve::{self, KeyKind, Resolved};
use super::{Snapshot, SnapshotFormat, SnapshotHandle, SnapshotKind};
use crate::control::Control;
use crate::db;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;

/// The columns a handle is read from, in [`handle_from_row`]'s order (a
/// macro so that statements can be `concat!`ed constants).
macro_rules! handle_columns {
    () => {
        "digest, name, parent_digest, image_ref, format, size_bytes, created_epoch, path, child_count, kind"
    };
}

fn handle_from_row(row: &Row<'_>) -> rusqlite::Result<SnapshotHandle> {
    // The epoch column (not the RFC 3339 text) so listing thousands of rows
    // does no date parsing.
    let created_epoch: f64 = row.get(6)?;
    // Text is copied straight from SQLite's row into the handle's one buffer.
    Ok(SnapshotHandle::pack(HandleFields {
        digest: required_text(row, 0)?,
        name: optional_text(row, 1)?,
        parent_digest: optional_text(row, 2)?,
        image_ref: required_text(row, 3)?,
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
        path: required_text(row, 7)?,
        child_count: row.get::<_, i64>(8)? as u64,
        kind: if required_text(row, 9)? == "full" {
            SnapshotKind::Full
        } else {
            SnapshotKind::Disk
        },
    }))
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

/// Held while an artifact and its index row appear together (a create's or
/// an import's publication) or disappear together (a remove): one step for
/// every other process. Without it, a remove that renamed a name's artifact
/// away could delete the row a create had just written for a new artifact
/// under the freed name, or rename that new artifact away and leave its row
/// naming nothing. An `flock` on `db/snapshots.lock`, exclusive: each
/// holder only renames and writes a row or two.
pub(crate) struct NamesLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl NamesLock {
    /// Wait for and take the lock of `home`.
    pub(crate) fn take(home: &MsbHome) -> MicrosandboxResult<Self> {
        let path = home.db_dir().join("snapshots.lock");
        let lock = crate::publish::lock_file(&path, nix::fcntl::FlockArg::LockExclusive)?;
        Ok(Self { _lock: lock })
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
        "INSERT INTO snapshots (path, digest, name, parent_digest, image_ref, format, size_bytes, created_at, created_epoch, child_count, kind, image_digest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?11)
         ON CONFLICT(path) DO UPDATE SET digest = ?2, name = ?3, parent_digest = ?4, image_ref = ?5,
             format = ?6, size_bytes = ?7, created_at = ?8, created_epoch = ?9, kind = ?10, image_digest = ?11",
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
            snap.kind().as_str(),
            snap.image_manifest_digest(),
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

/// A transaction that takes the write lock at its start, through the busy
/// timeout. A deferred one starts as a reader and, when another process
/// wrote meanwhile, fails its first write with "database is locked" at once
/// (SQLite cannot wait there without risking a deadlock): 16 processes
/// reindexing and creating at once met exactly that.
fn write_transaction<'c>(
    home: &MsbHome,
    conn: &'c mut rusqlite::Connection,
) -> MicrosandboxResult<rusqlite::Transaction<'c>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql_error(home))
}

/// Index every artifact of `snaps` in one transaction (an import), and
/// recount the children of their parents.
pub(crate) fn record_all(home: &MsbHome, snaps: &[Snapshot]) -> MicrosandboxResult<()> {
    let mut conn = db::open(home)?;
    let tx = write_transaction(home, &mut conn)?;
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

/// The indexed handle for a name, a digest or a path: the index-only half
/// of the one resolver ([`resolve::resolve_indexed`]).
pub(crate) fn get(home: &MsbHome, key: &str) -> MicrosandboxResult<SnapshotHandle> {
    resolve::resolve_indexed(home, key)
}

/// The newest row whose digest, name or path (per `kind`) is `key`.
pub(crate) fn lookup(
    home: &MsbHome,
    kind: KeyKind,
    key: &str,
) -> MicrosandboxResult<SnapshotHandle> {
    // One constant statement per kind, so each is prepared once per
    // connection and then served from its statement cache.
    let sql = match kind {
        KeyKind::Digest => concat!(
            "SELECT ",
            handle_columns!(),
            " FROM snapshots WHERE digest = ?1 ORDER BY created_epoch DESC LIMIT 1"
        ),
        KeyKind::Name => concat!(
            "SELECT ",
            handle_columns!(),
            " FROM snapshots WHERE name = ?1 ORDER BY created_epoch DESC LIMIT 1"
        ),
        KeyKind::Path => concat!(
            "SELECT ",
            handle_columns!(),
            " FROM snapshots WHERE path = ?1 LIMIT 1"
        ),
    };
    let canonical_path;
    let arg = match kind {
        KeyKind::Path => {
            canonical_path = canonical(Path::new(key));
            canonical_path.to_string_lossy()
        }
        KeyKind::Digest | KeyKind::Name => key.into(),
    };
    let conn = db::open(home)?;
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.query_row(params![arg], handle_from_row).optional())
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
        .prepare_cached(concat!(
            "SELECT ",
            handle_columns!(),
            " FROM snapshots ORDER BY created_epoch DESC, path"
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
    let tx = write_transaction(home, &mut conn)?;
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

/// Remove an artifact (by name, digest or path, resolved as
/// [`resolve`] says) and its row.
pub(crate) fn remove(home: &MsbHome, key: &str, force: bool) -> MicrosandboxResult<()> {
    // Resolved under the lock: what is removed is what the name means now.
    let _names = NamesLock::take(home)?;
    let (path, digest, parent) = match resolve::resolve(home, key)? {
        Resolved::Indexed(h) => (
            h.path().to_path_buf(),
            h.digest().to_string(),
            h.parent_digest().map(str::to_string),
        ),
        // Not indexed: an artifact on disk can still be removed.
        Resolved::OnDisk(snap) => (
            canonical(snap.path()),
            snap.digest().to_string(),
            snap.parent().map(str::to_string),
        ),
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
    // The row goes first: a remove killed before its files are gone leaves
    // a whole artifact the index does not list (the next reindex lists it
    // again: the remove did not happen), never a row without its files.
    conn.execute(
        "DELETE FROM snapshots WHERE path = ?1",
        params![path.to_string_lossy()],
    )
    .map_err(sql_error(home))?;
    if let Some(parent) = parent {
        recount_children(home, &conn, Some(&parent))?;
    }
    // Trash a killed remove left beside it goes too.
    crate::publish::remove_abandoned_staging(crate::publish::parent_of(&path));
    crate::publish::remove_dir_atomically(&path)
}

/// Artifacts for tests, written as `create` would.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use crate::snapshot::{ImageRef, Manifest, Snapshot, SnapshotFormat, UpperLayer};

    /// Write an artifact at `dir` (a 4 KiB sparse upper) and open it.
    pub(crate) fn artifact(dir: &Path, created_at: &str, parent: Option<&str>) -> Snapshot {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::File::create(dir.join("upper.ext4"))
            .unwrap()
            .set_len(4096)
            .unwrap();
        let manifest = Manifest {
            schema: 1,
            format: SnapshotFormat::Raw,
            fstype: "ext4".into(),
            image: ImageRef {
                reference: "docker.io/library/python:3.12".into(),
                manifest_digest: format!("sha256:{}", "ab".repeat(32)),
            },
            parent: parent.map(str::to_string),
            created_at: created_at.into(),
            labels: [("stage".to_string(), "one".to_string())].into(),
            upper: UpperLayer {
                file: "upper.ext4".into(),
                size_bytes: 4096,
                integrity: None,
            },
            source_sandbox: None,
        };
        std::fs::write(dir.join("manifest.json"), manifest.canonical_bytes()).unwrap();
        Snapshot::open_dir(dir).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::artifact;
    use super::*;

    const T0: &str = "2026-01-01T00:00:00Z";

    fn home() -> (tempfile::TempDir, MsbHome) {
        let dir = tempfile::tempdir().unwrap();
        let home = MsbHome::at(dir.path());
        std::fs::create_dir_all(home.snapshots_dir()).unwrap();
        (dir, home)
    }

    #[test]
    fn two_homes_used_from_many_threads_never_see_each_others_rows() {
        let homes = [home(), home()];
        std::thread::scope(|scope| {
            for t in 0..6 {
                let (_, home) = &homes[t % 2];
                scope.spawn(move || {
                    let own = home.snapshots_dir().canonicalize().unwrap();
                    for i in 0..20 {
                        // The same names in both homes.
                        let name = format!("snap-{}-{i}", t / 2);
                        let created = format!("2026-01-01T00:00:{i:02}Z");
                        record_best_effort(
                            home,
                            &artifact(&home.snapshots_dir().join(&name), &created, None),
                        );
                        let got = get(home, &name).unwrap();
                        assert!(got.path().starts_with(&own), "{got:?} not in {own:?}");
                        for_each(home, &mut |h| {
                            assert!(h.path().starts_with(&own), "{h:?} not in {own:?}");
                            true
                        })
                        .unwrap();
                    }
                });
            }
        });
        for (_, home) in &homes {
            assert_eq!(list(home).unwrap().len(), 60);
        }
    }

    #[test]
    fn keys_resolve_in_the_documented_order() {
        let (_tmp, home) = home();
        let indexed = artifact(&home.snapshots_dir().join("base"), T0, None);
        record_best_effort(&home, &indexed);
        let loose = artifact(&home.snapshots_dir().join("loose"), T0, None);

        // A name: the index row, else the directory under snapshots/.
        assert!(
            matches!(resolve::resolve(&home, "base"), Ok(Resolved::Indexed(h)) if h.name() == Some("base"))
        );
        assert!(
            matches!(resolve::resolve(&home, "loose"), Ok(Resolved::OnDisk(s)) if s.digest() == loose.digest())
        );
        // A digest: the index only.
        assert_eq!(get(&home, indexed.digest()).unwrap().name(), Some("base"));
        let err = resolve::resolve(&home, &format!("sha256:{}", "0".repeat(64))).unwrap_err();
        assert_eq!(err.kind(), "SnapshotNotFound");
        // A path, compared in canonical form.
        let roundabout = home.snapshots_dir().join("../snapshots/base");
        assert!(matches!(
            resolve::resolve(&home, roundabout.to_str().unwrap()),
            Ok(Resolved::Indexed(h)) if h.digest() == indexed.digest()
        ));
        let loose_path = home.snapshots_dir().join("loose");
        assert!(matches!(
            resolve::resolve(&home, loose_path.to_str().unwrap()),
            Ok(Resolved::OnDisk(_))
        ));
        // get() is the index half: a loose artifact is not found there.
        assert_eq!(get(&home, "loose").unwrap_err().kind(), "SnapshotNotFound");
        assert_eq!(get(&home, "").unwrap_err().kind(), "InvalidConfig");
        assert_eq!(
            resolve::resolve(&home, "missing").unwrap_err().kind(),
            "SnapshotNotFound"
        );
    }

    #[test]
    fn a_broken_index_is_an_error_not_not_indexed() {
        let (_tmp, home) = home();
        artifact(&home.snapshots_dir().join("base"), T0, None);
        std::fs::create_dir_all(home.db_dir()).unwrap();
        std::fs::write(db::db_path(&home), vec![b'x'; 8192]).unwrap();
        assert_eq!(resolve::resolve(&home, "base").unwrap_err().kind(), "Io");
        assert_eq!(remove(&home, "base", false).unwrap_err().kind(), "Io");
        assert!(home.snapshots_dir().join("base/manifest.json").is_file());
    }

    #[test]
    fn remove_falls_through_to_the_disk_and_counts_children() {
        let (_tmp, home) = home();
        let root = artifact(&home.snapshots_dir().join("root"), T0, None);
        record_best_effort(&home, &root);
        let child = artifact(
            &home.snapshots_dir().join("child"),
            "2026-01-01T00:00:01Z",
            Some(root.digest()),
        );
        record_best_effort(&home, &child);
        assert_eq!(get(&home, "root").unwrap().child_count(), 1);
        let err = remove(&home, root.digest(), false).unwrap_err();
        assert_eq!(err.kind(), "SnapshotHasChildren");
        remove(&home, "child", false).unwrap();
        assert_eq!(get(&home, "root").unwrap().child_count(), 0);
        artifact(&home.snapshots_dir().join("loose"), T0, None);
        remove(&home, "loose", false).unwrap();
        assert!(!home.snapshots_dir().join("loose").exists());
    }

    #[test]
    fn artifacts_written_to_a_path_are_listed_without_a_name() {
        let (tmp, home) = home();
        let elsewhere = tmp.path().join("elsewhere/x");
        record_best_effort(&home, &artifact(&elsewhere, T0, None));
        // On disk but never created, imported or reindexed here: not listed.
        artifact(&tmp.path().join("elsewhere/booted-by-path"), T0, None);
        let listed = list(&home).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name(), None);
        assert_eq!(listed[0].path(), elsewhere.canonicalize().unwrap());
    }
}
