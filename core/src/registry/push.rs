//! Pushing an image of the store to a registry: its manifest, config and
//! layer blobs exactly as the store keeps them, so the manifest digest is
//! the same on both sides. Blobs the registry has are not sent (HEAD
//! first); the others stream from their files.

use oci_client::Reference;
use serde::Deserialize;

use super::session::Session;
use super::{parse_reference, run_async};
use crate::control::{CallOpts, Control, ProgressTracker};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::image::{self, Image, ImageInfo};
use crate::progress::ProgressPhase;

/// Media type of a manifest that does not name its own (OCI's default).
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

impl Image {
    /// Push the local image `reference_or_digest` (a reference, or its
    /// manifest digest) to `target` (`host/repo:tag` or `host/repo@sha256:…`).
    /// Its manifest, config and layers go as the store holds them, so the
    /// registry's manifest digest is the local one; a blob the registry has
    /// already is not uploaded. Returns the manifest digest.
    ///
    /// Errors: `ImageNotFound` (no such local image, or one without its
    /// blobs: an image that arrived inside a snapshot archive has only its
    /// root disk), `Registry` (connection, credentials, the registry
    /// refusing a blob or the manifest), `InvalidConfig` (a malformed
    /// target), `Cancelled`.
    pub async fn push(
        reference_or_digest: impl Into<String>,
        target: impl Into<String>,
    ) -> MicrosandboxResult<String> {
        Self::push_with(reference_or_digest, target, CallOpts::default()).await
    }

    /// [`push`](Self::push), reporting `Push` progress (bytes of blobs sent
    /// or found present) and obeying `call.cancel`.
    pub async fn push_with(
        reference_or_digest: impl Into<String>,
        target: impl Into<String>,
        call: CallOpts,
    ) -> MicrosandboxResult<String> {
        let (home, wanted, target) = (
            MsbHome::resolve()?,
            reference_or_digest.into(),
            target.into(),
        );
        crate::control::long_call(call, move |control| {
            push_image_blocking(&home, &wanted, &target, control)
        })
        .await
    }
}

/// [`Image::push`] on this (blocking) thread.
pub(crate) fn push_image_blocking(
    home: &MsbHome,
    wanted: &str,
    target: &str,
    control: &Control,
) -> MicrosandboxResult<String> {
    let target = parse_reference(target)?;
    run_async(async {
        let session = Session::for_push(home, &target).await?;
        push_image(home, &session, wanted, &target, control).await
    })
}

/// Every blob of the local image `info` (manifest, config, layers), or
/// `ImageNotFound` naming the cause when the store does not hold them.
pub(crate) fn pushable_blobs(home: &MsbHome, info: &ImageInfo) -> MicrosandboxResult<Vec<String>> {
    image::blob_digests(home, &info.manifest_digest).map_err(|e| match e {
        MicrosandboxError::ImageNotFound { reference } => MicrosandboxError::ImageNotFound {
            reference: format!(
                "{} has no blobs in the store, so it cannot be pushed (an image that arrived \
                 inside a snapshot archive keeps only its root disk; load or pull it): {reference}",
                info.reference
            ),
        },
        other => other,
    })
}

/// Push the local image `wanted` through `session` as `at` (a tag or a
/// digest of the session's repository). Returns its manifest digest.
pub(crate) async fn push_image(
    home: &MsbHome,
    session: &Session,
    wanted: &str,
    at: &Reference,
    control: &Control,
) -> MicrosandboxResult<String> {
    let info = image::get_blocking(home, wanted)?;
    let digest = &info.manifest_digest;
    let blobs = pushable_blobs(home, &info)?;
    let manifest_path = image::blob_path(home, digest);
    let manifest =
        std::fs::read(&manifest_path).map_err(|e| MicrosandboxError::io(&manifest_path, e))?;
    #[derive(Deserialize)]
    struct MediaType {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
    }
    let media_type = serde_json::from_slice::<MediaType>(&manifest)
        .ok()
        .and_then(|m| m.media_type)
        .unwrap_or_else(|| OCI_MANIFEST.to_string());
    let mut files = Vec::new();
    for blob in blobs.iter().filter(|b| *b != digest) {
        let path = image::blob_path(home, blob);
        let size = std::fs::metadata(&path)
            .map_err(|e| MicrosandboxError::io(&path, e))?
            .len();
        files.push((blob, path, size));
    }
    let total = files.iter().map(|(_, _, size)| size).sum();
    let tracker = ProgressTracker::new(control, ProgressPhase::Push, total);
    let blobs: Vec<(&str, &std::path::Path, u64)> = files
        .iter()
        .map(|(blob, path, size)| (blob.as_str(), path.as_path(), *size))
        .collect();
    session.push_file_blobs(&blobs, &tracker, control).await?;
    control.check()?;
    // Not asked first: a manifest is small, and a PUT of the same bytes is
    // what makes a tag point at it.
    session.push_manifest(at, manifest, &media_type).await?;
    tracker.finish();
    Ok(digest.clone())
}
