//! Full snapshot artifacts without a VM: a synthetic full artifact (manifest
//! with its `msb.vm` label, `vm.json`, device state, sparse RAM) opens as
//! kind `full`, is indexed and listed with its kind, verifies, and travels
//! through an archive sparse and checked; a damaged one is caught by open,
//! verify and import, each with its kind, leaving nothing behind.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::TestHome;
use common::artifacts::{FULL_RAM_MIB as RAM_MIB, allocated, make_full, tree};
use microsandbox::{ExportOpts, Snapshot, SnapshotKind};

fn flip(path: &Path, at: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 1], at).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn full_artifacts_open_verify_list_and_travel() {
    let (home, work) = (TestHome::new(), tempfile::tempdir().unwrap());
    home.run(round_trip(&home, work.path())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_full_artifacts_are_caught() {
    let (home, work) = (TestHome::new(), tempfile::tempdir().unwrap());
    home.run(damaged(&home, work.path())).await;
}

async fn round_trip(home: &TestHome, work: &Path) {
    let snap = make_full(&home.snapshots_dir().join("live"));
    assert_eq!(snap.kind(), SnapshotKind::Full);
    assert_eq!(snap.vm().unwrap().machine.memory_mib, RAM_MIB);
    snap.verify().await.unwrap();
    Snapshot::reindex_default().await.unwrap();
    let listed = Snapshot::list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kind(), SnapshotKind::Full);
    let json = serde_json::to_value(&listed[0]).unwrap();
    assert_eq!(json["kind"], "full");

    for plain_tar in [false, true] {
        let out = work.join(format!("live-{plain_tar}.tar"));
        let opts = ExportOpts {
            plain_tar,
            ..Default::default()
        };
        Snapshot::export("live", &out, opts).await.unwrap();
        let dest = work.join(format!("dest-{plain_tar}"));
        let imported = Snapshot::import(&out, Some(&dest)).await.unwrap();
        assert_eq!(imported.digest(), snap.digest());
        assert_eq!(imported.kind(), SnapshotKind::Full);
        let landed = imported.path().to_path_buf();
        for file in [
            "vm.json",
            "vm.state",
            "vm.ram",
            "upper.ext4",
            "manifest.json",
        ] {
            assert_eq!(
                fs::read(landed.join(file)).unwrap(),
                fs::read(snap.path().join(file)).unwrap(),
                "{file}"
            );
        }
        assert!(
            allocated(&landed.join("vm.ram")) < 4 << 20,
            "RAM holes stay holes"
        );
        Snapshot::open(landed.to_string_lossy())
            .await
            .unwrap()
            .verify()
            .await
            .unwrap();
    }
    Snapshot::delete("live").await.unwrap();
    assert!(!home.snapshots_dir().join("live").exists());
}

async fn damaged(home: &TestHome, work: &Path) {
    let snapshots = home.snapshots_dir();
    let base = make_full(&snapshots.join("base"));
    Snapshot::reindex_default().await.unwrap();

    // A RAM byte, then a state byte: verify says SnapshotIntegrity, export refuses.
    for file in ["vm.ram", "vm.state"] {
        let dir = work.join(format!("bad-{file}"));
        let copy = std::process::Command::new("cp")
            .args(["-a", "--sparse=always"])
            .arg(base.path())
            .arg(&dir)
            .status()
            .unwrap();
        assert!(copy.success());
        flip(
            &dir.join(file),
            if file == "vm.ram" { (5 << 20) + 9 } else { 9 },
        );
        let snap = Snapshot::open(dir.to_string_lossy()).await.unwrap();
        assert_eq!(
            snap.verify().await.unwrap_err().kind(),
            "SnapshotIntegrity",
            "{file}"
        );
        let out = work.join("never.tar.zst");
        let err = Snapshot::export(dir.to_string_lossy(), &out, ExportOpts::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "SnapshotIntegrity");
        assert!(!out.exists());
    }
    // vm.json that is not the one the manifest names, or missing: open fails.
    let dir = work.join("bad-json");
    fs::create_dir(&dir).unwrap();
    for file in [
        "manifest.json",
        "vm.json",
        "vm.state",
        "vm.ram",
        "upper.ext4",
    ] {
        fs::copy(base.path().join(file), dir.join(file)).unwrap();
    }
    let json = fs::read_to_string(dir.join("vm.json")).unwrap();
    fs::write(
        dir.join("vm.json"),
        json.replace("\"cpus\":1", "\"cpus\":2"),
    )
    .unwrap();
    let err = Snapshot::open(dir.to_string_lossy()).await.unwrap_err();
    assert_eq!(err.kind(), "SnapshotIntegrity");
    fs::remove_file(dir.join("vm.json")).unwrap();
    let err = Snapshot::open(dir.to_string_lossy()).await.unwrap_err();
    assert_eq!(err.kind(), "SnapshotIntegrity");

    // An archive whose RAM bytes were changed in transit: refused on landing.
    let out = work.join("base.tar");
    let opts = ExportOpts {
        plain_tar: true,
        ..Default::default()
    };
    Snapshot::export("base", &out, opts).await.unwrap();
    let bytes = fs::read(&out).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w.iter().all(|&b| b == 7))
        .expect("the RAM data is in the archive");
    flip(&out, at as u64 + 10);
    let dest = work.join("dest");
    let err = Snapshot::import(&out, Some(&dest)).await.unwrap_err();
    assert!(
        ["SnapshotIntegrity", "ArchiveInvalid"].contains(&err.kind()),
        "{err}"
    );
    assert!(tree(&dest).is_empty(), "nothing landed: {:?}", tree(&dest));
    assert_eq!(
        Snapshot::list().await.unwrap().len(),
        1,
        "the index is unchanged"
    );
}
