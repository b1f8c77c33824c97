//! Snapshots of real sandboxes: the seed's typical flow (capture a stopped
//! sandbox with integrity, verify, boot a new sandbox from it, the source
//! unchanged), the index (get/list/list_dir/remove/reindex, child counts),
//! and every error kind of capture and boot-from-snapshot.

mod common;

use std::fs;

use common::{BUSYBOX_REF, TestHome};
use microsandbox::snapshot::integrity::upper_digest_blocking;
use microsandbox::sparse::copy_sparse;
use microsandbox::{IntegrityAlgorithm, Sandbox, Snapshot, SnapshotFormat, UpperVerifyStatus};

fn copy_artifact(from: &std::path::Path, to: &std::path::Path) {
    fs::create_dir_all(to).unwrap();
    fs::copy(from.join("manifest.json"), to.join("manifest.json")).unwrap();
    // fs::copy would write all 4 GiB of the sparse upper.
    copy_sparse(&from.join("upper.ext4"), &to.join("upper.ext4")).unwrap();
}

fn edit_manifest(dir: &std::path::Path, from: &str, to: &str) {
    let path = dir.join("manifest.json");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{text}");
    fs::write(&path, text.replace(from, to)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn typical_flow_index_and_errors() {
    let home = TestHome::new();
    home.run(typical_flow(&home)).await;
}

async fn typical_flow(home: &TestHome) {
    home.load_busybox().await;

    let api = common::sandbox_running("api", "echo deps > /root/after-install").await;
    let err = Snapshot::builder("api")
        .name("too-early")
        .create()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "SnapshotSandboxRunning");
    assert!(!home.path().join("snapshots/too-early").exists());
    api.stop().await.unwrap();
    let api_upper = Sandbox::get("api").await.unwrap().upper_path();
    let api_digest_before =
        upper_digest_blocking(&api_upper, IntegrityAlgorithm::DEFAULT, None).unwrap();

    // capture, as in the seed
    let snap = Snapshot::builder("api")
        .name("after-pip-install")
        .label("stage", "post-deps")
        .record_integrity()
        .create()
        .await
        .unwrap();
    assert_eq!(snap.source_sandbox(), Some("api"));
    assert_eq!(snap.image_ref(), BUSYBOX_REF);
    assert_eq!(
        snap.labels().get("stage").map(String::as_str),
        Some("post-deps")
    );
    assert_eq!(snap.parent(), None);
    match snap.verify().await.unwrap().upper {
        UpperVerifyStatus::Verified { algorithm, .. } => {
            assert_eq!(algorithm, "msb-merkle-sha256-v1")
        }
        other => panic!("not verified: {other:?}"),
    }
    let allocated = snap.upper_allocated_bytes().await.unwrap();
    assert!(
        allocated < 64 << 20,
        "capture is not sparse: {allocated} bytes"
    );

    // the index
    let h = Snapshot::get("after-pip-install").await.unwrap();
    assert_eq!(h.digest(), snap.digest());
    assert_eq!(h.name(), Some("after-pip-install"));
    assert_eq!(h.format(), SnapshotFormat::Raw);
    assert_eq!(h.size_bytes(), Some(snap.size_bytes()));
    assert_eq!(Snapshot::get(snap.digest()).await.unwrap().path(), h.path());
    assert_eq!(
        Snapshot::get(snap.path().to_str().unwrap())
            .await
            .unwrap()
            .digest(),
        snap.digest()
    );
    assert_eq!(h.open().await.unwrap().digest(), snap.digest());

    // boot from it
    let restored = Sandbox::builder("api-restored")
        .from_snapshot("after-pip-install")
        .create()
        .await
        .unwrap();
    let out = restored.exec("cat", ["/root/after-install"]).await.unwrap();
    assert_eq!(out.stdout_text(), "deps\n");
    restored
        .exec("sh", ["-c", "echo only-here > /root/restored"])
        .await
        .unwrap();
    restored.stop().await.unwrap();
    let api_digest_after =
        upper_digest_blocking(&api_upper, IntegrityAlgorithm::DEFAULT, None).unwrap();
    assert_eq!(
        api_digest_before, api_digest_after,
        "the source sandbox changed"
    );

    // more captures: handle entry points, path destinations, the exchange algorithm
    let api_handle = Sandbox::get("api").await.unwrap();
    let second = api_handle.snapshot("second").await.unwrap();
    assert_eq!(second.manifest().upper.integrity, None);
    let elsewhere = home.path().join("elsewhere/snap");
    let third = api_handle.snapshot_to(&elsewhere).await.unwrap();
    assert_eq!(third.path(), elsewhere.as_path());
    assert_eq!(
        Snapshot::get(elsewhere.to_str().unwrap())
            .await
            .unwrap()
            .name(),
        None
    );
    let v1 = Snapshot::builder("api-restored")
        .name("exchange")
        .integrity_algorithm(IntegrityAlgorithm::SparseSha256V1)
        .create()
        .await
        .unwrap();
    assert!(
        matches!(v1.verify().await.unwrap().upper, UpperVerifyStatus::Verified { ref algorithm, .. } if algorithm == "msb-sparse-sha256-v1")
    );
    let listed = Snapshot::list().await.unwrap();
    assert_eq!(listed.len(), 4);
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].created_at() >= w[1].created_at()),
        "not newest first"
    );

    // capture errors
    let err = Snapshot::builder("api")
        .name("second")
        .create()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "SnapshotAlreadyExists");
    let forced = Snapshot::builder("api")
        .name("second")
        .force()
        .record_integrity()
        .create()
        .await
        .unwrap();
    assert!(forced.manifest().upper.integrity.is_some());
    assert_eq!(
        Snapshot::builder("api").build().unwrap_err().kind(),
        "InvalidConfig"
    );
    assert_eq!(
        Snapshot::builder("api")
            .name(".hidden")
            .create()
            .await
            .unwrap_err()
            .kind(),
        "InvalidConfig"
    );
    assert_eq!(
        Snapshot::builder("api")
            .name("a/b")
            .create()
            .await
            .unwrap_err()
            .kind(),
        "InvalidConfig"
    );
    assert_eq!(
        Snapshot::builder("nobody")
            .name("x")
            .create()
            .await
            .unwrap_err()
            .kind(),
        "SandboxNotFound"
    );
    assert_eq!(
        Snapshot::get("missing").await.unwrap_err().kind(),
        "SnapshotNotFound"
    );

    // boot-from-snapshot errors
    let both = Sandbox::builder("both")
        .image(BUSYBOX_REF)
        .from_snapshot("second")
        .create()
        .await
        .unwrap_err();
    assert_eq!(both.kind(), "InvalidConfig");
    let orphan = home.path().join("orphan");
    copy_artifact(snap.path(), &orphan);
    edit_manifest(
        &orphan,
        snap.image_manifest_digest(),
        &format!("sha256:{}", "0".repeat(64)),
    );
    let err = Sandbox::builder("orphaned")
        .from_snapshot(orphan.to_str().unwrap())
        .create()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "ImageNotFound");
    let tampered = home.path().join("tampered");
    copy_artifact(snap.path(), &tampered);
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(tampered.join("upper.ext4"))
            .unwrap();
        f.write_all_at(b"\x01", 3 << 30).unwrap();
    }
    let err = Sandbox::builder("tampered")
        .from_snapshot(tampered.to_str().unwrap())
        .create()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "SnapshotIntegrity");
    let err = Sandbox::builder("ghost")
        .from_snapshot("no-such-snapshot")
        .create()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "SnapshotNotFound");
    for name in ["both", "orphaned", "tampered", "ghost"] {
        assert!(
            !home.path().join("sandboxes").join(name).exists(),
            "{name} left a directory"
        );
    }

    // list_dir, parents and children, reindex, remove
    let snapshots_dir = home.path().join("snapshots");
    let child = snapshots_dir.join("child");
    copy_artifact(snap.path(), &child);
    edit_manifest(
        &child,
        "\"parent\":null",
        &format!("\"parent\":\"{}\"", snap.digest()),
    );
    fs::create_dir_all(snapshots_dir.join("not-an-artifact")).unwrap();
    fs::create_dir_all(snapshots_dir.join("broken")).unwrap();
    fs::write(snapshots_dir.join("broken/manifest.json"), "{").unwrap();
    let on_disk = Snapshot::list_dir(&snapshots_dir).await.unwrap();
    assert_eq!(
        on_disk.len(),
        4,
        "{:?}",
        on_disk
            .iter()
            .map(|s| s.path().to_path_buf())
            .collect::<Vec<_>>()
    );
    fs::remove_dir_all(&elsewhere).unwrap(); // an indexed artifact that vanished
    assert_eq!(Snapshot::reindex_default().await.unwrap(), 4);
    let parent = Snapshot::get("after-pip-install").await.unwrap();
    assert_eq!(parent.child_count(), 1);
    assert_eq!(
        Snapshot::get("child").await.unwrap().parent_digest(),
        Some(snap.digest())
    );
    assert!(
        Snapshot::get(elsewhere.to_str().unwrap()).await.is_err(),
        "row of a vanished artifact kept"
    );
    let err = Snapshot::remove("after-pip-install", false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "SnapshotHasChildren");
    assert!(snap.path().exists());
    Snapshot::remove("child", false).await.unwrap();
    assert_eq!(
        Snapshot::get("after-pip-install")
            .await
            .unwrap()
            .child_count(),
        0
    );
    parent.remove(false).await.unwrap();
    assert!(!snapshots_dir.join("after-pip-install").exists());
    assert_eq!(
        Snapshot::get("after-pip-install").await.unwrap_err().kind(),
        "SnapshotNotFound"
    );

    Sandbox::remove("api").await.unwrap();
    Sandbox::remove("api-restored").await.unwrap();
    assert!(home.vm_pids().is_empty());
}
