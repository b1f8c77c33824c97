//! OCI artifacts of our own types (snapshots): an OCI image manifest with
//! an `artifactType`, the empty config (`application/vnd.oci.empty.v1+json`,
//! `{}`), file layers and annotations. The manifest is written
//! deterministically (sorted keys, no timestamps), so the same files and
//! annotations always give the same manifest digest. Reading one back
//! checks its shape; what the layers mean is the caller's.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::Blob;
use crate::digest::is_sha256_digest;

/// The OCI empty descriptor's content (`{}`) and media type.
pub(crate) const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// Media type of an artifact's manifest.
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The annotation that names a layer's file.
pub(crate) const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

/// One layer of an artifact: a blob and the file name it carries.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactLayer {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub title: String,
}

/// The digest of `bytes`, `sha256:<hex>`.
pub(crate) fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The manifest of an artifact of `artifact_type` holding `layers`, and
/// its digest.
pub(crate) fn artifact_manifest(
    artifact_type: &str,
    layers: &[ArtifactLayer],
    annotations: &BTreeMap<String, String>,
) -> (Vec<u8>, String) {
    let layers: Vec<_> = layers
        .iter()
        .map(|l| {
            json!({
                "mediaType": l.media_type, "digest": l.digest, "size": l.size,
                "annotations": { TITLE_ANNOTATION: l.title },
            })
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": sha256_of(EMPTY_CONFIG),
            "size": EMPTY_CONFIG.len(),
        },
        "layers": layers,
        "annotations": annotations,
    });
    // serde_json's maps are sorted: the same input, the same bytes.
    let body = serde_json::to_vec(&manifest).expect("a JSON value encodes");
    let digest = sha256_of(&body);
    (body, digest)
}

/// An artifact manifest as read back.
#[derive(Debug)]
pub(crate) struct ArtifactManifest {
    pub layers: Vec<(Blob, String)>,
    pub annotations: BTreeMap<String, String>,
}

/// Parse `bytes` as an artifact of `artifact_type`: every layer with a
/// sha256 digest and a title. A reason when it is not one.
pub(crate) fn parse_artifact(
    bytes: &[u8],
    artifact_type: &str,
) -> Result<ArtifactManifest, String> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(rename = "artifactType", default)]
        artifact_type: Option<String>,
        #[serde(default)]
        layers: Vec<RawLayer>,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    #[derive(Deserialize)]
    struct RawLayer {
        #[serde(rename = "mediaType")]
        media_type: String,
        digest: String,
        size: u64,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| format!("its manifest is not an OCI manifest: {e}"))?;
    if raw.artifact_type.as_deref() != Some(artifact_type) {
        return Err(format!(
            "it is not a {artifact_type} artifact (artifactType {:?})",
            raw.artifact_type
        ));
    }
    let mut layers = Vec::new();
    for layer in raw.layers {
        if !is_sha256_digest(&layer.digest) {
            return Err(format!("layer '{}' is not a sha256 digest", layer.digest));
        }
        let title = layer
            .annotations
            .get(TITLE_ANNOTATION)
            .cloned()
            .ok_or_else(|| format!("layer {} has no {TITLE_ANNOTATION}", layer.digest))?;
        let blob = Blob {
            digest: layer.digest,
            size: layer.size,
            media_type: layer.media_type,
        };
        layers.push((blob, title));
    }
    Ok(ArtifactManifest {
        layers,
        annotations: raw.annotations,
    })
}
