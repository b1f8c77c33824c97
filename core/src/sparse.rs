//! Copying sparse files so that holes stay holes: a reflink (FICLONE) where
//! the filesystem shares blocks, otherwise only the data extents are copied
//! (`copy_file_range`, in the kernel) and the length is set, so the copy
//! costs what the source holds, not its apparent size.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

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
        for (start, end) in data_extents(&input, len)? {
            copy_range(&input, &output, start, end - start)?;
        }
        output.set_len(len)?;
        CopyMethod::Extents
    };
    output.sync_all()?;
    Ok(method)
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

/// Copy `len` bytes at `offset` from `input` to the same offset of `output`.
fn copy_range(input: &File, output: &File, offset: u64, len: u64) -> io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let mut off_in = (offset + done) as libc::loff_t;
        let mut off_out = off_in;
        let chunk = (len - done).min(1 << 30) as usize;
        // SAFETY: copy_file_range with valid fds and offset pointers to locals.
        let n = unsafe {
            libc::copy_file_range(
                input.as_raw_fd(),
                &mut off_in,
                output.as_raw_fd(),
                &mut off_out,
                chunk,
                0,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if matches!(
                err.raw_os_error(),
                Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL)
            ) {
                return copy_range_userspace(input, output, offset + done, len - done);
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source shrank during copy",
            ));
        }
        done += n as u64;
    }
    Ok(())
}

fn copy_range_userspace(input: &File, output: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        input.read_exact_at(&mut buf[..n], offset + done)?;
        output.write_all_at(&buf[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Bytes `path` occupies on disk.
pub fn allocated_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

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
    }
}
