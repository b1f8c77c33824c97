//! The image store's way out, VM-free: `Image::save` writes an OCI archive
//! that `skopeo` reads and a second home loads with the same manifest
//! digest; `Image::remove` deletes the row, then every blob and root disk
//! nothing else names, and refuses an image a snapshot pins.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::TestHome;
use microsandbox::image::Image;
use microsandbox::image::busybox::{DEFAULT_BUSYBOX, build_busybox_archive};
use microsandbox::snapshot::manifest::{
    ImageRef, MANIFEST_SCHEMA, Manifest, SnapshotFormat, UpperLayer,
};
use microsandbox::{CallOpts, CancellationToken, ProgressCallback, ProgressEvent, Snapshot};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const BASE: &str = "local/busybox:base";
const VARIANT: &str = "local/busybox:variant";

fn blobs_dir(home: &Path) -> PathBuf {
    home.join("images/blobs/sha256")
}

fn lower_dir(home: &Path) -> PathBuf {
    home.join("images/lower")
}

/// File names in `dir` (none if it is missing), hidden ones aside.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn hex(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_string()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Every entry of a tar archive: name -> bytes.
fn tar_entries(archive: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut tar = tar::Archive::new(File::open(archive).unwrap());
    let mut entries = BTreeMap::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        entries.insert(name, bytes);
    }
    entries
}

/// The busybox OCI archive, and a variant of it whose config has one more
/// environment variable: another manifest sharing the same layer blob.
fn two_archives(work: &Path) -> (PathBuf, PathBuf) {
    let base = work.join("base.tar");
    build_busybox_archive(Path::new(DEFAULT_BUSYBOX), BASE, &base).unwrap();
    let mut entries = tar_entries(&base);
    let index: Value = serde_json::from_slice(&entries["index.json"]).unwrap();
    let manifest_name = format!(
        "blobs/sha256/{}",
        hex(index["manifests"][0]["digest"].as_str().unwrap())
    );
    let mut manifest: Value = serde_json::from_slice(&entries[&manifest_name]).unwrap();
    let config_name = format!(
        "blobs/sha256/{}",
        hex(manifest["config"]["digest"].as_str().unwrap())
    );
    let mut config: Value = serde_json::from_slice(&entries[&config_name]).unwrap();
    config["config"]["Env"]
        .as_array_mut()
        .unwrap()
        .push("VARIANT=1".into());
    let config = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = sha256(&config).into();
    manifest["config"]["size"] = config.len().into();
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": VARIANT},
        }],
    }))
    .unwrap();
    entries.insert(format!("blobs/sha256/{}", hex(&sha256(&config))), config);
    entries.insert(
        format!("blobs/sha256/{}", hex(&sha256(&manifest))),
        manifest,
    );
    entries.insert("index.json".into(), index);
    let variant = work.join("variant.tar");
    let mut builder = tar::Builder::new(File::create(&variant).unwrap());
    for (name, bytes) in &entries {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    builder.finish().unwrap();
    (base, variant)
}

/// A snapshot artifact in the home's snapshots directory pinning the image
/// with `digest`, indexed.
async fn snapshot_pinning(home: &TestHome, name: &str, reference: &str, digest: &str) {
    let dir = home.snapshots_dir().join(name);
    fs::create_dir_all(&dir).unwrap();
    File::create(dir.join("upper.ext4"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        format: SnapshotFormat::Raw,
        fstype: "ext4".into(),
        image: ImageRef {
            reference: reference.into(),
            manifest_digest: digest.into(),
        },
        parent: None,
        created_at: "2026-11-30T10:00:00Z".into(),
        labels: BTreeMap::new(),
        upper: UpperLayer {
            file: "upper.ext4".into(),
            size_bytes: 1 << 20,
            integrity: None,
        },
        source_sandbox: None,
    };
    fs::write(dir.join("manifest.json"), manifest.canonical_bytes()).unwrap();
    Snapshot::reindex(home.snapshots_dir()).await.unwrap();
}

fn skopeo_digest(archive: &Path) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", &format!("oci-archive:{}", archive.display())])
        .output()
        .expect("skopeo is installed by scripts/setup-registry.sh");
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspected: Value = serde_json::from_slice(&out.stdout).unwrap();
    inspected["Digest"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saved_image_is_an_oci_archive_skopeo_reads_and_another_home_loads_unchanged() {
    let (home, other, work) = (
        TestHome::new(),
        TestHome::new(),
        tempfile::tempdir().unwrap(),
    );
    let (base, _) = two_archives(work.path());
    let out = work.path().join("out/saved.tar");
    let events: Arc<Mutex<Vec<ProgressEvent>>> = Arc::default();
    let sink = events.clone();
    let progress: ProgressCallback = Arc::new(move |e| sink.lock().unwrap().push(e));
    let image = home
        .run(async {
            let image = Image::load(&base, None).await.unwrap();
            let call = CallOpts {
                progress: Some(progress),
                ..CallOpts::default()
            };
            Image::save_with(BASE, &out, call).await.unwrap();
            image
        })
        .await;

    let entries = tar_entries(&out);
    assert_eq!(
        entries["oci-layout"],
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()
    );
    let index: Value = serde_json::from_slice(&entries["index.json"]).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], image.manifest_digest.as_str());
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        BASE
    );
    // Blobs exactly as stored: each entry is its digest's content.
    let blobs: Vec<&String> = entries
        .keys()
        .filter(|n| n.contains("/sha256/") && !n.ends_with('/'))
        .collect();
    assert_eq!(blobs.len(), 3, "manifest, config, layer: {blobs:?}");
    for name in blobs {
        let stored = fs::read(blobs_dir(home.path()).join(name.rsplit('/').next().unwrap()));
        assert_eq!(
            sha256(&entries[name]),
            format!("sha256:{}", name.rsplit('/').next().unwrap())
        );
        assert_eq!(entries[name], stored.unwrap());
    }
    let events = events.lock().unwrap().clone();
    let last = *events.last().expect("save reports progress");
    assert!(events.iter().all(|e| e.phase.as_str() == "export"));
    assert!(last.total_bytes > 100_000 && last.done_bytes == last.total_bytes);

    assert_eq!(skopeo_digest(&out), image.manifest_digest);

    let loaded = other.run(Image::load(&out, None)).await.unwrap();
    assert_eq!(loaded.reference, BASE);
    assert_eq!(loaded.manifest_digest, image.manifest_digest);
    assert_eq!(loaded.config_digest, image.config_digest);

    // Saving again gives the same bytes, replacing the file (as `docker
    // save -o` does); by digest too.
    let first = fs::read(&out).unwrap();
    home.run(Image::save(&image.manifest_digest, &out))
        .await
        .unwrap();
    assert_eq!(fs::read(&out).unwrap(), first);
    assert_eq!(names(out.parent().unwrap()), ["saved.tar"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_one_of_two_images_sharing_a_layer_keeps_the_other_whole_and_the_last_empties_the_store()
 {
    let (home, work) = (TestHome::new(), tempfile::tempdir().unwrap());
    let (base, variant) = two_archives(work.path());
    home.run(async {
        let a = Image::load(&base, None).await.unwrap();
        let b = Image::load(&variant, None).await.unwrap();
        assert_ne!(a.manifest_digest, b.manifest_digest);
        let a_blobs = names(&blobs_dir(home.path()));
        assert_eq!(a_blobs.len(), 5, "two manifests, two configs, one layer");
        // Garbage a crashed remove or load could leave: swept by the next remove.
        fs::write(blobs_dir(home.path()).join("f".repeat(64)), "stray").unwrap();
        fs::write(
            lower_dir(home.path()).join(format!("{}.erofs", "e".repeat(64))),
            "stray",
        )
        .unwrap();

        Image::remove(VARIANT).await.unwrap();
        let err = Image::get(VARIANT).await.unwrap_err();
        assert_eq!(err.kind(), "ImageNotFound");
        let kept = Image::get(BASE).await.unwrap();
        assert_eq!(kept, a);
        assert!(kept.lower_path.is_file());
        let left = names(&blobs_dir(home.path()));
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(!left.contains(&hex(&b.manifest_digest)));
        assert!(!left.contains(&hex(&b.config_digest)));
        assert!(left.contains(&hex(&a.manifest_digest)) && left.contains(&hex(&a.config_digest)));
        assert_eq!(
            names(&lower_dir(home.path())),
            [format!("{}.erofs", hex(&a.manifest_digest))]
        );
        // What is left still saves whole (every blob present).
        Image::save(BASE, work.path().join("a.tar")).await.unwrap();

        Image::remove(&a.manifest_digest).await.unwrap();
        assert!(names(&blobs_dir(home.path())).is_empty());
        assert!(names(&lower_dir(home.path())).is_empty());
        assert!(Image::list().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_a_snapshot_pins_is_in_use_unless_another_reference_keeps_it() {
    let (home, work) = (TestHome::new(), tempfile::tempdir().unwrap());
    let (base, _) = two_archives(work.path());
    home.run(async {
        let image = Image::load(&base, None).await.unwrap();
        Image::load(&base, Some("local/busybox:alias".into()))
            .await
            .unwrap();
        snapshot_pinning(&home, "pinned", BASE, &image.manifest_digest).await;
        let blobs = names(&blobs_dir(home.path()));

        // The alias keeps the pinned image: removing the first name is fine.
        Image::remove(BASE).await.unwrap();
        let err = Image::remove("local/busybox:alias").await.unwrap_err();
        assert_eq!(err.kind(), "ImageInUse");
        assert!(err.to_string().contains("snapshot pinned"), "{err}");
        let err = Image::remove(&image.manifest_digest).await.unwrap_err();
        assert_eq!(err.kind(), "ImageInUse");
        // Refused: the row and every file are still there.
        assert!(
            Image::get("local/busybox:alias")
                .await
                .unwrap()
                .lower_path
                .is_file()
        );
        assert_eq!(names(&blobs_dir(home.path())), blobs);

        // The snapshot gone, the image goes.
        Snapshot::remove("pinned", false).await.unwrap();
        Image::remove("local/busybox:alias").await.unwrap();
        assert!(names(&blobs_dir(home.path())).is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_images_are_not_found_and_a_save_that_fails_leaves_no_file() {
    let (home, work) = (TestHome::new(), tempfile::tempdir().unwrap());
    let (base, _) = two_archives(work.path());
    let out_dir = work.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("image.tar");
    home.run(async {
        for wanted in ["local/nothing:here", &format!("sha256:{}", "0".repeat(64))] {
            assert_eq!(
                Image::remove(wanted).await.unwrap_err().kind(),
                "ImageNotFound"
            );
            let err = Image::save(wanted, &out).await.unwrap_err();
            assert_eq!(err.kind(), "ImageNotFound");
        }
        assert!(names(&out_dir).is_empty());
        assert!(
            fs::read_dir(&out_dir).unwrap().next().is_none(),
            "no temp file either"
        );

        // Cancelled (from its first progress event): an existing file is
        // left as it was, and no temp file stays beside it.
        let image = Image::load(&base, None).await.unwrap();
        fs::write(&out, "old").unwrap();
        let token = CancellationToken::new();
        let fire = token.clone();
        let call = CallOpts {
            progress: Some(Arc::new(move |_| fire.cancel())),
            cancel: Some(token),
        };
        let err = Image::save_with(BASE, &out, call).await.unwrap_err();
        assert_eq!(err.kind(), "Cancelled");
        assert_eq!(fs::read(&out).unwrap(), b"old");
        assert_eq!(names(&out_dir), ["image.tar"]);
        assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 1);

        // A directory is no archive name.
        let err = Image::save(BASE, &out_dir).await.unwrap_err();
        assert_eq!(err.kind(), "InvalidConfig");

        // An image whose blobs are not all in the store (only its root
        // disk, as a bare imported image has) cannot be saved: a clear
        // error, and no file.
        let config = blobs_dir(home.path()).join(hex(&image.config_digest));
        fs::remove_file(&config).unwrap();
        let missing = out_dir.join("missing.tar");
        let err = Image::save(BASE, &missing).await.unwrap_err();
        assert_eq!(err.kind(), "ImageNotFound");
        assert!(err.to_string().contains(&image.config_digest), "{err}");
        assert!(!missing.exists());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_that_came_in_a_snapshot_archive_saves_with_the_same_digest() {
    let (home, other, work) = (
        TestHome::new(),
        TestHome::new(),
        tempfile::tempdir().unwrap(),
    );
    let (base, _) = two_archives(work.path());
    let archive = work.path().join("snap.tar.zst");
    let image = home
        .run(async {
            let image = Image::load(&base, None).await.unwrap();
            snapshot_pinning(&home, "pinned", BASE, &image.manifest_digest).await;
            let opts = microsandbox::ExportOpts {
                with_image: true,
                ..Default::default()
            };
            Snapshot::export("pinned", &archive, opts).await.unwrap();
            image
        })
        .await;
    let out = work.path().join("from-import.tar");
    other
        .run(async {
            Snapshot::import(&archive, None).await.unwrap();
            // The archive carries the image's blobs, so it saves whole; and
            // the snapshot that came with it pins it.
            Image::save(BASE, &out).await.unwrap();
            let err = Image::remove(BASE).await.unwrap_err();
            assert_eq!(err.kind(), "ImageInUse");
        })
        .await;
    assert_eq!(skopeo_digest(&out), image.manifest_digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remove_racing_a_load_that_shares_its_layer_never_takes_a_blob_the_load_needs() {
    let (home, work) = (TestHome::new(), tempfile::tempdir().unwrap());
    let (base, variant) = two_archives(work.path());
    home.run(async {
        for round in 0..12 {
            Image::load(&base, None).await.unwrap();
            // Both run at once: each on its own blocking thread.
            let (removed, loaded) = tokio::join!(Image::remove(BASE), Image::load(&variant, None));
            removed.unwrap();
            let loaded = loaded.unwrap();
            // Every blob of the new image is there: it saves whole.
            let out = work.path().join(format!("round-{round}.tar"));
            Image::save(VARIANT, &out).await.unwrap();
            assert!(Image::get(VARIANT).await.unwrap().lower_path.is_file());
            assert_eq!(names(&blobs_dir(home.path())).len(), 3);
            assert!(names(&blobs_dir(home.path())).contains(&hex(&loaded.manifest_digest)));
            Image::remove(VARIANT).await.unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_row_indexed_before_pins_were_recorded_pins_by_reference_until_a_reindex() {
    let (home, work) = (TestHome::new(), tempfile::tempdir().unwrap());
    let (base, _) = two_archives(work.path());
    home.run(async {
        let image = Image::load(&base, None).await.unwrap();
        snapshot_pinning(&home, "old", BASE, &image.manifest_digest).await;
        // As an index of schema 5 left it: no pinned digest.
        let db = rusqlite::Connection::open(home.path().join("db/microsandbox.db")).unwrap();
        db.execute("UPDATE snapshots SET image_digest = NULL", [])
            .unwrap();
        let err = Image::remove(BASE).await.unwrap_err();
        assert_eq!(err.kind(), "ImageInUse");
        assert!(err.to_string().contains("snapshot old"), "{err}");
        Snapshot::reindex(home.snapshots_dir()).await.unwrap();
        let err = Image::remove(&image.manifest_digest).await.unwrap_err();
        assert_eq!(
            err.kind(),
            "ImageInUse",
            "pinned by digest after the reindex"
        );
    })
    .await;
}
