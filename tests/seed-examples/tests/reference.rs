//! The reference page, compiled and run. `build.rs` generated every item in
//! `generated` from `snapshots-rust.mdx`; that this file compiles is the
//! check that the API has the page's shape. The one test then runs, in page
//! order, each example that needs no VM against fixtures written without one.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use microsandbox::image::Image;
use microsandbox::image::busybox::DEFAULT_BUSYBOX;
use microsandbox::snapshot::integrity::upper_digest;
use microsandbox::snapshot::manifest::MANIFEST_SCHEMA;
use microsandbox::snapshot::{ImageRef, Manifest, SnapshotFormat, UpperIntegrity, UpperLayer};
use microsandbox::{IntegrityAlgorithm, MicrosandboxResult, Snapshot};

// Examples bind values they never use (`let snap = ...`) and nothing calls
// the checks; `SEED_EXAMPLES_SKIP` can leave imports unused; `fields_manifest`
// takes one argument per `Manifest` field.
#[allow(
    dead_code,
    unused_variables,
    unused_imports,
    clippy::too_many_arguments
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/reference.rs"));
}

static ROOT: OnceLock<PathBuf> = OnceLock::new();

/// The page's absolute path `p` (e.g. `/data/snapshots`) under this test's
/// temporary root, so running an example never touches the real one.
/// `build.rs` rewrites the literals of runnable examples to call this.
pub fn seed_path(p: &'static str) -> &'static str {
    let root = ROOT.get().expect("seed_path before the test root exists");
    let path = root.join(p.trim_start_matches('/'));
    Box::leak(path.to_str().unwrap().to_owned().into_boxed_str())
}

/// Point microsandbox at `home` for this process (the page's examples take
/// no configuration, so the process default is where it goes).
fn use_home(home: &Path) {
    microsandbox::Config::set_default(microsandbox::Config::new().home(home));
}

/// Index the artifacts in `dir` (the page's `Snapshot::reindex`).
async fn index(dir: &Path) -> MicrosandboxResult<usize> {
    Snapshot::reindex(dir).await
}

/// A valid artifact in `dir`, written directly (no VM): a sparse upper of
/// `size` bytes with a little data, and a schema-1 manifest pinning `image`.
async fn artifact(
    dir: &Path,
    image: &ImageRef,
    size: u64,
    integrity: Option<IntegrityAlgorithm>,
    labels: &[(&str, &str)],
) {
    std::fs::create_dir_all(dir).unwrap();
    let upper = dir.join("upper.ext4");
    let file = File::create(&upper).unwrap();
    file.set_len(size).unwrap();
    file.write_all_at(dir.to_string_lossy().as_bytes(), 1 << 20)
        .unwrap();
    drop(file);
    let integrity = match integrity {
        Some(a) => Some(UpperIntegrity {
            algorithm: a.name().into(),
            digest: upper_digest(&upper, a, None).await.unwrap(),
        }),
        None => None,
    };
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        format: SnapshotFormat::Raw,
        fstype: "ext4".into(),
        image: image.clone(),
        parent: None,
        created_at: "2026-07-15T10:20:30Z".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        upper: UpperLayer {
            file: "upper.ext4".into(),
            size_bytes: size,
            integrity,
        },
        source_sandbox: Some("api".into()),
    };
    std::fs::write(dir.join("manifest.json"), manifest.canonical_bytes()).unwrap();
}

/// What the runnable examples name: the busybox image (loaded from the
/// host's static busybox, so `with_image` export has something to bundle),
/// "baseline" (with recorded integrity, for `verify`) and
/// "after-pip-install" in the default snapshots directory, and one artifact
/// under the page's `/data/snapshots` (rewritten under the root). Indexed.
async fn fixtures(root: &Path, home: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let oci = root.join("busybox.tar");
    Image::build_busybox(DEFAULT_BUSYBOX, "local/busybox:seed", &oci)
        .await
        .unwrap();
    let info = Image::load(&oci, None).await.unwrap();
    let image = ImageRef {
        reference: info.reference,
        manifest_digest: info.manifest_digest,
    };
    let snapshots = home.join("snapshots");
    let merkle = Some(IntegrityAlgorithm::MerkleSha256V1);
    artifact(&snapshots.join("baseline"), &image, 64 << 20, merkle, &[]).await;
    let stage = [("stage", "post-deps")];
    artifact(
        &snapshots.join("after-pip-install"),
        &image,
        32 << 20,
        merkle,
        &stage,
    )
    .await;
    let external = Path::new(seed_path("/data/snapshots")).join("external");
    artifact(&external, &image, 16 << 20, None, &[]).await;
    assert_eq!(index(&snapshots).await.unwrap(), 2);
}

#[test]
fn the_reference_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    ROOT.set(tmp.path().join("root")).unwrap();
    use_home(&home);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        fixtures(ROOT.get().unwrap(), &home).await;
        eprintln!(
            "{} rust blocks: {} signatures, {} examples run, {} compiled only (need a VM): {:?}",
            generated::BLOCKS,
            generated::SIGNATURES,
            generated::examples::RUN.len(),
            generated::examples::COMPILE_ONLY.len(),
            generated::examples::COMPILE_ONLY,
        );
        generated::examples::run_all(|name| eprintln!("-- {name}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        // The page's order ends with both named snapshots removed.
        for gone in ["baseline", "after-pip-install"] {
            let err = Snapshot::get(gone).await.unwrap_err();
            assert_eq!(err.kind(), "SnapshotNotFound", "{gone}: {err}");
        }
        let archive = Path::new(seed_path("/tmp/baseline.tar.zst"));
        assert!(archive.is_file(), "export wrote no {}", archive.display());
        std::fs::remove_file(archive).unwrap();

        // `build()`: "Errors with `InvalidConfig` if no destination was set."
        let err = Snapshot::builder("api").build().unwrap_err();
        assert_eq!(err.kind(), "InvalidConfig", "{err}");
    });
}
