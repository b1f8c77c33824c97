//! The image store's lock: an `flock` on `images/.lock` that keeps a remove
//! from deleting a blob or root disk another process (or thread) has put in
//! the store but not yet registered.
//!
//! The rule: whatever adds to the store (a load, a pull, the image of an
//! imported snapshot) holds the lock **shared** from before it looks at or
//! places blobs and root disks until its `images` row is written; a save
//! holds it shared while it reads. A remove holds it **exclusive** while it
//! deletes rows and sweeps files, so it never sees a file that a pending
//! row will need, and nobody registers an image whose files it is deleting.
//! Whatever starts to use an image (a sandbox create, restore or fork; a
//! snapshot import or pull that pins one) holds it shared from resolving
//! the image until the row that names it (a sandbox, an indexed snapshot)
//! is committed, so a remove either runs first (and the user finds no
//! image) or after (and sees the user: `ImageInUse`).
//! Adders never wait for each other (Linux grants a shared `flock` even
//! while an exclusive one waits), so taking it again while held is safe.

use std::fs::File;

use nix::fcntl::{Flock, FlockArg};

use crate::error::MicrosandboxResult;
use crate::home::MsbHome;

/// The store's lock, held until dropped.
pub(crate) struct StoreLock {
    _lock: Flock<File>,
}

impl StoreLock {
    /// Wait for and take the lock shared (adding to or reading the store).
    pub(crate) fn shared(home: &MsbHome) -> MicrosandboxResult<Self> {
        Self::take(home, FlockArg::LockShared)
    }

    /// Wait for and take the lock exclusive (removing from the store).
    pub(crate) fn exclusive(home: &MsbHome) -> MicrosandboxResult<Self> {
        Self::take(home, FlockArg::LockExclusive)
    }

    fn take(home: &MsbHome, how: FlockArg) -> MicrosandboxResult<Self> {
        let lock = crate::publish::lock_file(&home.images_dir().join(".lock"), how)?;
        Ok(Self { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn an_exclusive_lock_waits_for_shared_holders_who_do_not_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let home = MsbHome::at(dir.path());
        let first = StoreLock::shared(&home).unwrap();
        let second = StoreLock::shared(&home).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _held = StoreLock::exclusive(&home).unwrap();
                tx.send(()).unwrap();
            });
            assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
            drop((first, second));
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
        });
    }

    #[test]
    fn a_holder_takes_it_shared_again_while_an_exclusive_one_waits() {
        let dir = tempfile::tempdir().unwrap();
        let home = MsbHome::at(dir.path());
        let held = StoreLock::shared(&home).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _held = StoreLock::exclusive(&home).unwrap();
                tx.send(()).unwrap();
            });
            std::thread::sleep(Duration::from_millis(100));
            // A create holding the lock calls a pull that takes it again:
            // it must not queue behind the waiting remove (a deadlock).
            let again = StoreLock::shared(&home).unwrap();
            assert!(rx.try_recv().is_err());
            drop((held, again));
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
        });
    }
}
