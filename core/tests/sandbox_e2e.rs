//! Sandboxes on real QEMU microVMs (TCG here): the lifecycle of issue 3 (one
//! test function, so the boots run one at a time on a 2-core machine) and,
//! beside it in its own home, the error kinds of bad input, which boot
//! nothing.

mod common;

use std::time::Instant;

use common::{BUSYBOX_REF, TestHome};
use microsandbox::{Config, Sandbox, SandboxState};

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_lifecycle() {
    let home = TestHome::new();
    home.run(lifecycle(&home)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_fails_with_its_kind_and_leaves_nothing() {
    let home = TestHome::new();
    home.run(bad_input(&home)).await;
}

async fn lifecycle(home: &TestHome) {
    home.load_busybox().await;

    // create → exec writes and reads a file
    let started = Instant::now();
    let sb = Sandbox::builder("e2e")
        .image(BUSYBOX_REF)
        .create()
        .await
        .unwrap();
    eprintln!("create took {:?}", started.elapsed());
    let out = sb
        .exec("sh", ["-c", "echo hi > /root/f; cat /root/f"])
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout_text().as_str()),
        (0, "hi\n"),
        "stderr: {}",
        out.stderr_text()
    );
    let out = sb
        .exec("sh", ["-c", "echo oops >&2; exit 3"])
        .await
        .unwrap();
    assert_eq!((out.exit_code, out.stderr_text().as_str()), (3, "oops\n"));

    // duplicate name
    let err = Sandbox::builder("e2e")
        .image(BUSYBOX_REF)
        .create()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "SandboxAlreadyExists");

    // stop → exec refused → start → the file survived
    sb.stop().await.unwrap();
    let handle = Sandbox::get("e2e").await.unwrap();
    assert_eq!(handle.status().await.unwrap(), SandboxState::Stopped);
    assert_eq!(
        handle
            .exec("true", Vec::<String>::new())
            .await
            .unwrap_err()
            .kind(),
        "SandboxNotRunning"
    );
    let fsck = std::process::Command::new("e2fsck")
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .args(["-fn"])
        .arg(handle.upper_path())
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "upper not clean after stop: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let sb = handle.start().await.unwrap();
    let out = sb.exec("cat", ["/root/f"]).await.unwrap();
    assert_eq!(out.stdout_text(), "hi\n");

    // a guest that dies marks the sandbox crashed
    let died = sb.exec("sh", ["-c", "echo c > /proc/sysrq-trigger"]).await;
    assert!(died.is_err(), "the guest kept running: {died:?}");
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while Sandbox::get("e2e").await.unwrap().status().await.unwrap() != SandboxState::Crashed {
        assert!(Instant::now() < deadline, "sandbox never became crashed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        Sandbox::list()
            .await
            .unwrap()
            .iter()
            .map(|s| (s.name().to_string(), s.state()))
            .collect::<Vec<_>>(),
        vec![("e2e".to_string(), SandboxState::Crashed)]
    );

    // remove
    Sandbox::remove("e2e").await.unwrap();
    assert!(Sandbox::list().await.unwrap().is_empty());
    assert!(!home.path().join("sandboxes/e2e").exists());
    assert!(home.vm_pids().is_empty(), "VMs left: {:?}", home.vm_pids());
}

async fn bad_input(home: &TestHome) {
    home.load_busybox().await;
    let err = Sandbox::builder("ghost")
        .image("no/such:image")
        .create()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "ImageNotFound");
    let err = Sandbox::builder("bad/name")
        .image(BUSYBOX_REF)
        .create()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "InvalidConfig");
    assert_eq!(
        Sandbox::get("nobody").await.unwrap_err().kind(),
        "SandboxNotFound"
    );
    // An explicit guest assets directory is used as given, even empty.
    let empty = tempfile::tempdir().unwrap();
    let no_assets = Config::new().guest_assets_dir(empty.path());
    let err = no_assets
        .scope(Sandbox::builder("nokernel").image(BUSYBOX_REF).create())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "Runtime");
    assert!(err.to_string().contains("setup-runtime.sh"), "{err}");
    assert!(
        !home.path().join("sandboxes/nokernel").exists(),
        "a failed create left its directory"
    );
    assert_eq!(
        Sandbox::get("nokernel").await.unwrap_err().kind(),
        "SandboxNotFound"
    );

    assert!(Sandbox::list().await.unwrap().is_empty());
    assert!(home.vm_pids().is_empty(), "VMs left: {:?}", home.vm_pids());
}
