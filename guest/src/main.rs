//! `msb-guest-init`: PID 1 of a microsandbox microVM.
//!
//! Built as a static binary and placed as `/init` in the initramfs, next to
//! `/modules/*.ko` and `/modules.order`. It mounts the pseudo filesystems,
//! loads the modules, joins the read-only lower disk (EROFS) and the sandbox's
//! upper disk (ext4) with overlayfs, switches root into the result, serves the
//! agent protocol ([`microsandbox_guest::protocol`]) on the virtio-serial port
//! `msb.agent`, reaps zombies, and on `shutdown` unmounts cleanly and powers
//! off. Diagnostics go to /dev/console. Any fatal error powers the VM off, so
//! the host sees the VM exit instead of a hang.

mod init;

use std::io;
use std::path::Path;
use std::time::Duration;

use init::{agent, boot, reaper::Reaper};

fn main() {
    if nix::unistd::getpid().as_raw() != 1 {
        eprintln!("msb-guest-init runs as PID 1 inside a microsandbox VM");
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        log!("panic: {info}");
        boot::power_off();
    }));
    if let Err(e) = run() {
        log!("fatal: {e}");
        boot::power_off();
    }
}

fn run() -> io::Result<()> {
    boot::early_setup()?;
    log!("init started");
    boot::load_modules(Path::new("/modules.order"), Path::new("/modules"))?;
    let disks = boot::find_disks(Duration::from_secs(10))?;
    boot::mount_root(&disks)?;
    let old_root = boot::switch_root()?;
    log!(
        "root is overlay of {} (erofs) + {} (ext4)",
        disks.lower,
        disks.upper
    );
    // A network failure is logged, not fatal: the sandbox still runs.
    match init::net::configure() {
        Ok(true) => log!("network: eth0 configured"),
        Ok(false) => {}
        Err(e) => log!("network: {e}"),
    }
    let reaper = Reaper::start()?;
    let port = agent::find_port(Duration::from_secs(10))?;
    agent::serve(&port, &reaper)?;
    boot::shutdown(&old_root, &disks)
}
