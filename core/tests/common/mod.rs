//! Helpers shared by the suites: a temporary home whose [`Config`] each test
//! body runs under (no suite touches the environment, so a binary may hold
//! several tests running side by side), the busybox image, artifacts made
//! without a VM, and a guard that fails the test (and kills the VMs) if any
//! QEMU process started under a home outlives it.

#![allow(dead_code)]

pub mod artifacts;
pub mod registry;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Once;

use microsandbox::Config;
use microsandbox::image::Image;
use microsandbox::image::busybox::{DEFAULT_BUSYBOX, build_busybox_archive};

pub const BUSYBOX_REF: &str = "local/busybox:test";

/// The guest assets directory, read once from `MSB_KERNEL_DIR` (`make test`
/// installs the kernel there); the suites pass it on through [`Config`].
pub fn guest_assets_dir() -> Option<PathBuf> {
    std::env::var_os("MSB_KERNEL_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A home that cannot be created or read: the process default of every test
/// binary, so an SDK call that escapes its test's scope fails loudly instead
/// of using `~/.microsandbox`.
pub const UNSCOPED_HOME: &str = "/proc/self/msb-test-call-outside-a-TestHome-scope";

fn forbid_unscoped_calls() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| Config::set_default(Config::new().home(UNSCOPED_HOME)));
}

/// A temporary home for one test.
pub struct TestHome {
    pub dir: tempfile::TempDir,
    guest_assets_dir: Option<PathBuf>,
}

impl TestHome {
    pub fn new() -> Self {
        forbid_unscoped_calls();
        Self {
            dir: tempfile::tempdir().unwrap(),
            guest_assets_dir: guest_assets_dir(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.path().join("snapshots")
    }

    /// This home, with the guest assets of `MSB_KERNEL_DIR` (the
    /// accelerator still comes from `MSB_ACCEL`, if set), and no implicit
    /// pull: a sandbox of a missing image must not reach for a registry on
    /// the internet (the registry suite turns it back on, on loopback).
    pub fn config(&self) -> Config {
        let config = Config::new().home(self.path()).implicit_pull(false);
        match &self.guest_assets_dir {
            Some(dir) => config.guest_assets_dir(dir),
            None => config,
        }
    }

    /// Run `work` with every SDK call in it using this home.
    pub async fn run<F: Future>(&self, work: F) -> F::Output {
        self.config().scope(work).await
    }

    /// Build the busybox OCI archive and load it as [`BUSYBOX_REF`] (call
    /// inside [`run`](Self::run)).
    pub async fn load_busybox(&self) -> PathBuf {
        assert!(
            self.guest_assets_dir.is_some(),
            "MSB_KERNEL_DIR is not set: run the suite with `make test` (it installs the guest kernel)"
        );
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
            let run_dir = vm_run_dir(*pid);
            // SAFETY: kill sends a signal; these are VMs this test started.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            // The VM's sockets and pid file live outside the home
            // (`/tmp/msb-<uid>/<vm name>`): they go with it.
            if let Some(run_dir) = run_dir {
                let _ = std::fs::remove_dir_all(run_dir);
            }
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

/// The names of the sandboxes listed in the home in force.
pub async fn sandbox_names() -> Vec<String> {
    microsandbox::Sandbox::list()
        .await
        .unwrap()
        .iter()
        .map(|s| s.name().to_string())
        .collect()
}

/// The run directory of the QEMU process `pid`: its `-name` is the VM name
/// (`msb-…`) and its `-pidfile` lies in that directory.
fn vm_run_dir(pid: u32) -> Option<PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let pidfile = args
        .windows(2)
        .find(|pair| pair[0] == b"-pidfile")
        .map(|pair| PathBuf::from(String::from_utf8_lossy(pair[1]).into_owned()))?;
    let run_dir = pidfile.parent()?.to_path_buf();
    // Only a directory named after the VM: never anything else.
    let named = args.windows(2).any(|pair| {
        pair[0] == b"-name"
            && run_dir
                .file_name()
                .is_some_and(|n| n.as_encoded_bytes() == pair[1])
    });
    named.then_some(run_dir)
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
