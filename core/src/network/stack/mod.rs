//! The user-mode network stack `msb-netd` runs (UDP in [`udp`]): Ethernet frames from QEMU's
//! socket netdev (a stream socket, each frame behind its 4-byte big-endian
//! length) on one side, host sockets on the other. `smoltcp` answers ARP
//! for the gateway and terminates the guest's TCP connections on any
//! address (`any_ip`); this file decides, on each new connection's SYN,
//! whether the policy lets it through, and only then opens the host socket
//! (the SYN is held until the host connect succeeds, so a refused or
//! denied destination looks refused to the guest). UDP is forwarded
//! datagram by datagram (DNS to [`DNS_ADDR`] goes to the host's resolver).
//! Published ports are host listeners whose connections `smoltcp` opens
//! into the guest. The stack exits when QEMU closes its end.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant as StdInstant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress, IpAddress, IpCidr,
    IpListenEndpoint, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket,
};

mod udp;

use super::policy::{Decision, Policy};
use super::{DNS_ADDR, GATEWAY, GATEWAY_MAC, GUEST_ADDR, GUEST_MAC, PREFIX_LEN};
use udp::UdpFlows;

/// Ethernet MTU as smoltcp counts it (header included).
const FRAME_MTU: usize = 1514;
/// Largest frame accepted from QEMU (a bigger length means a broken stream).
const MAX_FRAME: usize = 65536;
/// Per-connection TCP buffers: big enough for ~100 MB/s on loopback.
const TCP_BUFFER: usize = 256 * 1024;
/// Frames waiting for QEMU beyond this are dropped, as a NIC would (TCP
/// retransmits), so a paused guest cannot grow our memory.
const MAX_PENDING_TO_QEMU: usize = 8 << 20;
/// A host connect that has not finished by then fails (the guest gets a
/// RST) instead of holding its SYN for the kernel's two minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Denials logged in full before the log keeps only every 1000th (a guest
/// must not fill the host's disk through our log).
const DENIALS_LOGGED: u64 = 100;
/// Longest sleep between two looks at timers.
const MAX_WAIT: Duration = Duration::from_millis(500);

/// What the stack serves besides the guest link.
pub struct StackOptions {
    /// The decision on every new outbound connection or UDP flow.
    pub policy: Policy,
    /// Published ports: host listeners and the guest port each forwards to.
    pub published: Vec<(TcpListener, u16)>,
    /// Where the guest's DNS queries go (`None`: DNS is not answered).
    pub dns_upstream: Option<SocketAddr>,
}

/// Serve the guest link `qemu` until QEMU closes it.
pub fn serve(qemu: UnixStream, options: StackOptions) -> io::Result<()> {
    qemu.set_nonblocking(true)?;
    for (listener, _) in &options.published {
        listener.set_nonblocking(true)?;
    }
    let mut stack = Stack::new(qemu, options);
    stack.run()
}

/// A stack whose link input comes from the caller, not from QEMU: for
/// `core::fuzzing` only, which feeds a hostile guest's bytes through the
/// same [`Stack::take_link_frames`] that [`serve`] reads with.
pub(crate) struct LinkDriver(Stack);

impl LinkDriver {
    /// A stack on `qemu` (an idle end of a socket pair) with `options`.
    pub(crate) fn new(qemu: UnixStream, options: StackOptions) -> Self {
        Self(Stack::new(qemu, options))
    }

    /// Take `bytes` as read from the link, then run one round of the
    /// serve loop (without waiting on sockets). An error ends the link.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.from_qemu.extend_from_slice(bytes);
        self.0.take_link_frames()?;
        self.0.poll_iface();
        self.0.pump_conns();
        self.0.poll_iface();
        self.0.reap_conns();
        self.0.udp.expire();
        Ok(())
    }

    /// The link bytes queued for the guest since the last call.
    pub(crate) fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0.to_qemu)
    }
}

/// The host side of a guest address: the gateway is the host's loopback;
/// nothing else of the guest's own network exists.
fn host_target(dst: Ipv4Addr) -> Option<IpAddr> {
    if dst == GATEWAY {
        Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    } else if same_subnet(dst) {
        None
    } else {
        Some(IpAddr::V4(dst))
    }
}

fn same_subnet(a: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - u32::from(PREFIX_LEN));
    u32::from(a) & mask == u32::from(GATEWAY) & mask
}

/// Frames between smoltcp and the QEMU link.
#[derive(Default)]
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        self.0.push_back(frame);
        r
    }
}

impl Device for Queues {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((RxToken(frame), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME_MTU;
        caps
    }
}

/// A guest connection's or UDP flow's ports and destination, seen from
/// the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    guest_port: u16,
    dst: Ipv4Addr,
    dst_port: u16,
}

/// One TCP connection between a smoltcp socket and a host socket.
struct Conn {
    handle: Option<SocketHandle>,
    host: TcpStream,
    /// Outbound, host connect in progress: the guest's SYN, held.
    pending_syn: Option<(FlowKey, Vec<u8>)>,
    /// When the host connect started.
    started: StdInstant,
    /// The host closed its side; the guest side was closed after it.
    host_eof: bool,
    /// The guest closed its side; the host's write side was shut down.
    guest_eof: bool,
    /// The last write to the host would have blocked.
    host_blocked: bool,
    /// Outbound flow key (to forget it with the connection).
    key: Option<FlowKey>,
    /// Finished: remove once smoltcp has sent what it must.
    done: bool,
}

struct Stack {
    qemu: UnixStream,
    from_qemu: Vec<u8>,
    to_qemu: Vec<u8>,
    dropped_frames: u64,
    denials: u64,
    queues: Queues,
    iface: Interface,
    sockets: SocketSet<'static>,
    conns: Vec<Conn>,
    flows_tcp: HashMap<FlowKey, usize>,
    udp: UdpFlows,
    guest_mac: EthernetAddress,
    next_port: u16,
    options: StackOptions,
    epoch: StdInstant,
    qemu_closed: bool,
}

impl Stack {
    fn new(qemu: UnixStream, options: StackOptions) -> Self {
        let epoch = StdInstant::now();
        let mut queues = Queues::default();
        let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GATEWAY_MAC)));
        let mut iface = Interface::new(config, &mut queues, Instant::from_millis(0));
        iface.update_ip_addrs(|addrs| {
            // Capacity is a compile-time constant of smoltcp (>= 2); the
            // gateway and the DNS address are two.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(GATEWAY), PREFIX_LEN));
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(DNS_ADDR), PREFIX_LEN));
        });
        // any_ip + a default route through our own address: smoltcp accepts
        // segments for every destination, so each connection terminates here.
        let _ = iface.routes_mut().add_default_ipv4_route(GATEWAY);
        iface.set_any_ip(true);
        Self {
            qemu,
            from_qemu: Vec::new(),
            to_qemu: Vec::new(),
            dropped_frames: 0,
            denials: 0,
            queues,
            iface,
            sockets: SocketSet::new(Vec::new()),
            conns: Vec::new(),
            flows_tcp: HashMap::new(),
            udp: UdpFlows::default(),
            guest_mac: EthernetAddress(GUEST_MAC),
            next_port: 49152,
            options,
            epoch,
            qemu_closed: false,
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn run(&mut self) -> io::Result<()> {
        loop {
            self.read_qemu()?;
            if self.qemu_closed {
                log::info!("QEMU closed the link; exiting");
                return Ok(());
            }
            self.poll_iface();
            self.pump_conns();
            self.poll_iface();
            self.write_qemu()?;
            self.expire_connects();
            self.reap_conns();
            self.udp.expire();
            self.wait()?;
        }
    }

    fn poll_iface(&mut self) {
        let now = self.now();
        self.iface.poll(now, &mut self.queues, &mut self.sockets);
        while let Some(frame) = self.queues.tx.pop_front() {
            self.queue_to_qemu(&frame);
        }
    }

    fn queue_to_qemu(&mut self, frame: &[u8]) {
        if self.to_qemu.len() > MAX_PENDING_TO_QEMU {
            self.dropped_frames += 1;
            if self.dropped_frames.is_power_of_two() {
                log::warn!(
                    "the guest is not reading: {} frames dropped",
                    self.dropped_frames
                );
            }
            return;
        }
        self.to_qemu
            .extend_from_slice(&(frame.len() as u32).to_be_bytes());
        self.to_qemu.extend_from_slice(frame);
    }

    fn read_qemu(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 64 * 1024];
        for _ in 0..16 {
            match self.qemu.read(&mut buf) {
                Ok(0) => {
                    self.qemu_closed = true;
                    return Ok(());
                }
                Ok(n) => self.from_qemu.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    self.qemu_closed = true;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        self.take_link_frames()
    }

    /// Cut the bytes read from the link into frames (each behind its
    /// length) and take each from the guest; a partial frame waits for
    /// more. The one way guest bytes enter the stack (also driven by
    /// [`LinkDriver`] for fuzzing).
    fn take_link_frames(&mut self) -> io::Result<()> {
        let mut at = 0;
        while self.from_qemu.len() - at >= 4 {
            let len = u32::from_be_bytes([
                self.from_qemu[at],
                self.from_qemu[at + 1],
                self.from_qemu[at + 2],
                self.from_qemu[at + 3],
            ]) as usize;
            if len > MAX_FRAME {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("frame of {len} bytes from QEMU: the link is out of step"),
                ));
            }
            if self.from_qemu.len() - at - 4 < len {
                break;
            }
            let frame = self.from_qemu[at + 4..at + 4 + len].to_vec();
            at += 4 + len;
            self.frame_from_guest(frame);
        }
        self.from_qemu.drain(..at);
        Ok(())
    }

    fn write_qemu(&mut self) -> io::Result<()> {
        while !self.to_qemu.is_empty() {
            match self.qemu.write(&self.to_qemu) {
                Ok(0) => break,
                Ok(n) => {
                    self.to_qemu.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    self.qemu_closed = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One frame from the guest: UDP and new TCP connections are decided
    /// here; everything else goes to smoltcp.
    fn frame_from_guest(&mut self, frame: Vec<u8>) {
        let Ok(eth) = EthernetFrame::new_checked(&frame[..]) else {
            return;
        };
        self.guest_mac = eth.src_addr();
        match eth.ethertype() {
            EthernetProtocol::Arp => self.queues.rx.push_back(frame),
            EthernetProtocol::Ipv4 => {
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                    return;
                };
                let (src, dst) = (ip.src_addr(), ip.dst_addr());
                match ip.next_header() {
                    IpProtocol::Udp => {
                        if let Ok(udp) = UdpPacket::new_checked(ip.payload()) {
                            let key = FlowKey {
                                guest_port: udp.src_port(),
                                dst,
                                dst_port: udp.dst_port(),
                            };
                            if src == GUEST_ADDR {
                                let options = &self.options;
                                self.udp.forward_from_guest(
                                    key,
                                    udp.payload(),
                                    &options.policy,
                                    options.dns_upstream,
                                );
                            }
                        }
                    }
                    IpProtocol::Tcp => {
                        let syn = TcpPacket::new_checked(ip.payload())
                            .ok()
                            .filter(|tcp| tcp.syn() && !tcp.ack())
                            .map(|tcp| FlowKey {
                                guest_port: tcp.src_port(),
                                dst,
                                dst_port: tcp.dst_port(),
                            });
                        match syn {
                            Some(key) if !self.flows_tcp.contains_key(&key) => {
                                self.new_outbound(key, frame)
                            }
                            // A retransmitted SYN while the host connect runs.
                            Some(key) if self.conns[self.flows_tcp[&key]].pending_syn.is_some() => {
                            }
                            _ => self.queues.rx.push_back(frame),
                        }
                    }
                    _ => self.queues.rx.push_back(frame),
                }
            }
            _ => {}
        }
    }

    /// A guest SYN for a connection we do not have: decide, then connect
    /// on the host, holding the SYN until that succeeds. A refusal hands the
    /// SYN to smoltcp with no socket listening, which answers RST.
    fn new_outbound(&mut self, key: FlowKey, syn: Vec<u8>) {
        let target = match host_target(key.dst) {
            Some(ip) => match self.options.policy.decide(ip) {
                Decision::Allow => SocketAddr::new(ip, key.dst_port),
                Decision::Deny(why) => {
                    self.denials += 1;
                    if logs_denial(self.denials) {
                        log::info!(
                            "denied tcp {}:{} ({ip}): {why} [{} denials]",
                            key.dst,
                            key.dst_port,
                            self.denials
                        );
                    }
                    self.queues.rx.push_back(syn);
                    return;
                }
            },
            None => {
                self.queues.rx.push_back(syn);
                return;
            }
        };
        match connect_nonblocking(target) {
            Ok(host) => {
                let index = self.conns.len();
                self.conns.push(Conn {
                    handle: None,
                    host,
                    pending_syn: Some((key, syn)),
                    started: StdInstant::now(),
                    host_eof: false,
                    guest_eof: false,
                    host_blocked: false,
                    key: Some(key),
                    done: false,
                });
                self.flows_tcp.insert(key, index);
            }
            Err(e) => {
                log::info!("tcp {target}: {e}");
                self.queues.rx.push_back(syn);
            }
        }
    }

    /// The host connect of `conn` finished: on success a socket listens
    /// for the held SYN; either way the SYN goes to smoltcp now.
    fn finish_connect(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        let Some((key, syn)) = conn.pending_syn.take() else {
            return;
        };
        match conn
            .host
            .take_error()
            .ok()
            .flatten()
            .or_else(|| conn.host.peer_addr().err())
        {
            None => {
                let mut socket = new_tcp_socket();
                let endpoint = IpListenEndpoint {
                    addr: Some(IpAddress::Ipv4(key.dst)),
                    port: key.dst_port,
                };
                if socket.listen(endpoint).is_ok() {
                    conn.handle = Some(self.sockets.add(socket));
                } else {
                    conn.done = true;
                }
            }
            Some(e) => {
                log::info!("tcp {}:{}: {e}", key.dst, key.dst_port);
                conn.done = true;
            }
        }
        // One SYN per poll, so each listener takes its own.
        self.queues.rx.push_back(syn);
        self.poll_iface();
    }

    /// Fail host connects that take too long: their SYN goes to smoltcp
    /// with no socket listening, which answers RST.
    fn expire_connects(&mut self) {
        for conn in &mut self.conns {
            if conn.pending_syn.is_some() && conn.started.elapsed() > CONNECT_TIMEOUT {
                if let Some((key, syn)) = conn.pending_syn.take() {
                    log::info!("tcp {}:{}: connect timed out", key.dst, key.dst_port);
                    self.queues.rx.push_back(syn);
                }
                conn.done = true;
            }
        }
    }

    /// Move data both ways on every open connection; close what ended.
    fn pump_conns(&mut self) {
        for index in 0..self.conns.len() {
            if self.conns[index].done {
                continue;
            }
            if self.conns[index].pending_syn.is_some() {
                continue;
            }
            let conn = &mut self.conns[index];
            let Some(handle) = conn.handle else {
                continue;
            };
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            // Guest -> host.
            conn.host_blocked = false;
            while socket.can_recv() {
                let host = &mut conn.host;
                let wrote = socket.recv(|buf| match host.write(buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match wrote {
                    Ok(Ok(n)) if n > 0 => {}
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        conn.host_blocked = true;
                        break;
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(_)) => {
                        socket.abort();
                        conn.done = true;
                        break;
                    }
                    _ => break,
                }
            }
            let guest_finished = matches!(
                socket.state(),
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
            );
            if guest_finished && !conn.guest_eof && socket.recv_queue() == 0 {
                let _ = conn.host.shutdown(std::net::Shutdown::Write);
                conn.guest_eof = true;
            }
            // Host -> guest.
            while !conn.host_eof && !conn.done && socket.can_send() {
                let host = &mut conn.host;
                let read = socket.send(|buf| match host.read(buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match read {
                    Ok(Ok(0)) => {
                        conn.host_eof = true;
                        socket.close();
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(_)) => {
                        socket.abort();
                        conn.done = true;
                    }
                    Err(_) => break,
                }
            }
            if socket.state() == tcp::State::Closed {
                conn.done = true;
            }
        }
    }

    /// Forget finished connections (after the poll that sent their last
    /// segment, a RST included).
    fn reap_conns(&mut self) {
        let mut index = 0;
        while index < self.conns.len() {
            let conn = &self.conns[index];
            let closed = conn
                .handle
                .is_none_or(|h| self.sockets.get::<tcp::Socket>(h).state() == tcp::State::Closed);
            if conn.done && closed {
                let conn = self.conns.swap_remove(index);
                if let Some(h) = conn.handle {
                    self.sockets.remove(h);
                }
                if let Some(key) = conn.key {
                    self.flows_tcp.remove(&key);
                }
                if let Some(moved) = self.conns.get(index).and_then(|c| c.key) {
                    self.flows_tcp.insert(moved, index);
                }
            } else {
                index += 1;
            }
        }
    }

    /// A host connection to a published port: open a connection into the
    /// guest from the gateway.
    fn accept_published(&mut self, listener: usize) {
        loop {
            let (stream, guest_port) = match self.options.published[listener].0.accept() {
                Ok((stream, _)) => (stream, self.options.published[listener].1),
                Err(_) => return,
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let local_port = self.ephemeral_port();
            let mut socket = new_tcp_socket();
            let remote = (IpAddress::Ipv4(GUEST_ADDR), guest_port);
            if socket
                .connect(
                    self.iface.context(),
                    remote,
                    (IpAddress::Ipv4(GATEWAY), local_port),
                )
                .is_err()
            {
                continue;
            }
            let handle = self.sockets.add(socket);
            self.conns.push(Conn {
                handle: Some(handle),
                host: stream,
                pending_syn: None,
                started: StdInstant::now(),
                host_eof: false,
                guest_eof: false,
                host_blocked: false,
                key: None,
                done: false,
            });
        }
    }

    fn ephemeral_port(&mut self) -> u16 {
        let port = self.next_port;
        self.next_port = if port == u16::MAX { 49152 } else { port + 1 };
        port
    }

    /// Sleep until QEMU, a host socket or smoltcp's next timer needs us.
    fn wait(&mut self) -> io::Result<()> {
        let delay = if self.queues.rx.is_empty() {
            self.iface
                .poll_delay(self.now(), &self.sockets)
                .map_or(MAX_WAIT, |d| {
                    Duration::from_micros(d.total_micros()).min(MAX_WAIT)
                })
        } else {
            Duration::ZERO
        };
        let mut qemu_events = PollFlags::POLLIN;
        if !self.to_qemu.is_empty() {
            qemu_events |= PollFlags::POLLOUT;
        }
        let mut fds = vec![PollFd::new(self.qemu.as_fd(), qemu_events)];
        for (listener, _) in &self.options.published {
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
        }
        for socket in self.udp.sockets() {
            fds.push(PollFd::new(socket.as_fd(), PollFlags::POLLIN));
        }
        let first_conn = fds.len();
        for conn in &self.conns {
            let mut events = PollFlags::empty();
            if conn.pending_syn.is_some() || conn.host_blocked {
                events |= PollFlags::POLLOUT;
            }
            if let Some(h) = conn.handle
                && !conn.host_eof
                && !conn.done
                && self.sockets.get::<tcp::Socket>(h).can_send()
            {
                events |= PollFlags::POLLIN;
            }
            fds.push(PollFd::new(conn.host.as_fd(), events));
        }
        let timeout = PollTimeout::from(delay.as_millis().min(500) as u16);
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        for i in 0..self.options.published.len() {
            if ready[1 + i] {
                self.accept_published(i);
            }
        }
        for frame in self.udp.replies_for_guest(self.guest_mac) {
            self.queue_to_qemu(&frame);
        }
        let connecting: Vec<usize> = (0..self.conns.len().min(ready.len() - first_conn))
            .filter(|&i| ready[first_conn + i] && self.conns[i].pending_syn.is_some())
            .collect();
        for index in connecting {
            self.finish_connect(index);
        }
        Ok(())
    }
}

/// Whether the `count`th denial is logged.
fn logs_denial(count: u64) -> bool {
    count <= DENIALS_LOGGED || count % 1000 == 0
}

fn new_tcp_socket() -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
    );
    socket.set_nagle_enabled(false);
    socket
}

/// Start a TCP connect without waiting for it (it completes when the
/// socket turns writable).
fn connect_nonblocking(target: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_are_logged_in_full_then_sampled() {
        assert!(logs_denial(1) && logs_denial(DENIALS_LOGGED));
        assert!(!logs_denial(DENIALS_LOGGED + 1) && !logs_denial(1999));
        assert!(logs_denial(2000));
    }

    #[test]
    fn the_gateway_is_host_loopback_and_the_rest_of_the_subnet_is_nothing() {
        assert_eq!(host_target(GATEWAY), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(host_target(Ipv4Addr::new(10, 0, 2, 99)), None);
        assert_eq!(
            host_target(Ipv4Addr::new(10, 199, 0, 2)),
            Some(IpAddr::V4(Ipv4Addr::new(10, 199, 0, 2)))
        );
    }
}
