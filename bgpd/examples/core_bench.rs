//! In-process cost of the receive path's core for N /26 prefixes (release build):
//! encode into ≤4096-byte UPDATEs, frame + decode them, and feed the RIB (receive only, and
//! with a second peer to pass the routes on to); then the session going down (all withdrawn).
//! Also prints how much the process's resident memory grew while the RIB took the routes.
//! `cargo run --release -p tortie-bgpd --example core_bench -- [N]`

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net};
use tortie_bgpd::rib::{NextHopMode, PeerConfig, Rib, RibInput, RibOutput};
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
    let up = |peer: u32, addr: &str, asn: u32, local: &str| RibInput::PeerUp {
        peer,
        config: PeerConfig {
            address: addr.parse::<IpAddr>().unwrap(),
            remote_as: asn,
            rr_client: false,
            next_hop: NextHopMode::Auto,
            import: Default::default(),
            export: Default::default(),
            max_prefixes: None,
        },
        bgp_id: addr.parse().unwrap(),
        local_address: local.parse().unwrap(),
        families: BTreeSet::from([Afi::Ipv4]),
    };
    let mut rib = Rib::new(64512, "198.18.10.2".parse().unwrap(), None);
    // As in the daemon when nobody subscribes to best-path changes.
    rib.set_report_best(false);
    rib.step(up(1, "198.18.10.1", 65001, "198.18.10.2"));
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
    let transit_updates = updates.clone();
    let reported_updates = updates.clone();
    let rss0 = rss_kb();
    let t = Instant::now();
    for u in updates {
        rib.step(RibInput::Update { peer: 1, update: u });
    }
    let t_rib = t.elapsed();
    let rss1 = rss_kb();
    assert_eq!(rib.len(), n as usize);

    // The same with best-path reports built (an agent subscribed).
    let mut rep = Rib::new(64512, "198.18.10.2".parse().unwrap(), None);
    rep.step(up(1, "198.18.10.1", 65001, "198.18.10.2"));
    let t = Instant::now();
    let mut reported = 0;
    for u in reported_updates {
        for o in rep.step(RibInput::Update { peer: 1, update: u }) {
            if let RibOutput::BestChanged(v) = o {
                reported += v.len();
            }
        }
    }
    let t_rep = t.elapsed();
    assert_eq!(reported, n as usize);
    drop(rep);

    // Transit: a second (eBGP) peer gets every route.
    let mut tr = Rib::new(64512, "198.18.10.2".parse().unwrap(), None);
    tr.set_report_best(false);
    tr.step(up(1, "198.18.10.1", 65001, "198.18.10.2"));
    tr.step(up(2, "198.18.11.1", 65009, "198.18.11.2"));
    let t = Instant::now();
    let mut sent = 0;
    for u in transit_updates {
        for o in tr.step(RibInput::Update { peer: 1, update: u }) {
            if let RibOutput::Send { update, .. } = o {
                sent += update.announced.len();
            }
        }
    }
    let t_transit = t.elapsed();
    assert_eq!(sent, n as usize);
    drop(tr);

    let t = Instant::now();
    rib.step(RibInput::PeerDown {
        peer: 1,
        stale_for: None,
    });
    let t_down = t.elapsed();
    assert!(rib.is_empty());
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!(
        "{n} prefixes in {} UPDATEs ({} bytes): encode {:.1} ms, frame+decode {:.1} ms, \
         RIB {:.1} ms (+{:.1} MB RSS), with best-path reports {:.1} ms, transit {:.1} ms, \
         session down {:.1} ms",
        frames.len(),
        stream.len(),
        ms(t_enc),
        ms(t_dec),
        ms(t_rib),
        (rss1 - rss0) as f64 / 1024.0,
        ms(t_rep),
        ms(t_transit),
        ms(t_down),
    );
}

/// Resident set size of this process (kB), 0 where /proc is missing.
fn rss_kb() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
