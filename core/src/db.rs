//! The SQLite database under `MSB_HOME/db`: the image table, the sandbox
//! registry and the snapshot index. Connections are short-lived,
//! in WAL mode with a busy timeout so several processes can share the file.
//! The schema is created on first open and versioned with `user_version`.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;

/// File name of the database inside `MSB_HOME/db`.
pub const DB_FILE: &str = "microsandbox.db";

const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    reference        TEXT PRIMARY KEY,
    manifest_digest  TEXT NOT NULL,
    config_digest    TEXT NOT NULL,
    lower_path       TEXT NOT NULL,
    loaded_at        TEXT NOT NULL
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
    child_count      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_by_digest ON snapshots(digest);
CREATE INDEX IF NOT EXISTS snapshots_by_name ON snapshots(name);
-- Listing order, covering every listed column: a listing is one index scan
-- in order, with no table lookup per row and no sort.
DROP INDEX IF EXISTS snapshots_by_created;
CREATE INDEX IF NOT EXISTS snapshots_listing ON snapshots(
    created_epoch DESC, path, digest, name, parent_digest, image_ref, format, size_bytes, child_count
);
CREATE INDEX IF NOT EXISTS snapshots_by_parent ON snapshots(parent_digest);
";

/// Open (creating if needed) the database of `home`.
pub(crate) fn open(home: &MsbHome) -> MicrosandboxResult<Connection> {
    let dir = home.db_dir();
    std::fs::create_dir_all(&dir).map_err(|e| MicrosandboxError::io(&dir, e))?;
    let path = dir.join(DB_FILE);
    let conn = Connection::open(&path).map_err(|e| db_error(&path, e))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| db_error(&path, e))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| db_error(&path, e))?;
    // Read pages through a mapping instead of one syscall each: a cold
    // `list()` of 10,000 snapshots reads the whole table.
    conn.pragma_update(None, "mmap_size", 256i64 << 20)
        .map_err(|e| db_error(&path, e))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| db_error(&path, e))?;
    if version < SCHEMA_VERSION {
        // WAL mode is recorded in the database file: setting it once, with
        // the schema, spares every later open a statement.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| db_error(&path, e))?;
        conn.execute_batch(SCHEMA).map_err(|e| db_error(&path, e))?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| db_error(&path, e))?;
    }
    Ok(conn)
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
    use super::*;

    #[test]
    fn databases_are_in_wal_mode_on_every_open() {
        let dir = tempfile::tempdir().unwrap();
        let home = MsbHome::at(dir.path());
        for _ in 0..2 {
            let conn = open(&home).unwrap();
            let mode: String = conn
                .pragma_query_value(None, "journal_mode", |row| row.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
    }
}
