//! Full-VM state: pausing a VM and saving its device state and RAM as two
//! files, resuming it, and starting a new VM from such files (a fork) that
//! gets its own identity. What the files are called, where they live and
//! their digests belong to `snapshot`; this module only moves the VM's bytes.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use microsandbox_guest::protocol::PROTOCOL_VERSION;
use serde::{Deserialize, Serialize};

use super::agent::AgentClient;
use super::assets::GuestAssets;
use super::host::{self, Accel, AccelMode};
use super::qemu::{self, DEVICE_LAYOUT, DEVICE_LAYOUT_WITH_NIC, Qmp, RamSource, VmParams, VmPaths};
use super::{BootRequest, RunningVm};
use crate::control::Control;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;

/// How long a restored guest may take to answer its agent.
const RESTORE_AGENT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a fork waits for its balloon to reach a smaller memory size
/// (well under a second here; the margin covers a loaded machine).
const BALLOON_WAIT: Duration = Duration::from_secs(30);

/// What a saved device state only loads into: the same QEMU, machine,
/// accelerator, CPU model, memory, CPU count, device layout and guest
/// protocol. Recorded in a full snapshot's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineShape {
    /// QEMU version, `major.minor.micro`.
    pub qemu: String,
    /// QEMU machine type.
    pub machine: String,
    /// `tcg` or `kvm`.
    pub accel: String,
    /// QEMU CPU model.
    pub cpu: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// The runtime's device layout version.
    pub devices: u32,
    /// The guest agent's protocol version.
    pub protocol: u32,
}

/// What makes a guest itself: sent after every boot and every restore.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub hostname: String,
    pub cpus_online: Option<u32>,
}

impl Identity {
    pub fn new(hostname: &str, cpus_online: Option<u32>) -> Self {
        Self {
            hostname: hostname.to_string(),
            cpus_online,
        }
    }

    /// The host's wall clock now, in nanoseconds since the epoch.
    pub fn unix_time_ns(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos().min(u128::from(u64::MAX)) as u64
    }

    /// 32 fresh random bytes, hex.
    pub fn seed_hex(&self) -> String {
        let mut seed = [0u8; 32];
        if let Ok(mut urandom) = File::open("/dev/urandom") {
            let _ = urandom.read_exact(&mut seed);
        }
        hex::encode(seed)
    }
}

/// Whose RAM a fork runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForkRam {
    /// The snapshot's RAM file, mapped copy-on-write: forks of one snapshot
    /// share its unchanged pages. Capturing such a fork streams its RAM
    /// through the device state too (QEMU saves private RAM that way).
    Mapped,
    /// Its own copy, private (a memfd filled from the snapshot's RAM): for
    /// a fork the balloon shrinks, as QEMU 7.2 returns ballooned pages by
    /// punching holes in the RAM's backing file even when it is mapped
    /// private, and that file must not be the artifact.
    OwnPrivate,
    /// Its own copy, shared (a memfd filled from the snapshot's RAM), as a
    /// cold-booted VM has: captured as fast as one. Only for a snapshot
    /// captured from shared RAM (a saved state loads into shared RAM only
    /// if its source's was): instant create's bases.
    OwnShared,
}

/// A full snapshot's VM files, for [`restore`].
#[derive(Debug, Clone)]
pub(crate) struct RestoreFrom {
    pub ram: PathBuf,
    pub state: PathBuf,
    pub machine: MachineShape,
    /// Whose RAM the fork runs in.
    pub ram_mode: ForkRam,
}

fn incompatible(path: &Path, reason: impl Into<String>) -> MicrosandboxError {
    MicrosandboxError::SnapshotIncompatible {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn runtime_error(what: &str, e: impl std::fmt::Display) -> MicrosandboxError {
    MicrosandboxError::Runtime(format!("{what}: {e}"))
}

/// Where a paused VM's RAM can be read: `file` at `base + offset`, with
/// data only in `extents` (`[start, end)`), `len` bytes in all.
pub(crate) struct RamImage {
    pub file: File,
    pub base: u64,
    pub extents: Vec<(u64, u64)>,
    pub len: u64,
}

/// Pause the running VM and save its device state to `state_out`. The VM
/// stays paused on success (its RAM readable through the returned
/// [`RamImage`] until it runs again) and runs again on failure.
pub(crate) fn capture(
    sandbox_dir: &Path,
    vm_name: &str,
    pid: u32,
    memory_mib: u32,
    cpus: u32,
    state_out: &Path,
) -> MicrosandboxResult<(MachineShape, RamImage)> {
    let paths = VmPaths::new(sandbox_dir, vm_name);
    let mut qmp = Qmp::connect(&paths.qmp_sock).map_err(|e| runtime_error("QMP", e))?;
    let qemu_version = qmp.version().map_err(|e| runtime_error("QMP", e))?;
    let accel = accel_of(pid);
    let saved = qmp
        .pause_and_save(state_out)
        .map_err(|e| runtime_error("saving the VM", e))
        .and_then(|()| ram_image(pid, u64::from(memory_mib) << 20));
    match saved {
        Ok(ram) => Ok((
            MachineShape {
                qemu: qemu_version,
                machine: "microvm".into(),
                cpu: qemu::cpu_model(accel).into(),
                accel: accel.as_str().into(),
                memory_mib,
                cpus,
                devices: qemu::device_layout(super::netd::has_link(&paths)),
                protocol: PROTOCOL_VERSION,
            },
            ram,
        )),
        Err(e) => {
            let _ = qmp.resume();
            Err(e)
        }
    }
}

/// The accelerator the VM `pid` runs under, from its command line.
fn accel_of(pid: u32) -> Accel {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let kvm = cmdline
        .split(|&b| b == 0)
        .any(|arg| arg.starts_with(b"microvm,accel=kvm"));
    if kvm { Accel::Kvm } else { Accel::Tcg }
}

/// Where the paused VM's RAM is. Shared RAM (a cold-booted VM's memfd) is
/// read through `/proc/<pid>/fd`, its holes skipped. Private RAM (a fork's
/// copy-on-write mapping) holds its current content only in QEMU's memory:
/// read it there (`/proc/<pid>/mem`).
fn ram_image(pid: u32, len: u64) -> MicrosandboxResult<RamImage> {
    let mapping = ram_mapping(pid, len)?;
    if mapping.shared
        && let Some(memfd) = ram_memfd(pid)
    {
        let file = File::open(&memfd).map_err(|e| MicrosandboxError::io(&memfd, e))?;
        let extents = crate::sparse::data_extents(&file, len)
            .map_err(|e| MicrosandboxError::io(&memfd, e))?;
        return Ok(RamImage {
            file,
            base: 0,
            extents,
            len,
        });
    }
    let mem_path = format!("/proc/{pid}/mem");
    let file = File::open(&mem_path).map_err(|e| MicrosandboxError::io(&mem_path, e))?;
    Ok(RamImage {
        file,
        base: mapping.start,
        extents: vec![(0, len)],
        len,
    })
}

/// `/proc/<pid>/fd/<n>` of the guest RAM memfd of QEMU process `pid`.
fn ram_memfd(pid: u32) -> Option<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|fd| {
            std::fs::read_link(fd).is_ok_and(|target| {
                target
                    .to_string_lossy()
                    .starts_with("/memfd:memory-backend-memfd")
            })
        })
}

/// The guest RAM mapping in a QEMU process.
struct RamMapping {
    start: u64,
    shared: bool,
}

/// The guest RAM mapping of QEMU process `pid`: the `len`-byte mapping of
/// a file whose name ends in `.ram` (a snapshot's RAM) or of the RAM memfd.
fn ram_mapping(pid: u32, len: u64) -> MicrosandboxResult<RamMapping> {
    let maps_path = format!("/proc/{pid}/maps");
    let maps =
        std::fs::read_to_string(&maps_path).map_err(|e| MicrosandboxError::io(&maps_path, e))?;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms), Some(path)) = (fields.next(), fields.next(), fields.nth(3))
        else {
            continue;
        };
        if !(path.ends_with(".ram") || path.starts_with("/memfd:memory-backend-memfd")) {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
            && end - start == len
        {
            return Ok(RamMapping {
                start,
                shared: perms.ends_with('s'),
            });
        }
    }
    Err(MicrosandboxError::Runtime(format!(
        "no guest RAM mapping of {len} bytes in QEMU process {pid}"
    )))
}

/// Run a paused VM again.
pub(crate) fn resume(sandbox_dir: &Path, vm_name: &str) -> MicrosandboxResult<()> {
    let paths = VmPaths::new(sandbox_dir, vm_name);
    let mut qmp = Qmp::connect(&paths.qmp_sock).map_err(|e| runtime_error("QMP", e))?;
    qmp.resume()
        .map_err(|e| runtime_error("resuming the VM", e))
}

/// Ask the balloon for a guest of `mib` MiB.
pub(crate) fn set_balloon(sandbox_dir: &Path, vm_name: &str, mib: u32) -> MicrosandboxResult<()> {
    let paths = VmPaths::new(sandbox_dir, vm_name);
    let mut qmp = Qmp::connect(&paths.qmp_sock).map_err(|e| runtime_error("QMP", e))?;
    qmp.balloon(mib, BALLOON_WAIT)
        .map_err(|e| runtime_error("balloon", e))
}

/// The accelerator a snapshot captured under `recorded` restores with on
/// this host, or why it cannot.
fn restore_accel(home: &MsbHome, recorded: &str, artifact: &Path) -> MicrosandboxResult<Accel> {
    let wanted = match recorded {
        "kvm" => Accel::Kvm,
        "tcg" => Accel::Tcg,
        other => {
            return Err(incompatible(
                artifact,
                format!("unknown accelerator {other:?}"),
            ));
        }
    };
    match (home.accel(), wanted) {
        (AccelMode::Tcg, Accel::Kvm) => Err(incompatible(
            artifact,
            "captured under KVM; this host is set to TCG (MSB_ACCEL=tcg)",
        )),
        (AccelMode::Kvm, Accel::Tcg) => Err(incompatible(
            artifact,
            "captured under TCG; this host is set to KVM (MSB_ACCEL=kvm)",
        )),
        (_, Accel::Kvm) => match host::kvm_unusable_reason() {
            Some(why) => Err(incompatible(
                artifact,
                format!("captured under KVM, which this host cannot run: {why}"),
            )),
            None => Ok(Accel::Kvm),
        },
        (_, Accel::Tcg) => Ok(Accel::Tcg),
    }
}

/// Start a new VM for `req` from a full snapshot's files: RAM mapped
/// copy-on-write, device state loaded, no boot. `req.memory_mib`/`cpus`
/// are ignored: the machine is the recorded one. The guest gets
/// `identity` before this returns. A cancelled call kills the VM.
pub(crate) fn restore(
    home: &MsbHome,
    req: &BootRequest,
    from: &RestoreFrom,
    identity: &Identity,
    control: &Control,
) -> MicrosandboxResult<RunningVm> {
    let artifact = from.state.parent().unwrap_or(Path::new("."));
    let machine = &from.machine;
    let layouts = [DEVICE_LAYOUT, DEVICE_LAYOUT_WITH_NIC];
    if machine.machine != "microvm" || !layouts.contains(&machine.devices) {
        return Err(incompatible(
            artifact,
            format!(
                "machine {} with device layout {} (this runtime: microvm, layouts {layouts:?})",
                machine.machine, machine.devices
            ),
        ));
    }
    if machine.protocol != PROTOCOL_VERSION {
        return Err(incompatible(
            artifact,
            format!(
                "its guest speaks agent protocol {}, this runtime {PROTOCOL_VERSION}",
                machine.protocol
            ),
        ));
    }
    let accel = restore_accel(home, &machine.accel, artifact)?;
    if machine.cpu != qemu::cpu_model(accel) {
        return Err(incompatible(
            artifact,
            format!(
                "CPU model {} (this host: {})",
                machine.cpu,
                qemu::cpu_model(accel)
            ),
        ));
    }
    let assets = GuestAssets::locate(home)?;
    let initramfs = assets.initramfs(home)?;
    let paths = VmPaths::new(&req.sandbox_dir, &req.vm_name);
    let ram = match from.ram_mode {
        ForkRam::Mapped => RamSource::Snapshot(&from.ram),
        ForkRam::OwnPrivate => RamSource::Own,
        ForkRam::OwnShared => RamSource::Fresh,
    };
    control.check()?;
    // The saved card needs a link; the fork gets its own network process
    // (fresh connection state) under the fork's configuration.
    let link = if machine.devices == DEVICE_LAYOUT_WITH_NIC {
        Some(super::netd::start(
            &assets.dir,
            req.dns_upstream,
            &req.network,
            &req.sandbox_dir,
            &paths,
        )?)
    } else {
        None
    };
    let net_fd = link.as_ref().map(|l| l.qemu_end.as_raw_fd());
    let params = VmParams {
        vm_name: &req.vm_name,
        assets: &assets,
        initramfs: &initramfs,
        lower: &req.lower,
        upper: &req.upper,
        memory_mib: machine.memory_mib,
        cpus: machine.cpus,
        accel,
        paths: &paths,
        ram,
        incoming: true,
        net_fd,
    };
    let _ = std::fs::remove_file(&paths.console_log);
    let spawned = qemu::spawn_detached(&qemu::argv(&params), &paths, net_fd);
    drop(link);
    let pid = match spawned {
        Ok(pid) => pid,
        Err(e) => {
            super::release(&paths);
            return Err(e);
        }
    };
    let filled = match from.ram_mode {
        ForkRam::Mapped => Ok(()),
        ForkRam::OwnPrivate | ForkRam::OwnShared => {
            fill_ram(pid, &from.ram, u64::from(machine.memory_mib) << 20)
        }
    };
    let started = filled
        .and_then(|()| load_state(&paths, from, artifact))
        .and_then(|()| {
            AgentClient::connect(&paths.agent_sock, RESTORE_AGENT_TIMEOUT, control)?
                .configure(identity)
        });
    match started {
        Ok(()) => Ok(RunningVm { pid }),
        Err(e) => {
            qemu::kill_now(pid, &req.vm_name);
            super::release(&paths);
            Err(e)
        }
    }
}

/// Copy a snapshot's RAM file (its data only) into the fresh memfd of the
/// QEMU process `pid`, before its device state is loaded.
fn fill_ram(pid: u32, ram: &Path, len: u64) -> MicrosandboxResult<()> {
    use std::os::unix::fs::FileExt;
    let memfd = ram_memfd(pid).ok_or_else(|| {
        MicrosandboxError::Runtime(format!("QEMU process {pid} has no RAM memfd"))
    })?;
    let dst = File::options()
        .write(true)
        .open(&memfd)
        .map_err(|e| MicrosandboxError::io(&memfd, e))?;
    let src = File::open(ram).map_err(|e| MicrosandboxError::io(ram, e))?;
    let extents =
        crate::sparse::data_extents(&src, len).map_err(|e| MicrosandboxError::io(ram, e))?;
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in extents {
        let mut at = start;
        while at < end {
            let n = (end - at).min(buf.len() as u64) as usize;
            src.read_exact_at(&mut buf[..n], at)
                .map_err(|e| MicrosandboxError::io(ram, e))?;
            crate::sparse::write_nonzero_runs(&dst, at, &buf[..n])
                .map_err(|e| MicrosandboxError::io(&memfd, e))?;
            at += n as u64;
        }
    }
    Ok(())
}

fn load_state(paths: &VmPaths, from: &RestoreFrom, artifact: &Path) -> MicrosandboxResult<()> {
    let mut qmp = Qmp::connect(&paths.qmp_sock).map_err(|e| runtime_error("QMP", e))?;
    let version = qmp.version().map_err(|e| runtime_error("QMP", e))?;
    if version != from.machine.qemu {
        return Err(incompatible(
            artifact,
            format!(
                "saved by QEMU {}, this host runs QEMU {version}",
                from.machine.qemu
            ),
        ));
    }
    qmp.load_and_run(&from.state).map_err(|e| {
        incompatible(
            artifact,
            format!(
                "QEMU could not load the saved state: {e}\n{}",
                qemu::tail(&paths.qemu_log, 10)
            ),
        )
    })
}
