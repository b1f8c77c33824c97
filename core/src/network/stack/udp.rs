//! UDP through the network process: one connected host socket per flow
//! (guest port, destination), opened when the policy allows the destination
//! (DNS to [`DNS_ADDR`] port 53 goes to the upstream resolver), replies
//! framed back to the guest as from the address it sent to, flows forgotten
//! after [`UDP_IDLE`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

use super::{FRAME_MTU, FlowKey, host_target, logs_denial};
use crate::network::policy::{Decision, Policy};
use crate::network::{DNS_ADDR, GATEWAY_MAC, GUEST_ADDR};

/// A UDP flow with no traffic for this long is forgotten.
const UDP_IDLE: Duration = Duration::from_secs(30);

/// The open UDP flows.
#[derive(Default)]
pub(super) struct UdpFlows {
    flows: HashMap<FlowKey, Flow>,
    denials: u64,
}

struct Flow {
    host: UdpSocket,
    last: Instant,
}

impl UdpFlows {
    /// A datagram from the guest: forward it on its flow's host socket,
    /// opening one if `policy` allows the destination.
    pub fn forward_from_guest(
        &mut self,
        key: FlowKey,
        payload: &[u8],
        policy: &Policy,
        dns_upstream: Option<SocketAddr>,
    ) {
        let flow = match self.flows.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let Some(host) = open(key, policy, dns_upstream, &mut self.denials) else {
                    return;
                };
                entry.insert(Flow {
                    host,
                    last: Instant::now(),
                })
            }
        };
        flow.last = Instant::now();
        let _ = flow.host.send(payload);
    }

    /// The host sockets to wait on.
    pub fn sockets(&self) -> impl Iterator<Item = &UdpSocket> {
        self.flows.values().map(|f| &f.host)
    }

    /// Every datagram waiting on the host sockets, as frames to the guest.
    pub fn replies_for_guest(&mut self, guest_mac: EthernetAddress) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        let mut frames = Vec::new();
        for (key, flow) in &mut self.flows {
            while let Ok(n) = flow.host.recv(&mut buf) {
                flow.last = Instant::now();
                frames.extend(frame(*key, guest_mac, &buf[..n]));
            }
        }
        frames
    }

    /// Forget idle flows.
    pub fn expire(&mut self) {
        self.flows.retain(|_, flow| flow.last.elapsed() < UDP_IDLE);
    }
}

/// The connected host socket for a new flow, if the destination is allowed.
fn open(
    key: FlowKey,
    policy: &Policy,
    dns_upstream: Option<SocketAddr>,
    denials: &mut u64,
) -> Option<UdpSocket> {
    let target = if key.dst == DNS_ADDR && key.dst_port == 53 {
        dns_upstream?
    } else {
        let ip = host_target(key.dst)?;
        match policy.decide(ip) {
            Decision::Allow => SocketAddr::new(ip, key.dst_port),
            Decision::Deny(why) => {
                *denials += 1;
                if logs_denial(*denials) {
                    log::info!(
                        "denied udp {}:{} ({ip}): {why} [{denials} denials]",
                        key.dst,
                        key.dst_port
                    );
                }
                return None;
            }
        }
    };
    let bind: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let opened = UdpSocket::bind(bind)
        .and_then(|s| s.connect(target).map(|()| s))
        .and_then(|s| s.set_nonblocking(true).map(|()| s));
    opened.map_err(|e| log::info!("udp {target}: {e}")).ok()
}

/// An Ethernet frame carrying `payload` from the flow's destination back to
/// the guest (`None` if it does not fit one frame).
fn frame(key: FlowKey, guest_mac: EthernetAddress, payload: &[u8]) -> Option<Vec<u8>> {
    const ETH: usize = 14;
    const IP: usize = 20;
    const UDP: usize = 8;
    if payload.len() > FRAME_MTU - ETH - IP - UDP {
        return None;
    }
    let mut frame = vec![0u8; ETH + IP + UDP + payload.len()];
    let eth = EthernetRepr {
        src_addr: EthernetAddress(GATEWAY_MAC),
        dst_addr: guest_mac,
        ethertype: EthernetProtocol::Ipv4,
    };
    let ip = Ipv4Repr {
        src_addr: key.dst,
        dst_addr: GUEST_ADDR,
        next_header: IpProtocol::Udp,
        payload_len: UDP + payload.len(),
        hop_limit: 64,
    };
    let udp = UdpRepr {
        src_port: key.dst_port,
        dst_port: key.guest_port,
    };
    let caps = ChecksumCapabilities::default();
    let mut eth_frame = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut eth_frame);
    let mut ip_packet = Ipv4Packet::new_unchecked(eth_frame.payload_mut());
    ip.emit(&mut ip_packet, &caps);
    let mut udp_packet = UdpPacket::new_unchecked(ip_packet.payload_mut());
    udp.emit(
        &mut udp_packet,
        &IpAddress::Ipv4(key.dst),
        &IpAddress::Ipv4(GUEST_ADDR),
        payload.len(),
        |buf| buf.copy_from_slice(payload),
        &caps,
    );
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::GUEST_MAC;

    #[test]
    fn replies_parse_back_with_valid_checksums() {
        let key = FlowKey {
            guest_port: 40000,
            dst: DNS_ADDR,
            dst_port: 53,
        };
        let frame = frame(key, EthernetAddress(GUEST_MAC), b"answer").unwrap();
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!(eth.dst_addr(), EthernetAddress(GUEST_MAC));
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr()), (DNS_ADDR, GUEST_ADDR));
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        let caps = ChecksumCapabilities::default();
        let repr = UdpRepr::parse(
            &udp,
            &IpAddress::Ipv4(DNS_ADDR),
            &IpAddress::Ipv4(GUEST_ADDR),
            &caps,
        )
        .unwrap();
        assert_eq!((repr.src_port, repr.dst_port), (53, 40000));
        assert_eq!(udp.payload(), b"answer");
    }

    #[test]
    fn denied_and_unmapped_destinations_open_no_flow() {
        let policy = Policy::resolve(&crate::network::NetworkConfig::default());
        let mut flows = UdpFlows::default();
        for dst in [
            crate::network::GATEWAY,
            Ipv4Addr::new(10, 0, 2, 77),
            Ipv4Addr::new(10, 1, 1, 1),
        ] {
            let key = FlowKey {
                guest_port: 5000,
                dst,
                dst_port: 9,
            };
            flows.forward_from_guest(key, b"x", &policy, None);
        }
        // DNS with no upstream: nothing either.
        let dns = FlowKey {
            guest_port: 5000,
            dst: DNS_ADDR,
            dst_port: 53,
        };
        flows.forward_from_guest(dns, b"x", &policy, None);
        assert_eq!(flows.sockets().count(), 0);
    }
}
