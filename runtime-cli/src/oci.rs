//! What runv prints in runc's formats: the OCI state, `list`, stats events.

use std::collections::BTreeMap;
use std::path::PathBuf;

use runv_agent_protocol::ContainerStats;
use serde::Serialize;

use crate::state::{State, Status};

/// The OCI spec version runv reports.
pub const OCI_VERSION: &str = "1.1.0";

/// `runv state` output: the OCI state plus runc's extra fields (rootfs, created, owner).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    /// The init's shim while it exists; 0 when stopped (runc prints 0 too).
    pub pid: i32,
    pub status: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub owner: String,
}

impl OciState {
    pub fn new(state: &State, status: Status) -> Self {
        let pid = match (status, state.init) {
            (Status::Stopped, _) | (_, None) => 0,
            (_, Some(p)) => p.pid,
        };
        OciState {
            oci_version: OCI_VERSION.into(),
            id: state.id.clone(),
            pid,
            status: status.as_str().into(),
            bundle: state.bundle.clone(),
            rootfs: state.rootfs.clone(),
            created: state.created.clone(),
            annotations: state.annotations.clone(),
            owner: state.owner.clone(),
        }
    }
}

/// The state JSON hooks read on stdin (the OCI state: no runc extras).
pub fn hook_state(state: &State, status: Status) -> Vec<u8> {
    let s = OciState::new(state, status);
    let mut v = serde_json::json!({
        "ociVersion": s.oci_version,
        "id": s.id,
        "status": s.status,
        "pid": s.pid,
        "bundle": s.bundle,
    });
    if !s.annotations.is_empty() {
        v["annotations"] = serde_json::to_value(&s.annotations).unwrap_or_default();
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// runc's `events` JSON: `{"type":"stats","id":...,"data":{cpu,memory,pids}}`, with the
/// guest's cgroup v2 numbers mapped onto runc's field names (CPU times in ns).
pub fn stats_event(id: &str, s: &ContainerStats) -> serde_json::Value {
    let ns = |usec: u64| usec.saturating_mul(1000);
    serde_json::json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {
                "usage": {
                    "total": ns(s.cpu.usage_usec),
                    "kernel": ns(s.cpu.system_usec),
                    "user": ns(s.cpu.user_usec),
                },
                "throttling": {
                    "periods": s.cpu.nr_periods,
                    "throttledPeriods": s.cpu.nr_throttled,
                    "throttledTime": ns(s.cpu.throttled_usec),
                },
            },
            "memory": {
                "usage": {
                    "usage": s.memory.usage,
                    "max": s.memory.max_usage.unwrap_or(0),
                    "limit": s.memory.limit.unwrap_or(u64::MAX),
                    "failcnt": 0,
                },
                "swap": {"usage": s.memory.swap_usage, "limit": 0},
                "cache": s.memory.file,
                "raw": {
                    "anon": s.memory.anon,
                    "file": s.memory.file,
                    "oom_kill": s.memory.oom_kills,
                },
            },
            "pids": {
                "current": s.pids.current,
                "limit": s.pids.limit.unwrap_or(0),
            },
        },
    })
}

/// `runv features`, in runc's shape.
pub fn features() -> serde_json::Value {
    let hooks = [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ];
    let namespaces = ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"];
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": hooks,
        "mountOptions": ["bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "relatime", "strictatime"],
        "linux": {
            "namespaces": namespaces,
            "capabilities": caps(),
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {"enabled": true},
            // runc's shape has no "accepted but ignored": the LSM fields of a spec are
            // accepted and never applied (the guest has no LSM; rewrite/lsm.rs), so
            // neither LSM is enabled.
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {
            "io.runv.cpus": "vCPUs of the sandbox VM",
            "io.runv.memory_mib": "memory of the sandbox VM in MiB",
        },
    })
}

fn caps() -> Vec<String> {
    [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ]
    .iter()
    .map(|c| format!("CAP_{c}"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{HostProcess, Netns};

    fn st() -> State {
        State {
            id: "c1".into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            init: Some(HostProcess {
                pid: 42,
                start_time: 1,
            }),
            vmm: None,
            status: Status::Running,
            created: "2026-01-01T00:00:00Z".into(),
            annotations: [("a".to_string(), "b".to_string())].into(),
            execs: vec![],
            next_port: 0,
            cgroup_dirs: vec![],
            mounts: vec![],
            owner: "root".into(),
            hooks: None,
            process: None,
            shim_netns: None,
            netns: Netns::Host,
            net_links: vec![],
        }
    }

    #[test]
    fn state_json_uses_runcs_names() {
        let v = serde_json::to_value(OciState::new(&st(), Status::Running)).unwrap();
        assert_eq!(v["ociVersion"], OCI_VERSION);
        assert_eq!(v["pid"], 42);
        assert_eq!(v["status"], "running");
        assert_eq!(v["bundle"], "/b");
        assert_eq!(v["annotations"]["a"], "b");
        let stopped = serde_json::to_value(OciState::new(&st(), Status::Stopped)).unwrap();
        assert_eq!(stopped["pid"], 0);
        let h: serde_json::Value =
            serde_json::from_slice(&hook_state(&st(), Status::Created)).unwrap();
        assert_eq!(h["status"], "created");
        assert_eq!(h["pid"], 42);
        assert!(h.get("rootfs").is_none());
    }

    #[test]
    fn features_say_no_lsm_is_applied() {
        let f = features();
        assert_eq!(f["linux"]["apparmor"]["enabled"], false);
        assert_eq!(f["linux"]["selinux"]["enabled"], false);
    }

    #[test]
    fn stats_in_runcs_shape() {
        let mut s = ContainerStats::default();
        s.cpu.usage_usec = 5;
        s.memory.usage = 100;
        s.pids.current = 3;
        let e = stats_event("c1", &s);
        assert_eq!(e["type"], "stats");
        assert_eq!(e["data"]["cpu"]["usage"]["total"], 5000);
        assert_eq!(e["data"]["memory"]["usage"]["usage"], 100);
        assert_eq!(e["data"]["pids"]["current"], 3);
    }
}
