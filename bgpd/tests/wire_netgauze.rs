//! Why netgauze-bgp-pkt 0.13 is the tests' second opinion and not the codec on the message
//! path (see the `wire` module docs): each test pins a behaviour of netgauze that the session
//! cannot live with, next to what `wire` does with the same bytes. If one of these starts
//! failing, netgauze changed: reconsider.

#[path = "wire_support.rs"]
mod support;

use std::collections::HashMap;

use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::notification::BgpNotificationMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use support::{dcx, hex};
use tortie_bgpd::wire;
use tortie_bgpd::{Message, Notification};

const MARKER: &str = "ffffffffffffffffffffffffffffffff";

fn netgauze(bytes: &[u8], collect: bool) -> Result<BgpMessage, BgpNotificationMessage> {
    let fail = !collect;
    let mut cx =
        BgpParsingContext::new(true, HashMap::new(), HashMap::new(), fail, fail, fail, fail);
    BgpMessage::parse(&mut SliceReader::new(bytes), &mut cx).map_err(BgpNotificationMessage::from)
}

#[test]
fn notification_with_a_newer_code_or_subcode() {
    // Send Hold Timer Expired (8, RFC 9687) and OPEN / Authentication Failure (2/5, deprecated
    // but still sent by old peers): a peer tells us why it closes. netgauze fails to parse them
    // (and would have us answer with an FSM error); we report them as received.
    for body in ["08 00", "02 05"] {
        let bytes = hex(&format!("{MARKER}0015 03 {body}"));
        assert!(netgauze(&bytes, true).is_err(), "{body}");
        let Ok(Message::Notification(n)) = wire::decode(&bytes, &dcx(true, &[], false)) else {
            panic!()
        };
        assert_eq!(
            n,
            Notification {
                code: bytes[19],
                subcode: bytes[20],
                data: vec![]
            }
        );
    }
}

#[test]
fn open_with_graceful_restart_for_a_family_it_does_not_know() {
    // Graceful restart listing IPv4 unicast and AFI 99 / SAFI 1 (any AFI/SAFI netgauze does not
    // know): netgauze rejects the whole OPEN; we keep IPv4's entry.
    let caps = "40 0a 0078 0001 01 80 0063 01 00";
    let len = 19 + 10 + 2 + 12;
    let bytes = hex(&format!(
        "{MARKER}{len:04x} 01 04 fde9 005a c6120001 0e 02 0c {caps}"
    ));
    assert!(netgauze(&bytes, false).is_err());
    let Ok(Message::Open(o)) = wire::decode(&bytes, &dcx(true, &[], false)) else {
        panic!()
    };
    let gr = o.capabilities.graceful_restart.unwrap();
    assert_eq!(gr.families.len(), 1);
}

#[test]
fn update_longer_than_4096_octets() {
    // Without the extended-message capability (RFC 8654) an UPDATE is at most 4096 octets
    // (RFC 4271 §4.1); netgauze accepts 5000.
    let nlri = "18 0a0000".repeat((5000 - 23 - 20) / 4);
    let attrs = "40010100 400206 0201 0000fde9 400304 c0000201";
    let len = 23 + hex(attrs).len() + hex(&nlri).len();
    let bytes = hex(&format!(
        "{MARKER}{len:04x} 02 0000 {:04x} {attrs} {nlri}",
        hex(attrs).len()
    ));
    assert!(len > 4096);
    assert!(netgauze(&bytes, false).is_ok());
    let n = wire::decode(&bytes, &dcx(true, &[], false)).unwrap_err();
    assert_eq!((n.code, n.subcode), (1, 2));
}

#[test]
fn rfc7606_outcomes_are_not_expressible() {
    // A repeated ORIGIN is accepted as two attributes (RFC 7606 §3 g: keep the first); a
    // missing NEXT_HOP with NLRI is accepted (§3 d: treat-as-withdraw); ORIGIN with the
    // optional flag set is a session reset (§3 c: treat-as-withdraw).
    let repeated = hex(&format!(
        "{MARKER}0033 02 0000 0018 40010100 400206 0201 0000fde9 400304 c0000201 40010102 180a0102"
    ));
    let Ok(BgpMessage::Update(u)) = netgauze(&repeated, false) else {
        panic!()
    };
    assert_eq!(u.path_attributes().len(), 4);
    let no_next_hop = hex(&format!(
        "{MARKER}0028 02 0000 000d 40010100 400206 0201 0000fde9 180a0102"
    ));
    assert!(netgauze(&no_next_hop, false).is_ok());
    let origin_flags = hex(&format!(
        "{MARKER}002f 02 0000 0014 c0010100 400206 0201 0000fde9 400304 c0000201 180a0102"
    ));
    assert!(netgauze(&origin_flags, false).is_err());

    let cx = dcx(true, &[], false);
    let Ok(Message::Update(u)) = wire::decode(&no_next_hop, &cx) else {
        panic!()
    };
    assert!(u.treat_as_withdraw.is_some());
    let Ok(Message::Update(u)) = wire::decode(&origin_flags, &cx) else {
        panic!()
    };
    assert!(u.treat_as_withdraw.is_some());
}

#[test]
fn collect_mode_loses_its_place_after_an_attribute_error() {
    // The error-collecting mode skips the wrong number of octets after some errors: ORIGIN with
    // a wrong flag takes AS_PATH with it (silently), a NEXT_HOP of 5 octets desynchronises the
    // rest into a parse error, and a COMMUNITIES of 3 octets is a parse error (RFC 7606 §7.8:
    // treat-as-withdraw).
    let origin_flags = hex(&format!(
        "{MARKER}002f 02 0000 0014 c0010100 400206 0201 0000fde9 400304 c0000201 180a0102"
    ));
    let Ok(BgpMessage::Update(u)) = netgauze(&origin_flags, true) else {
        panic!()
    };
    assert_eq!(u.path_attributes().len(), 1, "ORIGIN and AS_PATH both gone");
    let next_hop_5 = hex(&format!(
        "{MARKER}0030 02 0000 0015 40010100 400206 0201 0000fde9 400305 c000020100 180a0102"
    ));
    assert!(netgauze(&next_hop_5, true).is_err());
    let communities_3 = hex(&format!(
        "{MARKER}0035 02 0000 001a 40010100 400206 0201 0000fde9 400304 c0000201 c00803 000000 180a0102"
    ));
    assert!(netgauze(&communities_3, true).is_err());
    // We withdraw the route in all three cases and keep the session.
    for bytes in [origin_flags, next_hop_5, communities_3] {
        let Ok(Message::Update(u)) = wire::decode(&bytes, &dcx(true, &[], false)) else {
            panic!()
        };
        assert!(u.treat_as_withdraw.is_some() && u.withdrawn.len() == 1);
    }
}
