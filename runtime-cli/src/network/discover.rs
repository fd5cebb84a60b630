//! Reading a network namespace through netlink: its links, their addresses, the main
//! table's routes and the permanent neighbours, as the guest is to get them.

use std::net::IpAddr;

use runv_agent_protocol::{IpNet, NetInterface, NetNeighbor, NetRoute, NetworkConfig};
use runv_rtnl::route::address::{AddressAttribute, AddressMessage, AddressScope};
use runv_rtnl::route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use runv_rtnl::route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use runv_rtnl::route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use runv_rtnl::route::{AddressFamily, RouteNetlinkMessage};
use runv_rtnl::Rtnl;

/// One link of the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The hardware address when it is a 6-byte Ethernet one.
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// `veth`, `macvtap`, ... as the kernel names the link's type.
    pub kind: Option<String>,
    pub loopback: bool,
}

/// What a namespace holds.
#[derive(Debug, Clone, Default)]
pub struct Namespace {
    pub links: Vec<Link>,
    pub addresses: Vec<(u32, IpNet)>,
    pub routes: Vec<(Option<u32>, NetRoute)>,
    pub neighbors: Vec<(u32, IpAddr, [u8; 6])>,
}

/// Reads the calling thread's network namespace.
pub fn read(rtnl: &mut Rtnl) -> Result<Namespace, runv_rtnl::Error> {
    let mut ns = Namespace::default();
    for m in rtnl.dump(
        "dump links",
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
    )? {
        if let RouteNetlinkMessage::NewLink(l) = m {
            ns.links.push(link_of(&l));
        }
    }
    for m in rtnl.dump(
        "dump addresses",
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
    )? {
        if let RouteNetlinkMessage::NewAddress(a) = m {
            if let Some(net) = address_of(&a) {
                ns.addresses.push((a.header.index, net));
            }
        }
    }
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut q = RouteMessage::default();
        q.header.address_family = family;
        for m in rtnl.dump("dump routes", RouteNetlinkMessage::GetRoute(q))? {
            if let RouteNetlinkMessage::NewRoute(r) = m {
                if let Some(route) = route_of(&r) {
                    ns.routes.push(route);
                }
            }
        }
    }
    for m in rtnl.dump(
        "dump neighbours",
        RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
    )? {
        if let RouteNetlinkMessage::NewNeighbour(n) = m {
            if let Some(entry) = neighbor_of(&n) {
                ns.neighbors.push(entry);
            }
        }
    }
    Ok(ns)
}

pub fn link_of(l: &LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        kind: None,
        loopback: l.header.flags.contains(LinkFlags::Loopback),
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(b) if b.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(b);
                link.mac = Some(mac);
            }
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(kind_name(k));
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Other(s) => s.clone(),
        k => k.to_string(),
    }
}

/// An address worth giving the guest: global or site scope (the guest makes its own
/// link-local and loopback addresses).
fn address_of(a: &AddressMessage) -> Option<IpNet> {
    if !matches!(a.header.scope, AddressScope::Universe | AddressScope::Site) {
        return None;
    }
    // IPv4: IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on a
    // point-to-point link); IPv6 has only IFA_ADDRESS.
    let local = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    IpNet::new(local.or(address)?, a.header.prefix_len)
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A route of the main table that is not the kernel's own (prefix routes of addresses,
/// local and broadcast routes, IPv6 multicast): those the guest kernel makes itself.
/// Returns the output interface's index with it.
fn route_of(r: &RouteMessage) -> Option<(Option<u32>, NetRoute)> {
    let h = &r.header;
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(h.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || h.protocol == RouteProtocol::Kernel
        || h.kind != RouteType::Unicast
    {
        return None;
    }
    let mut dest = None;
    let mut gateway = None;
    let mut oif = None;
    let mut source = None;
    let mut metric = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => dest = ip_of(d),
            RouteAttribute::Gateway(g) => gateway = ip_of(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::PrefSource(s) => source = ip_of(s),
            RouteAttribute::Priority(p) => metric = Some(*p),
            // Multipath, MPLS, encapsulations: nothing the guest would route the same.
            RouteAttribute::MultiPath(_) | RouteAttribute::Encap(_) | RouteAttribute::Via(_) => {
                return None
            }
            _ => {}
        }
    }
    let unspecified = match h.address_family {
        AddressFamily::Inet => IpAddr::from([0u8; 4]),
        AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
        _ => return None,
    };
    let destination = IpNet::new(dest.unwrap_or(unspecified), h.destination_prefix_length)?;
    if let IpAddr::V6(v6) = destination.address {
        if v6.segments()[0] & 0xff00 == 0xff00 {
            return None;
        }
    }
    Some((
        oif,
        NetRoute {
            destination,
            gateway,
            device: None,
            source,
            // The kernel reports IPv6 routes with metric 1024 when none was asked for.
            metric: metric.filter(|&m| !(destination.address.is_ipv6() && m == 1024)),
            on_link: gateway.is_none() && h.scope == RouteScope::Link,
        },
    ))
}

fn neighbor_of(n: &NeighbourMessage) -> Option<(u32, IpAddr, [u8; 6])> {
    if n.header.state != NeighbourState::Permanent {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(b);
                mac = Some(m);
            }
            _ => {}
        }
    }
    Some((n.header.ifindex, ip?, mac?))
}

/// The guest's view of `ns`: the given links (by index) as interfaces with their
/// addresses, the routes and neighbours on them, device indexes turned into names.
pub fn guest_config(ns: &Namespace, links: &[&Link]) -> NetworkConfig {
    let name_of = |index: u32| {
        links
            .iter()
            .find(|l| l.index == index)
            .map(|l| l.name.clone())
    };
    let interfaces = links
        .iter()
        .map(|l| NetInterface {
            name: l.name.clone(),
            mac: runv_agent_protocol::message::format_mac(&l.mac.unwrap_or_default()),
            mtu: l.mtu,
            addresses: ns
                .addresses
                .iter()
                .filter(|(i, _)| *i == l.index)
                .map(|(_, a)| *a)
                .collect(),
        })
        .collect();
    let routes = ns
        .routes
        .iter()
        .filter_map(|(oif, r)| {
            let device = match oif {
                Some(i) => Some(name_of(*i)?),
                None => None,
            };
            Some(NetRoute {
                device,
                ..r.clone()
            })
        })
        .collect();
    let neighbors = ns
        .neighbors
        .iter()
        .filter_map(|(i, ip, mac)| {
            Some(NetNeighbor {
                address: *ip,
                mac: runv_agent_protocol::message::format_mac(mac),
                device: name_of(*i)?,
            })
        })
        .collect();
    NetworkConfig {
        interfaces,
        routes,
        neighbors,
        dns_relay: None,
    }
}
