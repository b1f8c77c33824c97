//! Loading image archives for real: the busybox OCI layout built from the
//! host's busybox-static, a `docker save`-style archive of the same layer,
//! and malformed archives. The built lower is a real EROFS image
//! (`fsck.erofs` from erofs-utils checks it).

mod common;

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;

use common::TestHome;
use microsandbox::image::Image;
use microsandbox::image::busybox::{DEFAULT_BUSYBOX, build_busybox_archive};

fn tar_of(dir: &Path, out: &Path) {
    let mut builder = tar::Builder::new(File::create(out).unwrap());
    builder.append_dir_all(".", dir).unwrap();
    builder.finish().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn busybox_oci_and_docker_save_archives_load_and_boot_disks_are_erofs() {
    let (home, work) = (TestHome::new(), tempfile::tempdir().unwrap());
    home.run(load_and_check(work.path(), home.path())).await;
}

async fn load_and_check(work: &Path, home: &Path) {
    let oci = work.join("busybox-oci.tar");
    build_busybox_archive(Path::new(DEFAULT_BUSYBOX), "local/busybox:test", &oci).unwrap();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let progress: microsandbox::ProgressCallback =
        std::sync::Arc::new(move |e| sink.lock().unwrap().push(e));
    let call = microsandbox::CallOpts {
        progress: Some(progress),
        ..Default::default()
    };
    let image = Image::load_with(&oci, None, call).await.unwrap();
    assert_eq!(image.reference, "local/busybox:test");
    // Progress of the load: in order, phase `load`, ending at the total
    // (the layer blob's size).
    let events = events.lock().unwrap().clone();
    let last = *events.last().expect("a load reports progress");
    assert!(events.iter().all(|e| e.phase.as_str() == "load"));
    assert!(
        events
            .windows(2)
            .all(|w| w[0].done_bytes <= w[1].done_bytes)
    );
    assert!(last.total_bytes > 100_000, "{last:?}");
    assert_eq!(last.done_bytes, last.total_bytes);
    assert!(image.manifest_digest.starts_with("sha256:"));
    assert!(image.env.iter().any(|e| e.starts_with("PATH=")));
    let fsck = Command::new("fsck.erofs")
        .arg(&image.lower_path)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );

    // Same image again: same lower, not rebuilt.
    let modified = fs::metadata(&image.lower_path).unwrap().modified().unwrap();
    let again = Image::load(&oci, Some("local/busybox:again".into()))
        .await
        .unwrap();
    assert_eq!(again.lower_path, image.lower_path);
    assert_eq!(
        fs::metadata(&again.lower_path).unwrap().modified().unwrap(),
        modified
    );
    assert_eq!(
        Image::get(&image.manifest_digest)
            .await
            .unwrap()
            .manifest_digest,
        image.manifest_digest
    );
    assert_eq!(Image::list().await.unwrap().len(), 2);

    // A docker-save layout of the same layer.
    let unpacked = work.join("unpacked");
    fs::create_dir_all(&unpacked).unwrap();
    tar::Archive::new(File::open(&oci).unwrap())
        .unpack(&unpacked)
        .unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(unpacked.join("index.json")).unwrap()).unwrap();
    let manifest_hex = &index["manifests"][0]["digest"].as_str().unwrap()[7..];
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(unpacked.join("blobs/sha256").join(manifest_hex)).unwrap(),
    )
    .unwrap();
    let docker = work.join("docker");
    fs::create_dir_all(docker.join("layer1")).unwrap();
    let config_hex = &manifest["config"]["digest"].as_str().unwrap()[7..];
    let layer_hex = &manifest["layers"][0]["digest"].as_str().unwrap()[7..];
    fs::copy(
        unpacked.join("blobs/sha256").join(config_hex),
        docker.join("config.json"),
    )
    .unwrap();
    fs::copy(
        unpacked.join("blobs/sha256").join(layer_hex),
        docker.join("layer1/layer.tar"),
    )
    .unwrap();
    fs::write(
        docker.join("manifest.json"),
        r#"[{"Config":"config.json","RepoTags":["docker.io/library/busybox:saved"],"Layers":["layer1/layer.tar"]}]"#,
    )
    .unwrap();
    let docker_tar = work.join("docker-save.tar");
    tar_of(&docker, &docker_tar);
    let saved = Image::load(&docker_tar, None).await.unwrap();
    assert_eq!(saved.reference, "docker.io/library/busybox:saved");
    assert!(saved.lower_path.is_file());

    // Bad input, each with a clear kind.
    let err = Image::get("no/such:image").await.unwrap_err();
    assert_eq!(err.kind(), "ImageNotFound");
    let garbage = work.join("garbage.tar");
    fs::write(&garbage, b"this is not a tar archive at all").unwrap();
    assert_eq!(
        Image::load(&garbage, Some("x".into()))
            .await
            .unwrap_err()
            .kind(),
        "ArchiveInvalid"
    );
    let empty_dir = work.join("empty");
    fs::create_dir_all(empty_dir.join("nothing")).unwrap();
    let empty_tar = work.join("empty.tar");
    tar_of(&empty_dir, &empty_tar);
    assert_eq!(
        Image::load(&empty_tar, Some("x".into()))
            .await
            .unwrap_err()
            .kind(),
        "ArchiveInvalid"
    );
    // A blob whose content does not match its digest.
    let tampered = work.join("tampered");
    fs::create_dir_all(&tampered).unwrap();
    tar::Archive::new(File::open(&oci).unwrap())
        .unpack(&tampered)
        .unwrap();
    fs::write(tampered.join("blobs/sha256").join(layer_hex), b"evil").unwrap();
    let tampered_tar = work.join("tampered.tar");
    tar_of(&tampered, &tampered_tar);
    let err = Image::load(&tampered_tar, Some("x".into()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "ArchiveInvalid");
    assert!(err.to_string().contains("has content"), "{err}");
    // Nothing of the failed loads is left in staging.
    let tmp = home.join("images/tmp");
    assert_eq!(fs::read_dir(tmp).unwrap().count(), 0);
}

/// A root disk is the same bytes wherever it is built: a full-VM snapshot
/// pushed from one machine restores over the root disk another machine
/// built from the same blobs (its page cache holds that disk's blocks).
#[tokio::test(flavor = "multi_thread")]
async fn the_root_disk_is_the_same_bytes_in_every_home() {
    let work = tempfile::tempdir().unwrap();
    let oci = work.path().join("busybox-oci.tar");
    build_busybox_archive(Path::new(DEFAULT_BUSYBOX), "local/busybox:same", &oci).unwrap();
    let mut disks = Vec::new();
    for _ in 0..2 {
        let home = TestHome::new();
        let lower = home
            .run(async { Image::load(&oci, None).await.unwrap().lower_path })
            .await;
        disks.push(fs::read(&lower).unwrap());
        // mkfs.erofs stamps whole seconds: let the clock move between builds.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert!(disks[0] == disks[1], "two builds of one image differ");
}
