//! The guest's network (docs/agent.md, "Networking"): the loopback at start, then
//! `configure_network`: interfaces found by MAC, renamed, given their MTU and
//! addresses and brought up; routes; permanent neighbours; the DNS relay. All of it
//! through rtnetlink (`netlink.rs`), nothing shelled out.
//!
//! The whole config is validated before anything changes. On a host (not PID 1) the
//! agent only validates: it must not change the host's network.

mod dns;
mod netlink;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use runv_agent_protocol::message::{format_mac, parse_mac};
use runv_agent_protocol::{DnsRelay, ErrorCode, ErrorResponse, IpNet, NetRoute, NetworkConfig};

use netlink::{Link, Netlink, NetlinkError, RouteSpec, CREATE_OR_REPLACE};

/// Bounds on one request's lists, so a request cannot make the agent loop for long.
const MAX_INTERFACES: usize = 64;
const MAX_ADDRESSES: usize = 256;
const MAX_ROUTES: usize = 1024;
const MAX_NEIGHBORS: usize = 1024;
/// The port the DNS relay serves.
const DNS_PORT: u16 = 53;

/// Why `configure_network` (or bringing up the loopback) failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// Refused input; nothing was changed.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// No link has the interface's MAC.
    #[error("{field}: no link has MAC {mac} (links: {seen})")]
    NoSuchLink {
        field: String,
        mac: String,
        seen: String,
    },
    /// The interface's new name is another link's.
    #[error("{field}: cannot rename link {link} ({mac}) to {name}: link {other} has that name")]
    NameTaken {
        field: String,
        name: String,
        link: String,
        mac: String,
        other: u32,
    },
    /// A netlink request failed; `item` says which (interface, address, route...).
    #[error("{item}: {cause}")]
    Netlink { item: String, cause: NetlinkError },
    /// A DNS relay with other settings already runs.
    #[error("dns_relay: a relay for {running_address} (host port {running_port}) already runs; it cannot be changed to {address} (port {port})")]
    RelayRunning {
        running_address: IpAddr,
        running_port: u32,
        address: IpAddr,
        port: u32,
    },
    #[error("dns_relay: serving {address}: {cause}")]
    RelayStart {
        address: SocketAddr,
        cause: std::io::Error,
    },
}

impl NetworkError {
    /// The protocol's answer for this error.
    pub fn response(&self) -> ErrorResponse {
        let message = self.to_string();
        match self {
            NetworkError::Invalid { field, .. }
            | NetworkError::NoSuchLink { field, .. }
            | NetworkError::NameTaken { field, .. } => {
                ErrorResponse::field(ErrorCode::InvalidArgument, field.clone(), message)
            }
            NetworkError::RelayRunning { .. } => {
                ErrorResponse::field(ErrorCode::InvalidState, "network.dns_relay", message)
            }
            NetworkError::Netlink { .. } | NetworkError::RelayStart { .. } => {
                ErrorResponse::new(ErrorCode::Internal, message)
            }
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> NetworkError {
    NetworkError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn netlink_failed(item: impl Into<String>) -> impl FnOnce(NetlinkError) -> NetworkError {
    let item = item.into();
    move |cause| NetworkError::Netlink { item, cause }
}

/// One interface, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InterfacePlan {
    name: String,
    mac: [u8; 6],
    mtu: u32,
    addresses: Vec<IpNet>,
}

/// One neighbour, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NeighborPlan {
    address: IpAddr,
    mac: [u8; 6],
    device: String,
}

/// A validated config: what [`apply`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    interfaces: Vec<InterfacePlan>,
    routes: Vec<NetRoute>,
    neighbors: Vec<NeighborPlan>,
    dns_relay: Option<DnsRelay>,
}

/// Whether the kernel takes `name` as an interface name (`dev_valid_name`): 1 to 15
/// bytes, not `.` or `..`, no `/`, `:` or white space.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// The address with every bit past the prefix cleared.
fn network_of(net: &IpNet) -> IpAddr {
    match net.address {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(net.prefix_len))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(net.prefix_len))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

fn check_unicast(field: &str, ip: &IpAddr) -> Result<(), NetworkError> {
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(invalid(field, format!("{ip} is not a unicast address")));
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Err(invalid(field, format!("{ip} is not a unicast address")));
        }
    }
    Ok(())
}

fn check_mac(field: &str, mac: &str) -> Result<[u8; 6], NetworkError> {
    let bytes = parse_mac(mac).ok_or_else(|| {
        invalid(
            field,
            format!("MAC {mac:?} is not six hex pairs separated by ':'"),
        )
    })?;
    if bytes == [0; 6] || bytes[0] & 1 != 0 {
        return Err(invalid(
            field,
            format!("MAC {mac} is not a unicast hardware address"),
        ));
    }
    Ok(bytes)
}

fn same_family(a: &IpAddr, b: &IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// Checks the whole config; nothing is changed if this fails.
pub fn validate(c: &NetworkConfig) -> Result<Plan, NetworkError> {
    let too_many = |what: &str, n: usize, max: usize| {
        invalid(
            format!("network.{what}"),
            format!("{n} entries, at most {max}"),
        )
    };
    if c.interfaces.len() > MAX_INTERFACES {
        return Err(too_many("interfaces", c.interfaces.len(), MAX_INTERFACES));
    }
    if c.routes.len() > MAX_ROUTES {
        return Err(too_many("routes", c.routes.len(), MAX_ROUTES));
    }
    if c.neighbors.len() > MAX_NEIGHBORS {
        return Err(too_many("neighbors", c.neighbors.len(), MAX_NEIGHBORS));
    }
    let mut interfaces = Vec::with_capacity(c.interfaces.len());
    let mut names = HashSet::new();
    let mut macs = HashSet::new();
    for (i, iface) in c.interfaces.iter().enumerate() {
        let f = format!("network.interfaces[{i}]");
        if !valid_ifname(&iface.name) {
            return Err(invalid(
                format!("{f}.name"),
                format!(
                    "{:?} is not an interface name (1-15 bytes, no '/', ':' or space)",
                    iface.name
                ),
            ));
        }
        if iface.name == "lo" {
            return Err(invalid(format!("{f}.name"), "\"lo\" is the loopback's"));
        }
        if !names.insert(iface.name.as_str()) {
            return Err(invalid(
                format!("{f}.name"),
                format!("{} names two interfaces", iface.name),
            ));
        }
        let mac = check_mac(&format!("{f}.mac"), &iface.mac)?;
        if !macs.insert(mac) {
            return Err(invalid(
                format!("{f}.mac"),
                format!("{} is the MAC of two interfaces", iface.mac),
            ));
        }
        let has_v6 = iface.addresses.iter().any(|a| a.address.is_ipv6());
        let min_mtu = if has_v6 { 1280 } else { 68 };
        if !(min_mtu..=65535).contains(&iface.mtu) {
            return Err(invalid(
                format!("{f}.mtu"),
                format!(
                    "MTU {} of {} is out of range ({min_mtu}..=65535{})",
                    iface.mtu,
                    iface.name,
                    if has_v6 { ", IPv6 needs 1280" } else { "" }
                ),
            ));
        }
        if iface.addresses.len() > MAX_ADDRESSES {
            return Err(too_many(
                &format!("interfaces[{i}].addresses"),
                iface.addresses.len(),
                MAX_ADDRESSES,
            ));
        }
        let mut seen = HashSet::new();
        for (j, a) in iface.addresses.iter().enumerate() {
            let af = format!("{f}.addresses[{j}]");
            if !a.is_valid() {
                return Err(invalid(
                    af,
                    format!("prefix length of {a} is too long for the family"),
                ));
            }
            check_unicast(&af, &a.address)?;
            if !seen.insert(a.address) {
                return Err(invalid(
                    af,
                    format!("{} is given twice on {}", a.address, iface.name),
                ));
            }
        }
        interfaces.push(InterfacePlan {
            name: iface.name.clone(),
            mac,
            mtu: iface.mtu,
            addresses: iface.addresses.clone(),
        });
    }
    let known_device = |d: &str| d == "lo" || names.contains(d);
    for (i, r) in c.routes.iter().enumerate() {
        let f = format!("network.routes[{i}]");
        let dst = &r.destination;
        if !dst.is_valid() {
            return Err(invalid(
                format!("{f}.destination"),
                format!("prefix length of {dst} is too long for the family"),
            ));
        }
        if network_of(dst) != dst.address {
            return Err(invalid(
                format!("{f}.destination"),
                format!(
                    "{dst} has host bits set (the network is {}/{})",
                    network_of(dst),
                    dst.prefix_len
                ),
            ));
        }
        if let Some(gw) = &r.gateway {
            if !same_family(gw, &dst.address) {
                return Err(invalid(
                    format!("{f}.gateway"),
                    format!("gateway {gw} is not of the family of {dst}"),
                ));
            }
            check_unicast(&format!("{f}.gateway"), gw)?;
        }
        if let Some(src) = &r.source {
            if !same_family(src, &dst.address) {
                return Err(invalid(
                    format!("{f}.source"),
                    format!("source {src} is not of the family of {dst}"),
                ));
            }
            check_unicast(&format!("{f}.source"), src)?;
        }
        match &r.device {
            Some(d) if !known_device(d) => {
                return Err(invalid(
                    format!("{f}.device"),
                    format!("route {dst}: no interface {d:?} in this config"),
                ))
            }
            None if r.gateway.is_none() => {
                return Err(invalid(
                    format!("{f}.device"),
                    format!("route {dst} has neither gateway nor device"),
                ))
            }
            None if r.on_link => {
                return Err(invalid(
                    format!("{f}.device"),
                    format!("on-link route {dst} names no device"),
                ))
            }
            _ => {}
        }
    }
    let mut neighbors = Vec::with_capacity(c.neighbors.len());
    for (i, n) in c.neighbors.iter().enumerate() {
        let f = format!("network.neighbors[{i}]");
        check_unicast(&format!("{f}.address"), &n.address)?;
        let mac = check_mac(&format!("{f}.mac"), &n.mac)?;
        if !known_device(&n.device) {
            return Err(invalid(
                format!("{f}.device"),
                format!(
                    "neighbour {}: no interface {:?} in this config",
                    n.address, n.device
                ),
            ));
        }
        neighbors.push(NeighborPlan {
            address: n.address,
            mac,
            device: n.device.clone(),
        });
    }
    if let Some(r) = &c.dns_relay {
        check_unicast("network.dns_relay.address", &r.address)?;
        if r.vsock_port == u32::MAX {
            return Err(invalid(
                "network.dns_relay.vsock_port",
                "port 4294967295 is VMADDR_PORT_ANY",
            ));
        }
    }
    Ok(Plan {
        interfaces,
        routes: c.routes.clone(),
        neighbors,
        dns_relay: c.dns_relay.clone(),
    })
}

/// "lo (1, up), eth0 (2, 02:42:ac:11:00:02)": the links, for an error message.
fn describe_links(links: &[Link]) -> String {
    if links.is_empty() {
        return "none".into();
    }
    links
        .iter()
        .map(|l| {
            let mac = l.mac.map(|m| format!(", {}", format_mac(&m)));
            format!("{} ({}{})", l.name, l.index, mac.unwrap_or_default())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// "route 0.0.0.0/0 via 172.17.0.1 dev eth0": a route, for an error message.
fn describe_route(r: &NetRoute) -> String {
    let mut s = format!("route {}", r.destination);
    if let Some(gw) = r.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(d) = &r.device {
        s.push_str(&format!(" dev {d}"));
    }
    if let Some(src) = r.source {
        s.push_str(&format!(" src {src}"));
    }
    if let Some(m) = r.metric {
        s.push_str(&format!(" metric {m}"));
    }
    if r.on_link {
        s.push_str(" onlink");
    }
    s
}

/// Brings up `lo` (the kernel then adds 127.0.0.1/8 and ::1 itself).
fn loopback_up_with(nl: &mut Netlink, links: &[Link]) -> Result<u32, NetworkError> {
    let lo = links
        .iter()
        .find(|l| l.name == "lo")
        .ok_or_else(|| NetworkError::Netlink {
            item: "interface lo".into(),
            cause: NetlinkError::Kernel {
                errno: libc::ENODEV,
                message: Some(format!("no lo among {}", describe_links(links))),
            },
        })?;
    if !lo.up {
        nl.change(netlink::link_set_up(lo.index, true), 0)
            .map_err(netlink_failed("interface lo: setting it up"))?;
    }
    Ok(lo.index)
}

/// Brings up `lo`: the agent does this as PID 1 before serving, so 127.0.0.1 works in
/// every sandbox.
pub fn loopback_up() -> Result<(), NetworkError> {
    let mut nl = Netlink::open().map_err(netlink_failed("netlink"))?;
    let links = nl.links().map_err(netlink_failed("listing links"))?;
    loopback_up_with(&mut nl, &links).map(|_| ())
}

/// Applies a validated config's links, addresses, routes and neighbours (not the DNS
/// relay), in that order: a route via a gateway needs the prefix route of an address.
pub fn apply(plan: &Plan) -> Result<(), NetworkError> {
    let mut nl = Netlink::open().map_err(netlink_failed("netlink"))?;
    let mut links = nl.links().map_err(netlink_failed("listing links"))?;
    let mut index_of: HashMap<String, u32> = HashMap::new();
    index_of.insert("lo".into(), loopback_up_with(&mut nl, &links)?);
    for (i, iface) in plan.interfaces.iter().enumerate() {
        let field = format!("network.interfaces[{i}]");
        let mac = format_mac(&iface.mac);
        let Some(pos) = links.iter().position(|l| l.mac == Some(iface.mac)) else {
            return Err(NetworkError::NoSuchLink {
                field: format!("{field}.mac"),
                mac,
                seen: describe_links(&links),
            });
        };
        let link = links[pos].clone();
        if link.name != iface.name {
            if let Some(other) = links
                .iter()
                .find(|l| l.name == iface.name && l.index != link.index)
            {
                return Err(NetworkError::NameTaken {
                    field: format!("{field}.name"),
                    name: iface.name.clone(),
                    link: link.name.clone(),
                    mac,
                    other: other.index,
                });
            }
        }
        let item = |what: &str| format!("interface {} ({mac}): {what}", iface.name);
        let index = link.index;
        nl.change(netlink::link_set_up(index, false), 0)
            .map_err(netlink_failed(item("setting it down")))?;
        if link.name != iface.name {
            nl.change(netlink::link_rename(index, &iface.name), 0)
                .map_err(netlink_failed(item(&format!("renaming {}", link.name))))?;
            links[pos].name = iface.name.clone();
        }
        nl.change(netlink::link_mtu(index, iface.mtu), 0)
            .map_err(netlink_failed(item(&format!("MTU {}", iface.mtu))))?;
        for a in &iface.addresses {
            nl.change(netlink::address_add(index, a), CREATE_OR_REPLACE)
                .map_err(netlink_failed(item(&format!("address {a}"))))?;
        }
        nl.change(netlink::link_set_up(index, true), 0)
            .map_err(netlink_failed(item("setting it up")))?;
        index_of.insert(iface.name.clone(), index);
    }
    for r in &plan.routes {
        // Validation made sure a named device is one of the config's (or lo).
        let oif = r.device.as_ref().and_then(|d| index_of.get(d).copied());
        let spec = RouteSpec {
            destination: r.destination,
            gateway: r.gateway,
            oif,
            source: r.source,
            metric: r.metric,
            on_link: r.on_link,
        };
        nl.change(netlink::route_add(&spec), CREATE_OR_REPLACE)
            .map_err(netlink_failed(describe_route(r)))?;
    }
    for n in &plan.neighbors {
        let index = index_of.get(&n.device).copied().unwrap_or_default();
        nl.change(
            netlink::neighbour_add(index, n.address, n.mac),
            CREATE_OR_REPLACE,
        )
        .map_err(netlink_failed(format!(
            "neighbour {} lladdr {} dev {}",
            n.address,
            format_mac(&n.mac),
            n.device
        )))?;
    }
    Ok(())
}

/// The agent's network state: whether to apply at all, and the DNS relay if one runs.
pub struct Network {
    apply: bool,
    relay: Mutex<Option<DnsRelay>>,
}

impl Network {
    /// `apply` is false on a host: requests are validated, nothing is changed.
    pub fn new(apply: bool) -> Self {
        Network {
            apply,
            relay: Mutex::new(None),
        }
    }

    /// `configure_network`. Requests are serialized (the relay lock is held), so two
    /// at once cannot interleave their netlink changes.
    pub fn configure(&self, config: &NetworkConfig) -> Result<(), NetworkError> {
        let plan = validate(config)?;
        let mut relay = self.relay.lock().unwrap_or_else(|e| e.into_inner());
        let start_relay = match (&*relay, &plan.dns_relay) {
            (Some(running), Some(want)) if running == want => {
                tracing::info!(
                    address = %want.address,
                    port = want.vsock_port,
                    "configure_network: the DNS relay already runs with these settings"
                );
                None
            }
            (Some(running), Some(want)) => {
                return Err(NetworkError::RelayRunning {
                    running_address: running.address,
                    running_port: running.vsock_port,
                    address: want.address,
                    port: want.vsock_port,
                })
            }
            (Some(running), None) => {
                tracing::info!(
                    address = %running.address,
                    "configure_network without dns_relay: the running relay stays"
                );
                None
            }
            (None, want) => want.clone(),
        };
        if !self.apply {
            tracing::info!("configure_network: host mode, the config is valid but not applied");
            return Ok(());
        }
        apply(&plan)?;
        if let Some(r) = start_relay {
            let address = SocketAddr::new(r.address, DNS_PORT);
            dns::start(
                address,
                dns::VsockHost { port: r.vsock_port },
                dns::Limits::default(),
            )
            .map_err(|cause| NetworkError::RelayStart { address, cause })?;
            tracing::info!(%address, port = r.vsock_port, "DNS relay serving");
            *relay = Some(r);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
