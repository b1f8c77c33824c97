//! Snapshot artifacts made without a VM: a sparse `upper.ext4` and its
//! manifest, written directly; and the file-tree helpers that prove a call
//! left nothing behind.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use microsandbox::snapshot::integrity::upper_digest_blocking;
use microsandbox::snapshot::manifest::{
    ImageRef, MANIFEST_SCHEMA, Manifest, SnapshotFormat, UpperIntegrity, UpperLayer,
    sha256_digest_string,
};
use microsandbox::snapshot::{MachineShape, VmFile, VmSection};
use microsandbox::{IntegrityAlgorithm, Snapshot};

pub const IMAGE_DIGEST: &str =
    "sha256:abababababababababababababababababababababababababababababababab";

/// A 64 MiB sparse upper with a few data runs (one of them all zeros, which
/// must not cost space anywhere), recorded with `algorithm`.
pub fn make_artifact(
    dir: &Path,
    seed: u8,
    parent: Option<&str>,
    algorithm: Option<IntegrityAlgorithm>,
) -> Snapshot {
    fs::create_dir_all(dir).unwrap();
    let upper = dir.join("upper.ext4");
    let f = File::create(&upper).unwrap();
    f.set_len(64 << 20).unwrap();
    f.write_all_at(&[seed; 300_000], 1 << 20).unwrap();
    f.write_all_at(&[0u8; 1 << 20], 8 << 20).unwrap();
    f.write_all_at(b"tail of the disk", (64 << 20) - 16)
        .unwrap();
    drop(f);
    write_manifest(
        dir,
        64 << 20,
        parent,
        algorithm,
        &format!("2026-11-2{}T10:00:00Z", seed % 10),
    )
}

/// An artifact whose upper has apparent size `size` and holds `data` bytes
/// of incompressible pseudo-random data (from `seed`) at 1 MiB, the rest a
/// hole: big enough to make a verify, export or import take a while.
pub fn make_big_artifact(
    dir: &Path,
    size: u64,
    data: u64,
    seed: u64,
    algorithm: Option<IntegrityAlgorithm>,
) -> Snapshot {
    fs::create_dir_all(dir).unwrap();
    let f = File::create(dir.join("upper.ext4")).unwrap();
    f.set_len(size).unwrap();
    let mut state = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < data {
        for word in buf.chunks_exact_mut(8) {
            // xorshift64: cheap, and zstd finds nothing to compress in it.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = (data - done).min(buf.len() as u64) as usize;
        f.write_all_at(&buf[..n], (1 << 20) + done).unwrap();
        done += n as u64;
    }
    drop(f);
    write_manifest(dir, size, None, algorithm, "2026-11-20T10:00:00Z")
}

/// Write the manifest of the artifact in `dir` (whose `upper.ext4` exists),
/// recording integrity with `algorithm`, and open it.
pub fn write_manifest(
    dir: &Path,
    size: u64,
    parent: Option<&str>,
    algorithm: Option<IntegrityAlgorithm>,
    created_at: &str,
) -> Snapshot {
    let upper = dir.join("upper.ext4");
    let integrity = algorithm.map(|a| UpperIntegrity {
        algorithm: a.name().into(),
        digest: upper_digest_blocking(&upper, a, None).unwrap(),
    });
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        format: SnapshotFormat::Raw,
        fstype: "ext4".into(),
        image: ImageRef {
            reference: "local/busybox:test".into(),
            manifest_digest: IMAGE_DIGEST.into(),
        },
        parent: parent.map(str::to_string),
        created_at: created_at.into(),
        labels: BTreeMap::from([("origin".to_string(), "test".to_string())]),
        upper: UpperLayer {
            file: "upper.ext4".into(),
            size_bytes: size,
            integrity,
        },
        source_sandbox: Some("api".into()),
    };
    fs::write(dir.join("manifest.json"), manifest.canonical_bytes()).unwrap();
    Snapshot::open_dir(dir).unwrap()
}

/// Bytes `path` occupies on disk.
pub fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// Every path under `root` (sorted), to prove a failed call left nothing.
pub fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

/// RAM of the synthetic full artifacts, in MiB.
pub const FULL_RAM_MIB: u32 = 64;

fn vm_file(dir: &Path, name: &str) -> VmFile {
    let path = dir.join(name);
    let algorithm = IntegrityAlgorithm::MerkleSha256V1;
    VmFile {
        file: name.into(),
        size_bytes: fs::metadata(&path).unwrap().len(),
        integrity: UpperIntegrity {
            algorithm: algorithm.name().into(),
            digest: upper_digest_blocking(&path, algorithm, None).unwrap(),
        },
    }
}

/// Turn the disk artifact in `dir` into a full one, as a capture writes it.
pub fn make_full(dir: &Path) -> Snapshot {
    make_artifact(dir, 3, None, Some(IntegrityAlgorithm::MerkleSha256V1));
    fs::write(dir.join("vm.state"), vec![0x5a; 70_000]).unwrap();
    let ram = File::create(dir.join("vm.ram")).unwrap();
    ram.set_len(u64::from(FULL_RAM_MIB) << 20).unwrap();
    ram.write_all_at(&[7u8; 3 << 20], 5 << 20).unwrap();
    ram.write_all_at(b"top of RAM", (u64::from(FULL_RAM_MIB) << 20) - 10)
        .unwrap();
    drop(ram);
    let vm = VmSection {
        machine: MachineShape {
            qemu: "7.2.22".into(),
            machine: "microvm".into(),
            accel: "tcg".into(),
            cpu: "qemu64".into(),
            memory_mib: FULL_RAM_MIB,
            cpus: 1,
            devices: 1,
            protocol: 3,
        },
        state: vm_file(dir, "vm.state"),
        ram: vm_file(dir, "vm.ram"),
        env: BTreeMap::from([("PATH".into(), "/bin".into())]),
        working_dir: "/".into(),
    };
    let vm_bytes = vm.canonical_bytes();
    fs::write(dir.join("vm.json"), &vm_bytes).unwrap();
    let mut manifest: Manifest =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    manifest
        .labels
        .insert("msb.vm".into(), sha256_digest_string(&vm_bytes));
    fs::write(dir.join("manifest.json"), manifest.canonical_bytes()).unwrap();
    Snapshot::open_dir(dir).unwrap()
}
