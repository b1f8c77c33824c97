//! Finding the data in a sparse file. Uppers are multi-GiB files holding
//! little data, so every reader walks data extents (SEEK_DATA/SEEK_HOLE)
//! instead of the apparent size. A hole reads as zeros; extents are a hint of
//! where non-zero bytes may be, never a promise that they are non-zero.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Byte ranges `[start, end)` that may hold data, sorted and disjoint, within
/// `len`. Falls back to the whole file where the filesystem cannot tell.
pub fn data_extents(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut extents = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let start = match seek(file, pos, libc::SEEK_DATA) {
            Ok(start) => start,
            Err(err) if err.raw_os_error() == Some(libc::ENXIO) => break,
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) && extents.is_empty() => {
                return Ok(vec![(0, len)]);
            }
            Err(err) => return Err(err),
        };
        if start >= len {
            break;
        }
        let end = match seek(file, start, libc::SEEK_HOLE) {
            Ok(end) => end.min(len),
            Err(err) if err.raw_os_error() == Some(libc::ENXIO) => len,
            Err(err) => return Err(err),
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

fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: lseek on a file descriptor we own; it touches no memory of ours.
    let result = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

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
