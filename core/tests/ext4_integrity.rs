//! Integrity on real ext4 uppers made by `mkfs.ext4` (e2fsprogs, installed by
//! `make test`'s setup): a flipped byte in a file's data and a non-zero byte
//! written into a former hole must both fail verify with `SnapshotIntegrity`,
//! under both algorithms; an untouched artifact verifies.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestHome;
use microsandbox::snapshot::integrity::{data_extents, upper_digest_blocking};
use microsandbox::snapshot::{ImageRef, Manifest, SnapshotFormat, UpperIntegrity, UpperLayer};
use microsandbox::{IntegrityAlgorithm, Snapshot, UpperVerifyStatus};

const MARKER: &[u8] = b"MSB-EXT4-PAYLOAD";

/// A 256 MiB sparse ext4 image holding one 1 MiB file of `MARKER` repeats.
fn make_ext4(dir: &Path) -> PathBuf {
    let content = dir.join("content");
    fs::create_dir_all(content.join("root")).unwrap();
    fs::write(
        content.join("root/payload"),
        MARKER.repeat((1 << 20) / MARKER.len()),
    )
    .unwrap();
    let image = dir.join("upper.ext4");
    File::create(&image).unwrap().set_len(256 << 20).unwrap();
    let status = Command::new("mkfs.ext4")
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .args(["-q", "-F", "-d"])
        .arg(&content)
        .arg(&image)
        .status()
        .expect("mkfs.ext4 (e2fsprogs) must be installed; run `make test` to set up");
    assert!(status.success());
    image
}

fn make_artifact(dir: &Path, upper: &Path, algorithm: IntegrityAlgorithm) -> PathBuf {
    let artifact = dir.join(algorithm.name());
    fs::create_dir_all(&artifact).unwrap();
    fs::copy(upper, artifact.join("upper.ext4")).unwrap();
    let manifest = Manifest {
        schema: 1,
        format: SnapshotFormat::Raw,
        fstype: "ext4".into(),
        image: ImageRef {
            reference: "test/ext4".into(),
            manifest_digest: format!("sha256:{}", "1".repeat(64)),
        },
        parent: None,
        created_at: "2026-11-23T12:00:00Z".into(),
        labels: Default::default(),
        upper: UpperLayer {
            file: "upper.ext4".into(),
            size_bytes: fs::metadata(upper).unwrap().len(),
            integrity: Some(UpperIntegrity {
                algorithm: algorithm.name().into(),
                digest: upper_digest_blocking(upper, algorithm, None).unwrap(),
            }),
        },
        source_sandbox: Some("test".into()),
    };
    fs::write(artifact.join("manifest.json"), manifest.canonical_bytes()).unwrap();
    artifact
}

fn find(haystack: &Path, needle: &[u8]) -> u64 {
    let bytes = fs::read(haystack).unwrap();
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("payload not found in the image") as u64
}

/// An offset well inside a hole of `path`.
fn hole_offset(path: &Path) -> u64 {
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    let extents = data_extents(&file, len).unwrap();
    let mut pos = 0;
    for (start, end) in extents {
        if start - pos > 1 << 20 {
            return pos + (start - pos) / 2;
        }
        pos = end;
    }
    assert!(len - pos > 1 << 20, "no hole found");
    pos + (len - pos) / 2
}

async fn verify(artifact: &Path) -> Result<UpperVerifyStatus, String> {
    let snap = Snapshot::open(artifact.to_str().unwrap())
        .await
        .map_err(|e| e.kind().to_string())?;
    snap.verify()
        .await
        .map(|r| r.upper)
        .map_err(|e| e.kind().to_string())
}

#[tokio::test]
async fn tampering_with_a_real_ext4_upper_is_caught() {
    let home = TestHome::new();
    home.run(tamper_and_verify()).await;
}

async fn tamper_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let upper = make_ext4(dir.path());
    let data_offset = find(&upper, MARKER) + 5;
    let hole = hole_offset(&upper);

    for algorithm in IntegrityAlgorithm::ALL {
        let artifact = make_artifact(&dir.path().join("clean"), &upper, algorithm);
        match verify(&artifact).await {
            Ok(UpperVerifyStatus::Verified {
                algorithm: name, ..
            }) => assert_eq!(name, algorithm.name()),
            other => panic!("{algorithm}: clean artifact did not verify: {other:?}"),
        }

        let flipped = make_artifact(&dir.path().join("flipped"), &upper, algorithm);
        let file = fs::OpenOptions::new()
            .write(true)
            .open(flipped.join("upper.ext4"))
            .unwrap();
        file.write_all_at(b"#", data_offset).unwrap();
        assert_eq!(
            verify(&flipped).await.unwrap_err(),
            "SnapshotIntegrity",
            "{algorithm}"
        );

        let holed = make_artifact(&dir.path().join("holed"), &upper, algorithm);
        let file = fs::OpenOptions::new()
            .write(true)
            .open(holed.join("upper.ext4"))
            .unwrap();
        file.write_all_at(b"\x01", hole).unwrap();
        assert_eq!(
            verify(&holed).await.unwrap_err(),
            "SnapshotIntegrity",
            "{algorithm}"
        );
    }
}
