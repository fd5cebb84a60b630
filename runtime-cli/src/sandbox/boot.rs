//! Booting a sandbox's VM once its network namespace is final.
//!
//! virtio-mmio has no hotplug: every NIC must exist when the VM boots, so the VM boots
//! only once the engine is done with the namespace. With a namespace path (CRI's CNI
//! namespace) or none at all, that is at `create`; with a new namespace (Docker, `ctr
//! run --cni`), whose interfaces the engine adds in a prestart hook or between `create`
//! and `start`, it is at `start`. Everything the boot needs is decided at create and
//! kept in `<root>/<id>/boot.json` (a [`BootPlan`]).

use std::path::{Path, PathBuf};
use std::process::Child;

use oci_spec::runtime::Spec;
use runv_agent_protocol::{DnsConfig, DnsRelay, Request, ShareLocation, StdioPorts};
use serde::{Deserialize, Serialize};

use super::{boot_details, vsock_path, SandboxError};
use crate::state::{HostProcess, State};
use crate::vmm::{NicArg, VmmLaunch, SHARE_TAG};
use crate::{agent, dns_relay, network, vmm};

const BOOT_PLAN: &str = "boot.json";

/// What booting the VM needs, decided at create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootPlan {
    pub vmm: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cpus: u32,
    pub memory_mib: u64,
    /// Bytes of console output runv-vmm writes to console.log.
    pub console_limit: u64,
    pub hostname: String,
    /// The spec as the guest gets it (no host path in it).
    pub spec: Spec,
    pub rootfs: ShareLocation,
    pub stdio: StdioPorts,
    /// The host file bind-mounted at the container's resolv.conf: a loopback resolver
    /// it names when the VM boots is relayed from the guest.
    pub resolv_conf: Option<PathBuf>,
}

impl BootPlan {
    pub fn save(&self, dir: &Path) -> Result<(), SandboxError> {
        let path = dir.join(BOOT_PLAN);
        let body = serde_json::to_vec(self).map_err(|e| SandboxError::Plan {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        // Private: the plan holds the process's environment and its stdio token.
        crate::state::write_private(&path, &body).map_err(|e| SandboxError::Plan {
            path,
            reason: e.to_string(),
        })
    }

    pub fn load(dir: &Path) -> Result<Self, SandboxError> {
        let path = dir.join(BOOT_PLAN);
        let text = std::fs::read(&path).map_err(|e| SandboxError::Plan {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        serde_json::from_slice(&text).map_err(|e| SandboxError::Plan {
            path,
            reason: e.to_string(),
        })
    }
}

/// A booted VM: its runv-vmm (owned by the caller until the state records it for good)
/// and the host-side warnings of the boot.
pub struct Booted {
    pub vmm: Child,
    pub warnings: Vec<String>,
}

/// Boots the VM of `state`'s sandbox from `plan` in `dir`: taps in the namespace,
/// runv-vmm, then the agent's sandbox, network and container. Records the VMM, the
/// attached links and the shims' namespace in `state`. On failure it undoes what it
/// made (VMM killed and reaped, runv's qdiscs removed) and leaves `state` unchanged.
pub fn boot(dir: &Path, state: &mut State, plan: &BootPlan) -> Result<Booted, SandboxError> {
    let init = state
        .init
        .filter(HostProcess::alive)
        .ok_or(SandboxError::ShimGone)?;
    let netns = state.netns.path(init.pid);
    let attachment = match &netns {
        Some(p) => network::attach(p)?,
        None => network::Attachment::default(),
    };
    let links = attachment.links();
    let undo_net = |warnings: &mut Vec<String>| {
        if let Some(p) = &netns {
            warnings.extend(network::detach(p, &links));
        }
    };
    let uds = vsock_path(dir);
    let launch = VmmLaunch {
        vmm: plan.vmm.clone(),
        kernel: plan.kernel.clone(),
        initrd: plan.initrd.clone(),
        cpus: plan.cpus,
        memory_mib: plan.memory_mib,
        share_dir: dir.join("share"),
        uds: uds.clone(),
        console: dir.join("console.log"),
        console_limit: plan.console_limit,
        log: dir.join("vmm.log"),
        netns: netns.clone(),
        nics: attachment
            .taps
            .iter()
            .map(|t| NicArg {
                fd: std::os::fd::AsRawFd::as_raw_fd(&t.fd),
                mac: t.mac,
                mtu: t.mtu,
            })
            .collect(),
        cgroups: state.cgroup_dirs.clone(),
    };
    tracing::debug!(args = ?launch.args(), "starting runv-vmm");
    let mut child = match launch.spawn() {
        Ok(c) => c,
        Err(e) => {
            let mut w = vec![];
            undo_net(&mut w);
            w.iter().for_each(|w| tracing::warn!("{w}"));
            return Err(e.into());
        }
    };
    // runv-vmm holds the taps now; runv's copies go.
    let config = attachment.config.clone();
    drop(attachment);
    let vmm_pid = child.id() as i32;
    let mut warnings = Vec::new();
    match talk(&mut child, dir, &uds, state, plan, config) {
        Ok(()) => {
            state.vmm = HostProcess::of(vmm_pid);
            state.net_links = links.clone();
            // Exec shims join the namespace through the VMM, which lives as long as
            // the sandbox.
            state.shim_netns = state.netns.path(vmm_pid);
            Ok(Booted {
                vmm: child,
                warnings,
            })
        }
        Err(e) => {
            vmm::stop_child(&mut child);
            undo_net(&mut warnings);
            warnings.iter().for_each(|w| tracing::warn!("{w}"));
            Err(e)
        }
    }
}

/// The agent's part of the boot.
fn talk(
    child: &mut Child,
    dir: &Path,
    uds: &Path,
    state: &State,
    plan: &BootPlan,
    mut network: runv_agent_protocol::NetworkConfig,
) -> Result<(), SandboxError> {
    let mut client = agent::wait_ready(uds, agent::BOOT_LIMIT, || {
        matches!(child.try_wait(), Ok(None))
    })
    .map_err(|source| SandboxError::Boot {
        source,
        details: boot_details(dir),
    })?;
    agent::call(
        &mut client,
        uds,
        &Request::CreateSandbox {
            sandbox_id: state.id.clone(),
            hostname: plan.hostname.clone(),
            dns: DnsConfig::default(),
            shares: vec![SHARE_TAG.into()],
        },
        agent::CALL_LIMIT,
    )?;
    // Read now: Docker writes the file in its setkey hook, after create began.
    let resolver = plan
        .resolv_conf
        .as_deref()
        .filter(|_| state.netns != crate::state::Netns::Host)
        .and_then(dns_relay::loopback_nameserver);
    network.dns_relay = resolver.map(|address| DnsRelay {
        address,
        vsock_port: dns_relay::DNS_RELAY_PORT,
    });
    if !network.interfaces.is_empty() || network.dns_relay.is_some() {
        agent::call(
            &mut client,
            uds,
            &Request::ConfigureNetwork { network },
            agent::CALL_LIMIT,
        )?;
    }
    agent::call(
        &mut client,
        uds,
        &Request::CreateContainer {
            container_id: state.id.clone(),
            spec: Box::new(plan.spec.clone()),
            rootfs: plan.rootfs.clone(),
            stdio: plan.stdio,
        },
        agent::CREATE_LIMIT,
    )?;
    Ok(())
}

/// Removes runv's tc filters of a sandbox whose VM is going away. The namespace is
/// reached by its path, or through a process still in it (runv-vmm, else the init's
/// shim); a new namespace whose processes are all gone went with them.
pub fn detach_network(state: &State) -> Vec<String> {
    if state.net_links.is_empty() {
        return vec![];
    }
    let member = [state.vmm, state.init]
        .into_iter()
        .flatten()
        .find(HostProcess::alive);
    let path = match (&state.netns, member) {
        (crate::state::Netns::Join(p), _) => Some(p.clone()),
        (crate::state::Netns::New, Some(p)) => state.netns.path(p.pid),
        _ => None,
    };
    match path {
        Some(p) => network::detach(&p, &state.net_links),
        None => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_survives_the_state_directory() {
        let t = tempfile::tempdir().unwrap();
        let plan = BootPlan {
            vmm: "/v".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            cpus: 2,
            memory_mib: 300,
            console_limit: 65536,
            hostname: "h".into(),
            spec: Spec::default(),
            rootfs: ShareLocation {
                tag: "runv".into(),
                subpath: "c/rootfs".into(),
            },
            stdio: StdioPorts {
                stdin: None,
                stdout: Some(2000),
                stderr: Some(2001),
                token: Some(runv_agent_protocol::StdioToken::random().unwrap()),
            },
            resolv_conf: Some("/b/resolv.conf".into()),
        };
        plan.save(t.path()).unwrap();
        let mode = std::fs::metadata(t.path().join(BOOT_PLAN))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600,
            "the plan holds secrets"
        );
        let back = BootPlan::load(t.path()).unwrap();
        assert_eq!(back.cpus, 2);
        assert_eq!(back.stdio, plan.stdio);
        assert_eq!(back.resolv_conf, plan.resolv_conf);
        let e = BootPlan::load(&t.path().join("absent")).unwrap_err();
        assert!(e.to_string().contains("boot.json"), "{e}");
    }

    #[test]
    fn a_sandbox_without_attached_links_has_nothing_to_detach() {
        let state: State = serde_json::from_value(serde_json::json!({
            "id": "c", "bundle": "/b", "rootfs": "/b/rootfs", "init": null, "vmm": null,
            "status": "created", "created": "now", "next_port": 0
        }))
        .unwrap();
        assert!(detach_network(&state).is_empty());
    }
}
