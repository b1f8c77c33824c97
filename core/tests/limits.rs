//! Inputs at and past the limits (issue 22, point 5; `docs/limits.md`):
//! huge label maps, very long and odd names, an archive whose manifest is
//! 64 MB, an upper whose apparent size is 2^53−1. Each gives a clear kind or
//! a correct result, in bounded time and memory: peak RSS (`VmHWM`, reset
//! before each case through `/proc/self/clear_refs`) is measured around
//! every case, one case at a time.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::TestHome;
use common::artifacts::{IMAGE_DIGEST, make_artifact, tree, write_manifest};
use microsandbox::snapshot::MAX_SNAPSHOT_NAME_BYTES;
use microsandbox::snapshot::manifest::{
    ImageRef, MANIFEST_MAX_BYTES, MANIFEST_SCHEMA, MAX_SAFE_SIZE, Manifest, SnapshotFormat,
    UpperLayer,
};
use microsandbox::{
    ExportOpts, IntegrityAlgorithm, MicrosandboxResult, Sandbox, Snapshot, UpperVerifyStatus,
};

/// Cases run one at a time: the peak RSS is the process's.
static MEASURED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Resident memory a case may add on top of its own inputs.
const RSS_BOUND_KIB: u64 = 64 << 10;

fn kib(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Run `case` alone, with the peak RSS reset first; print and return its
/// wall time and how far the peak rose above the RSS at the start.
async fn measured<F: std::future::Future<Output = ()>>(what: &str, case: F) -> (Duration, u64) {
    let _alone = MEASURED.lock().await;
    // "5" resets the peak to the current RSS (Linux 4.0 and later).
    fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = kib("VmRSS:");
    let started = Instant::now();
    case.await;
    let took = started.elapsed();
    let rise = kib("VmHWM:").saturating_sub(before);
    eprintln!(
        "{what}: {:.2} s, peak RSS +{} KiB",
        took.as_secs_f64(),
        rise
    );
    (took, rise)
}

fn kind<T: std::fmt::Debug>(result: MicrosandboxResult<T>) -> &'static str {
    result.unwrap_err().kind()
}

#[tokio::test(flavor = "multi_thread")]
async fn label_maps_past_the_manifest_limit_are_refused_before_any_work() {
    let home = TestHome::new();
    let (_, rise) = measured(
        "100k labels, a 10 MB label value",
        home.run(async {
            // Refused by the builder's checks, before the sandbox is even
            // looked up (there is none here).
            let mut many = Snapshot::builder("no-such-sandbox").name("many");
            for i in 0..100_000 {
                many = many.label(format!("key-{i:06}"), "value");
            }
            assert_eq!(kind(many.create().await), "InvalidConfig");
            let big = Snapshot::builder("no-such-sandbox")
                .name("big")
                .label("blob", "x".repeat(10 << 20));
            assert_eq!(kind(big.create().await), "InvalidConfig");
            // Under the limit the builder lets it through (and the missing
            // sandbox is what fails).
            let fits = Snapshot::builder("no-such-sandbox")
                .name("fits")
                .label("blob", "x".repeat(100 << 10));
            assert_eq!(kind(fits.create().await), "SandboxNotFound");
        }),
    )
    .await;
    assert!(rise < RSS_BOUND_KIB, "peak RSS rose {rise} KiB");
    assert!(!home.snapshots_dir().exists() || tree(&home.snapshots_dir()).is_empty());
}

/// A manifest of an artifact whose upper (no integrity recorded) has
/// apparent size `size`.
fn manifest(size: u64, labels: BTreeMap<String, String>) -> Manifest {
    Manifest {
        schema: MANIFEST_SCHEMA,
        format: SnapshotFormat::Raw,
        fstype: "ext4".into(),
        image: ImageRef {
            reference: "local/busybox:test".into(),
            manifest_digest: IMAGE_DIGEST.into(),
        },
        parent: None,
        created_at: "2026-11-30T12:00:00Z".into(),
        labels,
        upper: UpperLayer {
            file: "upper.ext4".into(),
            size_bytes: size,
            integrity: None,
        },
        source_sandbox: None,
    }
}

/// Rewrite the manifest of the artifact at `dir` (made by `make_artifact`)
/// with `labels`; its size in bytes.
fn relabel(dir: &Path, labels: BTreeMap<String, String>) -> usize {
    let bytes = manifest(64 << 20, labels).canonical_bytes();
    fs::write(dir.join("manifest.json"), &bytes).unwrap();
    bytes.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_with_many_labels_opens_up_to_its_limit() {
    let home = TestHome::new();
    let dir = home.snapshots_dir().join("labelled");
    make_artifact(&dir, 1, None, None);
    let labels = |n: usize| -> BTreeMap<String, String> {
        (0..n)
            .map(|i| (format!("key-{i:06}"), "value".to_string()))
            .collect()
    };
    // 40k labels: about 800 KB, under the 1 MiB limit.
    let size = relabel(&dir, labels(40_000));
    assert!(size as u64 <= MANIFEST_MAX_BYTES, "{size}");
    let (took, rise) = measured(
        "open, index and list an 800 KB manifest",
        home.run(async {
            let snap = Snapshot::open(dir.to_str().unwrap()).await.unwrap();
            assert_eq!(snap.labels().len(), 40_000);
            assert_eq!(Snapshot::reindex_default().await.unwrap(), 1);
            assert_eq!(Snapshot::list().await.unwrap().len(), 1);
        }),
    )
    .await;
    assert!(took < Duration::from_secs(10) && rise < RSS_BOUND_KIB);
    // 100k labels: past the limit, refused as a manifest, unread.
    let size = relabel(&dir, labels(100_000));
    assert!(size as u64 > MANIFEST_MAX_BYTES, "{size}");
    home.run(async {
        let err = Snapshot::open(dir.to_str().unwrap()).await.unwrap_err();
        assert_eq!(err.kind(), "ManifestInvalid", "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn long_and_odd_names_are_refused_with_their_kind() {
    let home = TestHome::new();
    let long = "n".repeat(10_000);
    let at_limit = "n".repeat(MAX_SNAPSHOT_NAME_BYTES);
    let past_limit = "n".repeat(MAX_SNAPSHOT_NAME_BYTES + 1);
    home.run(async {
        for bad in [
            long.as_str(),
            past_limit.as_str(),
            "a/b",
            "a\0b",
            "..",
            ".",
            "../escape",
            "",
        ] {
            let created = Snapshot::builder("no-such-sandbox")
                .name(bad)
                .create()
                .await;
            assert_eq!(
                kind(created),
                "InvalidConfig",
                "snapshot name of {} bytes",
                bad.len()
            );
            let created = Sandbox::builder(bad)
                .image(common::BUSYBOX_REF)
                .create()
                .await;
            assert_eq!(
                kind(created),
                "InvalidConfig",
                "sandbox name of {} bytes",
                bad.len()
            );
        }
        // The longest name is a name: what fails is the missing sandbox.
        let created = Snapshot::builder("no-such-sandbox")
            .name(&at_limit)
            .create()
            .await;
        assert_eq!(kind(created), "SandboxNotFound");
        // Looked up, a name too long for any file is simply not there.
        for missing in [long.as_str(), past_limit.as_str(), "a\0b"] {
            let got = Snapshot::get(missing).await;
            assert_eq!(
                kind(got),
                "SnapshotNotFound",
                "get of {} bytes",
                missing.len()
            );
            let removed = Snapshot::remove(missing, false).await;
            assert_eq!(
                kind(removed),
                "SnapshotNotFound",
                "remove of {} bytes",
                missing.len()
            );
            let sandbox = Sandbox::get(missing).await;
            assert_eq!(
                kind(sandbox),
                "SandboxNotFound",
                "sandbox get of {} bytes",
                missing.len()
            );
        }
    })
    .await;
    assert!(!home.snapshots_dir().exists() || tree(&home.snapshots_dir()).is_empty());
    assert!(
        !home.path().join("sandboxes").exists() || tree(&home.path().join("sandboxes")).is_empty()
    );
}

/// A plain-tar archive whose index names one snapshot and whose
/// `manifest.json` entry claims `manifest_bytes` bytes (of spaces).
fn archive_with_huge_manifest(home: &TestHome, out: &Path, manifest_bytes: u64) {
    let dir = home.path().join("src");
    make_artifact(&dir, 2, None, None);
    let real = home.path().join("real.tar");
    home.run(async {
        let opts = ExportOpts {
            plain_tar: true,
            ..ExportOpts::default()
        };
        Snapshot::export(dir.to_str().unwrap(), &real, opts)
            .await
            .unwrap();
    })
    .block_in_place_safe();
    let mut source = tar::Archive::new(File::open(&real).unwrap());
    let mut entries = source.entries().unwrap();
    let mut index = entries.next().unwrap().unwrap();
    let index_path = index.path().unwrap().into_owned();
    let mut index_bytes = Vec::new();
    index.read_to_end(&mut index_bytes).unwrap();
    drop(index);
    let manifest_path = entries
        .next()
        .unwrap()
        .unwrap()
        .path()
        .unwrap()
        .into_owned();
    assert!(
        manifest_path.ends_with("manifest.json"),
        "{manifest_path:?}"
    );
    let mut builder = tar::Builder::new(File::create(out).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(index_bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, &index_path, &index_bytes[..])
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest_bytes);
    header.set_mode(0o644);
    header.set_cksum();
    let spaces = std::io::repeat(b' ').take(manifest_bytes);
    builder
        .append_data(&mut header, &manifest_path, spaces)
        .unwrap();
    builder.finish().unwrap();
}

/// `block_on` from inside the test runtime: the export helper above is
/// called from synchronous code.
trait BlockInPlace: std::future::Future + Sized {
    fn block_in_place_safe(self) -> Self::Output {
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(self))
    }
}

impl<F: std::future::Future> BlockInPlace for F {}

#[tokio::test(flavor = "multi_thread")]
async fn an_archive_with_a_64_mb_manifest_is_refused_before_it_is_read() {
    let home = TestHome::new();
    let archive = home.path().join("huge-manifest.tar");
    archive_with_huge_manifest(&home, &archive, 64 << 20);
    let dest = home.path().join("dest");
    let (took, rise) = measured(
        "import of an archive with a 64 MB manifest",
        home.run(async {
            let err = Snapshot::import(&archive, Some(&dest)).await.unwrap_err();
            assert_eq!(err.kind(), "ArchiveInvalid", "{err}");
        }),
    )
    .await;
    // Refused at the entry's header: 64 MB are neither read nor held.
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(rise < 16 << 10, "peak RSS rose {rise} KiB");
    assert!(
        !dest.exists() || tree(&dest).is_empty(),
        "{:?}",
        tree(&dest)
    );
}

/// A directory on a filesystem that holds a file of apparent size 2^53−1
/// (tmpfs does; ext4 stops at 16 TiB).
fn huge_file_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
    let probe = File::create(dir.path().join("probe")).unwrap();
    probe
        .set_len(MAX_SAFE_SIZE)
        .expect("/dev/shm holds a sparse file of 2^53-1 bytes");
    drop(probe);
    fs::remove_file(dir.path().join("probe")).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upper_of_apparent_size_2_53_minus_1_round_trips_in_bounded_time() {
    let home = TestHome::new();
    let shm = huge_file_dir();
    let src = shm.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let upper = File::create(src.join("upper.ext4")).unwrap();
    upper.set_len(MAX_SAFE_SIZE).unwrap();
    upper.write_all_at(&[7u8; 1 << 20], 1 << 20).unwrap();
    upper
        .write_all_at(b"the very end", MAX_SAFE_SIZE - 12)
        .unwrap();
    drop(upper);
    let (took, rise) = measured(
        "record, verify, export, import and verify a 2^53-1 byte upper",
        async {
            let snap = write_manifest(
                &src,
                MAX_SAFE_SIZE,
                None,
                Some(IntegrityAlgorithm::DEFAULT),
                "2026-11-30T12:00:00Z",
            );
            home.run(async {
                let report = snap.verify().await.unwrap();
                assert!(
                    matches!(report.upper, UpperVerifyStatus::Verified { .. }),
                    "{report:?}"
                );
                let out = shm.path().join("huge.tar.zst");
                Snapshot::export(src.to_str().unwrap(), &out, ExportOpts::default())
                    .await
                    .unwrap();
                assert!(fs::metadata(&out).unwrap().len() < 16 << 20);
                let dest = shm.path().join("dest");
                let handle = Snapshot::import(&out, Some(&dest)).await.unwrap();
                assert_eq!(handle.size_bytes(), Some(MAX_SAFE_SIZE));
                let imported = handle.open().await.unwrap();
                assert_eq!(imported.digest(), snap.digest());
                let report = imported.verify().await.unwrap();
                assert!(matches!(report.upper, UpperVerifyStatus::Verified { .. }));
                // Where the filesystem cannot hold it (ext4: 16 TiB), the
                // import fails with the path and leaves nothing.
                let err = Snapshot::import(&out, Some(&home.path().join("on-ext4")))
                    .await
                    .unwrap_err();
                eprintln!(
                    "import onto {}: {}: {err}",
                    home.path().display(),
                    err.kind()
                );
                assert_eq!(err.kind(), "Io", "{err}");
                let left = home.path().join("on-ext4");
                assert!(
                    !left.exists() || tree(&left).is_empty(),
                    "{:?}",
                    tree(&left)
                );
            })
            .await;
        },
    )
    .await;
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert!(rise < RSS_BOUND_KIB, "peak RSS rose {rise} KiB");

    // One past 2^53−1 is refused as a manifest: JSON readers lose it.
    let past = manifest(MAX_SAFE_SIZE + 1, BTreeMap::new());
    fs::write(src.join("manifest.json"), past.canonical_bytes()).unwrap();
    home.run(async {
        let err = Snapshot::open(src.to_str().unwrap()).await.unwrap_err();
        assert_eq!(err.kind(), "ManifestInvalid", "{err}");
    })
    .await;
}
