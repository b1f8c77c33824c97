//! The only place that calls `wait`: a thread that reaps every child of
//! PID 1, orphans included, and hands the exit codes of the processes the
//! agent started (registered through [`Reaper::spawn`]) to whoever waits for
//! them. One waiter avoids the race where a `waitpid(-1)` for zombies steals
//! the status of a process another thread is waiting for.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use nix::unistd::Pid;

use super::sys;

#[derive(Default)]
struct State {
    /// Registered pids; `Some(raw wait status)` once reaped.
    slots: HashMap<Pid, Option<libc::c_int>>,
    /// Bumped on every spawn, so an idle reaper knows to wait again.
    spawned: u64,
}

/// Shared handle to the reaper thread.
pub struct Reaper {
    state: Mutex<State>,
    changed: Condvar,
}

impl Reaper {
    /// Starts the reaper thread.
    pub fn start() -> io::Result<Arc<Self>> {
        let reaper = Arc::new(Self {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let r = Arc::clone(&reaper);
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || r.run())?;
        Ok(reaper)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked; the map is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        loop {
            let seen = self.lock().spawned;
            match sys::wait_any() {
                Ok((pid, status)) => {
                    let mut state = self.lock();
                    match state.slots.get_mut(&pid) {
                        Some(slot) => *slot = Some(status),
                        None => {
                            crate::log!("reaped orphan {pid} (exit {})", sys::exit_code(status))
                        }
                    }
                    drop(state);
                    self.changed.notify_all();
                }
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                    // No children at all: only our own spawn can create one.
                    let state = self.lock();
                    let _ = self
                        .changed
                        .wait_timeout_while(state, Duration::from_secs(1), |s| s.spawned == seen);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    crate::log!("waitpid: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Spawns `cmd` and registers its pid before the reaper can see it exit.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Child> {
        let mut state = self.lock();
        let child = cmd.spawn()?;
        state.slots.insert(pid_of(&child), None);
        state.spawned += 1;
        drop(state);
        self.changed.notify_all();
        Ok(child)
    }

    /// Blocks until the registered `pid` has been reaped; returns its raw
    /// wait status (see [`sys::exit_code`], [`sys::exit_signal`]).
    pub fn wait(&self, pid: Pid) -> libc::c_int {
        let mut state = self.lock();
        loop {
            match state.slots.get(&pid) {
                Some(Some(code)) => {
                    let code = *code;
                    state.slots.remove(&pid);
                    return code;
                }
                Some(None) => {
                    state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                // Unknown pid: report "exit 255" (a raw status of 255 << 8).
                None => return 255 << 8,
            }
        }
    }
}

/// The pid of a process std spawned (`Child::id` is the `pid_t` as `u32`,
/// so the cast gives it back unchanged).
pub fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(child.id() as libc::pid_t)
}
