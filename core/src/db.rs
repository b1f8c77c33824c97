//! The SQLite database under `MSB_HOME/db`: the image table, the sandbox
//! registry and the snapshot index. The schema is created on first open and
//! versioned with `user_version`; the file is in WAL mode with a busy
//! timeout so several processes can share it.
//!
//! Connections are pooled per database file for the life of the process
//! (opening one and checking its schema costs more than a lookup): [`open`]
//! lends an idle connection of that file, or opens one, and takes it back
//! when the guard drops. The pool is keyed by the database path, so homes
//! never share a connection; a lent connection belongs to one caller at a
//! time, so threads never share one either, and a caller holding one (a
//! listing's visitor, say) may borrow a second without waiting. A pooled
//! connection whose file was replaced (the home deleted and recreated) or
//! that was inherited through `fork` is dropped, not reused.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rusqlite::Connection;

use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;

/// File name of the database inside `MSB_HOME/db`.
pub const DB_FILE: &str = "microsandbox.db";

const SCHEMA_VERSION: i64 = 6;

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    reference        TEXT PRIMARY KEY,
    manifest_digest  TEXT NOT NULL,
    config_digest    TEXT NOT NULL,
    lower_path       TEXT NOT NULL,
    loaded_at        TEXT NOT NULL,
    origin           TEXT
);
CREATE INDEX IF NOT EXISTS images_by_digest ON images(manifest_digest);
CREATE TABLE IF NOT EXISTS sandboxes (
    name             TEXT PRIMARY KEY,
    image_ref        TEXT NOT NULL,
    manifest_digest  TEXT NOT NULL,
    config_json      TEXT NOT NULL,
    state            TEXT NOT NULL,
    pid              INTEGER,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    path             TEXT PRIMARY KEY,
    digest           TEXT NOT NULL,
    name             TEXT,
    parent_digest    TEXT,
    image_ref        TEXT NOT NULL,
    format           TEXT NOT NULL,
    size_bytes       INTEGER,
    created_at       TEXT NOT NULL,
    created_epoch    REAL NOT NULL,
    child_count      INTEGER NOT NULL DEFAULT 0,
    kind             TEXT NOT NULL DEFAULT 'disk',
    image_digest     TEXT
);
CREATE INDEX IF NOT EXISTS snapshots_by_digest ON snapshots(digest);
CREATE INDEX IF NOT EXISTS snapshots_by_name ON snapshots(name);
-- Listing order, covering every listed column: a listing is one index scan
-- in order, with no table lookup per row and no sort.
DROP INDEX IF EXISTS snapshots_by_created;
DROP INDEX IF EXISTS snapshots_listing;
CREATE INDEX IF NOT EXISTS snapshots_listing_v4 ON snapshots(
    created_epoch DESC, path, digest, name, parent_digest, image_ref, format, size_bytes, child_count, kind
);
CREATE INDEX IF NOT EXISTS snapshots_by_parent ON snapshots(parent_digest);
CREATE INDEX IF NOT EXISTS snapshots_by_image ON snapshots(image_digest);
";

/// Idle connections kept per database file; more are opened while busy
/// and closed when returned beyond this.
const MAX_IDLE_PER_FILE: usize = 4;

/// Past this size, the write-ahead log is folded into the database when a
/// connection that wrote is returned. Connections stay open for the life of
/// the process, so the log is no longer removed by the last one to close,
/// and the next process's first open would otherwise read all of it.
const WAL_FOLD_BYTES: u64 = 256 << 10;

/// A connection lent by the pool; returned to it on drop.
pub(crate) struct PooledConnection {
    conn: Option<Pooled>,
    /// Its `total_changes()` when lent: whether the borrower wrote.
    changes_when_lent: u64,
}

/// A pooled connection and what it was opened on.
struct Pooled {
    conn: Connection,
    path: PathBuf,
    /// Device and inode of the database file when it was opened.
    file_id: (u64, u64),
    /// The process that opened it (a child of `fork` must not use it).
    pid: u32,
}

type Pool = HashMap<PathBuf, Vec<Pooled>>;

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The pool, even if a thread panicked while holding its lock: the map
/// itself is never left half-updated (one push or pop per lock).
fn lock_pool() -> std::sync::MutexGuard<'static, Pool> {
    pool()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection to the database of `home` (created if needed), from the
/// pool when one is idle.
pub(crate) fn open(home: &MsbHome) -> MicrosandboxResult<PooledConnection> {
    let path = db_path(home);
    loop {
        let idle = lock_pool().get_mut(&path).and_then(Vec::pop);
        let Some(pooled) = idle else { break };
        if pooled.pid == std::process::id() && file_id(&path).ok() == Some(pooled.file_id) {
            return Ok(PooledConnection::lend(pooled));
        }
        if pooled.pid != std::process::id() {
            // The parent process still uses this handle: closing it here
            // could disturb the parent's locks, so it is left open.
            std::mem::forget(pooled);
        }
    }
    let conn = open_new(home, &path)?;
    let file_id = file_id(&path).map_err(|e| MicrosandboxError::io(&path, e))?;
    Ok(PooledConnection::lend(Pooled {
        conn,
        path,
        file_id,
        pid: std::process::id(),
    }))
}

impl PooledConnection {
    fn lend(pooled: Pooled) -> Self {
        Self {
            changes_when_lent: pooled.conn.total_changes(),
            conn: Some(pooled),
        }
    }
}

impl Deref for PooledConnection {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        // Only `drop` takes the connection out.
        match &self.conn {
            Some(pooled) => &pooled.conn,
            None => unreachable!("a pooled connection is present until dropped"),
        }
    }
}

impl DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut Connection {
        match &mut self.conn {
            Some(pooled) => &mut pooled.conn,
            None => unreachable!("a pooled connection is present until dropped"),
        }
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        let Some(pooled) = self.conn.take() else {
            return;
        };
        // A connection left inside a transaction (a panic mid-way) is closed,
        // which rolls the transaction back, rather than lent again.
        if std::thread::panicking() || !pooled.conn.is_autocommit() {
            return;
        }
        if pooled.conn.total_changes() != self.changes_when_lent && !fold_wal(&pooled) {
            return;
        }
        let mut pool = lock_pool();
        let idle = pool.entry(pooled.path.clone()).or_default();
        if idle.len() < MAX_IDLE_PER_FILE {
            idle.push(pooled);
        }
    }
}

/// Fold a large write-ahead log into the database and empty it, if no
/// reader (in any process) is in the way; never waits for one. `false` if
/// the connection could not be restored to its usual busy timeout (it is
/// then closed rather than lent again).
fn fold_wal(pooled: &Pooled) -> bool {
    let mut wal = pooled.path.clone().into_os_string();
    wal.push("-wal");
    if std::fs::metadata(&wal).map_or(true, |m| m.len() <= WAL_FOLD_BYTES) {
        return true;
    }
    let conn = &pooled.conn;
    let folded = conn
        .busy_timeout(Duration::ZERO)
        .and_then(|()| conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())));
    if let Err(e) = folded {
        log::debug!("{}: write-ahead log not folded: {e}", pooled.path.display());
    }
    conn.busy_timeout(BUSY_TIMEOUT).is_ok()
}

fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// Open a new connection to `path` (the database of `home`), creating the
/// file and its schema if needed.
fn open_new(home: &MsbHome, path: &Path) -> MicrosandboxResult<Connection> {
    let dir = home.db_dir();
    std::fs::create_dir_all(&dir).map_err(|e| MicrosandboxError::io(&dir, e))?;
    let conn = Connection::open(path).map_err(|e| db_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| db_error(path, e))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| db_error(path, e))?;
    // Read pages through a mapping instead of one syscall each: a cold
    // `list()` of 10,000 snapshots reads the whole table.
    conn.pragma_update(None, "mmap_size", 256i64 << 20)
        .map_err(|e| db_error(path, e))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| db_error(path, e))?;
    if version < SCHEMA_VERSION {
        create_schema(&conn).map_err(|e| db_error(path, e))?;
    }
    Ok(conn)
}

/// Put the database in WAL mode and create the schema, once, even when
/// several connections (threads or processes) open a new database at the
/// same moment.
fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    // WAL mode is recorded in the database file: setting it once, with the
    // schema, spares every later open a statement. Changing the journal
    // mode does not wait on the busy handler, so a concurrent first open
    // is retried here for as long as the busy timeout.
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => break other?,
        }
    }
    // One writer creates the schema; the others wait for it (IMMEDIATE
    // takes the write lock through the busy handler) and find it done.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let created = (|| {
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version < SCHEMA_VERSION {
            // Version 4 added `kind`; CREATE TABLE IF NOT EXISTS keeps an
            // older table as it was.
            let has_kind = conn
                .prepare("SELECT 1 FROM pragma_table_info('snapshots') WHERE name = 'kind'")?
                .exists([])?;
            let has_table = conn
                .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'snapshots'")?
                .exists([])?;
            if has_table && !has_kind {
                conn.execute_batch(
                    "ALTER TABLE snapshots ADD COLUMN kind TEXT NOT NULL DEFAULT 'disk'",
                )?;
            }
            // Version 5 added the images' `origin` (the registry reference
            // an image was pulled from).
            let has_images = conn
                .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'images'")?
                .exists([])?;
            let has_origin = conn
                .prepare("SELECT 1 FROM pragma_table_info('images') WHERE name = 'origin'")?
                .exists([])?;
            if has_images && !has_origin {
                conn.execute_batch("ALTER TABLE images ADD COLUMN origin TEXT")?;
            }
            // Version 6 added the snapshots' `image_digest` (the manifest
            // digest of the image each pins, so an image in use is not
            // removed); rows indexed before have none until a reindex.
            let has_image_digest = conn
                .prepare(
                    "SELECT 1 FROM pragma_table_info('snapshots') WHERE name = 'image_digest'",
                )?
                .exists([])?;
            if has_table && !has_image_digest {
                conn.execute_batch("ALTER TABLE snapshots ADD COLUMN image_digest TEXT")?;
            }
            conn.execute_batch(SCHEMA)?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        Ok(())
    })();
    match created {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// A database failure as an `Io` error naming the database file.
pub(crate) fn db_error(path: &std::path::Path, err: rusqlite::Error) -> MicrosandboxError {
    MicrosandboxError::io(path, std::io::Error::other(err))
}

/// The database path of `home`, for error messages.
pub(crate) fn db_path(home: &MsbHome) -> PathBuf {
    home.db_dir().join(DB_FILE)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_new_database_opened_by_many_threads_at_once_gets_one_schema() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let home = MsbHome::at(dir.path());
            let barrier = std::sync::Barrier::new(8);
            std::thread::scope(|scope| {
                for _ in 0..8 {
                    scope.spawn(|| {
                        barrier.wait();
                        // A fresh connection each, as separate processes would have.
                        let conn = open_new(&home, &db_path(&home)).unwrap();
                        let version: i64 = conn
                            .pragma_query_value(None, "user_version", |row| row.get(0))
                            .unwrap();
                        assert_eq!(version, SCHEMA_VERSION);
                    });
                }
            });
        }
    }

    use super::*;

    #[test]
    fn a_version_5_index_gains_the_pinned_image_digest_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let home = MsbHome::at(dir.path());
        std::fs::create_dir_all(home.db_dir()).unwrap();
        let old = Connection::open(db_path(&home)).unwrap();
        old.execute_batch(
            "CREATE TABLE snapshots (path TEXT PRIMARY KEY, digest TEXT NOT NULL, name TEXT,
                 parent_digest TEXT, image_ref TEXT NOT NULL, format TEXT NOT NULL,
                 size_bytes INTEGER, created_at TEXT NOT NULL, created_epoch REAL NOT NULL,
                 child_count INTEGER NOT NULL DEFAULT 0, kind TEXT NOT NULL DEFAULT 'disk');
             INSERT INTO snapshots (path, digest, image_ref, format, created_at, created_epoch)
                 VALUES ('/s', 'sha256:d', 'r', 'raw', 't', 0);
             PRAGMA user_version = 5;",
        )
        .unwrap();
        drop(old);
        let conn = open_new(&home, &db_path(&home)).unwrap();
        let pinned: Option<String> = conn
            .query_row(
                "SELECT image_digest FROM snapshots WHERE path = '/s'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(pinned, None, "unknown until a reindex");
    }

    #[test]
    fn databases_are_in_wal_mode_on_every_open() {
        let dir = tempfile::tempdir().unwrap();
        let home = MsbHome::at(dir.path());
        for _ in 0..2 {
            let conn = open_new(&home, &db_path(&home)).unwrap();
            let mode: String = conn
                .pragma_query_value(None, "journal_mode", |row| row.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
    }

    /// Mark a connection (a temporary table lives in one connection only).
    fn mark(conn: &Connection) {
        conn.execute_batch("CREATE TEMP TABLE marker (x)").unwrap();
    }

    fn is_marked(conn: &Connection) -> bool {
        conn.query_row(
            "SELECT COUNT(*) FROM temp.sqlite_master WHERE name = 'marker'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 1
    }

    #[test]
    fn connections_are_reused_per_file_and_never_shared() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (home_a, home_b) = (MsbHome::at(a.path()), MsbHome::at(b.path()));
        mark(&open(&home_a).unwrap());
        let held = open(&home_a).unwrap();
        assert!(is_marked(&held), "an idle connection is reused");
        let second = open(&home_a).unwrap();
        assert!(!is_marked(&second), "a lent connection is not lent twice");
        drop((held, second));
        assert!(!is_marked(&open(&home_b).unwrap()), "homes never share one");
    }

    #[test]
    fn a_recreated_database_is_not_read_through_a_stale_connection() {
        let dir = tempfile::tempdir().unwrap();
        let home = MsbHome::at(dir.path());
        open(&home)
            .unwrap()
            .execute(
                "INSERT INTO images VALUES ('old', 'd', 'c', '/l', 't', NULL)",
                [],
            )
            .unwrap();
        std::fs::remove_dir_all(home.db_dir()).unwrap();
        let conn = open(&home).unwrap();
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM images", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 0);
    }

    #[test]
    fn a_large_write_ahead_log_is_folded_when_the_writer_returns() {
        let dir = tempfile::tempdir().unwrap();
        let home = MsbHome::at(dir.path());
        let reader = open(&home).unwrap();
        let mut conn = open(&home).unwrap();
        let tx = conn.transaction().unwrap();
        for i in 0..20_000 {
            tx.execute(
                "INSERT INTO images VALUES (?1, 'd', 'c', '/l', 't', NULL)",
                [format!("image-{i}")],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        let wal = dir.path().join("db").join(format!("{DB_FILE}-wal"));
        assert!(std::fs::metadata(&wal).unwrap().len() > WAL_FOLD_BYTES);
        drop(conn);
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        let count: i64 = reader
            .query_row("SELECT COUNT(*) FROM images", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 20_000);
    }

    #[test]
    fn a_connection_left_in_a_transaction_is_not_lent_again() {
        let dir = tempfile::tempdir().unwrap();
        let home = MsbHome::at(dir.path());
        let conn = open(&home).unwrap();
        mark(&conn);
        conn.execute_batch("BEGIN").unwrap();
        drop(conn);
        let again = open(&home).unwrap();
        assert!(!is_marked(&again));
        assert!(again.is_autocommit());
    }
}
