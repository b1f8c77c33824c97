//! `msb` sandbox and image commands end to end on real QEMU microVMs, as a
//! user types them. One test so the boots run one after another.

mod common;

use common::{msb, ok};
use serde_json::Value;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn sandbox_commands_work_end_to_end() {
    assert!(
        std::env::var_os("MSB_KERNEL_DIR").is_some(),
        "run with `make test`"
    );
    let home = tempfile::tempdir().unwrap();
    let h = home.path();

    let doctor: Value = serde_json::from_str(&ok(h, &["doctor", "--json"])).unwrap();
    assert_eq!(doctor["ok"], true, "{doctor}");
    assert!(
        doctor["acceleration"].as_str().unwrap().starts_with("tcg")
            || doctor["acceleration"].as_str().unwrap().contains("kvm")
    );

    assert!(
        ok(h, &["image", "busybox", "--tag", "local/busybox:cli"]).contains("local/busybox:cli")
    );
    assert!(ok(h, &["image", "ls"]).contains("local/busybox:cli"));

    // run: a throwaway sandbox, the command's own exit status
    let out = msb(
        h,
        &[
            "run",
            "local/busybox:cli",
            "--",
            "sh",
            "-c",
            "echo hi; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");
    assert_eq!(ok(h, &["ls", "--json"]).trim(), "[]");

    ok(
        h,
        &[
            "create",
            "cli",
            "--image",
            "local/busybox:cli",
            "--env",
            "GREETING=hello",
        ],
    );
    assert_eq!(
        ok(
            h,
            &[
                "exec",
                "cli",
                "--",
                "sh",
                "-c",
                "echo $GREETING > /root/g; cat /root/g"
            ]
        ),
        "hello\n"
    );
    let listed: Value = serde_json::from_str(&ok(h, &["ls", "--json"])).unwrap();
    assert_eq!(listed[0]["name"], "cli");
    assert_eq!(listed[0]["state"], "running");
    assert_eq!(listed[0]["image_ref"], "local/busybox:cli");
    assert!(listed[0]["created_at"].is_string());
    ok(h, &["stop", "cli"]);
    let out = msb(h, &["exec", "cli", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with("error[SandboxNotRunning]"),
        "{}",
        text(&out.stderr)
    );
    ok(h, &["start", "cli"]);
    assert_eq!(ok(h, &["exec", "cli", "--", "cat", "/root/g"]), "hello\n");
    exec_streams(h);
    ok(h, &["rm", "cli"]);

    let out = msb(h, &["create", "x", "--image", "nope:1"]);
    assert!(
        text(&out.stderr).starts_with("error[ImageNotFound]"),
        "{}",
        text(&out.stderr)
    );
    let garbage = h.join("garbage.tar");
    std::fs::write(&garbage, b"not a tar").unwrap();
    let out = msb(
        h,
        &["image", "load", garbage.to_str().unwrap(), "--tag", "g"],
    );
    assert!(
        text(&out.stderr).starts_with("error[ArchiveInvalid]"),
        "{}",
        text(&out.stderr)
    );
}

/// `msb exec` streaming (issue 23): piped stdin, exit status, signals,
/// `--env`/`--cwd`/`--timeout`, `--json`. Runs on the sandbox `cli`.
fn exec_streams(h: &std::path::Path) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    // echo data | msb exec cli -- cat
    let mut child = Command::new(env!("CARGO_BIN_EXE_msb"))
        .env("MSB_HOME", h)
        .args(["exec", "cli", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"data\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "data\n");

    let out = msb(
        h,
        &[
            "exec",
            "cli",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 5",
        ],
    );
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        (text(&out.stdout).as_str(), text(&out.stderr).as_str()),
        ("out\n", "err\n")
    );
    let out = msb(h, &["exec", "cli", "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(out.status.code(), Some(128 + 9));

    let out = msb(
        h,
        &[
            "exec",
            "cli",
            "--env",
            "A=b",
            "--cwd",
            "/tmp",
            "--timeout",
            "1",
            "--",
            "sh",
            "-c",
            "echo $A; pwd; sleep 30",
        ],
    );
    assert_eq!(out.status.code(), Some(128 + 9), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "b\n/tmp\n");
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );

    let out: Value = serde_json::from_str(&ok(
        h,
        &["--json", "exec", "cli", "--", "sh", "-c", "echo hi"],
    ))
    .unwrap();
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["stdout"], "hi\n");
    assert_eq!(out["stdout_truncated"], false);
}
