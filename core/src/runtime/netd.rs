//! Starting and stopping a sandbox's network process, `msb-netd`
//! (`core/src/network/` is what it runs). Before QEMU starts, the runtime
//! binds the published host ports (a taken port fails here, before any VM
//! exists), makes a stream socket pair for the guest link, and starts
//! `msb-netd` detached with its ends; QEMU gets the other end of the pair
//! (`-netdev socket,fd=`). The process records its pid in the VM's run
//! directory and exits on its own when QEMU's end closes, however QEMU
//! ends; [`stop`] is for the runtime's stop, kill and cleanup paths.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::Pid;

use super::qemu::VmPaths;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::network::NetworkConfig;

/// File name of the network process in the guest assets directory.
pub const NETD_FILE: &str = "msb-netd";

/// Where the network process records its pid, in the VM's run directory.
const PID_FILE: &str = "netd.pid";

/// A started network process: QEMU's end of the guest link.
pub(crate) struct NetLink {
    /// Handed to QEMU (`-netdev socket,fd=`), closed here once QEMU runs.
    pub qemu_end: OwnedFd,
}

/// Bind `config`'s published ports, start `msb-netd` from `assets_dir`
/// for the VM at `paths` (DNS to `dns`, else the host's resolver), and return QEMU's end of the link.
/// `InvalidConfig` when a host port is taken; `Runtime` when the binary is
/// missing or does not start.
pub(crate) fn start(
    assets_dir: &Path,
    dns: Option<SocketAddr>,
    config: &NetworkConfig,
    sandbox_dir: &Path,
    paths: &VmPaths,
) -> MicrosandboxResult<NetLink> {
    config.validate()?;
    let binary = assets_dir.join(NETD_FILE);
    if !binary.is_file() {
        return Err(MicrosandboxError::Runtime(format!(
            "{} is missing: a sandbox with network policy {} needs it; install it with `{} {}`",
            binary.display(),
            config.policy,
            super::assets::SETUP_COMMAND,
            assets_dir.display()
        )));
    }
    let listeners = bind_published(config)?;
    let (qemu_end, netd_end) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| MicrosandboxError::Runtime(format!("socketpair for the guest link: {e}")))?;
    let config_json = serde_json::to_string(config)
        .map_err(|e| MicrosandboxError::Runtime(format!("network config: {e}")))?;
    let mut command = Command::new(&binary);
    command
        .arg("--sandbox")
        .arg(sandbox_dir)
        .arg("--config")
        .arg(config_json)
        .arg("--link")
        .arg(netd_end.as_raw_fd().to_string());
    for (listener, guest) in &listeners {
        command
            .arg("--publish")
            .arg(format!("{}:{guest}", listener.as_raw_fd()));
    }
    if let Some(dns) = dns.or_else(dns_upstream) {
        command.arg("--dns").arg(dns.to_string());
    }
    let log_path = sandbox_dir.join("logs").join("netd.log");
    let log = open_log(&log_path)?;
    let log_err = log
        .try_clone()
        .map_err(|e| MicrosandboxError::io(&log_path, e))?;
    let inherited: Vec<RawFd> = std::iter::once(netd_end.as_raw_fd())
        .chain(listeners.iter().map(|(l, _)| l.as_raw_fd()))
        .collect();
    command.stdin(Stdio::null()).stdout(log).stderr(log_err);
    // SAFETY: between fork and exec the closure only calls setsid and
    // fcntl, both async-signal-safe, on descriptors this process owns.
    unsafe {
        command.pre_exec(move || {
            // Its own session: a terminal's Ctrl-C to the caller does not
            // take the network away from a VM that outlives the caller.
            libc::setsid();
            for &fd in &inherited {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| {
        MicrosandboxError::Runtime(format!("cannot start {}: {e}", binary.display()))
    })?;
    let pid = child.id();
    std::fs::create_dir_all(&paths.run_dir)
        .map_err(|e| MicrosandboxError::io(&paths.run_dir, e))?;
    let pid_file = pid_file(paths);
    if let Err(e) = std::fs::write(&pid_file, format!("{pid}\n")) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(MicrosandboxError::io(&pid_file, e));
    }
    // Reap it when it exits while we live; once we exit, init does.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(NetLink { qemu_end })
}

/// Stop the network process of the VM at `paths`, if one runs (it exits
/// by itself when QEMU is gone; this makes sure it is gone now).
pub(crate) fn stop(paths: &VmPaths) {
    let Some(pid) = std::fs::read_to_string(pid_file(paths))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    let ours = || is_netd(pid, &paths.run_dir);
    if !ours() {
        return;
    }
    // It holds nothing worth a graceful exit (its VM is gone or going),
    // and a cancelled create must not wait for it.
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    for _ in 0..1000 {
        if !ours() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether the VM at `paths` was started with a network process.
pub(crate) fn has_link(paths: &VmPaths) -> bool {
    pid_file(paths).is_file()
}

fn pid_file(paths: &VmPaths) -> PathBuf {
    paths.run_dir.join(PID_FILE)
}

/// True while `pid` is a live (not zombie) `msb-netd` whose pid file is in
/// `run_dir` (a recycled pid is someone else's process).
fn is_netd(pid: i32, run_dir: &Path) -> bool {
    let named = super::qemu::live_cmdline(pid).is_some_and(|cmdline| {
        cmdline
            .split(|&b| b == 0)
            .next()
            .is_some_and(|arg0| arg0.ends_with(NETD_FILE.as_bytes()))
    });
    named && run_dir.exists()
}

/// Fail (`InvalidConfig`) if `config` is invalid or one of its host ports
/// is taken now; [`start`] binds them for good.
pub(crate) fn check_ports(config: &NetworkConfig) -> MicrosandboxResult<()> {
    config.validate()?;
    bind_published(config).map(drop)
}

/// Listen on 127.0.0.1 for every published port, or fail naming the taken one.
fn bind_published(config: &NetworkConfig) -> MicrosandboxResult<Vec<(TcpListener, u16)>> {
    config
        .ports
        .iter()
        .map(|port| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port.host))
                .map(|l| (l, port.guest))
                .map_err(|e| {
                    MicrosandboxError::InvalidConfig(format!(
                        "host port {} cannot be published ({e}): it is taken; pick another host port or stop what listens there",
                        port.host
                    ))
                })
        })
        .collect()
}

/// The host's resolver: the first `nameserver` of `/etc/resolv.conf`
/// (for a sandbox whose configuration names none).
fn dns_upstream() -> Option<SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    conf.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .find_map(|addr| addr.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
}

fn open_log(path: &Path) -> MicrosandboxResult<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| MicrosandboxError::io(dir, e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| MicrosandboxError::io(path, e))
}
