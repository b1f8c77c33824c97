//! Snapshot archives without a VM: export/import round trips (zstd and
//! plain tar, holes kept, digests equal, parents, idempotent re-import,
//! name clashes, `out` never half-written), and a generated corpus of
//! hostile archives, each refused with `ArchiveInvalid` leaving no file
//! inside or outside the destination and the index unchanged.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::TestHome;
use common::artifacts::{allocated, make_artifact, tree, write_manifest};
use microsandbox::{
    CallOpts, ExportOpts, IntegrityAlgorithm, ProgressCallback, ProgressEvent, Snapshot,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn archives_round_trip() {
    let (home, work) = (TestHome::new(), tempfile::tempdir().unwrap());
    home.run(round_trips(work.path(), &home.snapshots_dir()))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn archives_of_the_066_release_import() {
    let (home, work) = (TestHome::new(), tempfile::tempdir().unwrap());
    home.run(import_066(work.path())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn parents_travel_together() {
    let (home, work) = (TestHome::new(), tempfile::tempdir().unwrap());
    home.run(with_parents(work.path(), &home.snapshots_dir()))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_archives_are_refused() {
    let (home, work) = (TestHome::new(), tempfile::tempdir().unwrap());
    home.run(hostile(work.path(), home.path())).await;
}

async fn round_trips(work: &Path, snapshots: &Path) {
    let source = make_artifact(
        &snapshots.join("base"),
        1,
        None,
        Some(IntegrityAlgorithm::MerkleSha256V1),
    );
    Snapshot::reindex_default().await.unwrap();
    for (opts, file) in [
        (ExportOpts::default(), "base.tar.zst"),
        (
            ExportOpts {
                plain_tar: true,
                ..Default::default()
            },
            "base.tar",
        ),
    ] {
        let out = work.join("out").join(file);
        let plain_tar = opts.plain_tar;
        Snapshot::export("base", &out, opts).await.unwrap();
        let magic = fs::read(&out).unwrap();
        if plain_tar {
            assert_eq!(&magic[257..262], b"ustar");
            assert!(
                magic.len() < 2 << 20,
                "plain tar of 300 KB of data: {}",
                magic.len()
            );
        } else {
            assert_eq!(&magic[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
            assert!(magic.len() < 64 << 10, "zstd archive: {}", magic.len());
        }
        // GNU tar lists it too: the dialect is plain GNU tar.
        if plain_tar {
            let listing = std::process::Command::new("tar")
                .arg("-tvf")
                .arg(&out)
                .output()
                .unwrap();
            assert!(listing.status.success());
            let text = String::from_utf8_lossy(&listing.stdout);
            assert!(
                text.contains("msb-archive.json") && text.contains("upper.ext4"),
                "{text}"
            );
        }

        let dest = work.join(format!("dest-{file}"));
        let handle = Snapshot::import(&out, Some(dest.as_path())).await.unwrap();
        assert_eq!(handle.digest(), source.digest());
        assert_eq!(handle.path(), dest.join("base").canonicalize().unwrap());
        let imported = handle.open().await.unwrap();
        imported.verify().await.unwrap();
        assert_eq!(
            fs::read(imported.upper_path()).unwrap(),
            fs::read(source.upper_path()).unwrap()
        );
        let (src_alloc, dst_alloc) = (
            allocated(&source.upper_path()),
            allocated(&imported.upper_path()),
        );
        assert!(
            dst_alloc <= src_alloc,
            "imported {dst_alloc} > source {src_alloc}"
        );
        assert!(dst_alloc < 1 << 20, "holes kept: {dst_alloc}");

        // Importing the same archive again is a no-op; a different
        // snapshot under the same name is refused.
        let again = Snapshot::import(&out, Some(dest.as_path())).await.unwrap();
        assert_eq!(again.digest(), source.digest());
        let other = make_artifact(&work.join("elsewhere/base"), 9, None, None);
        let other_out = work.join("other.tar.zst");
        Snapshot::export(
            other.path().to_string_lossy(),
            other_out.clone(),
            ExportOpts::default(),
        )
        .await
        .unwrap();
        let err = Snapshot::import(&other_out, Some(dest.as_path()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "SnapshotAlreadyExists");
        assert_eq!(
            fs::read_dir(&dest).unwrap().count(),
            1,
            "no staging left behind"
        );
    }

    // Progress arrives through a plain callback, ending at the total.
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let progress: ProgressCallback = std::sync::Arc::new(move |e| sink.lock().unwrap().push(e));
    let out = work.join("out/progress.tar.zst");
    let call = CallOpts {
        progress: Some(progress.clone()),
        ..CallOpts::default()
    };
    Snapshot::export_with("base", &out, ExportOpts::default(), call)
        .await
        .unwrap();
    let exported: Vec<ProgressEvent> = std::mem::take(&mut *events.lock().unwrap());
    let last = exported.last().unwrap();
    assert_eq!(last.phase.as_str(), "export");
    assert!(
        last.total_bytes >= 300_000 && last.done_bytes == last.total_bytes,
        "{last:?}"
    );
    let call = CallOpts {
        progress: Some(progress),
        ..CallOpts::default()
    };
    Snapshot::import_with(&out, Some(&work.join("dest-progress")), call)
        .await
        .unwrap();
    let last = *events.lock().unwrap().last().unwrap();
    assert_eq!(last.phase.as_str(), "import");
    assert_eq!(last.total_bytes, fs::metadata(&out).unwrap().len());
    assert_eq!(last.done_bytes, last.total_bytes);
    fs::remove_file(&out).unwrap();

    // A corrupt head is refused before anything is written, and an
    // existing archive at `out` is left as it was.
    let out = work.join("out/base.tar.zst");
    let before = fs::read(&out).unwrap();
    let broken = work.join("broken");
    make_artifact(&broken, 2, None, Some(IntegrityAlgorithm::MerkleSha256V1));
    File::options()
        .write(true)
        .open(broken.join("upper.ext4"))
        .unwrap()
        .write_all_at(b"tampered", 1 << 20)
        .unwrap();
    let err = Snapshot::export(broken.to_string_lossy(), out.clone(), ExportOpts::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "SnapshotIntegrity");
    assert_eq!(fs::read(&out).unwrap(), before);
    assert_eq!(fs::read_dir(work.join("out")).unwrap().count(), 2);

    let err = Snapshot::export("no-such", work.join("x.tar.zst"), ExportOpts::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "SnapshotNotFound");
    let err = Snapshot::export(
        "base",
        work.join("x.tar.zst"),
        ExportOpts {
            with_image: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), "ImageNotFound");
    assert!(!work.join("x.tar.zst").exists());
}

async fn import_066(work: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/conformance/archives/v066-export.tar.zst");
    let dest = work.join("from-066");
    let handle = Snapshot::import(&fixture, Some(dest.as_path()))
        .await
        .unwrap();
    assert_eq!(
        handle.digest(),
        "sha256:79fe17d9734a1d5ee5ddd120df5ec2631cef90ce814d988d8302c555d6a34a20"
    );
    assert_eq!(
        handle.path(),
        dest.join("sha256-79fe17d9734a1d5e").canonicalize().unwrap()
    );
    let snap = handle.open().await.unwrap();
    let report = snap.verify().await.unwrap();
    assert_eq!(
        report.upper,
        microsandbox::UpperVerifyStatus::Verified {
            algorithm: "msb-sparse-sha256-v1".into(),
            digest: "sha256:3be27239513761e02c98e2a3e39bf046ee568b032a7da35ba7ce5c684def018e"
                .into(),
        }
    );
    // Stored dense by 0.6.6, it lands sparse.
    assert!(
        allocated(&snap.upper_path()) < 64 << 10,
        "{}",
        allocated(&snap.upper_path())
    );
}

async fn with_parents(work: &Path, snapshots: &Path) {
    let root = make_artifact(&snapshots.join("root"), 3, None, None);
    let mid = make_artifact(
        &snapshots.join("mid"),
        4,
        Some(root.digest()),
        Some(IntegrityAlgorithm::SparseSha256V1),
    );
    let leaf = make_artifact(
        &snapshots.join("leaf"),
        5,
        Some(mid.digest()),
        Some(IntegrityAlgorithm::MerkleSha256V1),
    );
    Snapshot::reindex_default().await.unwrap();
    let out = work.join("chain.tar.zst");
    let with_parents = ExportOpts {
        with_parents: true,
        ..Default::default()
    };
    Snapshot::export(leaf.digest(), &out, with_parents)
        .await
        .unwrap();
    let dest = work.join("chain-dest");
    let head = Snapshot::import(&out, Some(dest.as_path())).await.unwrap();
    assert_eq!(head.digest(), leaf.digest());
    assert_eq!(head.parent_digest(), Some(mid.digest()));
    let names: Vec<String> = Snapshot::list_dir(dest.clone())
        .await
        .unwrap()
        .iter()
        .map(|s| s.path().file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["leaf", "mid", "root"]);
    let listed = Snapshot::list().await.unwrap();
    let imported_mid = listed
        .iter()
        .find(|h| h.path() == dest.join("mid").canonicalize().unwrap())
        .expect("mid is indexed");
    assert_eq!(imported_mid.digest(), mid.digest());
    assert!(imported_mid.child_count() >= 1);

    // A missing ancestor is named.
    fs::remove_dir_all(snapshots.join("root")).unwrap();
    fs::remove_dir_all(dest.join("root")).unwrap();
    Snapshot::reindex_default().await.unwrap();
    Snapshot::reindex(&dest).await.unwrap();
    let err = Snapshot::export(leaf.digest(), work.join("y.tar.zst"), with_parents)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "SnapshotNotFound");
    assert!(err.to_string().contains(root.digest()), "{err}");
}

// ---------------------------------------------------------------------------
// Hostile archives, written by hand so every field can be wrong.

/// A tar entry as raw parts.
#[derive(Clone)]
struct Raw {
    name: String,
    kind: u8,
    data: Vec<u8>,
    /// `(real_size, map)` for GNU sparse entries.
    sparse: Option<(u64, Vec<(u64, u64)>)>,
    /// Size field override (else `data.len()`).
    size: Option<u64>,
}

impl Raw {
    fn file(name: &str, data: &[u8]) -> Self {
        Self {
            name: name.into(),
            kind: b'0',
            data: data.to_vec(),
            sparse: None,
            size: None,
        }
    }

    fn of_kind(name: &str, kind: u8) -> Self {
        Self {
            kind,
            ..Self::file(name, b"")
        }
    }

    fn header(&self) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        let octal = |field: &mut [u8], v: u64| {
            let text = format!("{v:0w$o}\0", w = field.len() - 1);
            field.copy_from_slice(text.as_bytes());
        };
        h[..self.name.len()].copy_from_slice(self.name.as_bytes());
        octal(&mut h[100..108], 0o644);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(
            &mut h[124..136],
            self.size.unwrap_or(self.data.len() as u64),
        );
        octal(&mut h[136..148], 0);
        h[156] = self.kind;
        if self.kind == b'2' || self.kind == b'1' {
            h[157..168].copy_from_slice(b"/etc/passwd");
        }
        h[257..265].copy_from_slice(b"ustar  \0");
        if let Some((real, map)) = &self.sparse {
            h[156] = b'S';
            for (i, (offset, len)) in map.iter().take(4).enumerate() {
                octal(&mut h[386 + i * 24..398 + i * 24], *offset);
                octal(&mut h[398 + i * 24..410 + i * 24], *len);
            }
            octal(&mut h[483..495], *real);
        }
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.header();
        out.extend_from_slice(&self.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }
}

fn tar_of(entries: &[Raw]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.iter().flat_map(Raw::bytes).collect();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// The parts of a valid single-snapshot archive, to be broken one at a time.
struct Parts {
    index: serde_json::Value,
    manifest: Vec<u8>,
    hex: String,
    upper_size: u64,
    upper_data: Vec<u8>,
}

impl Parts {
    fn new(work: &Path) -> Self {
        let dir = work.join("hostile-src/snap");
        let f = {
            fs::create_dir_all(&dir).unwrap();
            File::create(dir.join("upper.ext4")).unwrap()
        };
        f.set_len(1 << 20).unwrap();
        f.write_all_at(&[7u8; 512], 4096).unwrap();
        drop(f);
        let snap = write_manifest(
            &dir,
            1 << 20,
            None,
            Some(IntegrityAlgorithm::MerkleSha256V1),
            "2026-11-24T10:00:00Z",
        );
        Self {
            index: json!({
                "format": "msb-snapshot-archive-v1",
                "snapshots": [{"digest": snap.digest(), "name": "hostile"}],
                "image": null,
            }),
            manifest: fs::read(dir.join("manifest.json")).unwrap(),
            hex: snap.digest()[7..].to_string(),
            upper_size: 1 << 20,
            upper_data: vec![7u8; 512],
        }
    }

    fn index_entry(&self) -> Raw {
        Raw::file(
            "msb-archive.json",
            &serde_json::to_vec(&self.index).unwrap(),
        )
    }

    fn manifest_entry(&self) -> Raw {
        Raw::file(
            &format!("snapshots/{}/manifest.json", self.hex),
            &self.manifest,
        )
    }

    fn upper_entry(&self) -> Raw {
        Raw {
            sparse: Some((self.upper_size, vec![(4096, 512), (self.upper_size, 0)])),
            ..Raw::file(
                &format!("snapshots/{}/upper.ext4", self.hex),
                &self.upper_data,
            )
        }
    }

    fn valid(&self) -> Vec<Raw> {
        vec![
            self.index_entry(),
            self.manifest_entry(),
            self.upper_entry(),
        ]
    }

    fn with_index(&self, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<Raw> {
        let mut index = self.index.clone();
        edit(&mut index);
        let mut entries = self.valid();
        entries[0] = Raw::file("msb-archive.json", &serde_json::to_vec(&index).unwrap());
        entries
    }
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

/// The corpus: (what is wrong, archive bytes).
fn hostile_corpus(p: &Parts) -> Vec<(&'static str, Vec<u8>)> {
    let hex = &p.hex;
    let mut corpus: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let mut add = |what, entries: Vec<Raw>| corpus.push((what, tar_of(&entries)));
    let with = |extra: Raw| {
        let mut e = p.valid();
        e.push(extra);
        e
    };
    add(
        "absolute path",
        with(Raw::file("/tmp/msb-hostile-escape", b"x")),
    );
    add(
        "dot-dot path",
        with(Raw::file("../msb-hostile-escape", b"x")),
    );
    add(
        "dot-dot inside the layout",
        with(Raw::file(&format!("snapshots/{hex}/../../../escape"), b"x")),
    );
    add(
        "empty path component",
        with(Raw::file(&format!("snapshots//{hex}"), b"x")),
    );
    add(
        "entry outside the layout",
        with(Raw::file("notes.txt", b"hello")),
    );
    add(
        "unlisted artifact directory",
        with(Raw::file(
            &format!("snapshots/{}/manifest.json", "c".repeat(64)),
            b"{}",
        )),
    );
    add(
        "extra file in an artifact",
        with(Raw::file(&format!("snapshots/{hex}/extra"), b"x")),
    );
    for (what, kind) in [
        ("hard link", b'1'),
        ("symbolic link", b'2'),
        ("character device", b'3'),
        ("block device", b'4'),
        ("directory entry", b'5'),
        ("fifo", b'6'),
        ("GNU long name", b'L'),
        ("pax header", b'x'),
        ("pax global header", b'g'),
    ] {
        add(
            what,
            with(Raw::of_kind(&format!("snapshots/{hex}/upper.ext4.x"), kind)),
        );
    }
    let mut symlinked_upper = p.valid();
    symlinked_upper[2] = Raw::of_kind(&format!("snapshots/{hex}/upper.ext4"), b'2');
    add("upper as a symlink", symlinked_upper);
    add("duplicate manifest", with(p.manifest_entry()));
    add("duplicate upper", with(p.upper_entry()));
    add("duplicate index", with(p.index_entry()));
    let v = p.valid();
    add(
        "index not first",
        vec![v[1].clone(), v[0].clone(), v[2].clone()],
    );
    add(
        "upper before its manifest",
        vec![v[0].clone(), v[2].clone(), v[1].clone()],
    );
    add("missing upper", vec![v[0].clone(), v[1].clone()]);
    add("missing manifest and upper", vec![v[0].clone()]);
    add("index only, no entries", vec![]);
    add(
        "unknown index field",
        p.with_index(|i| i["extra"] = json!(1)),
    );
    add(
        "unknown archive format",
        p.with_index(|i| i["format"] = json!("msb-snapshot-archive-v9")),
    );
    add(
        "name that is a path",
        p.with_index(|i| i["snapshots"][0]["name"] = json!("../escape")),
    );
    add(
        "hidden name",
        p.with_index(|i| i["snapshots"][0]["name"] = json!(".hidden")),
    );
    let mut bad_json = p.valid();
    bad_json[0] = Raw::file("msb-archive.json", b"{\"format\": ");
    add("malformed index", bad_json);
    let mut other_digest = p.valid();
    let edited = String::from_utf8(p.manifest.clone())
        .unwrap()
        .replace("2026-11-24T10:00:00Z", "2026-11-24T10:00:01Z");
    other_digest[1] = Raw::file(&format!("snapshots/{hex}/manifest.json"), edited.as_bytes());
    add("manifest digest does not match its directory", other_digest);
    let mut bad_manifest = p.valid();
    bad_manifest[1] = Raw::file(&format!("snapshots/{hex}/manifest.json"), b"{\"schema\":1}");
    add("invalid manifest", bad_manifest);
    let mut wrong_size = p.valid();
    wrong_size[2].sparse = Some((p.upper_size * 2, vec![(4096, 512)]));
    add("upper size differs from its manifest", wrong_size);
    let mut overlap = p.valid();
    overlap[2].sparse = Some((p.upper_size, vec![(4096, 512), (4096, 512)]));
    overlap[2].data = vec![7u8; 1024];
    add("overlapping sparse map", overlap);
    let mut past_end = p.valid();
    past_end[2].sparse = Some((p.upper_size, vec![(p.upper_size - 256, 512)]));
    add("sparse map past the apparent size", past_end);
    let mut map_vs_size = p.valid();
    map_vs_size[2].size = Some(1024);
    map_vs_size[2].data = vec![7u8; 1024];
    add("stored size disagrees with the sparse map", map_vs_size);
    let mut size_past_header = p.valid();
    size_past_header[1].size = Some(p.manifest.len() as u64 - 10);
    add("manifest longer than its header says", size_past_header);
    let mut sparse_manifest = p.valid();
    sparse_manifest[1].sparse = Some((p.manifest.len() as u64, vec![(0, p.manifest.len() as u64)]));
    add("sparse manifest", sparse_manifest);
    // The 0.6.6 layout: its directory names carry a digest prefix.
    let legacy = |dir: &str, extra: Option<Raw>| {
        let mut entries = vec![
            Raw::file(&format!("{dir}/manifest.json"), &p.manifest),
            Raw {
                name: format!("{dir}/upper.ext4"),
                ..p.upper_entry()
            },
        ];
        entries.extend(extra);
        entries
    };
    add(
        "0.6.6 layout, digest prefix mismatch",
        legacy("sha256-0000000000000000", None),
    );
    add(
        "0.6.6 layout, entry outside it",
        legacy(
            &format!("sha256-{}", &hex[..16]),
            Some(Raw::file("cache/blob", b"x")),
        ),
    );
    add(
        "0.6.6 layout, second directory without a manifest",
        legacy(
            &format!("sha256-{}", &hex[..16]),
            Some(Raw::file("sha256-1111111111111111/upper.ext4", b"x")),
        ),
    );

    let valid = tar_of(&p.valid());
    let upper_at = valid.len() - 1024 - 512;
    corpus.push((
        "truncated in the upper's data",
        valid[..upper_at + 100].to_vec(),
    ));
    corpus.push(("truncated in a header", valid[..1024 + 300].to_vec()));
    corpus.push((
        "no end-of-archive marker",
        valid[..valid.len() - 1024].to_vec(),
    ));
    let mut checksum = valid.clone();
    checksum[1024 + 5] ^= 0x01; // the manifest header's name
    corpus.push(("header checksum mismatch", checksum));
    let mut trailing = valid.clone();
    trailing.extend_from_slice(b"hidden payload after the end");
    corpus.push(("data after the end marker", trailing));
    let compressed = zstd(&valid);
    corpus.push((
        "truncated zstd stream",
        compressed[..compressed.len() / 2].to_vec(),
    ));
    let mut corrupt = compressed.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    corpus.push(("corrupt zstd frame", corrupt));
    corpus.push(("zstd of a non-tar", zstd(b"just some text, not a tar")));
    corpus.push(("neither zstd nor tar", b"PK\x03\x04 a zip file?".repeat(40)));
    corpus.push(("empty file", Vec::new()));
    corpus
}

async fn hostile(work: &Path, home: &Path) {
    let parts = Parts::new(work);
    // The unbroken parts import fine (so each case fails for its own flaw).
    let ok = work.join("hostile-ok.tar");
    fs::write(&ok, tar_of(&parts.valid())).unwrap();
    let handle = Snapshot::import(&ok, Some(&work.join("hostile-ok-dest")))
        .await
        .unwrap();
    assert_eq!(handle.name(), None);

    let corpus = hostile_corpus(&parts);
    assert!(corpus.len() >= 30, "corpus of {}", corpus.len());
    let corpus_dir = work.join("corpus");
    fs::create_dir_all(&corpus_dir).unwrap();
    let dest = work.join("hostile-dest");
    fs::create_dir_all(&dest).unwrap();
    let index_before = Snapshot::list().await.unwrap();
    let home_before = tree(home);
    let work_before: Vec<PathBuf> = fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for (i, (what, bytes)) in corpus.iter().enumerate() {
        let archive = corpus_dir.join(format!("{i:02}.tar"));
        fs::write(&archive, bytes).unwrap();
        for target in [Some(dest.as_path()), None] {
            let err = Snapshot::import(&archive, target).await.expect_err(what);
            assert_eq!(err.kind(), "ArchiveInvalid", "{what}: {err}");
            if target.is_some() {
                eprintln!("{what:45} -> {err}");
            }
            assert_eq!(
                tree(&dest),
                Vec::<PathBuf>::new(),
                "{what}: left files in dest"
            );
            assert_eq!(tree(home), home_before, "{what}: changed MSB_HOME");
        }
        let mut work_now: Vec<PathBuf> = fs::read_dir(work)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        work_now.sort();
        let mut expected = work_before.clone();
        expected.sort();
        assert_eq!(work_now, expected, "{what}: wrote outside dest");
        assert!(!Path::new("/tmp/msb-hostile-escape").exists(), "{what}");
        assert_eq!(
            Snapshot::list().await.unwrap(),
            index_before,
            "{what}: index changed"
        );
    }
    // An import into a directory that does not exist yet leaves none.
    let fresh = work.join("never-made/dest");
    let err = Snapshot::import(corpus_dir.join("00.tar"), Some(&fresh))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "ArchiveInvalid");
    assert!(!work.join("never-made").exists());

    // Content that disagrees with its recorded integrity is a integrity
    // failure, with the same guarantees.
    let mut tampered = parts.valid();
    tampered[2].data = vec![8u8; 512];
    let archive = corpus_dir.join("tampered.tar");
    fs::write(&archive, tar_of(&tampered)).unwrap();
    let err = Snapshot::import(&archive, Some(dest.as_path()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "SnapshotIntegrity", "{err}");
    assert_eq!(tree(&dest), Vec::<PathBuf>::new());
    assert_eq!(Snapshot::list().await.unwrap(), index_before);
}
