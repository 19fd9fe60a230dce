//! Random event sequences (including ones no driver would produce: stale timers, messages
//! without a connection, second connections) never panic, and the outputs keep the driver's
//! view consistent with the FSM's: no Send without a connection, StopTimer only for armed
//! timers, Established only after an accepted OPEN then a KEEPALIVE on the same connection,
//! nothing armed in Idle but IdleHold, and so on.

#[path = "fsm_common.rs"]
mod common;

use std::collections::BTreeSet;

use common::*;
use proptest::prelude::*;
use tortie_bgpd::fsm::{Event, Output, Session, SessionConfig, State, Timer};
use tortie_bgpd::{Afi, Message, Notification};

fn timer() -> impl Strategy<Value = Timer> {
    prop::sample::select(Timer::ALL.to_vec())
}

fn event() -> impl Strategy<Value = Event> {
    let opens = prop_oneof![
        6 => Just(peer_open()),
        1 => Just(peer_open_with(|o| o.hold_time = 0)),
        1 => Just(peer_open_with(|o| o.hold_time = 1)),
        1 => Just(peer_open_with(|o| o.version = 3)),
        1 => Just(peer_open_with(|o| o.bgp_id = LOCAL_ID)),
        1 => Just(peer_open_with(|o| o.capabilities.four_octet_as = Some(65001))),
        1 => Just(peer_open_with(|o| o.capabilities.graceful_restart = None)),
    ];
    prop_oneof![
        2 => Just(Event::ManualStart),
        1 => Just(Event::ManualStartPassive),
        2 => Just(Event::AutomaticStart),
        1 => Just(Event::AutomaticStartPassive),
        1 => Just(Event::ManualStop { notification: None }),
        1 => Just(Event::ManualStop { notification: Some(Notification::admin_shutdown("bye")) }),
        1 => Just(automatic_stop()),
        8 => timer().prop_map(Event::TimerExpired),
        3 => Just(Event::TcpCrAcked),
        3 => Just(Event::TcpConnectionConfirmed),
        2 => Just(Event::TcpConnectionFails),
        6 => opens.prop_map(recv_open),
        6 => Just(recv(Message::Keepalive)),
        2 => Just(recv_update()),
        1 => Just(recv_notif(6, 2)),
        1 => Just(recv_notif(2, 1)),
        1 => Just(route_refresh(Afi::Ipv4, 0)),
        1 => Just(msg_err(1, 1)),
        1 => Just(msg_err(2, 4)),
        1 => Just(msg_err(3, 1)),
        1 => Just(Event::OpenCollisionDump),
        1 => Just(Event::UpdateTreatAsWithdraw),
        1 => Just(Event::LivenessDown),
    ]
}

fn config() -> impl Strategy<Value = SessionConfig> {
    (
        any::<bool>(),
        prop::option::of(Just(secs(2))),
        prop::sample::select(vec![0u16, 3, 90]),
        any::<bool>(),
    )
        .prop_map(
            |(passive, delay_open, hold_time, graceful_restart)| SessionConfig {
                passive,
                delay_open,
                hold_time,
                graceful_restart,
                ..cfg()
            },
        )
}

/// What a driver knows from the outputs alone.
#[derive(Default)]
struct Driver {
    connected: bool,
    armed: BTreeSet<Timer>,
    open_sent: bool,
    open_accepted: bool,
}

fn check_step(s: &mut Session, d: &mut Driver, ev: Event) -> Result<(), TestCaseError> {
    let before = s.state();
    let passive = s.config().passive;
    let was_connected = d.connected;
    let mut stale_timer = false;
    match &ev {
        Event::TcpCrAcked | Event::TcpConnectionConfirmed if !d.connected => d.connected = true,
        Event::TcpConnectionFails | Event::LivenessDown => d.connected = false,
        Event::TimerExpired(t) => stale_timer = !d.armed.remove(t),
        _ => {}
    }
    let is_keepalive = ev == recv(Message::Keepalive);
    let is_open = matches!(ev, Event::MessageReceived(Message::Open(_)));
    let out = s.step(ev.clone());
    let after = s.state();
    if stale_timer {
        prop_assert!(out.is_empty(), "stale timer expiry produced {out:?}");
    }

    let mut notification_pending = false;
    for (i, o) in out.iter().enumerate() {
        match o {
            Output::Send(m) => {
                prop_assert!(d.connected, "Send without a connection: {o:?} after {ev:?}");
                match m {
                    Message::Open(_) => {
                        prop_assert!(!d.open_sent, "second OPEN on a connection");
                        d.open_sent = true;
                    }
                    Message::Notification(_) => notification_pending = true,
                    _ => {}
                }
            }
            Output::Disconnect => {
                d.connected = false;
                d.open_sent = false;
                d.open_accepted = false;
                notification_pending = false;
            }
            Output::Connect => prop_assert!(!passive, "a passive session connected"),
            Output::StartTimer(t, _) => {
                d.armed.insert(*t);
            }
            Output::StopTimer(t) => prop_assert!(d.armed.remove(t), "StopTimer({t:?}) not armed"),
            Output::Established(_) => {
                prop_assert!(
                    before == State::OpenConfirm && after == State::Established && is_keepalive
                );
                prop_assert!(d.open_accepted, "Established without an accepted OPEN");
            }
            Output::Update(_) | Output::RouteRefreshRequested(_) => {
                prop_assert!(before == State::Established && after == State::Established);
            }
            Output::SessionDown { .. } => {
                prop_assert!(before == State::Established && after != State::Established);
            }
            Output::StateChanged { from, to } => {
                prop_assert_eq!((*from, *to), (before, after));
                prop_assert_eq!(i, out.len() - 1, "StateChanged is last");
            }
        }
    }
    prop_assert!(
        !notification_pending,
        "a NOTIFICATION not followed by Disconnect: {out:?}"
    );
    if !d.connected {
        d.open_sent = false;
        d.open_accepted = false;
    }
    if after == State::OpenConfirm && before != State::OpenConfirm {
        prop_assert!(is_open && matches!(before, State::OpenSent | State::Connect | State::Active));
        d.open_accepted = true;
    }
    let count = |f: fn(&Output) -> bool| out.iter().filter(|o| f(o)).count();
    prop_assert_eq!(
        count(|o| matches!(o, Output::StateChanged { .. })),
        usize::from(before != after)
    );
    prop_assert_eq!(
        count(|o| matches!(o, Output::Established(_))),
        usize::from(before != State::Established && after == State::Established)
    );
    prop_assert_eq!(
        count(|o| matches!(o, Output::SessionDown { .. })),
        usize::from(before == State::Established && after != State::Established)
    );

    // The driver's view matches the FSM's.
    prop_assert_eq!(
        d.connected,
        s.is_connected(),
        "connection after {:?} in {:?}",
        ev,
        before
    );
    let fsm_armed: BTreeSet<Timer> = Timer::ALL
        .into_iter()
        .filter(|t| s.timer_running(*t))
        .collect();
    prop_assert_eq!(&d.armed, &fsm_armed);

    // Per-state invariants.
    let armed = |t: Timer| d.armed.contains(&t);
    prop_assert_eq!(
        s.negotiated().is_some(),
        matches!(after, State::OpenConfirm | State::Established)
    );
    match after {
        State::Idle => {
            prop_assert!(!d.connected);
            prop_assert!(
                d.armed.iter().all(|t| *t == Timer::IdleHold),
                "armed in Idle: {:?}",
                d.armed
            );
        }
        State::Connect => {
            prop_assert!(!passive);
            prop_assert_eq!(d.connected, armed(Timer::DelayOpen));
            prop_assert_eq!(!d.connected, armed(Timer::ConnectRetry));
            prop_assert!(
                !armed(Timer::Hold) && !armed(Timer::Keepalive) && !armed(Timer::IdleHold)
            );
        }
        State::Active => {
            prop_assert_eq!(d.connected, armed(Timer::DelayOpen));
            if d.connected {
                prop_assert!(!armed(Timer::ConnectRetry));
            } else {
                prop_assert_eq!(armed(Timer::ConnectRetry), !passive);
            }
            prop_assert!(
                !armed(Timer::Hold) && !armed(Timer::Keepalive) && !armed(Timer::IdleHold)
            );
        }
        State::OpenSent => {
            prop_assert!(d.connected && d.open_sent);
            prop_assert_eq!(&d.armed, &BTreeSet::from([Timer::Hold]));
        }
        State::OpenConfirm | State::Established => {
            prop_assert!(d.connected && d.open_sent && d.open_accepted);
            let hold = s.negotiated().unwrap().hold_time;
            let want: BTreeSet<Timer> = if hold == 0 {
                BTreeSet::new()
            } else {
                [Timer::Hold, Timer::Keepalive].into()
            };
            prop_assert_eq!(&d.armed, &want);
        }
    }
    if was_connected && !d.connected {
        prop_assert!(
            after != State::OpenSent && after != State::OpenConfirm && after != State::Established
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_event_sequences_keep_invariants(c in config(), events in prop::collection::vec(event(), 1..120)) {
        let mut s = Session::new(c);
        let mut d = Driver::default();
        for ev in events {
            check_step(&mut s, &mut d, ev)?;
        }
    }
}

/// The generator does reach every state (so the invariants above are exercised).
#[test]
fn generator_reaches_every_state() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        let c = config().new_tree(&mut runner).unwrap().current();
        let events = prop::collection::vec(event(), 1..120)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut s = Session::new(c);
        for ev in events {
            s.step(ev);
            seen.insert(format!("{:?}", s.state()));
        }
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
}
