//! Snapshots through an OCI registry: `Snapshot::push` and `Snapshot::pull`.
//! A snapshot travels as an OCI artifact (`artifactType`
//! [`SNAPSHOT_ARTIFACT_TYPE`]) whose blobs are its own files: its
//! `manifest.json` as it is, and each data file (a full snapshot's
//! `vm.json`, `vm.state`, `vm.ram`, then the upper) as a deterministic zstd
//! tar holding that one sparse entry, so a re-push gives the same digests
//! and uploads nothing. Its parent is its own artifact in the same
//! repository, referenced by manifest digest, so a child pushes only what
//! its parents lack; its image is referenced by digest (where it was
//! pulled from, or pushed into the same repository). A pull fetches the
//! chain down to the first parent present here, the image if it is
//! missing, and lands the snapshots through import's own code: the same
//! hostile-input checks, integrity on landing, nothing partial.
//! See `docs/registry.md` for the format.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};
use oci_client::Reference;

use crate::control::{CallOpts, Control, ProgressTracker, long_call};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::image::{self, ImageInfo};
use crate::progress::ProgressPhase;
use crate::registry::{
    self, ArtifactLayer, EMPTY_CONFIG, OCI_MANIFEST, Session, artifact_manifest, parse_artifact,
    parse_reference, sha256_of,
};
use crate::snapshot::archive::{self, SnapshotBlobs};
use crate::snapshot::manifest::{MANIFEST_FILE, MANIFEST_MAX_BYTES, Manifest, VM_FILE};
use crate::snapshot::{Snapshot, SnapshotHandle, index, resolve};

/// `artifactType` of a snapshot in a registry.
pub const SNAPSHOT_ARTIFACT_TYPE: &str = "application/vnd.microsandbox.snapshot.v2";
/// Media type of the layer holding the snapshot's `manifest.json`, as is.
pub const SNAPSHOT_MANIFEST_MEDIA_TYPE: &str =
    "application/vnd.microsandbox.snapshot.manifest.v1+json";
/// Media type of a layer holding one data file: a zstd-compressed tar of
/// that one (GNU sparse) entry, `snapshots/<digest hex>/<file>`.
pub const SNAPSHOT_FILE_MEDIA_TYPE: &str = "application/vnd.microsandbox.snapshot.file.v1.tar+zstd";
/// Manifest annotation: the snapshot's own digest.
pub const SNAPSHOT_DIGEST_ANNOTATION: &str = "dev.microsandbox.snapshot.digest";
/// Manifest annotation: the name the snapshot lands under.
pub const SNAPSHOT_NAME_ANNOTATION: &str = "dev.microsandbox.snapshot.name";
/// Manifest annotation: the image it pins, `registry/repository@sha256:…`.
pub const SNAPSHOT_IMAGE_ANNOTATION: &str = "dev.microsandbox.snapshot.image";
/// Manifest annotation: the parent's artifact manifest digest (same
/// repository); absent for a root snapshot.
pub const SNAPSHOT_PARENT_ANNOTATION: &str = "dev.microsandbox.snapshot.parent";

/// Most ancestors a pull walks: a loop or an absurd chain is refused.
const MAX_CHAIN: usize = 4096;

/// Blobs downloaded at once.
const CONCURRENT_DOWNLOADS: usize = 4;

impl Snapshot {
    /// Push the snapshot `name_or_path` (name, digest or path, as
    /// [`export`](Self::export) takes) to `reference` (`host/repo:tag`) as an
    /// OCI artifact; its ancestors go first into the same repository, each
    /// its own artifact (by digest), and its image is referenced by digest:
    /// where it was pulled from, else pushed into the same repository. A
    /// blob or parent the registry already has is not uploaded again.
    /// Returns the artifact's manifest digest.
    ///
    /// Errors: `SnapshotNotFound`, `SnapshotIntegrity` (as `export`),
    /// `ImageNotFound` (the pinned image is not here, or has no blobs: an
    /// image that arrived inside a snapshot archive keeps only its root
    /// disk), `Registry` / `InvalidConfig` as for
    /// [`Image::pull`](crate::image::Image::pull), `Cancelled`.
    pub async fn push(
        name_or_path: impl Into<String>,
        reference: impl Into<String>,
    ) -> MicrosandboxResult<String> {
        Self::push_with(name_or_path, reference, CallOpts::default()).await
    }

    /// [`push`](Self::push), reporting `export` (files compressed) then
    /// `push` progress and obeying `call.cancel`.
    pub async fn push_with(
        name_or_path: impl Into<String>,
        reference: impl Into<String>,
        call: CallOpts,
    ) -> MicrosandboxResult<String> {
        let (home, key, reference) = (MsbHome::resolve()?, name_or_path.into(), reference.into());
        long_call(call, move |control| {
            push_blocking(&home, &key, &reference, control)
        })
        .await
    }

    /// Pull the snapshot artifact `reference` (with the ancestors this home
    /// lacks, and its image when missing) and land it into `dest` (default:
    /// the home's snapshots directory) with every check of
    /// [`import`](Self::import): nothing partial. An artifact of another
    /// type is a `Registry` error.
    pub async fn pull(
        reference: impl Into<String>,
        dest: Option<&Path>,
    ) -> MicrosandboxResult<SnapshotHandle> {
        Self::pull_with(reference, dest, CallOpts::default()).await
    }

    /// [`pull`](Self::pull), reporting `pull` then `import` progress and
    /// obeying `call.cancel`.
    pub async fn pull_with(
        reference: impl Into<String>,
        dest: Option<&Path>,
        call: CallOpts,
    ) -> MicrosandboxResult<SnapshotHandle> {
        let (home, reference) = (MsbHome::resolve()?, reference.into());
        let dest: Option<PathBuf> = dest.map(Path::to_path_buf);
        long_call(call, move |control| {
            pull_blocking(&home, &reference, dest.as_deref(), control)
        })
        .await
    }
}

/// One snapshot of a push, its files written as blobs.
struct Outgoing {
    snap: Snapshot,
    name: String,
    /// Blob files by digest: the manifest and the data files.
    files: Vec<(ArtifactLayer, PathBuf)>,
}

fn push_blocking(
    home: &MsbHome,
    key: &str,
    reference: &str,
    control: &Control,
) -> MicrosandboxResult<String> {
    let target = parse_reference(reference)?;
    let head = resolve::resolve(home, key)?.open()?;
    let chain = archive::ancestors_and(home, head)?;
    for snap in chain.iter().rev() {
        snap.verify_controlled(&control.without_progress())?;
    }
    // Their images, found (and a local one's blobs) before any work.
    let mut images: HashMap<String, (ImageInfo, Option<String>)> = HashMap::new();
    for snap in &chain {
        let digest = snap.image_manifest_digest();
        if !images.contains_key(digest) {
            let info = pinned_image(home, snap)?;
            if info.origin.is_none() {
                registry::pushable_blobs(home, &info)?;
            }
            images.insert(digest.to_string(), (info, None));
        }
    }
    let names = archive::archive_names(home, &chain);
    let staging = image::staging_dir(home, "push-snapshot")?;
    let outgoing = write_blobs(chain, names, staging.path(), control)?;
    registry::run_async(async {
        let session = Session::for_push(home, &target).await?;
        let mut parent: Option<String> = None;
        let mut pending = Vec::new();
        for (i, out) in outgoing.iter().enumerate() {
            let (info, known) = images
                .get_mut(out.snap.image_manifest_digest())
                .expect("found above");
            let image_ref = match known {
                Some(r) => r.clone(),
                None => known
                    .insert(image_reference(home, &session, info, control).await?)
                    .clone(),
            };
            let mut annotations = BTreeMap::from([
                (
                    SNAPSHOT_DIGEST_ANNOTATION.to_string(),
                    out.snap.digest().to_string(),
                ),
                (SNAPSHOT_NAME_ANNOTATION.to_string(), out.name.clone()),
                (SNAPSHOT_IMAGE_ANNOTATION.to_string(), image_ref),
            ]);
            if let Some(parent) = &parent {
                annotations.insert(SNAPSHOT_PARENT_ANNOTATION.to_string(), parent.clone());
            }
            let layers: Vec<ArtifactLayer> = out.files.iter().map(|(l, _)| l.clone()).collect();
            let (body, digest) = artifact_manifest(SNAPSHOT_ARTIFACT_TYPE, &layers, &annotations);
            let is_head = i + 1 == outgoing.len();
            let at = if is_head {
                target.clone()
            } else {
                session.at_digest(&digest)
            };
            // A parent the repository has is not pushed again, nor its blobs.
            if is_head || !session.has_manifest(&at).await? {
                pending.push((out, at, body));
            }
            parent = Some(digest);
        }
        let total = pending
            .iter()
            .flat_map(|(out, _, _)| &out.files)
            .map(|(l, _)| l.size)
            .sum();
        let tracker = ProgressTracker::new(control, ProgressPhase::Push, total);
        session
            .push_small_blob(&sha256_of(EMPTY_CONFIG), EMPTY_CONFIG)
            .await?;
        // Every missing artifact's blobs at once, then the manifests,
        // parents first (a registry may refuse a manifest whose blobs it
        // lacks).
        let mut seen = HashSet::new();
        let blobs: Vec<(&str, &Path, u64)> = pending
            .iter()
            .flat_map(|(out, _, _)| &out.files)
            .filter(|(layer, _)| seen.insert(layer.digest.as_str()))
            .map(|(layer, path)| (layer.digest.as_str(), path.as_path(), layer.size))
            .collect();
        session.push_file_blobs(&blobs, &tracker, control).await?;
        for (_, at, body) in pending {
            control.check()?;
            session.push_manifest(&at, body, OCI_MANIFEST).await?;
        }
        tracker.finish();
        Ok(parent.expect("the chain holds the head"))
    })
}

/// Write every file of `chain` as a blob into `staging`: the manifest as
/// it is, each data file as its deterministic zstd tar.
fn write_blobs(
    chain: Vec<Snapshot>,
    names: Vec<archive::ArchivedSnapshot>,
    staging: &Path,
    control: &Control,
) -> MicrosandboxResult<Vec<Outgoing>> {
    let data_files = |snap: &Snapshot| -> MicrosandboxResult<Vec<(String, u64)>> {
        let mut files = Vec::new();
        if let Some(vm) = snap.vm() {
            let vm_json = snap.path().join(VM_FILE);
            let len = std::fs::metadata(&vm_json)
                .map_err(|e| MicrosandboxError::io(&vm_json, e))?
                .len();
            files.push((VM_FILE.to_string(), len));
            files.push((vm.state.file.clone(), vm.state.size_bytes));
            files.push((vm.ram.file.clone(), vm.ram.size_bytes));
        }
        files.push((snap.manifest().upper.file.clone(), snap.size_bytes()));
        Ok(files)
    };
    let mut total = 0;
    for snap in &chain {
        total += data_files(snap)?.iter().map(|(_, size)| size).sum::<u64>();
    }
    let tracker = ProgressTracker::new(control, ProgressPhase::Export, total);
    let mut outgoing = Vec::new();
    for (n, (snap, named)) in chain.into_iter().zip(names).enumerate() {
        let mut files = Vec::new();
        let manifest_path = snap.path().join(MANIFEST_FILE);
        let manifest =
            std::fs::read(&manifest_path).map_err(|e| MicrosandboxError::io(&manifest_path, e))?;
        let staged = staging.join(format!("{n}-{MANIFEST_FILE}"));
        crate::publish::write_synced(&staged, &manifest)?;
        files.push((
            ArtifactLayer {
                media_type: SNAPSHOT_MANIFEST_MEDIA_TYPE.into(),
                digest: sha256_of(&manifest),
                size: manifest.len() as u64,
                title: MANIFEST_FILE.into(),
            },
            staged,
        ));
        for (name, size) in data_files(&snap)? {
            let path = staging.join(format!("{n}-{name}.tar.zst"));
            let file = File::create_new(&path).map_err(|e| MicrosandboxError::io(&path, e))?;
            archive::write_file_blob(&snap, &name, size, &file, &tracker)?;
            let (digest, size) = hash_file(&path).map_err(|e| MicrosandboxError::io(&path, e))?;
            files.push((
                ArtifactLayer {
                    media_type: SNAPSHOT_FILE_MEDIA_TYPE.into(),
                    digest,
                    size,
                    title: format!("{name}.tar.zst"),
                },
                path,
            ));
        }
        outgoing.push(Outgoing {
            snap,
            name: named.name,
            files,
        });
    }
    tracker.finish();
    Ok(outgoing)
}

/// The digest and size of the file at `path`.
fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let size = std::io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok((crate::digest::prefixed_sha256(&hasher.finalize()), size))
}

/// The local image `snap` pins.
fn pinned_image(home: &MsbHome, snap: &Snapshot) -> MicrosandboxResult<ImageInfo> {
    let digest = snap.image_manifest_digest();
    image::get_blocking(home, digest).map_err(|_| MicrosandboxError::ImageNotFound {
        reference: format!(
            "{} @ {digest} (pinned by snapshot {}; a snapshot is pushed with its image, which must be here)",
            snap.image_ref(),
            snap.path().display()
        ),
    })
}

/// The reference by digest of the image `info`: where it was pulled from,
/// or (a local image) this repository, after pushing it there.
async fn image_reference(
    home: &MsbHome,
    session: &Session,
    info: &ImageInfo,
    control: &Control,
) -> MicrosandboxResult<String> {
    let digest = &info.manifest_digest;
    if let Some(origin) = &info.origin {
        let origin = parse_reference(origin)?;
        let pinned = Reference::with_digest(
            origin.registry().to_string(),
            origin.repository().to_string(),
            digest.to_string(),
        );
        return Ok(pinned.whole());
    }
    let at = session.at_digest(digest);
    let at = Reference::with_digest(
        at.registry().to_string(),
        at.repository().to_string(),
        digest.to_string(),
    );
    registry::push_image(home, session, digest, &at, &control.without_progress()).await?;
    Ok(at.whole())
}

/// One snapshot of a pull: what its artifact says, and its blobs.
struct Incoming {
    digest: String,
    name: String,
    image: Reference,
    parent: Option<String>,
    /// The manifest.json layer, then the data-file layers in order.
    layers: Vec<registry::Blob>,
}

/// Read `bytes` as a snapshot artifact of `at`.
fn parse_incoming(at: &Reference, bytes: &[u8]) -> MicrosandboxResult<Incoming> {
    let bad = |reason: String| MicrosandboxError::Registry {
        reference: at.whole(),
        reason,
    };
    let artifact = parse_artifact(bytes, SNAPSHOT_ARTIFACT_TYPE).map_err(&bad)?;
    let annotation = |key: &str| {
        artifact
            .annotations
            .get(key)
            .cloned()
            .ok_or_else(|| bad(format!("its manifest has no {key} annotation")))
    };
    let digest = annotation(SNAPSHOT_DIGEST_ANNOTATION)?;
    let name = annotation(SNAPSHOT_NAME_ANNOTATION)?;
    let image_text = annotation(SNAPSHOT_IMAGE_ANNOTATION)?;
    let image = parse_reference(&image_text)
        .ok()
        .filter(|r| r.digest().is_some_and(crate::digest::is_sha256_digest))
        .ok_or_else(|| {
            bad(format!(
                "its image '{image_text}' is not a reference by digest"
            ))
        })?;
    let parent = artifact
        .annotations
        .get(SNAPSHOT_PARENT_ANNOTATION)
        .cloned();
    if let Some(parent) = &parent
        && !crate::digest::is_sha256_digest(parent)
    {
        return Err(bad(format!("its parent '{parent}' is not a sha256 digest")));
    }
    let (first, rest) = artifact
        .layers
        .split_first()
        .ok_or_else(|| bad("it has no layers".into()))?;
    if first.0.media_type != SNAPSHOT_MANIFEST_MEDIA_TYPE
        || first.1 != MANIFEST_FILE
        || first.0.size > MANIFEST_MAX_BYTES
    {
        return Err(bad(format!(
            "its first layer must be its {MANIFEST_FILE} ({SNAPSHOT_MANIFEST_MEDIA_TYPE}, at most {MANIFEST_MAX_BYTES} bytes)"
        )));
    }
    // An upper, or a full snapshot's three VM files and its upper.
    if !matches!(rest.len(), 1 | 4)
        || rest
            .iter()
            .any(|l| l.0.media_type != SNAPSHOT_FILE_MEDIA_TYPE)
    {
        return Err(bad(format!(
            "it must have 1 or 4 data layers of {SNAPSHOT_FILE_MEDIA_TYPE}"
        )));
    }
    Ok(Incoming {
        digest,
        name,
        image,
        parent,
        layers: artifact.layers.into_iter().map(|(blob, _)| blob).collect(),
    })
}

/// Whether this home has the snapshot `digest` indexed.
fn present(home: &MsbHome, digest: &str) -> bool {
    index::get(home, digest).is_ok_and(|h| h.digest() == digest)
}

fn pull_blocking(
    home: &MsbHome,
    reference: &str,
    dest: Option<&Path>,
    control: &Control,
) -> MicrosandboxResult<SnapshotHandle> {
    let parsed = parse_reference(reference)?;
    let staging = image::staging_dir(home, "pull-snapshot")?;
    let staged = |digest: &str| staging.path().join(crate::digest::sha256_hex(digest));
    let registry_fault = |e: MicrosandboxError| match e {
        MicrosandboxError::ArchiveInvalid { reason, .. } => MicrosandboxError::Registry {
            reference: parsed.whole(),
            reason: format!("its snapshot is invalid: {reason}"),
        },
        other => other,
    };
    let (snapshots, images) = registry::run_async(async {
        let (session, bytes, _) = Session::for_pull(home, &parsed).await?;
        let chain = fetch_chain(home, &parsed, &session, &bytes).await?;
        let blobs: Vec<&registry::Blob> = {
            let mut unique = HashSet::new();
            chain
                .iter()
                .flat_map(|c| &c.layers)
                .filter(|b| unique.insert(b.digest.clone()))
                .collect()
        };
        let tracker = ProgressTracker::new(
            control,
            ProgressPhase::Pull,
            blobs.iter().map(|b| b.size).sum(),
        );
        futures_util::stream::iter(blobs.iter().map(|blob| {
            let (session, tracker, dest) = (&session, &tracker, staged(&blob.digest));
            async move { session.download(blob, &dest, tracker, control).await }
        }))
        .buffer_unordered(CONCURRENT_DOWNLOADS)
        .try_collect::<Vec<()>>()
        .await?;
        tracker.finish();
        let mut snapshots = Vec::new();
        for incoming in &chain {
            let manifest_blob = staged(&incoming.layers[0].digest);
            let manifest = std::fs::read(&manifest_blob)
                .map_err(|e| MicrosandboxError::io(&manifest_blob, e))?;
            check_pinned_image(&parsed, incoming, &manifest, &manifest_blob)?;
            snapshots.push(SnapshotBlobs {
                digest: incoming.digest.clone(),
                name: incoming.name.clone(),
                manifest,
                files: incoming.layers[1..]
                    .iter()
                    .map(|b| staged(&b.digest))
                    .collect(),
            });
        }
        let mut images: Vec<Reference> = Vec::new();
        for incoming in chain {
            if !images.iter().any(|i| i.digest() == incoming.image.digest()) {
                images.push(incoming.image);
            }
        }
        Ok((snapshots, images))
    })?;
    // The image, when missing, is pulled by digest once every snapshot has
    // passed its checks and before any is placed: a failure of either
    // leaves nothing.
    let fetch_images = || {
        for image in &images {
            let digest = image.digest().expect("checked: by digest");
            if image::get_blocking(home, digest).is_err() {
                registry::pull_blocking(home, &image.whole(), &control.without_progress())?;
            }
        }
        Ok(())
    };
    archive::land_blobs(
        home,
        staging.path(),
        &snapshots,
        dest,
        control,
        fetch_images,
    )
    .map_err(registry_fault)
}

/// The artifact `head` (the manifest `bytes`) and its ancestors down to the
/// first one this home has, oldest first.
async fn fetch_chain(
    home: &MsbHome,
    head: &Reference,
    session: &Session,
    bytes: &[u8],
) -> MicrosandboxResult<Vec<Incoming>> {
    let mut chain = vec![parse_incoming(head, bytes)?];
    let mut seen = HashSet::new();
    while let Some(parent) = chain.last().and_then(|c| c.parent.clone()) {
        if !seen.insert(parent.clone()) || chain.len() > MAX_CHAIN {
            return Err(MicrosandboxError::Registry {
                reference: head.whole(),
                reason: "its parent chain loops or is too long".into(),
            });
        }
        let at = session.at_digest(&parent);
        let (bytes, _) = session.fetch_manifest(&at).await?;
        let incoming = parse_incoming(&at, &bytes)?;
        if present(home, &incoming.digest) {
            break;
        }
        chain.push(incoming);
    }
    chain.reverse();
    Ok(chain)
}

/// The snapshot `manifest` must pin the image its artifact names.
fn check_pinned_image(
    reference: &Reference,
    incoming: &Incoming,
    manifest: &[u8],
    path: &Path,
) -> MicrosandboxResult<()> {
    let bad = |reason: String| MicrosandboxError::Registry {
        reference: reference.whole(),
        reason: format!("snapshot {}: {reason}", incoming.digest),
    };
    let pinned = Manifest::parse(manifest, path)
        .map_err(|e| bad(e.to_string()))?
        .image
        .manifest_digest;
    if incoming.image.digest() == Some(pinned.as_str()) {
        Ok(())
    } else {
        Err(bad(format!(
            "it pins image {pinned}, but its artifact names {}",
            incoming.image.whole()
        )))
    }
}
