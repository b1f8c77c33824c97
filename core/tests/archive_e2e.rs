//! An archive exported `with_image` carries everything a sandbox needs: it
//! imports into an empty MSB_HOME that never saw the image, and a sandbox
//! boots from the imported snapshot (a real QEMU VM) and finds the file its
//! source wrote. While it runs, the two homes are listed at the same time
//! from two tasks, and each sees only its own sandboxes.

mod common;

use common::{TestHome, sandbox_names};
use microsandbox::image::Image;
use microsandbox::{Config, ExportOpts, Sandbox, SandboxState, Snapshot};

#[tokio::test(flavor = "multi_thread")]
async fn an_archive_with_its_image_boots_on_an_empty_home() {
    let home = TestHome::new();
    home.run(carry(&home)).await;
}

async fn carry(home: &TestHome) {
    home.load_busybox().await;
    let api = common::sandbox_running("api", "echo travelled > /root/carried").await;
    api.stop().await.unwrap();
    let snap = Snapshot::builder("api")
        .name("carried")
        .record_integrity()
        .create()
        .await
        .unwrap();
    let archive = home.path().join("carried.tar.zst");
    Snapshot::export(
        "carried",
        archive.clone(),
        ExportOpts {
            with_image: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // A second, empty home: no image, no snapshots, no index.
    let other = tempfile::tempdir_in(home.path()).unwrap();
    let other_home = Config::new().home(other.path());
    other_home
        .clone()
        .scope(boot_in_the_other_home(&archive, &snap))
        .await;

    // Both homes at once, each from its own task: neither lists the other's.
    let lister = |config: Config, own: &'static str, state: SandboxState| {
        tokio::spawn(config.scope(async move {
            for _ in 0..20 {
                let listed = Sandbox::list().await.unwrap();
                let seen: Vec<_> = listed.iter().map(|s| (s.name(), s.state())).collect();
                assert_eq!(seen, [(own, state)]);
                let stranger = if own == "api" { "restored" } else { "api" };
                let err = Sandbox::get(stranger).await.unwrap_err();
                assert_eq!(err.kind(), "SandboxNotFound");
                tokio::task::yield_now().await;
            }
        }))
    };
    let here = lister(home.config(), "api", SandboxState::Stopped);
    let there = lister(other_home.clone(), "restored", SandboxState::Running);
    here.await.unwrap();
    there.await.unwrap();

    other_home
        .scope(async {
            Sandbox::get("restored")
                .await
                .unwrap()
                .stop()
                .await
                .unwrap();
            Sandbox::remove("restored").await.unwrap();
            assert!(sandbox_names().await.is_empty());
        })
        .await;
    Sandbox::remove("api").await.unwrap();
    assert!(sandbox_names().await.is_empty());
}

/// Import the archive into the (empty) home in force and boot from it.
async fn boot_in_the_other_home(archive: &std::path::Path, snap: &Snapshot) {
    assert!(Image::list().await.unwrap().is_empty());
    let err = Sandbox::builder("nope")
        .from_snapshot(snap.path().to_string_lossy())
        .create()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "ImageNotFound", "the new home lacks the image");

    let handle = Snapshot::import(archive, None).await.unwrap();
    assert_eq!(handle.digest(), snap.digest());
    assert_eq!(handle.name(), Some("carried"));
    let images = Image::list().await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].manifest_digest, snap.image_manifest_digest());

    let restored = Sandbox::builder("restored")
        .from_snapshot("carried")
        .create()
        .await
        .unwrap();
    let out = restored.exec("cat", ["/root/carried"]).await.unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "travelled");
}
