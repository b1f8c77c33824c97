//! `msb-sparse-sha256-v1`, the exchange algorithm of the 0.6.6 format:
//! SHA-256 over `b"msb-sparse-sha256-v1\0"`, the apparent length as u64
//! little-endian, then every logical byte (holes read as zeros). Its cost
//! follows the apparent size; holes are fed from a shared zero buffer so only
//! the data extents are read from disk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use crate::control::ProgressTracker;
use crate::sparse::data_extents;

/// Domain-separation prefix of the algorithm.
const DOMAIN: &[u8] = b"msb-sparse-sha256-v1\0";

/// Size of the zero buffer and of each data read.
const CHUNK: usize = 1 << 20;

static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// Data reads in flight ahead of the hasher.
const READ_AHEAD: usize = 4;

/// The raw 32-byte digest of `file`, whose apparent length is `len`. SHA-256
/// is one sequential stream, so the only parallelism is reading data
/// extents on another thread while this one hashes.
pub(crate) fn digest(
    file: &File,
    len: u64,
    progress: &ProgressTracker<'_>,
) -> io::Result<[u8; 32]> {
    let extents = data_extents(file, len)?;
    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<(u64, Vec<u8>)>>(READ_AHEAD);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..READ_AHEAD + 1 {
        let _ = empty_tx.send(vec![0u8; CHUNK]);
    }
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for &(start, end) in &extents {
                let mut offset = start;
                while offset < end {
                    let Ok(mut buf) = empty_rx.recv() else { return };
                    let n = (end - offset).min(CHUNK as u64) as usize;
                    buf.resize(n, 0);
                    let read = file.read_exact_at(&mut buf, offset).map(|()| (offset, buf));
                    let failed = read.is_err();
                    if full_tx.send(read).is_err() || failed {
                        return;
                    }
                    offset += n as u64;
                }
            }
        });
        // Owned here so an early return drops it, which ends the reader.
        let empty_tx = empty_tx;
        let mut hasher = Sha256::new();
        hasher.update(DOMAIN);
        hasher.update(len.to_le_bytes());
        let mut pos = 0u64;
        for chunk in full_rx {
            let (offset, buf) = chunk?;
            feed_zeros(&mut hasher, offset - pos, progress)?;
            hasher.update(&buf);
            progress.advance(buf.len() as u64)?;
            pos = offset + buf.len() as u64;
            let _ = empty_tx.send(buf);
        }
        feed_zeros(&mut hasher, len - pos, progress)?;
        Ok(hasher.finalize().into())
    })
}

fn feed_zeros(
    hasher: &mut Sha256,
    mut count: u64,
    progress: &ProgressTracker<'_>,
) -> io::Result<()> {
    while count > 0 {
        let n = count.min(CHUNK as u64) as usize;
        hasher.update(&ZEROS[..n]);
        progress.advance(n as u64)?;
        count -= n as u64;
    }
    Ok(())
}
