//! Sandbox commands: `msb create|exec|stop|start|ls|rm|run`.
//!
//! `msb exec` streams: output is written as it comes (raw bytes, stdout to
//! stdout, stderr to stderr), stdin is forwarded when it is not a terminal,
//! Ctrl-C becomes SIGINT for the command's process group, and msb exits with
//! the command's status (128 + signal when a signal killed it). With
//! `--json` it buffers and prints one object at the end. No `-t` (pty) yet.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use microsandbox::{
    ExecEvent, ExecOptions, ExecOutput, ExecStream, MicrosandboxError, MicrosandboxResult, Sandbox,
};

use crate::render::{Removed, print_json, print_json_list};

/// Options shared by `create` and `run`.
#[derive(Args)]
pub struct CreateOpts {
    /// Image reference or manifest digest to boot (see `msb image ls`).
    #[arg(long, conflicts_with = "from_snapshot")]
    pub image: Option<String>,
    /// Boot from a snapshot (name, digest or path) instead of an image.
    #[arg(long)]
    pub from_snapshot: Option<String>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = microsandbox::sandbox::DEFAULT_MEMORY_MIB)]
    pub memory: u32,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Environment variable for every command, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    #[command(flatten)]
    pub network: NetworkOpts,
}

/// Network options of `create` and `run` (`docs/network.md`).
#[derive(Args, Default)]
pub struct NetworkOpts {
    /// Network policy: public (the default: no host loopback or private
    /// ranges), none (no interface) or all.
    #[arg(long = "network", value_name = "POLICY")]
    pub policy: Option<String>,
    /// Also allow this host, address or CIDR (repeatable).
    #[arg(long = "allow", value_name = "HOST|CIDR")]
    pub allow: Vec<String>,
    /// Publish a guest TCP port on the host's 127.0.0.1, HOST:GUEST (repeatable).
    #[arg(long = "port", value_name = "HOST:GUEST")]
    pub ports: Vec<String>,
}

impl NetworkOpts {
    fn apply(
        self,
        mut b: microsandbox::SandboxBuilder,
    ) -> MicrosandboxResult<microsandbox::SandboxBuilder> {
        if let Some(policy) = self.policy {
            b = b.network(policy);
        }
        for entry in self.allow {
            b = b.allow(entry);
        }
        for mapping in self.ports {
            let port: microsandbox::PublishedPort = mapping.parse()?;
            b = b.port(port.host, port.guest);
        }
        Ok(b)
    }
}

/// Overrides of `fork`.
#[derive(Args)]
pub struct ForkOpts {
    /// Guest memory in MiB (a full snapshot's fork: at most its snapshot's).
    #[arg(long)]
    pub memory: Option<u32>,
    /// Virtual CPUs (a full snapshot's fork: at most its snapshot's).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Environment variable for every command, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
}

fn key_value(flag: &str, kv: &str) -> MicrosandboxResult<(String, String)> {
    kv.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| MicrosandboxError::InvalidConfig(format!("{flag} {kv:?} is not KEY=VALUE")))
}

pub async fn fork(
    snapshot: String,
    name: String,
    opts: ForkOpts,
    json: bool,
) -> MicrosandboxResult<()> {
    let env = opts
        .env
        .iter()
        .map(|kv| key_value("--env", kv))
        .collect::<MicrosandboxResult<Vec<_>>>()?;
    let snap = microsandbox::Snapshot::open(&snapshot).await?;
    let sb = snap
        .restore_with(&name, |mut b| {
            if let Some(mib) = opts.memory {
                b = b.memory_mib(mib);
            }
            if let Some(cpus) = opts.cpus {
                b = b.cpus(cpus);
            }
            for (k, v) in env {
                b = b.env(k, v);
            }
            b
        })
        .await?;
    if json {
        print_json(sb.handle());
    } else {
        println!("forked {name} from {} ({})", snap.digest(), snap.kind());
    }
    Ok(())
}

pub async fn resume(name: String, json: bool) -> MicrosandboxResult<()> {
    Sandbox::get(&name).await?.resume().await?;
    if json {
        print_json(&Sandbox::get(&name).await?);
    } else {
        println!("resumed {name}");
    }
    Ok(())
}

fn builder(name: &str, opts: CreateOpts) -> MicrosandboxResult<microsandbox::SandboxBuilder> {
    let mut b = Sandbox::builder(name)
        .memory_mib(opts.memory)
        .cpus(opts.cpus);
    if let Some(image) = opts.image {
        b = b.image(image);
    }
    if let Some(snapshot) = opts.from_snapshot {
        b = b.from_snapshot(snapshot);
    }
    for kv in opts.env {
        let (k, v) = key_value("--env", &kv)?;
        b = b.env(k, v);
    }
    opts.network.apply(b)
}

pub async fn create(name: String, opts: CreateOpts, json: bool) -> MicrosandboxResult<()> {
    let sb = builder(&name, opts)?.create().await?;
    if json {
        print_json(sb.handle());
    } else {
        println!("created {} (running)", sb.name());
    }
    Ok(())
}

/// Options of `msb exec`.
#[derive(Args)]
pub struct ExecOpts {
    /// Kill the command (and everything it started) after SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Environment variable for this command, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory in the guest.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
}

impl ExecOpts {
    fn into_options(self) -> MicrosandboxResult<ExecOptions> {
        let mut env = BTreeMap::new();
        for kv in self.env {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                MicrosandboxError::InvalidConfig(format!("--env {kv:?} is not KEY=VALUE"))
            })?;
            env.insert(k.to_string(), v.to_string());
        }
        let timeout = match self.timeout {
            Some(secs) if secs.is_finite() && secs > 0.0 => Some(Duration::from_secs_f64(secs)),
            Some(secs) => {
                return Err(MicrosandboxError::InvalidConfig(format!(
                    "--timeout {secs} must be a positive number of seconds"
                )));
            }
            None => None,
        };
        Ok(ExecOptions {
            env,
            cwd: self.cwd,
            timeout,
            ..ExecOptions::default()
        })
    }
}

/// Run a command; returns its exit code for the process to exit with.
pub async fn exec(
    name: String,
    opts: ExecOpts,
    argv: Vec<String>,
    json: bool,
) -> MicrosandboxResult<i32> {
    let (cmd, args) = split_argv(argv)?;
    let options = opts.into_options()?;
    let sandbox = Sandbox::get(name).await?;
    if json {
        let out = sandbox.exec_with(cmd, args, options).await?;
        return Ok(emit(&out, json));
    }
    let stream = sandbox.exec_stream(cmd, args, options).await?;
    stream_to_terminal(stream).await
}

/// Set by the SIGINT handler; the exec loop turns it into a guest SIGINT.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Release);
}

fn catch_sigint() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// Forward stdin (when it is not a terminal), print output as it comes,
/// pass Ctrl-C on; returns the status to exit with.
async fn stream_to_terminal(mut stream: ExecStream) -> MicrosandboxResult<i32> {
    catch_sigint();
    let mut feeding = None;
    if let Some(mut stdin) = stream.take_stdin() {
        if std::io::stdin().is_terminal() {
            stdin.close()?;
        } else {
            // A thread reads our stdin (blocking) into a small channel: at
            // most 4 chunks of 64 KiB wait here.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
            std::thread::spawn(move || {
                let mut input = std::io::stdin().lock();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match input.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.blocking_send(buf[..n].to_vec()).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            feeding = Some(tokio::spawn(async move {
                while let Some(chunk) = rx.recv().await {
                    if stdin.write(&chunk).await.is_err() {
                        return; // the command exited
                    }
                }
                let _ = stdin.close();
            }));
        }
    }
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    let code = loop {
        let event = tokio::select! {
            event = stream.next() => event?,
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                if INTERRUPTED.swap(false, Ordering::AcqRel) {
                    stream.signal(libc::SIGINT)?;
                }
                continue;
            }
        };
        match event {
            Some(ExecEvent::Stdout(data)) => {
                // A closed stdout (e.g. `| head`) is not the command's failure.
                let _ = out.write_all(&data).and_then(|()| out.flush());
            }
            Some(ExecEvent::Stderr(data)) => {
                let _ = err.write_all(&data);
            }
            Some(ExecEvent::Exit(status)) => {
                if status.timed_out {
                    eprintln!("msb: the command timed out and was killed");
                }
                break status.signal.map_or(status.code, |s| 128 + s);
            }
            None => break 255,
        }
    };
    if let Some(feeding) = feeding {
        feeding.abort();
    }
    Ok(code)
}

pub async fn run(
    image: String,
    network: NetworkOpts,
    argv: Vec<String>,
    json: bool,
) -> MicrosandboxResult<i32> {
    let (cmd, args) = split_argv(argv)?;
    let name = format!("run-{}", std::process::id());
    let opts = CreateOpts {
        image: Some(image),
        from_snapshot: None,
        memory: microsandbox::sandbox::DEFAULT_MEMORY_MIB,
        cpus: 1,
        env: vec![],
        network,
    };
    let sb = builder(&name, opts)?.create().await?;
    let out = sb.exec(cmd, args).await;
    let removed = Sandbox::remove(&name).await;
    let code = emit(&out?, json);
    removed?;
    Ok(code)
}

pub async fn stop(name: String, json: bool) -> MicrosandboxResult<()> {
    Sandbox::get(&name).await?.stop().await?;
    if json {
        print_json(&Sandbox::get(&name).await?);
    } else {
        println!("stopped {name}");
    }
    Ok(())
}

pub async fn start(name: String, json: bool) -> MicrosandboxResult<()> {
    let sb = Sandbox::get(&name).await?.start().await?;
    if json {
        print_json(sb.handle());
    } else {
        println!("started {name}");
    }
    Ok(())
}

pub async fn remove(name: String, json: bool) -> MicrosandboxResult<()> {
    Sandbox::remove(&name).await?;
    if json {
        print_json(&Removed { removed: &name });
    } else {
        println!("removed {name}");
    }
    Ok(())
}

pub async fn list(json: bool) -> MicrosandboxResult<()> {
    let sandboxes = Sandbox::list().await?;
    if json {
        print_json_list(&sandboxes);
    } else {
        println!("{:<24} {:<9} IMAGE", "NAME", "STATE");
        for s in sandboxes {
            println!(
                "{:<24} {:<9} {}",
                s.name(),
                s.state().as_str(),
                s.image_ref()
            );
        }
    }
    Ok(())
}

fn split_argv(mut argv: Vec<String>) -> MicrosandboxResult<(String, Vec<String>)> {
    if argv.is_empty() {
        return Err(MicrosandboxError::InvalidConfig(
            "no command given (msb exec NAME -- CMD ARGS…)".into(),
        ));
    }
    let cmd = argv.remove(0);
    Ok((cmd, argv))
}

fn emit(out: &ExecOutput, json: bool) -> i32 {
    if json {
        print_json(out);
    } else {
        let _ = std::io::stdout().write_all(&out.stdout);
        let _ = std::io::stderr().write_all(&out.stderr);
    }
    out.exit_code
}
