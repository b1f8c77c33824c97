//! A snapshot that arrived as separate blobs (a registry pull) joined back
//! into one archive stream, so it lands through import's own code with all
//! of its checks. Each data-file blob is what
//! [`write_file_blob`](super::export::write_file_blob) writes: a zstd tar
//! holding one entry and the end-of-archive marker. The stream is an index
//! entry naming the snapshots, then per snapshot its manifest entry and its
//! blobs' entries (their end markers held back), then the end marker.
//! Nothing here trusts a blob: what it holds goes through the unpacker,
//! which refuses any entry outside the layout.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::tarfmt::{BLOCK, TarWriter};
use super::{ARCHIVE_FORMAT, ArchiveIndex, ArchivedSnapshot, INDEX_ENTRY, snapshot_dir_entry};
use crate::control::{Control, CountingReader, ProgressTracker};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::progress::ProgressPhase;
use crate::snapshot::SnapshotHandle;
use crate::snapshot::manifest::MANIFEST_FILE;

/// One snapshot as separate files: its digest and the name it lands
/// under, its `manifest.json`, and its data-file blobs in order (a full
/// snapshot's VM files first, the upper last).
pub(crate) struct SnapshotBlobs {
    pub digest: String,
    pub name: String,
    pub manifest: Vec<u8>,
    pub files: Vec<PathBuf>,
}

/// Land `snapshots` (oldest first; the last is the head) into `dest` with
/// every check of an import, running `before_publish` once they have all
/// passed; `label` names the input in errors. Blocking.
pub(crate) fn land_blobs(
    home: &MsbHome,
    label: &Path,
    snapshots: &[SnapshotBlobs],
    dest: Option<&Path>,
    control: &Control,
    before_publish: impl FnOnce() -> MicrosandboxResult<()>,
) -> MicrosandboxResult<SnapshotHandle> {
    let index = ArchiveIndex {
        format: ARCHIVE_FORMAT.into(),
        snapshots: snapshots
            .iter()
            .map(|s| ArchivedSnapshot {
                digest: s.digest.clone(),
                name: s.name.clone(),
            })
            .collect(),
        image: None,
    };
    let index_bytes = serde_json::to_vec_pretty(&index)
        .map_err(|e| MicrosandboxError::Runtime(format!("archive index encoding: {e}")))?;
    let io_err = |e| MicrosandboxError::io(label, e);
    let mut head = TarWriter::new(Vec::new(), 0);
    head.regular(INDEX_ENTRY, index_bytes.len() as u64, &index_bytes[..])
        .map_err(io_err)?;
    let mut total = 0;
    for snap in snapshots {
        for file in &snap.files {
            total += std::fs::metadata(file)
                .map_err(|e| MicrosandboxError::io(file, e))?
                .len();
        }
    }
    let tracker = ProgressTracker::new(control, ProgressPhase::Import, total);
    let mut stream: Box<dyn Read + '_> = Box::new(io::Cursor::new(head_bytes(head)?));
    for snap in snapshots {
        let mut entry = TarWriter::new(Vec::new(), 0);
        let name = format!("{}/{MANIFEST_FILE}", snapshot_dir_entry(&snap.digest));
        entry
            .regular(&name, snap.manifest.len() as u64, &snap.manifest[..])
            .map_err(io_err)?;
        stream = Box::new(stream.chain(io::Cursor::new(head_bytes(entry)?)));
        for path in &snap.files {
            let file = File::open(path).map_err(|e| MicrosandboxError::io(path, e))?;
            let counted = CountingReader {
                inner: file,
                tracker: &tracker,
            };
            let decoder = zstd::stream::read::Decoder::with_buffer(BufReader::new(counted))
                .map_err(|e| MicrosandboxError::io(path, e))?;
            stream = Box::new(stream.chain(WithoutEndMarker::new(decoder)));
        }
    }
    let stream = stream.chain(io::Cursor::new(vec![0u8; 2 * BLOCK]));
    let handle = super::import::land_stream(home, label, stream, dest, control, before_publish)?;
    tracker.finish();
    Ok(handle)
}

/// The bytes of a tar written into memory, without its end marker.
fn head_bytes(tar: TarWriter<Vec<u8>>) -> MicrosandboxResult<Vec<u8>> {
    let mut bytes = tar
        .finish()
        .map_err(|e| MicrosandboxError::Runtime(format!("tar in memory: {e}")))?;
    bytes.truncate(bytes.len() - 2 * BLOCK);
    Ok(bytes)
}

/// A tar stream without its end-of-archive marker: the last two blocks are
/// held back and must be zeros (else the stream is refused).
struct WithoutEndMarker<R> {
    inner: R,
    held: Vec<u8>,
    ended: bool,
}

const MARKER: usize = 2 * BLOCK;

impl<R: Read> WithoutEndMarker<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            held: Vec::with_capacity(MARKER + (64 << 10)),
            ended: false,
        }
    }
}

impl<R: Read> Read for WithoutEndMarker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.held.len() > MARKER {
                let n = buf.len().min(self.held.len() - MARKER);
                buf[..n].copy_from_slice(&self.held[..n]);
                self.held.drain(..n);
                return Ok(n);
            }
            if self.ended {
                if self.held.len() != MARKER || self.held.iter().any(|&b| b != 0) {
                    return Err(super::tarfmt::invalid(
                        "a snapshot file blob does not end with a tar end-of-archive marker",
                    ));
                }
                return Ok(0);
            }
            let at = self.held.len();
            self.held.resize(at + (64 << 10), 0);
            let n = self.inner.read(&mut self.held[at..])?;
            self.held.truncate(at + n);
            self.ended = n == 0;
        }
    }
}
