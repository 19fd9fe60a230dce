//! Scenarios across several events: the happy path, passive peers, DelayOpen, collisions, OPEN
//! checks, graceful restart, administrative shutdown and IdleHold damping.

#[path = "fsm_common.rs"]
mod common;

use std::net::Ipv4Addr;

use common::*;
use tortie_bgpd::fsm::{
    CollisionWinner, DAMPING_FORGET_AFTER, DownReason, Event, IDLE_HOLD_CAP, Output, Session,
    SessionConfig, State, Timer, check_open, local_open, resolve_collision,
    resolve_collision_with_as,
};
use tortie_bgpd::{Afi, Message, Negotiated, Notification, codes};

fn changed(from: State, to: State) -> Output {
    Output::StateChanged { from, to }
}

fn states(s: &mut Session, events: impl IntoIterator<Item = Event>) -> Vec<State> {
    events
        .into_iter()
        .map(|e| {
            s.step(e);
            s.state()
        })
        .collect()
}

// ===== happy path =====

#[test]
fn happy_path_to_established_and_keepalive_exchange() {
    let mut s = Session::new(cfg());
    assert_eq!(s.state(), State::Idle);
    assert_eq!(
        s.step(Event::ManualStart),
        [
            start(Timer::ConnectRetry, 5),
            Output::Connect,
            changed(State::Idle, State::Connect)
        ]
    );
    assert_eq!(
        s.step(Event::TcpCrAcked),
        [
            stop(Timer::ConnectRetry),
            send_our_open(),
            start(Timer::Hold, 240),
            changed(State::Connect, State::OpenSent)
        ]
    );
    assert!(s.negotiated().is_none());
    assert_eq!(
        s.step(recv_open(peer_open())),
        [
            send_keepalive(),
            start(Timer::Keepalive, 30),
            start(Timer::Hold, 90),
            changed(State::OpenSent, State::OpenConfirm)
        ]
    );
    assert_eq!(s.negotiated(), Some(&negotiated()));
    assert_eq!(
        s.step(recv(Message::Keepalive)),
        [
            start(Timer::Hold, 90),
            Output::Established(negotiated()),
            changed(State::OpenConfirm, State::Established)
        ]
    );
    // Keepalive exchange: ours every 30 s, theirs restart the hold timer.
    for _ in 0..3 {
        assert_eq!(
            s.step(Event::TimerExpired(Timer::Keepalive)),
            [send_keepalive(), start(Timer::Keepalive, 30)]
        );
        assert_eq!(s.step(recv(Message::Keepalive)), [start(Timer::Hold, 90)]);
    }
    assert_eq!(
        s.step(recv_update()),
        [start(Timer::Hold, 90), Output::Update(update())]
    );
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.last_error(), None);
    assert_eq!(s.connect_retry_counter(), 0);
    assert!(s.is_connected());
    let n = s.negotiated().unwrap();
    assert_eq!((n.hold_time, n.peer_as, n.peer_id), (90, LOCAL_AS, PEER_ID));
    assert!(n.route_refresh && n.four_octet_as);
}

#[test]
fn hold_time_zero_runs_no_keepalive_or_hold_timer() {
    let mut c = cfg();
    c.hold_time = 0;
    let mut s = Session::new(c);
    let out = drive(
        &mut s,
        [
            Event::ManualStart,
            Event::TcpCrAcked,
            recv_open(peer_open()),
            recv(Message::Keepalive),
        ],
    );
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.negotiated().unwrap().hold_time, 0);
    assert!(!s.timer_running(Timer::Hold) && !s.timer_running(Timer::Keepalive));
    assert!(!out.contains(&start(Timer::Keepalive, 0)));
    assert_eq!(s.step(recv(Message::Keepalive)), []);
    assert_eq!(s.step(recv_update()), [Output::Update(update())]);
    assert_eq!(s.step(Event::TimerExpired(Timer::Keepalive)), []);
}

// ===== passive =====

#[test]
fn passive_session_waits_in_active_and_never_connects() {
    let mut s = Session::new(passive_cfg());
    let mut all = Vec::new();
    all.extend(s.step(Event::ManualStart));
    assert_eq!(s.state(), State::Active);
    assert!(!s.timer_running(Timer::ConnectRetry));
    // A stale ConnectRetry expiry does not make it connect either.
    all.extend(s.step(Event::TimerExpired(Timer::ConnectRetry)));
    all.extend(s.step(Event::TcpConnectionConfirmed));
    assert_eq!(s.state(), State::OpenSent);
    // The connection drops in OpenSent: back to Active, still waiting.
    all.extend(s.step(Event::TcpConnectionFails));
    assert_eq!(s.state(), State::Active);
    all.extend(s.step(Event::TcpConnectionConfirmed));
    all.extend(s.step(recv_open(peer_open())));
    all.extend(s.step(recv(Message::Keepalive)));
    assert_eq!(s.state(), State::Established);
    // Lost, damped restart: into Active again, not Connect.
    all.extend(s.step(Event::TcpConnectionFails));
    all.extend(s.step(Event::TimerExpired(Timer::IdleHold)));
    assert_eq!(s.state(), State::Active);
    assert!(!all.contains(&Output::Connect));
    assert!(!all.contains(&start(Timer::ConnectRetry, 5)));
}

#[test]
fn passive_start_of_an_active_session_connects_after_connect_retry() {
    let mut s = Session::new(cfg());
    assert_eq!(
        s.step(Event::ManualStartPassive),
        [
            start(Timer::ConnectRetry, 5),
            changed(State::Idle, State::Active)
        ]
    );
    assert_eq!(
        s.step(Event::TimerExpired(Timer::ConnectRetry)),
        [
            start(Timer::ConnectRetry, 5),
            Output::Connect,
            changed(State::Active, State::Connect)
        ]
    );
}

#[test]
fn idle_refuses_inbound_connections() {
    let mut s = idle_damped();
    assert_eq!(s.step(Event::TcpConnectionConfirmed), [Output::Disconnect]);
    assert_eq!(s.state(), State::Idle);
    assert!(!s.is_connected());
}

// ===== DelayOpen =====

#[test]
fn delay_open_peer_speaks_first() {
    let mut s = Session::new(delay_cfg());
    s.step(Event::ManualStart);
    assert_eq!(
        s.step(Event::TcpCrAcked),
        [stop(Timer::ConnectRetry), start(Timer::DelayOpen, 2)]
    );
    assert_eq!(s.state(), State::Connect);
    assert_eq!(
        s.step(recv_open(peer_open())),
        [
            stop(Timer::DelayOpen),
            send(Message::Open(local_open(&delay_cfg()))),
            send_keepalive(),
            start(Timer::Keepalive, 30),
            start(Timer::Hold, 90),
            changed(State::Connect, State::OpenConfirm)
        ]
    );
    s.step(recv(Message::Keepalive));
    assert_eq!(s.state(), State::Established);
}

#[test]
fn delay_open_expires_then_ordinary_open_exchange() {
    let mut s = Session::new(delay_cfg());
    let st = states(
        &mut s,
        [
            Event::ManualStart,
            Event::TcpCrAcked,
            Event::TimerExpired(Timer::DelayOpen),
            recv_open(peer_open()),
            recv(Message::Keepalive),
        ],
    );
    assert_eq!(
        st,
        [
            State::Connect,
            State::Connect,
            State::OpenSent,
            State::OpenConfirm,
            State::Established
        ]
    );
}

// ===== collisions (RFC 4271 §6.8, RFC 6286) =====

#[test]
fn collision_higher_identifier_keeps_its_own_connection() {
    let low = Ipv4Addr::new(10, 0, 0, 1);
    let high = Ipv4Addr::new(10, 0, 0, 2);
    assert_eq!(
        resolve_collision(low, high),
        CollisionWinner::RemotelyInitiated
    );
    assert_eq!(
        resolve_collision(high, low),
        CollisionWinner::LocallyInitiated
    );
    // Compared as unsigned integers, not as strings: 9.x < 10.x < 192.x.
    assert_eq!(
        resolve_collision(Ipv4Addr::new(9, 255, 255, 255), Ipv4Addr::new(10, 0, 0, 0)),
        CollisionWinner::RemotelyInitiated
    );
    assert_eq!(
        resolve_collision(Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(10, 0, 0, 0)),
        CollisionWinner::LocallyInitiated
    );
    // The two ends agree: each keeps the same TCP connection.
    let (a, b) = (Ipv4Addr::new(172, 16, 0, 5), Ipv4Addr::new(172, 16, 0, 7));
    let at_a = resolve_collision(a, b);
    let at_b = resolve_collision(b, a);
    assert_ne!(
        at_a, at_b,
        "one end's local connection is the other's remote one"
    );
    // Equal identifiers (eBGP only): the larger AS's connection survives (RFC 6286 §2.3).
    assert_eq!(
        resolve_collision_with_as(a, 65001, a, 65002),
        CollisionWinner::RemotelyInitiated
    );
    assert_eq!(
        resolve_collision_with_as(a, 65002, a, 65001),
        CollisionWinner::LocallyInitiated
    );
    assert_eq!(
        resolve_collision_with_as(a, 1, b, 2),
        resolve_collision(a, b)
    );
}

#[test]
fn collision_two_sessions_loser_sends_cease_7() {
    // We are 10.0.0.1, the peer 10.0.0.2: the peer's connection (inbound) must win.
    let mut outbound = session(cfg(), [Event::ManualStart, Event::TcpCrAcked]);
    let mut inbound = session(
        SessionConfig {
            passive: true,
            ..cfg()
        },
        [Event::AutomaticStartPassive, Event::TcpConnectionConfirmed],
    );
    assert_eq!(
        (outbound.state(), inbound.state()),
        (State::OpenSent, State::OpenSent)
    );
    // The peer's OPEN arrives on both; the driver resolves with the identifier it carries.
    outbound.step(recv_open(peer_open()));
    inbound.step(recv_open(peer_open()));
    let winner = resolve_collision(LOCAL_ID, peer_open().bgp_id);
    assert_eq!(winner, CollisionWinner::RemotelyInitiated);
    let (loser, survivor) = match winner {
        CollisionWinner::LocallyInitiated => (&mut inbound, &mut outbound),
        CollisionWinner::RemotelyInitiated => (&mut outbound, &mut inbound),
    };
    let out = loser.step(Event::OpenCollisionDump);
    assert_eq!(out[0], send_notif(codes::CEASE, codes::CEASE_COLLISION));
    assert!(out.contains(&Output::Disconnect));
    assert_eq!(loser.state(), State::Idle);
    survivor.step(recv(Message::Keepalive));
    assert_eq!(survivor.state(), State::Established);
}

// ===== OPEN checks (RFC 4271 §6.2, RFC 6286, RFC 7607) =====

fn rejects(c: &SessionConfig, open: tortie_bgpd::Open) -> (u8, u8, Vec<u8>) {
    let n = check_open(c, &open).expect_err("must be rejected");
    // And the session sends exactly that, then goes Idle.
    let mut s = session(c.clone(), [Event::ManualStart, Event::TcpCrAcked]);
    let out = s.step(recv_open(open));
    assert_eq!(out[0], send(Message::Notification(n.clone())));
    assert_eq!(s.state(), State::Idle);
    assert_eq!(
        s.last_error(),
        Some(&DownReason::NotificationSent(n.clone()))
    );
    (n.code, n.subcode, n.data)
}

#[test]
fn open_validation_failures_with_exact_codes() {
    let c = cfg();
    // Unsupported version: data is the version we do support, 2 octets.
    assert_eq!(
        rejects(&c, peer_open_with(|o| o.version = 3)),
        (2, 1, vec![0, 4])
    );
    // Peer AS different from the configured one (4-octet capability wins over my_as).
    assert_eq!(
        rejects(
            &c,
            peer_open_with(|o| o.capabilities.four_octet_as = Some(64513))
        ),
        (2, 2, vec![])
    );
    assert_eq!(
        rejects(
            &c,
            peer_open_with(|o| {
                o.capabilities.four_octet_as = None;
                o.my_as = 64999;
            })
        ),
        (2, 2, vec![])
    );
    // AS 0 (RFC 7607), even for a dynamic peer.
    let dynamic = SessionConfig {
        peer_as: None,
        ..cfg()
    };
    assert_eq!(
        rejects(
            &dynamic,
            peer_open_with(|o| {
                o.capabilities.four_octet_as = None;
                o.my_as = 0;
            })
        ),
        (2, 2, vec![])
    );
    // BGP identifier 0, or ours on an iBGP session.
    assert_eq!(
        rejects(&c, peer_open_with(|o| o.bgp_id = Ipv4Addr::UNSPECIFIED)),
        (2, 3, vec![])
    );
    assert_eq!(
        rejects(&c, peer_open_with(|o| o.bgp_id = LOCAL_ID)),
        (2, 3, vec![])
    );
    // Hold time 1 or 2, or below our minimum.
    assert_eq!(
        rejects(&c, peer_open_with(|o| o.hold_time = 1)),
        (2, 6, vec![])
    );
    assert_eq!(
        rejects(&c, peer_open_with(|o| o.hold_time = 2)),
        (2, 6, vec![])
    );
    let strict = SessionConfig {
        min_hold_time: 10,
        ..cfg()
    };
    assert_eq!(
        rejects(&strict, peer_open_with(|o| o.hold_time = 9)),
        (2, 6, vec![])
    );
    // The RFC order: version before AS before hold time before identifier.
    assert_eq!(
        rejects(
            &c,
            peer_open_with(|o| {
                o.version = 5;
                o.hold_time = 1;
            })
        ),
        (2, 1, vec![0, 4])
    );
    assert_eq!(
        rejects(
            &c,
            peer_open_with(|o| {
                o.hold_time = 1;
                o.bgp_id = LOCAL_ID;
            })
        ),
        (2, 6, vec![])
    );
}

#[test]
fn open_validation_accepts() {
    let c = cfg();
    assert_eq!(check_open(&c, &peer_open()), Ok(()));
    // Hold 0 (no keepalives) and exactly the minimum.
    assert_eq!(check_open(&c, &peer_open_with(|o| o.hold_time = 0)), Ok(()));
    assert_eq!(check_open(&c, &peer_open_with(|o| o.hold_time = 3)), Ok(()));
    let strict = SessionConfig {
        min_hold_time: 10,
        ..cfg()
    };
    assert_eq!(
        check_open(&strict, &peer_open_with(|o| o.hold_time = 10)),
        Ok(())
    );
    assert_eq!(
        check_open(&strict, &peer_open_with(|o| o.hold_time = 0)),
        Ok(())
    );
    // Any AS for a dynamic peer.
    let dynamic = SessionConfig {
        peer_as: None,
        ..cfg()
    };
    assert_eq!(
        check_open(
            &dynamic,
            &peer_open_with(|o| o.capabilities.four_octet_as = Some(4_200_000_001))
        ),
        Ok(())
    );
    // A 4-octet AS via AS_TRANS and the capability.
    let ebgp = SessionConfig {
        peer_as: Some(4_200_000_001),
        ..cfg()
    };
    let four = peer_open_with(|o| {
        o.my_as = 23456;
        o.capabilities.four_octet_as = Some(4_200_000_001);
    });
    assert_eq!(check_open(&ebgp, &four), Ok(()));
    // Our identifier on an eBGP session is legal (RFC 6286).
    assert_eq!(
        check_open(
            &ebgp,
            &peer_open_with(|o| {
                o.capabilities.four_octet_as = Some(4_200_000_001);
                o.bgp_id = LOCAL_ID;
            })
        ),
        Ok(())
    );
}

#[test]
fn negotiated_hold_time_is_the_smaller_and_keepalive_a_third() {
    let mut c = cfg();
    c.hold_time = 9;
    let mut s = session(c, [Event::ManualStart, Event::TcpCrAcked]);
    let out = s.step(recv_open(peer_open()));
    assert!(out.contains(&start(Timer::Hold, 9)));
    assert!(out.contains(&start(Timer::Keepalive, 3)));
    assert_eq!(s.negotiated().unwrap().hold_time, 9);
}

// ===== graceful restart (RFC 4724) =====

fn session_down(out: &[Output]) -> Option<(DownReason, bool)> {
    out.iter().find_map(|o| match o {
        Output::SessionDown { reason, graceful } => Some((reason.clone(), *graceful)),
        _ => None,
    })
}

#[test]
fn hold_expiry_in_established_with_gr_peer_is_not_graceful() {
    // RFC 8538 §1: RFC 4724 does not apply once a NOTIFICATION (here our 4/0) is exchanged.
    let mut s = established();
    let out = s.step(Event::TimerExpired(Timer::Hold));
    assert_eq!(out[0], send_notif(codes::HOLD_TIMER_EXPIRED, 0));
    assert_eq!(
        session_down(&out),
        Some((DownReason::HoldTimerExpired, false))
    );
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.last_error(), Some(&DownReason::HoldTimerExpired));
}

#[test]
fn graceful_only_for_gr_peers_and_losses_without_notification() {
    let lost = |mut s: Session, ev: Event| session_down(&s.step(ev)).unwrap().1;
    // GR peer: TCP loss, hold expiry, BFD down are graceful ...
    assert!(lost(established(), Event::TcpConnectionFails));
    assert!(lost(established(), Event::LivenessDown));
    // ... NOTIFICATIONs either way are not.
    assert!(!lost(established(), recv_notif(6, 2)));
    assert!(!lost(established(), msg_err(3, 1)));
    assert!(!lost(established(), manual_stop()));
    assert!(!lost(established(), automatic_stop()));
    // Peer without GR, GR without families (helper only), or GR off here: never graceful.
    let no_gr = peer_open_with(|o| o.capabilities.graceful_restart = None);
    assert!(!lost(
        established_with(cfg(), no_gr),
        Event::TcpConnectionFails
    ));
    let helper_only = peer_open_with(|o| o.capabilities.graceful_restart = Some(gr(&[])));
    assert!(!lost(
        established_with(cfg(), helper_only),
        Event::TimerExpired(Timer::Hold)
    ));
    let off = SessionConfig {
        graceful_restart: false,
        ..cfg()
    };
    assert!(!lost(
        established_with(off, peer_open()),
        Event::TcpConnectionFails
    ));
}

#[test]
fn new_connection_supersedes_established_gr_session() {
    let s = established();
    assert!(s.new_connection_supersedes());
    let no_gr = established_with(
        cfg(),
        peer_open_with(|o| o.capabilities.graceful_restart = None),
    );
    assert!(!no_gr.new_connection_supersedes());
    assert!(!open_confirm().new_connection_supersedes());
    // The negotiated GR capability reaches the driver with Established.
    let mut s = open_confirm();
    let out = s.step(recv(Message::Keepalive));
    let Some(Output::Established(Negotiated {
        peer_graceful_restart: Some(g),
        ..
    })) = out.get(1)
    else {
        panic!("no Established: {out:?}")
    };
    assert_eq!(g.restart_time, 120);
    assert!(g.families.contains_key(&Afi::Ipv4));
}

// ===== administrative shutdown (RFC 4486, RFC 8203) =====

#[test]
fn admin_shutdown_with_rfc8203_text() {
    let text = "maintenance window, back at 10:00 UTC — ticket #4711";
    let cease = Notification::admin_shutdown(text);
    let mut s = established();
    let out = s.step(Event::ManualStop {
        notification: Some(cease.clone()),
    });
    assert_eq!(
        out,
        [
            send(Message::Notification(cease.clone())),
            Output::Disconnect,
            stop(Timer::Hold),
            stop(Timer::Keepalive),
            Output::SessionDown {
                reason: DownReason::Stopped,
                graceful: false
            },
            changed(State::Established, State::Idle),
        ]
    );
    let Output::Send(Message::Notification(n)) = &out[0] else {
        unreachable!()
    };
    assert_eq!(
        (n.code, n.subcode),
        (codes::CEASE, codes::CEASE_ADMIN_SHUTDOWN)
    );
    assert_eq!(n.shutdown_communication().as_deref(), Some(text));
    // A stop is final: no IdleHold, no automatic restart, counter cleared.
    assert!(!s.timer_running(Timer::IdleHold));
    assert_eq!(s.step(Event::TimerExpired(Timer::IdleHold)), []);
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.connect_retry_counter(), 0);
}

#[test]
fn manual_stop_without_notification_sends_plain_admin_shutdown() {
    let mut s = established();
    let out = s.step(manual_stop());
    assert_eq!(
        out[0],
        send_notif(codes::CEASE, codes::CEASE_ADMIN_SHUTDOWN)
    );
}

#[test]
fn peer_admin_shutdown_is_recorded_with_its_text() {
    let mut s = established();
    let cease = Notification::admin_shutdown("node drained");
    let out = s.step(recv(Message::Notification(cease.clone())));
    assert_eq!(
        session_down(&out),
        Some((DownReason::NotificationReceived(cease.clone()), false))
    );
    assert!(
        !out.iter().any(|o| matches!(o, Output::Send(_))),
        "a NOTIFICATION is never answered"
    );
    let reason = s.last_error().unwrap();
    assert_eq!(
        reason.to_string(),
        "received NOTIFICATION: cease: administrative shutdown (6/2): \"node drained\""
    );
}

// ===== IdleHold damping =====

fn idle_hold_of(out: &[Output]) -> Option<u64> {
    out.iter().find_map(|o| match o {
        Output::StartTimer(Timer::IdleHold, d) => Some(d.as_secs()),
        _ => None,
    })
}

/// One failed round: the damped restart (IdleHold expiry), the connection, an error.
fn fail_once(s: &mut Session) -> Option<u64> {
    s.step(Event::TimerExpired(Timer::IdleHold));
    s.step(Event::TcpCrAcked);
    idle_hold_of(&s.step(recv(Message::Keepalive))) // FSM error 5/1 in OpenSent
}

#[test]
fn idle_hold_damping_doubles_up_to_the_cap() {
    assert_eq!(IDLE_HOLD_CAP.as_secs(), 30);
    let mut s = Session::new(cfg());
    s.step(Event::ManualStart);
    s.step(Event::TcpCrAcked);
    let first = s.step(Event::TimerExpired(Timer::Hold));
    assert_eq!(idle_hold_of(&first), Some(5));
    assert_eq!(s.connect_retry_counter(), 1);
    let delays: Vec<_> = (0..5).map(|_| fail_once(&mut s).unwrap()).collect();
    assert_eq!(delays, [10, 20, 30, 30, 30]);
    assert_eq!(s.connect_retry_counter(), 6);
    // An automatic start while IdleHold runs waits for it (events 6/7).
    assert_eq!(s.step(Event::AutomaticStart), []);
    assert_eq!(s.state(), State::Idle);
    // An operator start overrides and forgets the history.
    assert_eq!(
        s.step(Event::ManualStart),
        [
            stop(Timer::IdleHold),
            start(Timer::ConnectRetry, 5),
            Output::Connect,
            changed(State::Idle, State::Connect)
        ]
    );
    assert_eq!(s.connect_retry_counter(), 0);
    s.step(Event::TcpCrAcked);
    assert_eq!(idle_hold_of(&s.step(recv_update())), Some(5));
}

#[test]
fn damping_history_is_forgotten_after_a_stable_period() {
    let mut s = Session::new(cfg());
    s.step(Event::ManualStart);
    s.step(Event::TcpCrAcked);
    s.step(Event::TimerExpired(Timer::Hold)); // 5
    fail_once(&mut s); // 10
    fail_once(&mut s); // 20
    // Up for a while, then lost: the delay continues doubling ...
    s.step(Event::TimerExpired(Timer::IdleHold));
    drive(
        &mut s,
        [
            Event::TcpCrAcked,
            recv_open(peer_open()),
            recv(Message::Keepalive),
        ],
    );
    for _ in 0..3 {
        s.step(Event::TimerExpired(Timer::Keepalive));
    }
    assert_eq!(idle_hold_of(&s.step(Event::TcpConnectionFails)), Some(30));
    // ... but after DAMPING_FORGET_AFTER of keepalive periods in Established it starts over.
    s.step(Event::TimerExpired(Timer::IdleHold));
    drive(
        &mut s,
        [
            Event::TcpCrAcked,
            recv_open(peer_open()),
            recv(Message::Keepalive),
        ],
    );
    let ticks = DAMPING_FORGET_AFTER.as_secs() / 30;
    for _ in 0..ticks {
        s.step(Event::TimerExpired(Timer::Keepalive));
    }
    assert_eq!(s.connect_retry_counter(), 0);
    assert_eq!(idle_hold_of(&s.step(Event::TcpConnectionFails)), Some(5));
    assert_eq!(s.connect_retry_counter(), 1);
}

#[test]
fn refused_connections_retry_at_a_steady_delay() {
    // An unreachable peer is no oscillation: the RFC does not count a failed outbound
    // connection, so the retry delay does not grow (as BIRD's fixed `connect retry time`).
    let mut s = connect();
    let delays: Vec<_> = (0..4)
        .map(|_| {
            let d = idle_hold_of(&s.step(Event::TcpConnectionFails));
            s.step(Event::TimerExpired(Timer::IdleHold));
            d.unwrap()
        })
        .collect();
    assert_eq!(delays, [5, 5, 5, 5]);
    assert_eq!((s.state(), s.connect_retry_counter()), (State::Connect, 0));
    // After counted failures it keeps the current (grown) delay, without growing it further.
    s.step(Event::TcpCrAcked);
    s.step(Event::TimerExpired(Timer::Hold)); // counted: 5 s
    s.step(Event::TimerExpired(Timer::IdleHold));
    s.step(Event::TcpCrAcked);
    s.step(Event::TimerExpired(Timer::Hold)); // counted: 10 s
    s.step(Event::TimerExpired(Timer::IdleHold));
    assert_eq!(s.idle_hold_delay(), secs(10));
    assert_eq!(idle_hold_of(&s.step(Event::TcpConnectionFails)), Some(10));
    assert_eq!(s.idle_hold_delay(), secs(10));
}

#[test]
fn a_larger_configured_idle_hold_is_not_capped() {
    let c = SessionConfig {
        idle_hold: secs(60),
        ..cfg()
    };
    let mut s = session(c, [Event::ManualStart, Event::TcpCrAcked]);
    assert_eq!(
        idle_hold_of(&s.step(Event::TimerExpired(Timer::Hold))),
        Some(60)
    );
    assert_eq!(fail_once(&mut s), Some(60));
}

#[test]
fn manual_stop_during_idle_hold_cancels_the_restart() {
    let mut s = idle_damped();
    assert!(s.timer_running(Timer::IdleHold));
    assert_eq!(s.step(manual_stop()), [stop(Timer::IdleHold)]);
    assert_eq!(s.step(Event::TimerExpired(Timer::IdleHold)), []);
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn version_error_notification_is_not_counted() {
    let mut s = open_sent();
    s.step(recv_notif(codes::OPEN, codes::OPEN_UNSUPPORTED_VERSION));
    assert_eq!((s.state(), s.connect_retry_counter()), (State::Idle, 0));
    let mut s = open_sent();
    s.step(recv_notif(codes::CEASE, codes::CEASE_CONNECTION_REJECTED));
    assert_eq!((s.state(), s.connect_retry_counter()), (State::Idle, 1));
}

// ===== robustness =====

#[test]
fn stale_timer_expiries_are_ignored() {
    let mut s = established();
    s.step(manual_stop());
    for t in Timer::ALL {
        assert_eq!(s.step(Event::TimerExpired(t)), [], "{t:?}");
    }
    // A hold expiry that raced with a KEEPALIVE: the timer was rearmed, so it is not stale
    // as far as the FSM knows; the driver replaces the deadline on StartTimer.
    let mut s = established();
    s.step(recv(Message::Keepalive));
    assert!(s.timer_running(Timer::Hold));
}

#[test]
fn messages_without_a_connection_are_ignored() {
    let mut s = connect();
    for ev in [
        recv_open(peer_open()),
        recv(Message::Keepalive),
        recv_update(),
        recv_notif(6, 2),
        msg_err(1, 1),
    ] {
        assert_eq!(s.step(ev), []);
        assert_eq!(s.state(), State::Connect);
    }
}

#[test]
fn display_of_states_and_reasons() {
    assert_eq!(State::OpenConfirm.to_string(), "OpenConfirm");
    assert_eq!(
        DownReason::HoldTimerExpired.to_string(),
        "hold timer expired"
    );
    assert_eq!(
        DownReason::NotificationSent(notif(5, 3)).to_string(),
        "sent NOTIFICATION: finite state machine error (5/3)"
    );
    assert_eq!(
        DownReason::LivenessDown.to_string(),
        "liveness detection (BFD) down"
    );
}
