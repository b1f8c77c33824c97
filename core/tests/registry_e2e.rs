//! Pulling images from a real registry (Debian's `docker-registry`, fed by
//! `skopeo`): plain, with htpasswd auth, with TLS and a custom CA; a pulled
//! image boots (the one VM of this suite, through the implicit pull); a
//! re-pull downloads nothing; and hostile or failing registries (unknown
//! reference, wrong credentials, an oversized manifest, a corrupted blob, a
//! connection cut mid-blob) each give a clear error of a stable kind and
//! leave nothing in the store. Every registry and proxy is on 127.0.0.1.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestHome;
use common::registry::{RegistryOpts, Spoil, SpoilingProxy, TestRegistry};
use microsandbox::image::Image;
use microsandbox::image::busybox::{
    DEFAULT_BUSYBOX as DEFAULT_BUSYBOX_PATH, build_busybox_archive,
};
use microsandbox::{CallOpts, Config, MicrosandboxError, ProgressEvent, Sandbox};

/// A registry with the busybox image pushed as `busybox:1`.
fn registry_with_busybox(opts: RegistryOpts) -> (TestRegistry, PathBuf) {
    let registry = TestRegistry::start(opts);
    let archive = registry.dir.path().join("busybox.tar");
    build_busybox_archive(Path::new(DEFAULT_BUSYBOX_PATH), "busybox:1", &archive).unwrap();
    registry.push_archive(&archive, "busybox:1");
    (registry, archive)
}

/// This home, with credentials read from `docker_dir` only (never `~`).
fn config(home: &TestHome, docker_dir: &Path) -> Config {
    home.config().docker_config_dir(docker_dir)
}

/// A Docker `config.json` in a new directory under `home`, holding
/// `user:pass` for `host` (or no credentials at all).
fn docker_config(home: &TestHome, host: &str, creds: Option<(&str, &str)>) -> PathBuf {
    use base64::Engine;
    let dir = home.path().join(format!("docker-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let auths = match creds {
        Some((user, pass)) => {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            serde_json::json!({ host: { "auth": auth } })
        }
        None => serde_json::json!({}),
    };
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({ "auths": auths }).to_string(),
    )
    .unwrap();
    dir
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Nothing of a failed pull is left: no blob, no root disk, no staging,
/// no image row.
async fn assert_store_empty(home: &TestHome) {
    let images = home.path().join("images");
    for sub in ["blobs/sha256", "lower", "tmp"] {
        let dir = images.join(sub);
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{} still holds {left:?}", dir.display());
    }
    assert!(Image::list().await.unwrap().is_empty());
}

fn expect_kind(result: Result<impl std::fmt::Debug, MicrosandboxError>, kind: &str) -> String {
    let err = result.expect_err("the pull should have failed");
    assert_eq!(err.kind(), kind, "{err}");
    err.to_string()
}

/// The manifest (OCI) of `name:tag` in `registry`, and its digest.
fn manifest_of(registry: &TestRegistry, name: &str, tag: &str) -> (serde_json::Value, String) {
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json";
    let url = format!("{{base}}/v2/{name}/manifests/{tag}");
    let body = registry.curl(&["-H", accept, &url]);
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()))
    );
    (serde_json::from_str(&body).unwrap(), digest)
}

/// PUT a manifest (or index) under `name:tag`.
fn put_manifest(registry: &TestRegistry, name: &str, tag: &str, media_type: &str, body: &str) {
    let file = registry.dir.path().join(format!("put-{tag}.json"));
    std::fs::write(&file, body).unwrap();
    let url = format!("{{base}}/v2/{name}/manifests/{tag}");
    let content_type = format!("Content-Type: {media_type}");
    let data = format!("@{}", file.display());
    registry.curl(&[
        "-X",
        "PUT",
        "-H",
        &content_type,
        "--data-binary",
        &data,
        &url,
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_image_boots_and_a_repull_downloads_nothing() {
    let (registry, _) = registry_with_busybox(RegistryOpts::default());
    let home = TestHome::new();
    let docker = docker_config(&home, &registry.host(), None);
    let reference = format!("{}/busybox:1", registry.host());
    // An index (linux/amd64 and another platform) over the same manifest.
    let (manifest, digest) = manifest_of(&registry, "busybox", "1");
    let size = serde_json::to_string(&manifest).unwrap().len();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
              "size": size, "platform": { "architecture": "arm64", "os": "linux" } },
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
              "size": size, "platform": { "architecture": "amd64", "os": "linux" } }
        ]
    });
    put_manifest(
        &registry,
        "busybox",
        "multi",
        "application/vnd.oci.image.index.v1+json",
        &index.to_string(),
    );
    config(&home, &docker)
        .scope(async {
            let events: Arc<Mutex<Vec<ProgressEvent>>> = Arc::default();
            let sink = events.clone();
            let call = CallOpts {
                progress: Some(Arc::new(move |e| sink.lock().unwrap().push(e))),
                ..CallOpts::default()
            };
            let image = Image::pull_with(&reference, call).await.unwrap();
            assert_eq!(image.reference, reference);
            assert_eq!(image.origin.as_deref(), Some(reference.as_str()));
            assert_eq!(image.manifest_digest, digest);
            assert!(image.lower_path.is_file());
            let pull_events: Vec<_> = events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.phase.as_str() == "pull")
                .copied()
                .collect();
            let last = pull_events.last().expect("no pull progress");
            assert!(last.total_bytes > 0 && last.done_bytes == last.total_bytes);
            let listed = Image::list().await.unwrap();
            assert_eq!(listed.len(), 1);
            assert_eq!(listed[0].origin.as_deref(), Some(reference.as_str()));

            // Re-pull: the manifest is asked for again, no blob is.
            let gets = registry.blob_gets();
            assert!(gets >= 2, "the first pull fetched {gets} blobs");
            let start = Instant::now();
            let again = Image::pull(&reference).await.unwrap();
            let took = start.elapsed();
            assert_eq!(again.manifest_digest, digest);
            assert_eq!(registry.blob_gets(), gets, "a re-pull downloaded blobs");
            assert!(took < Duration::from_secs(1), "re-pull took {took:?}");
            eprintln!("re-pull of a present image: {took:?}");

            // Through the index: the linux/amd64 entry, whose blobs are all
            // present already.
            let multi = format!("{}/busybox:multi", registry.host());
            let picked = Image::pull(&multi).await.unwrap();
            assert_eq!(picked.manifest_digest, digest);
            assert_eq!(registry.blob_gets(), gets);
        })
        .await;

    // A second home boots it straight from the reference: the implicit pull.
    let booting = TestHome::new();
    let docker = docker_config(&booting, &registry.host(), None);
    config(&booting, &docker)
        .implicit_pull(true)
        .scope(async {
            let sandbox = Sandbox::builder("pulled")
                .image(&reference)
                .create()
                .await
                .unwrap();
            let out = sandbox.exec("echo", ["from the registry"]).await.unwrap();
            assert_eq!(out.stdout_text().trim(), "from the registry");
            drop(sandbox);
            Sandbox::remove("pulled").await.unwrap();
            let image = Image::get(&reference).await.unwrap();
            assert_eq!(image.origin.as_deref(), Some(reference.as_str()));
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_v2_manifests_pull_and_implicit_pull_can_be_turned_off() {
    let registry = TestRegistry::start(RegistryOpts::default());
    let archive = registry.dir.path().join("busybox.tar");
    build_busybox_archive(Path::new(DEFAULT_BUSYBOX_PATH), "busybox:v2", &archive).unwrap();
    // skopeo converts it to a Docker v2 schema 2 manifest.
    let mut cmd = std::process::Command::new("skopeo");
    cmd.args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
    ])
    .arg(format!("oci-archive:{}", archive.display()))
    .arg(format!("docker://{}/busybox:v2", registry.host()));
    assert!(cmd.status().unwrap().success());
    let home = TestHome::new();
    let docker = docker_config(&home, &registry.host(), None);
    let reference = format!("{}/busybox:v2", registry.host());
    config(&home, &docker)
        .implicit_pull(false)
        .scope(async {
            let err = Sandbox::builder("nopull").image(&reference).create().await;
            expect_kind(err.map(|_| ()), "ImageNotFound");
            let image = Image::pull(&reference).await.unwrap();
            let manifest = std::fs::read_to_string(
                home.path()
                    .join("images/blobs/sha256")
                    .join(&image.manifest_digest[7..]),
            )
            .unwrap();
            assert!(manifest.contains("application/vnd.docker.distribution.manifest.v2+json"));
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_auth_takes_the_right_credentials_only() {
    let opts = RegistryOpts {
        auth: Some(("alice".into(), "s3cret".into())),
        tls: false,
    };
    let (registry, _) = registry_with_busybox(opts);
    let reference = format!("{}/busybox:1", registry.host());
    for (creds, ok) in [
        (None, false),
        (Some(("alice", "wrong")), false),
        (Some(("alice", "s3cret")), true),
    ] {
        let home = TestHome::new();
        let docker = docker_config(&home, &registry.host(), creds);
        config(&home, &docker)
            .scope(async {
                let pulled = Image::pull(&reference).await;
                if ok {
                    assert_eq!(pulled.unwrap().reference, reference);
                } else {
                    let message = expect_kind(pulled, "Registry");
                    assert!(message.contains("credentials"), "{message}");
                    assert_store_empty(&home).await;
                }
            })
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_needs_the_custom_ca() {
    let opts = RegistryOpts {
        auth: None,
        tls: true,
    };
    let (registry, _) = registry_with_busybox(opts);
    let reference = format!("{}/busybox:1", registry.host());
    let home = TestHome::new();
    let docker = docker_config(&home, &registry.host(), None);
    config(&home, &docker)
        .scope(async {
            expect_kind(Image::pull(&reference).await, "Registry");
            assert_store_empty(&home).await;
        })
        .await;
    config(&home, &docker)
        .registry_ca(registry.ca_file())
        .scope(async {
            let image = Image::pull(&reference).await.unwrap();
            assert_eq!(image.origin.as_deref(), Some(reference.as_str()));
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_references_and_oversized_manifests_leave_nothing() {
    let (registry, _) = registry_with_busybox(RegistryOpts::default());
    // Over the 4 MiB limit: the registry refuses to store such a manifest,
    // so a proxy pads the one it serves.
    let proxy = SpoilingProxy::start(registry.port, "/manifests/1".into(), Spoil::Oversize);
    let home = TestHome::new();
    let docker = docker_config(&home, &registry.host(), None);
    config(&home, &docker)
        .scope(async {
            let host = registry.host();
            for missing in [format!("{host}/busybox:nope"), format!("{host}/nothing:1")] {
                expect_kind(Image::pull(&missing).await, "ImageNotFound");
            }
            expect_kind(Image::pull("not a reference!").await, "InvalidConfig");
            let padded = format!("{}/busybox:1", proxy.host());
            let message = expect_kind(Image::pull(&padded).await, "Registry");
            assert!(message.contains("limit"), "{message}");
            assert_store_empty(&home).await;
        })
        .await;
}

/// The busybox layer's digest (the blob the proxy spoils).
fn layer_digest(registry: &TestRegistry) -> String {
    let (manifest, _) = manifest_of(registry, "busybox", "1");
    manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_blob_is_refused() {
    let (registry, _) = registry_with_busybox(RegistryOpts::default());
    let proxy = SpoilingProxy::start(registry.port, layer_digest(&registry), Spoil::Corrupt);
    let home = TestHome::new();
    let docker = docker_config(&home, &proxy.host(), None);
    config(&home, &docker)
        .scope(async {
            let reference = format!("{}/busybox:1", proxy.host());
            let message = expect_kind(Image::pull(&reference).await, "Registry");
            assert!(message.contains("does not match its digest"), "{message}");
            assert_store_empty(&home).await;
        })
        .await;
    assert_eq!(proxy.spoiled.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_blob_is_retried_once_then_fails() {
    let (registry, _) = registry_with_busybox(RegistryOpts::default());
    let proxy = SpoilingProxy::start(registry.port, layer_digest(&registry), Spoil::Cut);
    let home = TestHome::new();
    let docker = docker_config(&home, &proxy.host(), None);
    config(&home, &docker)
        .scope(async {
            let reference = format!("{}/busybox:1", proxy.host());
            let message = expect_kind(Image::pull(&reference).await, "Registry");
            assert!(message.contains("failed twice"), "{message}");
            assert_store_empty(&home).await;
        })
        .await;
    assert_eq!(proxy.spoiled.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// Files under the registry's blob store (one per stored blob).
fn stored_blobs(registry: &TestRegistry) -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, n);
            } else if path.file_name().is_some_and(|f| f == "data") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(
        &registry
            .dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256"),
        &mut n,
    );
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_pushed_is_seen_by_skopeo_and_pulled_into_another_home() {
    use common::artifacts::make_artifact;
    use microsandbox::snapshot::remote::SNAPSHOT_ARTIFACT_TYPE;
    use microsandbox::{IntegrityAlgorithm, Snapshot};

    let (registry, _) = registry_with_busybox(RegistryOpts::default());
    let reference = format!("{}/snapshots/base:1", registry.host());
    let source = TestHome::new();
    let docker = docker_config(&source, &registry.host(), None);
    let (digest, pushed) = config(&source, &docker)
        .scope(async {
            let snap = make_artifact(
                &source.snapshots_dir().join("base"),
                3,
                None,
                Some(IntegrityAlgorithm::MerkleSha256V1),
            );
            Snapshot::reindex_default().await.unwrap();
            let pushed = Snapshot::push("base", &reference).await.unwrap();
            // Pushed again: every blob is there already, none is stored anew.
            let blobs = stored_blobs(&registry);
            let uploads = |r: &TestRegistry| {
                r.log()
                    .lines()
                    .filter(|l| l.contains("\"POST /v2/") && l.contains("/blobs/uploads/"))
                    .count()
            };
            let before = uploads(&registry);
            assert_eq!(Snapshot::push("base", &reference).await.unwrap(), pushed);
            assert_eq!(stored_blobs(&registry), blobs);
            assert_eq!(uploads(&registry), before, "a re-push uploaded blobs");
            (snap.digest().to_string(), pushed)
        })
        .await;

    // skopeo, an independent client, sees the artifact and its type.
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(manifest["artifactType"], SNAPSHOT_ARTIFACT_TYPE);
    let raw_digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&raw.stdout))
    );
    assert_eq!(raw_digest, pushed);

    let target = TestHome::new();
    let docker = docker_config(&target, &registry.host(), None);
    config(&target, &docker)
        .scope(async {
            let pulled = Snapshot::pull(&reference, None).await.unwrap();
            assert_eq!(pulled.digest(), digest);
            let report = Snapshot::open(pulled.path().to_string_lossy().into_owned())
                .await
                .unwrap()
                .verify()
                .await
                .unwrap();
            assert!(
                matches!(
                    report.upper,
                    microsandbox::UpperVerifyStatus::Verified { .. }
                ),
                "{report:?}"
            );
            // An image is not a snapshot: refused, nothing imported.
            let image = format!("{}/busybox:1", registry.host());
            let message = expect_kind(Snapshot::pull(&image, None).await, "Registry");
            assert!(message.contains("artifact"), "{message}");
            assert_eq!(Snapshot::list().await.unwrap().len(), 1);
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_cancelled_as_it_starts_leaves_nothing() {
    let (registry, _) = registry_with_busybox(RegistryOpts::default());
    let home = TestHome::new();
    let docker = docker_config(&home, &registry.host(), None);
    config(&home, &docker)
        .scope(async {
            let token = microsandbox::CancellationToken::new();
            let fire = token.clone();
            // Fired by the first progress event: before any blob is fetched.
            let call = CallOpts {
                progress: Some(Arc::new(move |_| fire.cancel())),
                cancel: Some(token),
            };
            let reference = format!("{}/busybox:1", registry.host());
            expect_kind(Image::pull_with(&reference, call).await, "Cancelled");
            assert_store_empty(&home).await;
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_push_authenticates_with_docker_credentials() {
    use common::artifacts::make_artifact;
    use microsandbox::Snapshot;

    let opts = RegistryOpts {
        auth: Some(("bob".into(), "pw".into())),
        tls: false,
    };
    let registry = TestRegistry::start(opts);
    let reference = format!("{}/snaps/auth:1", registry.host());
    for (creds, ok) in [(Some(("bob", "nope")), false), (Some(("bob", "pw")), true)] {
        let home = TestHome::new();
        let docker = docker_config(&home, &registry.host(), creds);
        config(&home, &docker)
            .scope(async {
                make_artifact(&home.snapshots_dir().join("base"), 7, None, None);
                Snapshot::reindex_default().await.unwrap();
                let pushed = Snapshot::push("base", &reference).await;
                if ok {
                    assert!(pushed.unwrap().starts_with("sha256:"));
                } else {
                    expect_kind(pushed, "Registry");
                }
            })
            .await;
    }
}
