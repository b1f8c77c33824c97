//! Streaming exec on a real QEMU microVM (issue 23): live output, stdin,
//! signals, timeouts that kill a process tree, two execs at once,
//! back-pressure with bounded host memory, cancellation. One VM serves all
//! of it, one step after another.

mod common;

use std::time::{Duration, Instant};

use common::{BUSYBOX_REF, TestHome};
use microsandbox::{
    CancellationToken, ExecEvent, ExecOptions, ExecStream, ExitStatus, MicrosandboxResult, Sandbox,
};

#[tokio::test(flavor = "multi_thread")]
async fn streaming_exec_on_one_vm() {
    let home = TestHome::new();
    home.run(all(&home)).await;
}

async fn all(home: &TestHome) {
    home.load_busybox().await;
    let sb = Sandbox::builder("exec")
        .image(BUSYBOX_REF)
        .create()
        .await
        .unwrap();

    eprintln!("step output_arrives_before_the_command_ends");
    output_arrives_before_the_command_ends(&sb).await;
    eprintln!("step stdin_round_trips_10_mb_through_cat");
    stdin_round_trips_10_mb_through_cat(&sb).await;
    eprintln!("step env_cwd_and_buffered_output_cap");
    env_cwd_and_buffered_output_cap(&sb).await;
    eprintln!("step exit_by_signal_is_reported");
    exit_by_signal_is_reported(&sb).await;
    eprintln!("step timeout_kills_the_process_tree");
    timeout_kills_the_process_tree(&sb).await;
    eprintln!("step two_execs_interleave");
    two_execs_interleave(&sb).await;
    eprintln!("step a_reader_that_stops_keeps_memory_bounded");
    a_reader_that_stops_keeps_memory_bounded(&sb).await;
    eprintln!("step cancelling_exec_kills_it");
    cancelling_exec_kills_it(&sb).await;

    // The buffered exec still works after all that.
    let out = sb.exec("echo", ["still", "here"]).await.unwrap();
    assert_eq!(out.stdout_text(), "still here\n");
    sb.stop().await.unwrap();
    Sandbox::remove("exec").await.unwrap();
    assert!(home.vm_pids().is_empty(), "VMs left: {:?}", home.vm_pids());
}

async fn stream(sb: &Sandbox, script: &str, opts: ExecOptions) -> ExecStream {
    sb.exec_stream("sh", ["-c", script], opts).await.unwrap()
}

/// Reads the stream to its end: (stdout, stderr, exit).
async fn drain(s: &mut ExecStream) -> MicrosandboxResult<(Vec<u8>, Vec<u8>, ExitStatus)> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut exit = None;
    while let Some(ev) = s.next().await? {
        match ev {
            ExecEvent::Stdout(d) => out.extend(d),
            ExecEvent::Stderr(d) => err.extend(d),
            ExecEvent::Exit(st) => exit = Some(st),
        }
    }
    Ok((out, err, exit.expect("an exit event")))
}

async fn output_arrives_before_the_command_ends(sb: &Sandbox) {
    let started = Instant::now();
    let mut s = stream(
        sb,
        "echo first; sleep 2; echo second",
        ExecOptions::default(),
    )
    .await;
    let sent = Instant::now();
    let first = s.next().await.unwrap().unwrap();
    let latency = sent.elapsed();
    assert_eq!(first, ExecEvent::Stdout(b"first\n".to_vec()));
    assert!(
        latency < Duration::from_millis(500),
        "first chunk after {latency:?}"
    );
    let (out, _, exit) = drain(&mut s).await.unwrap();
    assert_eq!(out, b"second\n");
    assert!(exit.success());
    assert!(started.elapsed() >= Duration::from_secs(2));
    eprintln!("first chunk after {latency:?}");
}

async fn stdin_round_trips_10_mb_through_cat(sb: &Sandbox) {
    let data: Vec<u8> = (0..10_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let started = Instant::now();
    let mut s = sb
        .exec_stream("cat", Vec::<String>::new(), ExecOptions::default())
        .await
        .unwrap();
    let mut stdin = s.take_stdin().unwrap();
    let input = data.clone();
    let writer = tokio::spawn(async move {
        stdin.write(&input).await.unwrap();
        stdin.close().unwrap();
    });
    let (out, err, exit) = drain(&mut s).await.unwrap();
    writer.await.unwrap();
    assert!(exit.success(), "{exit:?} {}", String::from_utf8_lossy(&err));
    assert_eq!(out.len(), data.len());
    assert!(out == data, "10 MB came back different");
    eprintln!("10 MB through cat in {:?}", started.elapsed());
}

async fn env_cwd_and_buffered_output_cap(sb: &Sandbox) {
    let opts = ExecOptions {
        env: [("GREETING".to_string(), "hi there".to_string())].into(),
        cwd: Some("/tmp".into()),
        ..ExecOptions::default()
    };
    let out = sb
        .exec_with("sh", ["-c", "echo \"$GREETING\"; pwd"], opts)
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "hi there\n/tmp\n");
    let capped = ExecOptions {
        output_limit: Some(1000),
        ..ExecOptions::default()
    };
    let out = sb
        .exec_with(
            "sh",
            ["-c", "head -c 5000000 /dev/zero; echo err >&2"],
            capped,
        )
        .await
        .unwrap();
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.stdout_truncated && !out.stderr_truncated);
    assert_eq!(out.stderr_text(), "err\n");
    assert_eq!(out.exit_code, 0);
}

async fn exit_by_signal_is_reported(sb: &Sandbox) {
    let out = sb.exec("sh", ["-c", "kill -TERM $$"]).await.unwrap();
    assert_eq!((out.exit_code, out.signal), (128 + 15, Some(15)));
    // A signal sent through the stream.
    let mut s = stream(sb, "echo up; exec sleep 100", ExecOptions::default()).await;
    assert_eq!(
        s.next().await.unwrap().unwrap(),
        ExecEvent::Stdout(b"up\n".to_vec())
    );
    s.signal(libc::SIGINT).unwrap();
    let (_, _, exit) = drain(&mut s).await.unwrap();
    assert_eq!(exit.signal, Some(libc::SIGINT), "{exit:?}");
    assert!(!exit.timed_out);
}

async fn timeout_kills_the_process_tree(sb: &Sandbox) {
    let opts = ExecOptions {
        timeout: Some(Duration::from_secs(1)),
        ..ExecOptions::default()
    };
    let started = Instant::now();
    let script = "sleep 300 & sleep 301 & (sleep 302; echo never) & echo started; wait";
    let out = sb.exec_with("sh", ["-c", script], opts).await.unwrap();
    let took = started.elapsed();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.signal, Some(9));
    assert_eq!(out.stdout_text(), "started\n");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // A command that closes its output still times out.
    let opts = ExecOptions {
        timeout: Some(Duration::from_secs(1)),
        ..ExecOptions::default()
    };
    let out = sb
        .exec_with("sh", ["-c", "exec >&- 2>&-; sleep 303"], opts)
        .await
        .unwrap();
    assert!(out.timed_out && out.signal == Some(9), "{out:?}");
    let ps = sb.exec("ps", Vec::<String>::new()).await.unwrap();
    assert!(
        !ps.stdout_text().contains("sleep 30"),
        "survivors:\n{}",
        ps.stdout_text()
    );
}

async fn two_execs_interleave(sb: &Sandbox) {
    let script = |tag: &str| format!("for i in 1 2 3 4 5; do echo {tag}$i; sleep 0.2; done");
    let (sa, sb_) = (script("a"), script("b"));
    let a = stream(sb, &sa, ExecOptions::default());
    let b = stream(sb, &sb_, ExecOptions::default());
    let (mut a, mut b) = tokio::join!(a, b);
    let (ra, rb) = tokio::join!(drain(&mut a), drain(&mut b));
    let (oa, ob) = (ra.unwrap().0, rb.unwrap().0);
    assert_eq!(String::from_utf8(oa).unwrap(), "a1\na2\na3\na4\na5\n");
    assert_eq!(String::from_utf8(ob).unwrap(), "b1\nb2\nb3\nb4\nb5\n");
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn a_reader_that_stops_keeps_memory_bounded(sb: &Sandbox) {
    let before = rss_kib();
    let mut s = stream(
        sb,
        "head -c 1073741824 /dev/zero; echo done >&2",
        ExecOptions::default(),
    )
    .await;
    // Read a little, then stop reading for 3 s while the guest wants to
    // write 1 GiB.
    let mut got = 0;
    while got < 1 << 20 {
        if let Some(ExecEvent::Stdout(d)) = s.next().await.unwrap() {
            got += d.len();
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let buffered = s.buffered_bytes();
    let grown = rss_kib().saturating_sub(before);
    eprintln!("stopped reader: {buffered} bytes buffered, RSS +{grown} KiB");
    assert!(buffered <= 3 << 20, "{buffered} bytes buffered");
    assert!(grown < 64 << 10, "RSS grew by {grown} KiB");
    // Dropping the stream kills the writer; the VM keeps working.
    drop(s);
    let out = sb
        .exec("sh", ["-c", "sleep 0.5; ps | grep -c '[h]ead -c'"])
        .await
        .unwrap();
    assert_eq!(out.stdout_text().trim(), "0", "head survived the drop");
}

async fn cancelling_exec_kills_it(sb: &Sandbox) {
    // A fired token.
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        t.cancel();
    });
    let started = Instant::now();
    let err = token.scope(sb.exec("sleep", ["200"])).await.unwrap_err();
    assert_eq!(err.kind(), "Cancelled");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A dropped future.
    let dropped = tokio::time::timeout(Duration::from_millis(300), sb.exec("sleep", ["201"])).await;
    assert!(dropped.is_err());
    let out = sb
        .exec("sh", ["-c", "sleep 0.5; ps | grep -c '[s]leep 20'"])
        .await
        .unwrap();
    assert_eq!(out.stdout_text().trim(), "0", "a cancelled exec survived");
}
