//! QEMU, the VM engine: the `microvm` command line (stable device ids, RAM in
//! a shared file so it can later be saved as a file), starting it detached
//! from the caller (`-daemonize`, pid file), QMP for forced quit, and
//! process liveness. The only file that knows QEMU's flags.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use super::assets::GuestAssets;
use super::host::{Accel, tsc_khz};
use crate::error::{MicrosandboxError, MicrosandboxResult};

/// The QEMU binary (Debian package `qemu-system-x86`).
pub const QEMU_BINARY: &str = "qemu-system-x86_64";

/// Prefix of every VM's `-name`, so leftover VMs can be found.
pub const VM_NAME_PREFIX: &str = "msb-";

/// The VM name of the sandbox in `sandbox_dir`: [`VM_NAME_PREFIX`] and 16
/// hex digits of a hash of the directory, stable across boots.
pub(crate) fn vm_name(sandbox_dir: &Path) -> String {
    let hash = Sha256::digest(sandbox_dir.to_string_lossy().as_bytes());
    format!("{VM_NAME_PREFIX}{}", &hex::encode(hash)[..16])
}

/// Where one VM's sockets and pid file live. Unix socket paths must stay
/// under ~100 bytes, so this is a short directory under /tmp, keyed by the
/// sandbox directory.
#[derive(Debug, Clone)]
pub(crate) struct VmPaths {
    pub run_dir: PathBuf,
    pub agent_sock: PathBuf,
    pub qmp_sock: PathBuf,
    pub pidfile: PathBuf,
    pub console_log: PathBuf,
    pub qemu_log: PathBuf,
    pub ram_file: PathBuf,
}

impl VmPaths {
    pub fn new(sandbox_dir: &Path, vm_name: &str) -> Self {
        let uid = nix::unistd::getuid();
        let run_dir = PathBuf::from(format!("/tmp/msb-{uid}")).join(vm_name);
        let shm = Path::new("/dev/shm");
        let ram_dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            run_dir.clone()
        };
        let logs = sandbox_dir.join("logs");
        Self {
            agent_sock: run_dir.join("agent.sock"),
            qmp_sock: run_dir.join("qmp.sock"),
            pidfile: run_dir.join("qemu.pid"),
            ram_file: ram_dir.join(format!("{vm_name}.ram")),
            console_log: logs.join("console.log"),
            qemu_log: logs.join("qemu.log"),
            run_dir,
        }
    }
}

/// Everything a boot needs.
pub(crate) struct VmParams<'a> {
    pub vm_name: &'a str,
    pub assets: &'a GuestAssets,
    pub initramfs: &'a Path,
    pub lower: &'a Path,
    pub upper: &'a Path,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    pub paths: &'a VmPaths,
}

/// The full QEMU argument list (without the binary).
pub(crate) fn argv(p: &VmParams<'_>) -> Vec<String> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut args: Vec<String> = vec![
        "-name".into(),
        p.vm_name.into(),
        "-machine".into(),
        format!(
            "microvm,accel={},acpi=on,memory-backend=mem",
            p.accel.as_str()
        ),
        "-cpu".into(),
        if p.accel == Accel::Kvm {
            "host".into()
        } else {
            "qemu64".into()
        },
        "-smp".into(),
        p.cpus.to_string(),
        "-m".into(),
        format!("{}M", p.memory_mib),
        "-object".into(),
        format!(
            "memory-backend-file,id=mem,size={}M,mem-path={},share=on",
            p.memory_mib,
            path(&p.paths.ram_file)
        ),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-daemonize".into(),
        "-pidfile".into(),
        path(&p.paths.pidfile),
        "-chardev".into(),
        format!("file,id=console,path={}", path(&p.paths.console_log)),
        "-serial".into(),
        "chardev:console".into(),
        "-chardev".into(),
        format!(
            "socket,id=qmp,path={},server=on,wait=off",
            path(&p.paths.qmp_sock)
        ),
        "-mon".into(),
        "chardev=qmp,mode=control".into(),
        "-kernel".into(),
        path(&p.assets.kernel),
        "-initrd".into(),
        path(p.initramfs),
        "-append".into(),
        format!("console=ttyS0 tsc_early_khz={} panic=-1", tsc_khz()),
    ];
    // Disk order fixes the guest's device names; the guest also checks serials.
    args.extend([
        "-drive".into(),
        format!(
            "id=lower,file={},format=raw,if=none,readonly=on",
            path(p.lower)
        ),
        "-device".into(),
        "virtio-blk-device,id=blk-lower,drive=lower,serial=msb-lower".into(),
        "-drive".into(),
        format!(
            "id=upper,file={},format=raw,if=none,discard=unmap",
            path(p.upper)
        ),
        "-device".into(),
        "virtio-blk-device,id=blk-upper,drive=upper,serial=msb-upper".into(),
        "-device".into(),
        "virtio-serial-device,id=vserial".into(),
        "-chardev".into(),
        format!(
            "socket,id=agent,path={},server=on,wait=off",
            path(&p.paths.agent_sock)
        ),
        "-device".into(),
        "virtserialport,id=agent-port,bus=vserial.0,chardev=agent,name=msb.agent".into(),
    ]);
    args
}

/// Start QEMU detached; returns the VM's pid once its sockets exist.
pub(crate) fn spawn_detached(args: &[String], paths: &VmPaths) -> MicrosandboxResult<u32> {
    for dir in [
        &paths.run_dir,
        paths.console_log.parent().unwrap_or(Path::new(".")),
    ] {
        std::fs::create_dir_all(dir).map_err(|e| MicrosandboxError::io(dir, e))?;
    }
    for stale in [&paths.agent_sock, &paths.qmp_sock, &paths.pidfile] {
        let _ = std::fs::remove_file(stale);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.qemu_log)
        .map_err(|e| MicrosandboxError::io(&paths.qemu_log, e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| MicrosandboxError::io(&paths.qemu_log, e))?;
    // With -daemonize the launched process exits once the VM is set up and
    // its sockets listen; the VM itself is re-parented to init, so it
    // outlives us and never lingers as our zombie.
    let status = Command::new(QEMU_BINARY)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .status()
        .map_err(|e| {
            MicrosandboxError::Runtime(format!(
                "cannot run {QEMU_BINARY} ({e}); install it with: apt-get install qemu-system-x86"
            ))
        })?;
    if !status.success() {
        return Err(MicrosandboxError::Runtime(format!(
            "{QEMU_BINARY} failed to start ({status}): {}",
            tail(&paths.qemu_log, 20)
        )));
    }
    let pid = std::fs::read_to_string(&paths.pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .ok_or_else(|| MicrosandboxError::Runtime(format!("{QEMU_BINARY} wrote no pid file")))?;
    // The RAM file stays mapped by QEMU; unlinking it now means nothing is
    // left in /dev/shm whatever way the VM ends.
    let _ = std::fs::remove_file(&paths.ram_file);
    Ok(pid)
}

/// True while `pid` is a live (not zombie) process whose command line names `vm_name`.
pub(crate) fn is_alive(pid: u32, vm_name: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    !zombie
        && cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == vm_name.as_bytes())
}

/// Wait up to `timeout` for the VM to exit.
pub(crate) fn wait_exit(pid: u32, vm_name: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_alive(pid, vm_name) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Force the VM down: QMP `quit`, then SIGKILL.
pub(crate) fn force_quit(pid: u32, vm_name: &str, qmp_sock: &Path) {
    if is_alive(pid, vm_name) {
        let _ = qmp(qmp_sock, "quit");
        if wait_exit(pid, vm_name, Duration::from_secs(2)) {
            return;
        }
    }
    kill_now(pid, vm_name);
}

/// SIGKILL the VM and wait for it: for a VM with nothing to lose (a boot
/// that was cancelled or failed before the guest served).
pub(crate) fn kill_now(pid: u32, vm_name: &str) {
    if is_alive(pid, vm_name) {
        // A pid we just checked is our VM.
        let _ = kill(Pid::from_raw(pid as libc::pid_t), Signal::SIGKILL);
        wait_exit(pid, vm_name, Duration::from_secs(5));
    }
}

/// Run one QMP command; returns its raw response line.
pub(crate) fn qmp(sock: &Path, command: &str) -> std::io::Result<String> {
    let stream = UnixStream::connect(sock)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?; // greeting
    writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    line.clear();
    reader.read_line(&mut line)?;
    writer.write_all(format!("{{\"execute\":\"{command}\"}}\n").as_bytes())?;
    line.clear();
    reader.read_line(&mut line)?;
    Ok(line)
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
