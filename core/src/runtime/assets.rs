//! The guest's boot assets: kernel, modules (with their load order) and the
//! `msb-guest-init` binary, all in one directory, and the initramfs built
//! from them, cached by content hash under `MSB_HOME/cache`.
//!
//! Where the directory is found, in this order (`msb doctor` prints it):
//! 1. the configuration's `guest_assets_dir` ([`Config`](crate::Config));
//! 2. `MSB_KERNEL_DIR`;
//! 3. `$MSB_HOME/kernel`;
//! 4. the directory a binding registered with [`register_shipped_assets_dir`]
//!    (the Go module links the core statically, so "next to the library" is
//!    the user's program; it registers the directory it ships instead);
//! 5. `microsandbox-guest/` next to the native library or executable that
//!    holds this code (how the npm package and the wheel ship the assets,
//!    so they work with no environment variable).
//!
//! An explicit directory (1 or 2) is used as given, complete or not: a
//! typo must not silently boot other assets. Otherwise the first complete
//! one of 3 to 5 is used.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::publish::StagedFile;

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

/// Name of the assets directory shipped next to the native library.
pub const SHIPPED_ASSETS_DIR: &str = "microsandbox-guest";

/// One place the guest assets are searched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetsCandidate {
    /// The directory.
    pub dir: PathBuf,
    /// Why it is searched: `config`, `MSB_KERNEL_DIR`, `home` or `shipped`.
    pub source: &'static str,
    /// Explicitly chosen: used as given, never skipped.
    pub explicit: bool,
}

/// The shipped assets directory a binding registered, if any.
static REGISTERED_SHIPPED_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Register the guest assets directory a binding ships (searched after
/// `$MSB_HOME/kernel`, before the directory next to the native library).
/// The first registration wins; later ones are ignored.
pub fn register_shipped_assets_dir(dir: impl Into<PathBuf>) {
    let _ = REGISTERED_SHIPPED_DIR.set(dir.into());
}

/// Every place the guest assets of `home` are searched, in order.
pub fn guest_assets_search(home: &MsbHome) -> Vec<AssetsCandidate> {
    let mut out = Vec::new();
    let mut push = |dir: PathBuf, source, explicit| {
        out.push(AssetsCandidate {
            dir,
            source,
            explicit,
        })
    };
    if let Some(dir) = home.guest_assets_dir() {
        push(dir.to_path_buf(), "config", true);
    }
    if let Some(dir) = std::env::var_os(MSB_KERNEL_DIR_ENV).filter(|v| !v.is_empty()) {
        push(PathBuf::from(dir), MSB_KERNEL_DIR_ENV, true);
    }
    push(home.kernel_dir(), "home", false);
    if let Some(dir) = REGISTERED_SHIPPED_DIR.get() {
        push(dir.clone(), "shipped", false);
    }
    if let Some(dir) = native_library_dir() {
        push(dir.join(SHIPPED_ASSETS_DIR), "shipped", false);
    }
    out
}

/// The guest assets directory in force for `home` (see the module
/// documentation); when none is complete, the first place searched.
pub fn kernel_dir(home: &MsbHome) -> PathBuf {
    let search = guest_assets_search(home);
    let chosen = search
        .iter()
        .find(|c| c.explicit || missing_assets(&c.dir).is_empty())
        .or(search.first());
    chosen
        .map(|c| c.dir.clone())
        .unwrap_or_else(|| home.kernel_dir())
}

/// The directory of the shared object (or executable) this code is linked
/// into: a `.node` addon, a Python extension, a Go program or `msb`.
fn native_library_dir() -> Option<PathBuf> {
    use std::ffi::CStr;
    use std::os::unix::ffi::OsStrExt;
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    let addr = native_library_dir as *const libc::c_void;
    // SAFETY: dladdr only reads the loader's tables for an address of our
    // own code and fills `info`, which is zeroed and large enough.
    let found = unsafe { libc::dladdr(addr, info.as_mut_ptr()) };
    // SAFETY: dladdr returned non-zero, so it initialised `info`.
    let info = (found != 0).then(|| unsafe { info.assume_init() })?;
    if info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the loader, alive
    // as long as the object is loaded (which holds this code).
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    let path = match name.to_bytes() {
        // The main program may be reported without a name.
        b"" => std::env::current_exe().ok()?,
        bytes => PathBuf::from(std::ffi::OsStr::from_bytes(bytes)),
    };
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    path.parent().map(Path::to_path_buf)
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
        // A cache: rebuilt if lost, so published without syncing.
        let staged = StagedFile::new(&out, "building", 0o600)?;
        staged
            .file()
            .write_all(&archive)
            .map_err(|e| MicrosandboxError::io(&out, e))?;
        staged.publish(false)?;
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
