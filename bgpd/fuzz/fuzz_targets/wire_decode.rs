//! Fuzz target for the wire layer: the input (after a first octet that sets how the bytes are
//! chunked) goes through `FrameDecoder` and every frame, plus the unframed input, through
//! `decode` in every decode context (AS width × ADD-PATH families × iBGP/eBGP). Nothing may
//! panic, and whatever decodes and can be encoded again must decode to the same message.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tortie_bgpd::wire::{self, DecodeCxt, EncodeCxt, FrameDecoder};
use tortie_bgpd::{Afi, Message};

static CONTEXTS: LazyLock<Vec<DecodeCxt>> = LazyLock::new(|| {
    let mut out = Vec::new();
    for four_octet_as in [false, true] {
        for add_path in [
            vec![],
            vec![Afi::Ipv4],
            vec![Afi::Ipv6],
            vec![Afi::Ipv4, Afi::Ipv6],
        ] {
            for is_ibgp in [false, true] {
                out.push(DecodeCxt {
                    four_octet_as,
                    add_path: add_path.iter().copied().collect(),
                    local_as: 65000,
                    is_ibgp,
                });
            }
        }
    }
    out
});

/// Treat-as-withdraw re-encodes as a plain withdrawal; route order only holds per family.
fn normal(mut m: Message) -> Message {
    if let Message::Update(u) = &mut m {
        u.treat_as_withdraw = None;
        u.withdrawn.sort_by_key(|n| Afi::of(&n.prefix));
        u.announced.sort_by_key(|n| Afi::of(&n.prefix));
    }
    m
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let mut frames = vec![bytes.to_vec()];
    let mut fd = FrameDecoder::new();
    for piece in bytes.chunks(usize::from(chunk).max(1)) {
        fd.extend(piece);
        while let Ok(Some(f)) = fd.next_frame() {
            frames.push(f);
        }
    }
    for frame in &frames {
        for cx in CONTEXTS.iter() {
            let Ok(msg) = wire::decode(frame, cx) else {
                continue;
            };
            let ecx = EncodeCxt {
                four_octet_as: cx.four_octet_as,
                add_path: cx.add_path.clone(),
                ipv4_over_ipv6_next_hop: true,
                mp_ipv4: false,
            };
            if let Ok(again) = wire::encode(&msg, &ecx) {
                assert!(again.len() <= wire::MAX_MESSAGE_LEN);
                let back = wire::decode(&again, cx).expect("our own encoding is rejected");
                assert_eq!(normal(back), normal(msg), "decode(encode(m)) != m");
            }
        }
    }
});
