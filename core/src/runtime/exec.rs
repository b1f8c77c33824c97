//! Streaming exec on the host: a command's output as it comes, its stdin,
//! signals, its timeout and exit; and the buffered form built on it.
//!
//! All execs of this process on one VM share one agent connection
//! ([`Connection`], one per agent socket, kept while an exec uses it): the
//! protocol allows one host connection at a time, and two execs must run at
//! once. A reader thread per connection reads frames and routes them to each
//! exec's queue; it never blocks on a slow consumer. Memory stays bounded by
//! credit instead (`docs/protocol.md`): the guest sends at most
//! [`OUTPUT_WINDOW`] bytes of an exec's output beyond what its [`ExecStream`]
//! consumer has taken, and stops reading the process's pipes meanwhile, so a
//! reader that stops reading stops the process. A guest that overruns the
//! window fails that exec instead of growing the queue.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::Duration;

use microsandbox_guest::protocol::{self, GuestMessage, HostMessage, MAX_FRAME_LEN, STDIN_WINDOW};
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::agent::AgentClient;
use crate::control::{CancellationToken, Control};
use crate::error::{MicrosandboxError, MicrosandboxResult};

/// Output bytes of one exec the guest may send ahead of the consumer.
pub const OUTPUT_WINDOW: u64 = 2 << 20;

/// What a buffered exec keeps of stdout and of stderr each when
/// [`ExecOptions::output_limit`] is `None`: 64 MiB. Far above what a
/// command's output is read for (logs, listings, a file's contents), and low
/// enough that a guest writing without end (`yes`) costs the host at most
/// 128 MiB per buffered exec instead of all its memory. The rest is read
/// and dropped, as with an explicit limit; more needs
/// [`exec_stream`](crate::Sandbox::exec_stream) or a larger explicit limit.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 << 20;

/// Largest stdin frame payload the host sends.
const STDIN_CHUNK: usize = 64 * 1024;

/// How often a waiting [`ExecStream::next`] looks at its cancellation token.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// How long connecting to the agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of one exec; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Environment entries added to (and overriding) the sandbox's own.
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the sandbox's working directory).
    pub cwd: Option<String>,
    /// Kill the command's whole process group after this long; the exit
    /// then says `timed_out`.
    pub timeout: Option<Duration>,
    /// Buffered exec only: keep at most this many bytes of stdout and of
    /// stderr each; the rest is read and dropped and the output says
    /// `stdout_truncated`/`stderr_truncated`. `None`:
    /// [`DEFAULT_OUTPUT_LIMIT`] (64 MiB); `Some(usize::MAX)` keeps everything.
    pub output_limit: Option<usize>,
    /// Cancels the exec when fired (as does a token whose
    /// [`scope`](CancellationToken::scope) the call runs in): the process
    /// group is killed and the call returns `Cancelled`.
    pub cancel: Option<CancellationToken>,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit status, or 128 + signal number when a signal ended it.
    pub code: i32,
    /// The signal that killed the command, if one did.
    pub signal: Option<i32>,
    /// The exec's timeout fired and killed its process group.
    pub timed_out: bool,
}

impl ExitStatus {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.code == 0 && self.signal.is_none()
    }
}

/// One event of a running command, in the order they happened per stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// A chunk of standard output (up to 128 KiB).
    Stdout(Vec<u8>),
    /// A chunk of standard error.
    Stderr(Vec<u8>),
    /// The command ended; the last event.
    Exit(ExitStatus),
}

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    /// Exit status, or 128 + signal number when a signal ended it.
    pub exit_code: i32,
    /// The signal that killed the command, if one did.
    pub signal: Option<i32>,
    /// The timeout fired and killed the command's process group.
    pub timed_out: bool,
    /// What the command wrote to standard output (up to the output limit).
    pub stdout: Vec<u8>,
    /// What the command wrote to standard error (up to the output limit).
    pub stderr: Vec<u8>,
    /// Standard output went past [`ExecOptions::output_limit`] (or
    /// [`DEFAULT_OUTPUT_LIMIT`]).
    pub stdout_truncated: bool,
    /// Standard error went past [`ExecOptions::output_limit`] (or
    /// [`DEFAULT_OUTPUT_LIMIT`]).
    pub stderr_truncated: bool,
}

impl ExecOutput {
    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A running command: its events as they come, its stdin, signals.
///
/// Dropping the stream before the exit SIGKILLs the command's process group
/// in the guest and drops the rest of its output.
pub struct ExecStream {
    id: u64,
    conn: Arc<Connection>,
    rx: UnboundedReceiver<Inbound>,
    buffered: Arc<AtomicUsize>,
    stdin: Option<ExecStdin>,
    control: Control,
    /// Output bytes consumed but not yet granted back to the guest.
    ungranted: u64,
    done: bool,
}

/// The write end of a command's standard input. Closing it (or dropping it)
/// gives the command end of file.
pub struct ExecStdin {
    id: u64,
    conn: Arc<Connection>,
    credit: Arc<StdinCredit>,
    closed: bool,
}

impl std::fmt::Debug for ExecStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecStream")
            .field("id", &self.id)
            .field("done", &self.done)
            .finish()
    }
}

impl std::fmt::Debug for ExecStdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecStdin").field("id", &self.id).finish()
    }
}

impl ExecStream {
    /// The next event; `Ok(None)` after [`ExecEvent::Exit`]. Fails with
    /// `Cancelled` when the exec's token fires (the command is killed), and
    /// with `Runtime` when the VM goes away mid-command.
    pub async fn next(&mut self) -> MicrosandboxResult<Option<ExecEvent>> {
        if self.done {
            return Ok(None);
        }
        loop {
            tokio::select! {
                msg = self.rx.recv() => return self.on_inbound(msg),
                () = tokio::time::sleep(CANCEL_POLL) => {
                    if self.control.is_cancelled() {
                        self.abandon();
                        return Err(MicrosandboxError::Cancelled);
                    }
                }
            }
        }
    }

    /// The command's stdin writer (once; `None` afterwards or for a
    /// buffered exec, whose stdin is `/dev/null`).
    pub fn take_stdin(&mut self) -> Option<ExecStdin> {
        self.stdin.take()
    }

    /// Send signal number `signal` (e.g. `libc::SIGINT`) to the command's
    /// process group, as a terminal's Ctrl-C does. A no-op once it exited.
    pub fn signal(&self, signal: i32) -> MicrosandboxResult<()> {
        if self.done {
            return Ok(());
        }
        self.conn.send(&HostMessage::Signal {
            id: self.id,
            signal,
        })
    }

    /// Output bytes received from the guest and not yet taken with
    /// [`next`](Self::next) (at most [`OUTPUT_WINDOW`] plus one frame).
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
    }

    fn on_inbound(&mut self, msg: Option<Inbound>) -> MicrosandboxResult<Option<ExecEvent>> {
        match msg {
            Some(Inbound::Stdout(data)) => {
                self.consumed(data.len());
                Ok(Some(ExecEvent::Stdout(data)))
            }
            Some(Inbound::Stderr(data)) => {
                self.consumed(data.len());
                Ok(Some(ExecEvent::Stderr(data)))
            }
            Some(Inbound::Exit(status)) => {
                self.done = true;
                Ok(Some(ExecEvent::Exit(status)))
            }
            Some(Inbound::Failed(e)) => {
                self.done = true;
                Err(e)
            }
            None => {
                self.done = true;
                Err(lost())
            }
        }
    }

    fn consumed(&mut self, n: usize) {
        self.buffered.fetch_sub(n, Ordering::AcqRel);
        self.ungranted += n as u64;
        if self.ungranted >= OUTPUT_WINDOW / 4 {
            let bytes = std::mem::take(&mut self.ungranted);
            // A failed write shows up as the connection's loss on the next event.
            let _ = self.conn.send(&HostMessage::Credit { id: self.id, bytes });
        }
    }

    /// Kill the command and forget it.
    fn abandon(&mut self) {
        if !self.done {
            self.done = true;
            self.conn.forget(self.id);
            let _ = self.conn.send(&HostMessage::Kill { id: self.id });
        }
    }
}

impl Drop for ExecStream {
    fn drop(&mut self) {
        self.abandon();
    }
}

impl ExecStdin {
    /// Write all of `data` to the command's stdin, waiting while the guest
    /// is [`STDIN_WINDOW`] bytes behind. Fails (kind `Io`, broken pipe) once
    /// the command has exited.
    pub async fn write(&mut self, data: &[u8]) -> MicrosandboxResult<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let take = self.credit.take(rest.len().min(STDIN_CHUNK)).await?;
            self.conn.send(&HostMessage::Stdin {
                id: self.id,
                data: rest[..take].to_vec(),
            })?;
            rest = &rest[take..];
        }
        Ok(())
    }

    /// Close stdin: the command reads end of file.
    pub fn close(mut self) -> MicrosandboxResult<()> {
        self.closed = true;
        self.conn.send(&HostMessage::StdinClose { id: self.id })
    }
}

impl Drop for ExecStdin {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.conn.send(&HostMessage::StdinClose { id: self.id });
        }
    }
}

/// Collect a stream into an [`ExecOutput`], keeping at most `limit` bytes
/// of each output ([`DEFAULT_OUTPUT_LIMIT`] when `None`).
pub(crate) async fn collect(
    mut stream: ExecStream,
    limit: Option<usize>,
) -> MicrosandboxResult<ExecOutput> {
    let limit = limit.unwrap_or(DEFAULT_OUTPUT_LIMIT);
    let mut out = ExecOutput::default();
    let keep = |buf: &mut Vec<u8>, truncated: &mut bool, data: Vec<u8>| {
        let room = limit.saturating_sub(buf.len());
        if data.len() > room {
            *truncated = true;
        }
        buf.extend_from_slice(&data[..data.len().min(room)]);
    };
    while let Some(event) = stream.next().await? {
        match event {
            ExecEvent::Stdout(d) => keep(&mut out.stdout, &mut out.stdout_truncated, d),
            ExecEvent::Stderr(d) => keep(&mut out.stderr, &mut out.stderr_truncated, d),
            ExecEvent::Exit(status) => {
                out.exit_code = status.code;
                out.signal = status.signal;
                out.timed_out = status.timed_out;
            }
        }
    }
    Ok(out)
}

/// What to run (the sandbox's defaults already applied).
pub(crate) struct ExecSpec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// Stdin is a pipe the caller writes (else `/dev/null`).
    pub stdin: bool,
    pub timeout: Option<Duration>,
}

/// Start `spec` on the VM whose agent listens on `sock` (blocking: may
/// connect and handshake first).
pub(crate) fn start(
    sock: &Path,
    spec: ExecSpec,
    control: Control,
) -> MicrosandboxResult<ExecStream> {
    control.check()?;
    let conn = Connection::get(sock, &control)?;
    let (tx, rx) = unbounded_channel();
    let buffered = Arc::new(AtomicUsize::new(0));
    let credit = Arc::new(StdinCredit {
        state: Mutex::new(StdinState {
            available: STDIN_WINDOW,
            closed: false,
        }),
        notify: Notify::new(),
    });
    let id = conn.register(Route {
        tx,
        buffered: Arc::clone(&buffered),
        stdin: Arc::clone(&credit),
    })?;
    let timeout_ms = spec
        .timeout
        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    let sent = conn.send(&HostMessage::Exec {
        id,
        argv: spec.argv,
        env: spec.env,
        cwd: spec.cwd,
        stdin: spec.stdin,
        timeout_ms,
        window: Some(OUTPUT_WINDOW),
    });
    if let Err(e) = sent {
        conn.forget(id);
        return Err(e);
    }
    let stdin = spec.stdin.then(|| ExecStdin {
        id,
        conn: Arc::clone(&conn),
        credit,
        closed: false,
    });
    Ok(ExecStream {
        id,
        conn,
        rx,
        buffered,
        stdin,
        control,
        ungranted: 0,
        done: false,
    })
}

/// What the reader thread hands an exec.
enum Inbound {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitStatus),
    Failed(MicrosandboxError),
}

/// Stdin bytes the host may still send, granted back by the guest.
struct StdinCredit {
    state: Mutex<StdinState>,
    notify: Notify,
}

struct StdinState {
    available: u64,
    /// The command exited (or the channel is gone): writes fail.
    closed: bool,
}

impl StdinCredit {
    fn lock(&self) -> MutexGuard<'_, StdinState> {
        // A poisoned lock only means another thread panicked; the counter is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for credit; takes up to `want` bytes of it.
    async fn take(&self, want: usize) -> MicrosandboxResult<usize> {
        loop {
            let notified = self.notify.notified();
            {
                let mut st = self.lock();
                if st.closed {
                    return Err(MicrosandboxError::Io {
                        path: PathBuf::from("<stdin>"),
                        source: io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "the command has exited; its stdin is closed",
                        ),
                    });
                }
                if st.available > 0 {
                    let n = want.min(usize::try_from(st.available).unwrap_or(want));
                    st.available -= n as u64;
                    return Ok(n);
                }
            }
            notified.await;
        }
    }

    fn grant(&self, bytes: u64) {
        let mut st = self.lock();
        st.available = st.available.saturating_add(bytes).min(STDIN_WINDOW);
        drop(st);
        self.notify.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }
}

/// One exec's place in its connection.
struct Route {
    tx: UnboundedSender<Inbound>,
    buffered: Arc<AtomicUsize>,
    stdin: Arc<StdinCredit>,
}

#[derive(Default)]
struct Routes {
    next_id: u64,
    map: HashMap<u64, Route>,
    /// Why the connection is gone, once it is.
    lost: Option<String>,
}

/// One agent connection shared by this process's execs on one VM.
pub(crate) struct Connection {
    writer: Mutex<UnixStream>,
    routes: Arc<Mutex<Routes>>,
}

/// Live connections by agent socket.
/// One slot per agent socket. The map's lock is held only to find a
/// slot; connecting (which may wait for a booting guest) holds only that
/// socket's slot, so execs on other VMs never wait for it.
static CONNECTIONS: LazyLock<Mutex<HashMap<PathBuf, Arc<ConnectionSlot>>>> =
    LazyLock::new(Mutex::default);

/// The connection to one agent socket, while some exec uses it.
type ConnectionSlot = Mutex<Weak<Connection>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked; the data is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn lost() -> MicrosandboxError {
    MicrosandboxError::Runtime("the guest closed the channel mid-command (did the VM die?)".into())
}

impl Connection {
    /// The live connection to `sock`, or a new one.
    fn get(sock: &Path, control: &Control) -> MicrosandboxResult<Arc<Self>> {
        let slot = {
            let mut all = lock(&CONNECTIONS);
            all.retain(|path, slot| {
                path == sock || Arc::strong_count(slot) > 1 || lock(slot).strong_count() > 0
            });
            Arc::clone(all.entry(sock.to_path_buf()).or_default())
        };
        let mut current = lock(&slot);
        if let Some(conn) = current.upgrade()
            && lock(&conn.routes).lost.is_none()
        {
            return Ok(conn);
        }
        let client = AgentClient::connect(sock, CONNECT_TIMEOUT, control)?;
        let (reader, writer) = client.into_parts();
        writer
            .set_write_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| MicrosandboxError::Runtime(format!("agent socket: {e}")))?;
        let routes = Arc::new(Mutex::new(Routes {
            next_id: 1,
            ..Routes::default()
        }));
        let conn = Arc::new(Self {
            writer: Mutex::new(writer),
            routes: Arc::clone(&routes),
        });
        std::thread::Builder::new()
            .name("msb-agent-reader".into())
            .spawn(move || read_loop(reader, &routes))
            .map_err(|e| MicrosandboxError::Runtime(format!("agent reader thread: {e}")))?;
        *current = Arc::downgrade(&conn);
        Ok(conn)
    }

    fn register(&self, route: Route) -> MicrosandboxResult<u64> {
        let mut routes = lock(&self.routes);
        if routes.lost.is_some() {
            return Err(lost());
        }
        let id = routes.next_id;
        routes.next_id += 1;
        routes.map.insert(id, route);
        Ok(id)
    }

    fn forget(&self, id: u64) {
        lock(&self.routes).map.remove(&id);
    }

    fn send(&self, msg: &HostMessage) -> MicrosandboxResult<()> {
        let mut w = lock(&self.writer);
        protocol::write_message(&mut *w, msg)
            .map_err(|e| MicrosandboxError::Runtime(format!("guest agent: {e}")))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Ends the reader thread (it reads end of file) and the session.
        let _ = lock(&self.writer).shutdown(std::net::Shutdown::Both);
    }
}

/// Routes the guest's frames to their execs until the connection ends.
fn read_loop(mut reader: BufReader<UnixStream>, routes: &Mutex<Routes>) {
    let why = loop {
        let msg = match protocol::read_message::<_, GuestMessage>(&mut reader) {
            Ok(Some(msg)) => msg,
            Ok(None) => break "the agent closed the connection".to_string(),
            // A hostile or broken guest (bad length or kind) ends the
            // connection: nothing of it is trusted any more.
            Err(e) => break format!("guest agent: {e}"),
        };
        let mut r = lock(routes);
        match msg {
            GuestMessage::Stdout { id, data } | GuestMessage::Stderr { id, data }
                if !r.map.contains_key(&id) =>
            {
                let _ = data;
            }
            GuestMessage::Stdout { id, data } => deliver(&mut r, id, data, Inbound::Stdout),
            GuestMessage::Stderr { id, data } => deliver(&mut r, id, data, Inbound::Stderr),
            GuestMessage::Credit { id, bytes } => {
                if let Some(route) = r.map.get(&id) {
                    route.stdin.grant(bytes);
                }
            }
            GuestMessage::Exit {
                id,
                code,
                signal,
                timed_out,
            } => {
                if let Some(route) = r.map.remove(&id) {
                    route.stdin.close();
                    let _ = route.tx.send(Inbound::Exit(ExitStatus {
                        code,
                        signal,
                        timed_out,
                    }));
                }
            }
            GuestMessage::Error {
                id: Some(id),
                message,
            } => {
                if let Some(route) = r.map.remove(&id) {
                    route.stdin.close();
                    let _ = route
                        .tx
                        .send(Inbound::Failed(MicrosandboxError::InvalidConfig(format!(
                            "cannot run the command: {message}"
                        ))));
                }
            }
            GuestMessage::Error { id: None, message } => {
                log::warn!("guest agent rejected a request: {message}");
            }
            GuestMessage::Ready { .. } | GuestMessage::Configured { .. } => {}
        }
    };
    let mut r = lock(routes);
    r.lost = Some(why);
    for (_, route) in r.map.drain() {
        route.stdin.close();
        let _ = route.tx.send(Inbound::Failed(lost()));
    }
}

/// Queues a data frame for its exec, unless the guest overran its window.
fn deliver(r: &mut Routes, id: u64, data: Vec<u8>, wrap: fn(Vec<u8>) -> Inbound) {
    let Some(route) = r.map.get(&id) else { return };
    let n = data.len();
    let now = route.buffered.fetch_add(n, Ordering::AcqRel) + n;
    if now as u64 > OUTPUT_WINDOW + MAX_FRAME_LEN as u64 {
        if let Some(route) = r.map.remove(&id) {
            route.stdin.close();
            let _ = route.tx.send(Inbound::Failed(MicrosandboxError::Runtime(format!(
                "the guest sent more than {OUTPUT_WINDOW} bytes of exec {id}'s output ahead of the reader"
            ))));
        }
        return;
    }
    let _ = route.tx.send(wrap(data));
}
