//! Shared pieces of the benchmarks: Case A (the 4 GiB sparse ext4 upper of
//! the issues) and small measuring helpers.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use microsandbox::snapshot::integrity::data_extents;

/// Apparent size of Case A's upper.
pub const UPPER_APPARENT: u64 = 4 << 30;

/// Size of the random file written into it.
pub const RANDOM_FILE: usize = 8 << 20;

/// Build Case A once: `mkfs.ext4 -d` copies an 8 MiB random file into a fresh
/// 4 GiB sparse image, as a sandbox writing that file would.
pub fn make_case_a(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let upper = dir.join("upper.ext4");
    if upper.exists() {
        return Ok(upper);
    }
    let content = dir.join("content");
    fs::create_dir_all(&content)?;
    let mut random = vec![0u8; RANDOM_FILE];
    File::open("/dev/urandom")?.read_exact(&mut random)?;
    fs::write(content.join("random.bin"), &random)?;
    let partial = dir.join("upper.ext4.partial");
    File::create(&partial)?.set_len(UPPER_APPARENT)?;
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&content)
        .arg(&partial)
        .status()
        .map_err(|e| format!("mkfs.ext4 (e2fsprogs) is needed: {e}"))?;
    if !status.success() {
        return Err(format!("mkfs.ext4 failed: {status}").into());
    }
    fs::rename(&partial, &upper)?;
    Ok(upper)
}

/// Bytes in `path`'s data extents (what SEEK_DATA reports; unwritten
/// extents, which read as zeros, are not data).
pub fn data_extent_bytes(path: &Path) -> Result<u64, Box<dyn std::error::Error>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    Ok(data_extents(&file, len)?.iter().map(|(s, e)| e - s).sum())
}

/// The value after `name` on the command line, if any.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Flush dirty pages so the next timed step starts from the same state.
pub fn settle() {
    // SAFETY: sync(2) takes no arguments.
    unsafe { libc::sync() };
}

/// The median of `times`.
pub fn median(mut times: Vec<std::time::Duration>) -> std::time::Duration {
    times.sort();
    times[times.len() / 2]
}

/// Milliseconds, as a float.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
