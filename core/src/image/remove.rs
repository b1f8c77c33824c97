//! Removing images, and the sweep that deletes the store's files nothing
//! names any more.
//!
//! A remove deletes `images` rows first, in one transaction, then files:
//! a crash in between leaves files no row names, harmless garbage that the
//! next remove's sweep deletes (the sweep does not look at what was just
//! removed: it keeps what is named and deletes the rest). What is named:
//! - every blob of the manifest of every image row (manifest, config,
//!   layers), and its root disk;
//! - the same for the manifest digest every sandbox was created from (and
//!   the root disk it boots from), and every manifest digest a snapshot of
//!   the index pins: a sandbox keeps booting and a pinned image can be
//!   loaded again under a tag that was moved to another image.
//!
//! An image a snapshot pins or a sandbox uses is not removed
//! (`ImageInUse`), unless another reference names the same manifest and
//! keeps it. Snapshot rows indexed before the index recorded pins (schema
//! 6) pin by reference until `msb snapshot reindex`.
//!
//! All of it runs under the store's exclusive lock ([`StoreLock`]), so a
//! load, pull or import that placed files but has not written its row yet
//! is waited for, never swept.

use std::collections::{BTreeSet, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Params, TransactionBehavior, params};

use super::StoreLock;
use crate::db;
use crate::digest::sha256_hex;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;

/// Users named in an `ImageInUse` message before "and N more".
const USERS_NAMED: usize = 5;

/// Remove the image `wanted`: the row of that reference, or every row of
/// that manifest digest; then sweep.
pub(crate) fn remove_blocking(home: &MsbHome, wanted: &str) -> MicrosandboxResult<()> {
    let _store = StoreLock::exclusive(home)?;
    delete_rows(home, wanted)?;
    sweep(home)
}

fn delete_rows(home: &MsbHome, wanted: &str) -> MicrosandboxResult<()> {
    let sql = |e| db::db_error(&db::db_path(home), e);
    let mut conn = db::open(home)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    let by_reference: Option<String> = tx
        .query_row(
            "SELECT manifest_digest FROM images WHERE reference = ?1",
            params![wanted],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?;
    let (digest, references) = match by_reference {
        Some(digest) => (digest, vec![wanted.to_string()]),
        None => (
            wanted.to_string(),
            strings(
                &tx,
                "SELECT reference FROM images WHERE manifest_digest = ?1 ORDER BY reference",
                [wanted],
            )
            .map_err(sql)?,
        ),
    };
    if references.is_empty() {
        return Err(MicrosandboxError::ImageNotFound {
            reference: format!("{wanted} (`msb image ls` lists the images)"),
        });
    }
    let named: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM images WHERE manifest_digest = ?1",
            params![digest],
            |r| r.get(0),
        )
        .map_err(sql)?;
    if named as usize == references.len() {
        let users = users_of(&tx, &digest, &references).map_err(sql)?;
        if !users.is_empty() {
            return Err(MicrosandboxError::ImageInUse {
                reference: wanted.to_string(),
                users: describe(&users),
            });
        }
    }
    for reference in &references {
        tx.execute(
            "DELETE FROM images WHERE reference = ?1",
            params![reference],
        )
        .map_err(sql)?;
    }
    tx.commit().map_err(sql)
}

/// Who needs the image with `digest` (known by `references`): sandboxes
/// created from it, snapshots pinning it.
fn users_of(
    conn: &Connection,
    digest: &str,
    references: &[String],
) -> rusqlite::Result<Vec<String>> {
    let mut users: Vec<String> = strings(
        conn,
        "SELECT name FROM sandboxes WHERE manifest_digest = ?1 ORDER BY name",
        [digest],
    )?
    .into_iter()
    .map(|name| format!("sandbox {name}"))
    .collect();
    let mut stmt = conn.prepare(
        "SELECT COALESCE(name, path), image_digest, image_ref FROM snapshots
         WHERE image_digest = ?1 OR image_digest IS NULL ORDER BY path",
    )?;
    let rows = stmt.query_map(params![digest], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (snapshot, pinned, reference) = row?;
        // A row from before pins were indexed: its reference is all we know.
        if pinned.is_some() || references.contains(&reference) {
            users.push(format!("snapshot {snapshot}"));
        }
    }
    Ok(users)
}

fn describe(users: &[String]) -> String {
    let named = users[..users.len().min(USERS_NAMED)].join(", ");
    match users.len().saturating_sub(USERS_NAMED) {
        0 => named,
        more => format!("{named} and {more} more"),
    }
}

fn strings(conn: &Connection, sql: &str, args: impl Params) -> rusqlite::Result<Vec<String>> {
    conn.prepare(sql)?.query_map(args, |r| r.get(0))?.collect()
}

fn pairs(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<(String, String)>> {
    conn.prepare(sql)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// Delete every blob and root disk nothing names (see the module doc).
pub(crate) fn sweep(home: &MsbHome) -> MicrosandboxResult<()> {
    let sql = |e| db::db_error(&db::db_path(home), e);
    let conn = db::open(home)?;
    let mut digests = BTreeSet::new();
    let mut lowers: HashSet<OsString> = HashSet::new();
    let mut keep_lower = |lower: &str| {
        lowers.extend(Path::new(lower).file_name().map(OsString::from));
    };
    for (digest, lower) in
        pairs(&conn, "SELECT manifest_digest, lower_path FROM images").map_err(sql)?
    {
        digests.insert(digest);
        keep_lower(&lower);
    }
    for (digest, config) in
        pairs(&conn, "SELECT manifest_digest, config_json FROM sandboxes").map_err(sql)?
    {
        digests.insert(digest);
        let config = serde_json::from_str::<serde_json::Value>(&config).unwrap_or_default();
        if let Some(lower) = config["lower_path"].as_str() {
            keep_lower(lower);
        }
    }
    digests.extend(
        strings(
            &conn,
            "SELECT DISTINCT image_digest FROM snapshots WHERE image_digest IS NOT NULL",
            [],
        )
        .map_err(sql)?,
    );
    let mut blobs: HashSet<OsString> = HashSet::new();
    for digest in &digests {
        lowers.extend(
            super::lower_path(home, digest)
                .file_name()
                .map(OsString::from),
        );
        if !super::blob_path(home, digest).is_file() {
            continue; // no manifest blob: it names nothing here
        }
        match super::blob_digests(home, digest) {
            Ok(named) => blobs.extend(named.iter().map(|d| OsString::from(sha256_hex(d)))),
            Err(e) => {
                // What it names is unknown: deleting anything could break it.
                log::warn!("image store not swept: {e}");
                return Ok(());
            }
        }
    }
    delete_unnamed(&super::blobs_dir(home), |name| blobs.contains(name))?;
    delete_unnamed(&home.images_dir().join("lower"), |name| {
        !name.to_string_lossy().ends_with(".erofs") || lowers.contains(name)
    })
}

/// Delete the files of `dir` that `keep` does not keep (hidden ones, which
/// are staging, are kept). A missing `dir` has nothing to delete.
fn delete_unnamed(dir: &Path, keep: impl Fn(&OsStr) -> bool) -> MicrosandboxResult<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(MicrosandboxError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| MicrosandboxError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let hidden = name.to_string_lossy().starts_with('.');
        if hidden || keep(&name) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(MicrosandboxError::io(&path, e));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_of_users_are_cut() {
        let users: Vec<String> = (0..7).map(|i| format!("sandbox s{i}")).collect();
        assert_eq!(describe(&users[..1]), "sandbox s0");
        assert_eq!(
            describe(&users),
            "sandbox s0, sandbox s1, sandbox s2, sandbox s3, sandbox s4 and 2 more"
        );
    }
}
