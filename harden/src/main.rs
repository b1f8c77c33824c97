//! `kill-harness`: kill -9 anywhere (issue 22, point 2). Each operation
//! (snapshot create/remove/reindex/export/import, image load, sandbox
//! create/start/stop/rm) runs as an `msb` child process in a home of its
//! own and is SIGKILLed at a random point; then one further command runs
//! and the invariants of `docs/crash-safety.md` are checked against the
//! files on disk and the process table. The next run reuses the same names.
//!
//! Kill points: the operation's unkilled duration `d` is measured first in
//! the same run (median of `--measure` runs, per variant of the command:
//! `create` alternates a fork of the instant-create base and a cold boot
//! from a disk snapshot, the table shows both); each kill then lands uniformly
//! in `[0, d]`, or, for a share of runs, within the first 5 ms (right after
//! the child starts). The draws come from a seeded generator (`--seed`,
//! printed), so a failing run replays with the same fractions of `d`.
//!
//! Usage: `kill-harness --msb target/debug/msb [--runs N] [--ops a,b]
//! [--seed S] [--measure M]` with `MSB_KERNEL_DIR` set; homes live under
//! `$TMPDIR`. Exits non-zero on any violation.

mod check;
mod msb;
mod ops;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use msb::Msb;
use ops::{Op, OpEnv};

/// Share of kills that land right after the child starts.
const EARLY_KILL_SHARE: f64 = 0.15;
/// "Right after the child starts": within this many microseconds.
const EARLY_KILL_WINDOW_US: u64 = 5_000;

#[derive(Parser)]
#[command(about = "SIGKILL msb operations at random points and check crash safety")]
struct Args {
    /// The msb binary to run.
    #[arg(long)]
    msb: PathBuf,
    /// Killed runs per operation.
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Comma-separated operations (default: all).
    #[arg(long, value_delimiter = ',')]
    ops: Vec<String>,
    /// Seed of the kill points (default: from the clock; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Unkilled runs that measure an operation's duration first.
    #[arg(long, default_value_t = 3)]
    measure: usize,
}

/// What one operation's runs came to.
struct Tally {
    op: Op,
    /// The measured unkilled duration of each variant.
    measured: Vec<Duration>,
    runs: usize,
    kills: usize,
    before_output: usize,
    completed: usize,
    violations: usize,
    wall: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("kill-harness: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let ops: Vec<Op> = if args.ops.is_empty() {
        Op::ALL.to_vec()
    } else {
        args.ops
            .iter()
            .map(|o| Op::parse(o))
            .collect::<Result<_, _>>()?
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    println!(
        "kill-harness: seed {seed} ({} runs per op; replay with --seed {seed})",
        args.runs
    );
    let msb_bin = std::fs::canonicalize(&args.msb)
        .map_err(|e| format!("--msb {}: {e}", args.msb.display()))?;
    let work = tempfile::Builder::new()
        .prefix("kill-harness-")
        .tempdir()
        .map_err(|e| format!("work directory: {e}"))?;
    let work_path = std::fs::canonicalize(work.path()).map_err(|e| e.to_string())?;
    let busybox_archive = work_path.join("busybox.tar");
    let builder = Msb {
        bin: msb_bin.clone(),
        home: work_path.join("busybox-home"),
    };
    builder.run(&[
        "image",
        "busybox",
        "--tag",
        ops::IMAGE,
        "--out",
        &busybox_archive.to_string_lossy(),
    ])?;

    let mut tallies = Vec::new();
    let mut ok = true;
    let mut fixtures_made = std::collections::BTreeSet::new();
    for (position, op) in ops.iter().enumerate() {
        // Operations of one group share a home and its fixture.
        let dir = work_path.join(op.group());
        let env = OpEnv {
            msb: Msb {
                bin: msb_bin.clone(),
                home: dir.join("home"),
            },
            work: dir.clone(),
            busybox_archive: busybox_archive.clone(),
        };
        // One stream per operation, so `--ops x` replays x's kill points.
        let index = Op::ALL.iter().position(|o| o == op).unwrap_or(0);
        let mut rng = fastrand::Rng::with_seed(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9));
        let fixture = fixtures_made.insert(op.group());
        let tally = run_op(*op, &env, args, &mut rng, seed, fixture);
        let leftovers = check::kill_all_mentioning(&dir);
        if !ops[position + 1..].iter().any(|o| o.group() == op.group()) {
            let _ = std::fs::remove_dir_all(&dir);
        }
        match tally {
            Ok(tally) => {
                ok &= tally.violations == 0 && leftovers.is_empty();
                tallies.push(tally);
            }
            Err(e) => {
                eprintln!("{}: {e}", op.name());
                ok = false;
            }
        }
        for (pid, cmdline) in &leftovers {
            eprintln!(
                "{}: process {pid} left at the end: {}",
                op.name(),
                check::shorten(cmdline)
            );
        }
    }
    check::kill_all_mentioning(&work_path);
    print_table(&tallies);
    println!(
        "kill-harness: {} (seed {seed})",
        if ok { "no violations" } else { "FAILED" }
    );
    Ok(ok)
}

/// Measure `op`, then kill it `args.runs` times, checking after each;
/// `fixture`: fill its group's home first.
fn run_op(
    op: Op,
    env: &OpEnv,
    args: &Args,
    rng: &mut fastrand::Rng,
    seed: u64,
    fixture: bool,
) -> Result<Tally, String> {
    let started = Instant::now();
    std::fs::create_dir_all(&env.work).map_err(|e| e.to_string())?;
    if fixture {
        op.fixture(env)
            .map_err(|e| format!("setting the home up: {e}"))?;
    }
    let log = env.work.join("child.log");
    // Each variant of the command (see `Op::variants`) is measured on its
    // own: a create that forks and one that boots differ tenfold.
    let variants = op.variants();
    let mut durations = vec![Vec::new(); variants];
    for run in 0..args.measure.max(1) * variants {
        op.prepare(env, run)?;
        let t = Instant::now();
        let status = env
            .msb
            .spawn_logged(&op.argv(env, run), &log)?
            .wait()
            .map_err(|e| e.to_string())?;
        durations[run % variants].push(t.elapsed());
        if !status.success() {
            return Err(format!(
                "unkilled run {run} failed: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        let violations = op.check(env, true)?;
        if !violations.is_empty() {
            return Err(format!(
                "unkilled run {run} broke invariants:\n  {}",
                violations.join("\n  ")
            ));
        }
    }
    let measured: Vec<Duration> = durations
        .into_iter()
        .map(|mut d| {
            d.sort();
            d[d.len() / 2]
        })
        .collect();
    let mut tally = Tally {
        op,
        measured: measured.clone(),
        runs: 0,
        kills: 0,
        before_output: 0,
        completed: 0,
        violations: 0,
        wall: Duration::ZERO,
    };
    for run in 0..args.runs {
        let early = rng.f64() < EARLY_KILL_SHARE;
        let fraction = rng.f64();
        let delay = if early {
            Duration::from_micros((fraction * EARLY_KILL_WINDOW_US as f64) as u64)
        } else {
            measured[run % variants].mul_f64(fraction)
        };
        tally.runs += 1;
        let outcome = op
            .prepare(env, run)
            .map_err(|e| vec![format!("the name cannot be used again: {e}")])
            .and_then(|()| kill_at(&env.msb, &op.argv(env, run), &log, delay).map_err(|e| vec![e]));
        let violations = match outcome {
            Ok(Killed::Yes { before_output }) => {
                tally.kills += 1;
                tally.before_output += usize::from(before_output);
                op.check(env, false).unwrap_or_else(|e| vec![e])
            }
            Ok(Killed::NoItFinished) => {
                tally.completed += 1;
                op.check(env, true).unwrap_or_else(|e| vec![e])
            }
            Err(v) => v,
        };
        if !violations.is_empty() {
            tally.violations += 1;
            eprintln!(
                "VIOLATION seed {seed} op {} run {run} delay {:?} ({}):\n  {}\n--- state ---\n{}--- child output ---\n{}",
                op.name(),
                delay,
                if early { "early" } else { "uniform in [0, d]" },
                violations.join("\n  "),
                op.state(env),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            // The home is no longer a known state: later runs would only
            // report the same damage.
            break;
        }
    }
    if tally.violations == 0 {
        let violations = op.finish(env);
        if !violations.is_empty() {
            tally.violations += 1;
            eprintln!(
                "VIOLATION seed {seed} op {} after the last run:\n  {}\n--- state ---\n{}",
                op.name(),
                violations.join("\n  "),
                op.state(env)
            );
        }
    }
    tally.wall = started.elapsed();
    Ok(tally)
}

enum Killed {
    Yes { before_output: bool },
    NoItFinished,
}

/// Start `argv` and SIGKILL it `delay` after, unless it ended first.
fn kill_at(msb: &Msb, argv: &[String], log: &Path, delay: Duration) -> Result<Killed, String> {
    let mut child = msb.spawn_logged(argv, log)?;
    let deadline = Instant::now() + delay;
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            return Ok(Killed::NoItFinished);
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(1)));
    }
    let before_output = std::fs::metadata(log).map_or(true, |m| m.len() == 0);
    // kill() sends SIGKILL; wait() reaps it.
    child.kill().map_err(|e| e.to_string())?;
    child.wait().map_err(|e| e.to_string())?;
    Ok(Killed::Yes { before_output })
}

fn print_table(tallies: &[Tally]) {
    println!(
        "\n{:<16} {:>11} {:>5} {:>6} {:>13} {:>9} {:>10} {:>9}",
        "op", "d (ms)", "runs", "kills", "before-output", "finished", "violations", "wall (s)"
    );
    for t in tallies {
        println!(
            "{:<16} {:>11} {:>5} {:>6} {:>13} {:>9} {:>10} {:>9.1}",
            t.op.name(),
            t.measured
                .iter()
                .map(|d| d.as_millis().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            t.runs,
            t.kills,
            t.before_output,
            t.completed,
            t.violations,
            t.wall.as_secs_f64()
        );
    }
}
