//! Bulk timings of the wire layer (not run by default):
//!
//! ```sh
//! cargo test -p tortie-bgpd --release --test wire_bench -- --ignored --nocapture
//! ```
//!
//! 100 000 distinct /26 with one next hop and iBGP attributes: `encode_updates`, then
//! `FrameDecoder` + `decode` of the resulting stream; the same work done with netgauze-bgp-pkt
//! for comparison. Prints the best of several runs.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_parse_utils::WritablePdu;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use tortie_bgpd::wire::{self, DecodeCxt, EncodeCxt, FrameDecoder};
use tortie_bgpd::{Message, Nlri, Origin, PathAttrs, Update};

const ROUTES: u32 = 100_000;
const RUNS: usize = 15;

fn best<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        let r = black_box(f());
        best = best.min(t.elapsed());
        out = Some(r);
    }
    (best, out.unwrap())
}

fn update() -> Update {
    let announced = (0..ROUTES)
        .map(|i| {
            Nlri::new(IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from((10u32 << 24) + i * 64), 26).unwrap(),
            ))
        })
        .collect();
    let attrs = PathAttrs {
        origin: Origin::Igp,
        as_path: vec![],
        next_hop: Some(IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1))),
        local_pref: Some(100),
        ..Default::default()
    };
    Update {
        attrs: Some(attrs),
        announced,
        ..Default::default()
    }
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn bulk_100k_slash26() {
    let u = update();
    let ecx = EncodeCxt {
        four_octet_as: true,
        ..Default::default()
    };
    let dcx = DecodeCxt {
        four_octet_as: true,
        local_as: 65000,
        is_ibgp: true,
        ..Default::default()
    };

    let (t_enc, frames) = best(|| wire::encode_updates(&u, &ecx).unwrap());
    let bytes: usize = frames.iter().map(Vec::len).sum();
    let stream: Vec<u8> = frames.concat();
    println!(
        "encode_updates: {} routes -> {} UPDATEs, {} octets in {:.2?} ({:.1} ns/route)",
        ROUTES,
        frames.len(),
        bytes,
        t_enc,
        t_enc.as_nanos() as f64 / f64::from(ROUTES)
    );

    let (t_dec, n) = best(|| {
        let mut fd = FrameDecoder::new();
        fd.extend(&stream);
        let mut n = 0;
        while let Some(f) = fd.next_frame().unwrap() {
            let Ok(Message::Update(m)) = wire::decode(&f, &dcx) else {
                panic!()
            };
            n += m.announced.len();
        }
        n
    });
    assert_eq!(n, ROUTES as usize);
    println!(
        "FrameDecoder + decode: {} routes in {:.2?} ({:.1} ns/route)",
        n,
        t_dec,
        t_dec.as_nanos() as f64 / f64::from(ROUTES)
    );

    // netgauze, same stream: parse every frame (the message only, no conversion to our types).
    let (t_ng_dec, n) = best(|| {
        let mut n = 0;
        for f in &frames {
            let mut cx = BgpParsingContext::new(
                true,
                HashMap::new(),
                HashMap::new(),
                true,
                true,
                true,
                true,
            );
            let BgpMessage::Update(m) =
                BgpMessage::parse(&mut SliceReader::new(f), &mut cx).unwrap()
            else {
                panic!()
            };
            n += m.nlri().len();
        }
        n
    });
    assert_eq!(n, ROUTES as usize);
    println!(
        "netgauze parse: {} routes in {:.2?} ({:.1} ns/route)",
        n,
        t_ng_dec,
        t_ng_dec.as_nanos() as f64 / f64::from(ROUTES)
    );

    // netgauze as the encoder: our routes → its types, chunked as we pack, then written.
    let mut cx =
        BgpParsingContext::new(true, HashMap::new(), HashMap::new(), true, true, true, true);
    let BgpMessage::Update(first) =
        BgpMessage::parse(&mut SliceReader::new(&frames[0]), &mut cx).unwrap()
    else {
        panic!()
    };
    let attrs = first.path_attributes().to_vec();
    let per_message = first.nlri().len();
    let (t_ng_enc, out) = best(|| {
        let mut out = Vec::with_capacity(frames.len());
        for chunk in u.announced.chunks(per_message) {
            let nlri: Vec<Ipv4UnicastAddress> = chunk
                .iter()
                .map(|n| match n.prefix {
                    IpNet::V4(p) => {
                        Ipv4UnicastAddress::new_no_path_id(Ipv4Unicast::from_net(p).unwrap())
                    }
                    IpNet::V6(_) => unreachable!(),
                })
                .collect();
            let msg = BgpMessage::Update(BgpUpdateMessage::new(vec![], attrs.clone(), nlri));
            let mut buf = Vec::with_capacity(msg.len());
            msg.write(&mut buf).unwrap();
            out.push(buf);
        }
        out
    });
    assert_eq!(out, frames, "netgauze writes the same bytes");
    println!(
        "netgauze build + write: {} routes in {:.2?} ({:.1} ns/route)",
        ROUTES,
        t_ng_enc,
        t_ng_enc.as_nanos() as f64 / f64::from(ROUTES)
    );
}
