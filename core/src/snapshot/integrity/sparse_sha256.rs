//! `msb-sparse-sha256-v1`, the exchange algorithm of the 0.6.6 format:
//! SHA-256 over `b"msb-sparse-sha256-v1\0"`, the apparent length as u64
//! little-endian, then every logical byte (holes read as zeros). Its cost
//! follows the apparent size; holes are fed from a shared zero buffer so only
//! the data extents are read from disk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use super::extents::data_extents;
use crate::progress::ProgressTracker;

/// Domain-separation prefix of the algorithm.
const DOMAIN: &[u8] = b"msb-sparse-sha256-v1\0";

/// Size of the zero buffer and of each data read.
const CHUNK: usize = 1 << 20;

static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// The raw 32-byte digest of `file`, whose apparent length is `len`.
pub(crate) fn digest(
    file: &File,
    len: u64,
    progress: &ProgressTracker<'_>,
) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    hasher.update(len.to_le_bytes());
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    for (start, end) in data_extents(file, len)? {
        feed_zeros(&mut hasher, start - pos, progress);
        let mut offset = start;
        while offset < end {
            let n = (end - offset).min(CHUNK as u64) as usize;
            file.read_exact_at(&mut buf[..n], offset)?;
            hasher.update(&buf[..n]);
            progress.advance(n as u64);
            offset += n as u64;
        }
        pos = end;
    }
    feed_zeros(&mut hasher, len - pos, progress);
    Ok(hasher.finalize().into())
}

fn feed_zeros(hasher: &mut Sha256, mut count: u64, progress: &ProgressTracker<'_>) {
    while count > 0 {
        let n = count.min(CHUNK as u64) as usize;
        hasher.update(&ZEROS[..n]);
        progress.advance(n as u64);
        count -= n as u64;
    }
}
