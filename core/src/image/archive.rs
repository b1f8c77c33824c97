//! Reading image archives: an OCI image layout packed in a tar, or a
//! `docker save` tar. The archive is unpacked into a private staging
//! directory (names checked, nothing written outside it), its blobs are
//! checked against their digests and moved into the content-addressed blob
//! store. Legacy `docker save` archives carry no manifest, so one is made up
//! from their config and layers, giving every image a manifest digest.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::digest::{is_sha256_digest, prefixed_sha256, sha256_digest_string, sha256_hex};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::publish;

/// What an archive holds, once its blobs are in the store.
#[derive(Debug, Clone)]
pub(crate) struct StagedImage {
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    /// The name the archive gives the image, if any.
    pub reference_hint: Option<String>,
}

/// Unpack `archive` into `staging`, then move its blobs into `blobs_dir`
/// (`…/blobs/sha256`). Every problem with the archive is `ArchiveInvalid`.
pub(crate) fn stage(
    archive: &Path,
    staging: &Path,
    blobs_dir: &Path,
) -> MicrosandboxResult<StagedImage> {
    unpack_outer(archive, staging)?;
    let invalid = |reason: String| MicrosandboxError::ArchiveInvalid {
        path: archive.to_path_buf(),
        reason,
    };
    fs::create_dir_all(blobs_dir).map_err(|e| MicrosandboxError::io(blobs_dir, e))?;
    if staging.join("index.json").is_file() && staging.join("blobs").is_dir() {
        stage_oci_layout(archive, staging, blobs_dir)
    } else if staging.join("manifest.json").is_file() {
        stage_docker_save(archive, staging, blobs_dir)
    } else {
        Err(invalid(
            "neither an OCI image layout (index.json) nor a docker save archive (manifest.json)"
                .into(),
        ))
    }
}

/// Unpack the outer tar: regular files and directories only, at safe
/// relative paths. Links in the outer archive (old `docker save` dedups
/// layers that way) are copied from their in-archive target.
fn unpack_outer(archive: &Path, staging: &Path) -> MicrosandboxResult<()> {
    let invalid = |reason: String| MicrosandboxError::ArchiveInvalid {
        path: archive.to_path_buf(),
        reason,
    };
    let file = File::open(archive).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => MicrosandboxError::ImageNotFound {
            reference: archive.display().to_string(),
        },
        _ => MicrosandboxError::io(archive, e),
    })?;
    let reader = decompressed(BufReader::new(file)).map_err(|e| invalid(e.to_string()))?;
    let mut tar = tar::Archive::new(reader);
    let mut links = Vec::new();
    let mut entries_seen = 0usize;
    for entry in tar
        .entries()
        .map_err(|e| invalid(format!("not a tar archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| invalid(format!("corrupt tar entry: {e}")))?;
        entries_seen += 1;
        let raw = entry
            .path()
            .map_err(|e| invalid(format!("bad entry name: {e}")))?
            .into_owned();
        let rel = safe_relative(&raw)
            .ok_or_else(|| invalid(format!("unsafe entry name {}", raw.display())))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let dest = staging.join(&rel);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            fs::create_dir_all(&dest).map_err(|e| MicrosandboxError::io(&dest, e))?;
        } else if kind.is_file() {
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(|e| MicrosandboxError::io(parent, e))?;
            }
            let mut out = File::create(&dest).map_err(|e| MicrosandboxError::io(&dest, e))?;
            io::copy(&mut entry, &mut out)
                .map_err(|e| invalid(format!("truncated entry {}: {e}", rel.display())))?;
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| invalid(format!("bad link target: {e}")))?
                .ok_or_else(|| invalid(format!("link {} has no target", rel.display())))?
                .into_owned();
            let base = if kind.is_symlink() {
                rel.parent().unwrap_or(Path::new("")).join(&target)
            } else {
                target
            };
            let resolved = safe_relative(&base)
                .ok_or_else(|| invalid(format!("link {} leaves the archive", rel.display())))?;
            links.push((rel, resolved));
        }
        // Other entry types (devices, fifos) have no place in an image archive; skip them.
    }
    if entries_seen == 0 {
        return Err(invalid("empty archive".into()));
    }
    for (link, target) in links {
        let (from, to) = (staging.join(&target), staging.join(&link));
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(|e| MicrosandboxError::io(parent, e))?;
        }
        if from.is_file() {
            fs::copy(&from, &to).map_err(|e| MicrosandboxError::io(&to, e))?;
        }
    }
    Ok(())
}

/// `path` as a relative path without `..`, or `None` if it would leave its root.
pub(crate) fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The first bytes of a zstd frame.
pub(crate) const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A reader over `input` with gzip or zstd undone, chosen by magic bytes.
pub(crate) fn decompressed<R: io::BufRead + 'static>(mut input: R) -> io::Result<Box<dyn Read>> {
    let head = input.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(input)))
    } else if head.starts_with(&ZSTD_MAGIC) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(input)?))
    } else {
        Ok(Box::new(input))
    }
}

#[derive(Clone, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Value>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct OciManifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// `ArchiveInvalid` for the image archive `archive`.
fn bad_archive(archive: &Path, reason: impl Into<String>) -> MicrosandboxError {
    MicrosandboxError::ArchiveInvalid {
        path: archive.to_path_buf(),
        reason: reason.into(),
    }
}

fn stage_oci_layout(
    archive: &Path,
    staging: &Path,
    blobs_dir: &Path,
) -> MicrosandboxResult<StagedImage> {
    let index: Index = read_json(archive, &staging.join("index.json"))?;
    let mut chosen = pick_manifest(archive, &index.manifests)?.clone();
    let reference_hint = chosen
        .annotations
        .get("io.containerd.image.name")
        .or_else(|| chosen.annotations.get("org.opencontainers.image.ref.name"))
        .cloned();
    // Follow a nested image index (multi-platform) down to one manifest.
    let mut manifest_digest = chosen.digest.clone();
    let mut depth = 0;
    while chosen.media_type.contains("index") || chosen.media_type.contains("manifest.list") {
        depth += 1;
        if depth > 4 {
            return Err(bad_archive(archive, "image indexes nest too deep"));
        }
        let nested: Index = read_json(archive, &blob_path(archive, staging, &chosen.digest)?)?;
        chosen = pick_manifest(archive, &nested.manifests)?.clone();
        manifest_digest = chosen.digest.clone();
    }
    let manifest_path = blob_path(archive, staging, &manifest_digest)?;
    let blobs = image_blob_digests(archive, &manifest_path, &manifest_digest)?;
    for digest in &blobs {
        store_blob(
            archive,
            &blob_path(archive, staging, digest)?,
            digest,
            blobs_dir,
        )?;
    }
    Ok(StagedImage {
        manifest_digest,
        config_digest: blobs[1].clone(),
        layer_digests: blobs[2..].to_vec(),
        reference_hint,
    })
}

/// Every blob an image needs, read from its manifest blob: the manifest,
/// the config, then the layers in order.
pub(crate) fn image_blob_digests(
    archive: &Path,
    manifest_path: &Path,
    manifest_digest: &str,
) -> MicrosandboxResult<Vec<String>> {
    let manifest: OciManifest = read_json(archive, manifest_path)?;
    let mut digests = vec![manifest_digest.to_string(), manifest.config.digest];
    digests.extend(manifest.layers.into_iter().map(|l| l.digest));
    Ok(digests)
}

/// The linux/amd64 entry of an index, else its only or first entry.
fn pick_manifest<'m>(
    archive: &Path,
    manifests: &'m [Descriptor],
) -> MicrosandboxResult<&'m Descriptor> {
    let is_amd64 = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p["architecture"] == "amd64" && p["os"] == "linux")
    };
    manifests
        .iter()
        .find(is_amd64)
        .or_else(|| manifests.iter().find(|d| d.platform.is_none()))
        .or_else(|| manifests.first())
        .ok_or_else(|| bad_archive(archive, "index.json lists no manifests"))
}

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn stage_docker_save(
    archive: &Path,
    staging: &Path,
    blobs_dir: &Path,
) -> MicrosandboxResult<StagedImage> {
    let entries: Vec<DockerManifestEntry> = read_json(archive, &staging.join("manifest.json"))?;
    let entry = entries
        .into_iter()
        .next()
        .ok_or_else(|| bad_archive(archive, "manifest.json lists no image"))?;
    let in_archive = |name: &str| {
        safe_relative(Path::new(name))
            .map(|rel| staging.join(rel))
            .ok_or_else(|| bad_archive(archive, format!("unsafe path {name} in manifest.json")))
    };
    let config_path = in_archive(&entry.config)?;
    let config_digest = file_digest(archive, &config_path)?;
    store_blob(archive, &config_path, &config_digest, blobs_dir)?;
    let mut layers = Vec::new();
    for layer in &entry.layers {
        let path = in_archive(layer)?;
        let digest = file_digest(archive, &path)?;
        let size = fs::metadata(&path)
            .map_err(|e| bad_archive(archive, format!("{layer}: {e}")))?
            .len();
        store_blob(archive, &path, &digest, blobs_dir)?;
        layers.push((digest, size));
    }
    let config_size = fs::metadata(blobs_dir.join(hex_of(archive, &config_digest)?))
        .map_err(|e| bad_archive(archive, e.to_string()))?
        .len();
    // The manifest this image would have had in an OCI layout; its digest
    // identifies the image as for any other.
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layers.iter().map(|(d, s)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| bad_archive(archive, e.to_string()))?;
    let manifest_digest = sha256_digest_string(&bytes);
    let manifest_file = staging.join("msb-synthesized-manifest.json");
    fs::write(&manifest_file, &bytes).map_err(|e| bad_archive(archive, e.to_string()))?;
    store_blob(archive, &manifest_file, &manifest_digest, blobs_dir)?;
    Ok(StagedImage {
        manifest_digest,
        config_digest,
        layer_digests: layers.into_iter().map(|(d, _)| d).collect(),
        reference_hint: entry.repo_tags.and_then(|t| t.into_iter().next()),
    })
}

fn read_json<T: serde::de::DeserializeOwned>(archive: &Path, path: &Path) -> MicrosandboxResult<T> {
    let bytes =
        fs::read(path).map_err(|e| bad_archive(archive, format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| bad_archive(archive, format!("{}: {e}", path.display())))
}

fn hex_of<'d>(archive: &Path, digest: &'d str) -> MicrosandboxResult<&'d str> {
    if is_sha256_digest(digest) {
        Ok(sha256_hex(digest))
    } else {
        Err(bad_archive(
            archive,
            format!("unsupported digest {digest:?} (sha256 only)"),
        ))
    }
}

fn blob_path(archive: &Path, staging: &Path, digest: &str) -> MicrosandboxResult<PathBuf> {
    Ok(staging.join("blobs/sha256").join(hex_of(archive, digest)?))
}

fn file_digest(archive: &Path, path: &Path) -> MicrosandboxResult<String> {
    sha256_file(path)
        .map(|(digest, _)| digest)
        .map_err(|e| bad_archive(archive, format!("{}: {e}", path.display())))
}

/// `sha256:<hex>` of the file at `path`, and its length.
pub(crate) fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let len = io::copy(&mut file, &mut hasher)?;
    Ok((prefixed_sha256(&hasher.finalize()), len))
}

/// Check `path` hashes to `digest`, then move it to the blob store.
fn store_blob(
    archive: &Path,
    path: &Path,
    digest: &str,
    blobs_dir: &Path,
) -> MicrosandboxResult<()> {
    let hex = hex_of(archive, digest)?;
    if !path.is_file() {
        return Err(bad_archive(
            archive,
            format!("blob {digest} is missing from the archive"),
        ));
    }
    let actual = file_digest(archive, path)?;
    if actual != digest {
        return Err(bad_archive(
            archive,
            format!("blob {digest} has content {actual}"),
        ));
    }
    let dest = blobs_dir.join(hex);
    if dest.exists() {
        return Ok(());
    }
    match publish::rename_noreplace(path, &dest) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => fs::copy(path, &dest).map(|_| ()),
        _ => Ok(()),
    }
    .map_err(|e| bad_archive(archive, format!("storing blob {digest}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_relative_refuses_escapes() {
        assert_eq!(
            safe_relative(Path::new("/a/./b")),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(safe_relative(Path::new("a/../b")), Some(PathBuf::from("b")));
        assert_eq!(safe_relative(Path::new("../x")), None);
        assert_eq!(safe_relative(Path::new("a/../../x")), None);
    }
}
