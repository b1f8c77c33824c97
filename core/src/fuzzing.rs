//! Fuzzing entry points. This module exists for fuzzing only (the
//! cargo-fuzz targets in `fuzz/` and the smoke run of
//! `core/tests/fuzz_smoke.rs`); it is not part of the API and may change at
//! any time. Each entry point takes arbitrary bytes, drives one parser or
//! unpacker of the crate that reads untrusted input, and panics only when a
//! property the crate promises is broken: a panic inside the code under
//! test, an error kind outside the documented ones, a digest that differs
//! from the plain reference written here from `docs/integrity.md`, a file
//! written outside its destination, staging left behind, or a hostile
//! frame length accepted. `docs/fuzzing.md` describes each target.

use std::fs::{self, File};
use std::io::{Cursor, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::control::Control;
use crate::error::MicrosandboxError;
use crate::home::MsbHome;
use crate::snapshot::integrity::{self, IntegrityAlgorithm, data_extents};
use crate::snapshot::manifest::{Manifest, VmSection};

/// An entry point: takes any bytes, panics only on a broken property.
pub type EntryPoint = fn(&[u8]);

/// Every entry point, by target name (the names of `fuzz/fuzz_targets/`).
pub const TARGETS: &[(&str, EntryPoint)] = &[
    ("manifest", manifest),
    ("integrity_sparse_sha256", integrity_sparse_sha256),
    ("integrity_merkle", integrity_merkle),
    ("archive_import", archive_import),
    ("image_layer", image_layer),
    ("guest_frames", guest_frames),
    ("netd_frames", netd_frames),
];

/// Panics unless `err` has one of the `allowed` kinds.
fn expect_kind(err: &MicrosandboxError, allowed: &[&str]) {
    assert!(
        allowed.contains(&err.kind()),
        "undocumented error kind {} here: {err}",
        err.kind()
    );
}

/// A scratch directory for one input: under `MSB_FUZZ_TMPDIR` if set (a
/// tmpfs keeps fsyncs cheap), else the system temporary directory.
fn scratch() -> tempfile::TempDir {
    let mut builder = tempfile::Builder::new();
    builder.prefix("msb-fuzz-");
    match std::env::var_os("MSB_FUZZ_TMPDIR") {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .expect("scratch directory")
}

/// Every path under `root`, sorted, with its size and inode (symlinks not
/// followed).
fn listing(root: &Path) -> Vec<(PathBuf, u64, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.push((path, meta.len(), meta.ino()));
        }
    }
    out.sort();
    out
}

/// The sentinel next to a destination: files that must stay as they are
/// whatever the input does.
struct Sentinel {
    dir: PathBuf,
    before: Vec<(PathBuf, u64, u64)>,
}

impl Sentinel {
    const VICTIM: &'static [u8] = b"must stay";

    fn plant(dir: PathBuf) -> Self {
        fs::create_dir_all(dir.join("sub")).expect("sentinel dir");
        fs::write(dir.join("victim"), Self::VICTIM).expect("sentinel file");
        fs::write(dir.join("sub/victim"), Self::VICTIM).expect("sentinel file");
        let before = listing(&dir);
        Self { dir, before }
    }

    /// Panics if anything under the sentinel changed or gained a link.
    fn check(&self) {
        assert_eq!(
            listing(&self.dir),
            self.before,
            "the input changed files outside its destination"
        );
        for victim in [self.dir.join("victim"), self.dir.join("sub/victim")] {
            assert_eq!(fs::read(&victim).ok().as_deref(), Some(Self::VICTIM));
            let links = fs::metadata(&victim).map(|m| m.nlink()).unwrap_or(0);
            assert_eq!(links, 1, "{} was hard-linked from inside", victim.display());
        }
    }
}

// ---------------------------------------------------------------------------
// manifest

/// `manifest`: the input is `manifest.json` bytes, optionally followed by a
/// NUL and `vm.json` bytes. A manifest that parses (parse validates) must
/// validate again, and its canonical bytes must parse to the same manifest
/// and be a fixed point; the same for a `vm.json` against it.
pub fn manifest(data: &[u8]) {
    let origin = Path::new("manifest.json");
    let (manifest_bytes, vm_bytes) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let manifest = match Manifest::parse(manifest_bytes, origin) {
        Ok(m) => m,
        Err(e) => return expect_kind(&e, &["ManifestInvalid"]),
    };
    manifest
        .validate(origin)
        .expect("a parsed manifest validates");
    let canonical = manifest.canonical_bytes();
    let again = Manifest::parse(&canonical, origin).expect("canonical bytes parse");
    assert_eq!(
        again, manifest,
        "canonical bytes parse to the same manifest"
    );
    assert_eq!(
        again.canonical_bytes(),
        canonical,
        "canonical form is stable"
    );
    assert_eq!(again.digest(), manifest.digest());
    let Some(vm_bytes) = vm_bytes else { return };
    let vm_origin = Path::new("vm.json");
    match VmSection::parse(vm_bytes, &manifest, vm_origin) {
        Ok(vm) => {
            let canonical = vm.canonical_bytes();
            let again = VmSection::parse(&canonical, &manifest, vm_origin)
                .expect("canonical vm.json parses");
            assert_eq!(again, vm);
            assert_eq!(again.canonical_bytes(), canonical);
        }
        Err(e) => expect_kind(&e, &["ManifestInvalid"]),
    }
}

// ---------------------------------------------------------------------------
// integrity

/// Largest apparent size a layout describes: several Merkle levels and
/// many 1 MiB read chunks, while the plain reference stays fast.
const LAYOUT_MAX_LEN: u64 = 6 << 20;

/// A sparse file described by fuzz bytes.
struct Layout {
    len: u64,
    /// Bytes of unrelated data before the layout in the source file (the
    /// copy path reads at a base offset).
    base: u64,
    writes: Vec<(u64, Vec<u8>)>,
}

/// Reads fuzz bytes as little-endian numbers; zeros once exhausted.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let head = self.take(4);
        b[..head.len()].copy_from_slice(head);
        u32::from_le_bytes(b)
    }

    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Layout {
    /// Header: apparent length (u32; its top two bits pick the scale), flags (u8: bit 0 puts the layout at
    /// a 4 KiB-multiple base in the source). Then extents until the input
    /// ends: offset (u32), length (u32, scaled so runs may span leaves),
    /// mode (u8): 0 repeats the next byte, 1 takes literal bytes from the
    /// input, 2 writes real zeros (allocated, must hash as a hole).
    fn parse(data: &[u8]) -> Self {
        let mut input = Bytes(data);
        let raw_len = input.u32();
        // The top two bits pick the scale, so most inputs are small and
        // fast while a quarter reach the bound; edge sizes (0, one byte,
        // leaf boundaries) stay reachable exactly.
        let scale = [256 << 10, 1 << 20, LAYOUT_MAX_LEN, LAYOUT_MAX_LEN][(raw_len >> 30) as usize];
        let len = u64::from(raw_len & 0x3fff_ffff) % (scale + 1);
        let flags = input.u8();
        let base = if flags & 1 == 1 {
            4096 * u64::from(flags >> 1)
        } else {
            0
        };
        let mut writes = Vec::new();
        while !input.is_empty() && writes.len() < 64 && len > 0 {
            let offset = u64::from(input.u32()) % len;
            let raw = u64::from(input.u32());
            let room = len - offset;
            let n = (raw % (room.min(300 * 1024) + 1)).max(1);
            let bytes = match input.u8() % 3 {
                0 => vec![input.u8(); n as usize],
                1 => {
                    let literal = input.take(n as usize).to_vec();
                    if literal.is_empty() {
                        vec![0x5a; n as usize]
                    } else {
                        literal.iter().copied().cycle().take(n as usize).collect()
                    }
                }
                _ => vec![0u8; n as usize],
            };
            writes.push((offset, bytes));
        }
        Self { len, base, writes }
    }

    /// Write the layout at `base` of a new file `path` with real holes.
    fn write(&self, path: &Path, base: u64) -> File {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .expect("layout file");
        file.set_len(base + self.len).expect("set_len");
        if base > 0 {
            // Unrelated non-zero data before the layout.
            file.write_all_at(&vec![0xee; base as usize], 0)
                .expect("base");
        }
        for (offset, bytes) in &self.writes {
            file.write_all_at(bytes, base + offset).expect("write");
        }
        file
    }
}

/// Every logical byte of `path`, read plainly (holes come back as zeros).
fn read_all(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut out))
        .expect("read");
    out
}

/// `msb-sparse-sha256-v1` as `docs/integrity.md` defines it, plainly.
fn reference_sparse_sha256(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"msb-sparse-sha256-v1\0");
    h.update((data.len() as u64).to_le_bytes());
    h.update(data);
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// `msb-merkle-sha256-v1` as `docs/integrity.md` defines it, plainly: every
/// leaf slot hashed, every node computed, no zero shortcut.
fn reference_merkle(data: &[u8]) -> String {
    const LEAF: usize = 65536;
    let n = data.len().div_ceil(LEAF).max(1);
    let width = n.next_power_of_two();
    let mut level: Vec<[u8; 32]> = (0..width)
        .map(|i| {
            let mut leaf = vec![0u8; LEAF];
            let start = (i * LEAF).min(data.len());
            let end = ((i + 1) * LEAF).min(data.len());
            leaf[..end - start].copy_from_slice(&data[start..end]);
            let mut h = Sha256::new();
            h.update([0x00]);
            h.update(&leaf);
            h.finalize().into()
        })
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| {
                let mut h = Sha256::new();
                h.update([0x01]);
                h.update(pair[0]);
                h.update(pair[1]);
                h.finalize().into()
            })
            .collect();
    }
    let mut h = Sha256::new();
    h.update(b"msb-merkle-sha256-v1\0");
    h.update((data.len() as u64).to_le_bytes());
    h.update(level[0]);
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// `integrity_sparse_sha256`: a random sparse layout hashed by the core
/// equals the plain reference.
pub fn integrity_sparse_sha256(data: &[u8]) {
    let layout = Layout::parse(data);
    let dir = scratch();
    let path = dir.path().join("upper");
    drop(layout.write(&path, 0));
    let plain = read_all(&path);
    assert_eq!(plain.len() as u64, layout.len);
    let got = integrity::upper_digest_controlled(
        &path,
        IntegrityAlgorithm::SparseSha256V1,
        &Control::detached(),
    )
    .expect("digest of a readable file");
    assert_eq!(got, reference_sparse_sha256(&plain), "len {}", layout.len);
}

/// `integrity_merkle`: a random sparse layout hashed by the core equals
/// the plain reference, and the copy-and-digest path (reading the layout
/// at a base offset of another file) writes an identical file with the
/// same digest.
pub fn integrity_merkle(data: &[u8]) {
    let layout = Layout::parse(data);
    let dir = scratch();
    let path = dir.path().join("upper");
    drop(layout.write(&path, 0));
    let plain = read_all(&path);
    let expected = reference_merkle(&plain);
    let got = integrity::upper_digest_controlled(
        &path,
        IntegrityAlgorithm::MerkleSha256V1,
        &Control::detached(),
    )
    .expect("digest of a readable file");
    assert_eq!(got, expected, "len {}", layout.len);

    let src_path = dir.path().join("source");
    let src = layout.write(&src_path, layout.base);
    let extents: Vec<(u64, u64)> = data_extents(&src, layout.base + layout.len)
        .expect("extents")
        .into_iter()
        .filter(|&(_, end)| end > layout.base)
        .map(|(start, end)| (start.saturating_sub(layout.base), end - layout.base))
        .collect();
    let copy_path = dir.path().join("copy");
    let copy = File::create_new(&copy_path).expect("copy file");
    let copied = integrity::copy_with_merkle_digest(&src, layout.base, &extents, layout.len, &copy)
        .expect("copy of a readable file");
    drop(copy);
    assert_eq!(copied, expected, "copy digest, base {}", layout.base);
    assert!(read_all(&copy_path) == plain, "the copy is the file");
}

// ---------------------------------------------------------------------------
// archive import

/// `archive_import`: the first byte picks how the rest becomes the archive
/// file (bit 0: zstd-compress it first, so tar mutations get through the
/// compression; otherwise it is written as is), then it is imported into a
/// temporary home: Ok or a documented kind, no panic, nothing outside the
/// destination, no staging left in the snapshots or image store.
pub fn archive_import(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = scratch();
    let archive = dir.path().join("in.tar.zst");
    let bytes = if mode & 1 == 1 {
        zstd::encode_all(rest, 1).expect("zstd of bytes")
    } else {
        rest.to_vec()
    };
    fs::write(&archive, &bytes).expect("archive file");
    let home = MsbHome::at(dir.path().join("home"));
    let sentinel = Sentinel::plant(dir.path().join("outside"));
    let dest = (mode & 2 == 2).then(|| dir.path().join("dest"));
    let result = crate::snapshot::archive::import_blocking(
        &home,
        &archive,
        dest.as_deref(),
        &Control::detached(),
    );
    match &result {
        Ok(handle) => {
            // What landed opens as an artifact.
            crate::snapshot::Snapshot::open_dir(handle.path()).expect("an imported artifact opens");
        }
        Err(e) => expect_kind(
            e,
            &[
                "ArchiveInvalid",
                "ManifestInvalid",
                "SnapshotIntegrity",
                "IntegrityAlgorithmUnsupported",
                "SnapshotAlreadyExists",
            ],
        ),
    }
    sentinel.check();
    let dest_root = dest.unwrap_or_else(|| home.snapshots_dir());
    for entry in fs::read_dir(&dest_root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains(crate::publish::STAGING_MARK),
            "staging left behind: {}",
            entry.path().display()
        );
    }
    let image_staging: Vec<_> = fs::read_dir(crate::image::staging_root(&home))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        image_staging.is_empty(),
        "image staging left: {image_staging:?}"
    );
    if result.is_err() {
        // A failed import leaves no artifact directory.
        let left: Vec<_> = fs::read_dir(&dest_root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "a failed import left {left:?}");
    }
    for entry in fs::read_dir(dir.path()).expect("scratch").flatten() {
        let name = entry.file_name();
        assert!(
            ["in.tar.zst", "home", "outside", "dest"].contains(&name.to_string_lossy().as_ref()),
            "the import wrote {} outside its home",
            entry.path().display()
        );
    }
}

// ---------------------------------------------------------------------------
// image layers

/// Separates layers in an `image_layer` input.
pub const LAYER_SEPARATOR: &[u8] = b"\n--msb-next-layer--\n";

/// `image_layer`: the input is up to three OCI layer blobs (tar, gzip or
/// zstd) separated by [`LAYER_SEPARATOR`], applied in order to an empty
/// root: no panic, documented kinds only, and nothing outside the root
/// touched (a sentinel directory beside it, which relative and absolute
/// links in the layers can name, must not change).
pub fn image_layer(data: &[u8]) {
    let dir = scratch();
    let root = dir.path().join("root");
    fs::create_dir(&root).expect("root");
    let sentinel = Sentinel::plant(dir.path().join("outside"));
    let mut layers = Vec::new();
    let mut rest = data;
    while layers.len() < 2 {
        let Some(at) = rest
            .windows(LAYER_SEPARATOR.len())
            .position(|w| w == LAYER_SEPARATOR)
        else {
            break;
        };
        layers.push(&rest[..at]);
        rest = &rest[at + LAYER_SEPARATOR.len()..];
    }
    layers.push(rest);
    let mut dir_times = crate::image::layers::DirTimes::default();
    let mut result = Ok(());
    for (i, layer) in layers.iter().enumerate() {
        let path = dir.path().join(format!("layer{i}"));
        fs::write(&path, layer).expect("layer file");
        result = crate::image::layers::apply_layer(&path, &root, &mut dir_times);
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = crate::image::layers::settle_dir_times(&root, &dir_times);
    }
    if let Err(e) = &result {
        expect_kind(e, &["ArchiveInvalid"]);
    }
    sentinel.check();
    for entry in fs::read_dir(dir.path()).expect("scratch").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            name == "root" || name == "outside" || name.starts_with("layer"),
            "a layer wrote {} outside the root",
            entry.path().display()
        );
    }
    // Best effort: a layer may have made directories without write access.
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+rwx"])
        .arg(&root)
        .status();
}

// ---------------------------------------------------------------------------
// guest protocol

/// `guest_frames`: a hostile guest's byte stream read as the host reads it
/// (`read_message`, the reader thread's and the handshake's loop) and as
/// a buffered decoder does (`decode`): no panic, both yield the same
/// messages, every message re-encodes to a frame that decodes to it, and a
/// length field beyond `MAX_FRAME_LEN` is refused after reading the header
/// only (nothing of the body read or allocated).
pub fn guest_frames(data: &[u8]) {
    use microsandbox_guest::protocol::{
        self, GuestMessage, HEADER_LEN, HostMessage, MAX_FRAME_LEN, ProtocolError,
    };

    fn check<M: protocol::Message + PartialEq + std::fmt::Debug>(data: &[u8]) {
        let mut cursor = Cursor::new(data);
        let mut read = Vec::new();
        loop {
            let at = cursor.position();
            let declared = data
                .get(at as usize + 9..at as usize + HEADER_LEN)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
            match protocol::read_message::<_, M>(&mut cursor) {
                Ok(Some(msg)) => {
                    assert!(cursor.position() - at <= (HEADER_LEN + MAX_FRAME_LEN) as u64);
                    read.push(msg);
                }
                Ok(None) => break,
                Err(e) => {
                    if declared.is_some_and(|len| len == 0 || len > MAX_FRAME_LEN) {
                        assert!(
                            matches!(e, ProtocolError::BadLength { .. }),
                            "a bad length must be refused as such: {e}"
                        );
                        assert_eq!(
                            cursor.position() - at,
                            HEADER_LEN as u64,
                            "a bad length is refused before its body is read"
                        );
                    }
                    break;
                }
            }
        }
        let mut decoded = Vec::new();
        let mut at = 0;
        while let Ok(Some((msg, used))) = protocol::decode::<M>(&data[at..]) {
            assert!((HEADER_LEN..=HEADER_LEN + MAX_FRAME_LEN).contains(&used));
            at += used;
            decoded.push(msg);
        }
        assert_eq!(read, decoded, "read_message and decode agree");
        for msg in decoded {
            let frame = protocol::encode(&msg).expect("a decoded message re-encodes");
            let back: M = protocol::decode_exact(&frame).expect("a re-encoded frame decodes");
            assert_eq!(back, msg);
        }
    }

    check::<GuestMessage>(data);
    check::<HostMessage>(data);
}

// ---------------------------------------------------------------------------
// network stack

/// `netd_frames`: a hostile guest's link bytes (frames behind 4-byte
/// big-endian lengths, as QEMU's socket netdev sends them) fed to the
/// msb-netd stack under policy `none` (no host socket is ever opened),
/// split at the points the first byte picks so partial frames are
/// exercised: no panic, every frame the stack sends back is a well-formed
/// length-prefixed Ethernet frame within the MTU, and a length beyond the
/// stack's limit ends the link with an error instead of a huge buffer.
pub fn netd_frames(data: &[u8]) {
    use crate::network::stack::{LinkDriver, StackOptions};
    use crate::network::{NetworkConfig, NetworkPolicy, Policy};

    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (qemu, _peer) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    let config = NetworkConfig {
        policy: NetworkPolicy::None,
        ..NetworkConfig::default()
    };
    let mut link = LinkDriver::new(
        qemu,
        StackOptions {
            policy: Policy::resolve(&config),
            published: Vec::new(),
            dns_upstream: None,
        },
    );
    let step = usize::from(split).max(1) * 7;
    for chunk in rest.chunks(step) {
        if let Err(e) = link.feed(chunk) {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
            break;
        }
        let out = link.take_output();
        let mut at = 0;
        while at < out.len() {
            let len = u32::from_be_bytes(out[at..at + 4].try_into().expect("4 bytes")) as usize;
            let frame = &out[at + 4..at + 4 + len];
            assert!(len <= 1514, "frame of {len} bytes to the guest");
            smoltcp::wire::EthernetFrame::new_checked(frame).expect("a well-formed frame");
            at += 4 + len;
        }
    }
}
