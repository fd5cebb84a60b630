//! What `list_processes` reports about each process: read from the guest's /proc, the
//! way ps reads it. A process that exits while it is being read is left out.

use std::path::Path;

use runv_agent_protocol::ProcessInfo;

/// At most this many bytes of a command line are reported (ps truncates too; the whole
/// answer must fit a frame even for a container with thousands of processes).
const MAX_CMD: usize = 512;

/// `ProcessInfo` of each of `pids` that still exists under `proc_root` (`/proc`).
pub fn read_all(proc_root: &Path, pids: &[u32]) -> Vec<ProcessInfo> {
    pids.iter().filter_map(|&p| read(proc_root, p)).collect()
}

fn read(proc_root: &Path, pid: u32) -> Option<ProcessInfo> {
    let dir = proc_root.join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let (comm, state, ppid, cpu_ticks) = parse_stat(&stat)?;
    Some(ProcessInfo {
        pid,
        ppid,
        uid: parse_uid(&status)?,
        state,
        cpu_ticks,
        cmd: command(&cmdline, comm),
    })
}

/// `(comm, state, ppid, utime + stime)` from /proc/PID/stat. comm may hold spaces and
/// parentheses, so the fields after it are found from the last `)`.
fn parse_stat(stat: &str) -> Option<(&str, String, u32, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let state = rest.first()?.to_string();
    let ppid = rest.get(1)?.parse().ok()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, state, ppid, utime.saturating_add(stime)))
}

/// The real uid: the first number of the `Uid:` line of /proc/PID/status.
fn parse_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The NUL-separated command line joined by spaces, or `[comm]` when it is empty.
fn command(cmdline: &[u8], comm: &str) -> String {
    let joined: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut cmd = if joined.is_empty() {
        format!("[{comm}]")
    } else {
        joined.join(" ")
    };
    if cmd.len() > MAX_CMD {
        let mut end = MAX_CMD;
        while !cmd.is_char_boundary(end) {
            end -= 1;
        }
        cmd.truncate(end);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let stat = "42 (we (ird) name) S 7 42 42 0 -1 4194560 100 0 0 0 15 4 0 0 20 0 1 0 99";
        let (comm, state, ppid, ticks) = parse_stat(stat).unwrap();
        assert_eq!(
            (comm, state.as_str(), ppid, ticks),
            ("we (ird) name", "S", 7, 19)
        );
    }

    #[test]
    fn truncated_stat_is_none() {
        assert!(parse_stat("42 (sh) S 1 42").is_none());
        assert!(parse_stat("42 sh S").is_none());
        assert!(parse_stat("").is_none());
    }

    #[test]
    fn uid_is_the_real_uid() {
        let status = "Name:\tsh\nUid:\t65534\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_uid(status), Some(65534));
        assert_eq!(parse_uid("Name:\tsh\n"), None);
    }

    #[test]
    fn command_joins_arguments_or_shows_comm() {
        assert_eq!(command(b"sleep\x001000\x00", "sleep"), "sleep 1000");
        assert_eq!(command(b"", "kworker/0:1"), "[kworker/0:1]");
        let long = vec![b'a'; 4 * MAX_CMD];
        assert_eq!(command(&long, "x").len(), MAX_CMD);
        // A multi-byte character across the limit is not split.
        let mut utf = vec![b'a'; MAX_CMD - 1];
        utf.extend("é".as_bytes());
        assert_eq!(command(&utf, "x").len(), MAX_CMD - 1);
    }

    #[test]
    fn reads_this_process_and_skips_missing_ones() {
        let me = std::process::id();
        let all = read_all(Path::new("/proc"), &[me, u32::MAX]);
        assert_eq!(all.len(), 1);
        let info = &all[0];
        assert_eq!(info.pid, me);
        assert_eq!(info.ppid, std::os::unix::process::parent_id());
        // SAFETY: getuid has no preconditions and cannot fail.
        assert_eq!(info.uid, unsafe { libc::getuid() });
        // The main thread of the test binary (what /proc/PID/stat describes) waits.
        assert!(["R", "S"].contains(&info.state.as_str()), "{info:?}");
        assert!(!info.cmd.is_empty());
    }
}
