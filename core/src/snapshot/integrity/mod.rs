//! Upper-layer content integrity: the algorithms a manifest may name, and
//! computing an upper file's digest with one of them. An algorithm's name
//! fixes all its parameters, so a manifest's `{algorithm, digest}` pair is
//! self-describing. Definitions live in `docs/integrity.md`.

mod merkle;
mod sparse_sha256;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::control::{CallOpts, Control, ProgressTracker};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::progress::{ProgressCallback, ProgressPhase};

pub use crate::sparse::data_extents;

/// An upper-layer integrity algorithm this build implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntegrityAlgorithm {
    /// `msb-sparse-sha256-v1`: one SHA-256 stream over every logical byte.
    /// Read and written for exchange with 0.6.6; cost follows apparent size.
    SparseSha256V1,
    /// `msb-merkle-sha256-v1`: the default. Cost follows the data; zero
    /// ranges fold in O(log n); data leaves hash on all cores.
    MerkleSha256V1,
}

impl IntegrityAlgorithm {
    /// The algorithm [`record_integrity`](crate::snapshot) uses unless told otherwise.
    pub const DEFAULT: Self = Self::MerkleSha256V1;

    /// Every implemented algorithm.
    pub const ALL: [Self; 2] = [Self::MerkleSha256V1, Self::SparseSha256V1];

    /// The name written in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Self::SparseSha256V1 => "msb-sparse-sha256-v1",
            Self::MerkleSha256V1 => "msb-merkle-sha256-v1",
        }
    }

    /// The algorithm with this manifest name, if implemented.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The algorithm with this name, or an `IntegrityAlgorithmUnsupported`
    /// error naming `origin` and the supported names.
    pub fn require(name: &str, origin: &Path) -> MicrosandboxResult<Self> {
        Self::from_name(name).ok_or_else(|| MicrosandboxError::IntegrityAlgorithmUnsupported {
            path: origin.to_path_buf(),
            algorithm: name.to_string(),
            supported: Self::supported_names(),
        })
    }

    /// The implemented names, comma separated, for messages.
    pub fn supported_names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

/// Parses a name given by a caller (a CLI flag, a binding's string):
/// `InvalidConfig` naming the supported algorithms when it is not one. A
/// name read from a manifest goes through [`IntegrityAlgorithm::require`],
/// whose error names the manifest.
impl FromStr for IntegrityAlgorithm {
    type Err = MicrosandboxError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::from_name(name).ok_or_else(|| {
            MicrosandboxError::InvalidConfig(format!(
                "unknown integrity algorithm '{name}' (supported: {})",
                Self::supported_names()
            ))
        })
    }
}

impl fmt::Display for IntegrityAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The integrity digest (`sha256:<hex>`) of the file at `path`. Blocking:
/// call from a blocking context (see [`upper_digest`] for the async form).
pub fn upper_digest_blocking(
    path: &Path,
    algorithm: IntegrityAlgorithm,
    progress: Option<&ProgressCallback>,
) -> MicrosandboxResult<String> {
    upper_digest_controlled(
        path,
        algorithm,
        &Control::new(CallOpts {
            progress: progress.cloned(),
            cancel: None,
        }),
    )
}

/// [`upper_digest_blocking`] under a call's control.
pub(crate) fn upper_digest_controlled(
    path: &Path,
    algorithm: IntegrityAlgorithm,
    control: &Control,
) -> MicrosandboxResult<String> {
    let file = File::open(path).map_err(|e| MicrosandboxError::io(path, e))?;
    let len = file
        .metadata()
        .map_err(|e| MicrosandboxError::io(path, e))?
        .len();
    digest_open_file(&file, len, algorithm, control).map_err(|e| MicrosandboxError::io(path, e))
}

/// Async form of [`upper_digest_blocking`]; the hashing runs off the
/// async runtime's worker threads and stops when the call is cancelled.
pub async fn upper_digest(
    path: impl Into<PathBuf>,
    algorithm: IntegrityAlgorithm,
    progress: Option<ProgressCallback>,
) -> MicrosandboxResult<String> {
    let path = path.into();
    crate::control::long_call(
        CallOpts {
            progress,
            cancel: None,
        },
        move |control| upper_digest_controlled(&path, algorithm, control),
    )
    .await
}

/// Copy `len` bytes of `src` (read at `src_base + offset`; only `extents`,
/// `[start, end)`, may hold data) into the new file `dst`, sparse, and
/// return its `msb-merkle-sha256-v1` digest: one parallel pass.
pub(crate) fn copy_with_merkle_digest(
    src: &File,
    src_base: u64,
    extents: &[(u64, u64)],
    len: u64,
    dst: &File,
) -> std::io::Result<String> {
    dst.set_len(len)?;
    let raw = merkle::copy_and_digest(src, src_base, extents, len, dst)?;
    Ok(crate::digest::prefixed_sha256(&raw))
}

/// Hash an already-open file of apparent length `len`.
pub(crate) fn digest_open_file(
    file: &File,
    len: u64,
    algorithm: IntegrityAlgorithm,
    control: &Control,
) -> std::io::Result<String> {
    let raw = match algorithm {
        IntegrityAlgorithm::SparseSha256V1 => {
            let tracker = ProgressTracker::new(control, ProgressPhase::Hash, len);
            let raw = sparse_sha256::digest(file, len, &tracker)?;
            tracker.finish();
            raw
        }
        IntegrityAlgorithm::MerkleSha256V1 => {
            // Work follows the data, so progress counts allocated bytes.
            let total = if control.progress().is_some() {
                crate::sparse::total_len(&data_extents(file, len)?)
            } else {
                0
            };
            let tracker = ProgressTracker::new(control, ProgressPhase::Hash, total);
            let raw = merkle::digest(file, len, &tracker)?;
            tracker.finish();
            raw
        }
    };
    Ok(crate::digest::prefixed_sha256(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_copy_with_its_digest_is_the_file_and_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; 200_000];
        let src = sparse_file(
            dir.path(),
            (8 << 20) + 3,
            &[
                (0, b"head"),
                (70_000, &big),
                (5 << 20, &[0u8; 4096]),
                ((8 << 20) - 1, b"tail"),
            ],
        );
        let src_file = File::open(&src).unwrap();
        let len = src_file.metadata().unwrap().len();
        let extents = data_extents(&src_file, len).unwrap();
        let dst = dir.path().join("copy");
        let dst_file = File::create_new(&dst).unwrap();
        let digest = copy_with_merkle_digest(&src_file, 0, &extents, len, &dst_file).unwrap();
        let control = Control::detached();
        let expected =
            upper_digest_controlled(&src, IntegrityAlgorithm::MerkleSha256V1, &control).unwrap();
        assert_eq!(digest, expected);
        assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&src).unwrap());
        assert!(
            crate::sparse::allocated_bytes(&dst).unwrap() < 1 << 20,
            "holes stay holes"
        );
    }

    fn sparse_file(dir: &Path, len: u64, writes: &[(u64, &[u8])]) -> PathBuf {
        let path = dir.join("upper");
        let f = File::create(&path).unwrap();
        f.set_len(len).unwrap();
        for (offset, data) in writes {
            f.write_all_at(data, *offset).unwrap();
        }
        path
    }

    #[test]
    fn names_round_trip() {
        for a in IntegrityAlgorithm::ALL {
            assert_eq!(IntegrityAlgorithm::from_name(a.name()), Some(a));
        }
        assert_eq!(
            "msb-merkle-sha256-v1"
                .parse::<IntegrityAlgorithm>()
                .unwrap(),
            IntegrityAlgorithm::MerkleSha256V1
        );
        let err = "crc32".parse::<IntegrityAlgorithm>().unwrap_err();
        assert_eq!(err.kind(), "InvalidConfig");
        assert!(err.to_string().contains("msb-sparse-sha256-v1"), "{err}");
        let err = IntegrityAlgorithm::require("crc32", Path::new("m")).unwrap_err();
        assert_eq!(err.kind(), "IntegrityAlgorithmUnsupported");
        assert!(err.to_string().contains("msb-merkle-sha256-v1"));
    }

    #[test]
    fn file_digest_matches_the_in_memory_definition() {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * merkle::LEAF_SIZE * 17 + 999;
        let writes: [(u64, &[u8]); 3] = [
            (5, b"abc"),
            (merkle::LEAF_SIZE * 20, b"xyz"),
            (len - 1, b"!"),
        ];
        let path = sparse_file(dir.path(), len, &writes);
        let mut mem = vec![0u8; len as usize];
        for (offset, data) in writes {
            mem[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        }
        let expected = format!("sha256:{}", hex::encode(merkle::digest_bytes(&mem)));
        let got = upper_digest_blocking(&path, IntegrityAlgorithm::MerkleSha256V1, None).unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn holes_and_written_zeros_hash_alike_under_both_algorithms() {
        let dir = tempfile::tempdir().unwrap();
        let len = 10 << 20;
        let zeros = vec![0u8; 3 << 20];
        for algorithm in IntegrityAlgorithm::ALL {
            let holey = sparse_file(dir.path(), len, &[(1 << 20, b"data")]);
            let a = upper_digest_blocking(&holey, algorithm, None).unwrap();
            let dense = sparse_file(
                dir.path(),
                len,
                &[(0, &zeros), (1 << 20, b"data"), (7 << 20, &zeros)],
            );
            let b = upper_digest_blocking(&dense, algorithm, None).unwrap();
            assert_eq!(a, b, "{algorithm}");
        }
    }

    #[test]
    fn a_byte_in_a_hole_or_in_data_changes_both_digests() {
        let dir = tempfile::tempdir().unwrap();
        let len = 8 << 20;
        for algorithm in IntegrityAlgorithm::ALL {
            let base = upper_digest_blocking(
                &sparse_file(dir.path(), len, &[(4096, b"data")]),
                algorithm,
                None,
            )
            .unwrap();
            let flipped = upper_digest_blocking(
                &sparse_file(dir.path(), len, &[(4096, b"dbta")]),
                algorithm,
                None,
            )
            .unwrap();
            let in_hole = upper_digest_blocking(
                &sparse_file(dir.path(), len, &[(4096, b"data"), (6 << 20, b"\x01")]),
                algorithm,
                None,
            )
            .unwrap();
            assert_ne!(base, flipped, "{algorithm}");
            assert_ne!(base, in_hole, "{algorithm}");
        }
    }

    #[test]
    fn length_is_part_of_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        for algorithm in IntegrityAlgorithm::ALL {
            let a = upper_digest_blocking(&sparse_file(dir.path(), 4096, &[]), algorithm, None)
                .unwrap();
            let b = upper_digest_blocking(&sparse_file(dir.path(), 4097, &[]), algorithm, None)
                .unwrap();
            assert_ne!(a, b, "{algorithm}");
        }
    }

    #[test]
    fn progress_reaches_the_total() {
        use std::sync::{Arc, Mutex};
        let dir = tempfile::tempdir().unwrap();
        let path = sparse_file(dir.path(), 64 << 20, &[(0, &[1u8; 1 << 20])]);
        for algorithm in IntegrityAlgorithm::ALL {
            let events = Arc::new(Mutex::new(Vec::new()));
            let sink = events.clone();
            let cb: ProgressCallback = Arc::new(move |e| sink.lock().unwrap().push(e));
            upper_digest_blocking(&path, algorithm, Some(&cb)).unwrap();
            let events = events.lock().unwrap();
            let last = events.last().unwrap();
            assert_eq!(last.done_bytes, last.total_bytes);
            assert!(last.total_bytes > 0);
            assert!(
                events
                    .windows(2)
                    .all(|w| w[0].done_bytes <= w[1].done_bytes
                        || w[1].done_bytes == w[1].total_bytes)
            );
        }
    }
}
