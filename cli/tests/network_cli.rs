//! `msb run/create --network --allow --port` end to end on real QEMU
//! microVMs: a published port answers from the host, `none` has no
//! interface, bad values fail before anything boots.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

use common::{msb, ok};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn network_flags_work_end_to_end() {
    assert!(
        std::env::var_os("MSB_KERNEL_DIR").is_some(),
        "run with `make test`"
    );
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    ok(h, &["image", "busybox", "--tag", "local/busybox:net"]);

    // Bad values: each InvalidConfig, nothing created.
    for (args, names) in [
        (vec!["--network", "private"], "private"),
        (vec!["--allow", "10.0.0.1/8"], "10.0.0.1/8"),
        (vec!["--port", "8080"], "8080"),
        (
            vec!["--network", "none", "--port", "8080:80"],
            "need a network",
        ),
    ] {
        let mut argv = vec!["create", "bad", "--image", "local/busybox:net"];
        argv.extend(args.iter().copied());
        let out = msb(h, &argv);
        assert!(!out.status.success(), "{argv:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("InvalidConfig") && err.contains(names),
            "{argv:?}: {err}"
        );
    }
    assert_eq!(ok(h, &["ls", "--json"]).trim(), "[]");

    // none: only lo.
    let out = ok(
        h,
        &[
            "run",
            "local/busybox:net",
            "--network",
            "none",
            "--",
            "ls",
            "/sys/class/net",
        ],
    );
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"], "{out}");

    // A published port (the default policy is public).
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mapping = format!("{port}:8000");
    ok(
        h,
        &[
            "create",
            "web",
            "--image",
            "local/busybox:net",
            "--port",
            &mapping,
        ],
    );
    ok(
        h,
        &[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "mkdir -p /www && echo from-guest > /www/index.html && (httpd -p 8000 -h /www &) && sleep 0.3",
        ],
    );
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    assert!(body.contains("from-guest"), "{body}");

    // The port is taken while `web` runs.
    let out = msb(
        h,
        &[
            "create",
            "web2",
            "--image",
            "local/busybox:net",
            "--port",
            &mapping,
        ],
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("InvalidConfig") && err.contains("taken"),
        "{err}"
    );
    ok(h, &["rm", "web"]);
    assert_eq!(ok(h, &["ls", "--json"]).trim(), "[]");
}
