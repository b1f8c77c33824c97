//! Builds a tiny OCI image archive from the host's static busybox (Debian's
//! `busybox-static`), for tests and the demo: no container registry is
//! reachable from our machines. One uncompressed layer: `/bin/busybox`, a
//! symlink per applet, `/etc/passwd`, `/etc/group`, and the usual empty dirs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::{MicrosandboxError, MicrosandboxResult};

/// Where Debian's busybox-static installs the binary.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// Reference given to the image unless the caller picks another.
pub const DEFAULT_BUSYBOX_REF: &str = "local/busybox:latest";

/// Write an OCI image layout tar at `out` holding busybox from `busybox`
/// (which must be statically linked), named `reference`. Blocking.
pub fn build_busybox_archive(
    busybox: &Path,
    reference: &str,
    out: &Path,
) -> MicrosandboxResult<()> {
    let binary = std::fs::read(busybox).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => MicrosandboxError::InvalidConfig(format!(
            "{} not found; install it with: apt-get install busybox-static",
            busybox.display()
        )),
        _ => MicrosandboxError::io(busybox, e),
    })?;
    if !is_static_elf(&binary) {
        return Err(MicrosandboxError::InvalidConfig(format!(
            "{} is not a static binary; install busybox-static (apt-get install busybox-static)",
            busybox.display()
        )));
    }
    let applets = list_applets(busybox)?;
    let layer = layer_tar(&binary, &applets).map_err(|e| MicrosandboxError::io(out, e))?;
    let layer_digest = sha256(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .map_err(|e| MicrosandboxError::Runtime(e.to_string()))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    }))
    .map_err(|e| MicrosandboxError::Runtime(e.to_string()))?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": reference, "io.containerd.image.name": reference},
        }],
    }))
    .map_err(|e| MicrosandboxError::Runtime(e.to_string()))?;

    let partial = PathBuf::from(format!("{}.partial", out.display()));
    let write = || -> std::io::Result<()> {
        let mut tar = tar::Builder::new(File::create(&partial)?);
        append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append(&mut tar, "index.json", &index)?;
        for blob in [&manifest, &config, &layer] {
            append(
                &mut tar,
                &format!("blobs/sha256/{}", &sha256(blob)[7..]),
                blob,
            )?;
        }
        tar.into_inner()?.sync_all()
    };
    write().map_err(|e| MicrosandboxError::io(&partial, e))?;
    std::fs::rename(&partial, out).map_err(|e| MicrosandboxError::io(out, e))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn append(tar: &mut tar::Builder<File>, name: &str, data: &[u8]) -> std::io::Result<()> {
    tar.append_data(
        &mut header(tar::EntryType::Regular, data.len(), 0o644),
        name,
        data,
    )
}

/// A root-owned header with a fixed mtime, so the archive is reproducible.
fn header(kind: tar::EntryType, size: usize, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size as u64);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// The applet names busybox reports, minus `busybox` itself.
fn list_applets(busybox: &Path) -> MicrosandboxResult<Vec<String>> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| MicrosandboxError::io(busybox, e))?;
    if !out.status.success() {
        return Err(MicrosandboxError::Runtime(format!(
            "{} --list failed",
            busybox.display()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect())
}

/// The layer: directories, the binary, applet symlinks, minimal /etc.
fn layer_tar(binary: &[u8], applets: &[String]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("var", 0o755),
    ] {
        tar.append_data(
            &mut header(tar::EntryType::Directory, 0, mode),
            format!("{dir}/"),
            &[][..],
        )?;
    }
    tar.append_data(
        &mut header(tar::EntryType::Regular, binary.len(), 0o755),
        "bin/busybox",
        binary,
    )?;
    for applet in applets {
        tar.append_link(
            &mut header(tar::EntryType::Symlink, 0, 0o777),
            format!("bin/{applet}"),
            "busybox",
        )?;
    }
    for (name, content) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("etc/hostname", "microsandbox\n"),
    ] {
        tar.append_data(
            &mut header(tar::EntryType::Regular, content.len(), 0o644),
            name,
            content.as_bytes(),
        )?;
    }
    tar.into_inner()
}

/// True for an ELF file with no `PT_INTERP` program header (no dynamic loader).
fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return false;
    }
    let read_u16 = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    let phoff = bytes[32..40]
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | b as usize);
    let (phentsize, phnum) = (read_u16(54), read_u16(56));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != PT_INTERP)
    })
}

/// Read at most the ELF header and program headers of `path`.
#[cfg(test)]
fn head_of(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = Vec::new();
    File::open(path)
        .unwrap()
        .take(1 << 16)
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_binaries_are_not_static() {
        assert!(!is_static_elf(&head_of(Path::new("/bin/ls"))));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }
}
