//! The host end of the guest channel: connect to the VM's agent socket, say
//! `hello`, wait for `ready`, then run commands (streaming their output) or
//! ask for shutdown. Any process may connect, one at a time, so a sandbox
//! created by one process can be used by another.

use std::collections::BTreeMap;
use std::io::{self, BufReader};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use microsandbox_guest::protocol::{self, GuestMessage, HostMessage};

use crate::control::Control;
use crate::error::{MicrosandboxError, MicrosandboxResult};

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status, or 128 + signal number when a signal ended it.
    pub exit_code: i32,
    /// Everything the command wrote to standard output.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to standard error.
    pub stderr: Vec<u8>,
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

/// A live connection to a guest agent.
pub(crate) struct AgentClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl AgentClient {
    /// Connect and handshake, retrying until `timeout` (the socket appears
    /// when QEMU starts; `ready` once the guest's init serves) or until the
    /// call is cancelled.
    pub fn connect(sock: &Path, timeout: Duration, control: &Control) -> MicrosandboxResult<Self> {
        let deadline = Instant::now() + timeout;
        let mut last_error = io::Error::new(io::ErrorKind::TimedOut, "timed out");
        while Instant::now() < deadline {
            control.check()?;
            match Self::try_connect(sock, deadline, control) {
                Ok(client) => return Ok(client),
                Err(e) => last_error = e,
            }
            control.check()?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(MicrosandboxError::Runtime(format!(
            "guest agent at {} did not answer within {timeout:?}: {last_error}",
            sock.display()
        )))
    }

    fn try_connect(sock: &Path, deadline: Instant, control: &Control) -> io::Result<Self> {
        let stream = UnixStream::connect(sock)?;
        let writer = stream.try_clone()?;
        let mut client = Self {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
        };
        // Resend hello until ready: a hello sent while the guest is still
        // booting is never read.
        loop {
            if control.is_cancelled() {
                return Err(io::Error::other("cancelled"));
            }
            client.send(&HostMessage::Hello).map_err(io::Error::other)?;
            // Short waits keep a cancelled boot from waiting long.
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50));
            if wait.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "timed out waiting for ready",
                ));
            }
            client.reader.get_ref().set_read_timeout(Some(wait))?;
            match protocol::read_message::<_, GuestMessage>(&mut client.reader) {
                Ok(Some(GuestMessage::Ready { .. })) => {
                    client.reader.get_ref().set_read_timeout(None)?;
                    return Ok(client);
                }
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "agent closed the connection",
                    ));
                }
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }

    /// Run `argv` and collect its output; `timeout` bounds the whole call.
    pub fn exec(
        &mut self,
        argv: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<String>,
        timeout: Option<Duration>,
    ) -> MicrosandboxResult<ExecOutput> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&HostMessage::Exec { id, argv, env, cwd })?;
        self.reader
            .get_ref()
            .set_read_timeout(timeout)
            .map_err(|e| runtime(format!("agent socket: {e}")))?;
        let mut out = ExecOutput {
            exit_code: -1,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        loop {
            let msg = protocol::read_message::<_, GuestMessage>(&mut self.reader).map_err(|e| {
                if is_timeout(&e) {
                    runtime("command timed out".to_string())
                } else {
                    runtime(format!("guest agent: {e}"))
                }
            })?;
            match msg {
                None => {
                    return Err(runtime(
                        "the guest closed the channel mid-command (did the VM die?)".into(),
                    ));
                }
                Some(GuestMessage::Stdout { id: i, data }) if i == id => out.stdout.extend(data),
                Some(GuestMessage::Stderr { id: i, data }) if i == id => out.stderr.extend(data),
                Some(GuestMessage::Exit { id: i, code }) if i == id => {
                    out.exit_code = code;
                    return Ok(out);
                }
                Some(GuestMessage::Error {
                    id: Some(i),
                    message,
                }) if i == id => {
                    return Err(MicrosandboxError::InvalidConfig(format!(
                        "cannot run the command: {message}"
                    )));
                }
                Some(_) => {}
            }
        }
    }

    /// Ask the guest to sync, unmount and power off.
    pub fn shutdown(&mut self) -> MicrosandboxResult<()> {
        self.send(&HostMessage::Shutdown)
    }

    fn send(&mut self, msg: &HostMessage) -> MicrosandboxResult<()> {
        protocol::write_message(&mut self.writer, msg)
            .map_err(|e| runtime(format!("guest agent: {e}")))
    }
}

fn runtime(message: String) -> MicrosandboxError {
    MicrosandboxError::Runtime(message)
}

fn is_timeout(err: &protocol::ProtocolError) -> bool {
    matches!(err, protocol::ProtocolError::Io(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}
