//! The hypervisor runtime: boots a sandbox's disks as a QEMU microVM and
//! talks to the guest, with its network process beside it when it has a
//! network. The rest of the SDK sees only [`boot`], [`shutdown`],
//! [`start_exec`] (and the [`exec`] types) and [`is_running`]; which engine runs the VM (QEMU today) and how
//! is private to this module.

pub mod agent;
pub mod assets;
pub mod exec;
pub mod host;
pub(crate) mod netd;
pub(crate) mod qemu;
mod vm_state;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::AgentClient;
use assets::GuestAssets;
pub(crate) use exec::ExecSpec;
pub use exec::{ExecEvent, ExecOptions, ExecOutput, ExecStdin, ExecStream, ExitStatus};
use host::Accel;
pub use host::AccelMode;
pub use netd::NETD_FILE;
pub(crate) use qemu::vm_name;
use qemu::{RamSource, VmParams, VmPaths};
pub use vm_state::MachineShape;
pub(crate) use vm_state::{ForkRam, Identity, RestoreFrom, capture, restore, resume, set_balloon};

use crate::control::Control;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;

/// How long a boot may take before the watchdog gives up (TCG boots take
/// ~2.5 s; the margin covers a loaded machine).
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

/// A KVM boot that has not reached init by then is treated as unusable.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(8);

/// How long a graceful stop may take before the VM is forced down.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What to boot.
#[derive(Debug, Clone)]
pub(crate) struct BootRequest {
    /// Unique VM name (`msb-…`), also how its process is recognized.
    pub vm_name: String,
    pub sandbox_dir: PathBuf,
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    /// The guest's hostname (the sandbox name).
    pub hostname: String,
    /// The sandbox's network: with an interface, a `msb-netd` beside the VM.
    pub network: crate::network::NetworkConfig,
    /// Where its DNS queries go (`None`: the host's resolver).
    pub dns_upstream: Option<std::net::SocketAddr>,
}

/// A booted VM.
#[derive(Debug, Clone)]
pub(crate) struct RunningVm {
    pub pid: u32,
}

/// Boot `req`, wait for the guest's agent, retry once on a failed boot, and
/// fail with the console's tail if the second attempt fails too.
/// A cancelled call stops waiting within ~100 ms, kills the VM and returns
/// `Cancelled`.
pub(crate) fn boot(
    home: &MsbHome,
    req: &BootRequest,
    control: &Control,
) -> MicrosandboxResult<RunningVm> {
    let assets = GuestAssets::locate(home)?;
    let initramfs = assets.initramfs(home)?;
    let paths = VmPaths::new(&req.sandbox_dir, &req.vm_name);
    // A taken port must fail as such, not as a failed KVM probe boot.
    netd::check_ports(&req.network)?;
    let mut probed_kvm = false;
    let accel = host::choose_accel(home.accel(), &home.cache_dir(), || {
        probed_kvm = true;
        try_boot(
            req,
            &assets,
            &initramfs,
            &paths,
            Accel::Kvm,
            KVM_PROBE_TIMEOUT,
            control,
        )
        .is_ok()
    })?;
    if probed_kvm && accel == Accel::Kvm {
        return pid_of(&paths, &req.vm_name);
    }
    let mut failures = Vec::new();
    for _attempt in 0..2 {
        match try_boot(
            req,
            &assets,
            &initramfs,
            &paths,
            accel,
            BOOT_TIMEOUT,
            control,
        ) {
            Ok(vm) => return Ok(vm),
            Err(MicrosandboxError::Cancelled) => return Err(MicrosandboxError::Cancelled),
            // A taken host port or a bad network setting: no retry helps.
            Err(e @ MicrosandboxError::InvalidConfig(_)) => return Err(e),
            Err(e) => failures.push(format!(
                "{e}\n--- console tail ---\n{}",
                qemu::tail(&paths.console_log, 25)
            )),
        }
    }
    Err(MicrosandboxError::Runtime(format!(
        "sandbox VM {} did not boot ({} attempts, accel {}):\n{}",
        req.vm_name,
        failures.len(),
        accel.as_str(),
        failures.join("\n")
    )))
}

fn try_boot(
    req: &BootRequest,
    assets: &GuestAssets,
    initramfs: &Path,
    paths: &VmPaths,
    accel: Accel,
    timeout: Duration,
    control: &Control,
) -> MicrosandboxResult<RunningVm> {
    // Ports are bound and the network process runs before QEMU starts: a
    // taken port fails here with no VM to clean up.
    let link = if req.network.has_interface() {
        Some(netd::start(
            &assets.dir,
            req.dns_upstream,
            &req.network,
            &req.sandbox_dir,
            paths,
        )?)
    } else {
        None
    };
    let net_fd = link.as_ref().map(|l| l.qemu_end.as_raw_fd());
    let params = VmParams {
        vm_name: &req.vm_name,
        assets,
        initramfs,
        lower: &req.lower,
        upper: &req.upper,
        memory_mib: req.memory_mib,
        cpus: req.cpus,
        accel,
        paths,
        ram: RamSource::Fresh,
        incoming: false,
        net_fd,
    };
    let _ = std::fs::remove_file(&paths.console_log);
    let spawned = qemu::spawn_detached(&qemu::argv(&params), paths, net_fd);
    // QEMU holds its own copy of the link now.
    drop(link);
    let pid = match spawned {
        Ok(pid) => pid,
        Err(e) => {
            release(paths);
            return Err(e);
        }
    };
    match AgentClient::connect(&paths.agent_sock, timeout, control)
        .and_then(|mut agent| agent.configure(&Identity::new(&req.hostname, None)))
        .and_then(|()| bound_console(paths))
    {
        Ok(()) => Ok(RunningVm { pid }),
        Err(e) => {
            // The guest never served: nothing in it to shut down cleanly.
            qemu::kill_now(pid, &req.vm_name);
            release(paths);
            Err(e)
        }
    }
}

/// From now on the guest (and whatever runs in it) writes its console into
/// QEMU's bounded ring, not the host's `console.log`.
fn bound_console(paths: &VmPaths) -> MicrosandboxResult<()> {
    qemu::Qmp::connect(&paths.qmp_sock)
        .and_then(|mut qmp| qmp.bound_console())
        .map_err(|e| MicrosandboxError::Runtime(format!("bounding the guest console: {e}")))
}

/// Remove what a VM leaves beside it once it is gone: its network process
/// and its run directory.
fn release(paths: &VmPaths) {
    netd::stop(paths);
    qemu::remove_run_files(paths);
}

fn pid_of(paths: &VmPaths, vm_name: &str) -> MicrosandboxResult<RunningVm> {
    std::fs::read_to_string(&paths.pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(|pid| RunningVm { pid })
        .ok_or_else(|| MicrosandboxError::Runtime(format!("VM {vm_name} has no pid file")))
}

/// What shapes a freshly booted guest on the runtime's side, as text: the
/// guest assets (kernel, init, modules), the QEMU binary, the accelerator
/// setting, the device layout, the agent protocol and this crate's version.
/// Part of the key of instant create's base snapshots.
pub(crate) fn boot_shape(home: &MsbHome) -> MicrosandboxResult<String> {
    use std::os::unix::fs::MetadataExt;
    let assets = GuestAssets::locate(home)?;
    let identity = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| {
                format!(
                    "{}:{}:{}.{}",
                    path.display(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec()
                )
            })
            .unwrap_or_else(|_| format!("{}:absent", path.display()))
    };
    let qemu = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(qemu::QEMU_BINARY))
                .find(|p| p.is_file())
        })
        .map_or_else(|| "no-qemu".to_string(), |p| identity(&p));
    Ok(format!(
        "kernel={} init={} modules={} qemu={qemu} accel={:?} kvm_usable={} devices={} protocol={} runtime={}",
        identity(&assets.kernel),
        identity(&assets.init),
        assets.modules.join(","),
        home.accel(),
        host::kvm_unusable_reason().is_none(),
        qemu::DEVICE_LAYOUT,
        microsandbox_guest::protocol::PROTOCOL_VERSION,
        env!("CARGO_PKG_VERSION"),
    ))
}

/// The network of a fork of a full snapshot of `machine`: a snapshot
/// with a network card forks into `public` (its own network process, no
/// published ports: a host port cannot be shared), one without into none.
pub(crate) fn fork_network(machine: &MachineShape) -> crate::network::NetworkConfig {
    crate::network::NetworkConfig {
        policy: if machine.devices == qemu::DEVICE_LAYOUT_WITH_NIC {
            crate::network::NetworkPolicy::Public
        } else {
            crate::network::NetworkPolicy::None
        },
        ..Default::default()
    }
}

/// Whether the VM `vm_name` with `pid` is still running.
pub(crate) fn is_running(pid: u32, vm_name: &str) -> bool {
    qemu::is_alive(pid, vm_name)
}

/// Start a command in the VM (blocking: may connect to the agent first).
pub(crate) fn start_exec(
    sandbox_dir: &Path,
    vm_name: &str,
    spec: ExecSpec,
    control: Control,
) -> MicrosandboxResult<ExecStream> {
    let paths = VmPaths::new(sandbox_dir, vm_name);
    exec::start(&paths.agent_sock, spec, control)
}

/// Stop the VM: ask the guest to shut down cleanly, then force it after
/// `timeout`. Returns true when the guest shut down by itself.
pub(crate) fn shutdown(sandbox_dir: &Path, vm_name: &str, pid: u32, timeout: Duration) -> bool {
    let paths = VmPaths::new(sandbox_dir, vm_name);
    let mut graceful = false;
    if qemu::is_alive(pid, vm_name)
        && let Ok(mut client) = AgentClient::connect(
            &paths.agent_sock,
            Duration::from_secs(3),
            &Control::detached(),
        )
        && client.shutdown().is_ok()
    {
        graceful = qemu::wait_exit(pid, vm_name, timeout);
    }
    if !graceful {
        qemu::force_quit(pid, vm_name, &paths.qmp_sock);
    }
    release(&paths);
    graceful
}

/// Kill a VM at once (crash tests, cleanup after a failed create).
pub(crate) fn kill(sandbox_dir: &Path, vm_name: &str, pid: u32) {
    let paths = VmPaths::new(sandbox_dir, vm_name);
    qemu::force_quit(pid, vm_name, &paths.qmp_sock);
    release(&paths);
}

/// Remove what a VM that is gone left outside its sandbox directory.
pub(crate) fn clean_after(sandbox_dir: &Path, vm_name: &str) {
    release(&VmPaths::new(sandbox_dir, vm_name));
}

/// Whether the VM `vm_name` may have left something behind: its run
/// directory exists (a boot made it; a clean stop, a kill or [`reap`]
/// removes it).
pub(crate) fn has_leftovers(sandbox_dir: &Path, vm_name: &str) -> bool {
    VmPaths::new(sandbox_dir, vm_name).run_dir.exists()
}

/// Kill every process of the VM `vm_name` that no registry row owns (a
/// boot whose caller was killed: its QEMU, detached, runs on), then remove
/// its network process and run directory. The caller holds the sandbox's
/// lock, so no boot of it is in progress.
pub(crate) fn reap(sandbox_dir: &Path, vm_name: &str) {
    for pid in qemu::pids_named(vm_name) {
        log::warn!("killing VM {vm_name} (pid {pid}) left by an interrupted call");
        qemu::kill_now(pid, vm_name);
    }
    release(&VmPaths::new(sandbox_dir, vm_name));
}
