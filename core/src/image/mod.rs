//! OCI images: loading image archives into the content-addressed store under
//! `MSB_HOME/images`, and the read-only root disk (EROFS) built once per
//! manifest digest that every sandbox of the image boots from. The blob store
//! and the built lowers are the truth; the `images` table maps references to
//! them.
//!
//! ```text
//! images/blobs/sha256/<hex>     manifests, configs, layers (checked digests)
//! images/lower/<hex>.erofs      root disk of the image with that manifest digest
//! images/lower/imported-<hex>.erofs  root disk that came in a snapshot archive
//! images/tmp/                   staging; nothing here is ever read back
//! images/.lock                  the store's lock (see [`lock`])
//! ```
//!
//! This layout is private: other modules ask for paths ([`blob_path`],
//! [`lower_path`]), bundles ([`bundle`]) and staging ([`StagedImageFiles`]).
//!
//! Images leave the store by [`Image::save`] (an OCI archive, see [`save`])
//! and [`Image::remove`] (rows first, then a sweep of what nothing names,
//! see [`remove`]). Whatever adds files to the store holds the store's
//! lock shared until its row is written; a remove holds it exclusive (the
//! rule is in [`lock`]).

mod archive;

pub(crate) use archive::ZSTD_MAGIC;
use archive::sha256_file;
pub mod busybox;
pub(crate) mod layers;
mod lock;
mod remove;
mod save;

pub(crate) use lock::StoreLock;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

use crate::control::{CallOpts, Control, ProgressTracker};
use crate::db;
use crate::digest::sha256_hex;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::progress::ProgressPhase;
use crate::publish;

/// A loaded image, ready to boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageInfo {
    /// The reference it was loaded under (e.g. `local/busybox:latest`).
    pub reference: String,
    /// Digest of its OCI manifest: what snapshots pin.
    pub manifest_digest: String,
    /// Digest of its config blob.
    pub config_digest: String,
    /// The built read-only root disk.
    pub lower_path: PathBuf,
    /// Default environment of processes (`KEY=VALUE`), from the config.
    pub env: Vec<String>,
    /// Default working directory, from the config.
    pub working_dir: String,
    /// When it was loaded or pulled (RFC 3339).
    pub loaded_at: String,
    /// The registry reference it was pulled from (`None`: loaded from a
    /// local archive or imported with a snapshot).
    pub origin: Option<String>,
}

/// Entry points for images.
pub struct Image;

impl Image {
    /// Load an OCI layout tar or `docker save` tar and build its root disk.
    /// `reference` names it; without one the archive's own name is used.
    /// A cancelled load stops between layers and leaves nothing behind.
    pub async fn load(
        archive: impl Into<PathBuf>,
        reference: Option<String>,
    ) -> MicrosandboxResult<ImageInfo> {
        Self::load_with(archive, reference, CallOpts::default()).await
    }

    /// [`load`](Self::load), obeying `call.cancel`.
    pub async fn load_with(
        archive: impl Into<PathBuf>,
        reference: Option<String>,
        call: CallOpts,
    ) -> MicrosandboxResult<ImageInfo> {
        let archive = archive.into();
        let home = MsbHome::resolve()?;
        crate::control::long_call(call, move |control| {
            load_blocking(&home, &archive, reference.as_deref(), control)
        })
        .await
    }

    /// The image with this reference or manifest digest (`ImageNotFound` otherwise).
    pub async fn get(reference_or_digest: impl Into<String>) -> MicrosandboxResult<ImageInfo> {
        let wanted = reference_or_digest.into();
        let home = MsbHome::resolve()?;
        crate::control::blocking(move || get_blocking(&home, &wanted)).await
    }

    /// Every loaded image, by reference.
    pub async fn list() -> MicrosandboxResult<Vec<ImageInfo>> {
        let home = MsbHome::resolve()?;
        crate::control::blocking(move || list_blocking(&home)).await
    }

    /// Write `reference_or_digest` as an OCI image layout archive (tar) at
    /// `out`: `oci-layout`, `index.json` naming the image by its reference
    /// (`org.opencontainers.image.ref.name`), and its blobs exactly as
    /// stored, so the manifest digest is the same wherever it is loaded.
    /// `out` is replaced if it exists (as `docker save -o` does) and is
    /// written atomically: on any error or cancel it is left as it was.
    ///
    /// Errors: `ImageNotFound` (no such image, or its blobs are not in the
    /// store), `InvalidConfig` (`out` is a directory), `Io`, `Cancelled`.
    pub async fn save(
        reference_or_digest: impl Into<String>,
        out: impl Into<PathBuf>,
    ) -> MicrosandboxResult<()> {
        Self::save_with(reference_or_digest, out, CallOpts::default()).await
    }

    /// [`save`](Self::save), reporting `Export` progress (bytes of blobs
    /// written) and obeying `call.cancel`.
    pub async fn save_with(
        reference_or_digest: impl Into<String>,
        out: impl Into<PathBuf>,
        call: CallOpts,
    ) -> MicrosandboxResult<()> {
        let (wanted, out) = (reference_or_digest.into(), out.into());
        let home = MsbHome::resolve()?;
        crate::control::long_call(call, move |control| {
            save::save_blocking(&home, &wanted, &out, control)
        })
        .await
    }

    /// Remove the image's row (a reference: that one; a manifest digest:
    /// every reference to it), then every blob and root disk no other
    /// image (and no snapshot or sandbox) uses.
    ///
    /// Errors: `ImageNotFound`, `ImageInUse` (a snapshot pins it or a
    /// sandbox was created from it, and no other reference keeps it; the
    /// message names them), `Io`.
    pub async fn remove(reference_or_digest: impl Into<String>) -> MicrosandboxResult<()> {
        let wanted = reference_or_digest.into();
        let home = MsbHome::resolve()?;
        crate::control::blocking(move || remove::remove_blocking(&home, &wanted)).await
    }

    /// Write a tiny busybox OCI archive (see [`busybox`]) to `out`.
    pub async fn build_busybox(
        busybox: impl Into<PathBuf>,
        reference: impl Into<String>,
        out: impl Into<PathBuf>,
    ) -> MicrosandboxResult<()> {
        let (busybox, reference, out) = (busybox.into(), reference.into(), out.into());
        crate::control::blocking(move || busybox::build_busybox_archive(&busybox, &reference, &out))
            .await
    }
}

pub(crate) fn load_blocking(
    home: &MsbHome,
    archive: &Path,
    reference: Option<&str>,
    control: &Control,
) -> MicrosandboxResult<ImageInfo> {
    let tmp = staging_dir(home, "load")?;
    // Blobs go into the store before the row is written (see `lock`).
    let _store = StoreLock::shared(home)?;
    let blobs = blobs_dir(home);
    let staged = archive::stage(archive, &tmp.path().join("stage"), &blobs)?;
    let reference = reference
        .map(str::to_string)
        .or(staged.reference_hint.clone())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            MicrosandboxError::InvalidConfig(format!(
                "{} does not name its image; give it a reference (msb image load --tag NAME)",
                archive.display()
            ))
        })?;
    let layer_blobs: Vec<PathBuf> = staged
        .layer_digests
        .iter()
        .map(|layer| blobs.join(&layer[7..]))
        .collect();
    let lower = build_lower(
        home,
        tmp.path(),
        &staged.manifest_digest,
        &layer_blobs,
        control,
    )?;
    register(
        home,
        &NewImage {
            reference: &reference,
            manifest_digest: &staged.manifest_digest,
            config_digest: &staged.config_digest,
            lower: &lower,
            origin: None,
        },
    )
}

/// Build the root disk of the image with `manifest_digest` from its layer
/// blobs (bottom first) in `tmp`, unless one is already built, and publish
/// it. Reports `Load` progress (bytes of layers applied).
pub(crate) fn build_lower(
    home: &MsbHome,
    tmp: &Path,
    manifest_digest: &str,
    layer_blobs: &[PathBuf],
    control: &Control,
) -> MicrosandboxResult<PathBuf> {
    let lower = lower_path(home, manifest_digest);
    let blob_size = |blob: &PathBuf| fs::metadata(blob).map(|m| m.len()).unwrap_or(0);
    let tracker = ProgressTracker::new(
        control,
        ProgressPhase::Load,
        layer_blobs.iter().map(blob_size).sum(),
    );
    if !lower.is_file() {
        let rootfs = tmp.join("rootfs");
        fs::create_dir_all(&rootfs).map_err(|e| MicrosandboxError::io(&rootfs, e))?;
        let mut dir_times = layers::DirTimes::default();
        for blob in layer_blobs {
            control.check()?;
            layers::apply_layer(blob, &rootfs, &mut dir_times)?;
            tracker
                .advance(blob_size(blob))
                .map_err(|e| MicrosandboxError::io(blob, e))?;
        }
        layers::settle_dir_times(&rootfs, &dir_times)?;
        control.check()?;
        let built = tmp.join("lower.erofs");
        make_erofs(&rootfs, &built, manifest_digest)?;
        control.check()?;
        let dir = home.images_dir().join("lower");
        fs::create_dir_all(&dir).map_err(|e| MicrosandboxError::io(&dir, e))?;
        // Named by the manifest digest: a concurrent load built the same disk.
        publish::place_if_absent(&built, &lower)?;
    }
    control.check()?;
    tracker.finish();
    Ok(lower)
}

/// An image whose blobs are in the store and whose root disk is built,
/// to be registered under a reference.
pub(crate) struct NewImage<'a> {
    pub reference: &'a str,
    pub manifest_digest: &'a str,
    pub config_digest: &'a str,
    pub lower: &'a Path,
    /// Where it came from (a registry reference); `None` for a local load.
    pub origin: Option<&'a str>,
}

/// Point `image.reference` at the image (replacing what it named before).
pub(crate) fn register(home: &MsbHome, image: &NewImage) -> MicrosandboxResult<ImageInfo> {
    let loaded_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let conn = db::open(home)?;
    conn.execute(
        "INSERT INTO images (reference, manifest_digest, config_digest, lower_path, loaded_at, origin)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(reference) DO UPDATE SET manifest_digest = ?2, config_digest = ?3, lower_path = ?4, loaded_at = ?5, origin = ?6",
        params![
            image.reference,
            image.manifest_digest,
            image.config_digest,
            image.lower.to_string_lossy(),
            loaded_at,
            image.origin
        ],
    )
    .map_err(|e| db::db_error(&db::db_path(home), e))?;
    get_blocking(home, image.reference)
}

pub(crate) fn get_blocking(home: &MsbHome, wanted: &str) -> MicrosandboxResult<ImageInfo> {
    let conn = db::open(home)?;
    let row = conn
        .query_row(
            "SELECT reference, manifest_digest, config_digest, lower_path, loaded_at, origin FROM images
             WHERE reference = ?1 OR manifest_digest = ?1 ORDER BY reference = ?1 DESC LIMIT 1",
            params![wanted],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            },
        )
        .optional()
        .map_err(|e| db::db_error(&db::db_path(home), e))?;
    let not_found = || MicrosandboxError::ImageNotFound {
        reference: format!(
            "{wanted} (pull it with `msb pull` or load it with `msb image load <archive>`)"
        ),
    };
    let (reference, manifest_digest, config_digest, lower, loaded_at, origin) =
        row.ok_or_else(not_found)?;
    let lower_path = PathBuf::from(lower);
    if !lower_path.is_file() {
        return Err(not_found());
    }
    let config = read_config(home, &config_digest);
    Ok(ImageInfo {
        reference,
        manifest_digest,
        config_digest,
        lower_path,
        env: config.env,
        working_dir: config.working_dir,
        loaded_at,
        origin,
    })
}

fn list_blocking(home: &MsbHome) -> MicrosandboxResult<Vec<ImageInfo>> {
    let conn = db::open(home)?;
    let mut stmt = conn
        .prepare("SELECT reference FROM images ORDER BY reference")
        .map_err(|e| db::db_error(&db::db_path(home), e))?;
    let refs: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| db::db_error(&db::db_path(home), e))?;
    Ok(refs
        .iter()
        .filter_map(|r| get_blocking(home, r).ok())
        .collect())
}

/// The directory of the blob store (`images/blobs/sha256`).
pub(crate) fn blobs_dir(home: &MsbHome) -> PathBuf {
    home.images_dir().join("blobs/sha256")
}

/// Path of the blob with `digest` in the store.
pub(crate) fn blob_path(home: &MsbHome, digest: &str) -> PathBuf {
    blobs_dir(home).join(sha256_hex(digest))
}

/// Where staging directories of the store live (`images/tmp`): nothing
/// there is ever read back.
pub(crate) fn staging_root(home: &MsbHome) -> PathBuf {
    home.images_dir().join("tmp")
}

/// A new staging directory `images/tmp/<purpose>-<pid>-<random>`, deleted
/// on drop. Staging of processes that died (killed) is deleted first.
pub(crate) fn staging_dir(home: &MsbHome, purpose: &str) -> MicrosandboxResult<TempDir> {
    let root = staging_root(home);
    fs::create_dir_all(&root).map_err(|e| MicrosandboxError::io(&root, e))?;
    // The pid is the first all-digit part (purposes have dashes too).
    publish::remove_abandoned(&root, |name| {
        name.split('-')
            .find(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    });
    tempfile::Builder::new()
        .prefix(&format!("{purpose}-{}-", std::process::id()))
        .tempdir_in(&root)
        .map_err(|e| MicrosandboxError::io(&root, e))
}

/// Every blob of the loaded image with `manifest_digest`: its manifest,
/// config and layers.
pub(crate) fn blob_digests(
    home: &MsbHome,
    manifest_digest: &str,
) -> MicrosandboxResult<Vec<String>> {
    let path = blob_path(home, manifest_digest);
    archive::image_blob_digests(&path, &path, manifest_digest).map_err(|e| {
        let reason = match e {
            MicrosandboxError::ArchiveInvalid { reason, .. } => reason,
            other => other.to_string(),
        };
        MicrosandboxError::ImageNotFound {
            reference: format!("{manifest_digest} (its manifest blob is unreadable: {reason})"),
        }
    })
}

/// Make an image that arrived inside a snapshot archive bootable: a row
/// under `reference`, unless that reference already names a local image (a
/// local image is never replaced by an imported one), in which case the
/// row goes under the manifest digest itself.
fn register_imported(
    home: &MsbHome,
    reference: &str,
    manifest_digest: &str,
    config_digest: &str,
    lower: &Path,
) -> MicrosandboxResult<()> {
    let conn = db::open(home)?;
    let taken: Option<String> = conn
        .query_row(
            "SELECT manifest_digest FROM images WHERE reference = ?1",
            params![reference],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| db::db_error(&db::db_path(home), e))?;
    let reference = match taken {
        None => reference,
        Some(digest) if digest == manifest_digest => return Ok(()),
        Some(_) => manifest_digest,
    };
    let loaded_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    conn.execute(
        "INSERT INTO images (reference, manifest_digest, config_digest, lower_path, loaded_at)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(reference) DO NOTHING",
        params![
            reference,
            manifest_digest,
            config_digest,
            lower.to_string_lossy(),
            loaded_at
        ],
    )
    .map_err(|e| db::db_error(&db::db_path(home), e))?;
    Ok(())
}

/// Where the root disk of the image with `manifest_digest` lives.
pub(crate) fn lower_path(home: &MsbHome, manifest_digest: &str) -> PathBuf {
    let hex = sha256_hex(manifest_digest);
    home.images_dir().join("lower").join(format!("{hex}.erofs"))
}

/// Where a root disk that arrived in a snapshot archive is kept: by its own
/// digest, apart from the ones this machine built.
fn imported_lower_path(home: &MsbHome, lower_digest: &str) -> PathBuf {
    let hex = sha256_hex(lower_digest);
    home.images_dir()
        .join("lower")
        .join(format!("imported-{hex}.erofs"))
}

/// A blob of the store.
pub(crate) struct StoredBlob {
    /// Its digest (`sha256:<hex>`).
    pub digest: String,
    /// Where it is, under `images/blobs/sha256`.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// Every blob of the image with `manifest_digest` (the manifest first, then
/// the config and the layers), each present in the store. An image whose
/// blobs are not all here (one that came in with only its root disk) is
/// `ImageNotFound`, naming the blob.
pub(crate) fn stored_blobs(
    home: &MsbHome,
    manifest_digest: &str,
) -> MicrosandboxResult<Vec<StoredBlob>> {
    let missing = |digest: &str| MicrosandboxError::ImageNotFound {
        reference: format!(
            "{manifest_digest}: its blob {digest} is not in the store (only its root disk is \
             here: the blob was never stored or was deleted); load or pull the image again"
        ),
    };
    if !blob_path(home, manifest_digest).is_file() {
        return Err(missing(manifest_digest));
    }
    blob_digests(home, manifest_digest)?
        .into_iter()
        .map(|digest| {
            let path = blob_path(home, &digest);
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => Ok(StoredBlob {
                    size: meta.len(),
                    digest,
                    path,
                }),
                Ok(_) => Err(missing(&digest)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing(&digest)),
                Err(e) => Err(MicrosandboxError::io(&path, e)),
            }
        })
        .collect()
}

/// The files of a loaded image, for bundling into a snapshot archive.
pub(crate) struct ImageBundle {
    /// The image.
    pub info: ImageInfo,
    /// Every blob (manifest, config, layers): digest, path in the store, size.
    pub blobs: Vec<(String, PathBuf, u64)>,
    /// sha256 of the built root disk (which has no digest of its own).
    pub lower_digest: String,
    /// Size of the built root disk.
    pub lower_size: u64,
}

/// The files of the loaded image with `manifest_digest`.
pub(crate) fn bundle(home: &MsbHome, manifest_digest: &str) -> MicrosandboxResult<ImageBundle> {
    let info = get_blocking(home, manifest_digest)?;
    let blobs = stored_blobs(home, manifest_digest)?
        .into_iter()
        .map(|b| (b.digest, b.path, b.size))
        .collect();
    let (lower_digest, lower_size) =
        sha256_file(&info.lower_path).map_err(|e| MicrosandboxError::io(&info.lower_path, e))?;
    Ok(ImageBundle {
        info,
        blobs,
        lower_digest,
        lower_size,
    })
}

/// Image files being received (from a snapshot archive) into a staging
/// directory of the store: each blob at [`blob_path`](Self::blob_path), the
/// root disk at [`lower_path`](Self::lower_path). Dropped unpublished, they
/// are deleted.
pub(crate) struct StagedImageFiles {
    dir: TempDir,
}

/// What an imported image claims to be; its files were checked against
/// these digests while they were staged.
pub(crate) struct ImportedImage<'a> {
    pub reference: &'a str,
    pub manifest_digest: &'a str,
    pub config_digest: &'a str,
    pub blobs: &'a [String],
    pub lower_digest: &'a str,
}

impl StagedImageFiles {
    /// A new staging directory under [`staging_root`].
    pub(crate) fn new(home: &MsbHome) -> MicrosandboxResult<Self> {
        Ok(Self {
            dir: staging_dir(home, "import")?,
        })
    }

    /// Where the blob with `digest` is staged.
    pub(crate) fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.path().join(sha256_hex(digest))
    }

    /// Where the root disk is staged.
    pub(crate) fn lower_path(&self) -> PathBuf {
        self.dir.path().join("lower.erofs")
    }

    /// Move the staged files into the store and register the image. Blobs
    /// are content-addressed (an existing one is kept). A root disk this
    /// machine built itself is never replaced; an imported one is stored by
    /// its own digest, apart from built ones, so a later load of the image
    /// still builds (and trusts) its own.
    pub(crate) fn publish(self, home: &MsbHome, image: &ImportedImage) -> MicrosandboxResult<()> {
        let _store = StoreLock::shared(home)?;
        let blobs = blobs_dir(home);
        fs::create_dir_all(&blobs).map_err(|e| MicrosandboxError::io(&blobs, e))?;
        for digest in image.blobs {
            publish::place_if_absent(&self.blob_path(digest), &blob_path(home, digest))?;
        }
        let built = lower_path(home, image.manifest_digest);
        let lower = if built.is_file() {
            built
        } else {
            let to = imported_lower_path(home, image.lower_digest);
            if let Some(dir) = to.parent() {
                fs::create_dir_all(dir).map_err(|e| MicrosandboxError::io(dir, e))?;
            }
            publish::place_if_absent(&self.lower_path(), &to)?;
            to
        };
        register_imported(
            home,
            image.reference,
            image.manifest_digest,
            image.config_digest,
            &lower,
        )
    }
}

struct RuntimeConfig {
    env: Vec<String>,
    working_dir: String,
}

fn read_config(home: &MsbHome, config_digest: &str) -> RuntimeConfig {
    #[derive(Deserialize, Default)]
    struct Inner {
        #[serde(rename = "Env", default)]
        env: Option<Vec<String>>,
        #[serde(rename = "WorkingDir", default)]
        working_dir: Option<String>,
    }
    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        config: Option<Inner>,
    }
    let path = blob_path(home, config_digest);
    let inner = fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Config>(&b).ok())
        .and_then(|c| c.config)
        .unwrap_or_default();
    RuntimeConfig {
        env: inner.env.unwrap_or_default(),
        working_dir: inner
            .working_dir
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
    }
}

/// Offset of the EROFS superblock, and of its build time (seconds, u64,
/// then nanoseconds, u32) inside it.
const EROFS_SUPERBLOCK: u64 = 1024;
const EROFS_MAGIC: u32 = 0xE0F5_E1E2;
const EROFS_BUILD_TIME: u64 = EROFS_SUPERBLOCK + 24;

/// Build an uncompressed EROFS image of `rootfs` at `out` with
/// `mkfs.erofs`, the same bytes on every machine for the same tree: a
/// full-VM snapshot's page cache holds blocks of the root disk, so a root
/// disk rebuilt elsewhere (an image pulled again from a registry) must not
/// differ from the one it was captured over. Three things of mkfs.erofs
/// vary between runs: the filesystem UUID (given: derived from
/// `manifest_digest`), the superblock's build time, and the superblock
/// checksum over it. Every inode is written extended, so each keeps its
/// own mtime and none borrows the build time; the checksum is left out
/// (`nosbcrc`) and the build time is then zeroed in place, which
/// mkfs.erofs 1.5 cannot do without also forcing every file's time.
fn make_erofs(rootfs: &Path, out: &Path, manifest_digest: &str) -> MicrosandboxResult<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let hex = sha256_hex(manifest_digest);
    let uuid = format!(
        "-U{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    crate::tools::run_tool(
        "mkfs.erofs",
        [
            OsStr::new("--quiet"),
            OsStr::new(&uuid),
            OsStr::new("-Enosbcrc,force-inode-extended"),
            out.as_os_str(),
            rootfs.as_os_str(),
        ],
        "erofs-utils",
    )?;
    let io = |e| MicrosandboxError::io(out, e);
    let mut disk = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(out)
        .map_err(io)?;
    let mut magic = [0u8; 4];
    disk.seek(SeekFrom::Start(EROFS_SUPERBLOCK)).map_err(io)?;
    disk.read_exact(&mut magic).map_err(io)?;
    if u32::from_le_bytes(magic) != EROFS_MAGIC {
        return Err(MicrosandboxError::Runtime(format!(
            "mkfs.erofs wrote {} without an EROFS superblock",
            out.display()
        )));
    }
    disk.seek(SeekFrom::Start(EROFS_BUILD_TIME)).map_err(io)?;
    disk.write_all(&[0u8; 12]).map_err(io)
}
