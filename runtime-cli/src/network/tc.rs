//! The tc plumbing of one interface pair, as netlink messages: an `ingress` qdisc on each
//! side and a match-all u32 filter whose action is `mirred egress redirect` to the other
//! side (`tc filter add dev A parent ffff: protocol all u32 match u8 0 0 action mirred
//! egress redirect dev B`), as Kata's tcfilter model does.

use runv_rtnl::route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirror, TcActionMirrorOption,
    TcActionOption, TcActionType, TcAttribute, TcFilterU32, TcFilterU32Option, TcHandle, TcMessage,
    TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};

/// ETH_P_ALL, in the network byte order tc wants in `info`.
const ETH_P_ALL_BE: u16 = 0x0003u16.to_be();
/// The filters' priority (`pref`).
const PRIORITY: u16 = 1;

/// `tc qdisc add dev <index> handle ffff: ingress` (and, as a delete, its removal).
pub fn ingress_qdisc(index: u32) -> TcMessage {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::INGRESS;
    m.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    m.attributes.push(TcAttribute::Kind("ingress".into()));
    m
}

/// The match-all u32 filter on `from`'s ingress that redirects every frame to `to`'s
/// egress.
pub fn redirect_filter(from: u32, to: u32) -> TcMessage {
    let mut m = TcMessage::with_index(from as i32);
    m.header.parent = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    m.header.info = u32::from(TcHandle {
        major: PRIORITY,
        minor: ETH_P_ALL_BE,
    });
    let mut selector = TcU32Selector::default();
    selector.flags = TcU32SelectorFlags::Terminal;
    selector.nkeys = 1;
    // One key that matches any byte: `match u8 0 0`.
    selector.keys = vec![TcU32Key::default()];
    let mut mirror = TcMirror::default();
    mirror.generic = TcActionGeneric::default();
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = to;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind(TcActionMirror::KIND.to_string()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    m.attributes
        .push(TcAttribute::Kind(TcFilterU32::KIND.to_string()));
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(selector)),
        TcOption::U32(TcFilterU32Option::Action(vec![action])),
    ]));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_redirects_everything_to_the_other_side() {
        let f = redirect_filter(4, 9);
        assert_eq!(f.header.index, 4);
        assert_eq!(
            f.header.parent,
            TcHandle {
                major: 0xffff,
                minor: 0
            }
        );
        assert_eq!(f.header.info >> 16, u32::from(PRIORITY));
        assert_eq!(f.header.info & 0xffff, u32::from(0x0300u16));
        let dbg = format!("{f:?}");
        assert!(
            dbg.contains("EgressRedir") && dbg.contains("ifindex: 9"),
            "{dbg}"
        );
        assert!(dbg.contains("Terminal") && dbg.contains("Stolen"), "{dbg}");
        let q = ingress_qdisc(4);
        assert_eq!(q.header.parent, TcHandle::INGRESS);
        assert_eq!(q.attributes, vec![TcAttribute::Kind("ingress".into())]);
    }
}
