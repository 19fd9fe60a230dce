//! Fixtures shared by the FSM tests (`#[path]`-included by `fsm_table`, `fsm_scenarios`,
//! `fsm_proptest` and `fsm_replay`; also built as its own empty test crate).
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::time::Duration;

use tortie_bgpd::fsm::{Event, Output, Session, SessionConfig, Timer, local_open};
use tortie_bgpd::{
    Afi, Capabilities, GracefulRestart, Message, Negotiated, Notification, Open, Update, codes,
};

pub const LOCAL_AS: u32 = 64512;
pub const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// iBGP to AS 64512, hold 90, connect retry 5 s, idle hold 5 s, GR helper with a GR
/// capability in our OPEN.
pub fn cfg() -> SessionConfig {
    let mut c = SessionConfig::new(LOCAL_AS, LOCAL_ID, Some(LOCAL_AS));
    c.graceful_restart = true;
    c.capabilities.graceful_restart = Some(gr(&[Afi::Ipv4]));
    c
}

/// `cfg()` with DelayOpen 2 s.
pub fn delay_cfg() -> SessionConfig {
    SessionConfig {
        delay_open: Some(secs(2)),
        ..cfg()
    }
}

/// `cfg()`, passive.
pub fn passive_cfg() -> SessionConfig {
    SessionConfig {
        passive: true,
        ..cfg()
    }
}

pub fn gr(families: &[Afi]) -> GracefulRestart {
    GracefulRestart {
        restarting: false,
        restart_time: 120,
        families: families.iter().map(|a| (*a, true)).collect(),
    }
}

/// The peer's OPEN: AS 64512 (4-octet capability), hold 90, 10.0.0.2, IPv4 unicast, route
/// refresh, graceful restart for IPv4.
pub fn peer_open() -> Open {
    Open {
        version: 4,
        my_as: 64512,
        hold_time: 90,
        bgp_id: PEER_ID,
        capabilities: Capabilities {
            multiprotocol: [Afi::Ipv4].into(),
            route_refresh: true,
            four_octet_as: Some(64512),
            graceful_restart: Some(gr(&[Afi::Ipv4])),
            ..Capabilities::default()
        },
    }
}

pub fn peer_open_with(f: impl FnOnce(&mut Open)) -> Open {
    let mut o = peer_open();
    f(&mut o);
    o
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn notif(code: u8, subcode: u8) -> Notification {
    Notification::new(code, subcode)
}

pub fn recv(m: Message) -> Event {
    Event::MessageReceived(m)
}

pub fn recv_open(o: Open) -> Event {
    recv(Message::Open(o))
}

pub fn recv_notif(code: u8, subcode: u8) -> Event {
    recv(Message::Notification(notif(code, subcode)))
}

pub fn recv_update() -> Event {
    recv(Message::Update(update()))
}

pub fn update() -> Update {
    Update {
        end_of_rib: Some(Afi::Ipv4),
        ..Update::default()
    }
}

pub fn route_refresh(afi: Afi, subtype: u8) -> Event {
    recv(Message::RouteRefresh { afi, subtype })
}

pub fn msg_err(code: u8, subcode: u8) -> Event {
    Event::MessageError(notif(code, subcode))
}

pub fn expire(t: Timer) -> Event {
    Event::TimerExpired(t)
}

pub fn manual_stop() -> Event {
    Event::ManualStop { notification: None }
}

pub fn automatic_stop() -> Event {
    Event::AutomaticStop {
        notification: notif(codes::CEASE, codes::CEASE_MAX_PREFIXES),
    }
}

// ----- outputs -----

pub fn start(t: Timer, s: u64) -> Output {
    Output::StartTimer(t, secs(s))
}

pub fn stop(t: Timer) -> Output {
    Output::StopTimer(t)
}

pub fn send(m: Message) -> Output {
    Output::Send(m)
}

pub fn send_notif(code: u8, subcode: u8) -> Output {
    send(Message::Notification(notif(code, subcode)))
}

pub fn send_keepalive() -> Output {
    send(Message::Keepalive)
}

/// Our OPEN under `cfg()`.
pub fn send_our_open() -> Output {
    send(Message::Open(local_open(&cfg())))
}

/// What `cfg()` and `peer_open()` negotiate.
pub fn negotiated() -> Negotiated {
    Negotiated::from_opens(&local_open(&cfg()), &peer_open())
}

// ----- sessions in a given state (outputs dropped) -----

pub fn drive(s: &mut Session, events: impl IntoIterator<Item = Event>) -> Vec<Output> {
    events.into_iter().flat_map(|e| s.step(e)).collect()
}

pub fn session(c: SessionConfig, events: impl IntoIterator<Item = Event>) -> Session {
    let mut s = Session::new(c);
    drive(&mut s, events);
    s
}

/// Idle, never started.
pub fn idle() -> Session {
    Session::new(cfg())
}

/// Idle after a failed connection attempt: IdleHold armed (5 s), ConnectRetryCounter 0.
pub fn idle_damped() -> Session {
    session(cfg(), [Event::ManualStart, Event::TcpConnectionFails])
}

/// Connect: outbound attempt in progress, ConnectRetry armed.
pub fn connect() -> Session {
    session(cfg(), [Event::ManualStart])
}

/// Connect with DelayOpen: connection up, DelayOpen armed.
pub fn connect_delay() -> Session {
    session(delay_cfg(), [Event::ManualStart, Event::TcpCrAcked])
}

/// Active after a passive start of an active session: ConnectRetry armed, no connection.
pub fn active() -> Session {
    session(cfg(), [Event::ManualStartPassive])
}

/// Active for a passive session: nothing armed.
pub fn active_passive() -> Session {
    session(passive_cfg(), [Event::ManualStart])
}

/// Active with DelayOpen: inbound connection up, DelayOpen armed.
pub fn active_delay() -> Session {
    session(
        delay_cfg(),
        [Event::ManualStartPassive, Event::TcpConnectionConfirmed],
    )
}

/// OpenSent: connection up, our OPEN sent, Hold armed (240 s).
pub fn open_sent() -> Session {
    session(cfg(), [Event::ManualStart, Event::TcpCrAcked])
}

/// OpenConfirm: OPENs exchanged, Hold (90 s) and Keepalive (30 s) armed.
pub fn open_confirm() -> Session {
    session(
        cfg(),
        [
            Event::ManualStart,
            Event::TcpCrAcked,
            recv_open(peer_open()),
        ],
    )
}

/// Established with the peer of `peer_open()`.
pub fn established() -> Session {
    session(
        cfg(),
        [
            Event::ManualStart,
            Event::TcpCrAcked,
            recv_open(peer_open()),
            recv(Message::Keepalive),
        ],
    )
}

/// Established with `c` and the given peer OPEN.
pub fn established_with(c: SessionConfig, peer: Open) -> Session {
    session(
        c,
        [
            Event::ManualStart,
            Event::TcpCrAcked,
            recv_open(peer),
            recv(Message::Keepalive),
        ],
    )
}
