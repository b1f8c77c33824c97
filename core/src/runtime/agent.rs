//! The host end of the guest channel: connect to the VM's agent socket, say
//! `hello`, wait for `ready`, then hand the connection to [`super::exec`]
//! (commands) or ask for shutdown. Any process may connect, one at a time,
//! so a sandbox created by one process can be used by another.

use std::io::{self, BufReader};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use microsandbox_guest::protocol::{self, GuestMessage, HostMessage, PROTOCOL_VERSION};

use crate::control::Control;
use crate::error::{MicrosandboxError, MicrosandboxResult};

/// The fix for a guest of another protocol version (or a corrupt channel).
const REBUILD: &str = "if the guest init is from another microsandbox version, \
     reinstall the guest assets (scripts/setup-runtime.sh DIR)";

/// A live connection to a guest agent.
pub(crate) struct AgentClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl AgentClient {
    /// Connect and handshake, retrying until `timeout` (the socket appears
    /// when QEMU starts; `ready` once the guest's init serves) or until the
    /// call is cancelled. `timeout` is what an idle host needs; it stretches
    /// with the host's [`cpu_contention`](super::host::cpu_contention),
    /// read again while waiting, so a guest slowed by many others booting
    /// beside it is not given up on as hung.
    pub fn connect(sock: &Path, timeout: Duration, control: &Control) -> MicrosandboxResult<Self> {
        let started = Instant::now();
        let stretched = || started + timeout.mul_f64(super::host::cpu_contention());
        let mut last_error = io::Error::new(io::ErrorKind::TimedOut, "timed out");
        loop {
            let deadline = stretched();
            if Instant::now() >= deadline {
                break;
            }
            control.check()?;
            match Self::try_connect(sock, deadline, control) {
                Ok(client) => return Ok(client),
                Err(e) => last_error = e,
            }
            control.check()?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(MicrosandboxError::Runtime(format!(
            "guest agent at {} did not answer within {:?} ({timeout:?} on an idle host): {last_error}",
            sock.display(),
            started.elapsed()
        )))
    }

    fn try_connect(sock: &Path, deadline: Instant, control: &Control) -> io::Result<Self> {
        let stream = UnixStream::connect(sock)?;
        let writer = stream.try_clone()?;
        let mut client = Self {
            reader: BufReader::new(stream),
            writer,
        };
        // Resend hello until ready: a hello sent while the guest is still
        // booting is never read. Short waits first: a running guest (a fork
        // just restored) answers within milliseconds.
        let mut patience = Duration::from_millis(2);
        loop {
            if control.is_cancelled() {
                return Err(io::Error::other("cancelled"));
            }
            client.send(&HostMessage::Hello).map_err(io::Error::other)?;
            // Short waits keep a cancelled boot from waiting long.
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(patience);
            patience = (patience * 2).min(Duration::from_millis(50));
            if wait.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "timed out waiting for ready",
                ));
            }
            client.reader.get_ref().set_read_timeout(Some(wait))?;
            match protocol::read_message::<_, GuestMessage>(&mut client.reader) {
                Ok(Some(GuestMessage::Ready { version })) if version == PROTOCOL_VERSION => {
                    client.reader.get_ref().set_read_timeout(None)?;
                    return Ok(client);
                }
                Ok(Some(GuestMessage::Ready { version })) => {
                    return Err(io::Error::other(format!(
                        "the guest speaks agent protocol {version}, this SDK {PROTOCOL_VERSION}; {REBUILD}"
                    )));
                }
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "agent closed the connection",
                    ));
                }
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(io::Error::other(format!("{e}; {REBUILD}"))),
            }
        }
    }

    /// The connection's two halves, once the handshake is done (for the
    /// exec reader thread and writers in [`super::exec`]).
    pub fn into_parts(self) -> (BufReader<UnixStream>, UnixStream) {
        (self.reader, self.writer)
    }

    /// Give the guest its identity (hostname, clock, entropy, online CPUs)
    /// and wait for it to be applied.
    pub fn configure(&mut self, identity: &super::Identity) -> MicrosandboxResult<()> {
        self.send(&HostMessage::Configure {
            hostname: identity.hostname.clone(),
            unix_time_ns: identity.unix_time_ns(),
            seed: identity.seed_hex(),
            cpus_online: identity.cpus_online,
        })?;
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| MicrosandboxError::Runtime(format!("guest agent: {e}")))?;
        loop {
            match protocol::read_message::<_, GuestMessage>(&mut self.reader) {
                Ok(Some(GuestMessage::Configured { warnings })) => {
                    let _ = self.reader.get_ref().set_read_timeout(None);
                    // Hostname and clock are cosmetic if they fail; entropy
                    // is not: a fork must not share its snapshot's random stream.
                    if let Some(w) = warnings.iter().find(|w| w.contains("RNG")) {
                        return Err(MicrosandboxError::Runtime(format!(
                            "guest could not take fresh entropy: {w}"
                        )));
                    }
                    return Ok(());
                }
                Ok(Some(GuestMessage::Error { message, .. })) => {
                    return Err(MicrosandboxError::Runtime(format!(
                        "guest refused configure: {message}"
                    )));
                }
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err(MicrosandboxError::Runtime(
                        "guest agent closed the connection during configure".into(),
                    ));
                }
                Err(e) => {
                    return Err(MicrosandboxError::Runtime(format!(
                        "guest agent during configure: {e}"
                    )));
                }
            }
        }
    }

    /// Ask the guest to sync, unmount and power off.
    pub fn shutdown(&mut self) -> MicrosandboxResult<()> {
        self.send(&HostMessage::Shutdown)
    }

    fn send(&mut self, msg: &HostMessage) -> MicrosandboxResult<()> {
        protocol::write_message(&mut self.writer, msg)
            .map_err(|e| MicrosandboxError::Runtime(format!("guest agent: {e}")))
    }
}

fn is_timeout(err: &protocol::ProtocolError) -> bool {
    matches!(err, protocol::ProtocolError::Io(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}
