//! Shared pieces of the benchmarks: Case A (the 4 GiB sparse ext4 upper of
//! the issues) and small measuring helpers.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::collections::BTreeMap;

use microsandbox::snapshot::integrity::{data_extents, upper_digest_blocking};
use microsandbox::snapshot::manifest::{
    ImageRef, MANIFEST_SCHEMA, Manifest, SnapshotFormat, UpperIntegrity, UpperLayer,
};
use microsandbox::sparse::copy_sparse;
use microsandbox::{IntegrityAlgorithm, Snapshot};

/// Apparent size of Case A's upper.
pub const UPPER_APPARENT: u64 = 4 << 30;

/// Size of the random file written into it.
pub const RANDOM_FILE: usize = 8 << 20;

/// Build Case A once: `mkfs.ext4 -d` copies an 8 MiB random file into a fresh
/// 4 GiB sparse image, as a sandbox writing that file would.
pub fn make_case_a(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let upper = dir.join("upper.ext4");
    if upper.exists() {
        return Ok(upper);
    }
    let content = dir.join("content");
    fs::create_dir_all(&content)?;
    let mut random = vec![0u8; RANDOM_FILE];
    File::open("/dev/urandom")?.read_exact(&mut random)?;
    fs::write(content.join("random.bin"), &random)?;
    let partial = dir.join("upper.ext4.partial");
    File::create(&partial)?.set_len(UPPER_APPARENT)?;
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&content)
        .arg(&partial)
        .status()
        .map_err(|e| format!("mkfs.ext4 (e2fsprogs) is needed: {e}"))?;
    if !status.success() {
        return Err(format!("mkfs.ext4 failed: {status}").into());
    }
    fs::rename(&partial, &upper)?;
    Ok(upper)
}

/// Bytes in `path`'s data extents (what SEEK_DATA reports; unwritten
/// extents, which read as zeros, are not data).
pub fn data_extent_bytes(path: &Path) -> Result<u64, Box<dyn std::error::Error>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    Ok(data_extents(&file, len)?.iter().map(|(s, e)| e - s).sum())
}

/// The value after `name` on the command line, if any.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Flush dirty pages so the next timed step starts from the same state.
pub fn settle() {
    // SAFETY: sync(2) takes no arguments.
    unsafe { libc::sync() };
}

/// The median of `times`.
pub fn median(mut times: Vec<std::time::Duration>) -> std::time::Duration {
    times.sort();
    times[times.len() / 2]
}

/// Median wall time of `runs` calls of `work`, after `warmup` untimed ones.
pub fn time_runs(
    runs: usize,
    warmup: usize,
    mut work: impl FnMut() -> Result<(), Box<dyn std::error::Error>>,
) -> Result<std::time::Duration, Box<dyn std::error::Error>> {
    for _ in 0..warmup {
        work()?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = std::time::Instant::now();
        work()?;
        times.push(started.elapsed());
    }
    Ok(median(times))
}

/// Milliseconds, as a float.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What a raw VM boots: the same machine, kernel, initramfs and disks as a
/// sandbox, started by the benchmark itself (no SDK in the way).
pub struct RawVm<'a> {
    /// Directory for its console log.
    pub dir: &'a Path,
    /// The kernel image.
    pub kernel: &'a Path,
    /// The cached initramfs (with the guest init).
    pub initramfs: &'a Path,
    /// Read-only root disk.
    pub lower: &'a Path,
    /// Writable upper disk.
    pub upper: &'a Path,
    /// Socket of the `msb.agent` port.
    pub agent_sock: &'a Path,
    /// Extra virtio-serial ports: (name, socket).
    pub ports: &'a [(&'a str, &'a Path)],
}

impl RawVm<'_> {
    /// The QEMU command line (TCG, microvm), ready to spawn.
    pub fn command(&self) -> Command {
        let p = |p: &Path| p.to_string_lossy().into_owned();
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-name",
            "msb-bench-raw",
            "-machine",
            "microvm,accel=tcg,acpi=on",
        ])
        .args(["-cpu", "qemu64", "-m", "256M"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args([
            "-serial",
            &format!("file:{}", p(&self.dir.join("console.log"))),
        ])
        .args(["-kernel", &p(self.kernel), "-initrd", &p(self.initramfs)])
        .args([
            "-append",
            &format!(
                "console=ttyS0 tsc_early_khz={} panic=-1",
                microsandbox::runtime::host::tsc_khz()
            ),
        ])
        .args([
            "-drive",
            &format!(
                "id=lower,file={},format=raw,if=none,readonly=on",
                p(self.lower)
            ),
        ])
        .args(["-device", "virtio-blk-device,drive=lower,serial=msb-lower"])
        .args([
            "-drive",
            &format!("id=upper,file={},format=raw,if=none", p(self.upper)),
        ])
        .args(["-device", "virtio-blk-device,drive=upper,serial=msb-upper"])
        .args(["-device", "virtio-serial-device"]);
        let ports =
            std::iter::once(("msb.agent", self.agent_sock)).chain(self.ports.iter().copied());
        for (i, (name, sock)) in ports.enumerate() {
            cmd.args([
                "-chardev",
                &format!("socket,id=port{i},path={},server=on,wait=off", p(sock)),
            ])
            .args([
                "-device",
                &format!("virtserialport,chardev=port{i},name={name}"),
            ]);
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    }
}

/// The kernel of `kernel_dir` and the initramfs the SDK cached under
/// `home` (after a boot), for a [`RawVm`].
pub fn raw_assets(
    home: &Path,
    kernel_dir: &Path,
) -> Result<(PathBuf, PathBuf), Box<dyn std::error::Error>> {
    let initramfs = fs::read_dir(home.join("cache"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".cpio"))
        .ok_or("no cached initramfs")?;
    let kernel = ["vmlinux", "vmlinuz"]
        .iter()
        .map(|f| kernel_dir.join(f))
        .find(|p| p.is_file())
        .ok_or("no kernel")?;
    Ok((kernel, initramfs))
}

/// An artifact whose upper is a sparse copy of Case A, integrity recorded
/// with `algorithm`, in the 0.6.6 manifest format.
pub fn case_a_artifact(
    case_a: &Path,
    dir: &Path,
    algorithm: IntegrityAlgorithm,
) -> Result<Snapshot, Box<dyn std::error::Error>> {
    fs::create_dir_all(dir)?;
    let upper = dir.join("upper.ext4");
    copy_sparse(case_a, &upper)?;
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        format: SnapshotFormat::Raw,
        fstype: "ext4".into(),
        image: ImageRef {
            reference: "bench/busybox".into(),
            manifest_digest: format!("sha256:{}", "ab".repeat(32)),
        },
        parent: None,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        labels: BTreeMap::new(),
        upper: UpperLayer {
            file: "upper.ext4".into(),
            size_bytes: fs::metadata(&upper)?.len(),
            integrity: Some(UpperIntegrity {
                algorithm: algorithm.name().into(),
                digest: upper_digest_blocking(&upper, algorithm, None)?,
            }),
        },
        source_sandbox: Some("bench".into()),
    };
    fs::write(dir.join("manifest.json"), manifest.canonical_bytes())?;
    Ok(Snapshot::open_dir(dir)?)
}
