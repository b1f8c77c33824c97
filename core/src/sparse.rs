//! Sparse files: where their data is, which of it is zeros, and copying
//! them so that holes stay holes. Uppers are multi-GiB files holding little
//! data, so every reader walks data extents (SEEK_DATA/SEEK_HOLE,
//! [`data_extents`]) instead of the apparent size. A hole reads as zeros;
//! extents are a hint of where non-zero bytes may be, never a promise that
//! they are non-zero (ext4 reports unwritten extents whose pages are cached
//! as data), so zero detection ([`nonzero_ranges`], [`write_nonzero_runs`])
//! looks at the bytes. A copy ([`copy_sparse`]) is a reflink (FICLONE) where
//! the filesystem shares blocks, otherwise only the data extents are read,
//! in parallel 1 MiB chunks, and all-zero blocks are not written, so the copy
//! costs what the source holds, not its apparent size.
//!
//! This module depends on nothing else in the crate: integrity hashing,
//! archives and captures build on it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};
use rayon::prelude::*;

/// Byte ranges `[start, end)` that may hold data, sorted and disjoint, within
/// `len`. Falls back to the whole file where the filesystem cannot tell.
pub fn data_extents(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut extents = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let start = match seek(file, pos, Whence::SeekData) {
            Ok(start) => start,
            Err(Errno::ENXIO) => break,
            Err(Errno::EINVAL) if extents.is_empty() => return Ok(vec![(0, len)]),
            Err(err) => return Err(err.into()),
        };
        if start >= len {
            break;
        }
        let end = match seek(file, start, Whence::SeekHole) {
            Ok(end) => end.min(len),
            Err(Errno::ENXIO) => len,
            Err(err) => return Err(err.into()),
        };
        if end <= start {
            // A file changing under us; never loop forever.
            return Err(io::Error::other("file changed while its extents were read"));
        }
        extents.push((start, end));
        pos = end;
    }
    Ok(extents)
}

/// Sum of the lengths of `extents`.
pub(crate) fn total_len(extents: &[(u64, u64)]) -> u64 {
    extents.iter().map(|(s, e)| e - s).sum()
}

fn seek(file: &File, offset: u64, whence: Whence) -> Result<u64, Errno> {
    let offset = libc::off_t::try_from(offset).map_err(|_| Errno::EINVAL)?;
    lseek(file.as_fd(), offset, whence).map(|at| at as u64)
}

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

nix::ioctl_write_int!(
    /// `FICLONE` (`_IOW(0x94, 9, int)`): make the target share the source's blocks.
    ficlone,
    0x94,
    9
);

fn reflink(input: &File, output: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source descriptor by value (no memory is
    // passed); both descriptors are open for the whole call.
    unsafe { ficlone(output.as_raw_fd(), input.as_raw_fd() as libc::c_ulong) }
        .map(drop)
        .map_err(io::Error::from)
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

    #[test]
    fn finds_data_and_skips_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let file = File::create(&path).unwrap();
        let len = 64 << 20;
        file.set_len(len).unwrap();
        file.write_all_at(b"head", 0).unwrap();
        file.write_all_at(b"middle", 32 << 20).unwrap();
        let file = File::open(&path).unwrap();
        let extents = data_extents(&file, len).unwrap();
        assert!(extents.len() >= 2, "{extents:?}");
        assert_eq!(extents[0].0, 0);
        assert!(extents.iter().any(|&(s, e)| s <= 32 << 20 && e > 32 << 20));
        assert!(total_len(&extents) < 8 << 20, "{extents:?}");
    }

    #[test]
    fn empty_and_all_hole_files_have_no_extents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("holes");
        let file = File::create(&path).unwrap();
        assert!(data_extents(&file, 0).unwrap().is_empty());
        file.set_len(1 << 30).unwrap();
        assert!(data_extents(&file, 1 << 30).unwrap().is_empty());
    }
}
