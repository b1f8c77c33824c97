//! The tar dialect of snapshot archives, written and read here rather than
//! through a general tar library so that the reader accepts exactly what
//! the format needs and nothing else: regular files and GNU sparse files
//! (type `S`, the old GNU sparse format that `tar -S` writes), with
//! checked header checksums, checked numeric fields and checked sparse
//! maps. Links, devices, fifos, directories and extension headers are
//! refused by type. Sizes past the octal range use the GNU base-256 form.

use std::io::{self, Read, Write};

/// Bytes per tar block.
pub(crate) const BLOCK: usize = 512;

/// Sparse segments in the main header and in each extension header.
const MAIN_SPARSE_SLOTS: usize = 4;
const EXT_SPARSE_SLOTS: usize = 21;

/// At most this many sparse segments per entry: bounds the memory a hostile
/// header chain can claim (16 bytes each).
pub(crate) const MAX_SEGMENTS: usize = 1 << 22;

/// Longest entry name: the `name` field, no long-name extensions.
pub(crate) const MAX_NAME: usize = 100;

/// One data segment of a sparse file: `len` bytes at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub offset: u64,
    pub len: u64,
}

/// What an entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryBody {
    /// `stored` bytes of content, in order.
    Regular,
    /// A file of `real_size` bytes whose data segments are stored in order;
    /// everything else is a hole.
    Sparse {
        real_size: u64,
        segments: Vec<Segment>,
    },
}

/// A parsed header: the entry's name, body layout, and the bytes of data
/// that follow it in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryHeader {
    pub name: String,
    pub body: EntryBody,
    pub stored: u64,
}

impl EntryHeader {
    /// The size of the file the entry unpacks to.
    pub(crate) fn apparent_size(&self) -> u64 {
        match &self.body {
            EntryBody::Regular => self.stored,
            EntryBody::Sparse { real_size, .. } => *real_size,
        }
    }
}

/// Writes entries to `out` and counts the bytes written.
pub(crate) struct TarWriter<W: Write> {
    out: W,
    mtime: u64,
}

impl<W: Write> TarWriter<W> {
    /// Entries get `mtime` (seconds since the epoch), mode 0644, owner 0.
    pub(crate) fn new(out: W, mtime: u64) -> Self {
        Self { out, mtime }
    }

    /// A regular file of `len` bytes, copied from `content`.
    pub(crate) fn regular(&mut self, name: &str, len: u64, content: impl Read) -> io::Result<()> {
        let header = self.header(name, b'0', len, None)?;
        self.out.write_all(&header)?;
        let copied = io::copy(&mut content.take(len), &mut self.out)?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name} shrank while being archived"),
            ));
        }
        self.pad(len)
    }

    /// A GNU sparse file of `real_size` bytes holding `segments`; `fill` is
    /// called once per segment, in order, and must write exactly its bytes.
    pub(crate) fn sparse(
        &mut self,
        name: &str,
        real_size: u64,
        segments: &[Segment],
        mut fill: impl FnMut(&mut W, Segment) -> io::Result<()>,
    ) -> io::Result<()> {
        let segments = block_aligned(segments, real_size);
        let mut map = segments.clone();
        // GNU tar marks a file that ends in a hole with an empty last segment.
        if map.last().is_none_or(|s| s.offset + s.len < real_size) {
            map.push(Segment {
                offset: real_size,
                len: 0,
            });
        }
        let stored: u64 = map.iter().map(|s| s.len).sum();
        let (main, rest) = map.split_at(map.len().min(MAIN_SPARSE_SLOTS));
        let header = self.header(
            name,
            b'S',
            stored,
            Some((real_size, main, !rest.is_empty())),
        )?;
        self.out.write_all(&header)?;
        let mut chunks = rest.chunks(EXT_SPARSE_SLOTS).peekable();
        while let Some(chunk) = chunks.next() {
            let mut ext = [0u8; BLOCK];
            for (i, s) in chunk.iter().enumerate() {
                write_number(&mut ext[i * 24..i * 24 + 12], s.offset);
                write_number(&mut ext[i * 24 + 12..i * 24 + 24], s.len);
            }
            ext[504] = u8::from(chunks.peek().is_some());
            self.out.write_all(&ext)?;
        }
        for &segment in &segments {
            fill(&mut self.out, segment)?;
        }
        self.pad(stored)
    }

    /// Write the end-of-archive marker and return the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.out)
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    fn header(
        &self,
        name: &str,
        kind: u8,
        stored: u64,
        sparse: Option<(u64, &[Segment], bool)>,
    ) -> io::Result<[u8; BLOCK]> {
        if name.len() > MAX_NAME || name.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("entry name {name:?} does not fit a tar header"),
            ));
        }
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        write_number(&mut h[100..108], 0o644);
        write_number(&mut h[108..116], 0);
        write_number(&mut h[116..124], 0);
        write_number(&mut h[124..136], stored);
        write_number(&mut h[136..148], self.mtime);
        h[156] = kind;
        h[257..265].copy_from_slice(b"ustar  \0");
        if let Some((real_size, main, extended)) = sparse {
            for (i, s) in main.iter().enumerate() {
                let at = 386 + i * 24;
                write_number(&mut h[at..at + 12], s.offset);
                write_number(&mut h[at + 12..at + 24], s.len);
            }
            h[482] = u8::from(extended);
            write_number(&mut h[483..495], real_size);
        }
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        Ok(h)
    }
}

/// `segments` widened to whole 512-byte blocks (clamped to the file's end)
/// and merged where they then touch. GNU tar reads each segment's data as
/// whole blocks, so only the segment that ends the file may end mid-block.
fn block_aligned(segments: &[Segment], real_size: u64) -> Vec<Segment> {
    let block = BLOCK as u64;
    let mut out: Vec<Segment> = Vec::with_capacity(segments.len());
    for s in segments.iter().filter(|s| s.len > 0) {
        let start = s.offset / block * block;
        let end = (s.offset + s.len)
            .div_ceil(block)
            .saturating_mul(block)
            .min(real_size);
        match out.last_mut() {
            Some(last) if last.offset + last.len >= start => {
                last.len = end.max(last.offset + last.len) - last.offset;
            }
            _ => out.push(Segment {
                offset: start,
                len: end - start,
            }),
        }
    }
    out
}

/// Octal with a NUL terminator when it fits, else GNU base-256.
fn write_number(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    if value < 1u64 << (3 * digits as u32).min(63) {
        let text = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(text.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let bytes = value.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
    }
}

/// Reads entries from a tar stream, refusing anything outside the dialect.
/// Errors that describe the archive are `InvalidData` (with the reason as
/// the message) or `UnexpectedEof` (truncated); the caller maps both to
/// `ArchiveInvalid`.
pub(crate) struct TarReader<R: Read> {
    input: R,
    /// Data bytes (plus padding) of the current entry not yet consumed.
    pending: u64,
    ended: bool,
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(input: R) -> Self {
        Self {
            input,
            pending: 0,
            ended: false,
        }
    }

    /// The next entry's header, or `None` at the end-of-archive marker.
    /// Skips whatever the previous entry's data left unread.
    pub(crate) fn next_header(&mut self) -> io::Result<Option<EntryHeader>> {
        if self.ended {
            return Ok(None);
        }
        self.skip_pending()?;
        let mut block = [0u8; BLOCK];
        read_block(&mut self.input, &mut block)?;
        if block.iter().all(|&b| b == 0) {
            read_block(&mut self.input, &mut block)?;
            if block.iter().any(|&b| b != 0) {
                return Err(invalid("a lone zero block inside the archive"));
            }
            self.ended = true;
            return Ok(None);
        }
        let header = parse_header(&block, &mut self.input)?;
        // A base-256 size near 2^64 has no whole number of blocks.
        self.pending = round_up(header.stored)
            .ok_or_else(|| invalid(format!("{}: entry size is too large", header.name)))?;
        Ok(Some(header))
    }

    /// Read the current entry's data; at most what its header declared.
    pub(crate) fn read_data(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if buf.len() as u64 > self.pending {
            return Err(invalid("an entry's data runs past its header's size"));
        }
        self.input.read_exact(buf).map_err(truncated)?;
        self.pending -= buf.len() as u64;
        Ok(())
    }

    /// After the end marker: the rest of the stream must be zeros (tar pads
    /// its last record), so nothing can hide after the end.
    pub(crate) fn expect_only_padding(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        loop {
            let n = self.input.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            if buf[..n].iter().any(|&b| b != 0) {
                return Err(invalid("data after the end-of-archive marker"));
            }
        }
    }

    fn skip_pending(&mut self) -> io::Result<()> {
        let skipped = io::copy(&mut (&mut self.input).take(self.pending), &mut io::sink())?;
        if skipped != self.pending {
            return Err(truncated(io::ErrorKind::UnexpectedEof.into()));
        }
        self.pending = 0;
        Ok(())
    }
}

fn round_up(n: u64) -> Option<u64> {
    n.div_ceil(BLOCK as u64).checked_mul(BLOCK as u64)
}

fn read_block(input: &mut impl Read, block: &mut [u8; BLOCK]) -> io::Result<()> {
    input.read_exact(block).map_err(truncated)
}

fn truncated(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(io::ErrorKind::UnexpectedEof, "the archive is truncated")
    } else {
        e
    }
}

pub(crate) fn invalid(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

fn parse_header(h: &[u8; BLOCK], input: &mut impl Read) -> io::Result<EntryHeader> {
    let recorded = parse_number(&h[148..156], "checksum")?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if recorded != unsigned && i64::try_from(recorded).ok() != Some(signed) {
        return Err(invalid(
            "a header checksum does not match (corrupt archive)",
        ));
    }
    if &h[257..262] != b"ustar" {
        return Err(invalid("not a ustar or GNU tar header"));
    }
    let name = c_string(&h[0..100], "name")?;
    if h[345] != 0 && &h[257..263] == b"ustar\0" {
        // POSIX ustar: a non-empty prefix field extends the name.
        return Err(invalid(format!(
            "{name}: names longer than {MAX_NAME} bytes are not part of the format"
        )));
    }
    let stored = parse_number(&h[124..136], "size")?;
    let body = match h[156] {
        b'0' | 0 => EntryBody::Regular,
        b'S' => parse_sparse(h, stored, input, &name)?,
        b'1' => return Err(invalid(format!("{name}: hard links are not allowed"))),
        b'2' => return Err(invalid(format!("{name}: symbolic links are not allowed"))),
        b'3' | b'4' => return Err(invalid(format!("{name}: device nodes are not allowed"))),
        b'5' => {
            return Err(invalid(format!(
                "{name}: directory entries are not allowed"
            )));
        }
        b'6' => return Err(invalid(format!("{name}: fifos are not allowed"))),
        b'L' | b'K' => {
            return Err(invalid(
                "GNU long names and link names are not part of the format",
            ));
        }
        b'x' | b'g' => {
            return Err(invalid("pax extended headers are not part of the format"));
        }
        other => {
            return Err(invalid(format!(
                "{name}: entry type {:?} is not allowed",
                other as char
            )));
        }
    };
    Ok(EntryHeader { name, body, stored })
}

fn parse_sparse(
    h: &[u8; BLOCK],
    stored: u64,
    input: &mut impl Read,
    name: &str,
) -> io::Result<EntryBody> {
    let real_size = parse_number(&h[483..495], "sparse real size")?;
    let mut segments = Vec::new();
    read_slots(&h[386..482], &mut segments)?;
    let mut extended = h[482] != 0;
    let mut ext = [0u8; BLOCK];
    while extended {
        if segments.len() > MAX_SEGMENTS {
            return Err(invalid(format!("{name}: too many sparse segments")));
        }
        read_block(input, &mut ext)?;
        read_slots(&ext[..504], &mut segments)?;
        extended = ext[504] != 0;
    }
    check_sparse_map(name, real_size, stored, &segments)?;
    // The empty end marker says where the file ends; it holds no data.
    segments.retain(|s| s.len != 0);
    Ok(EntryBody::Sparse {
        real_size,
        segments,
    })
}

/// Read `(offset, len)` slots until the first empty one.
fn read_slots(slots: &[u8], out: &mut Vec<Segment>) -> io::Result<()> {
    for slot in slots.chunks_exact(24) {
        if slot.iter().all(|&b| b == 0) {
            break;
        }
        out.push(Segment {
            offset: parse_number(&slot[..12], "sparse offset")?,
            len: parse_number(&slot[12..], "sparse length")?,
        });
    }
    Ok(())
}

/// Segments in order, not overlapping, inside the file, adding up to
/// exactly the stored size, and whole blocks long except the last one with
/// data (GNU tar would read a map that breaks this differently).
pub(crate) fn check_sparse_map(
    name: &str,
    real_size: u64,
    stored: u64,
    segments: &[Segment],
) -> io::Result<()> {
    let mut end_of_previous = 0u64;
    let mut total = 0u64;
    for s in segments {
        let end = s
            .offset
            .checked_add(s.len)
            .ok_or_else(|| invalid(format!("{name}: a sparse segment overflows")))?;
        if s.offset < end_of_previous {
            return Err(invalid(format!(
                "{name}: sparse segments overlap or are out of order"
            )));
        }
        if end > real_size {
            return Err(invalid(format!(
                "{name}: a sparse segment runs past the file's size ({end} > {real_size})"
            )));
        }
        end_of_previous = end;
        total += s.len;
    }
    let last_with_data = segments.iter().rposition(|s| s.len > 0);
    if let Some(i) = last_with_data
        && segments[..i].iter().any(|s| s.len % BLOCK as u64 != 0)
    {
        return Err(invalid(format!(
            "{name}: a sparse segment before the last is not a whole number of blocks"
        )));
    }
    if total != stored {
        return Err(invalid(format!(
            "{name}: the sparse map holds {total} bytes but the header stores {stored}"
        )));
    }
    Ok(())
}

fn c_string(field: &[u8], what: &str) -> io::Result<String> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8(field[..end].to_vec())
        .map_err(|_| invalid(format!("a header {what} is not UTF-8")))
}

/// An octal field (spaces or NULs around the digits) or GNU base-256.
fn parse_number(field: &[u8], what: &str) -> io::Result<u64> {
    if field[0] & 0x80 != 0 {
        if field[0] != 0x80 || field[1..field.len() - 8].iter().any(|&b| b != 0) {
            return Err(invalid(format!("header {what} is negative or too large")));
        }
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&field[field.len() - 8..]);
        return Ok(u64::from_be_bytes(bytes));
    }
    let text = std::str::from_utf8(field)
        .map_err(|_| invalid(format!("header {what} is not a number")))?;
    let digits = text.trim_matches(|c| c == ' ' || c == '\0');
    if digits.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(digits, 8).map_err(|_| invalid(format!("header {what} is not octal")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut TarWriter<Vec<u8>>)) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new(), 1_700_000_000);
        build(&mut w);
        w.finish().unwrap()
    }

    #[test]
    fn regular_and_sparse_entries_round_trip() {
        let segments: Vec<Segment> = (0..30)
            .map(|i| Segment {
                offset: i * 10_000,
                len: 100 + i,
            })
            .collect();
        let bytes = archive(|w| {
            w.regular("a/file", 5, &b"hello"[..]).unwrap();
            w.sparse("a/sparse", 1 << 40, &segments, |out, s| {
                out.write_all(&vec![1; s.len as usize])
            })
            .unwrap();
        });
        let mut r = TarReader::new(&bytes[..]);
        let first = r.next_header().unwrap().unwrap();
        assert_eq!((first.name.as_str(), first.stored), ("a/file", 5));
        let mut buf = [0u8; 5];
        r.read_data(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        let second = r.next_header().unwrap().unwrap();
        assert_eq!(second.apparent_size(), 1 << 40);
        let EntryBody::Sparse { segments: got, .. } = &second.body else {
            panic!("not sparse")
        };
        assert_eq!(got, &block_aligned(&segments, 1 << 40));
        assert!(got.iter().all(|s| s.offset % 512 == 0 && s.len % 512 == 0));
        assert!(r.next_header().unwrap().is_none());
        r.expect_only_padding().unwrap();
    }

    #[test]
    fn gnu_tar_reads_what_we_write() {
        let dir = tempfile::tempdir().unwrap();
        let segments = [
            Segment {
                offset: 4096,
                len: 3,
            },
            Segment {
                offset: 1 << 20,
                len: 2,
            },
        ];
        let bytes = archive(|w| {
            w.sparse("upper.ext4", 3 << 20, &segments, |out, s| {
                let mut block = vec![0u8; s.len as usize];
                let text: &[u8] = if s.offset == 4096 { b"abc" } else { b"de" };
                block[..text.len()].copy_from_slice(text);
                out.write_all(&block)
            })
            .unwrap();
        });
        std::fs::write(dir.path().join("a.tar"), &bytes).unwrap();
        let status = std::process::Command::new("tar")
            .args(["-xf", "a.tar"])
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let out = std::fs::read(dir.path().join("upper.ext4")).unwrap();
        assert_eq!(out.len(), 3 << 20);
        assert_eq!(&out[4096..4099], b"abc");
        assert_eq!(&out[1 << 20..(1 << 20) + 2], b"de");
        assert_eq!(out.iter().filter(|&&b| b != 0).count(), 5);
    }

    #[test]
    fn numbers_past_the_octal_range_use_base_256() {
        let mut field = [0u8; 12];
        write_number(&mut field, 1 << 40);
        assert_eq!(field[0], 0x80);
        assert_eq!(parse_number(&field, "size").unwrap(), 1 << 40);
        write_number(&mut field, 0o777);
        assert_eq!(&field, b"00000000777\0");
    }

    #[test]
    fn bad_sparse_maps_are_refused() {
        let seg = |offset, len| Segment { offset, len };
        for (real, stored, map) in [
            (100, 20, vec![seg(0, 10), seg(5, 10)]),     // overlap
            (100, 20, vec![seg(50, 10), seg(0, 10)]),    // out of order
            (100, 20, vec![seg(0, 10), seg(95, 10)]),    // past the end
            (100, 30, vec![seg(0, 10), seg(20, 10)]),    // stored disagrees
            (2000, 20, vec![seg(0, 10), seg(1024, 10)]), // ambiguous to GNU tar
            (u64::MAX, 1, vec![seg(u64::MAX, 1)]),       // overflow
        ] {
            let err = check_sparse_map("x", real, stored, &map).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{map:?}");
        }
    }
}
