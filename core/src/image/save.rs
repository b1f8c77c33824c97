//! Writing an image of the store as an OCI image layout archive: the tar
//! `docker save` and `skopeo copy … oci-archive:` write, which other tools
//! (`skopeo`, `podman load`, containerd, [`Image::load`](super::Image::load))
//! read. The blobs go in exactly as stored, so the manifest digest is the
//! same on the other side.
//!
//! ```text
//! oci-layout                 {"imageLayoutVersion":"1.0.0"}
//! index.json                 one manifest, annotated with the reference
//! blobs/sha256/<hex>         manifest, config, layers
//! ```
//!
//! The archive is deterministic (entries in that order, owner 0, time 0):
//! saving an image twice gives the same bytes. It is written to a hidden
//! temporary file beside `out` and renamed over it at the end, so `out`
//! is either untouched or complete; an existing `out` is replaced, as
//! `docker save -o` does.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::json;

use super::StoreLock;
use crate::control::{Control, CountingReader, ProgressTracker};
use crate::digest::sha256_hex;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::progress::ProgressPhase;
use crate::publish::StagedFile;

/// Annotation of `index.json` naming the image (OCI image spec).
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The same, as containerd writes and reads it.
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// Media type of a manifest that does not say its own.
const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Save the image `wanted` (reference or manifest digest) to `out`.
pub(crate) fn save_blocking(
    home: &MsbHome,
    wanted: &str,
    out: &Path,
    control: &Control,
) -> MicrosandboxResult<()> {
    // Shared: a concurrent remove must not sweep the blobs being read.
    let _store = StoreLock::shared(home)?;
    let info = super::get_blocking(home, wanted)?;
    let blobs = super::stored_blobs(home, &info.manifest_digest)?;
    if out.is_dir() {
        return Err(MicrosandboxError::InvalidConfig(format!(
            "{} is a directory; give the archive's file name",
            out.display()
        )));
    }
    // `stored_blobs` lists the manifest first.
    let manifest = &blobs[0];
    let manifest_bytes =
        std::fs::read(&manifest.path).map_err(|e| MicrosandboxError::io(&manifest.path, e))?;
    let media_type = media_type_of(&manifest_bytes);
    let index = index_json(
        &info.reference,
        &manifest.digest,
        manifest.size,
        &media_type,
    );
    let staged = StagedFile::new(out, "saving", 0o644)?;
    let tracker = ProgressTracker::new(
        control,
        ProgressPhase::Export,
        blobs.iter().map(|b| b.size).sum(),
    );
    write_layout(staged.file(), &index, &blobs, &tracker)
        .map_err(|e| MicrosandboxError::io(out, e))?;
    control.check()?;
    staged.publish(true)?;
    tracker.finish();
    Ok(())
}

/// The tar: `oci-layout`, `index.json`, then every blob.
fn write_layout(
    file: &File,
    index: &[u8],
    blobs: &[super::StoredBlob],
    tracker: &ProgressTracker,
) -> io::Result<()> {
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    append_file(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append_file(&mut tar, "index.json", index)?;
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = header(tar::EntryType::Directory, 0, 0o755);
        tar.append_data(&mut header, dir, io::empty())?;
    }
    for blob in blobs {
        let mut header = header(tar::EntryType::Regular, blob.size, 0o644);
        let reader = CountingReader {
            inner: File::open(&blob.path)?,
            tracker,
        };
        let name = format!("blobs/sha256/{}", sha256_hex(&blob.digest));
        tar.append_data(&mut header, name, reader)?;
    }
    tar.into_inner()?.flush()
}

fn append_file<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut header = header(tar::EntryType::Regular, bytes.len() as u64, 0o644);
    tar.append_data(&mut header, name, bytes)
}

/// A header that does not depend on who saves, or when.
fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// `index.json` listing the one manifest, named `reference`.
fn index_json(reference: &str, digest: &str, size: u64, media_type: &str) -> Vec<u8> {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": {
                CONTAINERD_NAME_ANNOTATION: reference,
                REF_NAME_ANNOTATION: reference,
            },
        }],
    });
    // A `Value` always serializes.
    serde_json::to_vec(&index).unwrap_or_default()
}

/// The media type a manifest declares (OCI or Docker v2), OCI's if none.
fn media_type_of(manifest: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(manifest)
        .ok()
        .and_then(|v| v["mediaType"].as_str().map(str::to_string))
        .unwrap_or_else(|| OCI_MANIFEST_MEDIA_TYPE.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_names_the_image_both_ways_and_keeps_the_manifest_media_type() {
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
        assert_eq!(
            media_type_of(docker),
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(media_type_of(b"{}"), OCI_MANIFEST_MEDIA_TYPE);
        let index: serde_json::Value =
            serde_json::from_slice(&index_json("a/b:c", "sha256:00", 7, "m")).unwrap();
        let entry = &index["manifests"][0];
        assert_eq!(entry["annotations"][REF_NAME_ANNOTATION], "a/b:c");
        assert_eq!(entry["annotations"][CONTAINERD_NAME_ANNOTATION], "a/b:c");
        assert_eq!(
            (entry["size"].as_u64(), &entry["mediaType"]),
            (Some(7), &"m".into())
        );
    }
}
