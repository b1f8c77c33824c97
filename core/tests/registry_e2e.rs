//! Pulling images from a real registry (Debian's `docker-registry`, fed by
//! `skopeo`): plain, with htpasswd auth, with TLS and a custom CA; a pulled
//! image boots (the one VM of this suite, through the implicit pull); a
//! re-pull downloads nothing; and hostile or failing registries (unknown
//! reference, wrong credentials, an oversized manifest, a corrupted blob, a
//! connection cut mid-blob) each give a clear error of a stable kind and
//! leave nothing in the store. An image pushed keeps its manifest digest;
//! snapshots travel as artifacts, a child's push uploading only its own
//! blobs, and a pulled snapshot boots with its file (the second VM).
//! Every registry and proxy is on 127.0.0.1.

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

/// A snapshot pull of `host/path` into a new home fails with `Registry`
/// (its message holding `needle`) and leaves nothing: no snapshot
/// directory, no index row, and the image store empty too.
async fn snapshot_pull_leaves_nothing(host: &str, path: &str, needle: &str) {
    let home = TestHome::new();
    let docker = docker_config(&home, host, None);
    config(&home, &docker)
        .scope(async {
            let reference = format!("{host}/{path}");
            let pulled = microsandbox::Snapshot::pull(&reference, None).await;
            let message = expect_kind(pulled, "Registry");
            assert!(message.contains(needle), "{message}");
            assert!(microsandbox::Snapshot::list().await.unwrap().is_empty());
            let left: Vec<_> = std::fs::read_dir(home.snapshots_dir())
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{left:?}");
            assert_store_empty(&home).await;
        })
        .await;
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
    let endless = SpoilingProxy::start(registry.port, "/manifests/1".into(), Spoil::Endless);
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
            // No length, no end: refused once past the limit, not read whole.
            let endless = format!("{}/busybox:1", endless.host());
            let started = Instant::now();
            let message = expect_kind(Image::pull(&endless).await, "Registry");
            assert!(message.contains("limit"), "{message}");
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{:?}",
                started.elapsed()
            );
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

/// Load the busybox image into the home in force (no VM needed).
async fn load_busybox_image(home: &TestHome) -> microsandbox::image::ImageInfo {
    let archive = home.path().join("busybox.tar");
    build_busybox_archive(Path::new(DEFAULT_BUSYBOX_PATH), BUSYBOX, &archive).unwrap();
    Image::load(&archive, None).await.unwrap()
}

const BUSYBOX: &str = "busybox:e2e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pushed_keeps_its_digest_and_comes_back() {
    let registry = TestRegistry::start(RegistryOpts::default());
    let target = format!("{}/pushed/busybox:1", registry.host());
    let source = TestHome::new();
    let docker = docker_config(&source, &registry.host(), None);
    let loaded = config(&source, &docker)
        .scope(async {
            let loaded = load_busybox_image(&source).await;
            // Cancelled by its first progress event: no blob sent.
            let token = microsandbox::CancellationToken::new();
            let fire = token.clone();
            let call = CallOpts {
                progress: Some(Arc::new(move |_| fire.cancel())),
                cancel: Some(token),
            };
            expect_kind(Image::push_with(BUSYBOX, &target, call).await, "Cancelled");
            assert_eq!(registry.uploads(), 0);
            let events: Arc<Mutex<Vec<ProgressEvent>>> = Arc::default();
            let sink = events.clone();
            let call = CallOpts {
                progress: Some(Arc::new(move |e| sink.lock().unwrap().push(e))),
                ..CallOpts::default()
            };
            let digest = Image::push_with(BUSYBOX, &target, call).await.unwrap();
            assert_eq!(digest, loaded.manifest_digest);
            let last = *events.lock().unwrap().last().expect("no push progress");
            assert_eq!(last.phase.as_str(), "push");
            assert!(last.total_bytes > 0 && last.done_bytes == last.total_bytes);
            // Pushed again: every blob is there, none is uploaded.
            let (uploads, stored) = (registry.uploads(), registry.stored_blobs());
            assert_eq!(
                Image::push(&loaded.manifest_digest, &target).await.unwrap(),
                digest
            );
            assert_eq!(registry.uploads(), uploads, "a re-push uploaded blobs");
            assert_eq!(registry.stored_blobs(), stored);
            expect_kind(Image::push("nothing:here", &target).await, "ImageNotFound");
            loaded
        })
        .await;
    // skopeo sees the same manifest, byte for byte.
    let (_, seen) = registry.skopeo_raw(&target);
    assert_eq!(seen, loaded.manifest_digest);

    // An image whose blobs the store lacks (only a root disk): a clear
    // error, for the image and for a snapshot that pins it.
    config(&source, &docker)
        .scope(async {
            use common::artifacts::make_artifact;
            use common::registry::repin;
            use microsandbox::Snapshot;
            let hex = &loaded.manifest_digest["sha256:".len()..];
            std::fs::remove_file(source.path().join("images/blobs/sha256").join(hex)).unwrap();
            let message = expect_kind(Image::push(BUSYBOX, &target).await, "ImageNotFound");
            assert!(message.contains("has no blobs"), "{message}");
            let dir = source.snapshots_dir().join("orphan");
            make_artifact(&dir, 4, None, None);
            repin(&dir, BUSYBOX, &loaded.manifest_digest);
            let snapshot = format!("{}/snaps/orphan:1", registry.host());
            let message = expect_kind(Snapshot::push("orphan", &snapshot).await, "ImageNotFound");
            assert!(message.contains("has no blobs"), "{message}");
        })
        .await;

    let other = TestHome::new();
    let docker = docker_config(&other, &registry.host(), None);
    config(&other, &docker)
        .scope(async {
            let pulled = Image::pull(&target).await.unwrap();
            assert_eq!(pulled.manifest_digest, loaded.manifest_digest);
            assert_eq!(pulled.config_digest, loaded.config_digest);
        })
        .await;
}

/// The one VM of this test: a busybox sandbox writes a file and is
/// captured as `base`; a child of it (made without a VM) pins the same
/// image. Pushed, the child uploads only its own blobs; pulled into a
/// second home (parent and image with it), it verifies and `base` boots
/// with the file; through a corrupting proxy, a third home gets a
/// `Registry` error and nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_travel_as_artifacts_with_their_parents_and_image() {
    use common::artifacts::make_artifact;
    use common::registry::repin;
    use microsandbox::snapshot::remote::{SNAPSHOT_ARTIFACT_TYPE, SNAPSHOT_PARENT_ANNOTATION};
    use microsandbox::{IntegrityAlgorithm, Snapshot};

    let registry = TestRegistry::start(RegistryOpts::default());
    let base_ref = format!("{}/snaps/app:base", registry.host());
    let child_ref = format!("{}/snaps/app:child", registry.host());
    let source = TestHome::new();
    let docker = docker_config(&source, &registry.host(), None);
    let (base, child, base_pushed, child_pushed, image) = config(&source, &docker)
        .scope(async {
            source.load_busybox().await;
            let api = common::sandbox_running("api", "echo travelled > /root/carried").await;
            api.stop().await.unwrap();
            let base = Snapshot::builder("api")
                .name("base")
                .record_integrity()
                .create()
                .await
                .unwrap();
            Sandbox::remove("api").await.unwrap();
            let image = Image::get(base.image_manifest_digest()).await.unwrap();
            let dir = source.snapshots_dir().join("child");
            make_artifact(
                &dir,
                9,
                Some(base.digest()),
                Some(IntegrityAlgorithm::MerkleSha256V1),
            );
            let child = repin(&dir, base.image_ref(), base.image_manifest_digest());
            Snapshot::reindex_default().await.unwrap();

            let base_pushed = Snapshot::push("base", &base_ref).await.unwrap();
            let before = registry.stored_blobs();
            let child_pushed = Snapshot::push("child", &child_ref).await.unwrap();
            // Its manifest.json, its upper, its artifact manifest: nothing
            // of the parent or the image again.
            assert_eq!(registry.stored_blobs(), before + 3);
            // Pushed again (deterministic blobs): nothing uploaded.
            let uploads = registry.uploads();
            assert_eq!(
                Snapshot::push("child", &child_ref).await.unwrap(),
                child_pushed
            );
            assert_eq!(registry.uploads(), uploads, "a re-push uploaded blobs");
            assert_eq!(registry.stored_blobs(), before + 3);
            (base, child, base_pushed, child_pushed, image)
        })
        .await;

    // skopeo, an independent client, sees the artifact, its type and parent.
    let (manifest, seen) = registry.skopeo_raw(&child_ref);
    assert_eq!(seen, child_pushed);
    assert_eq!(manifest["artifactType"], SNAPSHOT_ARTIFACT_TYPE);
    assert_eq!(
        manifest["annotations"][SNAPSHOT_PARENT_ANNOTATION],
        base_pushed.as_str()
    );
    // The local image went into the same repository, by digest.
    let (_, image_seen) = registry.skopeo_raw(&format!(
        "{}/snaps/app@{}",
        registry.host(),
        image.manifest_digest
    ));
    assert_eq!(image_seen, image.manifest_digest);

    // Through a proxy that corrupts the parent's upper: a Registry error,
    // and nothing in that home (no snapshot, no index row, no image).
    let (base_manifest, _) = registry.skopeo_raw(&base_ref);
    let layers = base_manifest["layers"].as_array().unwrap();
    let upper = layers.last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let proxy = SpoilingProxy::start(registry.port, upper, Spoil::Corrupt);
    snapshot_pull_leaves_nothing(
        &proxy.host(),
        "snaps/app:child",
        "does not match its digest",
    )
    .await;
    assert_eq!(proxy.spoiled.load(std::sync::atomic::Ordering::SeqCst), 1);

    let target = TestHome::new();
    let docker = docker_config(&target, &registry.host(), None);
    config(&target, &docker)
        .scope(async {
            let pulled = Snapshot::pull(&child_ref, None).await.unwrap();
            assert_eq!(pulled.digest(), child.digest());
            assert_eq!(pulled.name(), Some("child"));
            for snap in [&child, &base] {
                let report = Snapshot::open(snap.digest())
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
            }
            let images = Image::list().await.unwrap();
            assert_eq!(images.len(), 1);
            assert_eq!(images[0].manifest_digest, image.manifest_digest);
            // Pulled again: everything is here, it lands as it is.
            assert_eq!(
                Snapshot::pull(&child_ref, None).await.unwrap().digest(),
                child.digest()
            );
            // An image is not a snapshot: refused, nothing imported.
            let busybox = format!("{}/snaps/app@{}", registry.host(), image.manifest_digest);
            let message = expect_kind(Snapshot::pull(&busybox, None).await, "Registry");
            assert!(message.contains("artifact"), "{message}");
            assert_eq!(Snapshot::list().await.unwrap().len(), 2);

            let restored = Sandbox::builder("restored")
                .from_snapshot("base")
                .create()
                .await
                .unwrap();
            let out = restored.exec("cat", ["/root/carried"]).await.unwrap();
            assert_eq!(out.exit_code, 0, "{out:?}");
            assert_eq!(out.stdout_text().trim(), "travelled");
            restored.stop().await.unwrap();
            Sandbox::remove("restored").await.unwrap();
        })
        .await;
    drop(base);
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

/// A full snapshot (VM state and sparse RAM besides its upper) travels as
/// four data layers and lands verified, holes kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_snapshot_travels_with_its_vm_files() {
    use common::artifacts::{allocated, make_full};
    use common::registry::repin;
    use microsandbox::{Snapshot, SnapshotKind};

    let registry = TestRegistry::start(RegistryOpts::default());
    let reference = format!("{}/snaps/full:1", registry.host());
    let source = TestHome::new();
    let docker = docker_config(&source, &registry.host(), None);
    let snap = config(&source, &docker)
        .scope(async {
            let image = load_busybox_image(&source).await;
            let dir = source.snapshots_dir().join("live");
            make_full(&dir);
            let snap = repin(&dir, &image.reference, &image.manifest_digest);
            Snapshot::reindex_default().await.unwrap();
            Snapshot::push("live", &reference).await.unwrap();
            snap
        })
        .await;
    let (manifest, _) = registry.skopeo_raw(&reference);
    let titles: Vec<_> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["annotations"]["org.opencontainers.image.title"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        titles,
        [
            "manifest.json",
            "vm.json.tar.zst",
            "vm.state.tar.zst",
            "vm.ram.tar.zst",
            "upper.ext4.tar.zst"
        ]
    );

    let target = TestHome::new();
    let docker = docker_config(&target, &registry.host(), None);
    config(&target, &docker)
        .scope(async {
            let pulled = Snapshot::pull(&reference, None).await.unwrap();
            assert_eq!(pulled.digest(), snap.digest());
            let landed = Snapshot::open(pulled.path().to_string_lossy().into_owned())
                .await
                .unwrap();
            assert_eq!(landed.kind(), SnapshotKind::Full);
            let report = landed.verify().await.unwrap();
            assert!(
                matches!(
                    report.upper,
                    microsandbox::UpperVerifyStatus::Verified { .. }
                ),
                "{report:?}"
            );
            let ram = pulled.path().join("vm.ram");
            assert_eq!(
                std::fs::read(&ram).unwrap(),
                std::fs::read(snap.path().join("vm.ram")).unwrap()
            );
            // Sparse: the 64 MiB RAM holds 3 MiB of data and lands as such.
            assert!(
                allocated(&ram) < 8 << 20,
                "{} bytes allocated",
                allocated(&ram)
            );
        })
        .await;

    // An artifact whose blobs are sound but which lies about its snapshot
    // (another digest) is refused by import's checks, and leaves nothing:
    // no snapshot, no index row, no image, no staging.
    let mut lying = manifest.clone();
    lying["annotations"]["dev.microsandbox.snapshot.digest"] =
        format!("sha256:{}", "cd".repeat(32)).into();
    lying["annotations"]["dev.microsandbox.snapshot.name"] = "liar".into();
    put_manifest(
        &registry,
        "snaps/full",
        "lying",
        "application/vnd.oci.image.manifest.v1+json",
        &lying.to_string(),
    );
    // Refused before the missing image was fetched: no image either.
    snapshot_pull_leaves_nothing(&registry.host(), "snaps/full:lying", "snapshot is invalid").await;
}

/// A snapshot of an image pulled from a registry references that image
/// where it came from (pinned by digest) instead of pushing it again; a
/// pull fetches it from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_a_pulled_image_points_at_its_origin() {
    use common::artifacts::make_artifact;
    use common::registry::repin;
    use microsandbox::Snapshot;
    use microsandbox::snapshot::remote::SNAPSHOT_IMAGE_ANNOTATION;

    let (registry, _) = registry_with_busybox(RegistryOpts::default());
    let origin = format!("{}/busybox:1", registry.host());
    let reference = format!("{}/snaps/origin:1", registry.host());
    let source = TestHome::new();
    let docker = docker_config(&source, &registry.host(), None);
    let image = config(&source, &docker)
        .scope(async {
            let image = Image::pull(&origin).await.unwrap();
            let dir = source.snapshots_dir().join("base");
            make_artifact(&dir, 5, None, None);
            repin(&dir, &image.reference, &image.manifest_digest);
            Snapshot::push("base", &reference).await.unwrap();
            image
        })
        .await;
    let (manifest, _) = registry.skopeo_raw(&reference);
    let pinned = format!("{}/busybox@{}", registry.host(), image.manifest_digest);
    assert_eq!(
        manifest["annotations"][SNAPSHOT_IMAGE_ANNOTATION],
        pinned.as_str()
    );

    let target = TestHome::new();
    let docker = docker_config(&target, &registry.host(), None);
    config(&target, &docker)
        .scope(async {
            Snapshot::pull(&reference, None).await.unwrap();
            let images = Image::list().await.unwrap();
            assert_eq!(images.len(), 1);
            assert_eq!(images[0].manifest_digest, image.manifest_digest);
            assert_eq!(images[0].origin.as_deref(), Some(pinned.as_str()));
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_push_authenticates_with_docker_credentials() {
    use common::artifacts::make_artifact;
    use common::registry::repin;
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
                let image = load_busybox_image(&home).await;
                let dir = home.snapshots_dir().join("base");
                make_artifact(&dir, 7, None, None);
                repin(&dir, &image.reference, &image.manifest_digest);
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
    // The artifact and the image it carried are both behind the same auth.
    let (manifest, _) = registry.skopeo_raw(&reference);
    let image = manifest["annotations"]["dev.microsandbox.snapshot.image"]
        .as_str()
        .unwrap()
        .to_string();
    registry.skopeo_raw(&image);
}
