//! The host<->guest agent protocol: message types and their framing.
//!
//! This module owns the bytes that cross the virtio-serial port named
//! [`AGENT_PORT_NAME`] (a unix socket on the host side). Both ends use it: the
//! guest's PID 1 (`msb-guest-init`) and the host runtime in `core`.
//! `docs/protocol.md` describes the same format for other implementations.
//!
//! # Frame format (version 2)
//!
//! ```text
//! frame  = kind: u8 | id: u64 little-endian | len: u32 little-endian | payload: `len` bytes
//! kind 0 = control: payload is one UTF-8 JSON object tagged by "type"; id = 0
//! kind 1 = stdout:  payload is raw bytes of exec `id`'s standard output (guest → host)
//! kind 2 = stderr:  payload is raw bytes of exec `id`'s standard error  (guest → host)
//! kind 3 = stdin:   payload is raw bytes for exec `id`'s standard input (host → guest)
//! ```
//!
//! The header is [`HEADER_LEN`] (13) bytes. `len` counts the payload only and
//! must be in `1..=MAX_FRAME_LEN`. A reader checks the kind and `len` before
//! it allocates, so a corrupt or hostile header cannot make it reserve
//! memory. Output and input bytes travel as they are (no text encoding: the
//! guest reads a pipe into the frame's buffer right after its header and
//! writes it out). Unknown JSON fields are ignored, so either side may add
//! optional fields without breaking the other.
//!
//! # Messages
//!
//! | direction    | kind / `type`  | fields                                          |
//! |--------------|----------------|-------------------------------------------------|
//! | host → guest | `hello`        | —                                               |
//! | host → guest | `exec`         | `id`, `argv`, `env` (object, optional), `cwd` (optional), `stdin` (bool, default false), `timeout_ms` (optional), `window` (optional) |
//! | host → guest | 3 (stdin data) | `id`, bytes                                     |
//! | host → guest | `stdin_close`  | `id`                                            |
//! | host → guest | `credit`       | `id`, `bytes`                                   |
//! | host → guest | `signal`       | `id`, `signal`                                  |
//! | host → guest | `kill`         | `id`                                            |
//! | host → guest | `shutdown`     | —                                               |
//! | host → guest | `configure`    | `hostname`, `unix_time_ns`, `seed` (64 hex), `cpus_online` (optional) |
//! | guest → host | `ready`        | `version` ([`PROTOCOL_VERSION`])                |
//! | guest → host | 1 / 2 (data)   | `id`, bytes                                     |
//! | guest → host | `credit`       | `id`, `bytes`                                   |
//! | guest → host | `exit`         | `id`, `code`, `signal` (optional), `timed_out`  |
//! | guest → host | `configured`   | `warnings` (strings)                            |
//! | guest → host | `error`        | `id` (or `null`), `message`                     |
//!
//! Example control payload: `{"type":"exec","id":1,"argv":["sh","-c","echo hi"],"env":{},"cwd":"/root","stdin":true,"window":2097152}`.
//!
//! # Semantics
//!
//! - Connections: the VM outlives the host processes that talk to it. QEMU
//!   listens on the agent socket, and any number of hosts connect, work and
//!   disconnect over the VM's life, one at a time (a second connection waits
//!   until the first closes). The guest keeps serving across disconnects.
//!   One host connection carries any number of execs at once.
//! - The guest sends `ready` when it has booted and is ready to take `exec`
//!   requests, and again in answer to every `hello`. The boot-time `ready` is
//!   lost when no host is connected at that moment, so a host sends `hello`
//!   right after connecting and waits (with a timeout) for `ready` before it
//!   sends anything else, discarding whatever arrives before `ready`: output
//!   of a previous host's processes may still be in flight. A host that
//!   connects while the guest boots gets both the boot-time `ready` and the
//!   answer to its `hello`, so `ready` can come twice: a host ignores any
//!   `ready` after the first.
//! - `hello` starts a new session: from then on the guest sends nothing about
//!   the `exec`s requested before it (they keep running with their stdin
//!   closed; their output and `exit` are dropped), so every host may number
//!   its `exec`s from 1. The same happens when the guest sees the host
//!   disconnect: output for a host that left is dropped, never queued for the
//!   next one.
//! - `exec` runs `argv` in a new process group with exactly the environment
//!   `env` (plus `PATH` and `HOME` defaults when `env` lacks them) in `cwd`
//!   (default `/`). Its stdin is a pipe fed by `stdin` frames when `stdin` is
//!   true (`stdin_close` closes it: end of file), `/dev/null` otherwise.
//!   For each `exec` the guest sends any number of stdout / stderr frames and
//!   then exactly one `exit` or one `error` with that `id`. `code` is the exit
//!   status, or `128 + signal` when a signal killed it (`signal` then says
//!   which). Several `exec`s may run at once; ids are the host's to choose.
//! - Flow control, both ways, in bytes of payload: with `window` set, the
//!   guest sends at most `window` output bytes of that exec (stdout and
//!   stderr together) beyond what the host has granted back with `credit`
//!   (the host grants as its reader consumes); while it has no credit it stops
//!   reading the process's pipes, so the process blocks on a full pipe. Without
//!   `window` output is not limited. The host sends at most
//!   [`STDIN_WINDOW`] stdin bytes of an exec beyond what the guest has
//!   acknowledged with `credit` (written into the pipe, or discarded once the
//!   process closed it). Either side may treat a peer that overruns its
//!   window as broken.
//! - `timeout_ms`: once that long has passed since the spawn, the guest
//!   SIGKILLs the process group and reports `timed_out: true` in `exit`.
//! - `signal` sends that signal number to the exec's process group (as a
//!   terminal's Ctrl-C does); `kill` SIGKILLs the group and drops the exec's
//!   remaining output (the host no longer wants it); unknown ids are ignored.
//! - `error` with `id: null` reports a request the guest could not decode.
//! - `shutdown` stops every process, syncs and unmounts the disks cleanly and
//!   powers the VM off; the host sees the VM exit.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Name of the virtio-serial port that carries the protocol.
pub const AGENT_PORT_NAME: &str = "msb.agent";

/// Version announced in [`GuestMessage::Ready`] (2: binary data frames;
/// 3: `configure`, for identity after a boot or a fork).
pub const PROTOCOL_VERSION: u32 = 3;

/// Largest accepted frame payload, in bytes (4 MiB).
pub const MAX_FRAME_LEN: usize = 4 << 20;

/// Size of the frame header: kind, id, length.
pub const HEADER_LEN: usize = 13;

/// How many stdin bytes of one exec the host may send beyond the guest's
/// `credit` acknowledgements.
pub const STDIN_WINDOW: u64 = 1 << 20;

/// What a frame's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A JSON control message.
    Control = 0,
    /// Standard output bytes (guest → host).
    Stdout = 1,
    /// Standard error bytes (guest → host).
    Stderr = 2,
    /// Standard input bytes (host → guest).
    Stdin = 3,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Control),
            1 => Some(Self::Stdout),
            2 => Some(Self::Stderr),
            3 => Some(Self::Stdin),
            _ => None,
        }
    }
}

/// Messages from the host to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// Run a process.
    Exec {
        /// Chosen by the host; echoed in every reply about this process.
        id: u64,
        /// Program and arguments; `argv[0]` is looked up in `PATH`.
        argv: Vec<String>,
        /// The process environment.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Working directory (default `/`).
        #[serde(default)]
        cwd: Option<String>,
        /// Stdin is a pipe fed by [`HostMessage::Stdin`] (else `/dev/null`).
        #[serde(default)]
        stdin: bool,
        /// Kill the process group after this many milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// Output bytes the guest may send before it needs
        /// [`HostMessage::Credit`] (unlimited when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<u64>,
    },
    /// Bytes for an exec's stdin (a binary frame of kind 3, never JSON).
    #[serde(skip)]
    Stdin {
        /// The `exec` id.
        id: u64,
        /// Raw bytes.
        data: Vec<u8>,
    },
    /// Close an exec's stdin (the process reads end of file).
    StdinClose {
        /// The `exec` id.
        id: u64,
    },
    /// The host consumed `bytes` more of an exec's output.
    Credit {
        /// The `exec` id.
        id: u64,
        /// Bytes granted.
        bytes: u64,
    },
    /// Send a signal to an exec's process group.
    Signal {
        /// The `exec` id.
        id: u64,
        /// Signal number (Linux numbering: 2 = SIGINT, 9 = SIGKILL, 15 = SIGTERM).
        signal: i32,
    },
    /// SIGKILL an exec's process group and drop its remaining output.
    Kill {
        /// The `exec` id.
        id: u64,
    },
    /// Stop everything, unmount cleanly and power off.
    Shutdown,
    /// Sent right after connecting; the guest answers
    /// [`GuestMessage::Ready`] and starts a new session.
    Hello,
    /// Give the guest its identity: sent after every boot and after every
    /// restore of a full snapshot, so that forks of one snapshot are not
    /// clones where it matters. Answered by [`GuestMessage::Configured`].
    Configure {
        /// Becomes the guest's hostname (the sandbox name).
        hostname: String,
        /// The host's wall clock, nanoseconds since the Unix epoch.
        unix_time_ns: u64,
        /// 32 random bytes, hex: mixed into the kernel's entropy pool,
        /// which is then reseeded.
        seed: String,
        /// Keep only this many CPUs online (`None`: leave them as they are).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cpus_online: Option<u32>,
    },
}

/// Messages from the guest to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GuestMessage {
    /// The guest booted and serves requests; sent at boot and in answer to
    /// every [`HostMessage::Hello`].
    Ready {
        /// The guest's [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// A chunk of a process's standard output (a binary frame of kind 1).
    #[serde(skip)]
    Stdout {
        /// The `exec` id.
        id: u64,
        /// Raw bytes.
        data: Vec<u8>,
    },
    /// A chunk of a process's standard error (a binary frame of kind 2).
    #[serde(skip)]
    Stderr {
        /// The `exec` id.
        id: u64,
        /// Raw bytes.
        data: Vec<u8>,
    },
    /// The guest took `bytes` more of an exec's stdin off the channel.
    Credit {
        /// The `exec` id.
        id: u64,
        /// Bytes acknowledged.
        bytes: u64,
    },
    /// The process ended.
    Exit {
        /// The `exec` id.
        id: u64,
        /// Exit status, or `128 + signal`.
        code: i32,
        /// The signal that killed the process, if one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        /// The exec's `timeout_ms` fired and killed its process group.
        #[serde(default)]
        timed_out: bool,
    },
    /// The `configure` request was applied; `warnings` name what could not be.
    Configured {
        /// Parts of the request that failed, human-readable.
        #[serde(default)]
        warnings: Vec<String>,
    },
    /// A request failed (for an `exec`: it never ran or could not be waited for).
    Error {
        /// The `exec` id, or `None` when the request itself was unreadable.
        id: Option<u64>,
        /// Human-readable cause.
        message: String,
    },
}

/// A message type of one direction: which of its messages are data frames.
pub trait Message: Serialize + serde::de::DeserializeOwned + Sized {
    /// The data frame this message is, if it is one.
    fn as_data(&self) -> Option<(FrameKind, u64, &[u8])>;
    /// The message a data frame of `kind` carries; `None` when this
    /// direction has no such frames.
    fn from_data(kind: FrameKind, id: u64, data: Vec<u8>) -> Option<Self>;
}

impl Message for HostMessage {
    fn as_data(&self) -> Option<(FrameKind, u64, &[u8])> {
        match self {
            Self::Stdin { id, data } => Some((FrameKind::Stdin, *id, data)),
            _ => None,
        }
    }

    fn from_data(kind: FrameKind, id: u64, data: Vec<u8>) -> Option<Self> {
        (kind == FrameKind::Stdin).then_some(Self::Stdin { id, data })
    }
}

impl Message for GuestMessage {
    fn as_data(&self) -> Option<(FrameKind, u64, &[u8])> {
        match self {
            Self::Stdout { id, data } => Some((FrameKind::Stdout, *id, data)),
            Self::Stderr { id, data } => Some((FrameKind::Stderr, *id, data)),
            _ => None,
        }
    }

    fn from_data(kind: FrameKind, id: u64, data: Vec<u8>) -> Option<Self> {
        match kind {
            FrameKind::Stdout => Some(Self::Stdout { id, data }),
            FrameKind::Stderr => Some(Self::Stderr { id, data }),
            _ => None,
        }
    }
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug)]
pub enum ProtocolError {
    /// The underlying stream failed.
    Io(io::Error),
    /// The stream ended inside a frame.
    Truncated {
        /// Bytes the frame (header included) needs.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// A frame's length is zero or above [`MAX_FRAME_LEN`]. When reading, the
    /// payload has not been consumed; [`skip_body`] discards it.
    BadLength {
        /// The announced payload length.
        len: usize,
    },
    /// A frame's kind is unknown, or not one this direction carries. When
    /// reading, the payload has not been consumed; [`skip_body`] discards it.
    BadKind {
        /// The kind byte.
        kind: u8,
        /// The announced payload length.
        len: usize,
    },
    /// The control payload is not a valid message.
    Json(serde_json::Error),
    /// [`decode_exact`] found bytes after the frame.
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "agent channel I/O: {e}"),
            Self::Truncated { expected, got } => {
                write!(f, "truncated frame: needed {expected} bytes, got {got}")
            }
            Self::BadLength { len } => {
                write!(f, "bad frame length {len} (must be 1..={MAX_FRAME_LEN})")
            }
            Self::BadKind { kind, .. } => write!(f, "unexpected frame kind {kind}"),
            Self::Json(e) => write!(f, "invalid message: {e}"),
            Self::TrailingBytes { extra } => write!(f, "{extra} bytes after the frame"),
        }
    }
}

impl std::error::Error for ProtocolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Json(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ProtocolError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

fn check_len(len: usize) -> Result<(), ProtocolError> {
    if len == 0 || len > MAX_FRAME_LEN {
        Err(ProtocolError::BadLength { len })
    } else {
        Ok(())
    }
}

/// The header of a frame of `kind` for exec `id` with a `len`-byte payload
/// (for writers that put the payload right after it in their own buffer).
pub fn header(kind: FrameKind, id: u64, len: usize) -> Result<[u8; HEADER_LEN], ProtocolError> {
    check_len(len)?;
    let len32 = u32::try_from(len).map_err(|_| ProtocolError::BadLength { len })?;
    let mut h = [0u8; HEADER_LEN];
    h[0] = kind as u8;
    h[1..9].copy_from_slice(&id.to_le_bytes());
    h[9..].copy_from_slice(&len32.to_le_bytes());
    Ok(h)
}

/// A frame header, parsed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the payload is.
    pub kind: FrameKind,
    /// The exec id (0 for control frames).
    pub id: u64,
    /// Payload length, in `1..=MAX_FRAME_LEN`.
    pub len: usize,
}

/// Parses and checks a frame header (length first, then kind).
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<Header, ProtocolError> {
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[1..9]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&h[9..]);
    let len = u32::from_le_bytes(len) as usize;
    check_len(len)?;
    let kind = FrameKind::from_u8(h[0]).ok_or(ProtocolError::BadKind { kind: h[0], len })?;
    Ok(Header {
        kind,
        id: u64::from_le_bytes(id),
        len,
    })
}

/// Encodes one message as a complete frame (header + payload).
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, ProtocolError> {
    if let Some((kind, id, data)) = msg.as_data() {
        let mut frame = Vec::with_capacity(HEADER_LEN + data.len());
        frame.extend_from_slice(&header(kind, id, data.len())?);
        frame.extend_from_slice(data);
        return Ok(frame);
    }
    let mut frame = vec![0u8; HEADER_LEN];
    serde_json::to_writer(&mut frame, msg).map_err(ProtocolError::Json)?;
    let h = header(FrameKind::Control, 0, frame.len() - HEADER_LEN)?;
    frame[..HEADER_LEN].copy_from_slice(&h);
    Ok(frame)
}

fn decode_payload<M: Message>(h: Header, payload: &[u8]) -> Result<M, ProtocolError> {
    match h.kind {
        FrameKind::Control => serde_json::from_slice(payload).map_err(ProtocolError::Json),
        kind => M::from_data(kind, h.id, payload.to_vec()).ok_or(ProtocolError::BadKind {
            kind: kind as u8,
            len: h.len,
        }),
    }
}

/// Decodes the first frame of `buf`.
///
/// Returns `Ok(None)` while `buf` holds less than a whole frame (for callers
/// that buffer a non-blocking stream), or the message and the number of bytes
/// it used.
pub fn decode<M: Message>(buf: &[u8]) -> Result<Option<(M, usize)>, ProtocolError> {
    let Some(raw) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut hb = [0u8; HEADER_LEN];
    hb.copy_from_slice(raw);
    let h = parse_header(&hb)?;
    check_direction::<M>(h)?;
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + h.len) else {
        return Ok(None);
    };
    Ok(Some((decode_payload(h, payload)?, HEADER_LEN + h.len)))
}

/// Decodes a buffer that must hold exactly one whole frame.
pub fn decode_exact<M: Message>(buf: &[u8]) -> Result<M, ProtocolError> {
    match decode(buf)? {
        Some((msg, used)) if used == buf.len() => Ok(msg),
        Some((_, used)) => Err(ProtocolError::TrailingBytes {
            extra: buf.len() - used,
        }),
        None => {
            let expected = buf
                .get(..HEADER_LEN)
                .and_then(|raw| {
                    let mut hb = [0u8; HEADER_LEN];
                    hb.copy_from_slice(raw);
                    parse_header(&hb).ok()
                })
                .map_or(HEADER_LEN, |h| HEADER_LEN + h.len);
            Err(ProtocolError::Truncated {
                expected,
                got: buf.len(),
            })
        }
    }
}

/// Writes one message as a frame (a single `write_all`) and flushes.
pub fn write_message<W: Write, M: Message>(w: &mut W, msg: &M) -> Result<(), ProtocolError> {
    let frame = encode(msg)?;
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Reads one message from a blocking stream.
///
/// Returns `Ok(None)` on end of stream at a frame boundary, and
/// [`ProtocolError::Truncated`] when the stream ends inside a frame. The
/// payload buffer is allocated only after the header was checked.
pub fn read_message<R: Read, M: Message>(r: &mut R) -> Result<Option<M>, ProtocolError> {
    let mut hb = [0u8; HEADER_LEN];
    let got = read_full(r, &mut hb)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(ProtocolError::Truncated {
            expected: HEADER_LEN,
            got,
        });
    }
    let h = parse_header(&hb)?;
    check_direction::<M>(h)?;
    let mut body = vec![0u8; h.len];
    let got = read_full(r, &mut body)?;
    if got < h.len {
        return Err(ProtocolError::Truncated {
            expected: HEADER_LEN + h.len,
            got: HEADER_LEN + got,
        });
    }
    match h.kind {
        FrameKind::Control => serde_json::from_slice(&body)
            .map(Some)
            .map_err(ProtocolError::Json),
        kind => M::from_data(kind, h.id, body)
            .map(Some)
            .ok_or(ProtocolError::BadKind {
                kind: kind as u8,
                len: h.len,
            }),
    }
}

/// Rejects a data frame of a kind this direction does not carry, before
/// its payload is read.
fn check_direction<M: Message>(h: Header) -> Result<(), ProtocolError> {
    if h.kind != FrameKind::Control && M::from_data(h.kind, 0, Vec::new()).is_none() {
        return Err(ProtocolError::BadKind {
            kind: h.kind as u8,
            len: h.len,
        });
    }
    Ok(())
}

/// Discards the payload of a frame whose header was rejected with
/// [`ProtocolError::BadLength`] or [`ProtocolError::BadKind`], so the stream
/// is at a frame boundary again.
pub fn skip_body<R: Read>(r: &mut R, len: usize) -> io::Result<()> {
    let want = len as u64;
    let skipped = io::copy(&mut r.take(want), &mut io::sink())?;
    if skipped < want {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "stream ended while skipping a frame",
        ));
    }
    Ok(())
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn host_samples() -> Vec<HostMessage> {
        vec![
            HostMessage::Exec {
                id: 7,
                argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: [("A".to_string(), "b c".to_string())].into_iter().collect(),
                cwd: Some("/root".into()),
                stdin: true,
                timeout_ms: Some(1500),
                window: Some(1 << 21),
            },
            HostMessage::Exec {
                id: u64::MAX,
                argv: vec!["true".into()],
                env: BTreeMap::new(),
                cwd: None,
                stdin: false,
                timeout_ms: None,
                window: None,
            },
            HostMessage::Stdin {
                id: 7,
                data: (0..=255).collect(),
            },
            HostMessage::StdinClose { id: 7 },
            HostMessage::Credit { id: 7, bytes: 4096 },
            HostMessage::Signal { id: 7, signal: 2 },
            HostMessage::Kill { id: 7 },
            HostMessage::Shutdown,
            HostMessage::Hello,
            HostMessage::Configure {
                hostname: "api".into(),
                unix_time_ns: 1_700_000_000_000_000_000,
                seed: "00".repeat(32),
                cpus_online: Some(1),
            },
        ]
    }

    fn guest_samples() -> Vec<GuestMessage> {
        vec![
            GuestMessage::Ready {
                version: PROTOCOL_VERSION,
            },
            GuestMessage::Stdout {
                id: 1,
                data: b"hi\n".to_vec(),
            },
            GuestMessage::Stderr {
                id: 1,
                data: (0..=255).collect(),
            },
            GuestMessage::Credit { id: 1, bytes: 10 },
            GuestMessage::Exit {
                id: 1,
                code: 0,
                signal: None,
                timed_out: false,
            },
            GuestMessage::Exit {
                id: 3,
                code: 137,
                signal: Some(9),
                timed_out: true,
            },
            GuestMessage::Configured {
                warnings: vec!["no cpu3".into()],
            },
            GuestMessage::Error {
                id: Some(4),
                message: "spawn nope: No such file or directory".into(),
            },
            GuestMessage::Error {
                id: None,
                message: "bad".into(),
            },
        ]
    }

    fn control(body: &[u8]) -> Vec<u8> {
        let mut frame = header(FrameKind::Control, 0, body.len()).unwrap().to_vec();
        frame.extend_from_slice(body);
        frame
    }

    #[test]
    fn host_messages_round_trip() {
        for msg in host_samples() {
            let frame = encode(&msg).unwrap();
            let h = parse_header(frame[..HEADER_LEN].try_into().unwrap()).unwrap();
            assert_eq!(h.len, frame.len() - HEADER_LEN);
            let (back, used): (HostMessage, usize) = decode(&frame).unwrap().unwrap();
            assert_eq!(back, msg);
            assert_eq!(used, frame.len());
            assert_eq!(decode_exact::<HostMessage>(&frame).unwrap(), msg);
        }
    }

    #[test]
    fn guest_messages_round_trip_through_a_stream() {
        let mut stream = Vec::new();
        for msg in guest_samples() {
            write_message(&mut stream, &msg).unwrap();
        }
        let mut r = Cursor::new(stream);
        for msg in guest_samples() {
            let back: GuestMessage = read_message(&mut r).unwrap().unwrap();
            assert_eq!(back, msg);
        }
        assert!(read_message::<_, GuestMessage>(&mut r).unwrap().is_none());
    }

    #[test]
    fn wire_shape_is_stable() {
        // Data frames carry raw bytes after a 13-byte header.
        let frame = encode(&GuestMessage::Stdout {
            id: 1,
            data: b"hi\n".to_vec(),
        })
        .unwrap();
        assert_eq!(
            frame,
            [
                &[1u8][..],
                &1u64.to_le_bytes(),
                &3u32.to_le_bytes(),
                b"hi\n"
            ]
            .concat()
        );
        let body = br#"{"type":"exec","id":3,"argv":["ls"],"extra":true}"#;
        assert_eq!(
            decode_exact::<HostMessage>(&control(body)).unwrap(),
            HostMessage::Exec {
                id: 3,
                argv: vec!["ls".into()],
                env: BTreeMap::new(),
                cwd: None,
                stdin: false,
                timeout_ms: None,
                window: None,
            }
        );
        let exit = encode(&GuestMessage::Exit {
            id: 2,
            code: 130,
            signal: Some(2),
            timed_out: false,
        })
        .unwrap();
        assert_eq!(
            &exit[HEADER_LEN..],
            br#"{"type":"exit","id":2,"code":130,"signal":2,"timed_out":false}"#
        );
    }

    #[test]
    fn hello_and_ready_wire_shape() {
        let frame = encode(&HostMessage::Hello).unwrap();
        assert_eq!(frame[0], 0);
        assert_eq!(&frame[HEADER_LEN..], br#"{"type":"hello"}"#);
        assert_eq!(frame[9..HEADER_LEN], 16u32.to_le_bytes());
        // Other languages may add fields; they are ignored.
        assert_eq!(
            decode_exact::<HostMessage>(&control(br#"{"type":"hello","client":"msb 0.1"}"#))
                .unwrap(),
            HostMessage::Hello
        );
        let ready = encode(&GuestMessage::Ready {
            version: PROTOCOL_VERSION,
        })
        .unwrap();
        assert_eq!(&ready[HEADER_LEN..], br#"{"type":"ready","version":3}"#);
    }

    #[test]
    fn partial_buffers_wait_for_more() {
        let frame = encode(&HostMessage::Stdin {
            id: 1,
            data: vec![7; 100],
        })
        .unwrap();
        for cut in 0..frame.len() {
            assert!(decode::<HostMessage>(&frame[..cut]).unwrap().is_none());
        }
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        let (_, used) = decode::<HostMessage>(&two).unwrap().unwrap();
        assert_eq!(used, frame.len());
        assert!(matches!(
            decode_exact::<HostMessage>(&two),
            Err(ProtocolError::TrailingBytes { extra }) if extra == frame.len()
        ));
    }

    #[test]
    fn truncated_frames_are_rejected() {
        for msg in guest_samples() {
            let frame = encode(&msg).unwrap();
            for cut in 1..frame.len() {
                let err =
                    read_message::<_, GuestMessage>(&mut Cursor::new(&frame[..cut])).unwrap_err();
                match err {
                    ProtocolError::Truncated { got, .. } => assert_eq!(got, cut),
                    other => panic!("cut {cut}: {other}"),
                }
                assert!(matches!(
                    decode_exact::<GuestMessage>(&frame[..cut]),
                    Err(ProtocolError::Truncated { .. })
                ));
            }
        }
    }

    #[test]
    fn oversized_and_empty_frames_are_rejected() {
        // A header announcing more than the limit is rejected before any allocation.
        for kind in 0..=3u8 {
            let mut h = [0u8; HEADER_LEN];
            h[0] = kind;
            h[9..].copy_from_slice(&((MAX_FRAME_LEN + 1) as u32).to_le_bytes());
            assert!(matches!(
                read_message::<_, GuestMessage>(&mut Cursor::new(h.to_vec())),
                Err(ProtocolError::BadLength { len }) if len == MAX_FRAME_LEN + 1
            ));
            h[9..].copy_from_slice(&u32::MAX.to_le_bytes());
            assert!(matches!(
                decode::<HostMessage>(&h),
                Err(ProtocolError::BadLength { .. })
            ));
            h[9..].copy_from_slice(&0u32.to_le_bytes());
            assert!(matches!(
                decode::<HostMessage>(&h),
                Err(ProtocolError::BadLength { len: 0 })
            ));
        }
        // Encoding refuses to produce one (data and control alike).
        let big = GuestMessage::Stdout {
            id: 1,
            data: vec![0; MAX_FRAME_LEN + 1],
        };
        assert!(matches!(encode(&big), Err(ProtocolError::BadLength { .. })));
        let empty = GuestMessage::Stdout {
            id: 1,
            data: vec![],
        };
        assert!(matches!(
            encode(&empty),
            Err(ProtocolError::BadLength { len: 0 })
        ));
        let big = GuestMessage::Error {
            id: None,
            message: "x".repeat(MAX_FRAME_LEN),
        };
        assert!(matches!(encode(&big), Err(ProtocolError::BadLength { .. })));
    }

    #[test]
    fn unknown_and_wrong_direction_kinds_are_rejected_and_skippable() {
        // Kind 9 does not exist; stdout frames never go host → guest.
        for kind in [9u8, FrameKind::Stdout as u8] {
            let mut stream = vec![kind];
            stream.extend_from_slice(&5u64.to_le_bytes());
            stream.extend_from_slice(&4u32.to_le_bytes());
            stream.extend_from_slice(b"abcd");
            write_message(&mut stream, &HostMessage::Shutdown).unwrap();
            let mut r = Cursor::new(stream.clone());
            let Err(ProtocolError::BadKind { len, .. }) = read_message::<_, HostMessage>(&mut r)
            else {
                panic!("expected BadKind");
            };
            assert_eq!(len, 4);
            skip_body(&mut r, len).unwrap();
            assert_eq!(
                read_message::<_, HostMessage>(&mut r).unwrap(),
                Some(HostMessage::Shutdown)
            );
            assert!(matches!(
                decode::<HostMessage>(&stream),
                Err(ProtocolError::BadKind { .. })
            ));
        }
    }

    #[test]
    fn a_bad_frame_can_be_skipped() {
        let mut stream = control(b"not json!!");
        write_message(&mut stream, &HostMessage::Shutdown).unwrap();
        let mut r = Cursor::new(stream);
        assert!(matches!(
            read_message::<_, HostMessage>(&mut r),
            Err(ProtocolError::Json(_))
        ));
        assert_eq!(
            read_message::<_, HostMessage>(&mut r).unwrap(),
            Some(HostMessage::Shutdown)
        );

        let mut stream = vec![0u8; HEADER_LEN];
        stream[9..].copy_from_slice(&((MAX_FRAME_LEN + 5) as u32).to_le_bytes());
        stream.extend(std::iter::repeat_n(b'x', MAX_FRAME_LEN + 5));
        write_message(&mut stream, &HostMessage::Shutdown).unwrap();
        let mut r = Cursor::new(stream);
        let Err(ProtocolError::BadLength { len }) = read_message::<_, HostMessage>(&mut r) else {
            panic!("expected BadLength");
        };
        skip_body(&mut r, len).unwrap();
        assert_eq!(
            read_message::<_, HostMessage>(&mut r).unwrap(),
            Some(HostMessage::Shutdown)
        );
    }

    #[test]
    fn unknown_types_are_rejected() {
        for body in [
            &br#"{"type":"launch","id":1}"#[..],
            br#"{"id":1}"#,
            br#"{"type":"exec","argv":["x"]}"#,
            // Data messages never travel as JSON.
            br#"{"type":"stdin","id":1,"data":[1]}"#,
        ] {
            assert!(matches!(
                decode_exact::<HostMessage>(&control(body)),
                Err(ProtocolError::Json(_))
            ));
        }
        assert!(matches!(
            decode_exact::<GuestMessage>(&control(br#"{"type":"stdout","id":1,"data":"aGk="}"#)),
            Err(ProtocolError::Json(_))
        ));
    }
}
