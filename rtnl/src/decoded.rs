//! The generic layer: requests and answers as `netlink-packet-route`'s
//! `RouteNetlinkMessage`, over the transport. Only callers that can afford its decoder
//! use it (runv's host side); the guest agent does not, so its image does not hold it.

use netlink_packet_core::{ParseableParametrized, NLM_F_DUMP};
use netlink_packet_route::RouteNetlinkMessage;

use crate::{Error, Rtnl};

impl Rtnl {
    /// Sends `message` with `flags` (plus REQUEST and ACK) and returns every message
    /// the kernel answered before its ACK or DONE, decoded. `what` names the request
    /// in errors.
    pub fn request(
        &mut self,
        what: &str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        self.request_raw(what, message.message_type(), &message, flags)?
            .into_iter()
            .map(|m| {
                RouteNetlinkMessage::parse_with_param(&m.payload[..], m.kind).map_err(|e| {
                    Error::Decode {
                        what: what.into(),
                        reason: e.to_string(),
                    }
                })
            })
            .collect()
    }

    /// A dump request (`NLM_F_DUMP`): every object of the kind asked for.
    pub fn dump(
        &mut self,
        what: &str,
        message: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        self.request(what, message, NLM_F_DUMP)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};

    /// Index and name of every link of the socket's namespace.
    pub(crate) fn links(rtnl: &mut Rtnl) -> Vec<(u32, String)> {
        rtnl.dump(
            "links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => {
                let name = l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                })?;
                Some((l.header.index, name))
            }
            _ => None,
        })
        .collect()
    }

    #[test]
    fn a_dump_of_this_namespace_lists_lo() {
        let mut rtnl = Rtnl::open().unwrap();
        assert!(links(&mut rtnl).iter().any(|(_, n)| n == "lo"));
    }

    #[test]
    fn a_refusal_keeps_the_errno_and_names_the_request() {
        let mut rtnl = Rtnl::open().unwrap();
        let mut m = LinkMessage::default();
        m.header.index = 999_999;
        let e = rtnl
            .request("get link 999999", RouteNetlinkMessage::GetLink(m), 0)
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENODEV), "{e}");
        assert!(e.to_string().contains("get link 999999"), "{e}");
        // The socket goes on serving after a refusal.
        assert!(!links(&mut rtnl).is_empty());
    }

    #[test]
    fn a_single_get_answers_one_decoded_message() {
        let mut rtnl = Rtnl::open().unwrap();
        let mut m = LinkMessage::default();
        m.header.index = 1; // lo is always 1
        let got = rtnl
            .request("get link 1", RouteNetlinkMessage::GetLink(m), 0)
            .unwrap();
        assert!(
            matches!(&got[..], [RouteNetlinkMessage::NewLink(l)] if l.header.index == 1),
            "{got:?}"
        );
    }
}
