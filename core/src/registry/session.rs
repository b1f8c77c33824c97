//! One authenticated conversation with a repository, for the callers that
//! make many requests (an image push, a snapshot push or pull): blobs sent
//! from files as a stream (HEAD first, so a blob the registry has is never
//! sent), manifests pushed and fetched (size limit, digest checked), blobs
//! downloaded with the checks of an image pull.

use std::path::Path;

use oci_client::{Reference, RegistryOperation};
use tokio::sync::mpsc;

use super::transport::{Connection, after_tls_failure, is_transport, registry_error};
use super::{Blob, MAX_MANIFEST_BYTES, check_manifest_digest};
use crate::control::{Control, ProgressTracker};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;

/// Bytes read from a file at a time while it streams up.
const UPLOAD_CHUNK: usize = 4 << 20;

/// Blobs uploaded at once.
const CONCURRENT_UPLOADS: usize = 4;

/// A connection to the registry of `reference`, authenticated for it.
pub(crate) struct Session {
    conn: Connection,
    /// The reference the session was opened for (its repository is the one
    /// blobs go to).
    reference: Reference,
}

impl Session {
    /// A session allowed to push to `reference`'s repository (and pull from
    /// it), over plain HTTP for an insecure host whose TLS attempt fails.
    pub(crate) async fn for_push(
        home: &MsbHome,
        reference: &Reference,
    ) -> MicrosandboxResult<Self> {
        let settings = home.registry();
        let conn = Connection::open(settings, reference)?;
        let auth = |conn: &Connection| {
            let (client, auth) = (conn.client.clone(), conn.auth.clone());
            let reference = reference.clone();
            async move {
                client
                    .auth(&reference, &auth, RegistryOperation::Push)
                    .await
            }
        };
        let conn = match auth(&conn).await {
            Ok(_) => conn,
            Err(tls) if conn.insecure && is_transport(&tls) => {
                let conn = conn.over_http(settings, reference)?;
                auth(&conn)
                    .await
                    .map_err(|e| after_tls_failure(registry_error(reference, &e), &tls))?;
                conn
            }
            Err(e) => return Err(registry_error(reference, &e)),
        };
        Ok(Self {
            conn,
            reference: reference.clone(),
        })
    }

    /// A session for pulling `reference`, with the manifest it names (size
    /// limit and digest checked) and that manifest's digest.
    pub(crate) async fn for_pull(
        home: &MsbHome,
        reference: &Reference,
    ) -> MicrosandboxResult<(Self, Vec<u8>, String)> {
        let (conn, bytes, digest) = super::connect_and_fetch_manifest(home, reference).await?;
        checked_manifest(reference, &bytes, &digest)?;
        let session = Self {
            conn,
            reference: reference.clone(),
        };
        Ok((session, bytes, digest))
    }

    /// The same repository at `digest`.
    pub(crate) fn at_digest(&self, digest: &str) -> Reference {
        self.reference.clone_with_digest(digest.to_string())
    }

    fn failed(&self, err: oci_client::errors::OciDistributionError) -> MicrosandboxError {
        registry_error(&self.reference, &err)
    }

    /// Whether the repository has the blob `digest`.
    async fn has_blob(&self, digest: &str) -> MicrosandboxResult<bool> {
        self.conn
            .client
            .blob_exists(&self.reference, digest)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Send `bytes` as the blob `digest`, unless the repository has it.
    pub(crate) async fn push_small_blob(
        &self,
        digest: &str,
        bytes: &[u8],
    ) -> MicrosandboxResult<()> {
        if !self.has_blob(digest).await? {
            self.conn
                .client
                .push_blob(&self.reference, bytes.to_vec(), digest)
                .await
                .map_err(|e| self.failed(e))?;
        }
        Ok(())
    }

    /// Stream the file `path` (`size` bytes, content `digest`) as a blob
    /// (one PUT whose body is the file), unless the repository has it; it is
    /// read a chunk at a time, never whole. Every byte, sent or found
    /// present, advances `tracker`. Returns whether it was sent.
    async fn push_file_blob(
        &self,
        digest: &str,
        path: &Path,
        size: u64,
        tracker: &ProgressTracker<'_>,
        control: &Control,
    ) -> MicrosandboxResult<bool> {
        control.check()?;
        if self.has_blob(digest).await? {
            tracker
                .advance(size)
                .map_err(|e| MicrosandboxError::io(path, e))?;
            return Ok(false);
        }
        let mut file = std::fs::File::open(path).map_err(|e| MicrosandboxError::io(path, e))?;
        // The client wants a 'static stream: chunks cross a small channel
        // from this task, which reads the file and reports progress.
        let (tx, rx) = mpsc::channel::<bytes::Bytes>(2);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (Ok(chunk), rx))
        });
        let feed = async move {
            use std::io::Read;
            loop {
                let mut chunk = vec![0u8; UPLOAD_CHUNK];
                let mut filled = 0;
                while filled < chunk.len() {
                    let n = file
                        .read(&mut chunk[filled..])
                        .map_err(|e| MicrosandboxError::io(path, e))?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    return Ok(());
                }
                chunk.truncate(filled);
                tracker
                    .advance(filled as u64)
                    .map_err(|e| MicrosandboxError::io(path, e))?;
                if tx.send(chunk.into()).await.is_err() {
                    return Ok(()); // the upload failed; its error is the one told
                }
            }
        };
        let upload = self
            .conn
            .client
            .push_blob_stream(&self.reference, stream, digest, Some(size));
        let (fed, sent) = tokio::join!(feed, upload);
        // A cancelled or unreadable feed is the cause of whatever the upload says.
        fed?;
        sent.map_err(|e| self.failed(e))?;
        Ok(true)
    }

    /// Push the files `blobs` (digest, path, size), [`CONCURRENT_UPLOADS`]
    /// at a time, each as [`push_file_blob`](Self::push_file_blob) does.
    pub(crate) async fn push_file_blobs(
        &self,
        blobs: &[(&str, &Path, u64)],
        tracker: &ProgressTracker<'_>,
        control: &Control,
    ) -> MicrosandboxResult<()> {
        use futures_util::{StreamExt, TryStreamExt};
        futures_util::stream::iter(
            blobs.iter().map(|&(digest, path, size)| {
                self.push_file_blob(digest, path, size, tracker, control)
            }),
        )
        .buffer_unordered(CONCURRENT_UPLOADS)
        .try_collect::<Vec<bool>>()
        .await
        .map(drop)
    }

    /// Put `body` (of `media_type`) as the manifest `at` (a tag or digest
    /// of this repository).
    pub(crate) async fn push_manifest(
        &self,
        at: &Reference,
        body: Vec<u8>,
        media_type: &str,
    ) -> MicrosandboxResult<()> {
        let content_type =
            http::HeaderValue::from_str(media_type).map_err(|_| MicrosandboxError::Registry {
                reference: at.whole(),
                reason: format!("manifest media type '{media_type}' is not a header value"),
            })?;
        self.conn
            .client
            .push_manifest_raw(at, body, content_type)
            .await
            .map(|_| ())
            .map_err(|e| registry_error(at, &e))
    }

    /// Whether the repository has a manifest `at`.
    pub(crate) async fn has_manifest(&self, at: &Reference) -> MicrosandboxResult<bool> {
        match self
            .conn
            .client
            .fetch_manifest_digest(at, &self.conn.auth)
            .await
            .map_err(|e| registry_error(at, &e))
        {
            Ok(_) => Ok(true),
            Err(MicrosandboxError::ImageNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The manifest `at`, at most [`MAX_MANIFEST_BYTES`], checked against
    /// its digest; and that digest.
    pub(crate) async fn fetch_manifest(
        &self,
        at: &Reference,
    ) -> MicrosandboxResult<(Vec<u8>, String)> {
        let (bytes, digest) = super::fetch_manifest(&self.conn, at)
            .await
            .map_err(|e| registry_error(at, &e))?;
        checked_manifest(at, &bytes, &digest)?;
        Ok((bytes, digest))
    }

    /// Download `blob` to `dest`, with an image pull's checks (size, digest
    /// as it lands, one retry of a broken connection).
    pub(crate) async fn download(
        &self,
        blob: &Blob,
        dest: &Path,
        tracker: &ProgressTracker<'_>,
        control: &Control,
    ) -> MicrosandboxResult<()> {
        super::download_blob(&self.conn, &self.reference, blob, dest, tracker, control).await
    }
}

/// A manifest of `reference` must be within the size limit and hash to
/// `digest`.
fn checked_manifest(reference: &Reference, bytes: &[u8], digest: &str) -> MicrosandboxResult<()> {
    let bad = |reason: String| MicrosandboxError::Registry {
        reference: reference.whole(),
        reason,
    };
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(bad(format!(
            "its manifest is {} bytes, over the {MAX_MANIFEST_BYTES}-byte limit",
            bytes.len()
        )));
    }
    check_manifest_digest(bytes, digest).map_err(bad)
}
