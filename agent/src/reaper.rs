//! The one place that calls `waitpid`. As PID 1 the agent must reap every orphan; as
//! any parent it must learn how its container processes ended.
//!
//! Container processes come to the agent by reparenting (they are built in a helper
//! process, see builder.rs), and libcontainer clones them with no exit signal, so the
//! reaper polls `waitpid(-1, WNOHANG | __WALL)` every few milliseconds rather than
//! waiting for SIGCHLD.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use agent_protocol::ExitStatus;

const POLL: Duration = Duration::from_millis(10);

/// A value set once, waited for by many.
#[derive(Debug)]
pub struct Once<T: Copy> {
    value: Mutex<Option<T>>,
    cv: Condvar,
}

impl<T: Copy> Default for Once<T> {
    fn default() -> Self {
        Once {
            value: Mutex::new(None),
            cv: Condvar::new(),
        }
    }
}

impl<T: Copy> Once<T> {
    pub fn set(&self, v: T) {
        let mut g = lock(&self.value);
        if g.is_none() {
            *g = Some(v);
            self.cv.notify_all();
        }
    }

    pub fn get(&self) -> Option<T> {
        *lock(&self.value)
    }

    /// The value, if it is set within `limit`.
    pub fn wait_timeout(&self, limit: Duration) -> Option<T> {
        let g = lock(&self.value);
        let (g, _) = self
            .cv
            .wait_timeout_while(g, limit, |v| v.is_none())
            .unwrap_or_else(|e| e.into_inner());
        *g
    }

    pub fn wait(&self) -> T {
        let mut g = lock(&self.value);
        loop {
            if let Some(v) = *g {
                return v;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Locks, ignoring poisoning: a panicked thread must not take the agent down.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Table {
    watched: HashMap<i32, Arc<Once<ExitStatus>>>,
    /// Exits of processes nobody registered (yet): orphans, or a process that ended
    /// before its builder returned its PID.
    unclaimed: HashMap<i32, ExitStatus>,
}

#[derive(Default)]
pub struct Reaper {
    table: Mutex<Table>,
}

impl Reaper {
    /// Starts the polling thread.
    pub fn start() -> Arc<Reaper> {
        let reaper = Arc::new(Reaper::default());
        let r = reaper.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || loop {
                std::thread::sleep(POLL);
                r.reap_all();
            })
            .expect("spawning the reaper thread");
        reaper
    }

    /// The exit of `pid`, a process that is not (yet) the agent's child: whatever exit
    /// the table remembers for that PID belongs to an earlier process that had it.
    pub fn watch_new(&self, pid: i32) -> Arc<Once<ExitStatus>> {
        let mut t = lock(&self.table);
        t.unclaimed.remove(&pid);
        let cell = Arc::new(Once::default());
        t.watched.insert(pid, cell.clone());
        cell
    }

    /// The exit of `pid`, a child of the agent, set once it has been reaped (also when
    /// it was reaped before this call).
    #[cfg(test)]
    pub fn watch(&self, pid: i32) -> Arc<Once<ExitStatus>> {
        let mut t = lock(&self.table);
        let cell = t.watched.entry(pid).or_default().clone();
        if let Some(status) = t.unclaimed.remove(&pid) {
            cell.set(status);
        }
        cell
    }

    fn reap_all(&self) {
        loop {
            let mut raw = 0;
            // SAFETY: waitpid writes only to `raw`, a valid local.
            let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG | libc::__WALL) };
            if pid <= 0 {
                return;
            }
            let status = if libc::WIFSIGNALED(raw) {
                ExitStatus::Signal(libc::WTERMSIG(raw))
            } else {
                ExitStatus::Code(libc::WEXITSTATUS(raw))
            };
            tracing::debug!(pid, ?status, "reaped");
            let mut t = lock(&self.table);
            match t.watched.remove(&pid) {
                Some(cell) => cell.set(status),
                None => {
                    // Bounded: orphans' PIDs are recycled by the kernel, and the
                    // table only remembers the latest exit of each.
                    if t.unclaimed.len() > 4096 {
                        t.unclaimed.clear();
                    }
                    t.unclaimed.insert(pid, status);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaps_a_child_and_reports_its_code() {
        let reaper = Reaper::start();
        #[allow(clippy::zombie_processes)]
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .expect("spawn sh");
        // Even if the reaper got to it first, the exit is kept for this call.
        let cell = reaper.watch(child.id() as i32);
        // The reaper, not `Child::wait`, collects it.
        std::mem::forget(child);
        assert_eq!(cell.wait(), ExitStatus::Code(7));
    }

    #[test]
    fn once_keeps_the_first_value() {
        let o = Once::default();
        o.set(1);
        o.set(2);
        assert_eq!(o.get(), Some(1));
        assert_eq!(o.wait(), 1);
    }
}
