//! `runv ps`: the container's processes. These are guest PIDs (the processes run in
//! the VM; the host has no such processes), so where runc runs the host's `ps -ef` and
//! keeps the container's lines, runv prints what the guest's /proc says about them.

use std::fmt::Write as _;

use anyhow::{bail, Result};
use runv_agent_protocol::{ProcessInfo, Request, Response};
use runv_runtime::agent;
use runv_runtime::sandbox::{self, vsock_path};
use runv_runtime::state::Status;

use super::Ctx;
use crate::cli::ListFormat;

/// USER_HZ: the unit of /proc's CPU times, 100 on every Linux architecture we boot.
const TICKS_PER_SEC: u64 = 100;

pub fn run(ctx: &Ctx, id: &str, format: ListFormat, ps_args: &[String]) -> Result<i32> {
    // runc ignores ps options with --format json; with a table it hands them to the
    // host's ps, which cannot see into the VM.
    let default_options = ps_args.is_empty() || ps_args == ["-ef"];
    if format == ListFormat::Table && !default_options {
        bail!(
            "ps options {ps_args:?} are not supported: the processes run in the container's VM \
             (runv ps prints UID, PID, PPID, STAT, TIME and CMD from the guest)"
        );
    }
    let (locked, state) = ctx.root.open(id)?;
    if sandbox::status(&state) == Status::Stopped {
        return Err(super::not_running());
    }
    let uds = vsock_path(&locked.dir);
    drop(locked);
    // Before its VM boots (at start), nothing runs in the container.
    let (pids, processes) = if state.vmm.is_none() {
        (vec![], vec![])
    } else {
        match agent::call_once(
            &uds,
            &Request::ListProcesses {
                container_id: id.into(),
            },
            agent::CALL_LIMIT,
        )? {
            Response::Processes { pids, processes } => (pids, processes),
            other => bail!("agent answered {} to list_processes", other.kind()),
        }
    };
    match format {
        ListFormat::Json => println!("{}", serde_json::to_string(&pids)?),
        ListFormat::Table => print!("{}", table(&pids, &processes)),
    }
    Ok(0)
}

/// The table: one line per process with what the agent read, PID only for a process
/// it could not read (or an agent that does not report details).
fn table(pids: &[u32], processes: &[ProcessInfo]) -> String {
    let mut out = format!(
        "{:>5} {:>7} {:>7} {:<4} {:>8} CMD\n",
        "UID", "PID", "PPID", "STAT", "TIME"
    );
    for &pid in pids {
        match processes.iter().find(|p| p.pid == pid) {
            Some(p) => {
                let _ = writeln!(
                    out,
                    "{:>5} {:>7} {:>7} {:<4} {:>8} {}",
                    p.uid,
                    p.pid,
                    p.ppid,
                    p.state,
                    cpu_time(p.cpu_ticks),
                    p.cmd
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "{:>5} {:>7} {:>7} {:<4} {:>8} ?",
                    "?", pid, "?", "?", "?"
                );
            }
        }
    }
    out
}

/// ps's TIME column: `[DD-]HH:MM:SS` of CPU time.
fn cpu_time(ticks: u64) -> String {
    let s = ticks / TICKS_PER_SEC;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_pid_column_and_the_commands() {
        let procs = vec![ProcessInfo {
            pid: 1,
            ppid: 0,
            uid: 0,
            state: "S".into(),
            cpu_ticks: 12_345,
            cmd: "sleep 1000".into(),
        }];
        let t = table(&[1, 7], &procs);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].split_whitespace().any(|c| c == "PID"));
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["0", "1", "0", "S", "00:02:03", "sleep", "1000"]
        );
        assert_eq!(lines[2].split_whitespace().nth(1), Some("7"));
    }

    #[test]
    fn cpu_time_formats_days() {
        assert_eq!(cpu_time(0), "00:00:00");
        assert_eq!(cpu_time(100 * (86_400 + 3_661)), "1-01:01:01");
    }
}
