//! The fuzz smoke run of `make test` (docs/fuzzing.md): on the ordinary
//! test build, every entry point of `microsandbox::fuzzing` runs over its
//! checked-in corpus (`fuzz/corpus/<target>/`) and then a few thousand
//! deterministic mutations of it (bit flips, truncation, splicing, length
//! fields set to extremes, from a seeded RNG), a few seconds per target.
//! The real libFuzzer runs are `make fuzz`.
//!
//! The ignored test `write_seed_corpus` (run by `fuzz/seed.sh`) makes the
//! valid seeds of the corpus from the crate itself: manifests and archives
//! exported from real artifacts, layouts, layers, guest and network frames.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use microsandbox::fuzzing::{LAYER_SEPARATOR, TARGETS};
use microsandbox::{ExportOpts, IntegrityAlgorithm, Snapshot};

/// Mutations tried per target after its corpus.
const MUTATIONS: usize = 3000;

/// Time a target may spend on mutations before the run stops early (a
/// loaded machine still finishes; every corpus file always runs).
const BUDGET: Duration = Duration::from_secs(6);

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("corpus of {target}: {e}"))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files.iter().map(|p| fs::read(p).unwrap()).collect()
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One mutation of a corpus input (`other` is a second input to splice).
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(6) {
            0 if !out.is_empty() => {
                let at = rng.below(out.len());
                out[at] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let at = rng.below(out.len());
                out[at] = rng.next() as u8;
            }
            2 => {
                let keep = rng.below(out.len() + 1);
                out.truncate(keep);
            }
            3 if !other.is_empty() => {
                let at = rng.below(out.len() + 1);
                let from = rng.below(other.len());
                let n = rng.below(other.len() - from + 1).min(4096);
                out.truncate(at);
                out.extend_from_slice(&other[from..from + n]);
            }
            4 if out.len() >= 8 => {
                // A length field set to an extreme, in either byte order
                // and as tar's octal digits.
                let extremes: [&[u8]; 8] = [
                    &[0xff; 4],
                    &[0; 4],
                    &[0xff; 8],
                    &[0x7f, 0xff, 0xff, 0xff],
                    &[0xff, 0xff, 0xff, 0x7f],
                    &[0x01, 0x00, 0x40, 0x00], // MAX_FRAME_LEN + 1, LE
                    b"77777777777",
                    b"00000000000",
                ];
                let value = extremes[rng.below(extremes.len())];
                let at = rng.below(out.len());
                let end = (at + value.len()).min(out.len());
                out[at..end].copy_from_slice(&value[..end - at]);
            }
            _ => {
                let at = rng.below(out.len() + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
        }
    }
    out
}

/// Runs `target` over its corpus, then mutations of it.
fn smoke(name: &str) {
    let (_, run) = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a known target");
    let seeds = corpus(name);
    assert!(seeds.len() >= 3, "{name}: corpus too small");
    for seed in &seeds {
        run(seed);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    let started = Instant::now();
    let mut done = 0;
    while done < MUTATIONS && started.elapsed() < BUDGET {
        let input = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        run(&mutate(&mut rng, input, other));
        done += 1;
    }
    eprintln!(
        "{name}: {} corpus inputs, {done} mutations in {:.1} s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(done >= 100, "{name}: only {done} mutations ran");
}

#[test]
fn manifest() {
    smoke("manifest");
}

#[test]
fn integrity_sparse_sha256() {
    smoke("integrity_sparse_sha256");
}

#[test]
fn integrity_merkle() {
    smoke("integrity_merkle");
}

#[test]
fn archive_import() {
    smoke("archive_import");
}

#[test]
fn image_layer() {
    smoke("image_layer");
}

#[test]
fn guest_frames() {
    smoke("guest_frames");
}

#[test]
fn netd_frames() {
    smoke("netd_frames");
}

#[test]
fn every_target_has_a_smoke_test_and_a_fuzz_target() {
    let here = include_str!("fuzz_smoke.rs");
    for (name, _) in TARGETS {
        assert!(here.contains(&format!("smoke(\"{name}\")")), "{name}");
        let target = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        assert!(target.exists(), "{}", target.display());
    }
}

// ---------------------------------------------------------------------------
// The seed corpus

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus_dir(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

/// A small disk artifact: 1 MiB apparent, a few KiB of data.
fn small_artifact(dir: &Path, algorithm: Option<IntegrityAlgorithm>) -> Snapshot {
    fs::create_dir_all(dir).unwrap();
    let f = File::create(dir.join("upper.ext4")).unwrap();
    f.set_len(1 << 20).unwrap();
    f.write_all_at(b"superblock", 1024).unwrap();
    f.write_all_at(&[0x42; 3000], 300_000).unwrap();
    f.write_all_at(b"end", (1 << 20) - 3).unwrap();
    drop(f);
    common::artifacts::write_manifest(dir, 1 << 20, None, algorithm, "2026-11-30T12:00:00Z")
}

fn layout(len: u32, flags: u8, writes: &[(u32, u32, u8, &[u8])]) -> Vec<u8> {
    let mut out = len.to_le_bytes().to_vec();
    out.push(flags);
    for (offset, n, mode, bytes) in writes {
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.push(*mode);
        out.extend_from_slice(bytes);
    }
    out
}

/// A layer tar from `(path, kind, body or link target)`.
fn layer(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, body) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        // Raw names: the builder refuses `..` and absolute paths.
        let name = path.as_bytes();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        if kind.is_symlink() || kind.is_hard_link() {
            header
                .set_link_name(String::from_utf8_lossy(body).as_ref())
                .unwrap();
            header.set_size(0);
            header.set_cksum();
            builder.append(&header, &[][..]).unwrap();
        } else if kind.is_file() {
            header.set_size(body.len() as u64);
            header.set_cksum();
            builder.append(&header, *body).unwrap();
        } else {
            if kind.is_block_special() || kind.is_character_special() {
                header.set_device_major(1).unwrap();
                header.set_device_minor(3).unwrap();
            }
            header.set_size(0);
            header.set_cksum();
            builder.append(&header, &[][..]).unwrap();
        }
    }
    builder.into_inner().unwrap()
}

fn frame(kind: u8, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn link(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![200u8]; // big chunks: whole frames per feed
    for f in frames {
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// An Ethernet + IPv4 frame from the guest carrying `proto` `payload`.
fn ipv4(dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    use microsandbox::network::{GATEWAY_MAC, GUEST_ADDR, GUEST_MAC};
    let mut f = GATEWAY_MAC.to_vec();
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20 + payload.len();
    let mut ip = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ];
    ip.extend_from_slice(&GUEST_ADDR.octets());
    ip.extend_from_slice(&dst);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(payload);
    f
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
#[ignore = "writes fuzz/corpus: run by fuzz/seed.sh"]
fn write_seed_corpus() {
    use microsandbox::network::{DNS_ADDR, GATEWAY, GUEST_ADDR, GUEST_MAC};
    use tar::EntryType as T;

    // manifest: real manifests, a full one with its vm.json, malformed ones.
    let tmp = tempfile::tempdir().unwrap();
    let disk = small_artifact(
        &tmp.path().join("disk"),
        Some(IntegrityAlgorithm::MerkleSha256V1),
    );
    let plain = small_artifact(&tmp.path().join("plain"), None);
    let full_dir = tmp.path().join("full");
    common::artifacts::make_full(&full_dir);
    let manifest_of = |dir: &Path| fs::read(dir.join("manifest.json")).unwrap();
    put("manifest", "disk", &manifest_of(disk.path()));
    put("manifest", "no-integrity", &manifest_of(plain.path()));
    let mut full = manifest_of(&full_dir);
    full.push(0);
    full.extend_from_slice(&fs::read(full_dir.join("vm.json")).unwrap());
    put("manifest", "full-with-vm", &full);
    let valid = String::from_utf8(manifest_of(disk.path())).unwrap();
    put(
        "manifest",
        "bad-dup-label",
        valid
            .replace(r#""labels":{"#, r#""labels":{"a":"1","a":"2","#)
            .as_bytes(),
    );
    put(
        "manifest",
        "bad-schema-2",
        valid
            .replace(r#""schema":1"#, r#""schema":2,"new":true"#)
            .as_bytes(),
    );
    put(
        "manifest",
        "bad-huge-size",
        valid
            .replace(
                r#""size_bytes":1048576"#,
                r#""size_bytes":9007199254740992"#,
            )
            .as_bytes(),
    );
    put(
        "manifest",
        "bad-upper-path",
        valid
            .replace(r#""file":"upper.ext4""#, r#""file":"../upper.ext4""#)
            .as_bytes(),
    );

    // integrity: sizes at the edges, holes, written zeros, a base offset.
    let leaf = 65536u32;
    let layouts: [(&str, Vec<u8>); 7] = [
        ("empty", layout(0, 0, &[])),
        ("one-byte", layout(1, 0, &[(0, 1, 0, &[7])])),
        (
            "leaf-edge",
            layout(leaf + 1, 0, &[(leaf - 2, 3, 1, b"abc")]),
        ),
        (
            "holes",
            layout(
                5 * leaf + 123,
                0,
                &[
                    (9, 10, 0, &[1]),
                    (4 * leaf, 200, 1, b"xyz"),
                    (5 * leaf + 100, 23, 0, &[2]),
                ],
            ),
        ),
        (
            "written-zeros",
            layout(3 * leaf, 0, &[(0, leaf, 2, &[]), (2 * leaf, 5, 0, &[9])]),
        ),
        (
            "base-offset",
            layout(2 * leaf + 77, 0b101, &[(100, 70_000, 0, &[3])]),
        ),
        (
            "big",
            layout(
                (6 << 20) | (2 << 30),
                0,
                &[(1 << 20, 200_000, 0, &[5]), ((6 << 20) - 4, 4, 1, b"tail")],
            ),
        ),
    ];
    for (name, bytes) in &layouts {
        put("integrity_sparse_sha256", name, bytes);
        put("integrity_merkle", name, bytes);
    }

    // archive_import: real exports (zstd as written; plain tar written
    // raw and through the zstd mode), the 0.6.6 release's archive, garbage.
    let home = common::TestHome::new();
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let export = |dir: &Path, file: &str, plain_tar: bool| -> Vec<u8> {
        let path = out.join(file);
        let opts = ExportOpts {
            plain_tar,
            ..ExportOpts::default()
        };
        runtime
            .block_on(home.run(Snapshot::export(dir.display().to_string(), &path, opts)))
            .unwrap();
        fs::read(path).unwrap()
    };
    let tagged = |name: &str, mode: u8, bytes: &[u8]| {
        let mut input = vec![mode];
        input.extend_from_slice(bytes);
        put("archive_import", name, &input);
    };
    let disk_tar = export(disk.path(), "disk.tar", true);
    tagged("disk-plain-tar", 0, &disk_tar);
    tagged("disk-tar-via-zstd", 1, &disk_tar);
    tagged("disk-plain-tar-dest", 2, &disk_tar);
    tagged(
        "no-integrity-zst",
        0,
        &export(plain.path(), "plain.tar.zst", false),
    );
    tagged("full-zst", 0, &export(&full_dir, "full.tar.zst", false));
    let v066 = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/conformance/archives/v066-export.tar.zst");
    tagged("v066-zst", 0, &fs::read(v066).unwrap());
    tagged("bad-not-an-archive", 0, b"hello, this is not a tar");
    tagged("bad-truncated-tar", 1, &disk_tar[..disk_tar.len() / 2]);

    // image_layer: the features of OCI layers and the hostile shapes.
    let dir = T::Directory;
    let file = T::Regular;
    put(
        "image_layer",
        "plain",
        &layer(&[
            ("etc/", dir, b""),
            ("etc/hosts", file, b"127.0.0.1 localhost\n"),
            ("bin/", dir, b""),
            ("bin/sh", file, b"#!"),
        ]),
    );
    let lower = layer(&[
        ("etc/", dir, b""),
        ("etc/a", file, b"a"),
        ("etc/b", file, b"b"),
        ("var/", dir, b""),
        ("var/x", file, b"x"),
    ]);
    let upper = layer(&[
        ("etc/.wh.a", file, b""),
        ("var/.wh..wh..opq", file, b""),
        ("var/y", file, b"y"),
    ]);
    let mut two = lower.clone();
    two.extend_from_slice(LAYER_SEPARATOR);
    two.extend_from_slice(&upper);
    put("image_layer", "whiteouts-two-layers", &two);
    put(
        "image_layer",
        "links",
        &layer(&[
            ("a", file, b"data"),
            ("hard", T::Link, b"a"),
            ("soft", T::Symlink, b"a"),
            ("abs", T::Symlink, b"/etc/passwd"),
            ("up", T::Symlink, b"../outside"),
        ]),
    );
    put(
        "image_layer",
        "odd-paths",
        &layer(&[
            ("../escape", file, b"x"),
            ("/abs/file", file, b"x"),
            ("./a/./b/../c", file, b"x"),
            ("dev/null", T::Char, b""),
            ("dev/sda", T::Block, b""),
            ("fifo", T::Fifo, b""),
        ]),
    );
    // A symlink out of the root in one layer, then a whiteout and a file
    // through it in the next: must touch nothing outside.
    let mut through = layer(&[
        ("up", T::Symlink, b"../outside"),
        ("abs", T::Symlink, b"/tmp"),
    ]);
    through.extend_from_slice(LAYER_SEPARATOR);
    through.extend_from_slice(&layer(&[
        ("up/.wh.victim", file, b""),
        ("up/sub/.wh..wh..opq", file, b""),
        ("up/victim", file, b"overwritten"),
    ]));
    put("image_layer", "through-a-symlink", &through);
    put(
        "image_layer",
        "file-through-symlink-one-layer",
        &layer(&[
            ("up", T::Symlink, b"../outside"),
            ("up/victim", file, b"overwritten"),
        ]),
    );
    put(
        "image_layer",
        "whiteout-of-the-parent",
        &layer(&[
            ("etc/", dir, b""),
            ("etc/.wh...", file, b""),
            ("etc/.wh..", file, b""),
        ]),
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &lower).unwrap();
    put("image_layer", "gzip", &gz.finish().unwrap());
    put(
        "image_layer",
        "zstd",
        &zstd::encode_all(&upper[..], 1).unwrap(),
    );

    // guest_frames: a real session from the guest, and hostile frames.
    let json = |v: &str| frame(0, 0, v.as_bytes());
    let mut session = json(r#"{"type":"ready","version":3}"#);
    session.extend(json(r#"{"type":"configured","warnings":["no rng"]}"#));
    session.extend(frame(1, 1, b"hello\n"));
    session.extend(frame(2, 1, b"oops\n"));
    session.extend(json(r#"{"type":"credit","id":1,"bytes":4096}"#));
    session.extend(json(
        r#"{"type":"exit","id":1,"code":137,"signal":9,"timed_out":true}"#,
    ));
    session.extend(json(
        r#"{"type":"error","id":null,"message":"bad request"}"#,
    ));
    put("guest_frames", "session", &session);
    let mut host = json(r#"{"type":"hello"}"#);
    host.extend(json(r#"{"type":"exec","id":1,"argv":["sh","-c","echo hi"],"env":{"A":"b"},"cwd":"/","stdin":true,"timeout_ms":1000,"window":65536}"#));
    host.extend(frame(3, 1, b"input"));
    host.extend(json(r#"{"type":"stdin_close","id":1}"#));
    put("guest_frames", "host-session", &host);
    let mut huge = frame(1, 1, b"x");
    huge[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
    put("guest_frames", "bad-huge-length", &huge);
    put("guest_frames", "bad-kind", &frame(9, 1, b"x"));
    put(
        "guest_frames",
        "bad-truncated",
        &frame(1, 1, b"hello")[..10],
    );

    // netd_frames: ARP for the gateway, a TCP SYN, DNS, ICMP, garbage.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&GUEST_MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&GUEST_MAC);
    arp.extend_from_slice(&GUEST_ADDR.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&GATEWAY.octets());
    let mut syn = vec![
        0xc0, 0x00, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ];
    let tcp_sum = pseudo_sum(GUEST_ADDR.octets(), [1, 1, 1, 1], 6, &syn);
    syn[16..18].copy_from_slice(&tcp_sum.to_be_bytes());
    let mut dns = vec![0xc0, 0x01, 0x00, 0x35, 0, 0, 0, 0];
    dns.extend_from_slice(&[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7]);
    dns.extend_from_slice(b"example\x03com\x00\x00\x01\x00\x01");
    let dns_len = dns.len() as u16;
    dns[4..6].copy_from_slice(&dns_len.to_be_bytes());
    let icmp = {
        let mut m = vec![8, 0, 0, 0, 0, 1, 0, 1, b'p', b'i', b'n', b'g'];
        let sum = checksum(&m);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        m
    };
    put("netd_frames", "arp", &link(&[arp.clone()]));
    put(
        "netd_frames",
        "tcp-syn-denied",
        &link(&[arp.clone(), ipv4([1, 1, 1, 1], 6, &syn)]),
    );
    put(
        "netd_frames",
        "syn-to-gateway",
        &link(&[ipv4(GATEWAY.octets(), 6, &syn)]),
    );
    put(
        "netd_frames",
        "dns",
        &link(&[ipv4(DNS_ADDR.octets(), 17, &dns)]),
    );
    put(
        "netd_frames",
        "icmp-gateway",
        &link(&[arp, ipv4(GATEWAY.octets(), 1, &icmp)]),
    );
    let mut split = link(&[ipv4([8, 8, 8, 8], 6, &syn)]);
    split[0] = 1; // 7-byte chunks: every frame arrives in pieces
    put("netd_frames", "split-frames", &split);
    put(
        "netd_frames",
        "bad-length",
        &[200, 0xff, 0xff, 0xff, 0xff, 1, 2, 3],
    );
}

/// The TCP/UDP checksum over the IPv4 pseudo-header and `segment`.
fn pseudo_sum(src: [u8; 4], dst: [u8; 4], proto: u8, segment: &[u8]) -> u16 {
    let mut bytes = src.to_vec();
    bytes.extend_from_slice(&dst);
    bytes.extend_from_slice(&[0, proto]);
    bytes.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    bytes.extend_from_slice(segment);
    checksum(&bytes)
}
