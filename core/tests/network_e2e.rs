//! Guest networking on real QEMU microVMs (TCG here) with the host-enforced
//! policy (`docs/network.md`). Traffic goes only to servers this test runs:
//! on the host's loopback, and inside a network namespace it creates (a
//! veth pair with 10.199.0.0/29; removed at the end). One sandbox per
//! policy, each reused for every check of that policy.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{BUSYBOX_REF, TestHome};
use microsandbox::{MicrosandboxError, Sandbox};

/// The namespace's two addresses: one allow-listed, one not.
const NS_ALLOWED: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 2);
const NS_PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 3);
const NS_PORT: u16 = 8080;
/// The name the test's DNS server answers, with [`NS_ALLOWED`].
const TEST_NAME: &str = "registry.msb-test";

#[tokio::test(flavor = "multi_thread")]
async fn public_policy_is_enforced_on_the_host() {
    let home = TestHome::new();
    let loopback = CountingServer::start(Ipv4Addr::LOCALHOST, "host-loopback");
    let netns = TestNetns::create();
    let dns = FakeDns::start();
    let config = home.config().dns_upstream(dns.addr);
    config.scope(public_checks(&home, &loopback, &netns)).await;
    assert_eq!(
        loopback.accepted(),
        0,
        "the host's loopback server saw a connection from a `public` guest"
    );
    assert!(home.vm_pids().is_empty(), "{:?}", home.vm_pids());
}

#[tokio::test(flavor = "multi_thread")]
async fn all_and_none_policies_and_bad_input() {
    let home = TestHome::new();
    let loopback = CountingServer::start(Ipv4Addr::LOCALHOST, "host-loopback");
    home.run(all_and_none_checks(&home, &loopback)).await;
    assert!(loopback.accepted() >= 3);
    assert!(home.vm_pids().is_empty(), "{:?}", home.vm_pids());
}

async fn public_checks(home: &TestHome, loopback: &CountingServer, netns: &TestNetns) {
    home.load_busybox().await;
    let free_port = free_host_port();
    // `public` is the default policy.
    let sb = Sandbox::builder("pub")
        .image(BUSYBOX_REF)
        .allow(format!("{NS_ALLOWED}/32"))
        .port(free_port, 8000)
        .create()
        .await
        .unwrap();

    // The guest's view: eth0 with its address, a default route, our DNS.
    assert_eq!(
        sb.handle().config().network.policy,
        microsandbox::NetworkPolicy::Public
    );
    let out = sh(&sb, "ip -4 addr show eth0; ip route; cat /etc/resolv.conf").await;
    assert!(out.contains("inet 10.0.2.15/24"), "{out}");
    assert!(out.contains("default via 10.0.2.2"), "{out}");
    assert!(out.contains("nameserver 10.0.2.3"), "{out}");

    // The host's loopback, every way a guest might try: the gateway, the
    // DNS address, and the address QEMU's user netdev would map to it.
    let port = loopback.port;
    for addr in ["10.0.2.2", "10.0.2.3", "10.0.2.100"] {
        let out = sh(
            &sb,
            &format!("nc -w 3 {addr} {port} </dev/null; echo rc=$?"),
        )
        .await;
        assert!(!out.contains("host-loopback"), "{addr}: {out}");
        assert!(out.contains("rc=1"), "{addr}: {out}");
    }

    // The private-range rule, against a server inside the test's namespace:
    // the allow-listed address answers, the other one is refused.
    let out = sh(&sb, &format!("nc -w 5 {NS_ALLOWED} {NS_PORT} </dev/null")).await;
    assert!(out.contains("netns-reached"), "{out}");
    let out = sh(
        &sb,
        &format!("nc -w 3 {NS_PRIVATE} {NS_PORT} </dev/null; echo rc=$?"),
    )
    .await;
    assert!(!out.contains("netns-reached"), "{out}");
    let served_before = netns.accepted();

    // DNS: the guest's resolver (10.0.2.3) reaches the test's DNS server on
    // the host's loopback, and the policy judges the resolved address.
    let out = sh(&sb, &format!("nslookup {TEST_NAME}")).await;
    assert!(out.contains(&NS_ALLOWED.to_string()), "{out}");
    let out = sh(&sb, &format!("nc -w 5 {TEST_NAME} {NS_PORT} </dev/null")).await;
    assert!(out.contains("netns-reached"), "{out}");
    assert_eq!(netns.accepted(), served_before + 1);

    // A published port answers from the host.
    sh(
        &sb,
        "mkdir -p /www && echo published-ok > /www/index.html && (httpd -p 8000 -h /www &) && sleep 0.3",
    )
    .await;
    let body = http_get(free_port);
    assert!(body.contains("published-ok"), "{body}");

    // A taken host port fails before any VM starts, leaving nothing.
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let processes = home.vm_pids().len();
    let err = Sandbox::builder("taken")
        .image(BUSYBOX_REF)
        .network("public")
        .port(taken_port, 80)
        .create()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "InvalidConfig", "{err}");
    assert!(
        err.to_string().contains(&format!("host port {taken_port}")),
        "{err}"
    );
    assert_nothing_left(home, "taken", processes).await;

    // Each fork of a full snapshot gets its own network process: it
    // resolves through it and stays under `public`.
    let snap = sb.snapshot().await.unwrap();
    sb.resume().await.unwrap();
    let fork = snap.restore("pub-fork").await.unwrap();
    let out = sh(&fork, &format!("nslookup {TEST_NAME}")).await;
    assert!(out.contains(&NS_ALLOWED.to_string()), "{out}");
    let out = sh(
        &fork,
        &format!("nc -w 3 10.0.2.2 {port} </dev/null; echo rc=$?"),
    )
    .await;
    assert!(out.contains("rc=1"), "{out}");
    assert!(fork.handle().path().join("logs/netd.log").is_file());
    fork.handle().remove().await.unwrap();
    // The source's network still works after its fork went away.
    let out = sh(&sb, &format!("nc -w 5 {NS_ALLOWED} {NS_PORT} </dev/null")).await;
    assert!(out.contains("netns-reached"), "{out}");

    sb.handle().remove().await.unwrap();
    assert!(loopback.accepted() == 0);
}

async fn all_and_none_checks(home: &TestHome, loopback: &CountingServer) {
    home.load_busybox().await;
    let port = loopback.port;

    // Bad input: each its kind, before anything boots.
    let processes = home.vm_pids().len();
    let base = || Sandbox::builder("bad").image(BUSYBOX_REF);
    let bad = [
        ("unknown policy", base().network("private")),
        ("invalid CIDR", base().network("public").allow("10.0.0.1/8")),
        (
            "port without network",
            base().network("none").port(18080, 80),
        ),
        (
            "host port twice",
            base().network("all").port(18080, 80).port(18080, 81),
        ),
    ];
    for (what, builder) in bad {
        let err: MicrosandboxError = builder.create().await.unwrap_err();
        assert_eq!(err.kind(), "InvalidConfig", "{what}: {err}");
        assert_nothing_left(home, "bad", processes).await;
    }

    // `all`: the host's loopback through the gateway.
    let sb = Sandbox::builder("all")
        .image(BUSYBOX_REF)
        .network("all")
        .create()
        .await
        .unwrap();
    let out = sh(&sb, &format!("nc -w 5 10.0.2.2 {port} </dev/null")).await;
    assert!(out.contains("host-loopback"), "{out}");
    // The first create left a base with a network card: the second forks
    // it (instant create) and gets its own network process.
    let twin = Sandbox::builder("all-twin")
        .image(BUSYBOX_REF)
        .network("all")
        .create()
        .await
        .unwrap();
    let out = sh(&twin, &format!("nc -w 5 10.0.2.2 {port} </dev/null")).await;
    assert!(out.contains("host-loopback"), "{out}");
    let netds = |dir: &std::path::Path| {
        common::processes_mentioning(dir)
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("msb-netd"))
            })
            .count()
    };
    assert_eq!(netds(twin.handle().path()), 1, "the twin's own msb-netd");
    twin.handle().remove().await.unwrap();
    assert_eq!(
        netds(sb.handle().path()),
        1,
        "the first's msb-netd lives on"
    );
    // A restart brings up a new network process with the recorded policy.
    sb.stop().await.unwrap();
    assert!(
        home.vm_pids().is_empty(),
        "stopped, yet {:?}",
        home.vm_pids()
    );
    let sb = sb.handle().start().await.unwrap();
    let out = sh(&sb, &format!("nc -w 5 10.0.2.2 {port} </dev/null")).await;
    assert!(out.contains("host-loopback"), "{out}");
    assert_eq!(
        sb.handle().config().network.policy,
        microsandbox::NetworkPolicy::All
    );
    sb.handle().kill().await.unwrap();
    assert!(
        home.vm_pids().is_empty(),
        "killed, yet {:?}",
        home.vm_pids()
    );
    Sandbox::remove("all").await.unwrap();

    // `none`: no interface but lo.
    let sb = Sandbox::builder("none")
        .image(BUSYBOX_REF)
        .network("none")
        .create()
        .await
        .unwrap();
    let out = sh(&sb, "ls /sys/class/net").await;
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"], "{out}");
    sb.handle().remove().await.unwrap();
}

/// Run `script` in the guest; its stdout and stderr together.
async fn sh(sb: &Sandbox, script: &str) -> String {
    let out = sb.exec("sh", ["-c", script]).await.unwrap();
    format!("{}{}", out.stdout_text(), out.stderr_text())
}

/// No sandbox `name`, no directory, no more processes than `processes`.
async fn assert_nothing_left(home: &TestHome, name: &str, processes: usize) {
    assert!(
        !common::sandbox_names().await.iter().any(|n| n == name),
        "{name} is listed"
    );
    assert!(!home.path().join("sandboxes").join(name).exists());
    assert_eq!(home.vm_pids().len(), processes, "{:?}", home.vm_pids());
}

fn free_host_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /index.html` on the host's 127.0.0.1:`port`; the whole response.
fn http_get(port: u16) -> String {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

/// A TCP server that greets every client with its banner and counts them.
struct CountingServer {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl CountingServer {
    fn start(addr: Ipv4Addr, banner: &'static str) -> Self {
        let listener = TcpListener::bind((addr, 0)).unwrap();
        Self::serve(listener, banner)
    }

    fn serve(listener: TcpListener, banner: &'static str) -> Self {
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(format!("{banner}\n").as_bytes());
            }
        });
        Self { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A network namespace with a veth pair (host 10.199.0.1/29, namespace .2
/// and .3) and a banner server on both namespace addresses; removed on drop.
struct TestNetns {
    name: String,
    server: CountingServer,
}

impl TestNetns {
    fn create() -> Self {
        let id = std::process::id() % 100_000;
        let name = format!("msbtest{id}");
        let (host_if, ns_if) = (format!("msbh{id}"), format!("msbn{id}"));
        let mut netns = Self {
            name: name.clone(),
            server: CountingServer {
                port: NS_PORT,
                accepted: Arc::new(AtomicUsize::new(0)),
            },
        };
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        for args in [
            vec!["netns", "add", &name],
            vec![
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
            vec!["link", "set", &ns_if, "netns", &name],
            vec!["addr", "add", "10.199.0.1/29", "dev", &host_if],
            vec!["link", "set", &host_if, "up"],
            vec!["-n", &name, "addr", "add", "10.199.0.2/29", "dev", &ns_if],
            vec!["-n", &name, "addr", "add", "10.199.0.3/29", "dev", &ns_if],
            vec!["-n", &name, "link", "set", &ns_if, "up"],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let status = Command::new("ip").args(&args).status().unwrap();
            assert!(status.success(), "ip {args:?} failed (the test needs root)");
        }
        // A thread that enters the namespace (setns is per thread) binds
        // the server there; the listener stays in the namespace.
        let ns_file = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
        let listener = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this thread only, with a namespace fd we hold open.
            let rc = unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, NS_PORT)).unwrap()
        })
        .join()
        .unwrap();
        netns.server = CountingServer::serve(listener, "netns-reached");
        netns
    }

    fn accepted(&self) -> usize {
        self.server.accepted()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A DNS server on the host's loopback that answers every A question with
/// [`NS_ALLOWED`] (and nothing for other types).
struct FakeDns {
    addr: SocketAddr,
}

impl FakeDns {
    fn start() -> Self {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = socket.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                if let Some(reply) = dns_answer(&buf[..n]) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Self { addr }
    }
}

/// The reply to one DNS query: its header and question, and for type A an
/// answer pointing at the question's name.
fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question_end = end + 5;
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let mut reply = query[..question_end].to_vec();
    reply[2] = 0x81; // response, recursion desired
    reply[3] = 0x80; // recursion available, no error
    let answers: u16 = if qtype == 1 { 1 } else { 0 };
    reply[6..8].copy_from_slice(&answers.to_be_bytes());
    reply[8..12].fill(0);
    if qtype == 1 {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&NS_ALLOWED.octets());
    }
    Some(reply)
}
