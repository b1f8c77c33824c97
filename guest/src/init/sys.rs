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
