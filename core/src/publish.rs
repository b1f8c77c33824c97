//! Atomic publication: the one place that knows how a file or directory
//! appears under its final name all at once, and disappears the same way.
//! Snapshot create, archive export and import, the snapshot index, the image
//! store and the runtime's cache all publish through here.
//!
//! The rules, each in one function:
//! - work happens in a hidden **staging** sibling of the destination
//!   (`.<name>.creating-<pid>-<random>` for directories, see
//!   [`staging_dir`]; `.<name>.<infix>-<random>` for files, see
//!   [`StagedFile`]), so a crash leaves nothing visible. Every staging and
//!   trash name carries the pid of the process that made it, so what a
//!   killed process left is told apart from work in progress and deleted
//!   by the next one that looks ([`remove_abandoned_staging`], and
//!   [`StagedFile::new`] for files staged beside the same destination);
//! - contents are **synced** before they are named ([`write_synced`],
//!   [`StagedFile::publish`]), and the parent directory after
//!   ([`sync_dir`]), so a published name never points at missing data;
//! - the final step is one `renameat2(2)`: [`rename_noreplace`] when the
//!   destination must be free, [`rename_exchange`] to swap a replacement in
//!   (readers see the old or the new, never neither), [`publish_dir`] for
//!   both, [`place_if_absent`] for content-addressed names;
//! - removal is the same in reverse ([`remove_dir_atomically`]): rename to a
//!   hidden trash sibling, then delete;
//! - what several processes must not do at once is serialized with an
//!   `flock` on a lock file ([`lock_file`]), released when dropped or when
//!   the process dies.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{AT_FDCWD, Flock, FlockArg, RenameFlags, renameat2};
use tempfile::{NamedTempFile, TempDir};

use crate::error::{MicrosandboxError, MicrosandboxResult};

/// Infix of staging directory names: `.<name>.creating-<pid>-<random>`.
pub(crate) const STAGING_MARK: &str = ".creating-";

/// Infix of the trash name a directory is renamed to before it is deleted.
const REMOVING_MARK: &str = ".removing-";

/// Wait for and take an `flock` (`how`: shared or exclusive) on the file
/// `path`, creating it and its directory if needed.
pub(crate) fn lock_file(path: &Path, how: FlockArg) -> MicrosandboxResult<Flock<File>> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| MicrosandboxError::io(dir, e))?;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| MicrosandboxError::io(path, e))?;
    Flock::lock(file, how).map_err(|(_, errno)| MicrosandboxError::io(path, errno.into()))
}

/// A new hidden staging directory in `parent` for something that will be
/// published as `parent/<name>`: `.<name>.creating-<pid>-<random>`. Dropped
/// (on any failure) it is deleted; [`TempDir::keep`] it to publish.
pub(crate) fn staging_dir(parent: &Path, name: &str) -> MicrosandboxResult<TempDir> {
    tempfile::Builder::new()
        .prefix(&format!(".{name}{STAGING_MARK}{}-", std::process::id()))
        .tempdir_in(parent)
        .map_err(|e| MicrosandboxError::io(parent, e))
}

/// Delete staging directories (`.<name>.creating-<pid>-…`) and trash
/// (`.<name>.removing-<pid>`) in `dir` left by processes that died
/// mid-publication or mid-removal (killed): staging was never visible, and
/// now never will be; trash was already gone from view. Those of live
/// processes are left alone.
pub(crate) fn remove_abandoned_staging(dir: &Path) {
    remove_abandoned(dir, |name| {
        let hidden = name.strip_prefix('.')?;
        [STAGING_MARK, REMOVING_MARK]
            .iter()
            .find_map(|mark| hidden.split_once(mark).map(|(_, rest)| rest))
    });
}

/// Delete the entries of `dir` for which `owner` finds the text after a
/// staging mark (`<pid>[-…]`) naming a process that no longer exists.
pub(crate) fn remove_abandoned(dir: &Path, owner: impl Fn(&str) -> Option<&str>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = owner(&name)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let path = entry.path();
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
}

/// Move the finished `staging` directory to `dest`: atomically when `dest`
/// is free; with `replace`, the two are swapped atomically
/// (`RENAME_EXCHANGE`) and the old one is deleted from where the staging
/// directory was. On failure `staging` is deleted; `dest` exists without
/// `replace` is an `AlreadyExists` error.
pub(crate) fn publish_dir(staging: &Path, dest: &Path, replace: bool) -> io::Result<()> {
    let cleanup = |e: io::Error| {
        let _ = fs::remove_dir_all(staging);
        e
    };
    match rename_noreplace(staging, dest) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && replace => {}
        Err(e) => return Err(cleanup(e)),
    }
    rename_exchange(staging, dest).map_err(cleanup)?;
    let _ = fs::remove_dir_all(staging); // now the replaced one
    Ok(())
}

/// Rename `from` to `to` unless `to` exists (`AlreadyExists` then), in one
/// step (`renameat2` with `RENAME_NOREPLACE`).
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE).map_err(io::Error::from)
}

/// Swap `a` and `b` in one step (`renameat2` with `RENAME_EXCHANGE`); both
/// must exist.
pub(crate) fn rename_exchange(a: &Path, b: &Path) -> io::Result<()> {
    renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE).map_err(io::Error::from)
}

/// Rename `from` to `to` unless `to` exists: for content-addressed names,
/// where an existing file already holds the same bytes.
pub(crate) fn place_if_absent(from: &Path, to: &Path) -> MicrosandboxResult<()> {
    match rename_noreplace(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(MicrosandboxError::io(to, e)),
    }
}

/// Write `bytes` to the new file `path` (which must not exist) and fsync it.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> MicrosandboxResult<()> {
    let mut file = File::create_new(path).map_err(|e| MicrosandboxError::io(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| MicrosandboxError::io(path, e))
}

/// fsync the directory `dir`, making the names created or renamed in it
/// durable.
pub(crate) fn sync_dir(dir: &Path) -> MicrosandboxResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| MicrosandboxError::io(dir, e))
}

/// The directory a path is published in: its parent, `.` for a bare name.
pub(crate) fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Delete the directory `path` so that no reader ever sees half of it: it
/// is renamed to a hidden trash sibling (`.<name>.removing-<pid>`) first.
/// A missing `path` is not an error.
pub(crate) fn remove_dir_atomically(path: &Path) -> MicrosandboxResult<()> {
    let Some(parent) = path.parent() else {
        return Err(MicrosandboxError::InvalidConfig(format!(
            "cannot remove {}",
            path.display()
        )));
    };
    let trash = parent.join(format!(
        ".{}{REMOVING_MARK}{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    match fs::rename(path, &trash) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(MicrosandboxError::io(path, e)),
    }
    // A process still finishing inside it (one that opened a directory
    // before the rename) may add an entry while it is emptied: try again.
    let mut attempts = 0;
    loop {
        match fs::remove_dir_all(&trash) {
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty && attempts < 5 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            done => return done.map_err(|e| MicrosandboxError::io(&trash, e)),
        }
    }
}

/// A file being written under a hidden temporary name beside its
/// destination, deleted unless [`publish`](Self::publish)ed: the
/// destination is either untouched or complete.
pub(crate) struct StagedFile {
    temp: NamedTempFile,
    dest: PathBuf,
}

impl StagedFile {
    /// Stage a file for `dest` (its parent directories are created), named
    /// `.<name>.<infix>-<pid>-<random>`, with permissions `mode`. Files
    /// staged for the same destination by processes that died are deleted
    /// first.
    pub(crate) fn new(dest: &Path, infix: &str, mode: u32) -> MicrosandboxResult<Self> {
        use std::os::unix::fs::PermissionsExt;
        let parent = parent_of(dest);
        fs::create_dir_all(parent).map_err(|e| MicrosandboxError::io(parent, e))?;
        let base = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let staged_prefix = format!(".{base}.{infix}-");
        remove_abandoned(parent, |name| name.strip_prefix(staged_prefix.as_str()));
        let temp = tempfile::Builder::new()
            .prefix(&format!("{staged_prefix}{}-", std::process::id()))
            .permissions(fs::Permissions::from_mode(mode))
            .tempfile_in(parent)
            .map_err(|e| MicrosandboxError::io(parent, e))?;
        Ok(Self {
            temp,
            dest: dest.to_path_buf(),
        })
    }

    /// The staged file, open for writing.
    pub(crate) fn file(&self) -> &File {
        self.temp.as_file()
    }

    /// Rename the staged file over the destination. `durable`: fsync the
    /// file first and its directory after (skipped for caches that can be
    /// rebuilt).
    pub(crate) fn publish(self, durable: bool) -> MicrosandboxResult<()> {
        let dest = self.dest;
        if durable {
            self.temp
                .as_file()
                .sync_all()
                .map_err(|e| MicrosandboxError::io(&dest, e))?;
        }
        self.temp
            .persist(&dest)
            .map_err(|e| MicrosandboxError::io(&dest, e.error))?;
        if durable {
            sync_dir(parent_of(&dest))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noreplace_refuses_and_exchange_swaps() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        rename_exchange(&a, &b).unwrap();
        assert_eq!(fs::read_to_string(&a).unwrap(), "b");
        assert_eq!(fs::read_to_string(&b).unwrap(), "a");
        place_if_absent(&a, &b).unwrap();
        assert_eq!(fs::read_to_string(&b).unwrap(), "a");
    }

    #[test]
    fn staging_is_hidden_and_abandoned_staging_goes() {
        let dir = tempfile::tempdir().unwrap();
        let staging = staging_dir(dir.path(), "snap").unwrap();
        let name = staging.path().file_name().unwrap().to_string_lossy();
        assert!(name.starts_with(".snap.creating-"), "{name}");
        // A dead process's staging (pid 0 has no /proc entry) is removed;
        // ours is not.
        let dead = dir.path().join(".old.creating-0-x");
        fs::create_dir(&dead).unwrap();
        let trash = dir.path().join(".gone.removing-0");
        fs::create_dir(&trash).unwrap();
        remove_abandoned_staging(dir.path());
        assert!(!dead.exists());
        assert!(!trash.exists());
        assert!(staging.path().exists());
        let dest = dir.path().join("snap");
        publish_dir(&staging.keep(), &dest, false).unwrap();
        assert!(dest.is_dir());
        remove_dir_atomically(&dest).unwrap();
        assert!(!dest.exists());
        remove_dir_atomically(&dest).unwrap();
    }

    #[test]
    fn staged_files_appear_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/out.tar");
        let staged = StagedFile::new(&dest, "exporting", 0o644).unwrap();
        staged.file().write_all(b"data").unwrap();
        drop(staged);
        assert!(!dest.exists());
        assert_eq!(fs::read_dir(dest.parent().unwrap()).unwrap().count(), 0);
        let staged = StagedFile::new(&dest, "exporting", 0o644).unwrap();
        staged.file().write_all(b"data").unwrap();
        staged.publish(true).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"data");
        // What a killed process staged for the same destination (pid 0
        // has no /proc entry) goes with the next staging; a live one stays.
        let parent = dest.parent().unwrap();
        let dead = parent.join(".out.tar.exporting-0-abc");
        let live = parent.join(format!(".out.tar.exporting-{}-abc", std::process::id()));
        fs::write(&dead, "x").unwrap();
        fs::write(&live, "x").unwrap();
        let staged = StagedFile::new(&dest, "exporting", 0o644).unwrap();
        assert!(!dead.exists());
        assert!(live.exists());
        drop(staged);
    }
}
