//! Fuzz target for the session FSM: any sequence of events — including OPENs with arbitrary
//! fields and whatever the wire decoder makes of arbitrary bytes — must never panic, and the FSM's
//! basic promises must hold after every step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tortie_bgpd::fsm::{self, Event, Output, Session, SessionConfig, State, Timer};
use tortie_bgpd::wire::{self, DecodeCxt};
use tortie_bgpd::{Message, Notification, Update};

fuzz_target!(|data: &[u8]| {
    let mut cfg = SessionConfig::new(64512, "198.18.0.1".parse().unwrap(), Some(65001));
    cfg.graceful_restart = data.first().is_some_and(|b| b & 1 == 1);
    let mut session = Session::new(cfg);
    let peer = fsm::local_open(&SessionConfig::new(65001, "198.18.0.2".parse().unwrap(), Some(64512)));
    let mut i = 1;
    while i < data.len() {
        let b = data[i];
        i += 1;
        let arg = data.get(i).copied().unwrap_or(0);
        let event = match b % 16 {
            0 => Event::ManualStart,
            1 => Event::ManualStartPassive,
            2 => Event::AutomaticStart,
            3 => Event::ManualStop { notification: None },
            4 => Event::TimerExpired(Timer::ALL[usize::from(arg) % Timer::ALL.len()]),
            5 => Event::TcpConnectionConfirmed,
            6 => Event::TcpCrAcked,
            7 => Event::TcpConnectionFails,
            8 => Event::MessageReceived(Message::Keepalive),
            9 => Event::MessageReceived(Message::Open(peer.clone())),
            10 => {
                // An OPEN with fuzzed fields.
                let mut o = peer.clone();
                let f = data.get(i..i + 7).unwrap_or(&[0; 7]);
                o.version = f[0];
                o.my_as = u16::from_be_bytes([f[1], f[2]]);
                o.hold_time = u16::from_be_bytes([f[3], f[4]]);
                o.bgp_id = [f[5], f[6], 0, 1].into();
                i += 7;
                Event::MessageReceived(Message::Open(o))
            }
            11 => Event::MessageReceived(Message::Update(Update::default())),
            12 => Event::MessageReceived(Message::Notification(Notification::new(arg % 8, arg / 8))),
            13 => Event::MessageError(Notification::new(arg % 8, arg / 8)),
            14 => Event::LivenessDown,
            _ => {
                // Whatever the wire layer makes of the next bytes.
                let len = usize::from(arg).min(data.len().saturating_sub(i + 1));
                let frame = &data[(i + 1).min(data.len())..(i + 1 + len).min(data.len())];
                i += 1 + len;
                match wire::decode(frame, &DecodeCxt::before_open()) {
                    Ok(m) => Event::MessageReceived(m),
                    Err(n) => Event::MessageError(n),
                }
            }
        };
        let outputs = session.step(event);
        for o in &outputs {
            if let Output::Established(_) = o {
                assert_eq!(session.state(), State::Established);
            }
        }
        if session.state() == State::Established {
            assert!(session.negotiated().is_some(), "Established without negotiated parameters");
        }
    }
});
