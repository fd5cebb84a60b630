//! The agent's rtnetlink requests and the answers it reads, over `runv-rtnl`'s
//! transport (one request at a time, each answer bounded by a time limit, so a kernel
//! that never answers cannot hang a connection thread). The message builders are pure
//! functions (tested below without a socket).
//!
//! Size: requests are emitted from the four concrete message types the agent sends,
//! and link dumps are read at the buffer level (`parse_link`). The agent calls only
//! the raw transport (`Rtnl::request_raw`), never rtnl's generic `request`/`dump`,
//! whose `RouteNetlinkMessage` (de)serializers pull in the code for every message type
//! the crate knows (tc, rules, stats...) and would cost the initramfs about 380 KB.

use std::net::IpAddr;

use runv_agent_protocol::IpNet;
use runv_rtnl::core::{Emitable, NlasIterator, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use runv_rtnl::route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use runv_rtnl::route::link::{LinkAttribute, LinkFlags, LinkMessage};
use runv_rtnl::route::neighbour::{NeighbourAttribute, NeighbourMessage, NeighbourState};
use runv_rtnl::route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use runv_rtnl::route::AddressFamily;
use runv_rtnl::Rtnl;

/// rtnetlink message types (linux/rtnetlink.h).
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_NEWNEIGH: u16 = 28;
/// `struct ifinfomsg`; link attributes (linux/if_link.h).
const IFINFOMSG_LEN: usize = 16;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;

/// Why a netlink request failed. The agent's errors name the item that failed
/// (`interface eth0 (...): MTU 1400: ...`), so a refusal is only the kernel's text.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel refused the request: its errno, and its extended ack text if any.
    #[error("{}", runv_rtnl::refusal_text(*errno, message.as_deref()))]
    Kernel { errno: i32, message: Option<String> },
    /// The socket, the time limit, an undecodable answer.
    #[error(transparent)]
    Transport(runv_rtnl::Error),
}

impl From<runv_rtnl::Error> for NetlinkError {
    fn from(e: runv_rtnl::Error) -> Self {
        match e {
            runv_rtnl::Error::Refused { errno, message, .. } => {
                NetlinkError::Kernel { errno, message }
            }
            e => NetlinkError::Transport(e),
        }
    }
}

impl NetlinkError {
    /// The kernel's errno, for a refused request.
    #[cfg(test)]
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::Transport(_) => None,
        }
    }
}

/// A link as a dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub up: bool,
}

/// A request's body, one of the message types the agent sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Link(LinkMessage),
    Address(AddressMessage),
    Route(RouteMessage),
    Neighbour(NeighbourMessage),
}

impl Emitable for Body {
    fn buffer_len(&self) -> usize {
        match self {
            Body::Link(m) => m.buffer_len(),
            Body::Address(m) => m.buffer_len(),
            Body::Route(m) => m.buffer_len(),
            Body::Neighbour(m) => m.buffer_len(),
        }
    }

    fn emit(&self, buf: &mut [u8]) {
        match self {
            Body::Link(m) => m.emit(buf),
            Body::Address(m) => m.emit(buf),
            Body::Route(m) => m.emit(buf),
            Body::Neighbour(m) => m.emit(buf),
        }
    }
}

/// A request: its message type (`RTM_*`) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: u16,
    pub body: Body,
}

impl Request {
    /// The request's name in transport errors (a refusal is named by the caller).
    fn what(&self) -> &'static str {
        match self.body {
            Body::Link(_) => "set link",
            Body::Address(_) => "new address",
            Body::Route(_) => "new route",
            Body::Neighbour(_) => "new neighbour",
        }
    }
}

/// A route netlink socket.
pub struct Netlink(Rtnl);

impl Netlink {
    pub fn open() -> Result<Self, NetlinkError> {
        Ok(Netlink(Rtnl::open()?))
    }

    /// Sends a request that changes something and waits for its ack.
    pub fn change(&mut self, msg: Request, flags: u16) -> Result<(), NetlinkError> {
        self.0.request_raw(msg.what(), msg.kind, &msg.body, flags)?;
        Ok(())
    }

    /// Every link with its index, name, MAC and whether it is up (a dump).
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        self.0
            .request_raw(
                "link dump",
                RTM_GETLINK,
                &LinkMessage::default(),
                NLM_F_DUMP,
            )?
            .iter()
            .filter(|m| m.kind == RTM_NEWLINK)
            .map(|m| parse_link(&m.payload))
            .collect()
    }
}

/// Index, flags, name and MAC of an `RTM_NEWLINK` payload (`ifinfomsg` and
/// attributes); other attributes are not decoded.
fn parse_link(payload: &[u8]) -> Result<Link, NetlinkError> {
    let decode = |reason: String| {
        NetlinkError::Transport(runv_rtnl::Error::Decode {
            what: "link dump".into(),
            reason,
        })
    };
    let header = payload
        .get(..IFINFOMSG_LEN)
        .ok_or_else(|| decode(format!("a {}-byte link message", payload.len())))?;
    let word = |at: usize| {
        u32::from_ne_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let mut link = Link {
        index: word(4),
        name: String::new(),
        mac: None,
        up: LinkFlags::from_bits_retain(word(8)).contains(LinkFlags::Up),
    };
    for nla in NlasIterator::new(&payload[IFINFOMSG_LEN..]) {
        let nla = nla.map_err(|e| decode(e.to_string()))?;
        match nla.kind() {
            IFLA_IFNAME => {
                let v = nla.value();
                let v = v.split(|&b| b == 0).next().unwrap_or(v);
                link.name = String::from_utf8_lossy(v).into_owned();
            }
            IFLA_ADDRESS => link.mac = nla.value().try_into().ok(),
            _ => {}
        }
    }
    Ok(link)
}

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn set_link(m: LinkMessage) -> Request {
    Request {
        kind: RTM_SETLINK,
        body: Body::Link(m),
    }
}

/// `ip link set INDEX up|down`.
pub fn link_set_up(index: u32, up: bool) -> Request {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.change_mask = LinkFlags::Up;
    if up {
        m.header.flags = LinkFlags::Up;
    }
    set_link(m)
}

/// `ip link set INDEX name NAME`.
pub fn link_rename(index: u32, name: &str) -> Request {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    set_link(m)
}

/// `ip link set INDEX mtu MTU`.
pub fn link_mtu(index: u32, mtu: u32) -> Request {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::Mtu(mtu));
    set_link(m)
}

/// The address on link `index`. IPv6 addresses carry `IFA_F_NODAD`: the host did
/// duplicate address detection on its side already, and a tentative address would
/// be unusable for a second or more. Send with `NLM_F_CREATE | NLM_F_REPLACE`
/// (`ip addr replace`), so a repeated request is not an error.
pub fn address_add(index: u32, net: &IpNet) -> Request {
    let mut m = AddressMessage::default();
    m.header.family = family(&net.address);
    m.header.prefix_len = net.prefix_len;
    m.header.index = index;
    m.header.scope = if net.address.is_loopback() {
        AddressScope::Host
    } else {
        AddressScope::Universe
    };
    m.attributes.push(AddressAttribute::Local(net.address));
    m.attributes.push(AddressAttribute::Address(net.address));
    if net.address.is_ipv6() {
        m.header.flags = AddressHeaderFlags::Nodad;
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    Request {
        kind: RTM_NEWADDR,
        body: Body::Address(m),
    }
}

/// Flags for requests that create or overwrite (addresses, routes, neighbours).
pub const CREATE_OR_REPLACE: u16 = NLM_F_CREATE | NLM_F_REPLACE;

/// A route of the main table, its device resolved to an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub source: Option<IpAddr>,
    pub metric: Option<u32>,
    pub on_link: bool,
}

/// `ip route replace DEST [via GW] [dev DEV] [src SRC] [metric M] [onlink]`: a
/// unicast route of the main table, protocol static. Without a gateway the scope is
/// link (as `ip` does), with one it is universe; `on_link` with a gateway sets
/// `RTNH_F_ONLINK` (the gateway is on the link even without a prefix route to it).
pub fn route_add(r: &RouteSpec) -> Request {
    let mut m = RouteMessage::default();
    m.header.address_family = family(&r.destination.address);
    m.header.destination_prefix_length = r.destination.prefix_len;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Static;
    m.header.kind = RouteType::Unicast;
    m.header.scope = if r.gateway.is_none() {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    if r.on_link && r.gateway.is_some() {
        m.header.flags = RouteFlags::Onlink;
    }
    if r.destination.prefix_len > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                r.destination.address,
            )));
    }
    if let Some(gw) = r.gateway {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    if let Some(oif) = r.oif {
        m.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(src) = r.source {
        m.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
    }
    if let Some(metric) = r.metric {
        m.attributes.push(RouteAttribute::Priority(metric));
    }
    Request {
        kind: RTM_NEWROUTE,
        body: Body::Route(m),
    }
}

/// `ip neigh replace ADDR lladdr MAC dev INDEX nud permanent`.
pub fn neighbour_add(index: u32, address: IpAddr, mac: [u8; 6]) -> Request {
    let mut m = NeighbourMessage::default();
    m.header.family = family(&address);
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::Destination(address.into()));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    Request {
        kind: RTM_NEWNEIGH,
        body: Body::Neighbour(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runv_rtnl::core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
    use runv_rtnl::route::RouteNetlinkMessage;

    fn net(s: &str, p: u8) -> IpNet {
        IpNet::new(s.parse().unwrap(), p).unwrap()
    }

    /// The bytes of a request, decoded again: type, flags and payload survive.
    /// The crate's own decoder checks the hand-written header.
    fn round_trip(msg: Request, flags: u16) -> NetlinkMessage<RouteNetlinkMessage> {
        let bytes = runv_rtnl::serialize(msg.kind, &msg.body, flags, 7);
        assert_eq!(bytes.len() % 4, 0);
        let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(back.header.sequence_number, 7);
        assert_eq!(back.header.flags, flags);
        assert_eq!(back.header.length as usize, bytes.len());
        back
    }

    #[test]
    fn link_messages_say_what_changes() {
        let up = round_trip(link_set_up(3, true), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(up.header.message_type, 19, "RTM_SETLINK");
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::SetLink(l)) = up.payload else {
            panic!("{up:?}")
        };
        assert_eq!(l.header.index, 3);
        assert_eq!(l.header.flags, LinkFlags::Up);
        assert_eq!(l.header.change_mask, LinkFlags::Up);
        assert!(l.attributes.is_empty());

        let Body::Link(down) = link_set_up(3, false).body else {
            panic!()
        };
        assert!(down.header.flags.is_empty());
        assert_eq!(down.header.change_mask, LinkFlags::Up);

        let Body::Link(r) = link_rename(4, "eth0").body else {
            panic!()
        };
        assert_eq!(r.attributes, vec![LinkAttribute::IfName("eth0".into())]);
        assert!(r.header.change_mask.is_empty());
        let Body::Link(m) = link_mtu(4, 1400).body else {
            panic!()
        };
        assert_eq!(m.attributes, vec![LinkAttribute::Mtu(1400)]);
    }

    #[test]
    fn ipv4_addresses_have_local_and_address_and_no_nodad() {
        let back = round_trip(address_add(2, &net("172.17.0.2", 16)), NLM_F_REQUEST);
        assert_eq!(back.header.message_type, 20, "RTM_NEWADDR");
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) = back.payload else {
            panic!()
        };
        assert_eq!(a.header.family, AddressFamily::Inet);
        assert_eq!(a.header.prefix_len, 16);
        assert_eq!(a.header.index, 2);
        assert_eq!(a.header.scope, AddressScope::Universe);
        assert!(a.header.flags.is_empty());
        let ip: IpAddr = "172.17.0.2".parse().unwrap();
        assert!(a.attributes.contains(&AddressAttribute::Local(ip)));
        assert!(a.attributes.contains(&AddressAttribute::Address(ip)));
        assert!(!a
            .attributes
            .iter()
            .any(|x| matches!(x, AddressAttribute::Flags(_))));
    }

    #[test]
    fn ipv6_addresses_skip_dad() {
        let Body::Address(a) = address_add(2, &net("fd00::2", 64)).body else {
            panic!()
        };
        assert_eq!(a.header.family, AddressFamily::Inet6);
        assert_eq!(a.header.prefix_len, 64);
        assert_eq!(a.header.flags, AddressHeaderFlags::Nodad);
        assert!(a
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
        let Body::Address(lo) = address_add(1, &net("127.0.0.2", 8)).body else {
            panic!()
        };
        assert_eq!(lo.header.scope, AddressScope::Host);
    }

    #[test]
    fn default_route_via_gateway() {
        let r = RouteSpec {
            destination: net("0.0.0.0", 0),
            gateway: Some("172.17.0.1".parse().unwrap()),
            oif: Some(2),
            source: Some("172.17.0.2".parse().unwrap()),
            metric: Some(100),
            on_link: false,
        };
        let back = round_trip(route_add(&r), NLM_F_REQUEST | CREATE_OR_REPLACE);
        assert_eq!(back.header.message_type, 24, "RTM_NEWROUTE");
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) = back.payload else {
            panic!()
        };
        assert_eq!(m.header.address_family, AddressFamily::Inet);
        assert_eq!(m.header.destination_prefix_length, 0);
        assert_eq!(m.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert_eq!(m.header.kind, RouteType::Unicast);
        assert_eq!(m.header.protocol, RouteProtocol::Static);
        assert!(m.header.flags.is_empty());
        let a = &m.attributes;
        assert!(!a
            .iter()
            .any(|x| matches!(x, RouteAttribute::Destination(_))));
        assert!(a.contains(&RouteAttribute::Gateway(RouteAddress::Inet(
            "172.17.0.1".parse().unwrap()
        ))));
        assert!(a.contains(&RouteAttribute::Oif(2)));
        assert!(a.contains(&RouteAttribute::PrefSource(RouteAddress::Inet(
            "172.17.0.2".parse().unwrap()
        ))));
        assert!(a.contains(&RouteAttribute::Priority(100)));
    }

    #[test]
    fn link_scope_and_onlink_routes() {
        let mut r = RouteSpec {
            destination: net("10.1.0.0", 16),
            gateway: None,
            oif: Some(3),
            source: None,
            metric: None,
            on_link: true,
        };
        let Body::Route(m) = route_add(&r).body else {
            panic!()
        };
        assert_eq!(m.header.scope, RouteScope::Link);
        assert_eq!(m.header.destination_prefix_length, 16);
        assert!(m
            .attributes
            .contains(&RouteAttribute::Destination(RouteAddress::Inet(
                "10.1.0.0".parse().unwrap()
            ))));
        assert!(m.header.flags.is_empty());
        r.gateway = Some("169.254.1.1".parse().unwrap());
        let Body::Route(m) = route_add(&r).body else {
            panic!()
        };
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert_eq!(m.header.flags, RouteFlags::Onlink);
        r.destination = net("::", 0);
        r.gateway = Some("fe80::1".parse().unwrap());
        let Body::Route(m) = route_add(&r).body else {
            panic!()
        };
        assert_eq!(m.header.address_family, AddressFamily::Inet6);
    }

    #[test]
    fn permanent_neighbours() {
        let back = round_trip(
            neighbour_add(2, "172.17.0.1".parse().unwrap(), [2, 0x42, 0, 0, 0, 1]),
            NLM_F_REQUEST | CREATE_OR_REPLACE,
        );
        assert_eq!(back.header.message_type, 28, "RTM_NEWNEIGH");
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) = back.payload
        else {
            panic!()
        };
        assert_eq!(n.header.state, NeighbourState::Permanent);
        assert_eq!(n.header.ifindex, 2);
        assert_eq!(n.header.family, AddressFamily::Inet);
        assert!(n
            .attributes
            .contains(&NeighbourAttribute::LinkLayerAddress(vec![
                2, 0x42, 0, 0, 0, 1
            ])));
    }

    #[test]
    fn refusals_are_the_kernels_text_and_the_rest_names_the_request() {
        let e = NetlinkError::from(runv_rtnl::Error::Refused {
            what: "new route".into(),
            errno: libc::EINVAL,
            message: Some("Nexthop has invalid gateway".into()),
        });
        assert_eq!(e.errno(), Some(libc::EINVAL));
        assert_eq!(
            e.to_string(),
            "Invalid argument (os error 22): Nexthop has invalid gateway"
        );
        let e = NetlinkError::from(runv_rtnl::Error::Timeout {
            what: "set link".into(),
            limit: runv_rtnl::REPLY_LIMIT,
        });
        assert_eq!(e.errno(), None);
        assert_eq!(e.to_string(), "netlink set link: no answer within 5s");
    }

    #[test]
    fn links_are_read_from_dump_messages() {
        let mut l = LinkMessage::default();
        l.header.index = 2;
        l.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        l.attributes.push(LinkAttribute::IfName("eth0".into()));
        l.attributes
            .push(LinkAttribute::Address(vec![2, 0x42, 0xac, 0x11, 0, 2]));
        let mut payload = vec![0; l.buffer_len()];
        l.emit(&mut payload);
        assert_eq!(
            parse_link(&payload).unwrap(),
            Link {
                index: 2,
                name: "eth0".into(),
                mac: Some([2, 0x42, 0xac, 0x11, 0, 2]),
                up: true
            }
        );
    }

    #[test]
    fn short_link_messages_are_refused() {
        let e = parse_link(&[0; 8]).unwrap_err();
        assert!(e.to_string().contains("a 8-byte link message"), "{e}");
        let mut bad = vec![0u8; IFINFOMSG_LEN];
        bad.extend_from_slice(&[200, 0, 3, 0]); // an attribute longer than the rest
        assert!(matches!(
            parse_link(&bad),
            Err(NetlinkError::Transport(runv_rtnl::Error::Decode { .. }))
        ));
    }
}
