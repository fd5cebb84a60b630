//! The VM's size: vCPUs and memory.
//!
//! 1. annotations `io.runv.cpus` and `io.runv.memory_mib` (each on its own);
//! 2. else `linux.resources`: memory = `memory.limit` rounded up to MiB plus
//!    [`MEMORY_OVERHEAD_MIB`] (the guest kernel, the agent and page tables live beside
//!    the container); vCPUs = `cpu.quota / cpu.period` rounded up, else the number of
//!    CPUs in `cpu.cpus` (a cpuset);
//! 3. else the configured defaults (1 vCPU, 256 MiB).
//!
//! Memory is at least [`MIN_MEMORY_MIB`] (the guest kernel and agent need about 40 MiB
//! before the container starts); vCPUs are capped at the host's CPU count.

use std::collections::HashMap;

use oci_spec::runtime::Spec;

pub const ANNOTATION_CPUS: &str = "io.runv.cpus";
pub const ANNOTATION_MEMORY: &str = "io.runv.memory_mib";
/// Added to a container memory limit for the guest kernel and agent.
pub const MEMORY_OVERHEAD_MIB: u64 = 64;
/// The smallest VM runv starts.
pub const MIN_MEMORY_MIB: u64 = 128;
/// The largest VM memory runv accepts (runv-vmm's own limit is higher; this catches typos).
pub const MAX_MEMORY_MIB: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizingError {
    #[error("annotation {key}={value:?}: {reason}")]
    Annotation {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    pub cpus: u32,
    pub memory_mib: u64,
}

/// Sizes the VM for `spec`. `host_cpus` caps the vCPU count.
pub fn size_for(
    spec: &Spec,
    default_cpus: u32,
    default_memory_mib: u32,
    host_cpus: u32,
) -> Result<VmSize, SizingError> {
    let empty = HashMap::new();
    let ann = spec.annotations().as_ref().unwrap_or(&empty);
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());

    let cpus = match ann.get(ANNOTATION_CPUS) {
        Some(v) => parse_annotation(ANNOTATION_CPUS, v, 1, 1024)? as u32,
        None => resources
            .and_then(|r| r.cpu().as_ref())
            .and_then(|cpu| {
                let from_quota = match (cpu.quota(), cpu.period()) {
                    (Some(q), Some(p)) if q > 0 && p > 0 => Some((q as u64).div_ceil(p) as u32),
                    _ => None,
                };
                from_quota.or_else(|| cpu.cpus().as_deref().and_then(cpuset_count))
            })
            .unwrap_or(default_cpus),
    };
    let memory_mib = match ann.get(ANNOTATION_MEMORY) {
        Some(v) => parse_annotation(ANNOTATION_MEMORY, v, MIN_MEMORY_MIB, MAX_MEMORY_MIB)?,
        None => resources
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .filter(|l| *l > 0)
            .map(|l| (l as u64).div_ceil(1 << 20) + MEMORY_OVERHEAD_MIB)
            .unwrap_or(default_memory_mib as u64),
    };
    Ok(VmSize {
        cpus: cpus.clamp(1, host_cpus.max(1)),
        memory_mib: memory_mib.clamp(MIN_MEMORY_MIB, MAX_MEMORY_MIB),
    })
}

fn parse_annotation(key: &'static str, v: &str, min: u64, max: u64) -> Result<u64, SizingError> {
    let bad = |reason| SizingError::Annotation {
        key,
        value: v.to_owned(),
        reason,
    };
    let n: u64 = v.trim().parse().map_err(|_| bad("not a whole number"))?;
    if n < min {
        return Err(bad("too small"));
    }
    if n > max {
        return Err(bad("too large"));
    }
    Ok(n)
}

/// Number of CPUs in a cpuset list such as `0-3,6`.
fn cpuset_count(list: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            None => {
                part.parse::<u32>().ok()?;
                n += 1;
            }
        }
    }
    (n > 0).then_some(n)
}

/// The host's online CPUs.
pub fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        let mut base = serde_json::to_value(Spec::default()).unwrap();
        for (k, v) in json.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn defaults_without_hints() {
        let s = spec(serde_json::json!({}));
        assert_eq!(
            size_for(&s, 1, 256, 8).unwrap(),
            VmSize {
                cpus: 1,
                memory_mib: 256
            }
        );
    }

    #[test]
    fn annotations_win() {
        let s = spec(serde_json::json!({
            "annotations": {"io.runv.cpus": "2", "io.runv.memory_mib": "512"},
            "linux": {"resources": {"memory": {"limit": 1073741824}}}
        }));
        assert_eq!(
            size_for(&s, 1, 256, 8).unwrap(),
            VmSize {
                cpus: 2,
                memory_mib: 512
            }
        );
    }

    #[test]
    fn limits_plus_overhead() {
        let s = spec(serde_json::json!({
            "linux": {"resources": {"memory": {"limit": 268435456 + 1}, "cpu": {"quota": 150000, "period": 100000}}}
        }));
        assert_eq!(
            size_for(&s, 1, 256, 8).unwrap(),
            VmSize {
                cpus: 2,
                memory_mib: 257 + 64
            }
        );
        let small =
            spec(serde_json::json!({"linux": {"resources": {"memory": {"limit": 4194304}}}}));
        assert_eq!(
            size_for(&small, 1, 256, 8).unwrap().memory_mib,
            MIN_MEMORY_MIB
        );
        let cpuset = spec(serde_json::json!({"linux": {"resources": {"cpu": {"cpus": "0-2,5"}}}}));
        assert_eq!(size_for(&cpuset, 1, 256, 8).unwrap().cpus, 4);
        assert_eq!(
            size_for(&cpuset, 1, 256, 2).unwrap().cpus,
            2,
            "capped by the host"
        );
    }

    #[test]
    fn bad_annotations_name_key_and_value() {
        for (k, v) in [
            ("io.runv.cpus", "two"),
            ("io.runv.cpus", "0"),
            ("io.runv.memory_mib", "16"),
        ] {
            let s = spec(serde_json::json!({"annotations": {k: v}}));
            let e = size_for(&s, 1, 256, 8).unwrap_err().to_string();
            assert!(e.contains(k) && e.contains(v), "{e}");
        }
    }

    #[test]
    fn cpusets() {
        assert_eq!(cpuset_count("0"), Some(1));
        assert_eq!(cpuset_count("0-3,6"), Some(5));
        assert_eq!(cpuset_count("3-1"), None);
        assert_eq!(cpuset_count(""), None);
    }
}
