//! The sandbox's network on the host side: Kata's "tcfilter" model.
//!
//! The engine (Docker's libnetwork, a CNI plugin) prepared the sandbox's network
//! namespace with a veth (addresses, routes, MAC, MTU). Once that namespace is final,
//! runv, inside it, creates one tap per interface with the interface's MTU and an
//! `ingress` qdisc on both with a match-all `mirred egress redirect` filter each way
//! (interface -> tap, tap -> interface). The addresses stay on the interface, so the
//! engine's bridge, NAT and port publishing work unchanged; the guest gets one
//! virtio-net device per tap with the interface's MAC, and the agent gives it the
//! interface's addresses, routes and neighbours (`configure_network`).
//!
//! Taps are not persistent: they disappear with runv-vmm's fds, their qdiscs with
//! them. The interface's ingress qdisc is runv's to remove ([`detach`]), at delete and
//! on every failure path of create. runv never touches a namespace it was not given:
//! a sandbox without a network namespace gets no NIC.

mod discover;
mod tap;
mod tc;

use std::os::fd::OwnedFd;
use std::path::Path;

use runv_agent_protocol::NetworkConfig;
use runv_rtnl::core::{NLM_F_CREATE, NLM_F_EXCL};
use runv_rtnl::route::link::{LinkAttribute, LinkFlags, LinkMessage};
use runv_rtnl::route::RouteNetlinkMessage;
use runv_rtnl::Rtnl;

pub use discover::Link;

/// Link kinds a tap cannot stand in for: their frames do not come through the link's
/// ingress, or they have no Ethernet address.
const UNSUPPORTED_KINDS: &[&str] = &["macvtap", "ipvtap", "tun", "wireguard", "ipip", "sit"];

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Netlink(#[from] runv_rtnl::Error),
    #[error("network interface {name}: {reason}")]
    Unsupported { name: String, reason: String },
    #[error("tap for {name}: {source}")]
    Tap {
        name: String,
        source: std::io::Error,
    },
    #[error("network namespace {0}: the tap {1} vanished after it was made")]
    TapVanished(String, String),
}

/// One tap of the sandbox, for runv-vmm's `--net fd=N,mac=MAC,mtu=N`.
#[derive(Debug)]
pub struct Tap {
    /// The host interface it stands in for.
    pub link: String,
    pub name: String,
    pub fd: OwnedFd,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// The attached network of a sandbox.
#[derive(Debug, Default)]
pub struct Attachment {
    pub taps: Vec<Tap>,
    /// What the agent is to configure.
    pub config: NetworkConfig,
}

impl Attachment {
    /// The interfaces that carry runv's ingress qdisc, for [`detach`].
    pub fn links(&self) -> Vec<String> {
        self.taps.iter().map(|t| t.link.clone()).collect()
    }
}

/// In the network namespace `netns`: reads every interface but the loopback, and
/// attaches a tap to each. A namespace with only `lo` gives an empty attachment. On
/// failure nothing runv made is left.
pub fn attach(netns: &Path) -> Result<Attachment, NetworkError> {
    let path = netns.display().to_string();
    runv_rtnl::in_netns(netns, move || attach_here(&path))?
}

/// Removes the ingress qdisc (and with it runv's filter) from each of `links` in
/// `netns`. Taps need nothing: they went with runv-vmm. Returns what could not be
/// undone, as warnings; a link or namespace that no longer exists is not one.
pub fn detach(netns: &Path, links: &[String]) -> Vec<String> {
    if links.is_empty() {
        return vec![];
    }
    let links = links.to_vec();
    match runv_rtnl::in_netns(netns, move || detach_here(&links)) {
        Ok(w) => w,
        Err(e) if netns_gone(&e) => vec![],
        Err(e) => vec![format!("removing runv's tc filters: {e}")],
    }
}

fn netns_gone(e: &runv_rtnl::Error) -> bool {
    matches!(e, runv_rtnl::Error::Netns { source, .. }
        if matches!(source.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH)))
}

/// The name of the tap standing in for interface number `n`.
pub fn tap_name(n: usize) -> String {
    format!("runvtap{n}")
}

/// Whether `link` can be attached, or why not.
pub fn check_link(link: &Link) -> Result<[u8; 6], NetworkError> {
    let unsupported = |reason: String| NetworkError::Unsupported {
        name: link.name.clone(),
        reason,
    };
    if let Some(kind) = link.kind.as_deref() {
        if UNSUPPORTED_KINDS.contains(&kind) {
            return Err(unsupported(format!(
                "a {kind} link cannot be attached to a VM (runv redirects an Ethernet \
                 link's traffic to a tap: use a veth)"
            )));
        }
    }
    let mac = link.mac.ok_or_else(|| {
        unsupported("no Ethernet (MAC) address: runv attaches Ethernet links only".into())
    })?;
    if mac == [0; 6] || mac[0] & 1 == 1 {
        return Err(unsupported(format!(
            "MAC {} is not a unicast address",
            runv_agent_protocol::message::format_mac(&mac)
        )));
    }
    if !(68..=65535).contains(&link.mtu) {
        return Err(unsupported(format!("MTU {} is out of range", link.mtu)));
    }
    Ok(mac)
}

fn attach_here(netns: &str) -> Result<Attachment, NetworkError> {
    let mut rtnl = Rtnl::open()?;
    let ns = discover::read(&mut rtnl)?;
    let links: Vec<&Link> = ns
        .links
        .iter()
        .filter(|l| !l.loopback && !l.name.starts_with("runvtap"))
        .collect();
    let mut macs = Vec::new();
    for l in &links {
        macs.push(check_link(l)?);
    }
    let mut att = Attachment {
        taps: vec![],
        config: discover::guest_config(&ns, &links),
    };
    for (n, (link, mac)) in links.iter().zip(macs).enumerate() {
        if let Err(e) = attach_link(&mut rtnl, netns, n, link, mac, &mut att) {
            let warnings = detach_here(&att.links());
            for w in warnings {
                tracing::warn!("{w}");
            }
            // A qdisc added on `link` before the failure goes too.
            let _ = delete_qdisc(&mut rtnl, link.index, &link.name);
            return Err(e);
        }
    }
    Ok(att)
}

fn attach_link(
    rtnl: &mut Rtnl,
    netns: &str,
    n: usize,
    link: &Link,
    mac: [u8; 6],
    att: &mut Attachment,
) -> Result<(), NetworkError> {
    let name = tap_name(n);
    let fd = tap::open_tap(&name).map_err(|source| NetworkError::Tap {
        name: link.name.clone(),
        source,
    })?;
    let index = link_index(rtnl, &name)?
        .ok_or_else(|| NetworkError::TapVanished(netns.into(), name.clone()))?;
    let mut up = LinkMessage::default();
    up.header.index = index;
    up.header.flags = LinkFlags::Up;
    up.header.change_mask = LinkFlags::Up;
    up.attributes.push(LinkAttribute::Mtu(link.mtu));
    rtnl.request(
        &format!("set {name} up with MTU {}", link.mtu),
        RouteNetlinkMessage::SetLink(up),
        0,
    )?;
    add_ingress(rtnl, [(&link.name, link.index), (&name, index)])?;
    // The tap's record goes in before the filters, so a failure below removes the
    // interface's qdisc too.
    att.taps.push(Tap {
        link: link.name.clone(),
        name: name.clone(),
        fd,
        mac,
        mtu: link.mtu,
    });
    redirect_both_ways(rtnl, (&link.name, link.index), (&name, index))
}

/// An ingress qdisc on each of `links` (name, index).
fn add_ingress(rtnl: &mut Rtnl, links: [(&str, u32); 2]) -> Result<(), runv_rtnl::Error> {
    for (dev, idx) in links {
        rtnl.request(
            &format!("add the ingress qdisc of {dev}"),
            RouteNetlinkMessage::NewQueueDiscipline(tc::ingress_qdisc(idx)),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
    }
    Ok(())
}

/// The match-all `mirred egress redirect` filters from `a` to `b` and back.
fn redirect_both_ways(rtnl: &mut Rtnl, a: (&str, u32), b: (&str, u32)) -> Result<(), NetworkError> {
    for ((from, i), (to, j)) in [(a, b), (b, a)] {
        rtnl.request(
            &format!("redirect {from} to {to}"),
            RouteNetlinkMessage::NewTrafficFilter(tc::redirect_filter(i, j)),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
    }
    Ok(())
}

/// Tries what runv's host networking needs in a fresh network namespace of its own
/// (gone when this returns): two taps, an ingress qdisc on each and the u32 + mirred
/// redirect between them. For `runv check`.
pub fn self_test() -> Result<(), NetworkError> {
    runv_rtnl::in_new_netns(|| -> Result<(), NetworkError> {
        let mut rtnl = Rtnl::open()?;
        let mut taps = Vec::new();
        for n in 0..2 {
            let name = tap_name(n);
            let fd = tap::open_tap(&name).map_err(|source| NetworkError::Tap {
                name: name.clone(),
                source,
            })?;
            let index = link_index(&mut rtnl, &name)?
                .ok_or_else(|| NetworkError::TapVanished("(new)".into(), name.clone()))?;
            taps.push((name, index, fd));
        }
        let (a, b) = ((&*taps[0].0, taps[0].1), (&*taps[1].0, taps[1].1));
        add_ingress(&mut rtnl, [a, b])?;
        redirect_both_ways(&mut rtnl, a, b)
    })?
}

fn link_index(rtnl: &mut Rtnl, name: &str) -> Result<Option<u32>, runv_rtnl::Error> {
    let mut q = LinkMessage::default();
    q.attributes.push(LinkAttribute::IfName(name.into()));
    match rtnl.request(
        &format!("get link {name}"),
        RouteNetlinkMessage::GetLink(q),
        0,
    ) {
        Ok(answers) => Ok(answers.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
            _ => None,
        })),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

fn delete_qdisc(rtnl: &mut Rtnl, index: u32, name: &str) -> Result<(), runv_rtnl::Error> {
    match rtnl.request(
        &format!("delete the ingress qdisc of {name}"),
        RouteNetlinkMessage::DelQueueDiscipline(tc::ingress_qdisc(index)),
        0,
    ) {
        // No such qdisc, or no such link: nothing to undo.
        Err(e)
            if matches!(
                e.errno(),
                Some(libc::ENOENT) | Some(libc::EINVAL) | Some(libc::ENODEV)
            ) =>
        {
            Ok(())
        }
        r => r.map(|_| ()),
    }
}

fn detach_here(links: &[String]) -> Vec<String> {
    let mut rtnl = match Rtnl::open() {
        Ok(r) => r,
        Err(e) => return vec![e.to_string()],
    };
    let mut warnings = Vec::new();
    for name in links {
        match link_index(&mut rtnl, name) {
            Ok(Some(index)) => {
                if let Err(e) = delete_qdisc(&mut rtnl, index, name) {
                    warnings.push(e.to_string());
                }
            }
            Ok(None) => {}
            Err(e) => warnings.push(e.to_string()),
        }
    }
    warnings
}

#[cfg(test)]
mod tests;
