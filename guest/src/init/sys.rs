//! The Linux calls PID 1 needs beyond std that `nix` does not cover as they
//! are needed: `waitpid` with the raw status, `pidfd_open`, the `SIGIO`
//! plumbing (`F_SETOWN_EX` owner, `sigtimedwait`), plus `poll` retried across
//! `EINTR` and the child check behind shutdown. Everything else (mounts,
//! `chroot`, modules, signals, `reboot`) calls `nix` directly. Each returns
//! `io::Result` with the errno attached; all `unsafe` of the binary lives here.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::{Pid, gettid};

/// `waitpid(-1, .., 0)`: blocks for any child; returns its pid and raw status.
///
/// Not `nix::sys::wait::waitpid`: it reaps the child and then fails with
/// `EINVAL` when a real-time signal killed it (`Signal` has no such
/// variants), losing the pid, so that child's waiter would hang.
pub fn wait_any() -> io::Result<(Pid, libc::c_int)> {
    let mut status = 0;
    // SAFETY: `status` is a valid, writable c_int that outlives the call.
    let pid = Errno::result(unsafe { libc::waitpid(-1, &mut status, 0) })?;
    Ok((Pid::from_raw(pid), status))
}

/// The signal that ended a process, from its raw wait status.
pub fn exit_signal(status: libc::c_int) -> Option<i32> {
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

/// Sends signal number `sig` to the process group `pgid` (any number,
/// real-time ones included, which `nix`'s `Signal` cannot name).
pub fn kill_group(pgid: Pid, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) only sends a signal; a negative pid names a group.
    Errno::result(unsafe { libc::kill(-pgid.as_raw(), sig) })?;
    Ok(())
}

/// Asks for a bigger pipe buffer (best effort: fewer, larger reads).
pub fn set_pipe_size(fd: BorrowedFd<'_>, bytes: i32) {
    let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(bytes));
}

/// Turns a raw wait status into an exit code (`128 + signal` when signalled).
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// Whether this process has any child left (running or not yet reaped),
/// without reaping it: `waitid(P_ALL, WNOHANG | WNOWAIT)` fails with ECHILD
/// only when there is none. (`kill(-1, 0)` cannot tell: it counts kernel threads.)
pub fn has_children() -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    // Any other outcome, including nix failing to decode the status, means a child.
    !matches!(waitid(Id::All, flags), Err(Errno::ECHILD))
}

/// `pidfd_open(2)`: a descriptor that polls readable once `pid` exits.
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and touches no memory of ours
    // (nix has no wrapper for it).
    let fd = Errno::result(unsafe {
        libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0 as libc::c_uint)
    })?;
    // SAFETY: on success the kernel handed us a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `poll(2)` for `events` on each of `fds`, retried on `EINTR`; returns the
/// `revents` per entry (all empty on timeout).
pub fn poll(
    fds: &[BorrowedFd<'_>],
    events: PollFlags,
    timeout: PollTimeout,
) -> io::Result<Vec<PollFlags>> {
    let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|&fd| PollFd::new(fd, events)).collect();
    loop {
        match nix::poll::poll(&mut pfds, timeout) {
            // The kernel reports only the requested events plus POLLERR,
            // POLLHUP and POLLNVAL, all of which `PollFlags` knows.
            Ok(_) => {
                return Ok(pfds
                    .iter()
                    .map(|p| p.revents().unwrap_or(PollFlags::empty()))
                    .collect());
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// [`poll`] on one descriptor; returns its `revents` (empty on timeout).
pub fn poll_one(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    timeout: PollTimeout,
) -> io::Result<PollFlags> {
    Ok(poll(&[fd], events, timeout)?
        .first()
        .copied()
        .unwrap_or(PollFlags::empty()))
}

/// `F_SETOWN_EX` and `F_OWNER_TID` from `<linux/fcntl.h>` (not in the libc
/// crate for glibc, and no `nix::fcntl::FcntlArg`).
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

/// `struct f_owner_ex` from `<linux/fcntl.h>`.
#[repr(C)]
struct FOwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// Blocks `SIGIO` in the calling thread (threads it spawns inherit the mask;
/// std resets the mask in child processes), then turns on `O_ASYNC` for `fd`
/// with this thread as the owner, so the driver's `SIGIO` goes to this thread
/// only, to be collected with [`wait_sigio`].
pub fn sigio_to_this_thread(fd: BorrowedFd<'_>) -> io::Result<()> {
    SigSet::from(Signal::SIGIO).thread_block()?;
    let owner = FOwnerEx {
        kind: F_OWNER_TID,
        pid: gettid().as_raw(),
    };
    // SAFETY: F_SETOWN_EX reads one `struct f_owner_ex` through the pointer;
    // `owner` is one, laid out as C does, and lives across the call.
    Errno::result(unsafe { libc::fcntl(fd.as_raw_fd(), F_SETOWN_EX, &owner as *const FOwnerEx) })?;
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_ASYNC))?;
    Ok(())
}

/// `sigtimedwait(2)` for `SIGIO` (blocked by [`sigio_to_this_thread`]):
/// `Ok(true)` if it was pending or arrived within `timeout`, `Ok(false)` on
/// timeout.
pub fn wait_sigio(timeout: Duration) -> io::Result<bool> {
    let set = SigSet::from(Signal::SIGIO);
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `set` and `ts` are valid and only read during the call; a null
    // siginfo pointer asks for none (nix has no sigtimedwait).
    let ret = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    match Errno::result(ret) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `RNDADDENTROPY` then `RNDRESEEDCRNG` on `/dev/urandom`: mixes `seed` into
/// the kernel's pool, credited, and reseeds the CRNG from it at once, so a
/// forked guest stops producing its snapshot's random stream right away.
pub fn add_entropy_and_reseed(seed: &[u8]) -> io::Result<()> {
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
    let urandom = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    let mut info = Vec::with_capacity(8 + seed.len());
    info.extend_from_slice(&((seed.len() * 8) as libc::c_int).to_ne_bytes());
    info.extend_from_slice(&(seed.len() as libc::c_int).to_ne_bytes());
    info.extend_from_slice(seed);
    // SAFETY: `info` is a valid rand_pool_info of `seed.len()` bytes of
    // payload that outlives the call; the kernel only reads it.
    Errno::result(unsafe { libc::ioctl(urandom.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) })?;
    // SAFETY: RNDRESEEDCRNG takes no argument.
    Errno::result(unsafe { libc::ioctl(urandom.as_raw_fd(), RNDRESEEDCRNG) })?;
    Ok(())
}

/// An `AF_INET` socket address for the interface and route ioctls.
fn sockaddr_in(addr: std::net::Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and
    // sockaddr is plain bytes; this is how the ioctls expect the address.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// A datagram socket to issue interface ioctls on.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn ioctl_ifreq(sock: &OwnedFd, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `req` is a valid ifreq for interface requests, alive for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bring interface `name` up, with `addr`/`prefix` when given (`lo` needs none).
pub fn interface_up(name: &str, addr: Option<(std::net::Ipv4Addr, u8)>) -> io::Result<()> {
    let sock = ioctl_socket()?;
    if let Some((addr, prefix)) = addr {
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_addr = sockaddr_in(addr);
        ioctl_ifreq(&sock, libc::SIOCSIFADDR, &mut req)?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_netmask = sockaddr_in(std::net::Ipv4Addr::from(mask));
        ioctl_ifreq(&sock, libc::SIOCSIFNETMASK, &mut req)?;
    }
    let mut req = ifreq(name)?;
    ioctl_ifreq(&sock, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl_ifreq(&sock, libc::SIOCSIFFLAGS, &mut req)
}

/// The kernel's `struct rtentry` (x86_64 layout, `SIOCADDRT`).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// Add the default route through `gateway`.
pub fn add_default_route(gateway: std::net::Ipv4Addr) -> io::Result<()> {
    const RTF_UP: libc::c_ushort = 0x1;
    const RTF_GATEWAY: libc::c_ushort = 0x2;
    let sock = ioctl_socket()?;
    let unspecified = std::net::Ipv4Addr::UNSPECIFIED;
    let mut route = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_in(unspecified),
        rt_gateway: sockaddr_in(gateway),
        rt_genmask: sockaddr_in(unspecified),
        rt_flags: RTF_UP | RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: `route` is a complete struct rtentry, alive for the call.
    if unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCADDRT as _,
            &mut route as *mut RtEntry,
        )
    } < 0
    {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(libc::SIGKILL), 128 + libc::SIGKILL);
        let rt = libc::SIGRTMIN() + 1;
        assert_eq!(exit_code(rt), 128 + rt);
    }

    /// Why [`wait_any`] keeps its own `waitpid`: nix cannot decode this status.
    #[test]
    fn nix_cannot_decode_a_real_time_signal_death() {
        let status = libc::SIGRTMIN() + 1;
        assert!(nix::sys::wait::WaitStatus::from_raw(Pid::from_raw(1), status).is_err());
    }
}
