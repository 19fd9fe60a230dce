//! One test per (state, event) pair of RFC 4271 §8.2.2, named `<state>_eNN_<event>` after the
//! RFC's event numbers (plus the variants that depend on DelayOpen, passive mode or a pending
//! IdleHold, and the non-RFC events: ROUTE-REFRESH, liveness, treat-as-withdraw). Each asserts
//! the resulting state and the exact outputs; `StateChanged` is appended by the macro when the
//! state changes.
//!
//! Events 14/15 (TcpConnection_Valid, Tcp_CR_Invalid) are resolved by the driver and have no
//! FSM event. Timer expiries for timers that are not armed in a state (e.g. Hold in Connect)
//! are stale by construction and ignored: those rows check exactly that.

#[path = "fsm_common.rs"]
mod common;

use common::*;
use tortie_bgpd::fsm::{DownReason, Event, Output, Session, State, Timer};
use tortie_bgpd::{Afi, Message, Notification, codes};

use Timer::{ConnectRetry as CR, DelayOpen as DO, Hold, IdleHold as IH, Keepalive as KA};

macro_rules! pair {
    ($name:ident: $setup:expr, $event:expr => $to:ident, [$($out:expr),* $(,)?] $(, |$s:ident| $check:expr)?) => {
        #[test]
        fn $name() {
            let mut session: Session = $setup;
            let from = session.state();
            let got = session.step($event);
            #[allow(unused_mut)]
            let mut want: Vec<Output> = vec![$($out),*];
            if from != State::$to {
                want.push(Output::StateChanged { from, to: State::$to });
            }
            assert_eq!(got, want, "outputs from {from:?}");
            assert_eq!(session.state(), State::$to, "state");
            $( let $s = &session; $check; )?
        }
    };
}

fn counter(s: &Session) -> u32 {
    s.connect_retry_counter()
}

fn down(reason: DownReason, graceful: bool) -> Output {
    Output::SessionDown { reason, graceful }
}

fn sent(code: u8, subcode: u8) -> DownReason {
    DownReason::NotificationSent(notif(code, subcode))
}

fn received(code: u8, subcode: u8) -> DownReason {
    DownReason::NotificationReceived(notif(code, subcode))
}

// ===== Idle =====

pair!(idle_e01_manual_start: idle(), Event::ManualStart => Connect, [start(CR, 5), Output::Connect]);
pair!(idle_e01_manual_start_overrides_damping: idle_damped(), Event::ManualStart => Connect,
      [stop(IH), start(CR, 5), Output::Connect]);
pair!(idle_e01_manual_start_passive_config: Session::new(passive_cfg()), Event::ManualStart => Active, []);
pair!(idle_e02_manual_stop: idle(), manual_stop() => Idle, []);
pair!(idle_e02_manual_stop_cancels_restart: idle_damped(), manual_stop() => Idle, [stop(IH)],
      |s| assert!(!s.timer_running(IH)));
pair!(idle_e03_automatic_start: idle(), Event::AutomaticStart => Connect, [start(CR, 5), Output::Connect]);
pair!(idle_e04_manual_start_passive: idle(), Event::ManualStartPassive => Active, [start(CR, 5)]);
pair!(idle_e05_automatic_start_passive: idle(), Event::AutomaticStartPassive => Active, [start(CR, 5)]);
pair!(idle_e06_automatic_start_damped: idle_damped(), Event::AutomaticStart => Idle, [],
      |s| assert!(s.timer_running(IH)));
pair!(idle_e07_automatic_start_passive_damped: idle_damped(), Event::AutomaticStartPassive => Idle, []);
pair!(idle_e08_automatic_stop: idle(), automatic_stop() => Idle, []);
pair!(idle_e09_connect_retry_expires: idle(), expire(CR) => Idle, []);
pair!(idle_e10_hold_expires: idle(), expire(Hold) => Idle, []);
pair!(idle_e11_keepalive_expires: idle(), expire(KA) => Idle, []);
pair!(idle_e12_delay_open_expires: idle(), expire(DO) => Idle, []);
pair!(idle_e13_idle_hold_expires: idle_damped(), expire(IH) => Connect, [start(CR, 5), Output::Connect]);
pair!(idle_e13_idle_hold_expires_after_passive_start:
      session(cfg(), [Event::AutomaticStartPassive, Event::TcpConnectionFails]), expire(IH) => Active, [start(CR, 5)]);
pair!(idle_e13_idle_hold_expires_after_damped_start_passive:
      session(cfg(), [Event::ManualStart, Event::TcpConnectionFails, Event::AutomaticStartPassive]),
      expire(IH) => Active, [start(CR, 5)]);
pair!(idle_e13_idle_hold_stale: idle(), expire(IH) => Idle, []);
pair!(idle_e16_tcp_cr_acked_refused: idle(), Event::TcpCrAcked => Idle, [Output::Disconnect]);
pair!(idle_e17_tcp_connection_confirmed_refused: idle(), Event::TcpConnectionConfirmed => Idle, [Output::Disconnect]);
pair!(idle_e18_tcp_connection_fails: idle(), Event::TcpConnectionFails => Idle, []);
pair!(idle_e19_open: idle(), recv_open(peer_open()) => Idle, []);
pair!(idle_e21_header_err: idle(), msg_err(1, 1) => Idle, []);
pair!(idle_e22_open_msg_err: idle(), msg_err(2, 4) => Idle, []);
pair!(idle_e23_open_collision_dump: idle(), Event::OpenCollisionDump => Idle, []);
pair!(idle_e24_notif_ver_err: idle(), recv_notif(2, 1) => Idle, []);
pair!(idle_e25_notif: idle(), recv_notif(6, 2) => Idle, []);
pair!(idle_e26_keepalive: idle(), recv(Message::Keepalive) => Idle, []);
pair!(idle_e27_update: idle(), recv_update() => Idle, []);
pair!(idle_e28_update_msg_err: idle(), msg_err(3, 1) => Idle, []);
pair!(idle_route_refresh: idle(), route_refresh(Afi::Ipv4, 0) => Idle, []);
pair!(idle_liveness_down: idle(), Event::LivenessDown => Idle, []);
pair!(idle_treat_as_withdraw: idle(), Event::UpdateTreatAsWithdraw => Idle, []);

// ===== Connect =====

pair!(connect_e01_manual_start: connect(), Event::ManualStart => Connect, []);
pair!(connect_e02_manual_stop: connect(), manual_stop() => Idle, [Output::Disconnect, stop(CR)],
      |s| assert_eq!((s.last_error(), counter(s), s.timer_running(IH)), (Some(&DownReason::Stopped), 0, false)));
pair!(connect_e02_manual_stop_delay_open: connect_delay(),
      Event::ManualStop { notification: Some(Notification::admin_shutdown("bye")) } => Idle,
      [send(Message::Notification(Notification::admin_shutdown("bye"))), Output::Disconnect, stop(DO)]);
pair!(connect_e03_automatic_start: connect(), Event::AutomaticStart => Connect, []);
pair!(connect_e04_manual_start_passive: connect(), Event::ManualStartPassive => Connect, []);
pair!(connect_e05_automatic_start_passive: connect(), Event::AutomaticStartPassive => Connect, []);
pair!(connect_e08_automatic_stop: connect(), automatic_stop() => Idle, [Output::Disconnect, stop(CR), start(IH, 5)],
      |s| assert_eq!((s.last_error(), counter(s)), (Some(&DownReason::Stopped), 1)));
pair!(connect_e09_connect_retry_expires: connect(), expire(CR) => Connect,
      [Output::Disconnect, start(CR, 5), Output::Connect]);
pair!(connect_e10_hold_expires: connect(), expire(Hold) => Connect, []);
pair!(connect_e11_keepalive_expires: connect(), expire(KA) => Connect, []);
pair!(connect_e12_delay_open_expires: connect_delay(), expire(DO) => OpenSent, [send_our_open(), start(Hold, 240)]);
pair!(connect_e12_delay_open_not_armed: connect(), expire(DO) => Connect, []);
pair!(connect_e13_idle_hold_expires: connect(), expire(IH) => Connect, []);
pair!(connect_e16_tcp_cr_acked: connect(), Event::TcpCrAcked => OpenSent,
      [stop(CR), send_our_open(), start(Hold, 240)], |s| assert!(s.is_connected()));
pair!(connect_e16_tcp_cr_acked_delay_open: session(delay_cfg(), [Event::ManualStart]), Event::TcpCrAcked => Connect,
      [stop(CR), start(DO, 2)]);
pair!(connect_e16_second_connection: connect_delay(), Event::TcpCrAcked => Connect, []);
pair!(connect_e17_tcp_connection_confirmed: connect(), Event::TcpConnectionConfirmed => OpenSent,
      [stop(CR), send_our_open(), start(Hold, 240)]);
pair!(connect_e17_tcp_connection_confirmed_delay_open: session(delay_cfg(), [Event::ManualStart]),
      Event::TcpConnectionConfirmed => Connect, [stop(CR), start(DO, 2)]);
pair!(connect_e18_tcp_connection_fails: connect(), Event::TcpConnectionFails => Idle,
      [Output::Disconnect, stop(CR), start(IH, 5)],
      |s| assert_eq!((s.last_error(), counter(s)), (Some(&DownReason::TcpFailed), 0)));
pair!(connect_e18_tcp_connection_fails_delay_open: connect_delay(), Event::TcpConnectionFails => Active,
      [Output::Disconnect, stop(DO), start(CR, 5)]);
pair!(connect_e19_open_without_connection: connect(), recv_open(peer_open()) => Connect, []);
pair!(connect_e20_open_delay_open: connect_delay(), recv_open(peer_open()) => OpenConfirm,
      [stop(DO), send_our_open(), send_keepalive(), start(KA, 30), start(Hold, 90)],
      |s| assert_eq!(s.negotiated(), Some(&negotiated())));
pair!(connect_e20_bad_open_delay_open: connect_delay(), recv_open(peer_open_with(|o| o.capabilities.four_octet_as = Some(65000))) => Idle,
      [send_notif(2, 2), Output::Disconnect, stop(DO), start(IH, 5)]);
pair!(connect_e21_header_err: connect_delay(), msg_err(1, 2) => Idle,
      [send_notif(1, 2), Output::Disconnect, stop(DO), start(IH, 5)], |s| assert_eq!(counter(s), 1));
pair!(connect_e21_header_err_without_connection: connect(), msg_err(1, 2) => Connect, []);
pair!(connect_e22_open_msg_err: connect_delay(), msg_err(2, 4) => Idle,
      [send_notif(2, 4), Output::Disconnect, stop(DO), start(IH, 5)]);
pair!(connect_e23_open_collision_dump: connect(), Event::OpenCollisionDump => Idle,
      [Output::Disconnect, stop(CR), start(IH, 5)]);
pair!(connect_e23_open_collision_dump_delay_open: connect_delay(), Event::OpenCollisionDump => Idle,
      [send_notif(6, 7), Output::Disconnect, stop(DO), start(IH, 5)]);
pair!(connect_e24_notif_ver_err: connect_delay(), recv_notif(2, 1) => Idle,
      [Output::Disconnect, stop(DO), start(IH, 5)],
      |s| assert_eq!((s.last_error(), counter(s)), (Some(&received(2, 1)), 0)));
pair!(connect_e25_notif: connect_delay(), recv_notif(6, 4) => Idle,
      [Output::Disconnect, stop(DO), start(IH, 5)], |s| assert_eq!(counter(s), 1));
pair!(connect_e26_keepalive: connect_delay(), recv(Message::Keepalive) => Idle,
      [send_notif(5, 0), Output::Disconnect, stop(DO), start(IH, 5)], |s| assert_eq!(counter(s), 1));
pair!(connect_e27_update: connect_delay(), recv_update() => Idle,
      [send_notif(5, 0), Output::Disconnect, stop(DO), start(IH, 5)]);
pair!(connect_e28_update_msg_err: connect_delay(), msg_err(3, 1) => Idle,
      [send_notif(5, 0), Output::Disconnect, stop(DO), start(IH, 5)]);
pair!(connect_route_refresh: connect_delay(), route_refresh(Afi::Ipv4, 0) => Idle,
      [send_notif(5, 0), Output::Disconnect, stop(DO), start(IH, 5)]);
pair!(connect_liveness_down_without_connection: connect(), Event::LivenessDown => Connect, []);
pair!(connect_liveness_down_delay_open: connect_delay(), Event::LivenessDown => Active,
      [Output::Disconnect, stop(DO), start(CR, 5)], |s| assert_eq!(s.last_error(), Some(&DownReason::LivenessDown)));
pair!(connect_treat_as_withdraw: connect(), Event::UpdateTreatAsWithdraw => Connect, []);

// ===== Active =====

pair!(active_e01_manual_start: active(), Event::ManualStart => Active, []);
pair!(active_e02_manual_stop: active(), manual_stop() => Idle, [stop(CR)], |s| assert_eq!(counter(s), 0));
pair!(active_e02_manual_stop_delay_open: active_delay(), manual_stop() => Idle,
      [send_notif(6, 2), Output::Disconnect, stop(DO)]);
pair!(active_e03_automatic_start: active(), Event::AutomaticStart => Active, []);
pair!(active_e04_manual_start_passive: active(), Event::ManualStartPassive => Active, []);
pair!(active_e05_automatic_start_passive: active(), Event::AutomaticStartPassive => Active, []);
pair!(active_e08_automatic_stop: active(), automatic_stop() => Idle, [stop(CR), start(IH, 5)],
      |s| assert_eq!(counter(s), 1));
pair!(active_e09_connect_retry_expires: active(), expire(CR) => Connect, [start(CR, 5), Output::Connect]);
pair!(active_e09_passive_never_connects: active_passive(), expire(CR) => Active, [],
      |s| assert!(!s.timer_running(CR)));
pair!(active_e10_hold_expires: active(), expire(Hold) => Active, []);
pair!(active_e11_keepalive_expires: active(), expire(KA) => Active, []);
pair!(active_e12_delay_open_expires: active_delay(), expire(DO) => OpenSent, [send_our_open(), start(Hold, 240)]);
pair!(active_e13_idle_hold_expires: active(), expire(IH) => Active, []);
pair!(active_e16_tcp_cr_acked: active(), Event::TcpCrAcked => OpenSent, [stop(CR), send_our_open(), start(Hold, 240)]);
pair!(active_e17_tcp_connection_confirmed: active(), Event::TcpConnectionConfirmed => OpenSent,
      [stop(CR), send_our_open(), start(Hold, 240)]);
pair!(active_e17_tcp_connection_confirmed_passive: active_passive(), Event::TcpConnectionConfirmed => OpenSent,
      [send(Message::Open(tortie_bgpd::fsm::local_open(&passive_cfg()))), start(Hold, 240)]);
pair!(active_e17_tcp_connection_confirmed_delay_open: session(delay_cfg(), [Event::ManualStartPassive]),
      Event::TcpConnectionConfirmed => Active, [stop(CR), start(DO, 2)]);
pair!(active_e17_second_connection: active_delay(), Event::TcpConnectionConfirmed => Active, []);
pair!(active_e18_tcp_connection_fails: active(), Event::TcpConnectionFails => Idle, [stop(CR), start(IH, 5)],
      |s| assert_eq!((s.last_error(), counter(s)), (Some(&DownReason::TcpFailed), 1)));
pair!(active_e18_tcp_connection_fails_delay_open: active_delay(), Event::TcpConnectionFails => Idle,
      [Output::Disconnect, stop(DO), start(IH, 5)], |s| assert_eq!(counter(s), 1));
pair!(active_e19_open_without_connection: active(), recv_open(peer_open()) => Active, []);
pair!(active_e20_open_delay_open: active_delay(), recv_open(peer_open()) => OpenConfirm,
      [stop(DO), send_our_open(), send_keepalive(), start(KA, 30), start(Hold, 90)]);
pair!(active_e20_bad_open_delay_open: active_delay(), recv_open(peer_open_with(|o| o.hold_time = 2)) => Idle,
      [send_notif(2, 6), Output::Disconnect, stop(DO), start(IH, 5)]);
pair!(active_e21_header_err: active_delay(), msg_err(1, 1) => Idle,
      [send_notif(1, 1), Output::Disconnect, stop(DO), start(IH, 5)]);
pair!(active_e22_open_msg_err: active_delay(), msg_err(2, 7) => Idle,
      [send_notif(2, 7), Output::Disconnect, stop(DO), start(IH, 5)]);
pair!(active_e23_open_collision_dump: active(), Event::OpenCollisionDump => Idle, [stop(CR), start(IH, 5)]);
pair!(active_e24_notif_ver_err: active_delay(), recv_notif(2, 1) => Idle,
      [Output::Disconnect, stop(DO), start(IH, 5)], |s| assert_eq!(counter(s), 0));
pair!(active_e25_notif: active_delay(), recv_notif(6, 2) => Idle,
      [Output::Disconnect, stop(DO), start(IH, 5)], |s| assert_eq!(counter(s), 1));
pair!(active_e26_keepalive: active_delay(), recv(Message::Keepalive) => Idle,
      [send_notif(5, 0), Output::Disconnect, stop(DO), start(IH, 5)]);
pair!(active_e27_update: active_delay(), recv_update() => Idle,
      [send_notif(5, 0), Output::Disconnect, stop(DO), start(IH, 5)]);
pair!(active_e28_update_msg_err: active_delay(), msg_err(3, 3) => Idle,
      [send_notif(5, 0), Output::Disconnect, stop(DO), start(IH, 5)]);
pair!(active_route_refresh: active_delay(), route_refresh(Afi::Ipv4, 0) => Idle,
      [send_notif(5, 0), Output::Disconnect, stop(DO), start(IH, 5)]);
pair!(active_liveness_down_without_connection: active(), Event::LivenessDown => Active, []);
pair!(active_liveness_down_delay_open: active_delay(), Event::LivenessDown => Idle,
      [Output::Disconnect, stop(DO), start(IH, 5)], |s| assert_eq!(s.last_error(), Some(&DownReason::LivenessDown)));
pair!(active_treat_as_withdraw: active(), Event::UpdateTreatAsWithdraw => Active, []);

// ===== OpenSent =====

pair!(open_sent_e01_manual_start: open_sent(), Event::ManualStart => OpenSent, []);
pair!(open_sent_e02_manual_stop: open_sent(), manual_stop() => Idle, [send_notif(6, 2), Output::Disconnect, stop(Hold)],
      |s| assert_eq!((s.last_error(), counter(s), s.timer_running(IH)), (Some(&DownReason::Stopped), 0, false)));
pair!(open_sent_e02_manual_stop_with_shutdown_text: open_sent(),
      Event::ManualStop { notification: Some(Notification::admin_shutdown("maintenance")) } => Idle,
      [send(Message::Notification(Notification::admin_shutdown("maintenance"))), Output::Disconnect, stop(Hold)]);
pair!(open_sent_e03_automatic_start: open_sent(), Event::AutomaticStart => OpenSent, []);
pair!(open_sent_e04_manual_start_passive: open_sent(), Event::ManualStartPassive => OpenSent, []);
pair!(open_sent_e05_automatic_start_passive: open_sent(), Event::AutomaticStartPassive => OpenSent, []);
pair!(open_sent_e08_automatic_stop: open_sent(), automatic_stop() => Idle,
      [send_notif(6, 1), Output::Disconnect, stop(Hold), start(IH, 5)],
      |s| assert_eq!((s.last_error(), counter(s)), (Some(&sent(6, 1)), 1)));
pair!(open_sent_e09_connect_retry_expires: open_sent(), expire(CR) => OpenSent, []);
pair!(open_sent_e10_hold_expires: open_sent(), expire(Hold) => Idle, [send_notif(4, 0), Output::Disconnect, start(IH, 5)],
      |s| assert_eq!((s.last_error(), counter(s)), (Some(&DownReason::HoldTimerExpired), 1)));
pair!(open_sent_e11_keepalive_expires: open_sent(), expire(KA) => OpenSent, []);
pair!(open_sent_e12_delay_open_expires: open_sent(), expire(DO) => OpenSent, []);
pair!(open_sent_e13_idle_hold_expires: open_sent(), expire(IH) => OpenSent, []);
pair!(open_sent_e16_second_connection: open_sent(), Event::TcpCrAcked => OpenSent, []);
pair!(open_sent_e17_second_connection: open_sent(), Event::TcpConnectionConfirmed => OpenSent, []);
pair!(open_sent_e18_tcp_connection_fails: open_sent(), Event::TcpConnectionFails => Active,
      [Output::Disconnect, stop(Hold), start(CR, 5)], |s| assert_eq!(counter(s), 0));
pair!(open_sent_e18_tcp_connection_fails_passive: session(passive_cfg(), [Event::ManualStart, Event::TcpConnectionConfirmed]),
      Event::TcpConnectionFails => Active, [Output::Disconnect, stop(Hold)]);
pair!(open_sent_e19_open: open_sent(), recv_open(peer_open()) => OpenConfirm,
      [send_keepalive(), start(KA, 30), start(Hold, 90)], |s| assert_eq!(s.negotiated(), Some(&negotiated())));
pair!(open_sent_e19_open_lower_hold: open_sent(), recv_open(peer_open_with(|o| o.hold_time = 30)) => OpenConfirm,
      [send_keepalive(), start(KA, 10), start(Hold, 30)]);
pair!(open_sent_e19_open_hold_zero: open_sent(), recv_open(peer_open_with(|o| o.hold_time = 0)) => OpenConfirm,
      [send_keepalive(), stop(Hold)], |s| assert_eq!(s.negotiated().map(|n| n.hold_time), Some(0)));
pair!(open_sent_e19_bad_open: open_sent(), recv_open(peer_open_with(|o| o.capabilities.four_octet_as = Some(65000))) => Idle,
      [send_notif(2, 2), Output::Disconnect, stop(Hold), start(IH, 5)], |s| assert_eq!(s.negotiated(), None));
pair!(open_sent_e21_header_err: open_sent(), msg_err(1, 3) => Idle,
      [send_notif(1, 3), Output::Disconnect, stop(Hold), start(IH, 5)]);
pair!(open_sent_e22_open_msg_err: open_sent(), msg_err(2, 7) => Idle,
      [send_notif(2, 7), Output::Disconnect, stop(Hold), start(IH, 5)], |s| assert_eq!(counter(s), 1));
pair!(open_sent_e23_open_collision_dump: open_sent(), Event::OpenCollisionDump => Idle,
      [send_notif(6, 7), Output::Disconnect, stop(Hold), start(IH, 5)]);
pair!(open_sent_e24_notif_ver_err: open_sent(), recv_notif(2, 1) => Idle,
      [Output::Disconnect, stop(Hold), start(IH, 5)], |s| assert_eq!(counter(s), 0));
pair!(open_sent_e25_notif: open_sent(), recv_notif(6, 5) => Idle,
      [Output::Disconnect, stop(Hold), start(IH, 5)],
      |s| assert_eq!((s.last_error(), counter(s)), (Some(&received(6, 5)), 1)));
pair!(open_sent_e26_keepalive: open_sent(), recv(Message::Keepalive) => Idle,
      [send_notif(5, 1), Output::Disconnect, stop(Hold), start(IH, 5)]);
pair!(open_sent_e27_update: open_sent(), recv_update() => Idle,
      [send_notif(5, 1), Output::Disconnect, stop(Hold), start(IH, 5)]);
pair!(open_sent_e28_update_msg_err: open_sent(), msg_err(3, 1) => Idle,
      [send_notif(5, 1), Output::Disconnect, stop(Hold), start(IH, 5)]);
pair!(open_sent_route_refresh: open_sent(), route_refresh(Afi::Ipv4, 0) => Idle,
      [send_notif(5, 1), Output::Disconnect, stop(Hold), start(IH, 5)]);
pair!(open_sent_liveness_down: open_sent(), Event::LivenessDown => Active,
      [Output::Disconnect, stop(Hold), start(CR, 5)], |s| assert_eq!(s.last_error(), Some(&DownReason::LivenessDown)));
pair!(open_sent_treat_as_withdraw: open_sent(), Event::UpdateTreatAsWithdraw => OpenSent, []);

// ===== OpenConfirm =====

pair!(open_confirm_e01_manual_start: open_confirm(), Event::ManualStart => OpenConfirm, []);
pair!(open_confirm_e02_manual_stop: open_confirm(), manual_stop() => Idle,
      [send_notif(6, 2), Output::Disconnect, stop(Hold), stop(KA)], |s| assert_eq!(s.negotiated(), None));
pair!(open_confirm_e03_automatic_start: open_confirm(), Event::AutomaticStart => OpenConfirm, []);
pair!(open_confirm_e04_manual_start_passive: open_confirm(), Event::ManualStartPassive => OpenConfirm, []);
pair!(open_confirm_e05_automatic_start_passive: open_confirm(), Event::AutomaticStartPassive => OpenConfirm, []);
pair!(open_confirm_e08_automatic_stop: open_confirm(), automatic_stop() => Idle,
      [send_notif(6, 1), Output::Disconnect, stop(Hold), stop(KA), start(IH, 5)]);
pair!(open_confirm_e09_connect_retry_expires: open_confirm(), expire(CR) => OpenConfirm, []);
pair!(open_confirm_e10_hold_expires: open_confirm(), expire(Hold) => Idle,
      [send_notif(4, 0), Output::Disconnect, stop(KA), start(IH, 5)]);
pair!(open_confirm_e11_keepalive_expires: open_confirm(), expire(KA) => OpenConfirm, [send_keepalive(), start(KA, 30)]);
pair!(open_confirm_e12_delay_open_expires: open_confirm(), expire(DO) => OpenConfirm, []);
pair!(open_confirm_e13_idle_hold_expires: open_confirm(), expire(IH) => OpenConfirm, []);
pair!(open_confirm_e16_second_connection: open_confirm(), Event::TcpCrAcked => OpenConfirm, []);
pair!(open_confirm_e17_second_connection: open_confirm(), Event::TcpConnectionConfirmed => OpenConfirm, []);
pair!(open_confirm_e18_tcp_connection_fails: open_confirm(), Event::TcpConnectionFails => Idle,
      [Output::Disconnect, stop(Hold), stop(KA), start(IH, 5)], |s| assert_eq!(counter(s), 1));
pair!(open_confirm_e19_open: open_confirm(), recv_open(peer_open()) => Idle,
      [send_notif(5, 2), Output::Disconnect, stop(Hold), stop(KA), start(IH, 5)]);
pair!(open_confirm_e21_header_err: open_confirm(), msg_err(1, 1) => Idle,
      [send_notif(1, 1), Output::Disconnect, stop(Hold), stop(KA), start(IH, 5)]);
pair!(open_confirm_e22_open_msg_err: open_confirm(), msg_err(2, 4) => Idle,
      [send_notif(2, 4), Output::Disconnect, stop(Hold), stop(KA), start(IH, 5)]);
pair!(open_confirm_e23_open_collision_dump: open_confirm(), Event::OpenCollisionDump => Idle,
      [send_notif(6, 7), Output::Disconnect, stop(Hold), stop(KA), start(IH, 5)],
      |s| assert_eq!(s.last_error(), Some(&sent(6, 7))));
pair!(open_confirm_e24_notif_ver_err: open_confirm(), recv_notif(2, 1) => Idle,
      [Output::Disconnect, stop(Hold), stop(KA), start(IH, 5)], |s| assert_eq!(counter(s), 0));
pair!(open_confirm_e25_notif: open_confirm(), recv_notif(6, 2) => Idle,
      [Output::Disconnect, stop(Hold), stop(KA), start(IH, 5)], |s| assert_eq!(counter(s), 1));
pair!(open_confirm_e26_keepalive: open_confirm(), recv(Message::Keepalive) => Established,
      [start(Hold, 90), Output::Established(negotiated())]);
pair!(open_confirm_e26_keepalive_hold_zero:
      session(cfg(), [Event::ManualStart, Event::TcpCrAcked, recv_open(peer_open_with(|o| o.hold_time = 0))]),
      recv(Message::Keepalive) => Established,
      [Output::Established(tortie_bgpd::Negotiated { hold_time: 0, ..negotiated() })]);
pair!(open_confirm_e27_update: open_confirm(), recv_update() => Idle,
      [send_notif(5, 2), Output::Disconnect, stop(Hold), stop(KA), start(IH, 5)]);
pair!(open_confirm_e28_update_msg_err: open_confirm(), msg_err(3, 1) => Idle,
      [send_notif(5, 2), Output::Disconnect, stop(Hold), stop(KA), start(IH, 5)]);
pair!(open_confirm_route_refresh: open_confirm(), route_refresh(Afi::Ipv4, 0) => Idle,
      [send_notif(5, 2), Output::Disconnect, stop(Hold), stop(KA), start(IH, 5)]);
pair!(open_confirm_liveness_down: open_confirm(), Event::LivenessDown => Idle,
      [Output::Disconnect, stop(Hold), stop(KA), start(IH, 5)], |s| assert_eq!(s.last_error(), Some(&DownReason::LivenessDown)));
pair!(open_confirm_treat_as_withdraw: open_confirm(), Event::UpdateTreatAsWithdraw => OpenConfirm, []);

// ===== Established =====

pair!(established_e01_manual_start: established(), Event::ManualStart => Established, []);
pair!(established_e02_manual_stop: established(), manual_stop() => Idle,
      [send_notif(6, 2), Output::Disconnect, stop(Hold), stop(KA), down(DownReason::Stopped, false)],
      |s| assert_eq!((counter(s), s.timer_running(IH)), (0, false)));
pair!(established_e03_automatic_start: established(), Event::AutomaticStart => Established, []);
pair!(established_e04_manual_start_passive: established(), Event::ManualStartPassive => Established, []);
pair!(established_e05_automatic_start_passive: established(), Event::AutomaticStartPassive => Established, []);
pair!(established_e08_automatic_stop: established(), automatic_stop() => Idle,
      [send_notif(6, 1), Output::Disconnect, stop(Hold), stop(KA), down(sent(6, 1), false), start(IH, 5)]);
pair!(established_e09_connect_retry_expires: established(), expire(CR) => Established, []);
pair!(established_e10_hold_expires: established(), expire(Hold) => Idle,
      [send_notif(4, 0), Output::Disconnect, stop(KA), down(DownReason::HoldTimerExpired, false), start(IH, 5)]);
pair!(established_e11_keepalive_expires: established(), expire(KA) => Established, [send_keepalive(), start(KA, 30)]);
pair!(established_e12_delay_open_expires: established(), expire(DO) => Established, []);
pair!(established_e13_idle_hold_expires: established(), expire(IH) => Established, []);
pair!(established_e16_second_connection: established(), Event::TcpCrAcked => Established, []);
pair!(established_e17_second_connection: established(), Event::TcpConnectionConfirmed => Established, []);
pair!(established_e18_tcp_connection_fails: established(), Event::TcpConnectionFails => Idle,
      [Output::Disconnect, stop(Hold), stop(KA), down(DownReason::TcpFailed, true), start(IH, 5)],
      |s| assert_eq!((counter(s), s.negotiated()), (1, None)));
pair!(established_e19_open: established(), recv_open(peer_open()) => Idle,
      [send_notif(5, 3), Output::Disconnect, stop(Hold), stop(KA), down(sent(5, 3), false), start(IH, 5)]);
pair!(established_e21_header_err: established(), msg_err(1, 2) => Idle,
      [send_notif(1, 2), Output::Disconnect, stop(Hold), stop(KA), down(sent(1, 2), false), start(IH, 5)]);
pair!(established_e22_open_msg_err: established(), msg_err(2, 2) => Idle,
      [send_notif(5, 3), Output::Disconnect, stop(Hold), stop(KA), down(sent(5, 3), false), start(IH, 5)]);
pair!(established_e23_open_collision_dump: established(), Event::OpenCollisionDump => Idle,
      [send_notif(6, 7), Output::Disconnect, stop(Hold), stop(KA), down(sent(6, 7), false), start(IH, 5)]);
pair!(established_e24_notif_ver_err: established(), recv_notif(2, 1) => Idle,
      [Output::Disconnect, stop(Hold), stop(KA), down(received(2, 1), false), start(IH, 5)], |s| assert_eq!(counter(s), 1));
pair!(established_e25_notif: established(), recv(Message::Notification(Notification::admin_shutdown("upgrade"))) => Idle,
      [Output::Disconnect, stop(Hold), stop(KA),
       down(DownReason::NotificationReceived(Notification::admin_shutdown("upgrade")), false), start(IH, 5)]);
pair!(established_e26_keepalive: established(), recv(Message::Keepalive) => Established, [start(Hold, 90)]);
pair!(established_e27_update: established(), recv_update() => Established, [start(Hold, 90), Output::Update(update())]);
pair!(established_e28_update_msg_err: established(), msg_err(codes::UPDATE, codes::UPDATE_MALFORMED_AS_PATH) => Idle,
      [send_notif(3, 11), Output::Disconnect, stop(Hold), stop(KA), down(sent(3, 11), false), start(IH, 5)]);
pair!(established_route_refresh: established(), route_refresh(Afi::Ipv4, 0) => Established,
      [start(Hold, 90), Output::RouteRefreshRequested(Afi::Ipv4)]);
pair!(established_route_refresh_unknown_family: established(), route_refresh(Afi::Ipv6, 0) => Established,
      [start(Hold, 90)]);
pair!(established_route_refresh_enhanced_subtype: established(), route_refresh(Afi::Ipv4, 1) => Established,
      [start(Hold, 90)]);
pair!(established_route_refresh_error: established(), msg_err(codes::ROUTE_REFRESH, 1) => Idle,
      [send_notif(7, 1), Output::Disconnect, stop(Hold), stop(KA), down(sent(7, 1), false), start(IH, 5)]);
pair!(established_liveness_down: established(), Event::LivenessDown => Idle,
      [Output::Disconnect, stop(Hold), stop(KA), down(DownReason::LivenessDown, true), start(IH, 5)]);
pair!(established_treat_as_withdraw: established(), Event::UpdateTreatAsWithdraw => Established, []);
