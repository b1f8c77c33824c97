//! The host<->guest agent protocol: message types and their framing.
//!
//! This module owns the bytes that cross the virtio-serial port named
//! [`AGENT_PORT_NAME`] (a unix socket on the host side). Both ends use it: the
//! guest's PID 1 (`msb-guest-init`) and the host runtime in `core`.
//!
//! # Frame format
//!
//! ```text
//! frame = len: u32 little-endian | body: `len` bytes
//! body  = one UTF-8 JSON object, tagged by its "type" field
//! ```
//!
//! `len` counts the body only and must be in `1..=MAX_FRAME_LEN`. A reader
//! checks `len` before it allocates, so a corrupt or hostile length cannot make
//! it reserve memory. Byte strings (`data` of `stdout`/`stderr`) are standard
//! base64 (RFC 4648 §4, with `=` padding). Unknown fields are ignored, so
//! either side may add optional fields without breaking the other.
//!
//! # Messages
//!
//! | direction    | `type`     | fields                                          |
//! |--------------|------------|-------------------------------------------------|
//! | host → guest | `hello`    | —                                               |
//! | host → guest | `exec`     | `id`, `argv`, `env` (object, optional), `cwd` (optional) |
//! | host → guest | `shutdown` | —                                               |
//! | guest → host | `ready`    | `version` ([`PROTOCOL_VERSION`])                |
//! | guest → host | `stdout`   | `id`, `data` (base64)                           |
//! | guest → host | `stderr`   | `id`, `data` (base64)                           |
//! | guest → host | `exit`     | `id`, `code`                                    |
//! | guest → host | `error`    | `id` (or `null`), `message`                     |
//!
//! Example body: `{"type":"exec","id":1,"argv":["sh","-c","echo hi"],"env":{},"cwd":"/root"}`.
//!
//! # Semantics
//!
//! - Connections: the VM outlives the host processes that talk to it. QEMU
//!   listens on the agent socket, and any number of hosts connect, work and
//!   disconnect over the VM's life, one at a time (a second connection waits
//!   until the first closes). The guest keeps serving across disconnects.
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
//!   the `exec`s requested before it (they keep running; their output and
//!   `exit` are dropped), so every host may number its `exec`s from 1. The
//!   same happens when the guest sees the host disconnect: output for a host
//!   that left is dropped, never queued for the next one.
//! - `exec` runs `argv` with exactly the environment `env` (plus `PATH` and
//!   `HOME` defaults when `env` lacks them) in `cwd` (default `/`), stdin at
//!   `/dev/null`. For each `exec` the guest sends any number of `stdout` /
//!   `stderr` chunks and then exactly one `exit` or one `error` with that `id`.
//!   `code` is the exit status, or `128 + signal` when a signal killed it.
//!   Several `exec`s may run at once; ids are the host's to choose.
//! - `error` with `id: null` reports a request the guest could not decode.
//! - `shutdown` stops every process, syncs and unmounts the disks cleanly and
//!   powers the VM off; the host sees the VM exit.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Name of the virtio-serial port that carries the protocol.
pub const AGENT_PORT_NAME: &str = "msb.agent";

/// Version announced in [`GuestMessage::Ready`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest accepted frame body, in bytes (4 MiB).
pub const MAX_FRAME_LEN: usize = 4 << 20;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

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
    },
    /// Stop everything, unmount cleanly and power off.
    Shutdown,
    /// Sent right after connecting; the guest answers
    /// [`GuestMessage::Ready`] and starts a new session.
    Hello,
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
    /// A chunk of a process's standard output.
    Stdout {
        /// The `exec` id.
        id: u64,
        /// Raw bytes (base64 on the wire).
        #[serde(with = "base64")]
        data: Vec<u8>,
    },
    /// A chunk of a process's standard error.
    Stderr {
        /// The `exec` id.
        id: u64,
        /// Raw bytes (base64 on the wire).
        #[serde(with = "base64")]
        data: Vec<u8>,
    },
    /// The process ended.
    Exit {
        /// The `exec` id.
        id: u64,
        /// Exit status, or `128 + signal`.
        code: i32,
    },
    /// A request failed (for an `exec`: it never ran or could not be waited for).
    Error {
        /// The `exec` id, or `None` when the request itself was unreadable.
        id: Option<u64>,
        /// Human-readable cause.
        message: String,
    },
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
    /// body has not been consumed; [`skip_body`] discards it.
    BadLength {
        /// The announced body length.
        len: usize,
    },
    /// The body is not a valid message.
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

/// Encodes one message as a complete frame (header + body).
pub fn encode<M: Serialize>(msg: &M) -> Result<Vec<u8>, ProtocolError> {
    let mut frame = vec![0u8; HEADER_LEN];
    serde_json::to_writer(&mut frame, msg).map_err(ProtocolError::Json)?;
    let len = frame.len() - HEADER_LEN;
    check_len(len)?;
    let len32 = u32::try_from(len).map_err(|_| ProtocolError::BadLength { len })?;
    frame[..HEADER_LEN].copy_from_slice(&len32.to_le_bytes());
    Ok(frame)
}

/// Decodes the first frame of `buf`.
///
/// Returns `Ok(None)` while `buf` holds less than a whole frame (for callers
/// that buffer a non-blocking stream), or the message and the number of bytes
/// it used.
pub fn decode<M: DeserializeOwned>(buf: &[u8]) -> Result<Option<(M, usize)>, ProtocolError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = header_len(header)?;
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let msg = serde_json::from_slice(body).map_err(ProtocolError::Json)?;
    Ok(Some((msg, HEADER_LEN + len)))
}

/// Decodes a buffer that must hold exactly one whole frame.
pub fn decode_exact<M: DeserializeOwned>(buf: &[u8]) -> Result<M, ProtocolError> {
    match decode(buf)? {
        Some((msg, used)) if used == buf.len() => Ok(msg),
        Some((_, used)) => Err(ProtocolError::TrailingBytes {
            extra: buf.len() - used,
        }),
        None => Err(ProtocolError::Truncated {
            expected: buf
                .get(..HEADER_LEN)
                .and_then(|h| header_len(h).ok())
                .map_or(HEADER_LEN, |l| HEADER_LEN + l),
            got: buf.len(),
        }),
    }
}

fn header_len(header: &[u8]) -> Result<usize, ProtocolError> {
    let mut raw = [0u8; HEADER_LEN];
    raw.copy_from_slice(header);
    let len = u32::from_le_bytes(raw) as usize;
    check_len(len)?;
    Ok(len)
}

/// Writes one message as a frame (a single `write_all`) and flushes.
pub fn write_message<W: Write, M: Serialize>(w: &mut W, msg: &M) -> Result<(), ProtocolError> {
    let frame = encode(msg)?;
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Reads one message from a blocking stream.
///
/// Returns `Ok(None)` on end of stream at a frame boundary, and
/// [`ProtocolError::Truncated`] when the stream ends inside a frame.
pub fn read_message<R: Read, M: DeserializeOwned>(r: &mut R) -> Result<Option<M>, ProtocolError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(ProtocolError::Truncated {
            expected: HEADER_LEN,
            got,
        });
    }
    let len = header_len(&header)?;
    let mut body = vec![0u8; len];
    let got = read_full(r, &mut body)?;
    if got < len {
        return Err(ProtocolError::Truncated {
            expected: HEADER_LEN + len,
            got: HEADER_LEN + got,
        });
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(ProtocolError::Json)
}

/// Discards the body of a frame whose length was rejected with
/// [`ProtocolError::BadLength`], so the stream is at a frame boundary again.
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

/// Standard base64 with padding, as a serde adapter for `Vec<u8>` fields.
pub mod base64 {
    use serde::{Deserialize, Deserializer, Serializer};

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /// Encodes bytes as base64 text.
    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }

    /// Decodes base64 text; `None` if it is not canonical padded base64.
    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let bytes = text.as_bytes();
        if bytes.len() % 4 != 0 {
            return None;
        }
        let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
        let quads = bytes.len() / 4;
        for (q, quad) in bytes.chunks(4).enumerate() {
            let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || (pad > 0 && q + 1 != quads) {
                return None;
            }
            let mut n = 0u32;
            for &c in &quad[..4 - pad] {
                n = (n << 6) | value(c)?;
            }
            n <<= 6 * pad as u32;
            let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            // Non-zero bits hidden under the padding make the text non-canonical.
            if decoded[3 - pad..].iter().any(|&b| b != 0) {
                return None;
            }
            out.extend_from_slice(&decoded[..3 - pad]);
        }
        Some(out)
    }

    /// serde: serialize bytes as a base64 string.
    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(data))
    }

    /// serde: deserialize a base64 string into bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        decode(&text).ok_or_else(|| serde::de::Error::custom("invalid base64"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn host_samples() -> Vec<HostMessage> {
        vec![
            HostMessage::Exec {
                id: 7,
                argv: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo hi > /root/f; cat /root/f".into(),
                ],
                env: [("A".to_string(), "b c".to_string())].into_iter().collect(),
                cwd: Some("/root".into()),
            },
            HostMessage::Exec {
                id: u64::MAX,
                argv: vec!["true".into()],
                env: BTreeMap::new(),
                cwd: None,
            },
            HostMessage::Shutdown,
            HostMessage::Hello,
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
            GuestMessage::Stdout {
                id: 2,
                data: vec![],
            },
            GuestMessage::Exit { id: 1, code: -1 },
            GuestMessage::Exit { id: 3, code: 137 },
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

    #[test]
    fn host_messages_round_trip() {
        for msg in host_samples() {
            let frame = encode(&msg).unwrap();
            assert_eq!(
                u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize,
                frame.len() - 4
            );
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
        let frame = encode(&GuestMessage::Stdout {
            id: 1,
            data: b"hi\n".to_vec(),
        })
        .unwrap();
        assert_eq!(&frame[4..], br#"{"type":"stdout","id":1,"data":"aGkK"}"#);
        let body = br#"{"type":"exec","id":3,"argv":["ls"],"extra":true}"#;
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(body);
        assert_eq!(
            decode_exact::<HostMessage>(&frame).unwrap(),
            HostMessage::Exec {
                id: 3,
                argv: vec!["ls".into()],
                env: BTreeMap::new(),
                cwd: None
            }
        );
    }

    #[test]
    fn hello_and_ready_wire_shape() {
        let frame = encode(&HostMessage::Hello).unwrap();
        assert_eq!(&frame[4..], br#"{"type":"hello"}"#);
        assert_eq!(frame[..4], 16u32.to_le_bytes());
        assert_eq!(
            decode_exact::<HostMessage>(&frame).unwrap(),
            HostMessage::Hello
        );
        // Other languages may add fields; they are ignored.
        let body = br#"{"type":"hello","client":"msb 0.1"}"#;
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(body);
        assert_eq!(
            decode_exact::<HostMessage>(&frame).unwrap(),
            HostMessage::Hello
        );
        let ready = encode(&GuestMessage::Ready {
            version: PROTOCOL_VERSION,
        })
        .unwrap();
        assert_eq!(&ready[4..], br#"{"type":"ready","version":1}"#);
    }

    #[test]
    fn hello_exchange_round_trips_through_streams() {
        // Host side: hello, then an exec, on one stream.
        let mut to_guest = Vec::new();
        write_message(&mut to_guest, &HostMessage::Hello).unwrap();
        write_message(&mut to_guest, &host_samples()[0]).unwrap();
        let mut r = Cursor::new(to_guest);
        assert_eq!(
            read_message::<_, HostMessage>(&mut r).unwrap(),
            Some(HostMessage::Hello)
        );
        assert_eq!(
            read_message::<_, HostMessage>(&mut r).unwrap(),
            Some(host_samples()[0].clone())
        );
        assert!(read_message::<_, HostMessage>(&mut r).unwrap().is_none());
        // Guest side: the answer.
        let mut to_host = Vec::new();
        write_message(
            &mut to_host,
            &GuestMessage::Ready {
                version: PROTOCOL_VERSION,
            },
        )
        .unwrap();
        let (msg, used) = decode::<GuestMessage>(&to_host).unwrap().unwrap();
        assert_eq!(
            msg,
            GuestMessage::Ready {
                version: PROTOCOL_VERSION
            }
        );
        assert_eq!(used, to_host.len());
    }

    #[test]
    fn partial_buffers_wait_for_more() {
        let frame = encode(&HostMessage::Shutdown).unwrap();
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
        let frame = encode(&GuestMessage::Exit { id: 9, code: 0 }).unwrap();
        for cut in 1..frame.len() {
            let err = read_message::<_, GuestMessage>(&mut Cursor::new(&frame[..cut])).unwrap_err();
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

    #[test]
    fn oversized_and_empty_frames_are_rejected() {
        // A header announcing more than the limit is rejected before any allocation.
        let huge = ((MAX_FRAME_LEN + 1) as u32).to_le_bytes();
        let mut r = Cursor::new(huge.to_vec());
        assert!(matches!(
            read_message::<_, HostMessage>(&mut r),
            Err(ProtocolError::BadLength { len }) if len == MAX_FRAME_LEN + 1
        ));
        let max = u32::MAX.to_le_bytes();
        assert!(matches!(
            decode::<HostMessage>(&max),
            Err(ProtocolError::BadLength { .. })
        ));
        assert!(matches!(
            decode::<HostMessage>(&[0, 0, 0, 0]),
            Err(ProtocolError::BadLength { len: 0 })
        ));
        // Encoding refuses to produce one.
        let big = GuestMessage::Stdout {
            id: 1,
            data: vec![0; MAX_FRAME_LEN],
        };
        assert!(matches!(encode(&big), Err(ProtocolError::BadLength { .. })));
    }

    #[test]
    fn a_bad_frame_can_be_skipped() {
        let mut stream = (10u32).to_le_bytes().to_vec();
        stream.extend_from_slice(b"not json!!");
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

        let mut stream = ((MAX_FRAME_LEN + 5) as u32).to_le_bytes().to_vec();
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
    fn unknown_types_and_bad_base64_are_rejected() {
        for body in [
            &br#"{"type":"launch","id":1}"#[..],
            br#"{"id":1}"#,
            br#"{"type":"exec","argv":["x"]}"#,
        ] {
            let mut frame = (body.len() as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(body);
            assert!(matches!(
                decode_exact::<HostMessage>(&frame),
                Err(ProtocolError::Json(_))
            ));
        }
        let body = br#"{"type":"stdout","id":1,"data":"aGk*"}"#;
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(body);
        assert!(matches!(
            decode_exact::<GuestMessage>(&frame),
            Err(ProtocolError::Json(_))
        ));
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in vectors {
            assert_eq!(base64::encode(plain.as_bytes()), coded);
            assert_eq!(base64::decode(coded).unwrap(), plain.as_bytes());
        }
        for bad in [
            "Zg=", "Zg===", "Z===", "Zh==", "Zg==Zg==", "Zm9v!A==", "====",
        ] {
            assert!(base64::decode(bad).is_none(), "{bad}");
        }
        let all: Vec<u8> = (0..=255).cycle().take(1000).collect();
        assert_eq!(base64::decode(&base64::encode(&all)).unwrap(), all);
    }
}
