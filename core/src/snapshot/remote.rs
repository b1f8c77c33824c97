//! Snapshots through an OCI registry: `Snapshot::push` and `Snapshot::pull`.
//! A snapshot travels as an OCI artifact (`artifactType`
//! [`SNAPSHOT_ARTIFACT_TYPE`]) whose one layer is the snapshot's archive —
//! the same `.tar.zst` that `export` writes, with its parents and (when it
//! is present here) its image — so a pull runs the existing `import` on it:
//! the same hostile-input checks, integrity on landing, nothing partial.
//! See `docs/registry.md` for the format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::control::{CallOpts, Control, long_call};
use crate::error::MicrosandboxResult;
use crate::home::MsbHome;
use crate::image;
use crate::registry::{self, ArtifactUpload};
use crate::snapshot::archive::{self, ExportOpts};
use crate::snapshot::{Snapshot, SnapshotHandle, resolve};

/// `artifactType` of a snapshot in a registry.
pub const SNAPSHOT_ARTIFACT_TYPE: &str = "application/vnd.microsandbox.snapshot.v1";
/// Media type of its one layer: a snapshot archive (`docs/archive.md`).
pub const SNAPSHOT_ARCHIVE_MEDIA_TYPE: &str =
    "application/vnd.microsandbox.snapshot.archive.v1.tar+zstd";
/// Manifest annotation: the snapshot's own digest.
pub const SNAPSHOT_DIGEST_ANNOTATION: &str = "dev.microsandbox.snapshot.digest";
/// Manifest annotation: the reference of the image it pins.
pub const SNAPSHOT_IMAGE_ANNOTATION: &str = "dev.microsandbox.snapshot.image";

impl Snapshot {
    /// Push the snapshot `name_or_path` (name, digest or path, as
    /// [`export`](Self::export) takes) to `reference` (`host/repo:tag`) as an
    /// OCI artifact holding its archive with its parents and, when present
    /// here, its image. A blob the registry already has is not uploaded
    /// again. Returns the artifact's manifest digest.
    ///
    /// Errors: those of `export`, and `Registry` / `InvalidConfig` as for
    /// [`Image::pull`](crate::image::Image::pull).
    pub async fn push(
        name_or_path: impl Into<String>,
        reference: impl Into<String>,
    ) -> MicrosandboxResult<String> {
        Self::push_with(name_or_path, reference, CallOpts::default()).await
    }

    /// [`push`](Self::push), reporting `export` then `push` progress and
    /// obeying `call.cancel`.
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

    /// Pull the snapshot artifact `reference` and import it into `dest`
    /// (default: the home's snapshots directory), exactly as
    /// [`import`](Self::import) does with an archive: every check, nothing
    /// partial. An artifact of another type is a `Registry` error.
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

fn push_blocking(
    home: &MsbHome,
    key: &str,
    reference: &str,
    control: &Control,
) -> MicrosandboxResult<String> {
    let snap = resolve::resolve(home, key)?.open()?;
    // Already there: an export is not byte-identical twice (its tar times),
    // so a re-push would otherwise upload the archive again.
    if let Some((digest, annotations)) =
        registry::existing_artifact_blocking(home, reference, SNAPSHOT_ARTIFACT_TYPE)?
        && annotations
            .get(SNAPSHOT_DIGEST_ANNOTATION)
            .map(String::as_str)
            == Some(snap.digest())
    {
        return Ok(digest);
    }
    let with_image = image::get_blocking(home, snap.image_manifest_digest()).is_ok();
    let staging = image::staging_dir(home, "push-snapshot")?;
    let file = staging.path().join("snapshot.tar.zst");
    let opts = ExportOpts {
        with_parents: true,
        with_image,
        plain_tar: false,
    };
    archive::export_blocking(home, key, &file, opts, control)?;
    let annotations = BTreeMap::from([
        (
            SNAPSHOT_DIGEST_ANNOTATION.to_string(),
            snap.digest().to_string(),
        ),
        (
            SNAPSHOT_IMAGE_ANNOTATION.to_string(),
            snap.image_ref().to_string(),
        ),
    ]);
    let upload = ArtifactUpload {
        artifact_type: SNAPSHOT_ARTIFACT_TYPE,
        media_type: SNAPSHOT_ARCHIVE_MEDIA_TYPE,
        file: &file,
        title: "snapshot.tar.zst",
        annotations,
    };
    registry::push_artifact_blocking(home, reference, &upload, control)
}

fn pull_blocking(
    home: &MsbHome,
    reference: &str,
    dest: Option<&Path>,
    control: &Control,
) -> MicrosandboxResult<SnapshotHandle> {
    let staging = image::staging_dir(home, "pull-snapshot")?;
    let file = staging.path().join("snapshot.tar.zst");
    registry::pull_artifact_blocking(
        home,
        reference,
        SNAPSHOT_ARTIFACT_TYPE,
        SNAPSHOT_ARCHIVE_MEDIA_TYPE,
        &file,
        control,
    )?;
    archive::import_blocking(home, &file, dest, control)
}
