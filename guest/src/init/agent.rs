//! The guest end of the agent channel: finds the virtio-serial port named
//! [`AGENT_PORT_NAME`], announces `ready`, and serves requests until
//! `shutdown`, across any number of host connections. The reader here
//! decodes host frames and hands exec requests, stdin, credit and signals to
//! [`super::exec`], where each exec runs on its own thread, streams the
//! process's stdout/stderr as data frames and ends with its `exit` (or
//! `error`). [`Link`] is the port's write side, shared by all of them.
//!
//! # The port while hosts come and go
//!
//! QEMU listens on the host socket; host processes connect and disconnect
//! over the VM's life. What Linux 6.1's `virtio_console` does (measured under
//! QEMU 7.2 with `/work/spike/probe/vport-probe.c`):
//!
//! - No host connected: `read` returns 0 at once (after any data the last
//!   host sent); `write` blocks until a host connects and then goes to that
//!   host (`EAGAIN` with `O_NONBLOCK`); `poll` returns at once with
//!   `POLLIN | POLLHUP` and never `POLLOUT`, so it cannot wait for a host.
//! - Host connected: `read` waits for data; `poll` wakes on data and on the
//!   disconnect. The driver raises `SIGIO` on an `O_ASYNC` descriptor when a
//!   host connects, sends data, or disconnects.
//! - QEMU discards whatever the guest wrote that a leaving host had not taken;
//!   a new host never receives bytes written for the previous one.
//!
//! Hence: the port is opened once (the driver allows one opener), with
//! `O_NONBLOCK`. The reader (the thread in [`serve`]) waits for input with
//! `poll` while a host is connected, and in `sigtimedwait(SIGIO)` while none
//! is (with short sleeps as a fallback). Writers never block while no host is
//! connected: on `EAGAIN` they poll for `POLLOUT`, and a `POLLHUP` that lasts
//! longer than [`HUP_GRACE`] means the host left, so the frame is dropped.
//! A connected host that does not read holds writers back (back-pressure on
//! the processes), but never the reader: `shutdown` and `hello` still work.
//! Every frame fits one `write` (at most [`PORT_WRITE_MAX`] bytes, the
//! driver's per-write limit, all or nothing), so no frame is ever split
//! between two hosts.
//!
//! Sessions: output goes only to the session that asked for it. A session
//! starts at boot, at every `hello`, and when data arrives after the host was
//! seen to leave; once it ends, its processes keep running but their output
//! and exit are dropped (logged once per exec), also a frame already waiting
//! for a host that does not read.

#[cfg(test)]
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use microsandbox_guest::protocol::{
    self, AGENT_PORT_NAME, GuestMessage, HEADER_LEN, HostMessage, PROTOCOL_VERSION, ProtocolError,
};

use nix::fcntl::OFlag;
use nix::poll::{PollFlags, PollTimeout};

use super::exec::{ExecRequest, Execs};
use super::reaper::Reaper;
use super::sys;

/// The most `virtio_console` takes in one `write`: a data frame of
/// [`CHUNK`](super::exec::CHUNK) bytes goes out in several writes.
const PORT_WRITE_MAX: usize = 32 * 1024;
/// How long a write waits on `POLLHUP` before it decides no host is there
/// (data of a connecting host may be readable a moment before the driver
/// has processed the connection).
const HUP_GRACE: Duration = Duration::from_millis(50);
/// While no host is connected: the longest wait for `SIGIO` before the
/// reader looks again (a safety net; `SIGIO` normally wakes it at once).
const IDLE_WAIT_SIGIO: Duration = Duration::from_secs(1);
/// While no host is connected and `SIGIO` is unavailable: the polling period.
const IDLE_WAIT_POLL: Duration = Duration::from_millis(20);
/// Read size on the port.
const READ_BUF: usize = 64 * 1024;

/// Waits for the port named [`AGENT_PORT_NAME`] to appear; returns its `/dev` path.
///
/// The name arrives from the host after the port itself, so it is polled.
pub fn find_port(timeout: Duration) -> io::Result<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(entries) = fs::read_dir("/sys/class/virtio-ports") {
            for entry in entries.flatten() {
                let name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                if name.trim() == AGENT_PORT_NAME {
                    let dev = Path::new("/dev").join(entry.file_name());
                    if dev.exists() {
                        return Ok(dev);
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no virtio-serial port named {AGENT_PORT_NAME} after {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Which host conversation a message belongs to.
pub type Session = u64;

struct LinkState {
    session: Session,
    /// False once the host was seen to leave, until data arrives again.
    connected: bool,
}

/// How a wait for the port to take data ended.
enum Wait {
    Writable,
    /// No host is connected.
    HostGone,
    /// The frame's session ended before any of it was written.
    Superseded,
}

/// The port and the host connection state, shared by the reader and every
/// thread that reports to the host.
///
/// Two locks: `state` is only held for a moment, so the reader always gets
/// it (a `shutdown` is never stuck behind a write); `write` is held while
/// a frame is written, so frames never interleave, and may be held for long
/// while a connected host does not read.
pub struct Link {
    port: File,
    state: Mutex<LinkState>,
    write: Mutex<()>,
}

impl Link {
    fn new(port: File) -> Self {
        Self {
            port,
            // Unknown at boot: assume a host until a write or read says otherwise.
            state: Mutex::new(LinkState {
                session: 0,
                connected: true,
            }),
            write: Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // A poisoned lock only means another thread panicked; the state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn session(&self) -> Session {
        self.lock().session
    }

    /// `hello`: a new session; earlier execs no longer report.
    fn new_session(&self) -> Session {
        let mut st = self.lock();
        st.session += 1;
        st.connected = true;
        st.session
    }

    /// Data arrived: if the host had been seen to leave, this is a new one
    /// (returns true then).
    fn host_active(&self) -> bool {
        let mut st = self.lock();
        if !st.connected {
            st.session += 1;
            st.connected = true;
            crate::log!("host connected (session {})", st.session);
            return true;
        }
        false
    }

    /// The port reads EOF: no host is connected.
    fn host_left(&self) {
        let mut st = self.lock();
        if st.connected {
            st.connected = false;
            crate::log!(
                "host disconnected (session {}); waiting for a host",
                st.session
            );
        }
    }

    /// A write found no host: drop output until a host shows up again.
    fn host_gone(&self, session: Session) {
        let mut st = self.lock();
        if st.session == session && st.connected {
            st.connected = false;
            crate::log!("host gone (session {session}); dropping output until a host connects");
        }
    }

    /// The current session, if its host is (as far as we know) connected.
    fn live_session(&self) -> Option<Session> {
        let st = self.lock();
        st.connected.then_some(st.session)
    }

    /// Sends `msg` to the current host. Returns whether it was delivered.
    pub fn send_now(&self, msg: &GuestMessage) -> bool {
        match protocol::encode(msg) {
            Ok(frame) => self.send_frame(None, &frame),
            Err(e) => {
                crate::log!("cannot encode a message: {e}");
                false
            }
        }
    }

    /// Sends a whole encoded frame to the current host, if `session` (when
    /// given) is still the current one and its host is connected. Returns
    /// whether it was delivered.
    pub fn send_frame(&self, session: Option<Session>, frame: &[u8]) -> bool {
        let _writing = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let Some(target) = self.live_session() else {
            return false;
        };
        if session.is_some_and(|s| s != target) {
            return false;
        }
        let mut written = 0;
        while written < frame.len() {
            let end = frame.len().min(written + PORT_WRITE_MAX);
            match (&self.port).write(&frame[written..end]) {
                Ok(0) => {}
                Ok(n) => {
                    written += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    crate::log!("write to host: {e}");
                    self.host_gone(target);
                    return false;
                }
            }
            // Until the first byte is out, the frame may be dropped when its
            // session ends; after that it must be finished (same host).
            match self.wait_writable(target, written == 0) {
                Wait::Writable => {}
                Wait::Superseded => return false,
                Wait::HostGone => {
                    self.host_gone(target);
                    return false;
                }
            }
        }
        true
    }

    /// Waits until the port takes data again, no host is connected, or (with
    /// `may_drop`) the session `target` is over. A connected host that does
    /// not read is waited for: back-pressure on the processes.
    fn wait_writable(&self, target: Session, may_drop: bool) -> Wait {
        let fd = self.port.as_fd();
        let mut hup_since: Option<Instant> = None;
        let started = Instant::now();
        let mut slow_logged = false;
        loop {
            if may_drop && self.live_session() != Some(target) {
                return Wait::Superseded;
            }
            let timeout = if hup_since.is_some() {
                PollTimeout::ZERO
            } else {
                PollTimeout::from(100u16)
            };
            let revents = match sys::poll_one(fd, PollFlags::POLLOUT, timeout) {
                Ok(r) => r,
                Err(e) => {
                    crate::log!("poll on the agent port: {e}");
                    return Wait::HostGone;
                }
            };
            if revents.contains(PollFlags::POLLOUT) {
                return Wait::Writable;
            }
            if revents.contains(PollFlags::POLLHUP) {
                let since = *hup_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= HUP_GRACE {
                    return Wait::HostGone;
                }
                // poll returns at once while no host is connected.
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            hup_since = None;
            if revents.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) {
                return Wait::HostGone;
            }
            if !slow_logged && started.elapsed() >= Duration::from_secs(1) {
                crate::log!("host is not reading; output waits");
                slow_logged = true;
            }
        }
    }
}

/// Reassembles host frames from the bytes the port delivers.
#[derive(Default)]
struct FrameBuf {
    buf: Vec<u8>,
    /// Body bytes of a rejected (bad length) frame still to discard.
    skip: usize,
}

impl FrameBuf {
    fn push(&mut self, data: &[u8]) {
        let skipped = self.skip.min(data.len());
        self.skip -= skipped;
        self.buf.extend_from_slice(&data[skipped..]);
    }

    /// The next whole frame: a message, or why it was rejected.
    fn next_frame(&mut self) -> Option<Result<HostMessage, String>> {
        let header: [u8; HEADER_LEN] = self.buf.get(..HEADER_LEN)?.try_into().ok()?;
        let len = match protocol::parse_header(&header) {
            Ok(h) => h.len,
            Err(e) => {
                let len = match e {
                    ProtocolError::BadLength { len } | ProtocolError::BadKind { len, .. } => len,
                    _ => 0,
                };
                self.buf.drain(..HEADER_LEN);
                let have = len.min(self.buf.len());
                self.buf.drain(..have);
                self.skip = len - have;
                return Some(Err(format!("frame rejected: {e}")));
            }
        };
        let end = HEADER_LEN + len;
        if self.buf.len() < end {
            return None;
        }
        let result = protocol::decode_exact::<HostMessage>(&self.buf[..end]).map_err(|e| match e {
            ProtocolError::Json(e) => format!("undecodable request: {e}"),
            other => format!("undecodable request: {other}"),
        });
        // Keep a large allocation from lingering after a big stdin frame.
        self.buf.drain(..end);
        if self.buf.is_empty() && self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        Some(result)
    }

    /// Forgets a partial frame (its sender left); returns the bytes dropped.
    fn reset(&mut self) -> usize {
        let dropped = self.buf.len() + self.skip;
        self.buf.clear();
        self.skip = 0;
        dropped
    }
}

/// Serves the protocol on `port` until a host asks for `shutdown`.
pub fn serve(port: &Path, reaper: &Arc<Reaper>) -> io::Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(port)?;
    let sigio = match sys::sigio_to_this_thread(file.as_fd()) {
        Ok(()) => true,
        Err(e) => {
            crate::log!("no SIGIO on the agent port ({e}); polling for hosts");
            false
        }
    };
    let link = Arc::new(Link::new(file));
    let execs = Arc::new(Execs::default());
    let ready = GuestMessage::Ready {
        version: PROTOCOL_VERSION,
    };
    if link.send_now(&ready) {
        crate::log!("ready on {}", port.display());
    } else {
        crate::log!(
            "ready on {} (no host connected: boot ready dropped)",
            port.display()
        );
    }

    let mut frames = FrameBuf::default();
    let mut buf = vec![0u8; READ_BUF];
    let mut read_error_logged = false;
    loop {
        while let Some(frame) = frames.next_frame() {
            match frame {
                Ok(HostMessage::Hello) => {
                    let session = link.new_session();
                    execs.end_session();
                    let sent = link.send_now(&ready);
                    crate::log!(
                        "hello: session {session}{}",
                        if sent { "" } else { " (ready not delivered)" }
                    );
                }
                Ok(HostMessage::Exec {
                    id,
                    argv,
                    env,
                    cwd,
                    stdin,
                    timeout_ms,
                    window,
                }) => {
                    let req = ExecRequest {
                        id,
                        argv,
                        env,
                        cwd,
                        stdin,
                        timeout: timeout_ms.map(Duration::from_millis),
                        window,
                    };
                    execs.start(&link, link.session(), reaper, req);
                }
                Ok(HostMessage::Stdin { id, data }) => execs.stdin(id, data),
                Ok(HostMessage::StdinClose { id }) => execs.stdin_close(id),
                Ok(HostMessage::Credit { id, bytes }) => execs.credit(id, bytes),
                Ok(HostMessage::Signal { id, signal }) => execs.signal(id, signal),
                Ok(HostMessage::Kill { id }) => execs.kill(id),
                Ok(HostMessage::Configure {
                    hostname,
                    unix_time_ns,
                    seed,
                    cpus_online,
                }) => {
                    let warnings = configure(&hostname, unix_time_ns, &seed, cpus_online);
                    for w in &warnings {
                        crate::log!("configure: {w}");
                    }
                    link.send_now(&GuestMessage::Configured { warnings });
                }
                Ok(HostMessage::Shutdown) => {
                    crate::log!("shutdown requested");
                    return Ok(());
                }
                Err(message) => {
                    crate::log!("{message}");
                    link.send_now(&GuestMessage::Error { id: None, message });
                }
            }
        }
        match (&link.port).read(&mut buf) {
            Ok(0) => {
                // No host connected (and nothing left from the last one).
                link.host_left();
                execs.end_session();
                let dropped = frames.reset();
                if dropped > 0 {
                    crate::log!(
                        "dropped {dropped} bytes of a partial frame from the host that left"
                    );
                }
                if sigio {
                    if let Err(e) = sys::wait_sigio(IDLE_WAIT_SIGIO) {
                        crate::log!("sigtimedwait: {e}");
                        std::thread::sleep(IDLE_WAIT_POLL);
                    }
                } else {
                    std::thread::sleep(IDLE_WAIT_POLL);
                }
            }
            Ok(n) => {
                if link.host_active() {
                    execs.end_session();
                }
                frames.push(&buf[..n]);
                read_error_logged = false;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // A host is connected and quiet: wait for data or its disconnect.
                if let Err(e) =
                    sys::poll_one(link.port.as_fd(), PollFlags::POLLIN, PollTimeout::NONE)
                {
                    crate::log!("poll on the agent port: {e}");
                    std::thread::sleep(IDLE_WAIT_POLL);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if !read_error_logged {
                    crate::log!("agent port read: {e}");
                    read_error_logged = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Applies a `configure` request: hostname, wall clock, entropy, online
/// CPUs. Returns what failed; the rest is applied regardless.
fn configure(
    hostname: &str,
    unix_time_ns: u64,
    seed: &str,
    cpus_online: Option<u32>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Err(e) = nix::unistd::sethostname(hostname) {
        warnings.push(format!("sethostname {hostname:?}: {e}"));
    }
    let now = nix::sys::time::TimeSpec::new(
        (unix_time_ns / 1_000_000_000) as libc::time_t,
        (unix_time_ns % 1_000_000_000) as libc::c_long,
    );
    if let Err(e) = nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, now) {
        warnings.push(format!("clock_settime: {e}"));
    }
    match decode_hex(seed) {
        Some(bytes) if !bytes.is_empty() => {
            if let Err(e) = sys::add_entropy_and_reseed(&bytes) {
                warnings.push(format!("reseeding the RNG: {e}"));
            }
        }
        _ => warnings.push("seed is not hex".into()),
    }
    if let Some(keep) = cpus_online {
        // cpu0 cannot go offline; the others can (CONFIG_HOTPLUG_CPU).
        for cpu in 1..256u32 {
            let online = PathBuf::from(format!("/sys/devices/system/cpu/cpu{cpu}/online"));
            if !online.exists() {
                break;
            }
            let want = if cpu < keep { "1" } else { "0" };
            if let Err(e) = fs::write(&online, want) {
                warnings.push(format!("{}: {e}", online.display()));
            }
        }
    }
    warnings
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsandbox_guest::protocol::MAX_FRAME_LEN;

    fn frame(msg: &HostMessage) -> Vec<u8> {
        protocol::encode(msg).unwrap()
    }

    fn raw_header(kind: u8, len: usize) -> Vec<u8> {
        let mut h = vec![kind];
        h.extend_from_slice(&0u64.to_le_bytes());
        h.extend_from_slice(&(len as u32).to_le_bytes());
        h
    }

    #[test]
    fn frames_reassemble_from_single_bytes() {
        let exec = HostMessage::Exec {
            id: 1,
            argv: vec!["true".into()],
            env: BTreeMap::new(),
            cwd: None,
            stdin: true,
            timeout_ms: None,
            window: Some(4096),
        };
        let mut stream = frame(&HostMessage::Hello);
        stream.extend(frame(&exec));
        stream.extend(frame(&HostMessage::Shutdown));
        let mut fb = FrameBuf::default();
        let mut got = Vec::new();
        for b in &stream {
            fb.push(std::slice::from_ref(b));
            while let Some(m) = fb.next_frame() {
                got.push(m.unwrap());
            }
        }
        assert_eq!(got, vec![HostMessage::Hello, exec, HostMessage::Shutdown]);
        // Stdin data frames carry their bytes as they are.
        let stdin = HostMessage::Stdin {
            id: 1,
            data: (0..=255).collect(),
        };
        fb.push(&frame(&stdin));
        assert_eq!(fb.next_frame().unwrap().unwrap(), stdin);
        assert_eq!(fb.reset(), 0);
    }

    #[test]
    fn bad_frames_are_reported_and_skipped() {
        let mut fb = FrameBuf::default();
        // Bad length: the announced body is skipped, even across pushes.
        let mut stream = raw_header(0, MAX_FRAME_LEN + 3);
        stream.extend(vec![b'x'; 10]);
        fb.push(&stream);
        assert!(fb.next_frame().unwrap().unwrap_err().contains("rejected"));
        assert!(fb.next_frame().is_none());
        fb.push(&vec![b'y'; MAX_FRAME_LEN - 7]);
        // Unknown kind, then a good frame.
        fb.push(&raw_header(7, 3));
        fb.push(b"abc");
        assert!(fb.next_frame().unwrap().unwrap_err().contains("kind"));
        fb.push(&frame(&HostMessage::Hello));
        assert_eq!(fb.next_frame().unwrap().unwrap(), HostMessage::Hello);
        // Zero length.
        fb.push(&raw_header(0, 0));
        assert!(fb.next_frame().unwrap().is_err());
        // Undecodable body, then a good frame.
        let body = b"{\"type\":\"launch\"}";
        let mut bad = raw_header(0, body.len());
        bad.extend_from_slice(body);
        fb.push(&bad);
        fb.push(&frame(&HostMessage::Shutdown));
        assert!(
            fb.next_frame()
                .unwrap()
                .unwrap_err()
                .starts_with("undecodable request")
        );
        assert_eq!(fb.next_frame().unwrap().unwrap(), HostMessage::Shutdown);
        assert!(fb.next_frame().is_none());
    }

    #[test]
    fn a_partial_frame_is_forgotten_on_reset() {
        let mut fb = FrameBuf::default();
        let hello = frame(&HostMessage::Hello);
        fb.push(&hello[..7]);
        assert!(fb.next_frame().is_none());
        assert_eq!(fb.reset(), 7);
        fb.push(&hello);
        assert_eq!(fb.next_frame().unwrap().unwrap(), HostMessage::Hello);
        // A pending skip is forgotten too.
        fb.push(&raw_header(1, u32::MAX as usize));
        assert!(fb.next_frame().unwrap().is_err());
        assert_eq!(fb.reset(), u32::MAX as usize);
        fb.push(&hello);
        assert_eq!(fb.next_frame().unwrap().unwrap(), HostMessage::Hello);
    }
}
