//! An archive exported `with_image` carries everything a sandbox needs: it
//! imports into an empty MSB_HOME that never saw the image, and a sandbox
//! boots from the imported snapshot (a real QEMU VM) and finds the file its
//! source wrote.

mod common;

use common::TestHome;
use microsandbox::image::Image;
use microsandbox::{ExportOpts, Sandbox, Snapshot};

#[tokio::test(flavor = "multi_thread")]
async fn an_archive_with_its_image_boots_on_an_empty_home() {
    let home = TestHome::new();
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
    // SAFETY: the only test of this binary; no other thread reads the env now.
    unsafe { std::env::set_var("MSB_HOME", other.path()) };
    assert!(Image::list().await.unwrap().is_empty());
    let err = Sandbox::builder("nope")
        .from_snapshot(snap.path().to_string_lossy())
        .create()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "ImageNotFound", "the new home lacks the image");

    let handle = Snapshot::import(&archive, None).await.unwrap();
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
    restored.stop().await.unwrap();
    Sandbox::remove("restored").await.unwrap();

    unsafe { std::env::set_var("MSB_HOME", home.path()) };
    Sandbox::remove("api").await.unwrap();
}
