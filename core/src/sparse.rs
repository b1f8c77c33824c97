//! Copying sparse files so that holes stay holes: a reflink (FICLONE) where
//! the filesystem shares blocks, otherwise only the data extents are read,
//! in parallel 1 MiB chunks, and chunks that are all zeros are not written
//! (extents are only a hint: ext4 reports unwritten extents whose pages are
//! cached as data), so the copy costs what the source holds, not its
//! apparent size.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use std::os::unix::fs::FileExt;

use rayon::prelude::*;

use crate::snapshot::integrity::data_extents;

/// How a copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// Blocks shared with the source (copy-on-write filesystem).
    Reflink,
    /// Data extents copied, holes left as holes.
    Extents,
}

/// Copy `src` to a new file `dst` (which must not exist), keeping holes, and
/// fsync it. Returns how the copy was made.
pub fn copy_sparse(src: &Path, dst: &Path) -> io::Result<CopyMethod> {
    let input = File::open(src)?;
    let len = input.metadata()?.len();
    let output = OpenOptions::new().write(true).create_new(true).open(dst)?;
    let method = if reflink(&input, &output).is_ok() {
        CopyMethod::Reflink
    } else {
        output.set_len(len)?;
        let chunks = chunks_of(&data_extents(&input, len)?);
        chunks
            .par_iter()
            .map_init(
                || vec![0u8; CHUNK as usize],
                |buf, &(offset, n)| copy_chunk(&input, &output, offset, &mut buf[..n as usize]),
            )
            .collect::<io::Result<()>>()?;
        CopyMethod::Extents
    };
    output.sync_all()?;
    Ok(method)
}

/// Start writing a copied range to disk now, so the final fsync overlaps
/// with the rest of the copy instead of following it. Only a hint.
fn start_writeback(output: &File, offset: u64, len: u64) {
    // SAFETY: sync_file_range on an open descriptor; no memory is passed.
    unsafe {
        libc::sync_file_range(
            output.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

fn reflink(input: &File, output: &File) -> io::Result<()> {
    // FICLONE = _IOW(0x94, 9, int)
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE reads only the source descriptor argument; both fds are open.
    let rc = unsafe { libc::ioctl(output.as_raw_fd(), FICLONE, input.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes per copy task.
const CHUNK: u64 = 1 << 20;

/// `extents` cut into `(offset, len)` pieces of at most [`CHUNK`] bytes.
fn chunks_of(extents: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut chunks = Vec::new();
    for &(start, end) in extents {
        let mut offset = start;
        while offset < end {
            let n = (end - offset).min(CHUNK);
            chunks.push((offset, n));
            offset += n;
        }
    }
    chunks
}

/// Block size below which zeros are not worth a hole.
const BLOCK: usize = 4096;

/// Copy one chunk, writing only its runs of non-zero blocks (a hole
/// already reads as zeros).
fn copy_chunk(input: &File, output: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    input.read_exact_at(buf, offset)?;
    write_nonzero_runs(output, offset, buf)?;
    start_writeback(output, offset, buf.len() as u64);
    Ok(())
}

/// Write the runs of non-zero blocks of `buf` (which belongs at `offset`)
/// into `output`, leaving its all-zero blocks as holes.
pub(crate) fn write_nonzero_runs(output: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
    for (start, end) in nonzero_block_runs(buf) {
        output.write_all_at(&buf[start..end], offset + start as u64)?;
    }
    Ok(())
}

/// The `[start, end)` byte ranges of `buf` made of blocks that are not all
/// zeros, adjacent blocks merged.
fn nonzero_block_runs(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    if is_all_zero(buf) {
        return runs;
    }
    let mut run_start: Option<usize> = None;
    for (i, block) in buf.chunks(BLOCK).enumerate() {
        let at = i * BLOCK;
        match (is_all_zero(block), run_start) {
            (false, None) => run_start = Some(at),
            (true, Some(start)) => {
                runs.push((start, at));
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run_start {
        runs.push((start, buf.len()));
    }
    runs
}

/// The `(offset, len)` ranges of `file` (apparent length `len`) that hold
/// non-zero blocks, in order and merged: its data extents with their
/// all-zero blocks taken out. Scanned in parallel.
pub(crate) fn nonzero_ranges(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let chunks = chunks_of(&data_extents(file, len)?);
    let per_chunk: Vec<Vec<(u64, u64)>> = chunks
        .par_iter()
        .map_init(
            || vec![0u8; CHUNK as usize],
            |buf, &(offset, n)| {
                let buf = &mut buf[..n as usize];
                file.read_exact_at(buf, offset)?;
                Ok(nonzero_block_runs(buf)
                    .into_iter()
                    .map(|(s, e)| (offset + s as u64, (e - s) as u64))
                    .collect())
            },
        )
        .collect::<io::Result<_>>()?;
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (offset, n) in per_chunk.into_iter().flatten() {
        match merged.last_mut() {
            Some((last_offset, last_len)) if *last_offset + *last_len == offset => *last_len += n,
            _ => merged.push((offset, n)),
        }
    }
    Ok(merged)
}

/// True when every byte is zero; vectorizes, and exits at the first
/// non-zero block.
pub(crate) fn is_all_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(512)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Bytes `path` occupies on disk.
pub fn allocated_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_keep_content_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let f = File::create(&src).unwrap();
        f.set_len(256 << 20).unwrap();
        f.write_all_at(&[7u8; 100_000], 1 << 20).unwrap();
        f.write_all_at(b"tail", (256 << 20) - 4).unwrap();
        let dst = dir.path().join("dst");
        copy_sparse(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert!(
            allocated_bytes(&dst).unwrap() < 4 << 20,
            "{}",
            allocated_bytes(&dst).unwrap()
        );
        assert_eq!(
            copy_sparse(&src, &dst).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let ranges = nonzero_ranges(&File::open(&src).unwrap(), 256 << 20).unwrap();
        assert_eq!(ranges, vec![(1 << 20, 102_400), ((256 << 20) - 4096, 4096)]);
    }
}
