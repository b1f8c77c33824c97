//! The guest's boot assets: kernel, modules (with their load order) and the
//! `msb-guest-init` binary, all in one kernel directory (`MSB_KERNEL_DIR`,
//! default `MSB_HOME/kernel`), and the initramfs built from them, cached by
//! content hash under `MSB_HOME/cache`.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;

/// Overrides the kernel directory.
pub const MSB_KERNEL_DIR_ENV: &str = "MSB_KERNEL_DIR";

/// File name of the guest init inside the kernel directory.
pub const GUEST_INIT_FILE: &str = "msb-guest-init";

/// Command that installs the assets into a kernel directory.
pub const SETUP_COMMAND: &str = "scripts/setup-runtime.sh";

/// Located boot assets.
#[derive(Debug, Clone)]
pub(crate) struct GuestAssets {
    pub dir: PathBuf,
    /// `vmlinux` (PVH entry, boots faster) when present, else `vmlinuz`.
    pub kernel: PathBuf,
    pub init: PathBuf,
    /// Module file names in load order.
    pub modules: Vec<String>,
}

/// The kernel directory in force for `home`.
pub fn kernel_dir(home: &MsbHome) -> PathBuf {
    std::env::var_os(MSB_KERNEL_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home.kernel_dir())
}

/// What is present and missing in a kernel directory, for `msb doctor`.
pub fn missing_assets(dir: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !dir.join("vmlinux").is_file() && !dir.join("vmlinuz").is_file() {
        missing.push("vmlinuz (guest kernel)".to_string());
    }
    if !dir.join("modules.order").is_file() {
        missing.push("modules.order (guest modules)".to_string());
    }
    if !dir.join(GUEST_INIT_FILE).is_file() {
        missing.push(format!("{GUEST_INIT_FILE} (guest init)"));
    }
    missing
}

impl GuestAssets {
    /// Find the assets, or a `Runtime` error naming the setup command.
    pub fn locate(home: &MsbHome) -> MicrosandboxResult<Self> {
        Self::locate_in(kernel_dir(home))
    }

    fn locate_in(dir: PathBuf) -> MicrosandboxResult<Self> {
        let missing = missing_assets(&dir);
        if !missing.is_empty() {
            return Err(MicrosandboxError::Runtime(format!(
                "guest boot assets missing in {}: {}; install them with `{SETUP_COMMAND} {}` (or `make setup`)",
                dir.display(),
                missing.join(", "),
                dir.display()
            )));
        }
        let kernel = ["vmlinux", "vmlinuz"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .unwrap_or_else(|| dir.join("vmlinuz"));
        let order_path = dir.join("modules.order");
        let order =
            fs::read_to_string(&order_path).map_err(|e| MicrosandboxError::io(&order_path, e))?;
        let modules = order
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        Ok(Self {
            init: dir.join(GUEST_INIT_FILE),
            kernel,
            modules,
            dir,
        })
    }

    /// The initramfs for these assets: `/init`, `/modules/*.ko` and
    /// `/modules.order`, as cpio newc; built once per content hash.
    pub fn initramfs(&self, home: &MsbHome) -> MicrosandboxResult<PathBuf> {
        let init = fs::read(&self.init).map_err(|e| MicrosandboxError::io(&self.init, e))?;
        let mut files: Vec<(String, u32, Vec<u8>)> = vec![("init".to_string(), 0o100755, init)];
        for module in &self.modules {
            let path = self.dir.join("modules").join(module);
            let bytes = fs::read(&path).map_err(|e| MicrosandboxError::io(&path, e))?;
            files.push((format!("modules/{module}"), 0o100644, bytes));
        }
        let order = self.modules.join("\n") + "\n";
        files.push(("modules.order".to_string(), 0o100644, order.into_bytes()));

        let mut hasher = Sha256::new();
        for (name, mode, bytes) in &files {
            hasher.update(name.as_bytes());
            hasher.update(mode.to_le_bytes());
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        }
        let key = hex::encode(&hasher.finalize()[..12]);
        let cache = home.cache_dir();
        let out = cache.join(format!("initramfs-{key}.cpio"));
        if out.is_file() {
            return Ok(out);
        }
        fs::create_dir_all(&cache).map_err(|e| MicrosandboxError::io(&cache, e))?;
        let mut archive = Vec::new();
        let mut ino = 1;
        cpio_entry(&mut archive, &mut ino, "modules", 0o040755, &[]);
        for (name, mode, bytes) in &files {
            cpio_entry(&mut archive, &mut ino, name, *mode, bytes);
        }
        cpio_entry(&mut archive, &mut ino, "TRAILER!!!", 0, &[]);
        let partial = tempfile::NamedTempFile::new_in(&cache)
            .map_err(|e| MicrosandboxError::io(&cache, e))?;
        fs::write(partial.path(), &archive)
            .map_err(|e| MicrosandboxError::io(partial.path(), e))?;
        partial
            .persist(&out)
            .map_err(|e| MicrosandboxError::io(&out, e.error))?;
        Ok(out)
    }
}

/// Append one cpio "newc" entry (ASCII hex header, 4-byte alignment).
fn cpio_entry(out: &mut Vec<u8>, ino: &mut u32, name: &str, mode: u32, data: &[u8]) {
    let name_len = name.len() + 1;
    let header = format!(
        "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
        *ino,
        mode,
        0,
        0,
        1,
        0,
        data.len(),
        0,
        0,
        0,
        0,
        name_len,
        0
    );
    *ino += 1;
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_newc() {
        let mut out = Vec::new();
        let mut ino = 1;
        cpio_entry(&mut out, &mut ino, "init", 0o100755, b"abc");
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        assert_eq!(&out[110..114], b"init");
    }

    #[test]
    fn missing_assets_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = missing_assets(dir.path());
        assert_eq!(missing.len(), 3);
        let err = GuestAssets::locate_in(dir.path().to_path_buf()).unwrap_err();
        assert_eq!(err.kind(), "Runtime");
        assert!(err.to_string().contains(SETUP_COMMAND), "{err}");
    }
}
