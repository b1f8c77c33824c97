//! `msb pull`, `msb image ls` and `msb snapshot push/pull` against a real
//! registry on 127.0.0.1 (Debian's `docker-registry`, fed by `skopeo`): no
//! VM is booted.

// The core suites' artifacts made without a VM.
#[path = "../../core/tests/common/artifacts.rs"]
#[allow(dead_code)]
mod artifacts;

// The core suites' harness; this suite uses only its registry.
#[path = "../../core/tests/common/registry.rs"]
#[allow(dead_code)]
mod registry;

use std::path::Path;
use std::process::{Command, Output};

use microsandbox::image::busybox::{DEFAULT_BUSYBOX, build_busybox_archive};
use registry::{RegistryOpts, TestRegistry};

/// `msb args…` with a temporary home and an empty Docker config (never `~`).
fn msb(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_msb"))
        .env("MSB_HOME", home.join("msb"))
        .env("DOCKER_CONFIG", home.join("docker"))
        .args(args)
        .output()
        .unwrap()
}

/// `msb image load` of the busybox image as `busybox:cli` into `home`; its
/// `--json` answer.
fn load_busybox(home: &Path) -> serde_json::Value {
    let archive = home.join("busybox.tar");
    build_busybox_archive(Path::new(DEFAULT_BUSYBOX), "busybox:cli", &archive).unwrap();
    let loaded = msb(
        home,
        &["--json", "image", "load", archive.to_str().unwrap()],
    );
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    serde_json::from_slice(&loaded.stdout).unwrap()
}

#[test]
fn pull_lists_the_origin_and_names_the_kind_of_a_failure() {
    let registry = TestRegistry::start(RegistryOpts::default());
    let archive = registry.dir.path().join("busybox.tar");
    build_busybox_archive(Path::new(DEFAULT_BUSYBOX), "busybox:cli", &archive).unwrap();
    registry.push_archive(&archive, "busybox:cli");
    let home = tempfile::tempdir().unwrap();
    let reference = format!("{}/busybox:cli", registry.host());

    let pulled = msb(home.path(), &["pull", &reference]);
    let stdout = String::from_utf8_lossy(&pulled.stdout);
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    assert!(
        stdout.starts_with(&format!("pulled {reference} (sha256:")),
        "{stdout}"
    );

    let listed = msb(home.path(), &["image", "ls", "--json"]);
    let images: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(images[0]["origin"], reference.as_str(), "{images}");

    let missing = msb(
        home.path(),
        &["pull", &format!("{}/busybox:nope", registry.host())],
    );
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("ImageNotFound"), "{stderr}");
}

#[test]
fn snapshot_push_then_pull_into_another_home() {
    let registry = TestRegistry::start(RegistryOpts::default());
    let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The snapshot pins an image of this home, which the push carries.
    let image = load_busybox(from.path());
    let dir = from.path().join("msb/snapshots/base");
    artifacts::make_artifact(
        &dir,
        5,
        None,
        Some(microsandbox::IntegrityAlgorithm::MerkleSha256V1),
    );
    let snap = registry::repin(
        &dir,
        "busybox:cli",
        image["manifest_digest"].as_str().unwrap(),
    );
    let reference = format!("{}/snaps/base:1", registry.host());
    let pushed = msb(from.path(), &["snapshot", "push", "base", &reference]);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    assert!(
        String::from_utf8_lossy(&pushed.stdout)
            .starts_with(&format!("pushed     {reference}@sha256:"))
    );
    let dest = to.path().join("landed");
    let pulled = msb(
        to.path(),
        &[
            "--json",
            "snapshot",
            "pull",
            &reference,
            "--dest",
            dest.to_str().unwrap(),
        ],
    );
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let handle: serde_json::Value = serde_json::from_slice(&pulled.stdout).unwrap();
    assert_eq!(handle["digest"], snap.digest(), "{handle}");
    let landed = Path::new(handle["path"].as_str().unwrap());
    assert!(landed.starts_with(&dest), "{handle}");
    assert!(landed.join("manifest.json").is_file());
    // The image came with it, by digest.
    let listed = msb(to.path(), &["--json", "image", "ls"]);
    let images: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        images[0]["manifest_digest"], image["manifest_digest"],
        "{images}"
    );
}

#[test]
fn image_push_prints_the_digest_skopeo_sees() {
    let registry = TestRegistry::start(RegistryOpts::default());
    let home = tempfile::tempdir().unwrap();
    let image = load_busybox(home.path());
    let target = format!("{}/cli/busybox:1", registry.host());
    let pushed = msb(
        home.path(),
        &["--json", "image", "push", "busybox:cli", &target],
    );
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&pushed.stdout).unwrap();
    assert_eq!(printed["digest"], image["manifest_digest"], "{printed}");
    let (_, seen) = registry.skopeo_raw(&target);
    assert_eq!(printed["digest"], seen.as_str());

    let missing = msb(home.path(), &["image", "push", "nothing:here", &target]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("ImageNotFound"), "{stderr}");
}
