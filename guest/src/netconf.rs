//! The guest network's fixed addressing, shared by the guest init (which
//! configures `eth0` with it) and the host's network process (which plays
//! the gateway and the DNS server). Every sandbox uses the same addresses:
//! each has its own link, so they never meet, and a fork keeps working.

use std::net::Ipv4Addr;

/// The guest's address (`/PREFIX_LEN` with [`GATEWAY`]).
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The guest's default gateway (the host's network process).
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The guest's DNS server (the host's network process, forwarding).
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// Prefix length of the guest's network.
pub const PREFIX_LEN: u8 = 24;
/// The guest card's MAC address.
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The name of the guest's network card.
pub const INTERFACE: &str = "eth0";
