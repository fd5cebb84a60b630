//! cgroup v2 reads and writes the agent does itself: stats, process lists and
//! `update_container`. Creation and the spec's resources at create are libcontainer's.
//! Only a pure cgroup v2 hierarchy (the guest's) is handled; elsewhere these calls
//! answer `unsupported`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxResources, Spec};
use runv_agent_protocol::{
    ContainerStats, CpuStats, ErrorCode, ErrorResponse, MemoryStats, PidsStats,
};

const ROOT: &str = "/sys/fs/cgroup";

/// The container's cgroup v2 directory, from the spec in its bundle.
pub fn dir(bundle: &Path) -> Option<PathBuf> {
    if !Path::new(ROOT).join("cgroup.controllers").exists() {
        return None;
    }
    let spec = Spec::load(crate::containers::bundle_spec(bundle)).ok()?;
    let rel = spec.linux().as_ref()?.cgroups_path().clone()?;
    let d = Path::new(ROOT).join(rel.strip_prefix("/").unwrap_or(&rel));
    d.is_dir().then_some(d)
}

pub fn procs(dir: &Path) -> Option<Vec<u32>> {
    let s = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    Some(s.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

fn number(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file)?.trim().parse().ok()
}

/// `key value` lines (cpu.stat, memory.stat, memory.events).
fn keyed(dir: &Path, file: &str, key: &str) -> u64 {
    read(dir, file)
        .and_then(|s| {
            s.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
}

pub fn stats(dir: &Path) -> ContainerStats {
    ContainerStats {
        cpu: CpuStats {
            usage_usec: keyed(dir, "cpu.stat", "usage_usec"),
            user_usec: keyed(dir, "cpu.stat", "user_usec"),
            system_usec: keyed(dir, "cpu.stat", "system_usec"),
            nr_periods: keyed(dir, "cpu.stat", "nr_periods"),
            nr_throttled: keyed(dir, "cpu.stat", "nr_throttled"),
            throttled_usec: keyed(dir, "cpu.stat", "throttled_usec"),
        },
        memory: MemoryStats {
            usage: number(dir, "memory.current").unwrap_or(0),
            max_usage: number(dir, "memory.peak"),
            limit: number(dir, "memory.max"),
            swap_usage: number(dir, "memory.swap.current").unwrap_or(0),
            anon: keyed(dir, "memory.stat", "anon"),
            file: keyed(dir, "memory.stat", "file"),
            oom_kills: keyed(dir, "memory.events", "oom_kill"),
        },
        pids: PidsStats {
            current: number(dir, "pids.current").unwrap_or(0),
            limit: number(dir, "pids.max"),
        },
    }
}

fn write(dir: &Path, file: &str, value: String, field: &str) -> Result<(), ErrorResponse> {
    std::fs::write(dir.join(file), &value).map_err(|e| {
        ErrorResponse::field(
            ErrorCode::InvalidArgument,
            field,
            format!(
                "{field} {value:?}: writing {}: {e}",
                dir.join(file).display()
            ),
        )
    })
}

fn limit(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// Applies the memory, pids and cpu parts of `resources` (what `docker update` changes).
pub fn update(dir: &Path, r: &LinuxResources) -> Result<(), ErrorResponse> {
    if let Some(m) = r.memory() {
        if let Some(l) = m.limit() {
            write(dir, "memory.max", limit(l), "resources.memory.limit")?;
        }
        if let Some(s) = m.swap() {
            let swap = match m.limit() {
                Some(l) if s >= 0 && l >= 0 => (s - l).max(0).to_string(),
                _ => limit(s),
            };
            write(dir, "memory.swap.max", swap, "resources.memory.swap")?;
        }
    }
    if let Some(p) = r.pids() {
        write(dir, "pids.max", limit(p.limit()), "resources.pids.limit")?;
    }
    if let Some(c) = r.cpu() {
        if let Some(shares) = c.shares().filter(|&s| s > 0) {
            let w = shares_to_weight(shares);
            write(dir, "cpu.weight", w.to_string(), "resources.cpu.shares")?;
        }
        if c.quota().is_some() || c.period().is_some() {
            let q = c.quota().map(limit).unwrap_or_else(|| "max".into());
            let p = c.period().unwrap_or(100_000);
            write(dir, "cpu.max", format!("{q} {p}"), "resources.cpu.quota")?;
        }
    }
    Ok(())
}

/// cgroup v1 shares (2..262144) to cgroup v2 cpu.weight (1..10000) on the log scale of
/// runc 1.3 and libcontainer (which applies it at create): 2 -> 1, 1024 -> 100,
/// 262144 -> 10000. An update must give the weight a create with the same shares gives.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_map_to_the_weights_create_gives() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(512), 59);
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1_000_000), 10_000);
    }

    #[test]
    fn reads_keyed_files_and_numbers() {
        let d = std::env::temp_dir().join(format!("runv-agent-cg-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cpu.stat"), "usage_usec 12\nuser_usec 8\n").unwrap();
        std::fs::write(d.join("memory.max"), "max\n").unwrap();
        std::fs::write(d.join("memory.events"), "low 0\noom_kill 3\n").unwrap();
        std::fs::write(d.join("pids.max"), "100\n").unwrap();
        let s = stats(&d);
        assert_eq!(s.cpu.usage_usec, 12);
        assert_eq!(s.cpu.user_usec, 8);
        assert_eq!(s.memory.limit, None);
        assert_eq!(s.memory.oom_kills, 3);
        assert_eq!(s.pids.limit, Some(100));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn negative_limits_mean_max() {
        assert_eq!(limit(-1), "max");
        assert_eq!(limit(5), "5");
    }
}
