//! The guest's life around the agent: from the kernel's hand-off to the
//! merged root (pseudo filesystems, console, modules, disks, overlayfs, root
//! switch) and back down to a clean power-off (stop processes, sync, unmount
//! the overlay and the ext4 upper so it is clean for fsck and the next boot).
//!
//! Disks are told apart by their virtio serial (`msb-lower`, `msb-upper`),
//! falling back to `vda` (lower) and `vdb` (upper) when no serial is set.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};
use nix::mount::{MntFlags, MsFlags, umount2};
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, chroot, dup2_stderr, dup2_stdin, dup2_stdout, fchdir, sync};

use super::sys;

/// Serial of the read-only lower disk (EROFS).
pub const LOWER_SERIAL: &str = "msb-lower";
/// Serial of the writable upper disk (ext4).
pub const UPPER_SERIAL: &str = "msb-upper";

const LOWER_MNT: &str = "/mnt/lower";
const UPPER_MNT: &str = "/mnt/upper";
const ROOT_MNT: &str = "/mnt/root";

fn ctx<E: Into<io::Error>>(what: impl std::fmt::Display) -> impl FnOnce(E) -> io::Error {
    move |e| {
        let e = e.into();
        io::Error::new(e.kind(), format!("{what}: {e}"))
    }
}

/// `mount(2)` with the argument types this file uses (`nix::mount::mount`
/// is generic over each path argument, so a bare `None` cannot be typed).
fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> nix::Result<()> {
    nix::mount::mount(Some(source), target, fstype, flags, data)
}

/// Mounts /proc, /sys, /dev (devtmpfs) with /dev/pts and /dev/shm, adds the
/// /dev/fd and /dev/std* links, and points stdio at /dev/console.
pub fn early_setup() -> io::Result<()> {
    let nosuid = MsFlags::MS_NOSUID;
    let mounts = [
        (
            "proc",
            "/proc",
            "proc",
            nosuid | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
            None,
        ),
        (
            "sysfs",
            "/sys",
            "sysfs",
            nosuid | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
            None,
        ),
        ("devtmpfs", "/dev", "devtmpfs", nosuid, Some("mode=0755")),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            nosuid | MsFlags::MS_NOEXEC,
            Some("gid=5,mode=0620,ptmxmode=0666"),
        ),
        (
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            nosuid | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
    ];
    for (source, target, fstype, flags, data) in mounts {
        fs::create_dir_all(target).map_err(ctx(format!("mkdir {target}")))?;
        match mount(source, Path::new(target), Some(fstype), flags, data) {
            Ok(()) => {}
            Err(Errno::EBUSY) => {}
            Err(e) => return Err(ctx(format!("mount {target}"))(e)),
        }
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(ctx(format!("symlink {link}"))(e));
            }
            _ => {}
        }
    }
    let console = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
        .map_err(ctx("open /dev/console"))?;
    dup2_stdin(&console)?;
    dup2_stdout(&console)?;
    dup2_stderr(&console)?;
    Ok(())
}

/// Loads the modules named in `order` (one file name per line) from `dir`
/// with `finit_module`, in that order. Already-loaded modules are fine.
pub fn load_modules(order: &Path, dir: &Path) -> io::Result<()> {
    let list = match fs::read_to_string(order) {
        Ok(list) => list,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            crate::log!("no {}: loading no modules", order.display());
            return Ok(());
        }
        Err(e) => return Err(ctx(order.display())(e)),
    };
    let start = Instant::now();
    let mut loaded = Vec::new();
    for name in list.lines().map(str::trim) {
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        let path = dir.join(name);
        let file = File::open(&path).map_err(ctx(path.display()))?;
        match finit_module(&file, c"", ModuleInitFlags::empty()) {
            Ok(()) => loaded.push(name),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(ctx(format!("finit_module {name}"))(e)),
        }
    }
    crate::log!(
        "loaded {} modules in {:?}: {}",
        loaded.len(),
        start.elapsed(),
        loaded.join(" ")
    );
    Ok(())
}

/// The block devices (names under /dev, e.g. `vda`) of the two disks.
#[derive(Debug, Clone)]
pub struct Disks {
    /// Read-only EROFS root image.
    pub lower: String,
    /// Writable ext4 upper layer.
    pub upper: String,
}

/// Finds the two disks by serial, waiting up to `timeout` for them to appear.
pub fn find_disks(timeout: Duration) -> io::Result<Disks> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut lower = None;
        let mut upper = None;
        let mut names = Vec::new();
        if let Ok(entries) = fs::read_dir("/sys/block") {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with("vd") || !Path::new("/dev").join(&name).exists() {
                    continue;
                }
                let serial = fs::read_to_string(entry.path().join("serial")).unwrap_or_default();
                match serial.trim() {
                    LOWER_SERIAL => lower = Some(name.clone()),
                    UPPER_SERIAL => upper = Some(name.clone()),
                    _ => {}
                }
                names.push(name);
            }
        }
        if let (Some(lower), Some(upper)) = (lower.clone(), upper.clone()) {
            return Ok(Disks { lower, upper });
        }
        let expired = Instant::now() >= deadline;
        let unlabeled = lower.is_none()
            && upper.is_none()
            && names.iter().any(|n| n == "vda")
            && names.iter().any(|n| n == "vdb");
        if unlabeled && (expired || names.len() == 2) {
            crate::log!("disks carry no serials; using vda (lower) and vdb (upper)");
            return Ok(Disks {
                lower: "vda".into(),
                upper: "vdb".into(),
            });
        }
        if expired {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "disks {LOWER_SERIAL}/{UPPER_SERIAL} not found after {timeout:?} (have: {names:?})"
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Mounts lower (EROFS, read-only) and upper (ext4), joins them with
/// overlayfs at [`ROOT_MNT`] and moves /proc, /sys and /dev under it.
pub fn mount_root(disks: &Disks) -> io::Result<()> {
    for dir in [LOWER_MNT, UPPER_MNT, ROOT_MNT] {
        fs::create_dir_all(dir).map_err(ctx(format!("mkdir {dir}")))?;
    }
    let lower_dev = format!("/dev/{}", disks.lower);
    let upper_dev = format!("/dev/{}", disks.upper);
    mount(
        &lower_dev,
        Path::new(LOWER_MNT),
        Some("erofs"),
        MsFlags::MS_RDONLY,
        None,
    )
    .map_err(ctx(format!("mount {lower_dev} (erofs) on {LOWER_MNT}")))?;
    mount(
        &upper_dev,
        Path::new(UPPER_MNT),
        Some("ext4"),
        MsFlags::empty(),
        None,
    )
    .map_err(ctx(format!("mount {upper_dev} (ext4) on {UPPER_MNT}")))?;
    for dir in ["upper", "work"] {
        let path = Path::new(UPPER_MNT).join(dir);
        fs::create_dir_all(&path).map_err(ctx(path.display()))?;
    }
    // index=off: the upper must stay usable on a rebuilt (byte-different) lower.
    let opts = format!(
        "lowerdir={LOWER_MNT},upperdir={UPPER_MNT}/upper,workdir={UPPER_MNT}/work,index=off"
    );
    mount(
        "overlay",
        Path::new(ROOT_MNT),
        Some("overlay"),
        MsFlags::empty(),
        Some(&opts),
    )
    .map_err(ctx(format!("mount overlay ({opts})")))?;
    for dir in ["proc", "sys", "dev"] {
        let inside = Path::new(ROOT_MNT).join(dir);
        if !inside.is_dir() {
            fs::create_dir_all(&inside).map_err(ctx(inside.display()))?;
        }
        let outside = PathBuf::from("/").join(dir);
        mount(
            &outside.to_string_lossy(),
            &inside,
            None,
            MsFlags::MS_MOVE,
            None,
        )
        .map_err(ctx(format!(
            "move {} to {}",
            outside.display(),
            inside.display()
        )))?;
    }
    Ok(())
}

/// Makes the merged root `/` (move mount + chroot: the initramfs cannot be
/// pivoted away). Returns a handle on the initramfs root, which shutdown
/// needs to get back to the disks' mount points.
pub fn switch_root() -> io::Result<File> {
    let old_root = File::open("/").map_err(ctx("open /"))?;
    std::env::set_current_dir(ROOT_MNT).map_err(ctx(format!("chdir {ROOT_MNT}")))?;
    mount(".", Path::new("/"), None, MsFlags::MS_MOVE, None).map_err(ctx("move root"))?;
    chroot(".").map_err(ctx("chroot"))?;
    std::env::set_current_dir("/").map_err(ctx("chdir /"))?;
    Ok(old_root)
}

/// Stops every other process: SIGTERM, then SIGKILL after `grace`.
fn stop_all_processes(grace: Duration) {
    let gone = |limit: Duration| {
        let deadline = Instant::now() + limit;
        loop {
            // Every user process descends from PID 1 (orphans are
            // reparented here), and the reaper thread collects the zombies.
            if !sys::has_children() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    if !sys::has_children() {
        return;
    }
    let everyone = Pid::from_raw(-1);
    let _ = kill(everyone, Signal::SIGTERM);
    if gone(grace) {
        return;
    }
    crate::log!("processes left after SIGTERM; sending SIGKILL");
    let _ = kill(everyone, Signal::SIGKILL);
    if !gone(Duration::from_secs(2)) {
        crate::log!("processes survive SIGKILL");
    }
}

/// Clean stop: processes, sync, unmount overlay then upper (so ext4 is marked
/// clean), then power off. Never returns.
pub fn shutdown(old_root: &File, disks: &Disks) -> ! {
    let start = Instant::now();
    stop_all_processes(Duration::from_secs(1));
    sync();
    // Detach the merged root (and the /proc, /sys, /dev below it), then go
    // back to the initramfs, where the disks' mount points are visible.
    // Errors are logged as io::Error, like every other message on the console.
    if let Err(e) = umount2("/", MntFlags::MNT_DETACH).map_err(io::Error::from) {
        crate::log!("detach merged root: {e}");
    }
    if let Err(e) = fchdir(old_root)
        .and_then(|()| chroot("."))
        .map_err(io::Error::from)
    {
        crate::log!("back to initramfs root: {e}");
    }
    let _ = std::env::set_current_dir("/");
    // A fresh sysfs shows when the ext4 superblock is really gone.
    let _ = mount(
        "sysfs",
        Path::new("/sys"),
        Some("sysfs"),
        MsFlags::empty(),
        None,
    );
    unmount_retrying(Path::new(UPPER_MNT), Duration::from_secs(3));
    let ext4_sysfs = Path::new("/sys/fs/ext4").join(&disks.upper);
    let deadline = Instant::now() + Duration::from_secs(3);
    while ext4_sysfs.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    if ext4_sysfs.exists() {
        crate::log!("upper ext4 still active after unmount; it may need recovery");
    }
    unmount_retrying(Path::new(LOWER_MNT), Duration::from_millis(500));
    sync();
    crate::log!("clean shutdown in {:?}; powering off", start.elapsed());
    power_off()
}

fn unmount_retrying(target: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => return,
            Err(Errno::EBUSY) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                crate::log!("umount {}: {}", target.display(), io::Error::from(e));
                return;
            }
        }
    }
}

/// Syncs and powers off; PID 1 must never exit, so this never returns.
pub fn power_off() -> ! {
    sync();
    let Err(e) = reboot(RebootMode::RB_POWER_OFF);
    crate::log!("power off failed: {}; halting", io::Error::from(e));
    let _ = reboot(RebootMode::RB_HALT_SYSTEM);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
