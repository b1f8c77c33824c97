//! Helpers shared by the end-to-end suites: a temporary MSB_HOME with the
//! busybox image loaded, and a guard that fails the test (and kills the VMs)
//! if any QEMU process started under that home outlives it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use microsandbox::image::Image;
use microsandbox::image::busybox::{DEFAULT_BUSYBOX, build_busybox_archive};

pub const BUSYBOX_REF: &str = "local/busybox:test";

/// A temporary MSB_HOME for one test binary.
pub struct TestHome {
    pub dir: tempfile::TempDir,
}

impl TestHome {
    /// Create the home and point MSB_HOME at it. Call once per test binary,
    /// before any thread reads the environment.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: called once at the start of the binary's only test.
        unsafe { std::env::set_var("MSB_HOME", dir.path()) };
        assert!(
            std::env::var_os("MSB_KERNEL_DIR").is_some(),
            "MSB_KERNEL_DIR is not set: run the suite with `make test` (it installs the guest kernel)"
        );
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Build the busybox OCI archive and load it as [`BUSYBOX_REF`].
    pub async fn load_busybox(&self) -> PathBuf {
        let archive = self.path().join("busybox.tar");
        build_busybox_archive(Path::new(DEFAULT_BUSYBOX), BUSYBOX_REF, &archive).unwrap();
        Image::load(&archive, None).await.unwrap();
        archive
    }

    /// Pids of live processes whose command line mentions this home.
    pub fn vm_pids(&self) -> Vec<u32> {
        processes_mentioning(self.path())
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        let leftovers = self.vm_pids();
        for pid in &leftovers {
            // SAFETY: kill sends a signal; these are VMs this test started.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        if !leftovers.is_empty() && !std::thread::panicking() {
            panic!("QEMU processes outlived the test: {leftovers:?}");
        }
    }
}

/// Boot a busybox sandbox `name` and run the shell `script` in it (which
/// must succeed): a sandbox that has written something worth capturing.
pub async fn sandbox_running(name: &str, script: &str) -> microsandbox::Sandbox {
    let sandbox = microsandbox::Sandbox::builder(name)
        .image(BUSYBOX_REF)
        .create()
        .await
        .unwrap();
    let out = sandbox.exec("sh", ["-c", script]).await.unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    sandbox
}

/// Live, non-zombie processes whose command line contains `needle`.
pub fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if !zombie
            && String::from_utf8_lossy(&cmdline).contains(&needle)
            && pid != std::process::id()
        {
            pids.push(pid);
        }
    }
    pids
}
