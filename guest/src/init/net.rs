//! The guest's network setup at boot: `lo` always comes up; when the VM
//! has a network card (the sandbox's policy is not `none`), `eth0` gets the
//! fixed address of [`microsandbox_guest::netconf`], the default route goes
//! through the gateway, and `/etc/resolv.conf` names the DNS address. The
//! host's network process enforces the policy; nothing here is a control.

use std::io;
use std::path::Path;

use microsandbox_guest::netconf::{DNS_ADDR, GATEWAY, GUEST_ADDR, INTERFACE, PREFIX_LEN};

use super::sys;

/// Configure the network in the merged root; returns whether there is a card.
pub fn configure() -> io::Result<bool> {
    sys::interface_up("lo", None).map_err(|e| io::Error::new(e.kind(), format!("lo up: {e}")))?;
    if !Path::new("/sys/class/net").join(INTERFACE).exists() {
        return Ok(false);
    }
    sys::interface_up(INTERFACE, Some((GUEST_ADDR, PREFIX_LEN)))
        .map_err(|e| io::Error::new(e.kind(), format!("{INTERFACE} up: {e}")))?;
    sys::add_default_route(GATEWAY)
        .map_err(|e| io::Error::new(e.kind(), format!("default route via {GATEWAY}: {e}")))?;
    write_resolv_conf()?;
    Ok(true)
}

/// `/etc/resolv.conf` naming our DNS address; a symlink (an image's
/// systemd stub, say) is replaced by the file.
fn write_resolv_conf() -> io::Result<()> {
    let path = Path::new("/etc/resolv.conf");
    std::fs::create_dir_all("/etc")?;
    if path.is_symlink() {
        std::fs::remove_file(path)?;
    }
    std::fs::write(path, format!("nameserver {DNS_ADDR}\n"))
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}
