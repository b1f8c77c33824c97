//! `msb-netd`: the network process of one sandbox. It runs detached beside
//! the sandbox's QEMU, started by the runtime with everything it serves
//! already open (so a taken host port fails before the VM starts):
//!
//! ```text
//! msb-netd --sandbox DIR --config JSON --link FD [--publish FD:GUEST_PORT]... [--dns IP:PORT]
//! ```
//!
//! `--link` is its end of a stream socket pair whose other end is QEMU's
//! `-netdev socket,fd=`; `--publish` a listening TCP socket on the host and
//! the guest port it forwards to; `--config` the sandbox's
//! [`NetworkConfig`]. All the logic is in `microsandbox::network`; this is
//! argument parsing and a logger. It exits when QEMU closes the link.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};

use microsandbox::network::stack::{self, StackOptions};
use microsandbox::network::{NetworkConfig, Policy};

/// Logs to stderr (the runtime points it at the sandbox's `logs/netd.log`),
/// at most [`LOG_CAP`] bytes in all: the guest decides how many connections
/// fail or are denied, and must not decide how much host disk the log takes.
struct StderrLogger;

/// Bytes of log lines one `msb-netd` writes before it drops the rest.
const LOG_CAP: u64 = 1 << 20;

/// Bytes of log lines written (or refused) so far.
static LOGGED: AtomicU64 = AtomicU64::new(0);

/// What to do with a line of `len` bytes once `before` bytes went before it.
#[derive(Debug, PartialEq, Eq)]
enum LogAdmission {
    Write,
    /// The first line past the cap: say the log stops here.
    WriteCapNotice,
    Drop,
}

fn admit(before: u64, len: u64) -> LogAdmission {
    if before.saturating_add(len) <= LOG_CAP {
        LogAdmission::Write
    } else if before <= LOG_CAP {
        LogAdmission::WriteCapNotice
    } else {
        LogAdmission::Drop
    }
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata())
            && (record.target().starts_with("microsandbox")
                || record.target().starts_with("msb_netd"))
        {
            let line = format!("msb-netd: {}: {}\n", record.level(), record.args());
            let len = line.len() as u64;
            match admit(LOGGED.fetch_add(len, Ordering::Relaxed), len) {
                LogAdmission::Write => eprint!("{line}"),
                LogAdmission::WriteCapNotice => {
                    eprintln!("msb-netd: log capped at {LOG_CAP} bytes; later lines are dropped");
                }
                LogAdmission::Drop => {}
            }
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

fn main() {
    let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(log::LevelFilter::Info));
    if let Err(e) = run() {
        eprintln!("msb-netd: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut config = None;
    let mut link = None;
    let mut published = Vec::new();
    let mut dns_upstream = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            // Names the sandbox in the process list (leak checks look for it).
            "--sandbox" => {
                value()?;
            }
            "--config" => {
                let json = value()?;
                let parsed: NetworkConfig =
                    serde_json::from_str(&json).map_err(|e| format!("--config: {e}"))?;
                config = Some(parsed);
            }
            "--link" => link = Some(UnixStream::from(owned_fd(&value()?)?)),
            "--publish" => {
                let spec = value()?;
                let (fd, guest) = spec
                    .split_once(':')
                    .ok_or(format!("--publish {spec}: expected FD:GUEST_PORT"))?;
                let guest: u16 = guest
                    .parse()
                    .map_err(|_| format!("--publish {spec}: bad guest port"))?;
                published.push((TcpListener::from(owned_fd(fd)?), guest));
            }
            "--dns" => {
                let addr = value()?;
                let addr: SocketAddr = addr.parse().map_err(|e| format!("--dns {addr}: {e}"))?;
                dns_upstream = Some(addr);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let config = config.ok_or("--config is required")?;
    if config.policy == microsandbox::NetworkPolicy::None {
        // A card without a network (a fork's, say) answers nothing, DNS included.
        dns_upstream = None;
    }
    let link = link.ok_or("--link is required")?;
    log::info!(
        "policy {} (allow {:?}), {} published port(s), dns {:?}",
        config.policy,
        config
            .allow
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        published.len(),
        dns_upstream
    );
    let options = StackOptions {
        policy: Policy::resolve(&config),
        published,
        dns_upstream,
    };
    stack::serve(link, options).map_err(|e| format!("network stack: {e}"))
}

/// Take ownership of an inherited descriptor named on the command line.
fn owned_fd(text: &str) -> Result<OwnedFd, String> {
    let fd: RawFd = text
        .parse()
        .map_err(|_| format!("bad descriptor {text:?}"))?;
    // SAFETY: F_GETFD only asks whether the number is an open descriptor.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(format!("descriptor {fd} is not open"));
    }
    // SAFETY: the runtime passed this descriptor to us for this purpose,
    // it is open (checked above) and nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_stops_at_its_cap_with_one_notice() {
        let (mut logged, mut written, mut notices) = (0u64, 0u64, 0);
        // A guest making a failed connection per line, for ever.
        for _ in 0..100_000 {
            let len = 90;
            match admit(logged, len) {
                LogAdmission::Write => written += len,
                LogAdmission::WriteCapNotice => notices += 1,
                LogAdmission::Drop => {}
            }
            logged += len;
        }
        assert!(written <= LOG_CAP && written > LOG_CAP - 90, "{written}");
        assert_eq!(notices, 1);
        assert_eq!(admit(0, LOG_CAP), LogAdmission::Write);
        assert_eq!(admit(0, LOG_CAP + 1), LogAdmission::WriteCapNotice);
        assert_eq!(admit(u64::MAX, 1), LogAdmission::Drop);
    }
}
