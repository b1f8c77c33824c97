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
    let snap = artifacts::make_artifact(
        &from.path().join("msb/snapshots/base"),
        5,
        None,
        Some(microsandbox::IntegrityAlgorithm::MerkleSha256V1),
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
}
