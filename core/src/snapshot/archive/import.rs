//! Reading archives, which are treated as hostile: the stream is unpacked
//! into a hidden staging directory under the destination root (image files
//! into a staging directory of the image store), and every entry must be one
//! the layout names, exactly once, of an allowed type, with a size that
//! matches what its manifest or `msb-archive.json` says. Each artifact's
//! manifest digest must match its directory name and its recorded integrity
//! is verified as it lands; blobs are checked against their digests. Only
//! when the whole archive has passed is anything moved into place and
//! indexed; on any failure the staging directories (and any directory this
//! import created) are removed, and the index is untouched. Archives of the
//! 0.6.6 release (no index, artifacts in `sha256-<16 hex>/`) are read under
//! the same rules.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::rules::{LEGACY_FORMAT, check_entry_name, check_index, legacy_dir};
use super::tarfmt::{EntryBody, EntryHeader, Segment, TarReader};
use super::{
    ArchiveIndex, ArchivedSnapshot, INDEX_ENTRY, INDEX_MAX_BYTES, blob_entry, hex_of, lower_entry,
};
use crate::control::Control;
use crate::control::{CountingReader, ProgressTracker};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::image::{self, ImportedImage, StagedImageFiles, ZSTD_MAGIC};
use crate::progress::ProgressPhase;
use crate::publish::{self, sync_dir};
use crate::snapshot::manifest::{
    MANIFEST_FILE, MANIFEST_MAX_BYTES, Manifest, SnapshotKind, VM_FILE, VM_LABEL, VmSection,
    sha256_digest_string,
};
use crate::snapshot::{Snapshot, SnapshotHandle, index};
use crate::sparse::write_nonzero_runs;

/// Import `archive` into `dest` (default: the snapshots directory). Blocking.
pub(crate) fn import_blocking(
    home: &MsbHome,
    archive: &Path,
    dest: Option<&Path>,
    control: &Control,
) -> MicrosandboxResult<SnapshotHandle> {
    let file = File::open(archive).map_err(|e| MicrosandboxError::io(archive, e))?;
    let total = file
        .metadata()
        .map_err(|e| MicrosandboxError::io(archive, e))?
        .len();
    let tracker = ProgressTracker::new(control, ProgressPhase::Import, total);
    let counted = CountingReader {
        inner: file,
        tracker: &tracker,
    };
    let mut input = BufReader::with_capacity(1 << 20, counted);
    let head = input
        .fill_buf()
        .map_err(|e| MicrosandboxError::io(archive, e))?;
    let stream: Box<dyn Read + '_> = if head.starts_with(&ZSTD_MAGIC) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| MicrosandboxError::io(archive, e))?,
        )
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Box::new(input)
    } else {
        return Err(invalid(
            archive,
            "neither a zstd-compressed tar nor a plain tar (by its magic bytes)",
        ));
    };

    let handle = land_stream(home, archive, stream, dest, control, || Ok(()))?;
    tracker.finish();
    Ok(handle)
}

/// Land the archive `stream` into `dest` (default: the snapshots
/// directory) with every check of an import; `archive` names the input in
/// errors. `before_publish` runs once every check has passed and before
/// anything is placed (a registry pull fetches a missing image there); its
/// error fails the landing like any other. Shared by [`import_blocking`]
/// and a registry pull, which joins a snapshot's blobs back into an
/// archive stream. Blocking.
pub(crate) fn land_stream(
    home: &MsbHome,
    archive: &Path,
    stream: impl Read,
    dest: Option<&Path>,
    control: &Control,
    before_publish: impl FnOnce() -> MicrosandboxResult<()>,
) -> MicrosandboxResult<SnapshotHandle> {
    let dest_root = dest.map_or_else(|| home.snapshots_dir(), Path::to_path_buf);
    let mut created = CreatedDirs::default();
    created.create(&dest_root)?;
    // What a killed import or create left here goes first.
    publish::remove_abandoned_staging(&dest_root);
    let staging = publish::staging_dir(&dest_root, "import")?;
    let mut unpacker = Unpacker {
        home,
        control,
        archive,
        staging: staging.path(),
        image_staging: None,
        created: &mut created,
        legacy: false,
        dirs: HashMap::new(),
        manifests: HashMap::new(),
        uppers: HashSet::new(),
        vm_files: HashMap::new(),
        vms: HashMap::new(),
        blobs: HashSet::new(),
        lower: false,
        buf: vec![0u8; 1 << 20],
    };
    let index = unpacker.unpack(stream)?;
    let image_staging = unpacker.image_staging.take();
    // Held from the image's resolution (a pull's `before_publish`) or
    // registration until the index rows that pin it are written, so an
    // `image rm` in between sees the new snapshots as its users.
    let _store = image::StoreLock::shared(home)?;
    before_publish()?;
    let handle = publish(home, &index, staging.path(), image_staging, &dest_root)?;
    created.keep();
    Ok(handle)
}

/// Bytes of upper data written between syncs during an import.
const SYNC_EVERY: usize = 16 << 20;

pub(super) fn invalid(archive: &Path, reason: impl Into<String>) -> MicrosandboxError {
    MicrosandboxError::ArchiveInvalid {
        path: archive.to_path_buf(),
        reason: reason.into(),
    }
}

/// Every error reading the stream (bad headers, truncation, a corrupt zstd
/// frame) describes the archive.
/// A failure reading the archive stream: the archive's fault, unless it
/// is the call's cancellation surfacing through the reader.
fn stream_error(archive: &Path) -> impl Fn(io::Error) -> MicrosandboxError + '_ {
    move |e| {
        if crate::error::is_cancelled_io(&e) {
            MicrosandboxError::Cancelled
        } else {
            invalid(archive, e.to_string())
        }
    }
}

struct Unpacker<'a> {
    home: &'a MsbHome,
    control: &'a Control,
    archive: &'a Path,
    staging: &'a Path,
    image_staging: Option<StagedImageFiles>,
    created: &'a mut CreatedDirs,
    /// A 0.6.6 archive: no index, artifacts in `sha256-<16 hex>/`.
    legacy: bool,
    /// Full digest hex of each artifact directory seen, by directory.
    dirs: HashMap<String, String>,
    /// Parsed manifests by digest hex.
    manifests: HashMap<String, Manifest>,
    /// A full artifact's VM files landed so far, by digest hex.
    vm_files: HashMap<String, HashSet<String>>,
    /// A full artifact's parsed `vm.json`, by digest hex.
    vms: HashMap<String, VmSection>,
    uppers: HashSet<String>,
    blobs: HashSet<String>,
    lower: bool,
    buf: Vec<u8>,
}

/// Where an entry goes.
enum Route {
    Manifest(String),
    Upper(String),
    /// A full artifact's `vm.json`.
    VmJson(String),
    /// A full artifact's device state or RAM: (digest hex, size recorded).
    VmData(String, u64),
    Blob(String),
    Lower,
}

impl Unpacker<'_> {
    fn unpack(&mut self, stream: impl Read) -> MicrosandboxResult<ArchiveIndex> {
        let archive = self.archive;
        let mut tar = TarReader::new(stream);
        let first = tar
            .next_header()
            .map_err(stream_error(archive))?
            .ok_or_else(|| invalid(archive, "the archive is empty"))?;
        // An archive of the 0.6.6 release has no index: it starts with the
        // manifest of its first artifact.
        self.legacy = first.name != INDEX_ENTRY && legacy_dir(&first.name).is_some();
        let (mut index, mut pending) = if self.legacy {
            let index = ArchiveIndex {
                format: LEGACY_FORMAT.into(),
                snapshots: Vec::new(),
                image: None,
            };
            (index, Some(first))
        } else {
            (self.read_index(&mut tar, &first)?, None)
        };

        let mut seen = HashSet::from([INDEX_ENTRY.to_string()]);
        loop {
            let entry = match pending.take() {
                Some(entry) => entry,
                None => match tar.next_header().map_err(stream_error(archive))? {
                    Some(entry) => entry,
                    None => break,
                },
            };
            check_entry_name(archive, &entry.name)?;
            if !seen.insert(entry.name.clone()) {
                return Err(invalid(archive, format!("duplicate entry {}", entry.name)));
            }
            match self.route(&entry, &index)? {
                Route::Manifest(dir) => self.manifest(&mut tar, &entry, dir, &mut index)?,
                Route::Upper(hex) => self.upper(&mut tar, &entry, hex)?,
                Route::VmJson(hex) => self.vm_json(&mut tar, &entry, hex)?,
                Route::VmData(hex, size) => {
                    let file = self
                        .artifact_entry(&entry.name)
                        .expect("routed")
                        .1
                        .to_string();
                    let path = self.staging.join(&hex).join(&file);
                    self.data_file(&mut tar, &entry, &path, size)?;
                    self.vm_files.entry(hex).or_default().insert(file);
                }
                Route::Blob(digest) => {
                    let path = self.image_staging()?.blob_path(&digest);
                    self.image_file(&mut tar, &entry, &path, &digest)?;
                    self.blobs.insert(digest);
                }
                Route::Lower => {
                    let lower_digest = &index.image.as_ref().expect("routed").lower_digest;
                    let path = self.image_staging()?.lower_path();
                    self.image_file(&mut tar, &entry, &path, lower_digest)?;
                    self.lower = true;
                }
            }
        }
        tar.expect_only_padding().map_err(stream_error(archive))?;
        self.check_complete(&index)?;
        Ok(index)
    }

    /// Read and check `msb-archive.json`, the `first` entry.
    fn read_index(
        &self,
        tar: &mut TarReader<impl Read>,
        first: &EntryHeader,
    ) -> MicrosandboxResult<ArchiveIndex> {
        let archive = self.archive;
        if first.name != INDEX_ENTRY || first.body != EntryBody::Regular {
            return Err(invalid(
                archive,
                format!(
                    "the first entry must be {INDEX_ENTRY} (or, in a 0.6.6 archive, a manifest), found {}",
                    first.name
                ),
            ));
        }
        if first.stored > INDEX_MAX_BYTES {
            return Err(invalid(archive, format!("{INDEX_ENTRY} is too large")));
        }
        let mut bytes = vec![0u8; first.stored as usize];
        tar.read_data(&mut bytes).map_err(stream_error(archive))?;
        let index: ArchiveIndex = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(archive, format!("{INDEX_ENTRY}: {e}")))?;
        check_index(archive, &index)?;
        Ok(index)
    }

    /// `(directory, file)` of an artifact entry: `snapshots/<hex>/<file>`,
    /// or `sha256-<16 hex>/<file>` in a 0.6.6 archive.
    fn artifact_entry<'n>(&self, name: &'n str) -> Option<(&'n str, &'n str)> {
        if self.legacy {
            legacy_dir(name)
        } else {
            name.strip_prefix("snapshots/")?.split_once('/')
        }
    }

    fn route(&self, entry: &EntryHeader, index: &ArchiveIndex) -> MicrosandboxResult<Route> {
        let outside = || {
            invalid(
                self.archive,
                format!("entry {} is outside the archive layout", entry.name),
            )
        };
        let name = entry.name.as_str();
        if let Some((dir, file)) = self.artifact_entry(name) {
            if file == MANIFEST_FILE {
                let listed =
                    self.legacy || index.snapshots.iter().any(|s| hex_of(&s.digest) == dir);
                return if listed {
                    Ok(Route::Manifest(dir.to_string()))
                } else {
                    Err(outside())
                };
            }
            let hex = self.dirs.get(dir).ok_or_else(|| {
                invalid(
                    self.archive,
                    format!("{name} comes before its artifact's manifest, or is not in the layout"),
                )
            })?;
            let manifest = &self.manifests[hex];
            let landed = self.vm_files.get(hex);
            if manifest.upper.file == file {
                // The upper completes an artifact: a full one's VM files come first.
                let vm_whole =
                    manifest.kind() == SnapshotKind::Disk || landed.is_some_and(|l| l.len() == 3);
                return if vm_whole {
                    Ok(Route::Upper(hex.clone()))
                } else {
                    Err(invalid(
                        self.archive,
                        format!("{name} comes before its artifact's VM files"),
                    ))
                };
            }
            if manifest.kind() == SnapshotKind::Full {
                let already = landed.is_some_and(|l| l.contains(file));
                if file == VM_FILE && !already {
                    return Ok(Route::VmJson(hex.clone()));
                }
                if let Some(vm) = self.vms.get(hex)
                    && !already
                {
                    if file == vm.state.file {
                        return Ok(Route::VmData(hex.clone(), vm.state.size_bytes));
                    }
                    if file == vm.ram.file {
                        return Ok(Route::VmData(hex.clone(), vm.ram.size_bytes));
                    }
                }
            }
            return Err(outside());
        }
        let image = index.image.as_ref().ok_or_else(outside)?;
        if let Some(digest) = image.blobs.iter().find(|d| blob_entry(d) == name) {
            return Ok(Route::Blob(digest.clone()));
        }
        if lower_entry(&image.manifest_digest) == name {
            return Ok(Route::Lower);
        }
        Err(outside())
    }

    /// Stage the manifest of the artifact in archive directory `dir`, which
    /// must carry its digest: all of it, or (0.6.6) its first 16 hex digits.
    fn manifest(
        &mut self,
        tar: &mut TarReader<impl Read>,
        entry: &EntryHeader,
        dir: String,
        index: &mut ArchiveIndex,
    ) -> MicrosandboxResult<()> {
        let archive = self.archive;
        if entry.body != EntryBody::Regular || entry.stored > MANIFEST_MAX_BYTES {
            return Err(invalid(
                archive,
                format!("{} must be a small regular file", entry.name),
            ));
        }
        let mut bytes = vec![0u8; entry.stored as usize];
        tar.read_data(&mut bytes).map_err(stream_error(archive))?;
        let manifest = Manifest::parse(&bytes, Path::new(&entry.name))
            .map_err(|e| invalid(archive, e.to_string()))?;
        let digest = manifest.digest();
        let hex = hex_of(&digest).to_string();
        let carries_digest = if self.legacy {
            hex.starts_with(&dir)
        } else {
            hex == dir
        };
        if !carries_digest {
            return Err(invalid(
                archive,
                format!(
                    "{}: the manifest's digest {} does not match its directory name",
                    entry.name,
                    manifest.digest()
                ),
            ));
        }
        if manifest.upper.file == MANIFEST_FILE {
            return Err(invalid(
                archive,
                format!(
                    "{}: the upper file cannot be named {MANIFEST_FILE}",
                    entry.name
                ),
            ));
        }
        let staged = self.staging.join(&hex);
        fs::create_dir(&staged).map_err(|e| MicrosandboxError::io(&staged, e))?;
        publish::write_synced(&staged.join(MANIFEST_FILE), &bytes)?;
        if self.legacy {
            index.snapshots.push(ArchivedSnapshot {
                digest: digest.clone(),
                name: format!("sha256-{dir}"),
            });
        }
        self.dirs.insert(dir, hex.clone());
        self.manifests.insert(hex, manifest);
        Ok(())
    }

    /// Unpack an upper (sparse or regular) keeping holes, then verify the
    /// artifact it completes.
    fn upper(
        &mut self,
        tar: &mut TarReader<impl Read>,
        entry: &EntryHeader,
        hex: String,
    ) -> MicrosandboxResult<()> {
        // `data_file` checks the entry's size against the manifest's.
        let manifest = &self.manifests[&hex];
        let dir = self.staging.join(&hex);
        let path = dir.join(&manifest.upper.file);
        self.data_file(tar, entry, &path, manifest.upper.size_bytes)?;
        let snap = Snapshot::open_dir(&dir)?;
        snap.verify_controlled(&self.control.without_progress())?;
        sync_dir(&dir)?;
        self.uppers.insert(hex);
        Ok(())
    }

    /// Stage a full artifact's `vm.json`: small, its digest the manifest's
    /// label, parsed strictly (its file names route the VM files after it).
    fn vm_json(
        &mut self,
        tar: &mut TarReader<impl Read>,
        entry: &EntryHeader,
        hex: String,
    ) -> MicrosandboxResult<()> {
        let archive = self.archive;
        if entry.apparent_size() > MANIFEST_MAX_BYTES {
            return Err(invalid(archive, format!("{} is too large", entry.name)));
        }
        let path = self.staging.join(&hex).join(VM_FILE);
        self.data_file(tar, entry, &path, entry.apparent_size())?;
        let bytes = fs::read(&path).map_err(|e| MicrosandboxError::io(&path, e))?;
        let manifest = &self.manifests[&hex];
        if manifest.labels.get(VM_LABEL).map(String::as_str)
            != Some(sha256_digest_string(&bytes).as_str())
        {
            return Err(invalid(
                archive,
                format!(
                    "{}: its digest is not the one its manifest records",
                    entry.name
                ),
            ));
        }
        let vm = VmSection::parse(&bytes, manifest, &path)
            .map_err(|e| invalid(archive, e.to_string()))?;
        self.vms.insert(hex.clone(), vm);
        self.vm_files
            .entry(hex)
            .or_default()
            .insert(VM_FILE.to_string());
        Ok(())
    }

    /// Unpack one data file of `size` recorded bytes (sparse or regular)
    /// to `path`, keeping holes, synced.
    fn data_file(
        &mut self,
        tar: &mut TarReader<impl Read>,
        entry: &EntryHeader,
        path: &Path,
        size: u64,
    ) -> MicrosandboxResult<()> {
        let archive = self.archive;
        if entry.apparent_size() != size {
            return Err(invalid(
                archive,
                format!(
                    "{}: {} bytes, but its manifest says {size}",
                    entry.name,
                    entry.apparent_size(),
                ),
            ));
        }
        let out = File::create_new(path).map_err(|e| MicrosandboxError::io(path, e))?;
        out.set_len(entry.apparent_size())
            .map_err(|e| MicrosandboxError::io(path, e))?;
        let segments = match &entry.body {
            EntryBody::Regular => vec![Segment {
                offset: 0,
                len: entry.stored,
            }],
            EntryBody::Sparse { segments, .. } => segments.clone(),
        };
        let mut unsynced = 0;
        for segment in segments {
            let mut done = 0;
            while done < segment.len {
                let n = (segment.len - done).min(self.buf.len() as u64) as usize;
                tar.read_data(&mut self.buf[..n])
                    .map_err(stream_error(archive))?;
                write_nonzero_runs(&out, segment.offset + done, &self.buf[..n])
                    .map_err(|e| MicrosandboxError::io(path, e))?;
                done += n as u64;
                // Synced as it lands, so the final fsync cannot outlast a
                // cancellation by much.
                unsynced += n;
                if unsynced >= SYNC_EVERY {
                    out.sync_data()
                        .map_err(|e| MicrosandboxError::io(path, e))?;
                    unsynced = 0;
                }
            }
        }
        out.sync_all().map_err(|e| MicrosandboxError::io(path, e))?;
        Ok(())
    }

    /// Stage an image file (a blob, or the root disk as `lower.erofs`) and
    /// check its sha256 against `expected`.
    fn image_file(
        &mut self,
        tar: &mut TarReader<impl Read>,
        entry: &EntryHeader,
        path: &Path,
        expected: &str,
    ) -> MicrosandboxResult<()> {
        let computed = self.stream_hashed(tar, entry, path)?;
        if computed != expected {
            return Err(invalid(
                self.archive,
                format!(
                    "{}: content ({computed}) does not match {expected}",
                    entry.name
                ),
            ));
        }
        Ok(())
    }

    /// Copy a regular entry to `path`, returning the sha256 of its bytes.
    fn stream_hashed(
        &mut self,
        tar: &mut TarReader<impl Read>,
        entry: &EntryHeader,
        path: &Path,
    ) -> MicrosandboxResult<String> {
        if entry.body != EntryBody::Regular {
            return Err(invalid(
                self.archive,
                format!("{} must be a regular file", entry.name),
            ));
        }
        let mut out = File::create_new(path).map_err(|e| MicrosandboxError::io(path, e))?;
        let mut hasher = Sha256::new();
        let mut left = entry.stored;
        while left > 0 {
            let n = left.min(self.buf.len() as u64) as usize;
            tar.read_data(&mut self.buf[..n])
                .map_err(stream_error(self.archive))?;
            hasher.update(&self.buf[..n]);
            out.write_all(&self.buf[..n])
                .map_err(|e| MicrosandboxError::io(path, e))?;
            left -= n as u64;
        }
        out.sync_all().map_err(|e| MicrosandboxError::io(path, e))?;
        Ok(crate::digest::prefixed_sha256(&hasher.finalize()))
    }

    /// The image staging directory, made on first use.
    fn image_staging(&mut self) -> MicrosandboxResult<&StagedImageFiles> {
        if self.image_staging.is_none() {
            self.created.create(&image::staging_root(self.home))?;
            self.image_staging = Some(StagedImageFiles::new(self.home)?);
        }
        Ok(self.image_staging.as_ref().expect("just made"))
    }

    fn check_complete(&self, index: &ArchiveIndex) -> MicrosandboxResult<()> {
        for snap in &index.snapshots {
            let hex = hex_of(&snap.digest);
            if !self.uppers.contains(hex) {
                return Err(invalid(
                    self.archive,
                    format!(
                        "snapshot {} ({}) is listed but its manifest or upper is missing",
                        snap.name, snap.digest
                    ),
                ));
            }
        }
        if let Some(image) = &index.image {
            if let Some(missing) = image.blobs.iter().find(|d| !self.blobs.contains(*d)) {
                return Err(invalid(
                    self.archive,
                    format!("image blob {missing} is listed but missing"),
                ));
            }
            if !self.lower {
                return Err(invalid(
                    self.archive,
                    "the image's root disk is listed but missing",
                ));
            }
        }
        Ok(())
    }
}

/// Move everything staged into place: image files first (harmless if a
/// later step fails: content-addressed and unreferenced), then the
/// artifacts (rolled back together on failure), then the index.
fn publish(
    home: &MsbHome,
    index: &ArchiveIndex,
    staging: &Path,
    image_staging: Option<StagedImageFiles>,
    dest_root: &Path,
) -> MicrosandboxResult<SnapshotHandle> {
    // The artifacts and their rows appear together (see `NamesLock`).
    let _names = index::NamesLock::take(home)?;
    let mut targets = Vec::new();
    for snap in &index.snapshots {
        let target = dest_root.join(&snap.name);
        let present = match fs::symlink_metadata(&target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(MicrosandboxError::io(&target, e)),
            Ok(_) => match Snapshot::open_dir(&target) {
                Ok(existing) if existing.digest() == snap.digest => true,
                _ => return Err(MicrosandboxError::SnapshotAlreadyExists { path: target }),
            },
        };
        targets.push((snap, target, present));
    }
    if let (Some(image), Some(staged)) = (&index.image, image_staging) {
        let imported = ImportedImage {
            reference: &image.reference,
            manifest_digest: &image.manifest_digest,
            config_digest: &image.config_digest,
            blobs: &image.blobs,
            lower_digest: &image.lower_digest,
        };
        staged.publish(home, &imported)?;
    }
    let mut placed: Vec<&Path> = Vec::new();
    for (snap, target, present) in &targets {
        if *present {
            continue;
        }
        let from = staging.join(hex_of(&snap.digest));
        if let Err(e) = publish::rename_noreplace(&from, target) {
            for done in &placed {
                let _ = fs::remove_dir_all(done);
            }
            return Err(if e.kind() == io::ErrorKind::AlreadyExists {
                MicrosandboxError::SnapshotAlreadyExists {
                    path: target.clone(),
                }
            } else {
                MicrosandboxError::io(target, e)
            });
        }
        placed.push(target);
    }
    sync_dir(dest_root)?;
    let snaps = targets
        .iter()
        .map(|(_, target, _)| Snapshot::open_dir(target))
        .collect::<MicrosandboxResult<Vec<_>>>()?;
    index::record_all(home, &snaps)?;
    let head = &targets.last().expect("checked: at least one snapshot").1;
    index::get(home, &head.to_string_lossy())
}

/// Directories an import created, removed again (if still empty) unless the
/// import succeeds: a failed import leaves no trace.
#[derive(Default)]
struct CreatedDirs {
    dirs: Vec<PathBuf>,
    keep: bool,
}

impl CreatedDirs {
    fn create(&mut self, dir: &Path) -> MicrosandboxResult<()> {
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
            missing.push(path.to_path_buf());
            at = path.parent();
        }
        for path in missing.into_iter().rev() {
            match fs::create_dir(&path) {
                Ok(()) => self.dirs.push(path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(MicrosandboxError::io(&path, e)),
            }
        }
        Ok(())
    }

    fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        if !self.keep {
            for dir in self.dirs.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
        }
    }
}
