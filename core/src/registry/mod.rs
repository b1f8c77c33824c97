//! Pulling images from OCI registries into the image store, pushing them
//! back ([`push`]), and the pieces snapshots travel with: a [`session`]
//! with one repository and our own OCI artifacts ([`artifact`]).
//!
//! A pull resolves a Docker-style reference (`python` →
//! `docker.io/library/python:latest`), fetches its manifest (an OCI or
//! Docker v2 manifest; from an index or manifest list, the linux/amd64
//! entry), then the blobs the store lacks, concurrently. Everything a
//! registry sends is hostile until checked: manifests have a size limit,
//! digests must be sha256, and every blob streams into the store's staging
//! directory while it is hashed; only when all of them match their digests
//! is the root disk built (the same code as [`Image::load`]) and the blobs
//! moved into the content-addressed store. A failed pull leaves no blob, no
//! root disk and no image row. The wire protocol is `oci-client`'s (see
//! [`transport`] for why).

mod artifact;
mod push;
mod session;
mod transport;

pub(crate) use artifact::{
    ArtifactLayer, EMPTY_CONFIG, OCI_MANIFEST, artifact_manifest, parse_artifact, sha256_of,
};
pub(crate) use push::{push_image, pushable_blobs};
pub(crate) use session::Session;

use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::Reference;
use oci_client::manifest::OciDescriptor;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::control::{CallOpts, Control, ProgressTracker};
use crate::digest::is_sha256_digest;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::image::{self, Image, ImageInfo, NewImage};
use crate::progress::ProgressPhase;
use crate::publish;
use transport::{Connection, after_tls_failure, error_chain, is_transport, registry_error};

/// The largest manifest or index accepted, as containerd does: real ones
/// are a few KiB, and a manifest is read whole into memory.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Blobs downloaded at once.
const CONCURRENT_DOWNLOADS: usize = 4;

/// Manifest media types asked for: images and the indexes that list them.
const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

impl Image {
    /// Pull `reference` (Docker-style: `python`, `ghcr.io/o/app:1`,
    /// `host:5000/app@sha256:…`) from its registry and build its root disk.
    /// The image is registered under the normalised reference (see
    /// [`normalise_reference`]), with that reference as its
    /// [`origin`](ImageInfo::origin). Blobs already in the store are not
    /// fetched again; pulling an image that is present with the same
    /// manifest downloads nothing.
    ///
    /// Errors: `ImageNotFound` (the registry does not have it),
    /// `Registry` (connection, credentials, a blob that does not match its
    /// digest, a manifest over [`MAX_MANIFEST_BYTES`]), `InvalidConfig` (a
    /// malformed reference), `Cancelled`.
    pub async fn pull(reference: impl Into<String>) -> MicrosandboxResult<ImageInfo> {
        Self::pull_with(reference, CallOpts::default()).await
    }

    /// [`pull`](Self::pull), reporting `Pull` progress (bytes of blobs
    /// downloaded) then `Load` progress (layers applied), and obeying
    /// `call.cancel`.
    pub async fn pull_with(
        reference: impl Into<String>,
        call: CallOpts,
    ) -> MicrosandboxResult<ImageInfo> {
        let reference = reference.into();
        let home = MsbHome::resolve()?;
        crate::control::long_call(call, move |control| {
            pull_blocking(&home, &reference, control)
        })
        .await
    }
}

/// The full form of a Docker-style reference: registry, repository, and a
/// tag (`latest` when none) or digest. `python` →
/// `docker.io/library/python:latest`.
pub fn normalise_reference(reference: &str) -> MicrosandboxResult<String> {
    parse_reference(reference).map(|r| r.whole())
}

pub(crate) fn parse_reference(reference: &str) -> MicrosandboxResult<Reference> {
    reference.parse::<Reference>().map_err(|e| {
        MicrosandboxError::InvalidConfig(format!("'{reference}' is not an image reference: {e}"))
    })
}

/// The image a sandbox asked for by `reference`: the one present under
/// that name or its normalised form, else (when implicit pulls are on and
/// the reference parses) pulled.
pub(crate) fn get_or_pull(
    home: &MsbHome,
    reference: &str,
    control: &Control,
) -> MicrosandboxResult<ImageInfo> {
    let missing = match image::get_blocking(home, reference) {
        Err(e @ MicrosandboxError::ImageNotFound { .. }) => e,
        found => return found,
    };
    let Ok(parsed) = parse_reference(reference) else {
        return Err(missing);
    };
    match image::get_blocking(home, &parsed.whole()) {
        Err(MicrosandboxError::ImageNotFound { .. }) if home.registry().implicit_pull => {
            pull_blocking(home, reference, &control.without_progress())
        }
        Err(MicrosandboxError::ImageNotFound { .. }) => Err(missing),
        found => found,
    }
}

/// Pull `reference` on this (blocking) thread: the network part runs on
/// the caller's Tokio runtime, or on a small one of its own.
pub(crate) fn pull_blocking(
    home: &MsbHome,
    reference: &str,
    control: &Control,
) -> MicrosandboxResult<ImageInfo> {
    let parsed = parse_reference(reference)?;
    run_async(pull_async(home, &parsed, control))
}

/// Run registry I/O from a blocking thread: on the caller's Tokio runtime,
/// or on a small one of its own.
pub(crate) fn run_async<T>(
    work: impl std::future::Future<Output = MicrosandboxResult<T>>,
) -> MicrosandboxResult<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(work),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| MicrosandboxError::Runtime(format!("cannot start an I/O runtime: {e}")))?
            .block_on(work),
    }
}

/// A connection to `reference`'s registry and the manifest it names (raw,
/// with its digest): over TLS, or over plain HTTP for an insecure host
/// whose TLS attempt failed (as Docker does; if both fail, both reasons are
/// told).
async fn connect_and_fetch_manifest(
    home: &MsbHome,
    reference: &Reference,
) -> MicrosandboxResult<(Connection, Vec<u8>, String)> {
    let settings = home.registry();
    let conn = Connection::open(settings, reference)?;
    match fetch_manifest(&conn, reference).await {
        Ok((bytes, digest)) => Ok((conn, bytes, digest)),
        Err(tls) if conn.insecure && is_transport(&tls) => {
            let conn = conn.over_http(settings, reference)?;
            let (bytes, digest) = fetch_manifest(&conn, reference)
                .await
                .map_err(|e| after_tls_failure(registry_error(reference, &e), &tls))?;
            Ok((conn, bytes, digest))
        }
        Err(e) => Err(registry_error(reference, &e)),
    }
}

/// A manifest as far as a pull needs it (OCI and Docker v2 share it).
#[derive(Deserialize)]
struct ImageManifest {
    config: Blob,
    layers: Vec<Blob>,
}

/// A blob a manifest names.
#[derive(Debug, Deserialize, Clone)]
pub(crate) struct Blob {
    pub digest: String,
    pub size: u64,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
}

/// Pull `reference` into the store (the async body of [`Image::pull`]).
pub(crate) async fn pull_async(
    home: &MsbHome,
    reference: &Reference,
    control: &Control,
) -> MicrosandboxResult<ImageInfo> {
    let whole = reference.whole();
    let bad = |reason: String| MicrosandboxError::Registry {
        reference: whole.clone(),
        reason,
    };
    let (conn, manifest_bytes, manifest_digest) =
        connect_and_fetch_manifest(home, reference).await?;
    let (manifest_bytes, manifest_digest) = match platform_manifest(&manifest_bytes)
        .map_err(&bad)?
    {
        None => (manifest_bytes, manifest_digest),
        Some(entry) => {
            if entry.size > MAX_MANIFEST_BYTES as u64 {
                return Err(bad(format!(
                    "the linux/amd64 manifest is {} bytes, over the {MAX_MANIFEST_BYTES}-byte limit",
                    entry.size
                )));
            }
            let by_digest = reference.clone_with_digest(entry.digest.clone());
            fetch_manifest(&conn, &by_digest)
                .await
                .map_err(|e| registry_error(reference, &e))?
        }
    };
    if manifest_bytes.len() > MAX_MANIFEST_BYTES {
        return Err(bad(format!(
            "its manifest is {} bytes, over the {MAX_MANIFEST_BYTES}-byte limit",
            manifest_bytes.len()
        )));
    }
    check_manifest_digest(&manifest_bytes, &manifest_digest).map_err(&bad)?;
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| bad(format!("its manifest is not an image manifest: {e}")))?;
    let blobs: Vec<Blob> = std::iter::once(manifest.config.clone())
        .chain(manifest.layers.iter().cloned())
        .collect();
    if let Some(blob) = blobs.iter().find(|b| !is_sha256_digest(&b.digest)) {
        return Err(bad(format!(
            "its manifest names blob '{}', not a sha256 digest",
            blob.digest
        )));
    }
    if let Some(layer) = manifest
        .layers
        .iter()
        .find(|l| !is_layer_media_type(&l.media_type))
    {
        return Err(bad(format!(
            "layer {} has media type '{}', not a (gzip/zstd) tar layer",
            layer.digest, layer.media_type
        )));
    }

    // Present already, same manifest: nothing to download.
    if let Ok(present) = image::get_blocking(home, &whole)
        && present.manifest_digest == manifest_digest
    {
        return Ok(present);
    }

    let staging = image::staging_dir(home, "pull")?;
    // Held until the row is written: a remove must not sweep a blob this
    // pull found present and will not download.
    let _store = image::StoreLock::shared(home)?;
    let staged = |digest: &str| staging.path().join(crate::digest::sha256_hex(digest));
    let missing: Vec<Blob> = {
        let mut seen = std::collections::HashSet::new();
        blobs
            .iter()
            .filter(|b| seen.insert(b.digest.clone()))
            .filter(|b| !image::blob_path(home, &b.digest).is_file())
            .cloned()
            .collect()
    };
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    let tracker = ProgressTracker::new(control, ProgressPhase::Pull, total);
    let present_bytes = total - missing.iter().map(|b| b.size).sum::<u64>();
    tracker
        .advance(present_bytes)
        .map_err(|e| MicrosandboxError::io(staging.path(), e))?;
    futures_util::stream::iter(missing.iter().map(|blob| {
        let dest = staged(&blob.digest);
        let (conn, tracker) = (&conn, &tracker);
        async move { download_blob(conn, reference, blob, &dest, tracker, control).await }
    }))
    .buffer_unordered(CONCURRENT_DOWNLOADS)
    .try_collect::<Vec<()>>()
    .await?;
    tracker.finish();

    let manifest_file = staged(&manifest_digest);
    fs::write(&manifest_file, &manifest_bytes)
        .map_err(|e| MicrosandboxError::io(&manifest_file, e))?;
    let blob_file = |digest: &str| {
        let staged = staged(digest);
        if staged.is_file() {
            staged
        } else {
            image::blob_path(home, digest)
        }
    };
    let layer_files: Vec<PathBuf> = manifest
        .layers
        .iter()
        .map(|l| blob_file(&l.digest))
        .collect();
    let lower = image::build_lower(
        home,
        staging.path(),
        &manifest_digest,
        &layer_files,
        control,
    )?;
    control.check()?;
    for digest in std::iter::once(&manifest_digest).chain(missing.iter().map(|b| &b.digest)) {
        let to = image::blob_path(home, digest);
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir).map_err(|e| MicrosandboxError::io(dir, e))?;
        }
        publish::place_if_absent(&staged(digest), &to)?;
    }
    image::register(
        home,
        &NewImage {
            reference: &whole,
            manifest_digest: &manifest_digest,
            config_digest: &manifest.config.digest,
            lower: &lower,
            origin: Some(&whole),
        },
    )
}

/// The raw manifest `reference` names and its digest, never more than
/// [`MAX_MANIFEST_BYTES`] read (the caller checks the digest).
async fn fetch_manifest(
    conn: &Connection,
    reference: &Reference,
) -> Result<(Vec<u8>, String), oci_client::errors::OciDistributionError> {
    conn.fetch_manifest(reference, MANIFEST_MEDIA_TYPES, MAX_MANIFEST_BYTES)
        .await
}

/// The digest a manifest's bytes must have.
fn check_manifest_digest(bytes: &[u8], digest: &str) -> Result<(), String> {
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    if actual == digest {
        Ok(())
    } else {
        Err(format!(
            "its manifest does not match its digest {digest} (got {actual})"
        ))
    }
}

/// For an index or manifest list, its linux/amd64 entry; `None` for an
/// image manifest.
fn platform_manifest(bytes: &[u8]) -> Result<Option<Blob>, String> {
    #[derive(Deserialize)]
    struct Index {
        manifests: Option<Vec<Entry>>,
    }
    #[derive(Deserialize)]
    struct Entry {
        digest: String,
        size: u64,
        #[serde(default)]
        platform: Option<Platform>,
    }
    #[derive(Deserialize)]
    struct Platform {
        architecture: String,
        os: String,
    }
    let index: Index =
        serde_json::from_slice(bytes).map_err(|e| format!("its manifest is not JSON: {e}"))?;
    let Some(entries) = index.manifests else {
        return Ok(None);
    };
    let entry = entries
        .into_iter()
        .find(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.architecture == "amd64" && p.os == "linux")
        })
        .ok_or_else(|| "its index has no linux/amd64 manifest".to_string())?;
    if !is_sha256_digest(&entry.digest) {
        return Err(format!(
            "its index names manifest '{}', not a sha256 digest",
            entry.digest
        ));
    }
    Ok(Some(Blob {
        digest: entry.digest,
        size: entry.size,
        media_type: String::new(),
    }))
}

/// Layer media types whose content is a tar, plain, gzip or zstd (the
/// layer code tells them apart by their first bytes).
fn is_layer_media_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// Fetch `blob` into `dest`, hashing it as it lands; retried once when the
/// connection fails before all its bytes arrived. A blob whose bytes do not
/// match its digest or size is not retried: the registry sent it.
async fn download_blob(
    conn: &Connection,
    reference: &Reference,
    blob: &Blob,
    dest: &std::path::Path,
    tracker: &ProgressTracker<'_>,
    control: &Control,
) -> MicrosandboxResult<()> {
    let mut first_failure = None;
    for _attempt in 0..2 {
        match download_once(conn, reference, blob, dest, tracker, control).await {
            Ok(()) => return Ok(()),
            Err(Attempt::Final(e)) => return Err(e),
            Err(Attempt::Transport(reason)) => {
                if first_failure.is_none() {
                    first_failure = Some(reason);
                    continue;
                }
                return Err(MicrosandboxError::Registry {
                    reference: reference.whole(),
                    reason: format!(
                        "blob {} failed twice: {} (then: {reason})",
                        blob.digest,
                        first_failure.unwrap_or_default()
                    ),
                });
            }
        }
    }
    unreachable!("the loop returns on its second attempt")
}

enum Attempt {
    /// Worth one more try: the connection failed.
    Transport(String),
    Final(MicrosandboxError),
}

async fn download_once(
    conn: &Connection,
    reference: &Reference,
    blob: &Blob,
    dest: &std::path::Path,
    tracker: &ProgressTracker<'_>,
    control: &Control,
) -> Result<(), Attempt> {
    let bad = |reason: String| {
        Attempt::Final(MicrosandboxError::Registry {
            reference: reference.whole(),
            reason,
        })
    };
    let io = |e: std::io::Error| Attempt::Final(MicrosandboxError::io(dest, e));
    control.check().map_err(Attempt::Final)?;
    let descriptor = OciDescriptor {
        digest: blob.digest.clone(),
        size: blob.size as i64,
        media_type: blob.media_type.clone(),
        ..OciDescriptor::default()
    };
    conn.client
        .store_auth_if_needed(reference.resolve_registry(), &conn.auth)
        .await;
    let mut stream = match conn.client.pull_blob_stream(reference, &descriptor).await {
        Ok(stream) => stream,
        Err(e) if is_transport(&e) => return Err(Attempt::Transport(error_chain(&e))),
        Err(e) => return Err(Attempt::Final(registry_error(reference, &e))),
    };
    let mut file = File::create(dest).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let outcome = loop {
        match stream.next().await {
            None => break Ok(()),
            Some(Err(e)) => break Err(e),
            Some(Ok(chunk)) => {
                received += chunk.len() as u64;
                if received > blob.size {
                    return Err(bad(format!(
                        "blob {} is longer than its {} bytes",
                        blob.digest, blob.size
                    )));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).map_err(io)?;
                tracker.advance(chunk.len() as u64).map_err(io)?;
            }
        }
    };
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    match outcome {
        // All the bytes came: the error is the client's own digest check.
        Err(_) | Ok(()) if received == blob.size && actual != blob.digest => Err(bad(format!(
            "blob {} does not match its digest (its content hashes to {actual})",
            blob.digest
        ))),
        Ok(()) if received == blob.size => {
            file.sync_all().map_err(io)?;
            Ok(())
        }
        Ok(()) => Err(Attempt::Transport(format!(
            "blob {} ended after {received} of {} bytes",
            blob.digest, blob.size
        ))),
        // A retry reports its bytes again; the tracker caps at the total.
        Err(e) => Err(Attempt::Transport(format!(
            "blob {} broke off after {received} of {} bytes: {}",
            blob.digest,
            blob.size,
            error_chain(&e)
        ))),
    }
}
