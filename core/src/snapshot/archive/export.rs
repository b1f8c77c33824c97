//! Writing archives: verify what goes in, then stream it into a temp file
//! beside `out` (zstd over every core, or plain tar) and rename it into
//! place, so `out` is either untouched or complete. Uppers are stored as
//! sparse entries holding only their non-zero blocks, so the archive's size
//! and the export's cost follow the data, not the apparent size.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::tarfmt::{Segment, TarWriter};
use super::{
    ARCHIVE_FORMAT, ArchiveIndex, ArchivedImage, ArchivedSnapshot, ExportOpts, INDEX_ENTRY,
    ZSTD_LEVEL, blob_entry, lower_entry, snapshot_dir_entry,
};
use crate::control::Control;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::{MsbHome, is_bare_name};
use crate::image;
use crate::progress::{CountingReader, ProgressPhase, ProgressTracker};
use crate::snapshot::manifest::{MANIFEST_FILE, is_content_digest};
use crate::snapshot::{Snapshot, index};
use crate::sparse::nonzero_ranges;

/// Bytes of upper data stored between syncs of the archive being written.
const SYNC_EVERY: usize = 16 << 20;

/// Export `name_or_path` to `out` per `opts`. Blocking.
pub(crate) fn export_blocking(
    home: &MsbHome,
    name_or_path: &str,
    out: &Path,
    opts: &ExportOpts,
    control: &Control,
) -> MicrosandboxResult<()> {
    let head = resolve(home, name_or_path)?;
    let chain = if opts.with_parents {
        ancestors_and(home, head)?
    } else {
        vec![head]
    };
    // Head first: it is the one the caller asked for.
    for snap in chain.iter().rev() {
        snap.verify_controlled(&control.without_progress())?;
    }
    let head = chain.last().expect("the chain holds the head");
    let image = opts
        .with_image
        .then(|| bundled_image(home, head.image_manifest_digest()))
        .transpose()?;

    let mut planned = Vec::new();
    for snap in &chain {
        let file = File::open(snap.upper_path())
            .map_err(|e| MicrosandboxError::io(snap.upper_path(), e))?;
        let ranges = nonzero_ranges(&file, snap.size_bytes())
            .map_err(|e| MicrosandboxError::io(snap.upper_path(), e))?;
        planned.push((snap, file, ranges));
    }
    let index = ArchiveIndex {
        format: ARCHIVE_FORMAT.into(),
        snapshots: archive_names(home, &chain),
        image: image.as_ref().map(|bundle| bundle.meta.clone()),
    };
    let total: u64 = planned
        .iter()
        .flat_map(|(_, _, r)| r.iter().map(|&(_, n)| n))
        .sum::<u64>()
        + image.as_ref().map_or(0, |bundle| {
            bundle.meta.lower_size + bundle.blob_sizes.iter().sum::<u64>()
        });
    let tracker = ProgressTracker::new(control, ProgressPhase::Export, total);

    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| MicrosandboxError::io(parent, e))?;
    let base = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{base}.exporting-"))
        // An archive is meant to be shared: the usual file mode, not 0600.
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(parent)
        .map_err(|e| MicrosandboxError::io(parent, e))?;
    let io_err = |e: io::Error| MicrosandboxError::io(out, e);
    let sink = BufWriter::with_capacity(1 << 20, temp.as_file().try_clone().map_err(io_err)?);
    let write_all = |sink: &mut dyn Write| -> io::Result<()> {
        let mtime = chrono::Utc::now().timestamp().max(0) as u64;
        let mut tar = TarWriter::new(sink, mtime);
        let index_bytes = serde_json::to_vec_pretty(&index).map_err(io::Error::other)?;
        tar.regular(INDEX_ENTRY, index_bytes.len() as u64, &index_bytes[..])?;
        if let Some(bundle) = &image {
            let meta = &bundle.meta;
            for (digest, &size) in meta.blobs.iter().zip(&bundle.blob_sizes) {
                let blob = File::open(image::blob_path(home, digest))?;
                let counted = CountingReader {
                    inner: blob,
                    tracker: &tracker,
                };
                tar.regular(&blob_entry(digest), size, counted)?;
            }
            let lower = CountingReader {
                inner: File::open(&bundle.lower_path)?,
                tracker: &tracker,
            };
            tar.regular(&lower_entry(&meta.manifest_digest), meta.lower_size, lower)?;
        }
        for (snap, file, ranges) in &planned {
            let dir = snapshot_dir_entry(snap.digest());
            let manifest = std::fs::read(snap.path().join(MANIFEST_FILE))?;
            tar.regular(
                &format!("{dir}/{MANIFEST_FILE}"),
                manifest.len() as u64,
                &manifest[..],
            )?;
            let segments: Vec<Segment> = ranges
                .iter()
                .map(|&(offset, len)| Segment { offset, len })
                .collect();
            let mut buf = vec![0u8; 1 << 20];
            let mut unsynced = 0;
            tar.sparse(
                &format!("{dir}/{}", snap.manifest().upper.file),
                snap.size_bytes(),
                &segments,
                |out, segment| {
                    let mut done = 0;
                    while done < segment.len {
                        let n = (segment.len - done).min(buf.len() as u64) as usize;
                        file.read_exact_at(&mut buf[..n], segment.offset + done)?;
                        out.write_all(&buf[..n])?;
                        tracker.advance(n as u64)?;
                        done += n as u64;
                        // Synced as it goes, so the final fsync cannot
                        // outlast a cancellation by much.
                        unsynced += n;
                        if unsynced >= SYNC_EVERY {
                            temp.as_file().sync_data()?;
                            unsynced = 0;
                        }
                    }
                    Ok(())
                },
            )?;
        }
        tar.finish()?.flush()
    };
    if opts.plain_tar {
        let mut sink = sink;
        write_all(&mut sink).map_err(io_err)?;
        sink.into_inner().map_err(|e| io_err(e.into_error()))?;
    } else {
        let mut encoder = zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL).map_err(io_err)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        encoder.multithread(threads).map_err(io_err)?;
        encoder.include_checksum(true).map_err(io_err)?;
        write_all(&mut encoder).map_err(io_err)?;
        let sink = encoder.finish().map_err(io_err)?;
        sink.into_inner().map_err(|e| io_err(e.into_error()))?;
    }
    temp.as_file().sync_all().map_err(io_err)?;
    temp.persist(out).map_err(|e| io_err(e.error))?;
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| MicrosandboxError::io(parent, e))?;
    tracker.finish();
    Ok(())
}

/// The artifact for a bare name or path, else the indexed snapshot with
/// that digest.
pub(crate) fn resolve(home: &MsbHome, name_or_path: &str) -> MicrosandboxResult<Snapshot> {
    let dir = home.snapshot_location(name_or_path)?;
    match Snapshot::open_dir(&dir) {
        Err(MicrosandboxError::SnapshotNotFound { .. }) if is_content_digest(name_or_path) => {
            Snapshot::open_dir(index::get(home, name_or_path)?.path())
        }
        other => other,
    }
}

/// `head` and its ancestors, oldest first, each found through the index.
fn ancestors_and(home: &MsbHome, head: Snapshot) -> MicrosandboxResult<Vec<Snapshot>> {
    let mut chain = vec![head];
    while let Some(parent) = chain.last().and_then(|s| s.parent()).map(str::to_string) {
        if chain.iter().any(|s| s.digest() == parent) || chain.len() > 4096 {
            return Err(MicrosandboxError::manifest_invalid(
                chain[0].path().join(MANIFEST_FILE),
                "the parent chain loops",
            ));
        }
        let handle = index::get(home, &parent).map_err(|_| MicrosandboxError::SnapshotNotFound {
            what: format!(
                "parent {parent} of {} (not in the index; import or reindex it, or export without parents)",
                chain.last().map(|s| s.path().display().to_string()).unwrap_or_default()
            ),
        })?;
        let snap = Snapshot::open_dir(handle.path())?;
        if snap.digest() != parent {
            return Err(MicrosandboxError::SnapshotNotFound {
                what: format!("parent {parent} (its indexed artifact changed; reindex)"),
            });
        }
        chain.push(snap);
    }
    chain.reverse();
    Ok(chain)
}

/// The names the artifacts land under on import: their index name, else
/// their directory name; made unique within the archive.
fn archive_names(home: &MsbHome, chain: &[Snapshot]) -> Vec<ArchivedSnapshot> {
    let mut keys = index::RowKeys::new(home);
    let mut used = std::collections::HashSet::new();
    chain
        .iter()
        .map(|snap| {
            let hex12 = &super::hex_of(snap.digest())[..12];
            let mut name = keys
                .key(snap.path())
                .name
                .or_else(|| {
                    snap.path()
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .filter(|n| is_bare_name(n))
                .unwrap_or_else(|| format!("snapshot-{hex12}"));
            if !used.insert(name.clone()) {
                name = format!("{name}-{hex12}");
                used.insert(name.clone());
            }
            ArchivedSnapshot {
                digest: snap.digest().to_string(),
                name,
            }
        })
        .collect()
}

/// What `with_image` bundles.
struct BundledImage {
    meta: ArchivedImage,
    blob_sizes: Vec<u64>,
    lower_path: PathBuf,
}

/// The bundle of the image with `manifest_digest`.
fn bundled_image(home: &MsbHome, manifest_digest: &str) -> MicrosandboxResult<BundledImage> {
    let info = image::get_blocking(home, manifest_digest)?;
    let blobs = image::blob_digests(home, manifest_digest)?;
    let mut sizes = Vec::new();
    for digest in &blobs {
        let path = image::blob_path(home, digest);
        let meta = std::fs::metadata(&path).map_err(|e| MicrosandboxError::io(&path, e))?;
        sizes.push(meta.len());
    }
    let (lower_digest, lower_size) = image::sha256_file(&info.lower_path)
        .map_err(|e| MicrosandboxError::io(&info.lower_path, e))?;
    Ok(BundledImage {
        meta: ArchivedImage {
            reference: info.reference,
            manifest_digest: info.manifest_digest,
            config_digest: info.config_digest,
            blobs,
            lower_digest,
            lower_size,
        },
        blob_sizes: sizes,
        lower_path: info.lower_path,
    })
}
