//! QEMU, the VM engine: the `microvm` command line (stable device ids, RAM in
//! a shared memfd a full snapshot reads as a file, QEMU's seccomp sandbox),
//! starting it detached from the caller (own session, pid file), QMP (forced quit,
//! pause and resume, device state saved and loaded with `x-ignore-shared`,
//! the balloon), and process liveness. The only file that knows QEMU's
//! flags and commands.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
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

/// QEMU's seccomp filter (`-sandbox`): besides the default deny list, no
/// obsolete system calls, no set*id/setsid, no fork or exec, no scheduler
/// or CPU-affinity changes. A guest that escapes into the QEMU process can
/// then neither start a program nor change its credentials.
/// `spawn=deny` and `elevateprivileges=deny` are why QEMU is not started
/// with `-daemonize` (it forks and calls setsid after the filter is on) nor
/// `-runas` (setuid): [`spawn_detached`] detaches it instead.
pub const SECCOMP_SANDBOX: &str =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// Bytes of serial console a running guest can leave on the host: once a
/// guest serves, its console goes to a ring buffer of this size in QEMU's
/// memory instead of `console.log`, so a guest that floods its console
/// cannot grow a host file (a power of two, as QEMU requires).
pub const CONSOLE_RING_BYTES: u32 = 1 << 16;

/// How long QEMU may take to set itself up and serve QMP.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);

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
}

impl VmPaths {
    pub fn new(sandbox_dir: &Path, vm_name: &str) -> Self {
        let uid = nix::unistd::getuid();
        let run_dir = PathBuf::from(format!("/tmp/msb-{uid}")).join(vm_name);
        let logs = sandbox_dir.join("logs");
        Self {
            agent_sock: run_dir.join("agent.sock"),
            qmp_sock: run_dir.join("qmp.sock"),
            pidfile: run_dir.join("qemu.pid"),
            console_log: logs.join("console.log"),
            qemu_log: logs.join("qemu.log"),
            run_dir,
        }
    }
}

/// Bumped whenever the device set or its ids change: a full snapshot's
/// device state only loads into the same layout.
pub const DEVICE_LAYOUT: u32 = 1;

/// [`DEVICE_LAYOUT`] plus the network card (`virtio-net-device,id=net`):
/// a VM with a network has this layout.
pub const DEVICE_LAYOUT_WITH_NIC: u32 = 2;

/// The device layout of a VM with or without a network card.
pub(crate) fn device_layout(nic: bool) -> u32 {
    if nic {
        DEVICE_LAYOUT_WITH_NIC
    } else {
        DEVICE_LAYOUT
    }
}

/// Where guest RAM comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RamSource<'a> {
    /// A new memfd, mapped shared: a full snapshot reads it through
    /// `/proc/<pid>/fd`, and it is gone with the QEMU process, however that ends.
    Fresh,
    /// A full snapshot's RAM file, mapped private (copy-on-write): the
    /// artifact never changes and forks of it share its unchanged pages.
    Snapshot(&'a Path),
    /// A new memfd mapped private, which the restore fills from a
    /// snapshot's RAM before loading the state: a fork's own RAM. Private
    /// as a fork's must be (a saved state only loads into RAM shared the
    /// way its source's was, or into private RAM).
    Own,
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
    pub ram: RamSource<'a>,
    /// Start paused, waiting for saved device state (a restore).
    pub incoming: bool,
    /// The guest link to the network process (a stream socket QEMU
    /// inherits): the VM gets a virtio-net card on it. `None`: no card.
    pub net_fd: Option<RawFd>,
}

/// QEMU's CPU model for `accel`.
pub(crate) fn cpu_model(accel: Accel) -> &'static str {
    if accel == Accel::Kvm {
        "host"
    } else {
        "qemu64"
    }
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
        cpu_model(p.accel).into(),
        "-smp".into(),
        p.cpus.to_string(),
        "-m".into(),
        format!("{}M", p.memory_mib),
        "-object".into(),
        match p.ram {
            RamSource::Fresh => format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                p.memory_mib
            ),
            RamSource::Snapshot(file) => format!(
                "memory-backend-file,id=mem,size={}M,mem-path={},share=off",
                p.memory_mib,
                path(file)
            ),
            RamSource::Own => format!(
                "memory-backend-memfd,id=mem,size={}M,share=off",
                p.memory_mib
            ),
        },
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-sandbox".into(),
        SECCOMP_SANDBOX.into(),
        "-pidfile".into(),
        path(&p.paths.pidfile),
        "-chardev".into(),
        if p.incoming {
            // A restored guest runs the user's processes from its first
            // instruction: its console is bounded from the start.
            console_ring()
        } else {
            // Boot messages (our kernel and init only) go to a file, for
            // a failed boot's error; [`Qmp::bound_console`] swaps it for the
            // ring once the guest serves.
            format!("file,id=console,path={}", path(&p.paths.console_log))
        },
        "-serial".into(),
        "chardev:console".into(),
        "-chardev".into(),
        format!(
            "socket,id=qmp,path={},server=on,wait=off",
            path(&p.paths.qmp_sock)
        ),
        "-mon".into(),
        "chardev=qmp,mode=control".into(),
    ];
    if !p.incoming {
        // A restored guest's kernel is already in its RAM; loading the
        // kernel and initrd files would only cost QEMU ~50 ms at start.
        args.extend([
            "-kernel".into(),
            path(&p.assets.kernel),
            "-initrd".into(),
            path(p.initramfs),
            "-append".into(),
            format!("console=ttyS0 tsc_early_khz={} panic=-1", tsc_khz()),
        ]);
    }
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
        "-device".into(),
        "virtio-balloon-device,id=balloon".into(),
    ]);
    if let Some(fd) = p.net_fd {
        // A stream socket carries each frame behind its 4-byte length,
        // the framing `msb-netd` speaks; the MAC is the one the guest's
        // addressing assumes (`network::GUEST_MAC`).
        let mac = crate::network::GUEST_MAC
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        args.extend([
            "-netdev".into(),
            format!("socket,id=net0,fd={fd}"),
            "-device".into(),
            format!("virtio-net-device,id=net,netdev=net0,mac={mac}"),
        ]);
    }
    if p.incoming {
        // Device state arrives over QMP (`migrate-incoming`); ROMs (kernel,
        // initrd) are not copied into RAM while incoming, so the mapped
        // snapshot RAM stays exactly as captured.
        args.extend(["-incoming".into(), "defer".into()]);
    }
    args
}

/// The `-chardev` value of a console kept in a [`CONSOLE_RING_BYTES`] ring.
fn console_ring() -> String {
    format!("ringbuf,id=console,size={CONSOLE_RING_BYTES}")
}

/// Start QEMU detached; returns the VM's pid once it is set up and serves
/// QMP.
/// `inherit` is a descriptor QEMU keeps (the network link of `net_fd`).
///
/// QEMU runs in a session of its own (no terminal signal reaches it) as
/// this process's child; a thread reaps it when it ends, and when this
/// process ends first, it passes to init as any orphan does. (Its seccomp
/// filter forbids the fork and setsid of `-daemonize`.)
pub(crate) fn spawn_detached(
    args: &[String],
    paths: &VmPaths,
    inherit: Option<RawFd>,
) -> MicrosandboxResult<u32> {
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
    let mut command = Command::new(QEMU_BINARY);
    // SAFETY: between fork and exec the closure only calls setsid and fcntl
    // (async-signal-safe), on a descriptor this process owns.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = inherit
                && libc::fcntl(fd, libc::F_SETFD, 0) == -1
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| {
            MicrosandboxError::Runtime(format!(
                "cannot run {QEMU_BINARY} ({e}); install it with: apt-get install qemu-system-x86"
            ))
        })?;
    let pid = child.id();
    let ready = wait_ready(&mut child, paths);
    if ready.is_ok() {
        let reaped = std::thread::Builder::new()
            .name("msb-qemu-reaper".into())
            .spawn(move || child.wait());
        if let Err(e) = reaped {
            // The VM runs; once it ends it stays a zombie of this process
            // (which liveness checks treat as gone) until this process ends.
            log::warn!("no reaper thread for QEMU {pid}: {e}");
        }
    }
    ready.map(|()| pid)
}

/// Waits until QEMU has written its pid file and runs its main loop; fails
/// with its log's tail if it exits first or takes longer than
/// [`SPAWN_TIMEOUT`] (then it is killed).
fn wait_ready(child: &mut std::process::Child, paths: &VmPaths) -> MicrosandboxResult<()> {
    let deadline = Instant::now() + SPAWN_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(MicrosandboxError::Runtime(format!(
                "{QEMU_BINARY} failed to start ({status}): {}",
                tail(&paths.qemu_log, 20)
            )));
        }
        // QMP greets a client only once QEMU's main loop runs, after every
        // device, backend (the RAM memfd a restore fills) and socket is set
        // up: the moment `-daemonize` would have returned.
        if paths.pidfile.exists() && qmp_greets(&paths.qmp_sock) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(MicrosandboxError::Runtime(format!(
                "{QEMU_BINARY} did not come up (QMP) within {SPAWN_TIMEOUT:?}: {}",
                tail(&paths.qemu_log, 20)
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether QEMU's QMP socket accepts a connection and greets it within a
/// moment (the probe then hangs up; the socket takes the next client).
fn qmp_greets(sock: &Path) -> bool {
    let Ok(stream) = UnixStream::connect(sock) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .is_err()
    {
        return false;
    }
    let mut greeting = String::new();
    BufReader::new(stream)
        .read_line(&mut greeting)
        .is_ok_and(|n| n > 0)
}

/// True while `pid` is a live (not zombie) process whose command line names `vm_name`.
pub(crate) fn is_alive(pid: u32, vm_name: &str) -> bool {
    live_cmdline(pid).is_some_and(|cmdline| {
        cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == vm_name.as_bytes())
    })
}

/// Every live process whose command line names `vm_name` (one scan of
/// /proc): the VM, whether or not it wrote its pid file yet.
pub(crate) fn pids_named(vm_name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| is_alive(pid, vm_name))
        .collect()
}

/// The command line of `pid` (NUL-separated) while it is a live process,
/// `None` once it is gone or a zombie.
pub(crate) fn live_cmdline(pid: impl std::fmt::Display) -> Option<Vec<u8>> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    (!zombie).then_some(cmdline)
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

/// Run one QMP command without arguments; returns its result.
pub(crate) fn qmp(sock: &Path, command: &str) -> std::io::Result<serde_json::Value> {
    Qmp::connect(sock)?.execute(command, serde_json::Value::Null)
}

/// Remove what a VM leaves behind once it is gone: its run directory
/// (sockets, pid file).
pub(crate) fn remove_run_files(paths: &VmPaths) {
    let _ = std::fs::remove_dir_all(&paths.run_dir);
}

/// A QMP connection, past the capabilities handshake.
pub(crate) struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    pub fn connect(sock: &Path) -> std::io::Result<Self> {
        let stream = UnixStream::connect(sock)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut qmp = Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let mut greeting = String::new();
        qmp.reader.read_line(&mut greeting)?;
        qmp.execute("qmp_capabilities", serde_json::Value::Null)?;
        Ok(qmp)
    }

    /// Run `command` with `arguments` (`Null` for none); its `return`
    /// value, or an error carrying QEMU's description.
    pub fn execute(
        &mut self,
        command: &str,
        arguments: serde_json::Value,
    ) -> std::io::Result<serde_json::Value> {
        let mut request = serde_json::json!({ "execute": command });
        if !arguments.is_null() {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        self.read_answer(command)
    }

    fn read_answer(&mut self, command: &str) -> std::io::Result<serde_json::Value> {
        loop {
            let mut reply = String::new();
            if self.reader.read_line(&mut reply)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("QMP closed during {command}"),
                ));
            }
            let value: serde_json::Value = serde_json::from_str(&reply)
                .map_err(|e| std::io::Error::other(format!("QMP reply to {command}: {e}")))?;
            if let Some(ret) = value.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = value.get("error") {
                return Err(std::io::Error::other(format!(
                    "QMP {command}: {}",
                    err["desc"].as_str().unwrap_or("failed")
                )));
            }
            // An asynchronous event: not our answer.
        }
    }

    /// Hand QEMU an open file under `name` (`getfd`, the descriptor in
    /// `SCM_RIGHTS`): the migration stream then needs no helper process.
    fn pass_fd(&mut self, name: &str, file: &std::fs::File) -> std::io::Result<()> {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        use std::os::fd::AsRawFd;
        let request = format!(
            "{}\n",
            serde_json::json!({"execute": "getfd", "arguments": {"fdname": name}})
        );
        let fds = [file.as_raw_fd()];
        let iov = [std::io::IoSlice::new(request.as_bytes())];
        let sent = sendmsg::<()>(
            self.writer.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(std::io::Error::from)?;
        if sent != request.len() {
            return Err(std::io::Error::other("QMP getfd: short write"));
        }
        self.read_answer("getfd").map(|_| ())
    }

    /// QEMU's version, `major.minor.micro`.
    pub fn version(&mut self) -> std::io::Result<String> {
        let v = self.execute("query-version", serde_json::Value::Null)?;
        let q = &v["qemu"];
        Ok(format!("{}.{}.{}", q["major"], q["minor"], q["micro"]))
    }

    /// Skip RAM in shared memory backends in migration streams both ways:
    /// RAM travels as a file, only device state in the stream.
    fn ignore_shared_ram(&mut self) -> std::io::Result<()> {
        self.execute(
            "migrate-set-capabilities",
            serde_json::json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
        )?;
        Ok(())
    }

    /// Pause the guest and write its device state (not RAM) to `state`.
    /// The VM stays paused (`postmigrate`) until [`resume`](Self::resume).
    pub fn pause_and_save(&mut self, state: &Path) -> std::io::Result<()> {
        self.execute("stop", serde_json::Value::Null)?;
        self.ignore_shared_ram()?;
        // The default bandwidth cap (128 MiB/s) would dominate the save.
        self.execute(
            "migrate-set-parameters",
            serde_json::json!({"max-bandwidth": 1u64 << 40}),
        )?;
        self.pass_fd("msb-state", &migration_file(state, true)?)?;
        self.execute("migrate", serde_json::json!({ "uri": "fd:msb-state" }))?;
        self.wait_migration("query-migrate", state)
    }

    /// Load device state from `state` into a VM started with `-incoming
    /// defer`, then run it (the state was saved paused, so it arrives paused).
    pub fn load_and_run(&mut self, state: &Path) -> std::io::Result<()> {
        self.ignore_shared_ram()?;
        self.pass_fd("msb-state", &migration_file(state, false)?)?;
        self.execute(
            "migrate-incoming",
            serde_json::json!({ "uri": "fd:msb-state" }),
        )?;
        self.wait_migration("query-migrate", state)?;
        self.resume()
    }

    fn wait_migration(&mut self, query: &str, state: &Path) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let info = self.execute(query, serde_json::Value::Null)?;
            match info["status"].as_str().unwrap_or_default() {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    return Err(std::io::Error::other(format!(
                        "migrating the device state through {} failed: {}",
                        state.display(),
                        info["error-desc"].as_str().unwrap_or("no reason given")
                    )));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(std::io::Error::other(
                    "migrating the device state timed out",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Send the guest's serial console to a [`CONSOLE_RING_BYTES`] ring
    /// in QEMU's memory from now on (`chardev-change`): whatever the guest
    /// writes to it no longer reaches a host file.
    pub fn bound_console(&mut self) -> std::io::Result<()> {
        self.execute(
            "chardev-change",
            serde_json::json!({
                "id": "console",
                "backend": {"type": "ringbuf", "data": {"size": CONSOLE_RING_BYTES}}
            }),
        )
        .map(|_| ())
    }

    /// Run a paused guest again.
    pub fn resume(&mut self) -> std::io::Result<()> {
        self.execute("cont", serde_json::Value::Null).map(|_| ())
    }

    /// Ask the balloon for a guest of `mib` MiB and wait (up to `wait`)
    /// until the guest has given the rest back.
    pub fn balloon(&mut self, mib: u32, wait: Duration) -> std::io::Result<()> {
        let target = u64::from(mib) << 20;
        self.execute("balloon", serde_json::json!({ "value": target }))?;
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let info = self.execute("query-balloon", serde_json::Value::Null)?;
            if info["actual"]
                .as_u64()
                .is_some_and(|actual| actual <= target)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        log::warn!(
            "the guest balloon has not reached {mib} MiB after {wait:?}; it keeps inflating"
        );
        Ok(())
    }
}

/// Open `path` for the migration stream (`write`: a new file for a save).
fn migration_file(path: &Path, write: bool) -> std::io::Result<std::fs::File> {
    if write {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    } else {
        std::fs::File::open(path)
    }
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
