//! Writing archives: plan (resolve and verify what goes in), write (stream
//! it into a staged file beside `out`, zstd over every core or plain tar)
//! and publish (rename it into place through [`publish`](crate::publish)),
//! so `out` is either untouched or complete. Uppers are stored as
//! sparse entries holding only their non-zero blocks, so the archive's size
//! and the export's cost follow the data, not the apparent size.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::tarfmt::{Segment, TarWriter};
use super::{
    ARCHIVE_FORMAT, ArchiveIndex, ArchivedImage, ArchivedSnapshot, ExportOpts, INDEX_ENTRY,
    ZSTD_LEVEL, blob_entry, lower_entry, snapshot_dir_entry,
};
use crate::control::{Control, CountingReader, ProgressTracker};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::{MsbHome, is_bare_name};
use crate::image;
use crate::progress::ProgressPhase;
use crate::publish::StagedFile;
use crate::snapshot::manifest::{MANIFEST_FILE, VM_FILE};
use crate::snapshot::{Snapshot, index};
use crate::sparse::nonzero_ranges;

/// Export `name_or_path` to `out` per `opts`. Blocking. Three steps:
/// [`plan`] (resolve and verify what goes in), [`write`] (stream it into a
/// staged file beside `out`) and publication (rename it over `out`).
pub(crate) fn export_blocking(
    home: &MsbHome,
    name_or_path: &str,
    out: &Path,
    opts: ExportOpts,
    control: &Control,
) -> MicrosandboxResult<()> {
    let plan = plan(home, name_or_path, &opts, control)?;
    let tracker = ProgressTracker::new(control, ProgressPhase::Export, plan.total_bytes());
    // An archive is meant to be shared: the usual file mode, not 0600.
    let staged = StagedFile::new(out, "exporting", 0o644)?;
    write(&plan, staged.file(), opts.plain_tar, &tracker)
        .map_err(|e| MicrosandboxError::io(out, e))?;
    staged.publish(true)?;
    tracker.finish();
    Ok(())
}

/// What an export writes, checked and ready to stream.
struct ExportPlan {
    /// Oldest ancestor first; the last one is the head.
    snapshots: Vec<PlannedSnapshot>,
    /// The image bundled with `with_image`.
    image: Option<image::ImageBundle>,
    /// `msb-archive.json`.
    index: ArchiveIndex,
}

/// One artifact to store: its data files (a full snapshot's VM files, then
/// the upper, which completes the artifact on import), each open with the
/// ranges that hold data.
struct PlannedSnapshot {
    snap: Snapshot,
    files: Vec<PlannedFile>,
}

/// One data file of an artifact.
struct PlannedFile {
    name: String,
    file: File,
    size: u64,
    ranges: Vec<(u64, u64)>,
}

impl PlannedFile {
    fn open(snap: &Snapshot, name: &str, size: u64) -> MicrosandboxResult<Self> {
        let path = snap.path().join(name);
        let file = File::open(&path).map_err(|e| MicrosandboxError::io(&path, e))?;
        let ranges = nonzero_ranges(&file, size).map_err(|e| MicrosandboxError::io(&path, e))?;
        Ok(Self {
            name: name.to_string(),
            file,
            size,
            ranges,
        })
    }
}

impl ExportPlan {
    /// Bytes of snapshot data and image files the export stores.
    fn total_bytes(&self) -> u64 {
        let data: u64 = self
            .snapshots
            .iter()
            .flat_map(|p| &p.files)
            .flat_map(|f| f.ranges.iter().map(|&(_, n)| n))
            .sum();
        data + self.image.as_ref().map_or(0, |bundle| {
            bundle.lower_size + bundle.blobs.iter().map(|(_, _, size)| size).sum::<u64>()
        })
    }
}

/// Resolve `name_or_path` (and, with `with_parents`, its ancestors), verify
/// each, find the image bundle and the data ranges of every upper.
fn plan(
    home: &MsbHome,
    name_or_path: &str,
    opts: &ExportOpts,
    control: &Control,
) -> MicrosandboxResult<ExportPlan> {
    let head = crate::snapshot::resolve::resolve(home, name_or_path)?.open()?;
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
        .then(|| image::bundle(home, head.image_manifest_digest()))
        .transpose()?;
    let index = ArchiveIndex {
        format: ARCHIVE_FORMAT.into(),
        snapshots: archive_names(home, &chain),
        image: image.as_ref().map(archived_image),
    };
    let mut snapshots = Vec::new();
    for snap in chain {
        let mut files = Vec::new();
        if let Some(vm) = snap.vm() {
            let vm_json = std::fs::metadata(snap.path().join(VM_FILE))
                .map_err(|e| MicrosandboxError::io(snap.path().join(VM_FILE), e))?;
            files.push(PlannedFile::open(&snap, VM_FILE, vm_json.len())?);
            files.push(PlannedFile::open(
                &snap,
                &vm.state.file,
                vm.state.size_bytes,
            )?);
            files.push(PlannedFile::open(&snap, &vm.ram.file, vm.ram.size_bytes)?);
        }
        let upper = snap.manifest().upper.file.clone();
        files.push(PlannedFile::open(&snap, &upper, snap.size_bytes())?);
        snapshots.push(PlannedSnapshot { snap, files });
    }
    Ok(ExportPlan {
        snapshots,
        image,
        index,
    })
}

/// How `msb-archive.json` describes a bundled image.
fn archived_image(bundle: &image::ImageBundle) -> ArchivedImage {
    ArchivedImage {
        reference: bundle.info.reference.clone(),
        manifest_digest: bundle.info.manifest_digest.clone(),
        config_digest: bundle.info.config_digest.clone(),
        blobs: bundle.blobs.iter().map(|(d, _, _)| d.clone()).collect(),
        lower_digest: bundle.lower_digest.clone(),
        lower_size: bundle.lower_size,
    }
}

/// Stream the archive of `plan` into `file`: zstd over every core, or a
/// plain tar.
fn write(
    plan: &ExportPlan,
    file: &File,
    plain_tar: bool,
    tracker: &ProgressTracker,
) -> io::Result<()> {
    let sink = BufWriter::with_capacity(1 << 20, file.try_clone()?);
    if plain_tar {
        let mut sink = sink;
        write_entries(plan, &mut sink, file, tracker)?;
        sink.into_inner().map_err(|e| e.into_error())?;
    } else {
        let mut encoder = zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        encoder.multithread(threads)?;
        encoder.include_checksum(true)?;
        write_entries(plan, &mut encoder, file, tracker)?;
        let sink = encoder.finish()?;
        sink.into_inner().map_err(|e| e.into_error())?;
    }
    Ok(())
}

/// Bytes of upper data stored between syncs of the archive being written:
/// small enough that a sync in flight when a cancellation comes ends well
/// inside its 100 ms bound on a busy disk (16 MiB once took ~150 ms in CI).
const SYNC_EVERY: usize = 4 << 20;

/// The tar stream: index, image files, then each artifact's manifest and
/// sparse upper. `file` (the archive `sink` ends in) is synced as it grows.
fn write_entries(
    plan: &ExportPlan,
    sink: &mut dyn Write,
    file: &File,
    tracker: &ProgressTracker,
) -> io::Result<()> {
    let mtime = chrono::Utc::now().timestamp().max(0) as u64;
    let mut tar = TarWriter::new(sink, mtime);
    let index_bytes = serde_json::to_vec_pretty(&plan.index).map_err(io::Error::other)?;
    tar.regular(INDEX_ENTRY, index_bytes.len() as u64, &index_bytes[..])?;
    if let Some(bundle) = &plan.image {
        for (digest, path, size) in &bundle.blobs {
            let counted = CountingReader {
                inner: File::open(path)?,
                tracker,
            };
            tar.regular(&blob_entry(digest), *size, counted)?;
        }
        let lower = CountingReader {
            inner: File::open(&bundle.info.lower_path)?,
            tracker,
        };
        tar.regular(
            &lower_entry(&bundle.info.manifest_digest),
            bundle.lower_size,
            lower,
        )?;
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut unsynced = 0;
    for PlannedSnapshot { snap, files } in &plan.snapshots {
        let dir = snapshot_dir_entry(snap.digest());
        let manifest = std::fs::read(snap.path().join(MANIFEST_FILE))?;
        tar.regular(
            &format!("{dir}/{MANIFEST_FILE}"),
            manifest.len() as u64,
            &manifest[..],
        )?;
        for PlannedFile {
            name,
            file: data,
            size,
            ranges,
        } in files
        {
            let mut out = SyncedSink {
                file,
                unsynced: &mut unsynced,
            };
            write_sparse(
                &mut tar,
                &format!("{dir}/{name}"),
                data,
                *size,
                ranges,
                &mut buf,
                tracker,
                &mut out,
            )?;
        }
    }
    tar.finish()?.flush()
}

/// Syncs the archive file every [`SYNC_EVERY`] bytes of data, so the
/// final fsync cannot outlast a cancellation by much.
struct SyncedSink<'f> {
    file: &'f File,
    unsynced: &'f mut usize,
}

impl SyncedSink<'_> {
    fn wrote(&mut self, n: usize) -> io::Result<()> {
        *self.unsynced += n;
        if *self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            *self.unsynced = 0;
        }
        Ok(())
    }
}

/// One data file (`size` bytes of `data`, its non-zero `ranges`) as a GNU
/// sparse entry `name`: holes stay holes.
#[allow(clippy::too_many_arguments)]
fn write_sparse<W: Write>(
    tar: &mut TarWriter<W>,
    name: &str,
    data: &File,
    size: u64,
    ranges: &[(u64, u64)],
    buf: &mut [u8],
    tracker: &ProgressTracker,
    sink: &mut SyncedSink,
) -> io::Result<()> {
    let segments: Vec<Segment> = ranges
        .iter()
        .map(|&(offset, len)| Segment { offset, len })
        .collect();
    tar.sparse(name, size, &segments, |out, segment| {
        let mut done = 0;
        while done < segment.len {
            let n = (segment.len - done).min(buf.len() as u64) as usize;
            data.read_exact_at(&mut buf[..n], segment.offset + done)?;
            out.write_all(&buf[..n])?;
            tracker.advance(n as u64)?;
            done += n as u64;
            sink.wrote(n)?;
        }
        Ok(())
    })
}

/// Write the data file `name` of `snap` (`size` bytes) to `out` as a
/// zstd-compressed tar holding that one sparse entry,
/// `snapshots/<digest hex>/<name>`, with time 0: the same file always
/// gives the same bytes (the registry form of a snapshot's files).
pub(crate) fn write_file_blob(
    snap: &Snapshot,
    name: &str,
    size: u64,
    out: &File,
    tracker: &ProgressTracker,
) -> MicrosandboxResult<()> {
    let planned = PlannedFile::open(snap, name, size)?;
    let path = snap.path().join(name);
    let io_err = |e| MicrosandboxError::io(&path, e);
    let sink = BufWriter::with_capacity(1 << 20, out.try_clone().map_err(io_err)?);
    let mut encoder = zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL).map_err(io_err)?;
    // Multithreaded zstd output does not depend on the worker count; it is
    // never run single-threaded (whose output differs), so digests agree.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    encoder.multithread(threads).map_err(io_err)?;
    encoder.include_checksum(true).map_err(io_err)?;
    let mut tar = TarWriter::new(encoder, 0);
    let mut buf = vec![0u8; 1 << 20];
    let mut unsynced = 0;
    let mut synced = SyncedSink {
        file: out,
        unsynced: &mut unsynced,
    };
    let entry = format!("{}/{name}", snapshot_dir_entry(snap.digest()));
    write_sparse(
        &mut tar,
        &entry,
        &planned.file,
        size,
        &planned.ranges,
        &mut buf,
        tracker,
        &mut synced,
    )
    .map_err(io_err)?;
    let sink = tar.finish().and_then(|e| e.finish()).map_err(io_err)?;
    sink.into_inner().map_err(|e| io_err(e.into_error()))?;
    out.sync_all().map_err(io_err)?;
    Ok(())
}

/// `head` and its ancestors, oldest first, each found through the index.
pub(crate) fn ancestors_and(home: &MsbHome, head: Snapshot) -> MicrosandboxResult<Vec<Snapshot>> {
    let mut chain = vec![head];
    while let Some(parent) = chain.last().and_then(|s| s.parent()).map(str::to_string) {
        if chain.iter().any(|s| s.digest() == parent) || chain.len() > 4096 {
            return Err(MicrosandboxError::manifest_invalid(
                chain[0].path().join(MANIFEST_FILE),
                "the parent chain loops",
            ));
        }
        let handle = index::get(home, &parent).map_err(|e| match e {
            // Only "not indexed" is the caller's to fix; a broken index is its own error.
            MicrosandboxError::SnapshotNotFound { .. } => MicrosandboxError::SnapshotNotFound {
            what: format!(
                "parent {parent} of {} (not in the index; import or reindex it, or export without parents)",
                chain.last().map(|s| s.path().display().to_string()).unwrap_or_default()
            ),
            },
            other => other,
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
pub(crate) fn archive_names(home: &MsbHome, chain: &[Snapshot]) -> Vec<ArchivedSnapshot> {
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
