//! Sandbox commands: `msb create|exec|stop|start|ls|rm|run`.

use std::io::Write;

use clap::Args;
use microsandbox::{ExecOutput, MicrosandboxError, MicrosandboxResult, Sandbox};

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
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            MicrosandboxError::InvalidConfig(format!("--env {kv:?} is not KEY=VALUE"))
        })?;
        b = b.env(k, v);
    }
    Ok(b)
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

/// Run a command; returns its exit code for the process to exit with.
pub async fn exec(name: String, argv: Vec<String>, json: bool) -> MicrosandboxResult<i32> {
    let (cmd, args) = split_argv(argv)?;
    let out = Sandbox::get(name).await?.exec(cmd, args).await?;
    Ok(emit(&out, json))
}

pub async fn run(image: String, argv: Vec<String>, json: bool) -> MicrosandboxResult<i32> {
    let (cmd, args) = split_argv(argv)?;
    let name = format!("run-{}", std::process::id());
    let opts = CreateOpts {
        image: Some(image),
        from_snapshot: None,
        memory: microsandbox::sandbox::DEFAULT_MEMORY_MIB,
        cpus: 1,
        env: vec![],
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
