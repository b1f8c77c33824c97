//! Single-blob OCI artifacts: what carries a snapshot through a registry.
//! An artifact is an OCI image manifest with its own `artifactType`, the
//! empty config (`application/vnd.oci.empty.v1+json`, `{}`) and one layer,
//! a file pushed as a blob (skipped when the registry has it already) and
//! fetched back with the same checks as an image blob (size, digest as it
//! lands, one retry). The snapshot module decides what the file is.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use oci_client::Reference;
use oci_client::RegistryOperation;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::transport::{Connection, after_tls_failure, is_transport, registry_error};
use super::{Blob, MAX_MANIFEST_BYTES, check_manifest_digest, download_blob, parse_reference};
use crate::control::{Control, ProgressTracker};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::progress::ProgressPhase;

/// The OCI empty descriptor's content and digest (`{}`).
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// What to push: the artifact's type, its one file and that file's media
/// type, and annotations for the manifest.
pub(crate) struct ArtifactUpload<'a> {
    pub artifact_type: &'a str,
    pub media_type: &'a str,
    pub file: &'a Path,
    pub title: &'a str,
    pub annotations: BTreeMap<String, String>,
}

/// Push `upload` as `reference`; returns the manifest digest.
pub(crate) fn push_blocking(
    home: &MsbHome,
    reference: &str,
    upload: &ArtifactUpload,
    control: &Control,
) -> MicrosandboxResult<String> {
    let parsed = parse_reference(reference)?;
    super::run_async(push_async(home, &parsed, upload, control))
}

async fn push_async(
    home: &MsbHome,
    reference: &Reference,
    upload: &ArtifactUpload<'_>,
    control: &Control,
) -> MicrosandboxResult<String> {
    let conn = connect_for_push(home, reference).await?;
    let failed = |e: oci_client::errors::OciDistributionError| registry_error(reference, &e);
    let data = fs::read(upload.file).map_err(|e| MicrosandboxError::io(upload.file, e))?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(EMPTY_CONFIG)));
    let tracker = ProgressTracker::new(control, ProgressPhase::Push, data.len() as u64);
    let size = data.len() as u64;
    for (blob_digest, bytes) in [(&config_digest, EMPTY_CONFIG.to_vec()), (&digest, data)] {
        control.check()?;
        // A registry that has the blob (a re-push, a shared blob) is not sent it again.
        if !conn
            .client
            .blob_exists(reference, blob_digest)
            .await
            .map_err(failed)?
        {
            conn.client
                .push_blob(reference, bytes, blob_digest)
                .await
                .map_err(failed)?;
        }
    }
    tracker
        .advance(size)
        .map_err(|e| MicrosandboxError::io(upload.file, e))?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": upload.artifact_type,
        "config": { "mediaType": EMPTY_MEDIA_TYPE, "digest": config_digest, "size": EMPTY_CONFIG.len() },
        "layers": [{
            "mediaType": upload.media_type, "digest": digest, "size": size,
            "annotations": { "org.opencontainers.image.title": upload.title },
        }],
        "annotations": upload.annotations,
    });
    let body = serde_json::to_vec(&manifest)
        .map_err(|e| MicrosandboxError::Runtime(format!("manifest encoding: {e}")))?;
    let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
    conn.client
        .push_manifest_raw(
            reference,
            body,
            http::HeaderValue::from_static(OCI_MANIFEST),
        )
        .await
        .map_err(failed)?;
    tracker.finish();
    Ok(manifest_digest)
}

/// A connection authenticated for pushing, over plain HTTP for an insecure
/// host whose TLS attempt fails.
async fn connect_for_push(home: &MsbHome, reference: &Reference) -> MicrosandboxResult<Connection> {
    let settings = home.registry();
    let conn = Connection::open(settings, reference)?;
    match conn
        .client
        .auth(reference, &conn.auth, RegistryOperation::Push)
        .await
    {
        Ok(_) => Ok(conn),
        Err(tls) if conn.insecure && is_transport(&tls) => {
            let conn = conn.over_http(settings, reference)?;
            conn.client
                .auth(reference, &conn.auth, RegistryOperation::Push)
                .await
                .map_err(|e| after_tls_failure(registry_error(reference, &e), &tls))?;
            Ok(conn)
        }
        Err(e) => Err(registry_error(reference, &e)),
    }
}

/// Fetch the one file of the artifact `reference`, which must be of
/// `artifact_type` with a layer of `media_type`, into `dest`.
pub(crate) fn pull_blocking(
    home: &MsbHome,
    reference: &str,
    artifact_type: &str,
    media_type: &str,
    dest: &Path,
    control: &Control,
) -> MicrosandboxResult<()> {
    let parsed = parse_reference(reference)?;
    super::run_async(async {
        let (conn, bytes, digest) = super::connect_and_fetch_manifest(home, &parsed).await?;
        let bad = |reason: String| MicrosandboxError::Registry {
            reference: parsed.whole(),
            reason,
        };
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(bad(format!(
                "its manifest is over the {MAX_MANIFEST_BYTES}-byte limit"
            )));
        }
        check_manifest_digest(&bytes, &digest).map_err(&bad)?;
        #[derive(Deserialize)]
        struct Artifact {
            #[serde(rename = "artifactType", default)]
            artifact_type: Option<String>,
            layers: Vec<Blob>,
        }
        let artifact: Artifact = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("its manifest is not an OCI manifest: {e}")))?;
        if artifact.artifact_type.as_deref() != Some(artifact_type) {
            return Err(bad(format!(
                "it is not a {artifact_type} artifact (artifactType {:?})",
                artifact.artifact_type
            )));
        }
        let [blob] = artifact.layers.as_slice() else {
            return Err(bad("it must have exactly one layer".into()));
        };
        if blob.media_type != media_type || !crate::digest::is_sha256_digest(&blob.digest) {
            return Err(bad(format!(
                "its layer is '{}' {}, not a {media_type} with a sha256 digest",
                blob.media_type, blob.digest
            )));
        }
        let tracker = ProgressTracker::new(control, ProgressPhase::Pull, blob.size);
        download_blob(&conn, &parsed, blob, dest, &tracker, control).await?;
        tracker.finish();
        Ok(())
    })
}

/// The manifest digest and annotations of the artifact `reference` names,
/// if it is one of `artifact_type`; `None` when the registry has nothing
/// there (or something else).
pub(crate) fn existing_blocking(
    home: &MsbHome,
    reference: &str,
    artifact_type: &str,
) -> MicrosandboxResult<Option<(String, BTreeMap<String, String>)>> {
    #[derive(Deserialize)]
    struct Existing {
        #[serde(rename = "artifactType", default)]
        artifact_type: Option<String>,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    let parsed = parse_reference(reference)?;
    super::run_async(async {
        match super::connect_and_fetch_manifest(home, &parsed).await {
            Ok((_, bytes, digest)) if bytes.len() <= MAX_MANIFEST_BYTES => {
                Ok(serde_json::from_slice::<Existing>(&bytes)
                    .ok()
                    .filter(|e| e.artifact_type.as_deref() == Some(artifact_type))
                    .map(|e| (digest, e.annotations)))
            }
            Ok(_) | Err(MicrosandboxError::ImageNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    })
}
