//! The guest's execs: spawning a requested command in its own process
//! group, feeding its stdin, streaming its stdout/stderr to the host as raw
//! data frames within the host's credit, enforcing its timeout, delivering
//! signals, and reporting its exit. [`Execs`] is the table of the current
//! session's execs, which the reader thread in `agent` drives.
//!
//! Output path: one thread per exec polls the two pipes and reads up to
//! [`CHUNK`] bytes straight into a buffer behind a frame header, then writes
//! header and payload to the port as they are (no copy, no encoding). While
//! the exec has no credit (the host's reader is behind) the thread does not
//! read the pipes, so the process blocks on a full pipe: back-pressure.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use microsandbox_guest::protocol::{self, FrameKind, GuestMessage, HEADER_LEN, STDIN_WINDOW};
use nix::poll::{PollFlags, PollTimeout};
use nix::unistd::Pid;

use super::agent::{Link, Session};
use super::reaper::{self, Reaper};
use super::sys;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Bytes read from a process pipe per data frame.
pub const CHUNK: usize = 128 * 1024;
/// Pipe buffer asked for on the output pipes (the default is 64 KiB).
const PIPE_SIZE: i32 = 256 * 1024;
/// After the process exits, how long to keep draining pipes that a
/// background descendant may hold open.
const DRAIN_GRACE: Duration = Duration::from_millis(200);
/// Upper bound on draining after the process exits.
const DRAIN_MAX: Duration = Duration::from_secs(2);
/// A frame smaller than this, while output streams, waits a little for more.
const COALESCE_MIN: usize = 64 * 1024;
/// Output counts as streaming when the previous frame left this recently.
const STREAMING: Duration = Duration::from_millis(20);
/// One pause while gathering, and how many at most (≤ 2 ms added per frame).
const GATHER_PAUSE: Duration = Duration::from_micros(250);
const GATHER_PAUSES: usize = 8;
/// How often a thread waiting for credit looks at its deadline.
const CREDIT_WAIT: Duration = Duration::from_millis(100);

/// What the host asked to run.
pub struct ExecRequest {
    /// The host's id.
    pub id: u64,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Stdin is a pipe fed by the host.
    pub stdin: bool,
    /// Kill the process group after this long.
    pub timeout: Option<Duration>,
    /// Output credit to start with (`None`: unlimited).
    pub window: Option<u64>,
}

/// The current session's execs, by id.
#[derive(Default)]
pub struct Execs {
    map: Mutex<HashMap<u64, Arc<ExecCtl>>>,
}

/// Shared between an exec's threads and the reader.
struct ExecCtl {
    state: Mutex<CtlState>,
    changed: Condvar,
}

struct CtlState {
    /// Output bytes the host still accepts; `None`: unlimited.
    credit: Option<u64>,
    /// Output is no longer wanted (killed, or its session is over).
    discard: bool,
    pgid: Option<Pid>,
    stdin: Option<Sender<Vec<u8>>>,
    /// Stdin bytes queued for the writer thread.
    stdin_queued: u64,
}

impl ExecCtl {
    fn lock(&self) -> MutexGuard<'_, CtlState> {
        // A poisoned lock only means another thread panicked; the state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn signal(&self, sig: i32) {
        if let Some(pgid) = self.lock().pgid
            && let Err(e) = sys::kill_group(pgid, sig)
            && e.raw_os_error() != Some(libc::ESRCH)
        {
            crate::log!("signal {sig} to group {pgid}: {e}");
        }
    }

    /// Stop wanting output: unlimited credit, output dropped, stdin closed.
    fn discard(&self) {
        let mut st = self.lock();
        st.discard = true;
        st.stdin = None;
        drop(st);
        self.changed.notify_all();
    }

    /// Waits for credit; returns how many bytes may be read now, or `None`
    /// once `deadline` passed.
    fn wait_credit(&self, deadline: Option<Instant>) -> Option<usize> {
        let mut st = self.lock();
        loop {
            match st.credit {
                _ if st.discard => return Some(CHUNK),
                None => return Some(CHUNK),
                Some(c) if c > 0 => return Some(usize::try_from(c).unwrap_or(CHUNK).min(CHUNK)),
                Some(_) => {}
            }
            let mut wait = CREDIT_WAIT;
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                wait = wait.min(left);
            }
            st = self
                .changed
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Bytes that may be read now without waiting (0: none).
    fn available(&self) -> usize {
        let st = self.lock();
        match st.credit {
            _ if st.discard => CHUNK,
            None => CHUNK,
            Some(c) => usize::try_from(c).unwrap_or(CHUNK).min(CHUNK),
        }
    }

    fn spend(&self, n: usize) {
        let mut st = self.lock();
        if let Some(c) = st.credit.as_mut() {
            *c = c.saturating_sub(n as u64);
        }
    }

    fn discarding(&self) -> bool {
        self.lock().discard
    }
}

impl Execs {
    /// Spawns the exec's thread (which reports `error` if it cannot run).
    pub fn start(
        self: &Arc<Self>,
        link: &Arc<Link>,
        session: Session,
        reaper: &Arc<Reaper>,
        req: ExecRequest,
    ) {
        let id = req.id;
        // The channel exists before the process does: stdin frames may
        // arrive right behind the exec request.
        let (stdin_tx, stdin_rx) = if req.stdin {
            let (tx, rx) = mpsc::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let ctl = Arc::new(ExecCtl {
            state: Mutex::new(CtlState {
                credit: req.window,
                discard: false,
                pgid: None,
                stdin: stdin_tx,
                stdin_queued: 0,
            }),
            changed: Condvar::new(),
        });
        if let Some(old) = self.lock().insert(id, Arc::clone(&ctl)) {
            // The host reused a live id: the old exec no longer reports.
            old.discard();
        }
        let mut reporter = Reporter::new(Arc::clone(link), session, id);
        let execs = Arc::clone(self);
        let reaper = Arc::clone(reaper);
        let spawned = std::thread::Builder::new()
            .name(format!("exec-{id}"))
            .spawn(move || {
                run_exec(&mut reporter, &reaper, &ctl, req, stdin_rx);
                execs.remove(id, &ctl);
            });
        if let Err(e) = spawned {
            self.lock().remove(&id);
            link.send_now(&GuestMessage::Error {
                id: Some(id),
                message: format!("cannot start exec thread: {e}"),
            });
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<ExecCtl>>> {
        // A poisoned lock only means another thread panicked; the map is still usable.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: u64) -> Option<Arc<ExecCtl>> {
        self.lock().get(&id).cloned()
    }

    fn remove(&self, id: u64, ctl: &Arc<ExecCtl>) {
        let mut map = self.lock();
        if map.get(&id).is_some_and(|c| Arc::ptr_eq(c, ctl)) {
            map.remove(&id);
        }
    }

    /// Queues `data` for the exec's stdin (dropped if it has none or the
    /// host overran [`STDIN_WINDOW`]).
    pub fn stdin(&self, id: u64, data: Vec<u8>) {
        let Some(ctl) = self.get(id) else { return };
        let mut st = ctl.lock();
        let n = data.len() as u64;
        if st.stdin_queued + n > 2 * STDIN_WINDOW {
            crate::log!("exec {id}: host overran the stdin window; data dropped");
            return;
        }
        if let Some(tx) = &st.stdin
            && tx.send(data).is_ok()
        {
            st.stdin_queued += n;
        }
    }

    /// Closes the exec's stdin once what is queued is written.
    pub fn stdin_close(&self, id: u64) {
        if let Some(ctl) = self.get(id) {
            ctl.lock().stdin = None;
        }
    }

    /// The host consumed `bytes` more of the exec's output.
    pub fn credit(&self, id: u64, bytes: u64) {
        if let Some(ctl) = self.get(id) {
            if let Some(c) = ctl.lock().credit.as_mut() {
                *c = c.saturating_add(bytes);
            }
            ctl.changed.notify_all();
        }
    }

    /// Sends `sig` to the exec's process group.
    pub fn signal(&self, id: u64, sig: i32) {
        if let Some(ctl) = self.get(id) {
            ctl.signal(sig);
        }
    }

    /// SIGKILLs the exec's process group and drops its output.
    pub fn kill(&self, id: u64) {
        if let Some(ctl) = self.get(id) {
            ctl.discard();
            ctl.signal(libc::SIGKILL);
        }
    }

    /// A new session started: earlier execs keep running, unreported, with
    /// their stdin closed and their output read and dropped.
    pub fn end_session(&self) {
        for (_, ctl) in self.lock().drain() {
            ctl.discard();
        }
    }
}

/// One exec's way to the host: drops everything once its session is over,
/// and says so once.
struct Reporter {
    link: Arc<Link>,
    session: Session,
    id: u64,
    dropping: bool,
}

impl Reporter {
    fn new(link: Arc<Link>, session: Session, id: u64) -> Self {
        Self {
            link,
            session,
            id,
            dropping: false,
        }
    }

    fn send(&mut self, msg: &GuestMessage) {
        match protocol::encode(msg) {
            Ok(frame) => self.send_frame(&frame),
            Err(e) => crate::log!("cannot encode a message: {e}"),
        }
    }

    fn send_frame(&mut self, frame: &[u8]) {
        if self.dropping {
            return;
        }
        if !self.link.send_frame(Some(self.session), frame) {
            self.dropping = true;
            crate::log!(
                "exec {}: session {} is over; dropping its output (the process keeps running)",
                self.id,
                self.session
            );
        }
    }
}

fn run_exec(
    reporter: &mut Reporter,
    reaper: &Reaper,
    ctl: &Arc<ExecCtl>,
    req: ExecRequest,
    stdin_rx: Option<Receiver<Vec<u8>>>,
) {
    let id = req.id;
    let ExecRequest {
        argv,
        mut env,
        cwd,
        stdin,
        timeout,
        ..
    } = req;
    let started = Instant::now();
    let Some((program, args)) = argv.split_first() else {
        reporter.send(&GuestMessage::Error {
            id: Some(id),
            message: "empty argv".into(),
        });
        return;
    };
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    env.entry("HOME".into()).or_insert_with(|| "/root".into());
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(&env)
        .current_dir(cwd.as_deref().unwrap_or("/"))
        .process_group(0)
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match reaper.spawn(&mut cmd) {
        Ok(child) => child,
        Err(e) => {
            reporter.send(&GuestMessage::Error {
                id: Some(id),
                message: format!("spawn {program}: {e}"),
            });
            return;
        }
    };
    let pid = reaper::pid_of(&child);
    // Readable once the process exits; None if it is already gone.
    let pidfd = sys::pidfd_open(pid).ok();
    {
        let mut st = ctl.lock();
        st.pgid = Some(pid);
        if let (Some(pipe), Some(rx)) = (child.stdin.take(), stdin_rx) {
            let credits = Reporter::new(Arc::clone(&reporter.link), reporter.session, id);
            let ctl = Arc::clone(ctl);
            let spawned = std::thread::Builder::new()
                .name(format!("stdin-{id}"))
                .spawn(move || feed_stdin(pipe, &rx, credits, &ctl));
            if let Err(e) = spawned {
                crate::log!("exec {id}: no stdin thread: {e}");
                st.stdin = None;
            }
        }
    }
    let mut outputs = Vec::new();
    for (pipe, kind) in [
        (child.stdout.take().map(OwnedFd::from), FrameKind::Stdout),
        (child.stderr.take().map(OwnedFd::from), FrameKind::Stderr),
    ] {
        if let Some(fd) = pipe {
            sys::set_pipe_size(fd.as_fd(), PIPE_SIZE);
            outputs.push(Output {
                file: File::from(fd),
                kind,
                open: true,
            });
        }
    }
    let mut timer = Timer {
        deadline: timeout.map(|t| started + t),
        fired: false,
    };
    pump(reporter, ctl, &mut outputs, pidfd.as_ref(), &mut timer);
    drop(outputs);
    if let Some(pidfd) = &pidfd {
        // The pipes may close long before the process ends: the timeout
        // still applies.
        wait_exit(pidfd, ctl, &mut timer);
    }
    let status = reaper.wait(pid);
    if timer.fired {
        // Whatever of the group outlived the leader goes too.
        ctl.signal(libc::SIGKILL);
    }
    ctl.lock().stdin = None;
    let code = sys::exit_code(status);
    reporter.send(&GuestMessage::Exit {
        id,
        code,
        signal: sys::exit_signal(status),
        timed_out: timer.fired,
    });
    if reporter.dropping {
        crate::log!("exec {id} exited with {code} (not reported: session over)");
    }
}

/// Writes queued stdin data into the pipe and acknowledges it to the host;
/// once the process closed its stdin, data is acknowledged and dropped.
fn feed_stdin(mut pipe: ChildStdin, rx: &Receiver<Vec<u8>>, mut credits: Reporter, ctl: &ExecCtl) {
    let id = credits.id;
    let mut open = true;
    while let Ok(data) = rx.recv() {
        if open && let Err(e) = pipe.write_all(&data) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                crate::log!("exec {id}: stdin: {e}");
            }
            open = false;
        }
        let n = data.len() as u64;
        {
            let mut st = ctl.lock();
            st.stdin_queued = st.stdin_queued.saturating_sub(n);
        }
        credits.send(&GuestMessage::Credit { id, bytes: n });
    }
}

/// Reads more of `file` into `buf` while it has data, pausing briefly
/// between reads so that a writer of small pieces can fill the pipe; stops
/// once [`COALESCE_MIN`] bytes are in or a pause brought nothing. Returns
/// the bytes added (end of file and errors are left to the next poll).
fn gather(file: &mut File, buf: &mut [u8]) -> usize {
    let mut got = 0;
    for _ in 0..GATHER_PAUSES {
        if got >= buf.len() || got >= COALESCE_MIN {
            break;
        }
        std::thread::sleep(GATHER_PAUSE);
        match sys::poll_one(file.as_fd(), PollFlags::POLLIN, PollTimeout::ZERO) {
            Ok(r) if r.contains(PollFlags::POLLIN) => {}
            _ => break,
        }
        match file.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(m) => got += m,
        }
    }
    got
}

/// Waits for the process behind `pidfd` to exit, firing the timeout if it
/// comes first (without a timeout, the reaper's wait does the waiting).
fn wait_exit(pidfd: &OwnedFd, ctl: &ExecCtl, timer: &mut Timer) {
    while let Some(left) = timer.left() {
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match sys::poll_one(pidfd.as_fd(), PollFlags::POLLIN, timeout) {
            Ok(r) if !r.is_empty() => return,
            Ok(_) => timer.check(ctl),
            Err(e) => {
                crate::log!("poll on a pidfd: {e}");
                return;
            }
        }
    }
}

/// An exec's timeout.
struct Timer {
    deadline: Option<Instant>,
    fired: bool,
}

impl Timer {
    /// Kills the process group once the deadline passed.
    fn check(&mut self, ctl: &ExecCtl) {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.deadline = None;
            self.fired = true;
            ctl.signal(libc::SIGKILL);
        }
    }

    fn left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// One of a process's output pipes.
struct Output {
    file: File,
    kind: FrameKind,
    open: bool,
}

/// Forwards pipe output until both pipes close, or until the process has
/// exited and the pipes have stayed quiet for [`DRAIN_GRACE`] (a background
/// descendant may hold them open forever); draining stops [`DRAIN_MAX`] after
/// the exit in any case. Reads only within the host's credit; output that
/// cannot be delivered is still read (and dropped), so the process never
/// blocks on a full pipe for a host that left.
fn pump(
    reporter: &mut Reporter,
    ctl: &ExecCtl,
    outputs: &mut [Output],
    pidfd: Option<&OwnedFd>,
    timer: &mut Timer,
) {
    let id = reporter.id;
    let mut exited: Option<(Instant, Instant)> = None; // (exit seen, last data)
    let mut buf = vec![0u8; HEADER_LEN + CHUNK];
    // Long ago: the first output goes out at once.
    let mut last_send = Instant::now() - STREAMING;
    loop {
        timer.check(ctl);
        if outputs.iter().all(|o| !o.open) {
            return;
        }
        let Some(mut allowed) = ctl.wait_credit(timer.deadline) else {
            continue; // the deadline passed while waiting: fire it
        };
        let mut fds = Vec::new();
        let mut which = Vec::new();
        for (i, out) in outputs.iter().enumerate() {
            if out.open {
                fds.push(out.file.as_fd());
                which.push(Some(i));
            }
        }
        if let (Some(p), None) = (pidfd, exited) {
            fds.push(p.as_fd());
            which.push(None);
        }
        let mut wait = match exited {
            Some((at, last)) => {
                let left = DRAIN_GRACE
                    .saturating_sub(last.elapsed())
                    .min(DRAIN_MAX.saturating_sub(at.elapsed()));
                if left.is_zero() {
                    crate::log!("exec {id}: output still open after exit; not waiting for it");
                    return;
                }
                Some(left)
            }
            None => None,
        };
        if let Some(left) = timer.left() {
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
        let timeout = wait.map_or(PollTimeout::NONE, |w| {
            PollTimeout::try_from(w).unwrap_or(PollTimeout::MAX)
        });
        let revents = match sys::poll(&fds, PollFlags::POLLIN, timeout) {
            Ok(r) => r,
            Err(e) => {
                crate::log!("exec {id}: poll: {e}");
                return;
            }
        };
        for (slot, rev) in which.iter().zip(revents) {
            if rev.is_empty() {
                continue;
            }
            let Some(i) = *slot else {
                let now = Instant::now();
                exited = Some((now, now));
                continue;
            };
            let out = &mut outputs[i];
            match out.file.read(&mut buf[HEADER_LEN..HEADER_LEN + allowed]) {
                Ok(0) => out.open = false,
                Ok(mut n) => {
                    // A process that writes in small pieces, while output
                    // streams: gather a bigger frame first (each frame costs
                    // a wakeup, a poll and port writes; under TCG that is
                    // what limits throughput).
                    if n < COALESCE_MIN && last_send.elapsed() < STREAMING {
                        n += gather(
                            &mut out.file,
                            &mut buf[HEADER_LEN + n..HEADER_LEN + allowed],
                        );
                    }
                    if !ctl.discarding()
                        && let Ok(h) = protocol::header(out.kind, id, n)
                    {
                        buf[..HEADER_LEN].copy_from_slice(&h);
                        reporter.send_frame(&buf[..HEADER_LEN + n]);
                        ctl.spend(n);
                    }
                    last_send = Instant::now();
                    if let Some((_, last)) = exited.as_mut() {
                        *last = Instant::now();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    crate::log!("exec {id}: read: {e}");
                    out.open = false;
                }
            }
            allowed = ctl.available();
            if allowed == 0 {
                break;
            }
        }
    }
}
