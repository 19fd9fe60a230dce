//! In-process cost of the receive path's core for N /26 prefixes (release build):
//! encode into ≤4096-byte UPDATEs, frame + decode them, and feed the RIB.
//! `cargo run --release -p tortie-bgpd --example core_bench -- [N]`

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net};
use tortie_bgpd::rib::{NextHopMode, PeerConfig, Rib, RibInput};
use tortie_bgpd::wire::{self, DecodeCxt, EncodeCxt, FrameDecoder};
use tortie_bgpd::{Afi, AsSegment, Message, Nlri, PathAttrs, Update};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(100_000);
    let announced: Vec<Nlri> = (0..n)
        .map(|i| {
            Nlri::new(IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from((10u32 << 24) + i * 64), 26).unwrap(),
            ))
        })
        .collect();
    let attrs = PathAttrs {
        as_path: vec![AsSegment::Sequence(vec![65001])],
        next_hop: Some("198.18.10.1".parse().unwrap()),
        ..Default::default()
    };
    let update = Update {
        announced,
        attrs: Some(attrs),
        ..Default::default()
    };
    let cx = EncodeCxt {
        four_octet_as: true,
        ..EncodeCxt::before_open()
    };
    let t = Instant::now();
    let frames = wire::encode_updates(&update, &cx).unwrap();
    let stream: Vec<u8> = frames.concat();
    let t_enc = t.elapsed();

    let dcx = DecodeCxt {
        four_octet_as: true,
        ..DecodeCxt::before_open()
    };
    let mut rib = Rib::new(64512, "198.18.10.2".parse().unwrap(), None);
    rib.step(RibInput::PeerUp {
        peer: 1,
        config: PeerConfig {
            address: "198.18.10.1".parse::<IpAddr>().unwrap(),
            remote_as: 65001,
            rr_client: false,
            next_hop: NextHopMode::Auto,
            import: Default::default(),
            export: Default::default(),
            max_prefixes: None,
        },
        bgp_id: "198.18.10.1".parse().unwrap(),
        local_address: "198.18.10.2".parse().unwrap(),
        families: BTreeSet::from([Afi::Ipv4]),
    });
    let t = Instant::now();
    let mut dec = FrameDecoder::new();
    dec.extend(&stream);
    let mut updates = Vec::new();
    while let Some(f) = dec.next_frame().unwrap() {
        match wire::decode(&f, &dcx).unwrap() {
            Message::Update(u) => updates.push(u),
            other => panic!("{other:?}"),
        }
    }
    let t_dec = t.elapsed();
    let t = Instant::now();
    for u in updates {
        rib.step(RibInput::Update { peer: 1, update: u });
    }
    let t_rib = t.elapsed();
    assert_eq!(rib.len(), n as usize);
    println!(
        "{n} prefixes in {} UPDATEs ({} bytes): encode {:.1} ms, frame+decode {:.1} ms, RIB {:.1} ms",
        frames.len(),
        stream.len(),
        t_enc.as_secs_f64() * 1e3,
        t_dec.as_secs_f64() * 1e3,
        t_rib.as_secs_f64() * 1e3
    );
}
