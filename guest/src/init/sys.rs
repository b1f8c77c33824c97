//! Thin, safe wrappers over the Linux syscalls PID 1 needs and std does not
//! offer: mounts, `finit_module`, `chroot`, `reboot`, `kill`, `waitpid`,
//! `pidfd_open`, `poll`, and the `SIGIO` plumbing (`O_ASYNC` owner, signal
//! mask, `sigtimedwait`). Each returns `io::Result` with the errno attached;
//! all `unsafe` of the binary lives here.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in string"))
}

fn cpath(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `mount(2)`.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = cstr(source)?;
    let target = cpath(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    // SAFETY: every pointer is a valid NUL-terminated string or null.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    })
    .map(drop)
}

/// `umount2(2)`.
pub fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cpath(target)?;
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

/// `chroot(2)`.
pub fn chroot(path: &Path) -> io::Result<()> {
    let path = cpath(path)?;
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::chroot(path.as_ptr()) }).map(drop)
}

/// `fchdir(2)`.
pub fn fchdir(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    check(unsafe { libc::fchdir(fd.as_raw_fd()) }).map(drop)
}

/// `finit_module(2)` with no parameters.
pub fn finit_module(module: &File) -> io::Result<()> {
    let params = c"";
    // SAFETY: valid fd and NUL-terminated parameter string.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            module.as_raw_fd(),
            params.as_ptr(),
            0 as libc::c_int,
        )
    })
    .map(drop)
}

/// `sync(2)`.
pub fn sync() {
    // SAFETY: no arguments.
    unsafe { libc::sync() }
}

/// `reboot(2)` with `RB_POWER_OFF` (or another `RB_*` command). Returns only on failure.
pub fn reboot(cmd: libc::c_int) -> io::Error {
    // SAFETY: plain syscall.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// `kill(2)`.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// `waitpid(-1, .., 0)`: blocks for any child; returns its pid and raw status.
pub fn wait_any() -> io::Result<(libc::pid_t, libc::c_int)> {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    let pid = check(unsafe { libc::waitpid(-1, &mut status, 0) })?;
    Ok((pid, status))
}

/// Whether this process has any child left (running or not yet reaped),
/// without reaping it: `waitid(P_ALL, WNOHANG | WNOWAIT)` fails with ECHILD
/// only when there is none. (`kill(-1, 0)` cannot tell: it counts kernel threads.)
pub fn has_children() -> bool {
    // SAFETY: an all-zero siginfo_t is a valid out-buffer.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid out-pointer.
    let ret = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    !(ret < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
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

/// `pidfd_open(2)`: a descriptor that polls readable once `pid` exits.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = check_long(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) })?;
    // SAFETY: the kernel just handed us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `poll(2)` on `fds` (events `POLLIN`); returns `revents` per entry.
pub fn poll_in(fds: &[RawFd], timeout_ms: libc::c_int) -> io::Result<Vec<libc::c_short>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs.
        let ret = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if ret >= 0 {
            return Ok(pfds.iter().map(|p| p.revents).collect());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `poll(2)` on one descriptor for `events`; returns its `revents` (0 on
/// timeout). `timeout_ms` < 0 waits forever.
pub fn poll_one(
    fd: RawFd,
    events: libc::c_short,
    timeout_ms: libc::c_int,
) -> io::Result<libc::c_short> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid pollfd struct.
        let ret = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if ret >= 0 {
            return Ok(pfd.revents);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn sigset_of(sig: libc::c_int) -> io::Result<libc::sigset_t> {
    // SAFETY: an all-zero sigset_t is a valid buffer for sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    check(unsafe { libc::sigemptyset(&mut set) })?;
    // SAFETY: `set` is a valid, initialised sigset_t.
    check(unsafe { libc::sigaddset(&mut set, sig) })?;
    Ok(set)
}

/// Blocks `sig` in the calling thread (threads it spawns inherit the mask;
/// std resets the mask in child processes).
pub fn block_signal(sig: libc::c_int) -> io::Result<()> {
    let set = sigset_of(sig)?;
    // SAFETY: `set` is valid; the old mask is not wanted.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

/// `F_SETOWN_EX` and `F_OWNER_TID` from `<linux/fcntl.h>` (not in the libc crate).
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

/// `struct f_owner_ex` from `<linux/fcntl.h>`.
#[repr(C)]
struct FOwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// Turns on `O_ASYNC` for `fd` with the calling thread as the owner, so the
/// driver's `SIGIO` goes to this thread only (block it first and collect it
/// with [`wait_signal`]).
pub fn sigio_to_this_thread(fd: RawFd) -> io::Result<()> {
    let owner = FOwnerEx {
        kind: F_OWNER_TID,
        // SAFETY: plain syscall.
        pid: unsafe { libc::gettid() },
    };
    // SAFETY: F_SETOWN_EX reads one f_owner_ex through the pointer.
    check(unsafe { libc::fcntl(fd, F_SETOWN_EX, &owner as *const FOwnerEx) })?;
    // SAFETY: plain fcntl on a descriptor the caller owns.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC) }).map(drop)
}

/// `sigtimedwait(2)` for one (blocked) signal: `Ok(true)` if it was pending
/// or arrived within `timeout`, `Ok(false)` on timeout.
pub fn wait_signal(sig: libc::c_int, timeout: Duration) -> io::Result<bool> {
    let set = sigset_of(sig)?;
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `set` and `ts` are valid; no siginfo is wanted.
    let ret = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    if ret >= 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(false),
        _ => Err(err),
    }
}

/// `dup2(2)`.
pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: plain syscall; `to` is replaced atomically.
    check(unsafe { libc::dup2(from, to) }).map(drop)
}

/// `getpid(2)`.
pub fn getpid() -> libc::pid_t {
    // SAFETY: plain syscall.
    unsafe { libc::getpid() }
}
