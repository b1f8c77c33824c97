//! The reference's `after-pip-install` flow for real (issue 21, point 4): a
//! sandbox of the Debian bookworm python image (`scripts/build-debian-image.sh`,
//! built once per machine and cached under `target/images`) installs a small
//! pure-Python package from PyPI under the `public` policy, is captured whole
//! (its fork imports the package at once) and on disk as `after-pip-install`,
//! and a fresh sandbox booted from that snapshot with the network `none`
//! imports the package with no interface but `lo`.
//!
//! This suite reaches deb.debian.org (when the archive is not cached yet)
//! and pypi.org, as the host does; nothing else.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::TestHome;
use microsandbox::image::Image;
use microsandbox::{Sandbox, Snapshot};

const DEBIAN_REF: &str = "local/debian-python:bookworm";
/// Small, pure Python, one wheel, no dependencies.
const PACKAGE: &str = "six";

#[tokio::test(flavor = "multi_thread")]
async fn after_pip_install_flow() {
    let home = TestHome::new();
    let archive = debian_archive();
    let started = Instant::now();
    home.run(flow(&archive)).await;
    eprintln!(
        "after-pip-install flow: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(home.vm_pids().is_empty(), "{:?}", home.vm_pids());
}

async fn flow(archive: &Path) {
    Image::load(archive, Some(DEBIAN_REF.to_string()))
        .await
        .unwrap();

    let sb = Sandbox::builder("pip")
        .image(DEBIAN_REF)
        .network("public")
        .create()
        .await
        .unwrap();
    let version = run(&sb, "python3 --version").await;
    assert!(version.starts_with("Python 3.11"), "{version}");
    let out = run(
        &sb,
        &format!(
            "pip install --break-system-packages --no-cache-dir --disable-pip-version-check \
             --root-user-action=ignore {PACKAGE}"
        ),
    )
    .await;
    assert!(
        out.contains(&format!("Successfully installed {PACKAGE}-")),
        "{out}"
    );
    let installed = import_version(&sb).await;
    assert!(
        out.contains(&format!("{PACKAGE}-{installed}")),
        "{installed} vs {out}"
    );

    // Whole VM: a fork continues with the package already imported-ready
    // (its own msb-netd, policy public), no boot, no reinstall.
    let full = sb.snapshot().await.unwrap();
    sb.resume().await.unwrap();
    let fork = full.restore("pip-fork").await.unwrap();
    assert_eq!(import_version(&fork).await, installed);
    Sandbox::remove("pip-fork").await.unwrap();

    // On disk, as the reference names it.
    sb.stop().await.unwrap();
    let snap = Snapshot::builder("pip")
        .name("after-pip-install")
        .create()
        .await
        .unwrap();
    assert_eq!(snap.image_ref(), DEBIAN_REF);

    let offline = Sandbox::builder("offline")
        .from_snapshot("after-pip-install")
        .network("none")
        .create()
        .await
        .unwrap();
    assert_eq!(
        offline.handle().config().network.policy,
        microsandbox::NetworkPolicy::None
    );
    assert_eq!(import_version(&offline).await, installed);
    assert_eq!(run(&offline, "ls /sys/class/net").await.trim(), "lo");
    // No route out: a connect to a public address fails at once.
    let out = offline
        .exec(
            "python3",
            [
                "-c",
                "import socket; socket.create_connection(('151.101.0.223', 443), timeout=5)",
            ],
        )
        .await
        .unwrap();
    assert_ne!(out.exit_code, 0, "{out:?}");
    assert!(
        out.stderr_text().contains("unreachable"),
        "{}",
        out.stderr_text()
    );

    Sandbox::remove("offline").await.unwrap();
    Sandbox::remove("pip").await.unwrap();
}

/// The package's version as Python imports it in `sb`.
async fn import_version(sb: &Sandbox) -> String {
    let version = run(
        sb,
        &format!("python3 -c 'import {PACKAGE}; print({PACKAGE}.__version__)'"),
    )
    .await;
    let version = version.trim().to_string();
    assert!(
        version.split('.').all(|p| p.parse::<u32>().is_ok()),
        "{version}"
    );
    version
}

/// Run a shell command in `sb`; it must succeed. Returns stdout and stderr.
async fn run(sb: &Sandbox, script: &str) -> String {
    let out = sb.exec("sh", ["-c", script]).await.unwrap();
    assert_eq!(out.exit_code, 0, "{script}: {out:?}");
    out.stdout_text() + &out.stderr_text()
}

/// The cached image archive: the build script prints its path, building it
/// first when this machine has none for the script's current version.
fn debian_archive() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/build-debian-image.sh"))
        .output()
        .expect("run scripts/build-debian-image.sh");
    assert!(
        out.status.success(),
        "scripts/build-debian-image.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap();
    root.join(path.trim())
}
